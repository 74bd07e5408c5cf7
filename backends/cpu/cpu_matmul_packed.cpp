// Q8_0 and Q4_0 weights with their rows interleaved in groups of 16 (backend::prepare_weight), multiplied with
// AVX512-VNNI integer dot products. The layout is made once when a model loads; the original blocks stay where they
// are for the other ops (get_rows, matmul_t) and for the unprepared matmul in cpu_matmul_quant.cpp.
//
// Why: in the block layout one 18-byte Q4_0 block meets one activation block, and every block pays for unpacking,
// two scale loads, a scale broadcast, an int-to-float conversion and an FMA: about 12 instructions per 36 bytes,
// which kept one core at ~19 GB/s from cache and well under the memory's read bandwidth from DRAM. With 16 rows
// side by side, a 64-byte register holds 4 consecutive weights of each of the 16 rows, so one dpbusd with 4
// activation bytes broadcast to every lane adds 4 products to each row's int32 lane: a block of 16 rows costs
// 8 dpbusd, one scale vector (16 fp16 loaded at once), one conversion and one FMA: ~2 instructions per 36 bytes
// (measured ~53 GB/s per core from cache, and the read bandwidth from DRAM). The same registers serve up to 12
// activation rows at once for prefill and tree verification. The activation bytes are broadcast by the dpbusd
// itself (an embedded {1to16} memory operand), not by a separate vpbroadcastd as GCC emits for set1: that took
// the 1.1B shape's FFN matmul from 475 to ~680 GFLOP/s at its best row count, and from 311 to ~460 at 1 row.
// The layout lives on transparent huge pages (host_alloc): on 4 KiB pages a 1-thread GEMV streamed ~22 GB/s,
// on 2 MiB pages ~30, the machine's 1-thread read bandwidth.
//
// Layout of one group of 16 rows (the last group padded with zero rows), in pairs of blocks p = (2p, 2p + 1),
// the block count rounded up to even (a padding block has scales 0):
//   64 bytes   the 16 fp16 scales of block 2p (row r at bytes 2r, 2r + 1), then the 16 of block 2p + 1
//   CB bytes   the quants of block 2p in 64-byte chunks; chunk c, bytes 4r .. 4r + 3 belong to row r:
//                Q4_0 (CB = 256, c = 0..3): row r's quant bytes 4c .. 4c + 3, whose low nibbles are elements
//                  4c .. 4c + 3 and high nibbles elements 16 + 4c .. 16 + 4c + 3
//                Q8_0 (CB = 512, c = 0..7): row r's elements 4c .. 4c + 3 as q + 128 (unsigned bytes)
//   CB bytes   the quants of block 2p + 1, likewise
// so a pair is 576 (Q4_0) or 1088 (Q8_0) bytes, a multiple of 64: every chunk load is one aligned cache line.
// The integer arithmetic: dpbusd multiplies unsigned weight bytes by signed activation bytes. Q4_0's nibbles are
// 0..15 and Q8_0's biased bytes 0..255; the offsets come back as -8 * sum(x_q) and -128 * sum(x_q) per block
// (the activation sums are kept negated by quantize_row and multiplied by the offset in matmul_packed), exactly.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/host_buffer.h"
#include "backends/cpu/quant_acts.h"
#include "engine/error.h"


