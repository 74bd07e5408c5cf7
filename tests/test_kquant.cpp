// Q4_K / Q6_K: hand-built super-blocks with known bit patterns decode to the values the GGUF format defines (every
// nibble and 2-bit position, the 6-bit scale packing of Q4_K including the separately stored high bits of sub-blocks
// 4..7, Q6_K's signed scales); quantize -> dequantize error bounds on Gaussian data; whole models: a synth model of
// dim 256 / ffn 768 in q4_k and q6_k (written by synth and by quantize_model, q4_k_m and q4_0's q6_k output
// included) loads and gives finite logits close to f32's on cpu_ref and cpu, and stories260K (dims 64 and 172)
// falls back to q4_0 / q8_0 / f32 with a note; a file quantized to Q4_K_M by llama.cpp itself (models/) loads,
// dequantizes to llama.cpp's values and generates cpu_ref's greedy tokens on every backend that accepts it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/cpu/dequant.h"
#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"
#include "engine/session.h"
#include "engine/synth.h"
#include "engine/types.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

std::vector<float> decode(dtype t, const std::vector<uint8_t>& bytes, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    dequantize_row(t, bytes.data(), out.data(), n);
    return out;
}

std::vector<uint8_t> encode(dtype t, const std::vector<float>& x) {
    std::vector<uint8_t> out(dtype_row_bytes(t, int64_t(x.size())));
    quantize_row(t, x.data(), out.data(), int64_t(x.size()));
    return out;
}

TEST(kquant, block_geometry) {
    EXPECT_EQ(dtype_info(uint32_t(dtype::q4_k))->block_size, 256u);
    EXPECT_EQ(dtype_row_bytes(dtype::q4_k, 256), 144u);  // 2 + 2 + 12 + 128
    EXPECT_EQ(dtype_row_bytes(dtype::q6_k, 256), 210u);  // 128 + 64 + 16 + 2
    EXPECT_EQ(dtype_row_bytes(dtype::q4_k, 4096), 16u * 144);
    EXPECT_EQ(dtype_row_bytes(dtype::q6_k, 4096), 16u * 210);
    EXPECT_TRUE(dequant_supported(dtype::q4_k));
    EXPECT_TRUE(dequant_supported(dtype::q6_k));
    EXPECT_TRUE(quantize_supported(dtype::q4_k));
    EXPECT_TRUE(quantize_supported(dtype::q6_k));
}

// ---- Q4_K ----

// A Q4_K block with d = 0.5 (fp16 0x3800), dmin = 0.25 (0x3400), all quants 0 and the given 12 scale bytes.
std::vector<uint8_t> q4_k_block(const std::vector<uint8_t>& scales) {
    std::vector<uint8_t> b(144, 0);
    b[1] = 0x38, b[3] = 0x34;
    for (size_t i = 0; i < scales.size(); ++i) b[4 + i] = scales[i];
    return b;
}

// Scales and mins chosen so every bit field matters, packed by hand:
//   sc = {1, 2, 3, 63, 17, 33, 48, 62}, m = {0, 5, 10, 63, 16, 47, 32, 1}
//   bytes 0..3  = sc[j] | (sc[j+4] >> 4) << 6  = 0x41 0x82 0xc3 0xff
//   bytes 4..7  = m[j]  | (m[j+4] >> 4) << 6   = 0x40 0x85 0x8a 0x3f
//   bytes 8..11 = (sc[j+4] & 15) | (m[j+4] & 15) << 4 = 0x01 0xf1 0x00 0x1e
// Quant of sub-block s, position l: (l + 3s) % 16, stored as qs[32c + l] = q(2c, l) | q(2c+1, l) << 4.
TEST(kquant, q4_k_hand_built_block_decodes) {
    const int sc[8] = {1, 2, 3, 63, 17, 33, 48, 62}, m[8] = {0, 5, 10, 63, 16, 47, 32, 1};
    auto b = q4_k_block({0x41, 0x82, 0xc3, 0xff, 0x40, 0x85, 0x8a, 0x3f, 0x01, 0xf1, 0x00, 0x1e});
    auto q = [](int s, int l) { return (l + 3 * s) % 16; };
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) b[size_t(16 + 32 * c + l)] = uint8_t(q(2 * c, l) | q(2 * c + 1, l) << 4);
    for (int j = 0; j < 8; ++j) {
        int got_sc, got_m;
        q4_k_scale_min(b.data() + 4, j, &got_sc, &got_m);
        EXPECT_EQ(got_sc, sc[j]) << j;
        EXPECT_EQ(got_m, m[j]) << j;
    }
    const auto v = decode(dtype::q4_k, b, 256);
    for (int s = 0; s < 8; ++s)
        for (int l = 0; l < 32; ++l)
            EXPECT_EQ(v[size_t(32 * s + l)], 0.5f * float(sc[s] * q(s, l)) - 0.25f * float(m[s])) << s << " " << l;
    // Spelled out: element 165 is sub-block 5, l = 5, quant (5 + 15) % 16 = 4: 0.5 * 33 * 4 - 0.25 * 47.
    EXPECT_EQ(v[165], 54.25f);
    // Element 255: sub-block 7, l = 31, quant (31 + 21) % 16 = 4: 0.5 * 62 * 4 - 0.25 * 1.
    EXPECT_EQ(v[255], 123.75f);
}

