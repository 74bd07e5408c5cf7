// Reference quantizers for Q8_0, Q4_0, Q4_K and Q6_K (see quantize.h for the rules, backends/cpu/dequant.cpp for
// the bit layouts). Scalar and simple: quantizing a model is a one-off, so clarity wins over speed here.
#include "engine/quantize.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"

namespace tandem {

bool quantize_supported(dtype t) {
    return t == dtype::q8_0 || t == dtype::q4_0 || t == dtype::q4_k || t == dtype::q6_k;
}

namespace {

void write_u16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v & 0xff);
    p[1] = uint8_t(v >> 8);
}

// One Q8_0 block: 2-byte fp16 d, then 32 int8.
void quantize_block_q8_0(const float* x, uint8_t* out) {
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    write_u16(out, fp32_to_fp16(d));
    // |x * id| <= 127 up to one rounding of id: the clamp only guards that last ulp.
    for (int i = 0; i < 32; ++i) {
        const float q = std::round(x[i] * id);
        out[2 + i] = uint8_t(int8_t(std::max(-127.f, std::min(127.f, q))));
    }
}

// One Q4_0 block: 2-byte fp16 d, then 16 bytes with element j in the low nibble of byte j and element j + 16
// in its high nibble.
void quantize_block_q4_0(const float* x, uint8_t* out) {
    float amax = 0.f, m = 0.f;
    for (int i = 0; i < 32; ++i) {
        if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), m = x[i];
    }
    const float d = m / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    write_u16(out, fp32_to_fp16(d));
    auto nibble = [&](float v) {
        // v * id + 8 is in [0, 16]: round half up (the argument is never negative), clamp the top to 15.
        const float q = std::floor(v * id + 8.5f);
        return uint8_t(std::max(0.f, std::min(15.f, q)));
    };
    for (int j = 0; j < 16; ++j) out[2 + j] = uint8_t(nibble(x[j]) | (nibble(x[j + 16]) << 4));
}

// ---- K-quants ----

// Round to nearest (ties upward) and clamp to [lo, hi]; v is clamped first so the conversion cannot overflow.
// floor(v + 0.5) rather than lround: it inlines to one instruction, and the searches below round ~50 times per
// weight.
int quant_clamp(float v, int lo, int hi) { return int(std::floor(std::max(float(lo), std::min(float(hi), v)) + 0.5f)); }

// x ~= a * q - b for one Q4_K sub-block of 32, q in 0..15, a >= 0, b >= 0.
struct affine_fit {
    float a = 0, b = 0;
    double err = INFINITY;  // squared error of the fit with the q it was solved for
};

// Rounds x to the grid (x - origin) * iscale, then solves the least-squares a and b for those q (the regression
// of x on q), with the intercept -b forced to <= 0 (the format's mins are subtracted and unsigned). The error
// comes in closed form from the sums, sum (a q + c - x)^2 with c = -b, so each candidate costs one pass; sx and sxx
// (sum x, sum x^2) are the sub-block's. A fit with a <= 0 is useless and gets an infinite error.
affine_fit fit_affine(const float* x, float origin, float iscale, double sx, double sxx) {
    constexpr int n = 32;
    int sq = 0, sqq = 0;
    float sxq_part[4] = {};  // four chains: the sum is latency-bound otherwise
    for (int i = 0; i < n; ++i) {
        const int q = quant_clamp((x[i] - origin) * iscale, 0, 15);
        sq += q, sqq += q * q, sxq_part[i % 4] += x[i] * float(q);
    }
    const double sxq = double(sxq_part[0]) + sxq_part[1] + sxq_part[2] + sxq_part[3];
    const double det = double(n) * sqq - double(sq) * sq;
    double a = det > 0 ? (n * sxq - sx * sq) / det : 0, c = (sx - a * sq) / n;
    if (c > 0) c = 0, a = sqq > 0 ? sxq / sqq : 0;
    affine_fit f;
    if (!(a > 0)) return f;
    f.a = float(a), f.b = float(-c);
    f.err = a * a * sqq + 2 * a * c * sq + n * c * c - 2 * a * sxq - 2 * c * sx + sxx;
    return f;
}