namespace tandem::cpu {

namespace {

constexpr int rows_per_group = 16;

struct packed_quant final : derived_layout {
    dtype type = dtype::q4_0;
    int64_t k = 0, n = 0;
    int64_t nblk = 0;         // blocks per row, rounded up to even
    size_t chunk_bytes = 0;   // CB: the quants of one block of 16 rows
    size_t pair_bytes = 0;    // 64 + 2 CB
    size_t group_bytes = 0;   // nblk / 2 pairs
    std::shared_ptr<uint8_t> data;  // from the backend's host_arena
    int64_t groups() const { return (n + rows_per_group - 1) / rows_per_group; }
};

size_t block_bytes(dtype t) { return t == dtype::q8_0 ? 34 : 18; }

// Writes group g of w (rows 16g .. 16g + 15, rows past n as zeros).
void pack_group(const packed_quant& p, const uint8_t* w, int64_t g, uint8_t* dst) {
    const size_t rb = size_t(p.k / qk) * block_bytes(p.type);
    const int64_t real_blocks = p.k / qk;
    std::memset(dst, 0, p.group_bytes);
    for (int r = 0; r < rows_per_group && g * rows_per_group + r < p.n; ++r) {
        const uint8_t* row = w + size_t(g * rows_per_group + r) * rb;
        for (int64_t b = 0; b < real_blocks; ++b) {
            const uint8_t* blk = row + size_t(b) * block_bytes(p.type);
            uint8_t* pair = dst + size_t(b / 2) * p.pair_bytes;
            std::memcpy(pair + 32 * (b % 2) + 2 * r, blk, 2);
            uint8_t* chunks = pair + 64 + size_t(b % 2) * p.chunk_bytes;
            if (p.type == dtype::q4_0) {
                for (int c = 0; c < 4; ++c) std::memcpy(chunks + 64 * c + 4 * r, blk + 2 + 4 * c, 4);
            } else {
                for (int c = 0; c < 8; ++c)
                    for (int i = 0; i < 4; ++i) chunks[64 * c + 4 * r + i] = uint8_t(blk[2 + 4 * c + i] ^ 0x80);
            }
        }
    }
}

// Activation rows quantized to Q8 blocks, nblk (even) blocks per row, a padding block all zeros, stored in tiles of
// the rows one pass over a row group takes (pass_rows), block by block within a tile: the tile of rows
// [m0, m0 + tm) holds block b of row r at index m0 * nblk + b * tm + (r - m0) (its 32 q at 32 times that). So a pass
// finds a block's rows at constant offsets from one address per block, instead of computing one address per row (4
// scalar instructions per row and block, which took issue slots from the vector arithmetic): the 1.1B shape's
// verification passes on the Intel VM, alternated in one process, 5 rows 27.4 -> 26.1 ms, 9 rows 36.8 -> 34.5, 1
// row 21.0 -> 20.7. Tiles, not all the rows block by block: with 512 rows, a pass's rows of consecutive blocks
// were 16 KiB apart, all in one L1 set, and the 512-row GEMM fell from ~750 to ~500 GFLOP/s.
struct packed_acts {
    const int8_t* q;
    const float* d;
    const int32_t* s;
    int64_t nblk;
};

#if defined(TANDEM_QUANT_AVX512)

// The most rows one pass takes (8 weight registers, 12 accumulators and the temporaries fit the 32 registers), and
// the most a pass takes when a group needs several.
constexpr int64_t max_single_pass = 12, max_multi_pass = 9;

// The passes over a row group for m activation rows: all in one up to max_single_pass rows, beyond that passes of at
// most max_multi_pass, the rows spread evenly over them (17 rows: 9 + 8). Pass i takes rows [m0, m0 + rows).
struct pass_span {
    int64_t m0, rows;
};
std::vector<pass_span> pass_rows(int64_t m) {
    const int64_t passes = m <= max_single_pass ? 1 : (m + max_multi_pass - 1) / max_multi_pass;
    std::vector<pass_span> out;
    for (int64_t i = 0, m0 = 0; i < passes; ++i) {
        const int64_t rows = (m - m0) / (passes - i);
        out.push_back({m0, rows});
        m0 += rows;
    }
    return out;
}

// m rows of k floats to quantize into the packed_acts layout of pass_rows(m), nblk (even) blocks per row.
struct act_rows {
    const float* x;
    int64_t m, k, nblk;
    int32_t offset;  // the weights' byte offset, which the activation sums are multiplied by (see matmul_packed)
    std::span<const pass_span> spans;
};

// This thread's buffer for a.m rows' quantized activations, grown and kept (no allocation per decode step):
// m * nblk * 32 int8, then m * nblk scales and m * nblk sums.
packed_acts acts_buffer(const act_rows& a) {
    thread_local std::vector<uint8_t> scratch;
    const size_t blocks = size_t(a.m * a.nblk), q_bytes = blocks * qk, v_bytes = blocks * 4;
    if (scratch.size() < q_bytes + 2 * v_bytes) scratch.resize(q_bytes + 2 * v_bytes);
    return {reinterpret_cast<int8_t*>(scratch.data()), reinterpret_cast<float*>(scratch.data() + q_bytes),
            reinterpret_cast<int32_t*>(scratch.data() + q_bytes + v_bytes), a.nblk};
}

// Quantizes the rows of tiles [t0, t1) into buf, straight into their places, the padding block (odd block counts)
// zeroed.
void quantize_tiles(const act_rows& a, size_t t0, size_t t1, const packed_acts& buf) {
    auto* q = const_cast<int8_t*>(buf.q);
    auto* d = const_cast<float*>(buf.d);
    auto* s = const_cast<int32_t*>(buf.s);
    const int64_t real_blocks = a.k / qk;
    for (size_t t = t0; t < t1; ++t) {
        const auto [m0, tm] = a.spans[t];
        for (int64_t r = m0; r < m0 + tm; ++r) {
            const size_t at = size_t(m0 * a.nblk + (r - m0));
            quantize_row_into(quant_path::avx512, a.x + r * a.k, real_blocks, tm, a.offset, q + at * qk, d + at,
                              s + at);
            for (int64_t b = real_blocks; b < a.nblk; ++b) {
                const size_t pad = at + size_t(b * tm);
                std::memset(q + pad * qk, 0, qk);
                d[pad] = 0.f;
                s[pad] = 0;
            }
        }
    }
}

// Into L2 (prefetcht1): a group's pair stream prefetched into L1 evicted the lines still being computed on.
// A volatile asm, so that the compiler keeps each prefetch where it is written: with _mm_prefetch GCC 12 gathered
// the spread prefetches of a pair's row iterations into one place. The address goes in a register, not as a memory
// operand: a prefetch changes no value, and a memory operand made GCC store every accumulator before each one.
inline void prefetch_line(const uint8_t* p) { asm volatile("prefetcht1 (%0)" : : "r"(p)); }

// acc + dpbusd(w, the 4 bytes at base + Disp broadcast to every lane), the broadcast embedded in the instruction's
// memory operand ({1to16}; GCC 12 emits a separate vpbroadcastd for _mm512_set1_epi32, one more instruction per
// dpbusd), the address as a register plus a constant. The asm names no memory operand: with one, GCC kept a copy
// of every accumulator in memory (any memory the asm reads might hold them), a load and a store per row and
// block. The bytes it reads are the quantized activations, written by matmul_packed before the pool runs the
// kernels (another function, behind the pool's call), so no reordering can move the read before the write.
template <int Disp>
inline __m512i dpbusd_bcast_at(__m512i acc, __m512i w, const int8_t* base) {
    asm("vpdpbusd %c3(%2)%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "r"(base), "i"(Disp));
    return acc;
}

// f(std::integral_constant<int, I>{}) for I = 0 .. N - 1, in order: loop indices that are constant expressions.
template <int N, typename F>
__attribute__((always_inline)) inline void static_for(F&& f) {
    [&]<int... I>(std::integer_sequence<int, I...>) __attribute__((always_inline)) {
        (f(std::integral_constant<int, I>{}), ...);
    }(std::make_integer_sequence<int, N>{});
}

// The 64-byte lines of one pair of blocks of a group: the scale line and the two blocks' quants.
template <dtype T>
constexpr int pair_lines = (64 + 2 * (T == dtype::q4_0 ? 256 : 512)) / 64;

// One block of a group against MB activation rows: acc[mb] (lane r = weight row r) += dw * dx * dot. With pf set,
// the block is half `half` (0 or 1) of its pair, and each row's iteration prefetches its share of the pair_lines
// at pf: the pair's 2 * MB row iterations prefetch the pair's lines in even steps. Always inlined, so that
// `half` and the line ranges are constants (a call per block had spilled the accumulators).
template <dtype T, int MB>
__attribute__((always_inline)) inline void block_tile(const uint8_t* scales, const uint8_t* chunks,
                                                      const packed_acts& x, int64_t m0, int64_t b, __m512 (&acc)[MB],
                                                      const uint8_t* pf, int half) {
    // w[j] meets activation bytes 4j .. 4j + 3 of the block.
    __m512i w[8];
    if constexpr (T == dtype::q4_0) {
        const __m512i low = _mm512_set1_epi8(0x0f);
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = _mm512_load_si512(chunks + 64 * c);
            w[c] = _mm512_and_si512(raw, low);
            w[4 + c] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
        }
    } else {
        for (int c = 0; c < 8; ++c) w[c] = _mm512_load_si512(chunks + 64 * c);
    }
    // The zero-masking forms with a full mask: the plain ones trip GCC 12's -Wuninitialized (bug 105593).
    constexpr __mmask16 all = 0xffff;
    const __m512 dw = _mm512_maskz_cvtph_ps(all, _mm256_load_si256(reinterpret_cast<const __m256i*>(scales)));
    const size_t at = size_t(m0) * size_t(x.nblk) + size_t(b) * MB;
    const int8_t* xq0 = x.q + at * qk;
    const float* xd = x.d + at;
    const int32_t* xs = x.s + at;
    // Every row and dot product spelled out at compile time, so that every offset is a constant.
    static_for<MB>([&](auto mb_c) __attribute__((always_inline)) {
        constexpr int mb = decltype(mb_c)::value;
        if (pf != nullptr) {
            constexpr int lines = pair_lines<T>, steps = 2 * MB;
            const int t = half * MB + mb;
#pragma GCC unroll 16
            for (int l = t * lines / steps; l < (t + 1) * lines / steps; ++l) prefetch_line(pf + 64 * l);
        }
        // Two chains of four dpbusd each: half the latency of one chain of eight. The first starts from the
        // weights' offset times the activation sum (x.s holds it, see matmul_packed).
        __m512i a0 = _mm512_set1_epi32(xs[mb]), a1 = _mm512_setzero_si512();
        static_for<4>([&](auto jj) __attribute__((always_inline)) {
            constexpr int j = 2 * decltype(jj)::value;
            a0 = dpbusd_bcast_at<mb * qk + 4 * j>(a0, w[j], xq0);
            a1 = dpbusd_bcast_at<mb * qk + 4 * j + 4>(a1, w[j + 1], xq0);
        });
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(xd[mb]));
        acc[mb] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all, _mm512_add_epi32(a0, a1)), scale, acc[mb]);
    });
}