// Only the high-bit fields of sub-blocks 4..7: bytes 0..3 = 0xc0 (bits 5:4 of sc4..7 = 3), bytes 4..7 = 0x40 (bits
// 5:4 of m4..7 = 1), bytes 8..11 = 0x21 0x43 0x65 0x87 (low nibbles: sc4..7 = 1, 3, 5, 7; m4..7 = 2, 4, 6, 8).
// So sc4..7 = 49, 51, 53, 55 and m4..7 = 18, 20, 22, 24, while sub-blocks 0..3 read 0 from the low 6 bits.
TEST(kquant, q4_k_high_scale_bits_of_sub_blocks_4_to_7) {
    auto b = q4_k_block({0xc0, 0xc0, 0xc0, 0xc0, 0x40, 0x40, 0x40, 0x40, 0x21, 0x43, 0x65, 0x87});
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x00, b[3] = 0x3c;  // d = dmin = 1
    for (int i = 16; i < 144; ++i) b[size_t(i)] = 0x22;  // every quant 2
    const auto v = decode(dtype::q4_k, b, 256);
    for (int i = 0; i < 128; ++i) EXPECT_EQ(v[size_t(i)], 0.f) << i;  // sc = m = 0
    const float want[4] = {2 * 49 - 18, 2 * 51 - 20, 2 * 53 - 22, 2 * 55 - 24};
    for (int i = 128; i < 256; ++i) EXPECT_EQ(v[size_t(i)], want[(i - 128) / 32]) << i;
}

// One non-zero nibble at a time (sc = 1, m = 0 everywhere, d = 1): the byte and nibble -> element map.
TEST(kquant, q4_k_nibble_positions) {
    // sc0..3 = 1 and sc4..7 = 1 (low nibble of bytes 8..11), mins 0.
    auto base = q4_k_block({1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1});
    base[0] = 0x00, base[1] = 0x3c;  // d = 1
    struct probe {
        int byte;  // index into qs
        bool high;
        int element;
    };
    const probe probes[] = {{0, false, 0},    {0, true, 32},     {31, false, 31}, {31, true, 63},
                            {32, false, 64},  {32, true, 96},    {45, false, 77}, {70, true, 166},
                            {100, true, 228}, {127, false, 223}, {127, true, 255}};
    for (const auto& p : probes) {
        auto b = base;
        b[size_t(16 + p.byte)] = p.high ? 0x90 : 0x09;
        const auto v = decode(dtype::q4_k, b, 256);
        for (int i = 0; i < 256; ++i) EXPECT_EQ(v[size_t(i)], i == p.element ? 9.f : 0.f) << p.byte << " " << i;
    }
}

// ---- Q6_K ----

// A Q6_K block whose every quant is 0 (u = 32: ql nibbles 0, qh pairs 0b10 -> qh bytes 0xaa), scales[g] = g + 1 with
// alternating signs, d = 0.5 (0x3800).
std::vector<uint8_t> q6_k_zero_block() {
    std::vector<uint8_t> b(210, 0);
    for (int i = 128; i < 192; ++i) b[size_t(i)] = 0xaa;
    for (int g = 0; g < 16; ++g) b[size_t(192 + g)] = uint8_t(int8_t(g % 2 ? -(g + 1) : g + 1));
    b[208] = 0x00, b[209] = 0x38;
    return b;
}

float q6_k_scale(int g) { return float(g % 2 ? -(g + 1) : g + 1); }

// Each (half h, quarter i) with a few l: ql nibble 5 at the place the format gives -> u = 37, q = 5 at element
// 128h + 32i + l, everything else 0.
TEST(kquant, q6_k_low_bit_positions) {
    struct probe {
        int ql_byte;
        bool high;
        int element;
    };
    const probe probes[] = {{0, false, 0},    {0, true, 64},    {32, false, 32},  {32, true, 96},
                            {31, true, 95},   {63, false, 63},  {64, false, 128}, {99, true, 227},
                            {96, false, 160}, {127, true, 255}, {77, true, 205}};
    for (const auto& p : probes) {
        auto b = q6_k_zero_block();
        b[size_t(p.ql_byte)] = p.high ? 0x50 : 0x05;
        const auto v = decode(dtype::q6_k, b, 256);
        for (int i = 0; i < 256; ++i) {
            const float want = i == p.element ? 0.5f * q6_k_scale(i / 16) * 5.f : 0.f;
            EXPECT_EQ(v[size_t(i)], want) << p.ql_byte << " " << i;
        }
    }
}

