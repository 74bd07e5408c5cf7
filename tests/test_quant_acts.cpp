// The cpu backend's activation quantization (backends/cpu/quant_acts.h): every instruction-set path this build has
// gives bit for bit the scalar path's blocks, on random rows and on the blocks where rounding and saturation
// decide (all zero, one large value, halves that round to even, the clamp at 127); quantize_row_into puts block b
// at b * stride and multiplies the sums, touching nothing in between.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/quant_acts.h"

namespace {

using tandem::cpu::qk;
using tandem::cpu::quant_path;

std::vector<quant_path> fast_paths() {
    std::vector<quant_path> out;
#if defined(TANDEM_QUANT_AVX2)
    out.push_back(quant_path::avx2);
#endif
#if defined(TANDEM_QUANT_AVX512)
    out.push_back(quant_path::avx512);
#endif
    return out;
}

const char* name(quant_path p) { return p == quant_path::avx512 ? "avx512" : p == quant_path::avx2 ? "avx2" : "scalar"; }

struct blocks {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> s;
    explicit blocks(int64_t n) : q(size_t(n) * qk), d(size_t(n)), s(size_t(n)) {}
};

// Rows whose blocks exercise the rounding: random scales over many magnitudes, then the special blocks.
std::vector<float> test_row(int64_t nblk, uint32_t seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> mag(-20.f, 20.f);
    std::vector<float> x(size_t(nblk) * qk);
    for (int64_t b = 0; b < nblk; ++b) {
        const float scale = std::exp2(mag(gen));
        for (int i = 0; i < qk; ++i) x[size_t(b * qk + i)] = normal(gen) * scale;
    }
    float* blk = x.data();
    std::fill(blk, blk + qk, 0.f);  // block 0: all zero, d = 0
    blk += qk;
    std::fill(blk, blk + qk, 0.f);  // block 1: one large value, the rest tiny
    blk[7] = -3.0e30f;
    blk[8] = 1.0e-30f;
    blk += qk;
    // Block 2: max 127, so id = 1 and the halves must round to even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
    for (int i = 0; i < qk; ++i) blk[i] = float(i - 16) + 0.5f;
    blk[31] = 127.f;
    blk += qk;
    for (int i = 0; i < qk; ++i) blk[i] = i % 2 == 0 ? 1.f : -1.f;  // block 3: every value at the clamp
    for (int64_t copy_to : {int64_t(37), nblk - 5})  // the same four blocks again, where they fit
        if (copy_to + 4 <= nblk) std::copy(x.begin(), x.begin() + 4 * qk, x.begin() + copy_to * qk);
    return x;
}

TEST(quant_acts, every_path_matches_scalar_bit_for_bit) {
    // 4 batches of the AVX-512 path's 16 blocks and 7 left for its block-by-block tail; the special blocks come
    // again in the third batch and in the tail.
    const int64_t nblk = 71;
    for (uint32_t seed = 1; seed <= 8; ++seed) {
        const std::vector<float> x = test_row(nblk, seed);
        blocks want(nblk);
        tandem::cpu::quantize_row(quant_path::scalar, x.data(), want.q.data(), want.d.data(), want.s.data(), nblk);
        ASSERT_EQ(want.d[0], 0.f);
        ASSERT_EQ(want.q[2 * qk + 16], 0);   // 0.5 -> 0
        ASSERT_EQ(want.q[2 * qk + 17], 2);   // 1.5 -> 2
        ASSERT_EQ(want.q[2 * qk + 13], -2);  // -2.5 -> -2
        ASSERT_EQ(want.q[3 * qk + 1], -127);
        for (quant_path p : fast_paths()) {
            SCOPED_TRACE(name(p));
            blocks got(nblk);
            tandem::cpu::quantize_row(p, x.data(), got.q.data(), got.d.data(), got.s.data(), nblk);
            for (int64_t b = 0; b < nblk; ++b) {
                ASSERT_EQ(std::memcmp(&got.d[size_t(b)], &want.d[size_t(b)], sizeof(float)), 0) << "block " << b;
                ASSERT_EQ(got.s[size_t(b)], want.s[size_t(b)]) << "block " << b;
                for (int i = 0; i < qk; ++i)
                    ASSERT_EQ(got.q[size_t(b * qk + i)], want.q[size_t(b * qk + i)]) << "block " << b << " q" << i;
            }
        }
    }
}

TEST(quant_acts, into_places_blocks_at_the_stride_and_scales_the_sums) {
    const int64_t nblk = 37, stride = 3;  // two batches of 16 and a tail of 5 on the AVX-512 path
    const int32_t mult = 8;
    const std::vector<float> x = test_row(nblk, 42);
    blocks want(nblk);
    tandem::cpu::quantize_row(quant_path::scalar, x.data(), want.q.data(), want.d.data(), want.s.data(), nblk);
    std::vector<quant_path> paths = fast_paths();
    paths.push_back(quant_path::scalar);
    for (quant_path p : paths) {
        SCOPED_TRACE(name(p));
        // Slot 1 of every stride: the other slots keep their fill.
        blocks got(nblk * stride);
        std::fill(got.q.begin(), got.q.end(), int8_t(0x5a));
        std::fill(got.d.begin(), got.d.end(), -7.f);
        std::fill(got.s.begin(), got.s.end(), 12345);
        tandem::cpu::quantize_row_into(p, x.data(), nblk, stride, mult, got.q.data() + qk, got.d.data() + 1,
                                       got.s.data() + 1);
        for (int64_t slot = 0; slot < nblk * stride; ++slot) {
            const size_t i = size_t(slot);
            if (slot % stride != 1) {
                ASSERT_EQ(got.d[i], -7.f) << "slot " << slot;
                ASSERT_EQ(got.s[i], 12345) << "slot " << slot;
                for (int j = 0; j < qk; ++j) ASSERT_EQ(got.q[i * qk + size_t(j)], int8_t(0x5a)) << "slot " << slot;
                continue;
            }
            const size_t b = size_t(slot / stride);
            ASSERT_EQ(got.d[i], want.d[b]) << "block " << b;
            ASSERT_EQ(got.s[i], want.s[b] * mult) << "block " << b;
            ASSERT_EQ(std::memcmp(&got.q[i * qk], &want.q[b * qk], qk), 0) << "block " << b;
        }
    }
}

}  // namespace