// What one pass over a group prefetches into L2, so that lines come from DRAM while it computes; without it a
// multi-row pass ran at compute speed with the memory idle, and cost about the sum of its memory and compute times
// instead of their max. Either
// - ahead: the bytes this far past each pair of the group being computed, up to end (this thread's range): a
//   group's only pass, or
// - slice: when several passes go over a group (from the second on, its lines come from L1/L2), the
//   slice_bytes of the next group that this pass fetches, spread evenly over its pairs: the passes share the next
//   group between them, so the memory stays busy through all of them.
struct pass_prefetch {
    size_t ahead = 0;
    bool spread = false;  // ahead's lines spread over the pair's row iterations, else all at the pair's start
    const uint8_t* end = nullptr;
    const uint8_t* slice = nullptr;
    size_t slice_bytes = 0;  // a multiple of 64
};

// Rows 16g .. 16g + 15 (those below n) of MB output rows from m0.
template <dtype T, int MB>
void group_tile(const packed_quant& p, int64_t g, const packed_acts& x, int64_t m0, float* out, int64_t ldo,
                const pass_prefetch& pf) {
    const uint8_t* grp = p.data.get() + size_t(g) * p.group_bytes;
    const size_t pairs = size_t(p.nblk / 2);
    __m512 acc[MB];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t b = 0; b < p.nblk; b += 2) {
        const size_t j = size_t(b / 2);
        const uint8_t* pair = grp + j * p.pair_bytes;
        const uint8_t* spread = nullptr;
        if (pf.ahead != 0 && pair + pf.ahead < pf.end) {
            const uint8_t* np = pair + pf.ahead;
            if (pf.spread) {
                spread = np;
            } else {
                for (size_t l = 0; l < p.pair_bytes; l += 64) prefetch_line(np + l);
            }
        }
        if (pf.slice != nullptr) {
            // Lines [from, to) of the slice: every line once over the pass (the last pair's `to` is slice_bytes).
            const size_t from = j * pf.slice_bytes / pairs / 64 * 64, to = (j + 1) * pf.slice_bytes / pairs / 64 * 64;
            for (size_t l = from; l < to; l += 64) prefetch_line(pf.slice + l);
        }
        block_tile<T, MB>(pair, pair + 64, x, m0, b, acc, spread, 0);
        block_tile<T, MB>(pair + 32, pair + 64 + p.chunk_bytes, x, m0, b + 1, acc, spread, 1);
    }
    const int64_t valid = std::min<int64_t>(rows_per_group, p.n - g * rows_per_group);
    const __mmask16 keep = valid == rows_per_group ? __mmask16(0xffff) : __mmask16((1u << valid) - 1);
    for (int mb = 0; mb < MB; ++mb) _mm512_mask_storeu_ps(out + (m0 + mb) * ldo + g * rows_per_group, keep, acc[mb]);
}