// qh byte 0 = 0b00011011 and qh byte 32 + 7 = 0b11100100: the 2-bit fields, low to high, belong to elements l,
// l + 32, l + 64, l + 96 of the half: u = 48 (q 16), 32 (0), 16 (-16), 0 (-32) in the first, the reverse in the
// second.
TEST(kquant, q6_k_high_bit_positions) {
    auto b = q6_k_zero_block();
    b[128] = 0x1b;
    b[128 + 32 + 7] = 0xe4;
    const auto v = decode(dtype::q6_k, b, 256);
    auto want = [](int e, int q) { return 0.5f * q6_k_scale(e / 16) * float(q); };
    for (int i = 0; i < 256; ++i) {
        float w = 0.f;
        if (i == 0) w = want(0, 16);
        if (i == 64) w = want(64, -16);
        if (i == 96) w = want(96, -32);
        if (i == 128 + 7) w = want(135, -32);
        if (i == 128 + 32 + 7) w = want(167, -16);
        if (i == 128 + 96 + 7) w = want(231, 16);
        EXPECT_EQ(v[size_t(i)], w) << i;
    }
    // Spelled out: element 231 is in group 14 (scale 15), q = 16: 0.5 * 15 * 16.
    EXPECT_EQ(v[231], 120.f);
    // Element 96: group 6, scale 7, q = -32.
    EXPECT_EQ(v[96], -112.f);
}

// Signed scales apply to exactly their 16 elements: every quant 1 (ql nibbles 1 -> bytes 0x11).
TEST(kquant, q6_k_scales_cover_groups_of_16) {
    auto b = q6_k_zero_block();
    for (int i = 0; i < 128; ++i) b[size_t(i)] = 0x11;
    b[192 + 3] = 0x80;   // scale -128
    b[192 + 12] = 0x7f;  // scale 127
    const auto v = decode(dtype::q6_k, b, 256);
    for (int i = 0; i < 256; ++i) {
        const int g = i / 16;
        const float s = g == 3 ? -128.f : g == 12 ? 127.f : q6_k_scale(g);
        EXPECT_EQ(v[size_t(i)], 0.5f * s) << i;
    }
}

// ---- quantizers ----

double rms_rel_error(const std::vector<float>& x, const std::vector<float>& y) {
    double e = 0, r = 0;
    for (size_t i = 0; i < x.size(); ++i) e += double(y[i] - x[i]) * (y[i] - x[i]), r += double(x[i]) * x[i];
    return std::sqrt(e / r);
}

// Gaussian rows at several magnitudes. Measured with this quantizer (seed 42): q4_k 0.070 (q4_0 0.086 for
// comparison), q6_k 0.0165; the bounds leave a margin, while a quantizer writing another layout than the reference
// decoder reads would be near or above 1.
TEST(kquant, quantize_dequantize_gaussian_error) {
    std::mt19937 g(42);
    const int64_t n = 256 * 64;
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t b = 0; b < n / 256; ++b) {
        std::normal_distribution<float> nd(0.f, std::ldexp(1.f, int(b % 12) - 8));
        for (int i = 0; i < 256; ++i) x[size_t(b * 256 + i)] = nd(g);
    }
    const double e4k = rms_rel_error(x, decode(dtype::q4_k, encode(dtype::q4_k, x), n));
    const double e6k = rms_rel_error(x, decode(dtype::q6_k, encode(dtype::q6_k, x), n));
    const double e40 = rms_rel_error(x, decode(dtype::q4_0, encode(dtype::q4_0, x), n));
    const double e80 = rms_rel_error(x, decode(dtype::q8_0, encode(dtype::q8_0, x), n));
    std::printf("[ info     ] rms relative error: q4_k %.4f, q6_k %.4f (q4_0 %.4f, q8_0 %.4f)\n", e4k, e6k, e40, e80);
    EXPECT_LT(e4k, 0.08);
    EXPECT_LT(e6k, 0.02);
    EXPECT_LT(e4k, e40);  // the point of Q4_K at the same 4.5 bits per weight
    // Per-element bound of Q6_K: a group's error stays within a step of its scale, |e| <= |d * sc| (half a step
    // from rounding, plus the clamp at +31 for the positive end of a group whose extreme is negative).
    const auto bytes = encode(dtype::q6_k, x);
    const auto y = decode(dtype::q6_k, bytes, n);
    for (int64_t b = 0; b < n / 256; ++b) {
        const uint8_t* blk = bytes.data() + b * 210;
        const float d = fp16_to_fp32(uint16_t(blk[208] | blk[209] << 8));
        for (int i = 0; i < 256; ++i) {
            const float step = std::fabs(d * float(int8_t(blk[192 + i / 16])));
            ASSERT_LE(std::fabs(y[size_t(b * 256 + i)] - x[size_t(b * 256 + i)]), step * 1.0001f) << b << " " << i;
        }
    }
}

