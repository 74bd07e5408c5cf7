// KV-cache row moves, one element (f32 cache) or one 32-bit word (f16 cache) per invocation, no loops.
//   kv_write_f32_<cache>:      cache row idx[m] = src row m (f32 source; f16 rounded to nearest even)
//   kv_copy_<cache>_gather:    scratch row i = raw bits of cache row src[i]   (all reads ...)
//   kv_copy_<cache>_scatter:   cache row dst[i] = scratch row i, rows with a bad src skipped (... before writes)
// f16 rows need not start on a word: a word shared with a neighbouring row is updated half by half with
// atomics, so rows written by different invocations never clobber each other. Bad slots set a status bit.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer C { uint cache[]; };  // f32 bits or f16 pairs
#if defined(MODE_GATHER)
layout(std430, binding = 1) writeonly buffer S { uint scratch[]; };
#else
// Raw bits: one element per uint (kv_copy), or the f32 source rows (kv_write, converted with integer ops).
layout(std430, binding = 1) readonly buffer S { uint src[]; };
#endif
layout(std430, binding = 2) readonly buffer I { int idx[]; };     // destination (or gather source) slots
layout(std430, binding = 3) readonly buffer J { int check_idx[]; };  // scatter: the gather's source slots
DECLARE_STATUS(4)

layout(push_constant) uniform params {
    uint k;      // elements per row
    uint n;      // rows moved
    uint slots;  // rows of the cache
    uint c_off, s_off, i_off, j_off;
    uint err;    // status bit for a bad slot
    uint use_check;
} pc;

#if defined(CACHE_F16) && !defined(MODE_GATHER)
uint source_bits(uint m, uint e) {
#if defined(SRC_RAW)
    return src[pc.s_off + m * pc.k + e];
#else
    return f16_bits_rne(src[pc.s_off + m * pc.k + e]);
#endif
}
#endif

bool bad_slot(int s) { return s < 0 || uint(s) >= pc.slots; }

void main() {
    const uint i = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
#if defined(CACHE_F16) && !defined(MODE_GATHER)
    const uint words = pc.k / 2u + 1u;  // words a row of k halves can touch
#else
    const uint words = pc.k;            // one element per invocation
#endif
    if (i >= words * pc.n) return;
    const uint m = i / words, w = i - m * words;
    const int slot = idx[pc.i_off + m];
    if (bad_slot(slot)) {
        if (w == 0u) atomicOr(status_word, pc.err);
        return;
    }
#if defined(MODE_GATHER)
#if defined(CACHE_F16)
    scratch[pc.s_off + m * pc.k + w] = BITS_F16(cache, pc.c_off + uint(slot) * pc.k + w);
#else
    scratch[pc.s_off + m * pc.k + w] = cache[pc.c_off + uint(slot) * pc.k + w];
#endif
#else
    if (pc.use_check != 0u && bad_slot(check_idx[pc.j_off + m])) return;
#if defined(CACHE_F16)
    const uint e0 = pc.c_off + uint(slot) * pc.k;  // half index of the row start
    const uint word = (e0 >> 1u) + w;
    const int lo = int(2u * word) - int(e0);         // row element in the low half
    const bool has_lo = lo >= 0 && lo < int(pc.k), has_hi = lo + 1 >= 0 && lo + 1 < int(pc.k);
    if (has_lo && has_hi) {
        cache[word] = source_bits(m, uint(lo)) | (source_bits(m, uint(lo + 1)) << 16u);
    } else if (has_lo) {
        atomicAnd(cache[word], 0xffff0000u);
        atomicOr(cache[word], source_bits(m, uint(lo)));
    } else if (has_hi) {
        atomicAnd(cache[word], 0x0000ffffu);
        atomicOr(cache[word], source_bits(m, uint(lo + 1)) << 16u);
    }
#else
    cache[pc.c_off + uint(slot) * pc.k + w] = src[pc.s_off + m * pc.k + w];  // f32 bits, copied as they are
#endif
#endif
}