// Rows m0 .. m0 + mb - 1 (mb <= max_single_pass) against group g.
template <dtype T>
void group_pass(const packed_quant& p, int64_t g, const packed_acts& x, int64_t m0, int64_t mb, float* out,
                const pass_prefetch& pf) {
    switch (mb) {
        case 12: return group_tile<T, 12>(p, g, x, m0, out, p.n, pf);
        case 11: return group_tile<T, 11>(p, g, x, m0, out, p.n, pf);
        case 10: return group_tile<T, 10>(p, g, x, m0, out, p.n, pf);
        case 9: return group_tile<T, 9>(p, g, x, m0, out, p.n, pf);
        case 8: return group_tile<T, 8>(p, g, x, m0, out, p.n, pf);
        case 7: return group_tile<T, 7>(p, g, x, m0, out, p.n, pf);
        case 6: return group_tile<T, 6>(p, g, x, m0, out, p.n, pf);
        case 5: return group_tile<T, 5>(p, g, x, m0, out, p.n, pf);
        case 4: return group_tile<T, 4>(p, g, x, m0, out, p.n, pf);
        case 3: return group_tile<T, 3>(p, g, x, m0, out, p.n, pf);
        case 2: return group_tile<T, 2>(p, g, x, m0, out, p.n, pf);
        default: return group_tile<T, 1>(p, g, x, m0, out, p.n, pf);
    }
}