// Awkward blocks: all zero, constant (negative, positive), one spike, sub-blocks of wildly different scale.
TEST(kquant, quantize_awkward_blocks) {
    for (dtype t : {dtype::q4_k, dtype::q6_k}) {
        SCOPED_TRACE(std::string(dtype_name(t)));
        const std::vector<float> zero(512, 0.f);
        for (float v : decode(t, encode(t, zero), 512)) EXPECT_EQ(v, 0.f);
        for (float c : {-3.f, 2.5f}) {
            const std::vector<float> x(256, c);
            for (float v : decode(t, encode(t, x), 256)) EXPECT_NEAR(v, c, 0.01f * std::fabs(c));
        }
        std::vector<float> spike(256, 0.f);
        spike[77] = -100.f;
        const auto s = decode(t, encode(t, spike), 256);
        // Within the fp16 rounding of the super-block scales (2^-11 relative) of the spike.
        for (int i = 0; i < 256; ++i) EXPECT_NEAR(s[size_t(i)], spike[size_t(i)], 0.1f) << i;
        std::mt19937 g(3);
        std::normal_distribution<float> nd(0.f, 1.f);
        std::vector<float> wide(256);
        for (int i = 0; i < 256; ++i) wide[size_t(i)] = nd(g) * std::exp2(-5.f * float(7 - i / 32) / 7.f);
        const auto w = decode(t, encode(t, wide), 256);
        // The largest sub-block sets the super-block scales; the smallest, 1/32 of it, gets a 6-bit (Q4_K) or 8-bit
        // (Q6_K) scale of only a few units, yet must keep its shape.
        const std::vector<float> small(wide.begin(), wide.begin() + 32), small_w(w.begin(), w.begin() + 32);
        std::printf("[ info     ] %s: smallest sub-block rms relative error %.3f, whole block %.4f\n",
                    std::string(dtype_name(t)).c_str(), rms_rel_error(small, small_w), rms_rel_error(wide, w));
        EXPECT_LT(rms_rel_error(small, small_w), t == dtype::q4_k ? 0.3 : 0.1);
        EXPECT_LT(rms_rel_error(wide, w), t == dtype::q4_k ? 0.08 : 0.02);
    }
}

TEST(kquant, bad_arguments_throw) {
    std::vector<float> x(288, 1.f);
    std::vector<uint8_t> out(1024);
    EXPECT_THROW(quantize_row(dtype::q4_k, x.data(), out.data(), 128), error);
    EXPECT_THROW(quantize_row(dtype::q6_k, x.data(), out.data(), 288), error);
    std::vector<float> y(288);
    EXPECT_THROW(dequantize_row(dtype::q4_k, out.data(), y.data(), 32), error);
    EXPECT_FALSE(quantize_supported(dtype::q5_k));
    EXPECT_FALSE(dequant_supported(dtype::q5_k));
}

TEST(kquant, quant_targets_and_fallback_rule) {
    EXPECT_EQ(parse_quant_target("q4_k")->type, dtype::q4_k);
    EXPECT_TRUE(parse_quant_target("q4_k_m")->k_m);
    EXPECT_EQ(parse_quant_target("q4_k_m")->name(), "q4_k_m");
    EXPECT_FALSE(parse_quant_target("q5_k").has_value());
    std::string why;
    EXPECT_EQ(matrix_quant_type("a", 512, dtype::q4_k, &why), dtype::q4_k);
    EXPECT_EQ(matrix_quant_type("a", 64, dtype::q4_k, &why), dtype::q4_0);
    EXPECT_EQ(why, "a: row length 64 is not a multiple of the q4_k block size 256");
    EXPECT_EQ(fallback_note(why, dtype::q4_0), why + ", written as q4_0");
    EXPECT_EQ(matrix_quant_type("b", 896, dtype::q6_k, &why), dtype::q8_0);
    EXPECT_EQ(matrix_quant_type("c", 172, dtype::q6_k, &why), dtype::f32);
    EXPECT_EQ(fallback_note(why, dtype::f32),
              "c: row length 172 is not a multiple of the q6_k block size 256, kept as f32");
    EXPECT_EQ(matrix_quant_type("d", 172, dtype::q4_0, &why), dtype::f32);
    EXPECT_EQ(matrix_quant_type("e", 172, dtype::f16, &why), dtype::f16);
    // q4_k_m over 8 layers: q6_k for attn_v / ffn_down in layers 0, 3, 6, 7; q4_0 puts only the output in q6_k.
    const quant_target km{dtype::q4_k, true}, q40{dtype::q4_0, false};
    for (int i = 0; i < 8; ++i) {
        const bool more = i == 0 || i == 3 || i == 6 || i == 7;
        const std::string b = "blk." + std::to_string(i) + ".";
        EXPECT_EQ(planned_quant_type(b + "attn_v.weight", {256, 256}, km, 8, true, false),
                  more ? dtype::q6_k : dtype::q4_k);
        EXPECT_EQ(planned_quant_type(b + "ffn_down.weight", {768, 256}, km, 8, true, false),
                  more ? dtype::q6_k : dtype::q4_k);
        EXPECT_EQ(planned_quant_type(b + "attn_q.weight", {256, 256}, km, 8, true, false), dtype::q4_k);
        EXPECT_EQ(planned_quant_type(b + "ffn_down.weight", {768, 256}, q40, 8, true, false), dtype::q4_0);
    }
    EXPECT_EQ(planned_quant_type("output.weight", {256, 512}, km, 8, true, false), dtype::q6_k);
    EXPECT_EQ(planned_quant_type("token_embd.weight", {256, 512}, km, 8, true, false), dtype::q4_k);
    EXPECT_EQ(planned_quant_type("token_embd.weight", {256, 512}, km, 8, false, false), dtype::q6_k);  // tied
    EXPECT_EQ(planned_quant_type("output.weight", {256, 512}, q40, 8, true, false), dtype::q6_k);
    EXPECT_EQ(planned_quant_type("output.weight", {64, 512}, q40, 8, true, false), dtype::q4_0);
    EXPECT_EQ(planned_quant_type("output.weight", {256, 512}, q40, 8, true, true), dtype::q4_0);  // pure
}