// The scale and min of one sub-block: grids of spacing (range) / (15 + t / 8), t = -8..8, starting at min(0, min x),
// each candidate's a and b solved by least squares; then the best one re-rounded against its own fit twice.
affine_fit search_q4_k_sub_block(const float* x) {
    constexpr int n = 32;
    float lo = 0.f, hi = x[0];
    double sx = 0, sxx = 0;
    for (int i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
        sx += x[i], sxx += double(x[i]) * x[i];
    }
    affine_fit best;
    if (!(hi > lo)) {  // constant block at lo <= 0 (or zero): q = 0, value -b
        best.b = -lo;
        return best;
    }
    for (int t = -8; t <= 8; ++t) {
        const affine_fit f = fit_affine(x, lo, (15.f + 0.125f * float(t)) / (hi - lo), sx, sxx);
        if (f.err < best.err) best = f;
    }
    for (int it = 0; it < 2 && best.a > 0; ++it) {
        const affine_fit f = fit_affine(x, -best.b, 1.f / best.a, sx, sxx);
        if (!(f.err < best.err)) break;
        best = f;
    }
    return best;
}

// Packs eight 6-bit scales and mins into the 12 bytes drawn in backends/cpu/dequant.cpp.
void pack_q4_k_scales(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
    for (int j = 0; j < 4; ++j) {
        out[j] = uint8_t(sc[j] | (sc[j + 4] >> 4) << 6);
        out[j + 4] = uint8_t(m[j] | (m[j + 4] >> 4) << 6);
        out[j + 8] = uint8_t((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
}

// Rounds the 32 quants of one Q4_K sub-block against its decoded scale ds and min dm; returns the squared error.
float round_q4_k_sub_block(const float* x, float ds, float dm, uint8_t* q) {
    float err = 0;
    const float ids = ds > 0 ? 1.f / ds : 0.f;
    for (int l = 0; l < 32; ++l) {
        const int qi = quant_clamp((x[l] + dm) * ids, 0, 15);
        q[l] = uint8_t(qi);
        const float e = ds * float(qi) - dm - x[l];
        err += e * e;
    }
    return err;
}

// Rounds the 256 quants of a Q4_K super-block against decoded scales; returns the squared error.
float round_q4_k(const float* x, float d, float dmin, const uint8_t* sc, const uint8_t* m, uint8_t* q) {
    float err = 0;
    for (int s = 0; s < 8; ++s)
        err += round_q4_k_sub_block(x + 32 * s, d * float(sc[s]), dmin * float(m[s]), q + 32 * s);
    return err;
}

// One Q4_K super-block (layout in backends/cpu/dequant.cpp): fp16 d, fp16 dmin, 12 scale bytes, 128 quant bytes.
void quantize_block_q4_k(const float* x, uint8_t* out) {
    affine_fit fit[8];
    float max_a = 0, max_b = 0;
    for (int s = 0; s < 8; ++s) {
        fit[s] = search_q4_k_sub_block(x + 32 * s);
        max_a = std::max(max_a, fit[s].a), max_b = std::max(max_b, fit[s].b);
    }
    uint16_t d16 = fp32_to_fp16(max_a / 63.f), dmin16 = fp32_to_fp16(max_b / 63.f);
    const float d = fp16_to_fp32(d16), dmin = fp16_to_fp32(dmin16);
    uint8_t sc[8], m[8], q[256];
    for (int s = 0; s < 8; ++s) {
        sc[s] = uint8_t(d > 0 ? quant_clamp(fit[s].a / d, 0, 63) : 0);
        m[s] = uint8_t(dmin > 0 ? quant_clamp(fit[s].b / dmin, 0, 63) : 0);
        // The rounded 6-bit pair need not be the best one: try its neighbours.
        uint8_t tq[32];
        float best = round_q4_k_sub_block(x + 32 * s, d * float(sc[s]), dmin * float(m[s]), tq);
        const int sc0 = sc[s], m0 = m[s];
        for (int a = std::max(0, sc0 - 1); a <= std::min(63, sc0 + 1); ++a) {
            for (int b = std::max(0, m0 - 1); b <= std::min(63, m0 + 1); ++b) {
                const float e = round_q4_k_sub_block(x + 32 * s, d * float(a), dmin * float(b), tq);
                if (e < best) best = e, sc[s] = uint8_t(a), m[s] = uint8_t(b);
            }
        }
    }
    float err = round_q4_k(x, d, dmin, sc, m, q);
    // Refit d and dmin by least squares over the whole super-block with the integer sc, m and q fixed:
    // x ~= d * u - dmin * v with u = sc q, v = m. It undoes part of the error of rounding the scales to 6 bits.
    double suu = 0, svv = 0, suv = 0, sxu = 0, sxv = 0;
    for (int i = 0; i < 256; ++i) {
        const double u = double(sc[i / 32]) * q[i], v = m[i / 32];
        suu += u * u, svv += v * v, suv += u * v, sxu += x[i] * u, sxv += x[i] * v;
    }
    const double det = suu * svv - suv * suv;
    if (det > 0) {
        const double nd = (sxu * svv - sxv * suv) / det, ndmin = (sxu * suv - sxv * suu) / det;
        if (nd > 0 && ndmin >= 0) {
            const uint16_t nd16 = fp32_to_fp16(float(nd)), ndmin16 = fp32_to_fp16(float(ndmin));
            uint8_t q2[256];
            const float err2 = round_q4_k(x, fp16_to_fp32(nd16), fp16_to_fp32(ndmin16), sc, m, q2);
            if (err2 < err) {
                d16 = nd16, dmin16 = ndmin16;
                std::copy(q2, q2 + 256, q);
            }
        }
    }
    write_u16(out, d16);
    write_u16(out + 2, dmin16);
    pack_q4_k_scales(sc, m, out + 4);
    // Group c of 32 bytes: sub-block 2c in the low nibbles, sub-block 2c + 1 in the high nibbles.
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) out[16 + 32 * c + l] = uint8_t(q[64 * c + l] | q[64 * c + 32 + l] << 4);
}

// The scale of one Q6_K group of 16: x ~= s * q, q in -32..31. Candidate spacings m / k for k around -32 (the extreme
// element m at the wide, negative end of the range) and around +31; each candidate's s is the least-squares
// sum(x q) / sum(q q), whose error is sum(x x) - sum(x q)^2 / sum(q q) in closed form.
float search_q6_k_group(const float* x) {
    constexpr int n = 16;
    float m = 0;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
    if (m == 0) return 0;
    float best_s = 0;
    double best_err = INFINITY;
    auto consider = [&](float k) {
        const float is = k / m;
        int sqq = 0;
        float sxq_part[4] = {};
        for (int i = 0; i < n; ++i) {
            const int q = quant_clamp(x[i] * is, -32, 31);
            sqq += q * q, sxq_part[i % 4] += x[i] * float(q);
        }
        if (sqq == 0) return;
        const double sxq = double(sxq_part[0]) + sxq_part[1] + sxq_part[2] + sxq_part[3];
        const double err = -sxq * sxq / sqq;  // + sum(x x), the same for every candidate
        if (err < best_err) best_err = err, best_s = float(sxq / sqq);
    };
    for (int t = 0; t <= 8; ++t) {
        consider(-32.5f + 0.5f * float(t));
        consider(27.5f + 0.5f * float(t));
    }
    return best_s;
}

float round_q6_k(const float* x, float d, const int8_t* sc, int8_t* q) {
    float err = 0;
    for (int i = 0; i < 256; ++i) {
        const float s = d * float(sc[i / 16]), is = s != 0 ? 1.f / s : 0.f;
        const int qi = quant_clamp(x[i] * is, -32, 31);
        q[i] = int8_t(qi);
        const float e = s * float(qi) - x[i];
        err += e * e;
    }
    return err;
}

// One Q6_K super-block (layout in backends/cpu/dequant.cpp): ql[128], qh[64], int8 scales[16], fp16 d.
void quantize_block_q6_k(const float* x, uint8_t* out) {
    float s[16], s_max = 0;
    for (int g = 0; g < 16; ++g) {
        s[g] = search_q6_k_group(x + 16 * g);
        if (std::fabs(s[g]) > std::fabs(s_max)) s_max = s[g];
    }
    uint16_t d16 = fp32_to_fp16(s_max / -128.f);
    const float d = fp16_to_fp32(d16);
    int8_t sc[16], q[256];
    for (int g = 0; g < 16; ++g) sc[g] = int8_t(d != 0 ? quant_clamp(s[g] / d, -128, 127) : 0);
    float err = round_q6_k(x, d, sc, q);
    // Refit d with sc and q fixed (x ~= d * sc q), kept only if it lowers the error after re-rounding.
    double suu = 0, sxu = 0;
    for (int i = 0; i < 256; ++i) {
        const double u = double(sc[i / 16]) * q[i];
        suu += u * u, sxu += x[i] * u;
    }
    if (suu > 0) {
        const uint16_t nd16 = fp32_to_fp16(float(sxu / suu));
        int8_t q2[256];
        if (round_q6_k(x, fp16_to_fp32(nd16), sc, q2) < err) {
            d16 = nd16;
            std::copy(q2, q2 + 256, q);
        }
    }
    uint8_t* ql = out;
    uint8_t* qh = out + 128;
    // Half h, l = 0..31: the quants of elements 128h + 32i + l (i = 0..3), stored as q + 32 in 0..63, share
    // qh[32h + l] (bits 2i + 1..2i); i = 0, 1 put their low 4 bits in the low nibbles of ql[64h + l] and
    // ql[64h + 32 + l], i = 2, 3 in the high nibbles of the same two bytes.
    for (int h = 0; h < 2; ++h) {
        for (int l = 0; l < 32; ++l) {
            int u[4];
            for (int i = 0; i < 4; ++i) u[i] = q[128 * h + 32 * i + l] + 32;
            ql[64 * h + l] = uint8_t((u[0] & 15) | (u[2] & 15) << 4);
            ql[64 * h + 32 + l] = uint8_t((u[1] & 15) | (u[3] & 15) << 4);
            qh[32 * h + l] = uint8_t((u[0] >> 4) | (u[1] >> 4) << 2 | (u[2] >> 4) << 4 | (u[3] >> 4) << 6);
        }
    }
    for (int g = 0; g < 16; ++g) out[192 + g] = uint8_t(sc[g]);
    write_u16(out + 208, d16);
}

}  // namespace

void quantize_row(dtype t, const float* src, void* dst, int64_t n) {
    if (!quantize_supported(t)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize_row: cannot quantize to " + std::string(dtype_name(t)));
    }
    const auto info = *dtype_info(uint32_t(t));
    const int64_t bs = info.block_size;
    if (n % bs != 0 || n < 0) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize_row: " + std::to_string(n) +
                                                     " elements is not a multiple of the " + std::string(info.name) +
                                                     " block size " + std::to_string(bs));
    }
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t b = 0; b < n / bs; ++b) {
        const float* x = src + b * bs;
        uint8_t* o = out + b * info.block_bytes;
        switch (t) {
            case dtype::q8_0:
                quantize_block_q8_0(x, o);
                break;
            case dtype::q4_0:
                quantize_block_q4_0(x, o);
                break;
            case dtype::q4_k:
                quantize_block_q4_k(x, o);
                break;
            default:
                quantize_block_q6_k(x, o);
                break;
        }
    }
}

}  // namespace tandem