// How far ahead of its loads a pass prefetches into L2 (0: not at all), from how many activation rows, and how the
// prefetches are placed. The best plan depends on the core's memory pipeline, so it is chosen by CPU vendor
// (TANDEM_CPU_PREFETCH overrides it); measured with 2 threads, settings alternated in one process:
// - AMD (Zen 4, 2 vCPUs): 8 KiB from 3 rows, a pair's lines all at the pair's start. From 3 rows up a pass
//   computes long enough per line that the hardware prefetcher alone leaves the memory idle part of the time:
//   4 KiB ahead let a 3-row pass of the 1.1B shape take about as long as a 1-row one (22 against 38 ms), and
//   8 KiB kept the memory busy in that VM's ~60 GB/s mode too (3 rows: 18.5-19.2 -> 15.8-16.2 ms there, no
//   slower at ~34 GB/s). For 1-2 rows prefetching only added traffic: a 1-thread GEMV ran at the read bandwidth
//   without it and at half of it with a 2 KiB distance, and 8 KiB from 2 rows made a 2-row pass slower at
//   ~34 GB/s and no faster at ~60. (The spread placement below was never measured on AMD.)
// - Intel (a Xeon with AMX, 2 vCPUs, ~33 GB/s): 2 KiB ahead at 1 row, 2 KiB more per row up to 6 KiB, spread.
//   Prefetching at all: 4096 x 4096 Q4_0 weights from DRAM, 1 row 23.5 GB/s without, 29.7 with 2 KiB; 5 rows
//   19.0 -> 23.2; Q8_0 1 row 29.2 -> 32.4; the 1.1B shape's decode step 26.4 -> 21.7 ms. Spread: a pass that
//   issues a pair's 9 (Q4_0) prefetches one after the other at the pair's start streams slower than one whose row
//   iterations issue them in even steps over the pair, and with the steps spread, more rows want a longer
//   distance. 2048 x 5632 Q4_0 weights from DRAM, 100 copies, GB/s for 1 / 2 / 3 / 4 / 5 / 9 rows: all at the
//   start with 2 KiB (the plan before) 24.9-27.0 / 24.1-24.5 / 23.1-23.6 / 22.0 / 19.8-20.0 / 16.1-16.5, this
//   plan 25.6-27.5 / 27.1-27.5 / 25.8-25.9 / 25.5-25.7 / 22.3-23.0 / 16.5-17.5; one 650 MB matrix, spread, by
//   distance: 1 row best at 2 KiB (29.7-30.4, 28.8-29.5 at 4 KiB), 4-6 rows at 4-8 KiB (5 rows 21.1-22.5 at
//   2 KiB, 24.9-25.8 at 6 KiB).
struct prefetch_plan {
    size_t ahead;      // at min_rows rows
    size_t max_ahead;  // each row more adds `ahead`, up to this
    int64_t min_rows;
    bool spread;
    size_t distance(int64_t rows) const {
        if (ahead == 0 || rows < min_rows) return 0;
        return std::min(max_ahead, ahead * size_t(rows - min_rows + 1));
    }
};