// ---- whole models ----

// Runs the CLI; returns exit code and captured stdout+stderr.
std::pair<int, std::string> run_cli(const std::string& args) {
    const std::string cmd = std::string(TANDEM_CLI_PATH) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return {-1, "popen failed"};
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

class kquant_model : public ::testing::Test {
 protected:
    // dim 256 and ffn 768: every matrix row is whole 256-weight super-blocks.
    static void SetUpTestSuite() {
        dir_ = std::filesystem::temp_directory_path() / ("tandem_test_kquant_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
        synth_shape o;
        o.n_embd = 256, o.n_layer = 4, o.n_head = 4, o.n_head_kv = 2, o.n_ff = 768, o.n_vocab = 512, o.n_ctx = 128;
        const synth_shape s = synth_resolve_shape("", o);
        synth_model(s, dtype::f32, 7, path("f32"));
        synth_q4k_ = synth_model(s, dtype::q4_k, 7, path("synth_q4_k"));
        synth_q6k_ = synth_model(s, dtype::q6_k, 7, path("synth_q6_k"));
        for (const char* t : {"q4_k", "q6_k", "q4_k_m", "q4_0"}) {
            res_[t] = quantize_model(path("f32"), path(t), *parse_quant_target(t), false);
        }
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
    static std::string path(const std::string& name) { return (dir_ / ("k256_" + name + ".gguf")).string(); }

    // Logits of every position of a fixed prompt.
    static std::vector<float> logits(const std::string& file, const std::string& be) {
        auto m = model::load(file, make_backend(be));
        sampling_params sp;
        sp.temperature = 0;
        session s(*m, sp, 64);
        std::vector<int32_t> prompt = {1};
        for (int i = 0; i < 11; ++i) prompt.push_back(int32_t(3 + (i * 97) % 500));
        std::vector<float> all;
        s.feed(prompt, &all);
        return all;
    }
    static double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
        double e = 0, r = 0;
        for (size_t i = 0; i < ref.size(); ++i)
            e += double(got[i] - ref[i]) * (got[i] - ref[i]), r += double(ref[i]) * ref[i];
        return e / r;
    }

    static inline std::filesystem::path dir_;
    static inline synth_result synth_q4k_, synth_q6k_;
    static inline std::map<std::string, quantize_result> res_;
};

TEST_F(kquant_model, file_types) {
    EXPECT_TRUE(synth_q4k_.fallbacks.empty());
    EXPECT_TRUE(synth_q6k_.fallbacks.empty());
    for (const auto& [name, r] : res_) EXPECT_TRUE(r.fallbacks.empty()) << name;
    auto type_of = [](const std::string& file, const std::string& tensor) {
        return gguf_file::open(file).find_tensor(tensor)->type;
    };
    EXPECT_EQ(type_of(path("synth_q4_k"), "blk.2.ffn_down.weight"), dtype::q4_k);
    EXPECT_EQ(type_of(path("synth_q4_k"), "output.weight"), dtype::q4_k);
    EXPECT_EQ(type_of(path("synth_q6_k"), "token_embd.weight"), dtype::q6_k);
    EXPECT_EQ(type_of(path("synth_q4_k"), "blk.0.attn_norm.weight"), dtype::f32);
    EXPECT_EQ(gguf_file::open(path("synth_q4_k")).get("general.file_type").as_int("t"), 14);
    EXPECT_EQ(gguf_file::open(path("synth_q6_k")).get("general.file_type").as_int("t"), 18);
    EXPECT_EQ(type_of(path("q4_k"), "output.weight"), dtype::q4_k);
    EXPECT_EQ(type_of(path("q6_k"), "blk.3.attn_q.weight"), dtype::q6_k);
    // q4_0: llama.cpp's default puts the output projection in q6_k.
    EXPECT_EQ(type_of(path("q4_0"), "output.weight"), dtype::q6_k);
    EXPECT_EQ(type_of(path("q4_0"), "token_embd.weight"), dtype::q4_0);
    EXPECT_EQ(type_of(path("q4_0"), "blk.0.ffn_down.weight"), dtype::q4_0);
    // q4_k_m over 4 layers: more bits for attn_v / ffn_down in layers 2 and 3.
    EXPECT_EQ(gguf_file::open(path("q4_k_m")).get("general.file_type").as_int("t"), 15);
    EXPECT_EQ(type_of(path("q4_k_m"), "output.weight"), dtype::q6_k);
    EXPECT_EQ(type_of(path("q4_k_m"), "token_embd.weight"), dtype::q4_k);
    for (int i = 0; i < 4; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        const dtype want = i >= 2 ? dtype::q6_k : dtype::q4_k;
        EXPECT_EQ(type_of(path("q4_k_m"), b + "attn_v.weight"), want) << i;
        EXPECT_EQ(type_of(path("q4_k_m"), b + "ffn_down.weight"), want) << i;
        EXPECT_EQ(type_of(path("q4_k_m"), b + "attn_k.weight"), dtype::q4_k) << i;
    }
    // Re-quantizing a K-quant file reads its blocks back.
    const auto r = quantize_model(path("q4_k_m"), path("q4_k_m_to_q8_0"), dtype::q8_0, false);
    EXPECT_EQ(type_of(path("q4_k_m_to_q8_0"), "output.weight"), dtype::q8_0);
    EXPECT_TRUE(r.fallbacks.empty());
}

// Finite logits, close to the f32 model's, and cpu agreeing with cpu_ref on the same file. Observed NMSE against
// f32 (random weights amplify the error through the layers): q6_k ~9e-4, q4_k ~1.4e-2, q4_k_m ~9e-3, q4_0 (with its
// q6_k output) ~1.5e-2, on both backends.
TEST_F(kquant_model, loads_and_gives_logits_close_to_f32) {
    const auto ref = logits(path("f32"), "cpu_ref");
    ASSERT_EQ(ref.size(), 12u * 512);
    for (const char* file : {"f32", "synth_q4_k", "synth_q6_k", "q4_k", "q6_k", "q4_k_m", "q4_0"}) {
        std::vector<float> by_backend[2];
        int i = 0;
        for (const char* be : {"cpu_ref", "cpu"}) {
            auto& l = by_backend[i++];
            l = logits(path(file), be);
            ASSERT_EQ(l.size(), ref.size());
            for (float v : l) ASSERT_TRUE(std::isfinite(v)) << file << " " << be;
            const double e = nmse(ref, l);
            std::printf("[ info     ] %-10s on %-7s: logits nmse vs f32 %.2e\n", file, be, e);
            const bool six = std::string(file).find("q6_k") != std::string::npos;
            EXPECT_LT(e, six ? 2e-3 : 3e-2) << file << " " << be;
        }
        const double between = nmse(by_backend[0], by_backend[1]);
        std::printf("[ info     ] %-10s cpu vs cpu_ref: logits nmse %.2e\n", file, between);
        EXPECT_LT(between, 1e-3) << file;  // int8 activations on cpu: observed 8e-5 .. 1.3e-4 (f32: 3e-13)
    }
}

// stories260K has rows of 64 and 172: under q4_k the 64s fall back to q4_0, under q6_k to q8_0, the 172s to f32;
// the result still loads and generates.
TEST_F(kquant_model, stories260k_falls_back) {
    const std::string in = test::model_path("stories260K.gguf");
    const auto r4 = quantize_model(in, path("stories_q4_k"), dtype::q4_k, false);
    const auto r6 = quantize_model(in, path("stories_q6_k"), dtype::q6_k, false);
    const gguf_file src = gguf_file::open(in);
    size_t matrices = 0;
    for (const auto& t : src.tensors()) matrices += t.ne.size() >= 2;
    EXPECT_EQ(r4.fallbacks.size(), matrices);
    EXPECT_EQ(r4.n_quantized, 0);
    bool saw_q4_0 = false, saw_f32 = false;
    for (const auto& f : r4.fallbacks) {
        saw_q4_0 |=
            f.find("row length 64 is not a multiple of the q4_k block size 256, written as q4_0") != std::string::npos;
        saw_f32 |=
            f == "blk.0.ffn_down.weight: row length 172 is not a multiple of the q4_k block size 256, kept as f32";
    }
    EXPECT_TRUE(saw_q4_0);
    EXPECT_TRUE(saw_f32);
    for (const auto& [file, fb] : {std::pair{"stories_q4_k", dtype::q4_0}, std::pair{"stories_q6_k", dtype::q8_0}}) {
        const gguf_file f = gguf_file::open(path(file));
        EXPECT_EQ(f.find_tensor("blk.0.attn_q.weight")->type, fb) << file;
        EXPECT_EQ(f.find_tensor("blk.0.ffn_down.weight")->type, dtype::f32) << file;
        const std::string story = test::greedy_story(*model::load(path(file), make_backend("cpu")), 32);
        EXPECT_FALSE(story.empty()) << file;
    }
    EXPECT_THROW(quantize_model(in, path("stories_pure"), dtype::q4_k, true), error);
    EXPECT_EQ(r6.fallbacks.size(), matrices);
}

TEST_F(kquant_model, cli_quantize_and_synth) {
    auto [code, text] = run_cli("quantize " + test::model_path("stories260K.gguf") + " " + path("cli_q4_k") + " q4_k");
    EXPECT_EQ(code, 0) << text;
    EXPECT_NE(text.find("blk.0.attn_q.weight: row length 64 is not a multiple of the q4_k block size 256, written as "
                        "q4_0"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("blk.0.ffn_down.weight: row length 172 is not a multiple of the q4_k block size 256, kept as "
                        "f32"),
              std::string::npos)
        << text;
    std::tie(code, text) = run_cli("quantize " + path("f32") + " " + path("cli_q4_k_m") + " q4_k_m");
    EXPECT_EQ(code, 0) << text;
    EXPECT_EQ(gguf_file::open(path("cli_q4_k_m")).find_tensor("blk.3.ffn_down.weight")->type, dtype::q6_k);
    std::tie(code, text) = run_cli("quantize --help");
    EXPECT_EQ(code, 0) << text;
    for (const char* s : {"q4_k_m", "q6_k", "--pure"}) EXPECT_NE(text.find(s), std::string::npos) << s;
    for (const char* t : {"q4_k", "q6_k"}) {
        std::tie(code, text) = run_cli("synth --dim 256 --layers 1 --heads 4 --ffn 768 --vocab 300 -t " +
                                       std::string(t) + " -o " + path(std::string("cli_synth_") + t));
        EXPECT_EQ(code, 0) << text;
        const gguf_file f = gguf_file::open(path(std::string("cli_synth_") + t));
        EXPECT_EQ(dtype_name(f.find_tensor("blk.0.ffn_down.weight")->type), t);
        EXPECT_EQ(dtype_name(f.find_tensor("output.weight")->type), t);
    }
}

// ---- a file quantized by llama.cpp ----

// models/synth_k256_q4_k_m.gguf: a `tandem synth` f32 model (dim 256, 2 layers, 4 heads / 2 kv heads, ffn 768,
// vocab 512) quantized to Q4_K_M by llama.cpp's own quantizer (models/README.md). Its blocks come from another
// implementation's scale search, so they hold scale/min patterns our quantizer need not produce.
// models/synth_k256_q4_k_m_dequant.bin holds llama.cpp's dequantization of its Q4_K / Q6_K tensors (layout in
// bench/peers/kquant_asset.py): per tensor the float64 sum and sum of squares of every value, and the first and
// last rows in full.
const char* const llama_cpp_file = "synth_k256_q4_k_m.gguf";

struct dequant_record {
    std::string name;
    uint32_t ggml_type = 0, row_len = 0, n_rows = 0;
    double sum = 0, sum_sq = 0;
    std::vector<std::pair<uint32_t, std::vector<float>>> rows;
};

// Reads the reference; a truncated or inconsistent file throws std::runtime_error naming the byte offset.
std::vector<dequant_record> read_dequant_reference(const std::string& path) {
    const std::string bytes = test::read_file(path);
    size_t at = 0;
    auto take = [&](void* dst, size_t n) {
        if (at + n > bytes.size()) throw std::runtime_error(path + ": truncated at byte " + std::to_string(at));
        std::memcpy(dst, bytes.data() + at, n);
        at += n;
    };
    auto u32 = [&] {
        uint32_t v;
        take(&v, 4);
        return v;
    };
    auto f64 = [&] {
        double v;
        take(&v, 8);
        return v;
    };
    char magic[4];
    take(magic, 4);
    if (std::string(magic, 4) != "TKQR" || u32() != 1) throw std::runtime_error(path + ": not a TKQR v1 file");
    const uint32_t n = u32();
    if (n > 4096) throw std::runtime_error(path + ": implausible record count " + std::to_string(n));
    std::vector<dequant_record> out(n);
    for (auto& r : out) {
        r.name.resize(u32());
        take(r.name.data(), r.name.size());
        r.ggml_type = u32(), r.row_len = u32(), r.n_rows = u32();
        r.sum = f64(), r.sum_sq = f64();
        r.rows.resize(u32());
        for (auto& [index, row] : r.rows) {
            index = u32();
            row.resize(r.row_len);
            take(row.data(), row.size() * sizeof(float));
        }
    }
    if (at != bytes.size()) throw std::runtime_error(path + ": " + std::to_string(bytes.size() - at) + " extra bytes");
    return out;
}

TEST(kquant_llama_cpp_file, tensor_types) {
    const gguf_file f = gguf_file::open(test::model_path(llama_cpp_file));
    EXPECT_EQ(f.get("general.file_type").as_int("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
    std::map<std::string, int> count;
    for (const auto& t : f.tensors()) ++count[std::string(dtype_name(t.type))];
    EXPECT_EQ(count["q4_k"], 13);
    EXPECT_EQ(count["q6_k"], 3);
    EXPECT_EQ(count["f32"], 5);  // the norms: 2 per layer and the output norm
    EXPECT_EQ(count.size(), 3u);
    // llama.cpp's Q4_K_M rule: Q6_K for the output and, in the last of 2 layers, attn_v and ffn_down.
    EXPECT_EQ(f.find_tensor("output.weight")->type, dtype::q6_k);
    EXPECT_EQ(f.find_tensor("token_embd.weight")->type, dtype::q4_k);
    for (const char* w : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}) {
        const bool more_bits = std::string(w) == "attn_v" || std::string(w) == "ffn_down";
        EXPECT_EQ(f.find_tensor(std::string("blk.0.") + w + ".weight")->type, dtype::q4_k) << w;
        EXPECT_EQ(f.find_tensor(std::string("blk.1.") + w + ".weight")->type, more_bits ? dtype::q6_k : dtype::q4_k)
            << w;
    }
    auto m = model::load(test::model_path(llama_cpp_file), make_backend("cpu_ref"));
    EXPECT_EQ(m->hparams().n_embd, 256);
    EXPECT_EQ(m->hparams().n_layer, 2);
    EXPECT_EQ(m->hparams().n_vocab, 512);
}

// Our dequantization of every Q4_K / Q6_K tensor against llama.cpp's (ggml's dequantize_row_q4_K / _q6_K, run by
// bench/peers/kquant_asset.py when the asset was made).
TEST(kquant_llama_cpp_file, dequantization_matches_llama_cpp) {
    const gguf_file f = gguf_file::open(test::model_path(llama_cpp_file));
    const auto ref = read_dequant_reference(test::model_path("synth_k256_q4_k_m_dequant.bin"));
    ASSERT_EQ(ref.size(), size_t(13 + 3));
    for (const auto& r : ref) {
        SCOPED_TRACE(r.name);
        const gguf_tensor_info* t = f.find_tensor(r.name);
        ASSERT_NE(t, nullptr);
        ASSERT_EQ(uint32_t(t->type), r.ggml_type);  // dtype values are GGML type ids
        ASSERT_EQ(t->ne, (std::vector<int64_t>{r.row_len, r.n_rows}));
        const size_t row_bytes = dtype_row_bytes(t->type, r.row_len);
        std::vector<float> row(r.row_len);
        double sum = 0, sum_sq = 0;
        std::map<uint32_t, std::vector<float>> ours;
        for (uint32_t i = 0; i < r.n_rows; ++i) {
            dequantize_row(t->type, f.tensor_data(*t) + i * row_bytes, row.data(), r.row_len);
            for (float v : row) sum += v, sum_sq += double(v) * v;
            if (i == 0 || i + 1 == r.n_rows) ours[i] = row;  // the rows the reference keeps
        }
        // Same values summed in the same order in double: only a differing value can move these.
        EXPECT_NEAR(sum, r.sum, 1e-9 * std::max(1.0, std::fabs(r.sum)));
        EXPECT_NEAR(sum_sq, r.sum_sq, 1e-9 * r.sum_sq);
        for (const auto& [index, want] : r.rows) {
            const auto& got = ours.at(index);
            double worst = 0;
            for (uint32_t k = 0; k < r.row_len; ++k) worst = std::max(worst, double(std::fabs(got[k] - want[k])));
            // The format's formulas in float, as ggml evaluates them: observed bit-identical, so no tolerance.
            EXPECT_EQ(worst, 0.0) << "row " << index;
        }
    }
}

// Greedy generation of 32 tokens from BOS: every backend that accepts Q4_K and Q6_K gives cpu_ref's tokens. GPU
// backends that do not accept them yet are skipped with a message and checked as soon as their supports() does.
TEST(kquant_llama_cpp_file, greedy_tokens_agree_across_backends) {
    const std::string file = test::model_path(llama_cpp_file);
    const auto want = test::greedy_with_logits(*model::load(file, make_backend("cpu_ref")), 32);
    std::string ids;
    for (int32_t t : want.tokens) ids += " " + std::to_string(t);
    std::printf("[ info     ] cpu_ref greedy tokens:%s\n", ids.c_str());  // models/README.md lists llama.cpp's
    for (const std::string& name : backend_names()) {
        if (name == "cpu_ref") continue;
        std::string why;
        auto be = test::try_backend(name, why);
        if (!be) {
            std::printf("[ skipped  ] %s: no device (%s)\n", name.c_str(), why.c_str());
            continue;
        }
        bool ok = true;
        for (dtype t : {dtype::q4_k, dtype::q6_k})
            ok = ok && be->supports(op::matmul, t) && be->supports(op::get_rows, t);
        if (!ok) {
            std::printf("[ skipped  ] %s: supports() does not accept q4_k and q6_k yet\n", name.c_str());
            continue;
        }
        test::greedy_run got;
        try {
            got = test::greedy_with_logits(*model::load(file, std::move(be)), 32);
        } catch (const std::exception& e) {  // one backend's failure must not hide the others' results
            ADD_FAILURE() << name << " accepts q4_k and q6_k but failed: " << e.what();
            continue;
        }
        if (name == "cpu") {
            EXPECT_EQ(got.tokens, want.tokens) << "cpu on " << llama_cpp_file;
        } else {
            test::expect_greedy_agrees(got, want, name + " on " + llama_cpp_file);
        }
    }
}

}  // namespace
}  // namespace tandem