const prefetch_plan& chosen_prefetch() {
    static const prefetch_plan plan = [] {
        const prefetch_plan amd{8192, 8192, 3, false}, intel{2048, 6144, 1, true};
        const char* env = std::getenv("TANDEM_CPU_PREFETCH");
        const std::string v = env != nullptr ? env : "";
        if (v.empty() || v == "auto") return __builtin_cpu_is("intel") ? intel : amd;
        if (v == "off") return prefetch_plan{0, 0, 1, false};
        // BYTES[@ROWS][/burst]
        char* rest = nullptr;
        const unsigned long long bytes = std::strtoull(v.c_str(), &rest, 10);
        long long rows = 1;
        bool ok = rest != v.c_str() && bytes > 0 && bytes % 64 == 0 && bytes <= (1u << 20);
        if (ok && *rest == '@') {
            const char* r = rest + 1;
            rows = std::strtoll(r, &rest, 10);
            ok = rest != r && rows >= 1 && rows <= 4096;
        }
        bool spread = true;
        if (ok && std::string(rest) == "/burst") {
            spread = false;
            rest += 6;
        }
        if (!ok || *rest != '\0') {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "TANDEM_CPU_PREFETCH=" + v +
                            ": expected auto, off, or a distance in bytes (a multiple of 64, at most 1 MiB) with an "
                            "optional @ROWS (the fewest activation rows that prefetch) and /burst (a pair's lines "
                            "all at its start instead of spread over its rows), e.g. 8192@3/burst");
        }
        return prefetch_plan{size_t(bytes), size_t(bytes), rows, spread};
    }();
    return plan;
}

// One weight of a run_groups call: its layout, its output and the first group of it in the call's numbering.
struct group_job {
    const packed_quant* p;
    float* out;
    int64_t first;
};

// Groups [g0, g1) of a run_groups call (numbered across its weights), prefetching no further than group `limit`.
template <dtype T>
void run_range(std::span<const group_job> jobs, const packed_acts& x, std::span<const pass_span> spans, size_t ahead,
               bool spread, int64_t g0, int64_t g1, int64_t limit) {
    const int64_t passes = int64_t(spans.size());
    for (const group_job& j : jobs) {
        const int64_t b = std::max(g0, j.first), e = std::min(g1, j.first + j.p->groups());
        if (b >= e) continue;
        const packed_quant& p = *j.p;
        const int64_t stop = std::min(limit, j.first + p.groups()) - j.first;
        const uint8_t* end = p.data.get() + size_t(stop) * p.group_bytes;
        for (int64_t g = b - j.first; g < e - j.first; ++g) {
            // All activation rows against one group while its weights are hot in L1/L2.
            const uint8_t* next = p.data.get() + size_t(g + 1) * p.group_bytes;
            for (int64_t i = 0; i < passes; ++i) {
                const auto [m0, mb] = spans[size_t(i)];
                pass_prefetch pf;
                if (ahead != 0 && passes == 1) {
                    pf.ahead = ahead;
                    pf.spread = spread;
                    pf.end = end;
                } else if (ahead != 0 && next < end) {
                    const size_t lines = p.group_bytes / 64;
                    const size_t from = lines * size_t(i) / size_t(passes) * 64,
                                 to = lines * size_t(i + 1) / size_t(passes) * 64;
                    pf.slice = next + from;
                    pf.slice_bytes = to - from;
                }
                group_pass<T>(p, g, x, m0, mb, j.out, pf);
            }
        }
    }
}

// The groups one thread has yet to run, [lo, hi) in one word: its owner claims pieces from the front, a thread that
// has run out of its own takes the back half of what is left (see run_groups).
struct alignas(64) group_share {
    std::atomic<uint64_t> range{0};
    static uint64_t pack(int64_t lo, int64_t hi) { return uint64_t(hi) << 32 | uint64_t(lo); }
    static int64_t lo(uint64_t r) { return int64_t(uint32_t(r)); }
    static int64_t hi(uint64_t r) { return int64_t(r >> 32); }
};

// spans: pass_rows(m).
template <dtype T>
void run_groups(thread_pool& pool, std::span<const group_job> jobs, const packed_acts& x, int64_t m,
                std::span<const pass_span> spans) {
    // Up to 12 rows in one pass over a group, so that the pass's prefetching covers all its computing: one pass
    // instead of two took a 9-row verification pass of the 1.1B shape from 42-43 to 35-36 ms on the Intel VM (2
    // threads, tandem-bench verify, alternated). Beyond that, passes of at most 9 rows, the rows spread evenly over
    // them (17 rows: 9 + 8): there 8-9 rows a pass gave the best rate (65 rows, 6 passes of ~11: 222 ms, 8 passes
    // of ~8: 213 ms; 11 passes of ~6: 226 ms).
    const prefetch_plan& plan = chosen_prefetch();
    const size_t ahead = plan.distance(m);
    // The groups of all the weights are numbered one after the other, so that the threads split them as one
    // stream: a share may end one weight and start the next.
    const group_job& last = jobs.back();
    const int64_t total = last.first + last.p->groups();
    const int64_t min_groups = grain(rows_per_group * last.p->k * m);
    const int64_t n = std::min<int64_t>(pool.size(), (total + min_groups - 1) / min_groups);
    if (n <= 1) return run_range<T>(jobs, x, spans, ahead, plan.spread, 0, total, total);
    // One contiguous share per thread, so that each thread's stream starts once per call (four chunks per thread
    // claimed in turn, the pool's default, streamed slower). A thread that finishes its share takes the back half
    // of the largest share left, and again until nothing is left: the threads finish together even when one of
    // them streams slower or starts late. With fixed halves the calling thread waited 20-40 us at the end of each
    // matmul of a 9-row verification pass of the 1.1B shape on the Intel VM, ~4 ms a pass; the two ways alternated
    // pass by pass in one process (medians, a noisy hour): decode 28.3 -> 27.5 ms, 5 rows 39.1 -> 37.1, 9 rows
    // 49.8 -> 47.8, 17 rows 81.2 -> 76.9, 65 rows 341 -> 329. Owners claim ~64 KiB of weights at a time (a
    // compare-and-swap on a line no other thread touches until it steals) and prefetch up to their share's end.
    const int64_t piece = std::max<int64_t>(1, int64_t(65536 / last.p->group_bytes));
    std::unique_ptr<group_share[]> shares(new group_share[size_t(n)]);
    for (int64_t t = 0; t < n; ++t) shares[size_t(t)].range.store(group_share::pack(total * t / n, total * (t + 1) / n));
    auto run_share = [&](group_share& s) {
        uint64_t r = s.range.load(std::memory_order_relaxed);
        for (;;) {
            const int64_t lo = group_share::lo(r), hi = group_share::hi(r);
            if (lo >= hi) return;
            const int64_t b = std::min(hi, lo + piece);
            if (!s.range.compare_exchange_weak(r, group_share::pack(b, hi), std::memory_order_relaxed)) continue;
            run_range<T>(jobs, x, spans, ahead, plan.spread, lo, b, hi);
            r = s.range.load(std::memory_order_relaxed);
        }
    };
    pool.parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
            group_share& mine = shares[size_t(t)];
            run_share(mine);
            for (;;) {
                group_share* victim = nullptr;
                int64_t most = 0;
                for (int64_t v = 0; v < n; ++v) {
                    const uint64_t r = shares[size_t(v)].range.load(std::memory_order_relaxed);
                    if (group_share::hi(r) - group_share::lo(r) > most) {
                        most = group_share::hi(r) - group_share::lo(r);
                        victim = &shares[size_t(v)];
                    }
                }
                if (victim == nullptr) break;
                uint64_t r = victim->range.load(std::memory_order_relaxed);
                int64_t lo = 0, hi = 0, take = 0;
                do {
                    lo = group_share::lo(r), hi = group_share::hi(r);
                    take = (hi - lo + 1) / 2;
                } while (take > 0 && !victim->range.compare_exchange_weak(r, group_share::pack(lo, hi - take),
                                                                          std::memory_order_relaxed));
                if (take == 0) continue;
                // Published as this thread's share, so that a thread that runs out later can take half of it in turn.
                mine.range.store(group_share::pack(hi - take, hi), std::memory_order_relaxed);
                run_share(mine);
            }
        }
    });
}

#endif  // TANDEM_QUANT_AVX512

}  // namespace

std::shared_ptr<const derived_layout> pack_quant(thread_pool& pool, host_arena& arena, const tensor& w) {
#if defined(TANDEM_QUANT_AVX512)
    if ((w.type != dtype::q4_0 && w.type != dtype::q8_0) || chosen_path() != quant_path::avx512) return nullptr;
    if (w.ne[0] % qk != 0 || w.ne[0] == 0 || w.nrows() == 0 || w.buf == nullptr || w.buf->host_ptr() == nullptr)
        return nullptr;
    auto p = std::make_shared<packed_quant>();
    p->type = w.type;
    p->k = w.ne[0];
    p->n = w.nrows();
    p->nblk = (p->k / qk + 1) / 2 * 2;
    p->chunk_bytes = w.type == dtype::q4_0 ? 256 : 512;
    p->pair_bytes = 64 + 2 * p->chunk_bytes;
    p->group_bytes = size_t(p->nblk / 2) * p->pair_bytes;
    const size_t bytes = p->group_bytes * size_t(p->groups());
    p->data = arena.alloc(bytes);
    const auto* src = w.host<const uint8_t>();
    const packed_quant& pr = *p;
    pool.parallel_for(pr.groups(), grain(rows_per_group * pr.k), [&](int64_t g0, int64_t g1) {
        for (int64_t g = g0; g < g1; ++g) pack_group(pr, src, g, pr.data.get() + size_t(g) * pr.group_bytes);
    });
    return p;
#else
    (void)pool;
    (void)arena;
    (void)w;
    return nullptr;
#endif
}

bool matmul_packed(thread_pool& pool, std::span<const derived_layout* const> ls, const tensor& x,
                   std::span<const tensor> outs) {
#if defined(TANDEM_QUANT_AVX512)
    if (ls.empty() || ls.size() != outs.size() || chosen_path() != quant_path::avx512) return false;
    std::vector<group_job> jobs;
    jobs.reserve(ls.size());
    int64_t first = 0;
    for (size_t i = 0; i < ls.size(); ++i) {
        const auto* p = dynamic_cast<const packed_quant*>(ls[i]);
        // One activation quantization serves every weight: they must share the row length and the weight type
        // (whose offset the activation sums carry).
        if (p == nullptr || (!jobs.empty() && (p->k != jobs[0].p->k || p->type != jobs[0].p->type))) return false;
        jobs.push_back({p, outs[i].host<float>(), first});
        first += p->groups();
    }
    const packed_quant& p0 = *jobs.front().p;
    const int64_t m = x.nrows();
    if (m == 0) return true;
    const std::vector<pass_span> spans = pass_rows(m);
    // The weights' unsigned bytes are the values plus this offset; block_tile starts each dot product from
    // offset * (-sum of the activation bytes): quantize_row's negated sums times the offset.
    const act_rows a{x.host<const float>(), m, p0.k, p0.nblk, p0.type == dtype::q4_0 ? 8 : 128, spans};
    // Whole tiles per thread: a tile interleaves its rows' blocks 32 bytes apart, so threads that split a tile by
    // rows (as before) wrote into the same lines. One tile (up to 12 rows: decode, token trees) is quantized by the
    // calling thread alone, with no pool call. 1.1B Q4_0 verification passes on the Intel VM, alternated runs of
    // the two builds: 9 rows 32.6-33.6 -> 31.5-31.9 ms (the quantization had taken ~26 us per matmul, 2.3 ms of
    // the pass), 65 rows 180-186 -> 171-172 ms, decode unchanged. (Sharing one tile's quantization out between the
    // threads inside the matmul's own pool call made decode 0.3-0.6 ms slower and 9 rows no faster.)
    const packed_acts buf = acts_buffer(a);
    pool.parallel_for(int64_t(spans.size()), grain(max_multi_pass * p0.k * 4), [&](int64_t t0, int64_t t1) {
        quantize_tiles(a, size_t(t0), size_t(t1), buf);
    });
    if (p0.type == dtype::q4_0) {
        run_groups<dtype::q4_0>(pool, jobs, buf, m, spans);
    } else {
        run_groups<dtype::q8_0>(pool, jobs, buf, m, spans);
    }
    return true;
#else
    (void)pool;
    (void)ls;
    (void)x;
    (void)outs;
    return false;
#endif
}

}  // namespace tandem::cpu
