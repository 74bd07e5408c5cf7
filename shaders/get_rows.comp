// get_rows_<table>_f32: out[m][k] = table[ids[m]][k] as f32, one element per invocation. Q8_0 / Q4_0 tables
// (TABLE_Q8_0, TABLE_Q4_0; t_off in bytes) are decoded in place from 32-bit words (shaders/include/quant.glsl):
// the block's scale and the element's byte, two loads at most. Q4_K / Q6_K tables (TABLE_Q4_K, TABLE_Q6_K) the
// same way (shaders/include/kquant.glsl): d / dmin and 3 scale words and the quant byte (Q4_K), or d, the scale
// byte and the ql and qh bytes (Q6_K), bit-identical to the reference dequantization.
// The table may be bound in chunks of rows [row0, row0 + n_rows) (maxStorageBufferRange): each dispatch
// writes the rows whose id falls in its chunk. Ids outside the whole table set ERR_GET_ROWS_ID and give zeros.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

#if defined(TABLE_Q8_0) || defined(TABLE_Q4_0) || defined(TABLE_Q4_K) || defined(TABLE_Q6_K)
layout(std430, binding = 0) readonly buffer T { uint table[]; };
#define QW(i) table[i]
#include "quant.glsl"
#include "kquant.glsl"
#elif defined(TABLE_F16)
layout(std430, binding = 0) readonly buffer T { uint table[]; };
#else
layout(std430, binding = 0) readonly buffer T { float table[]; };
#endif
layout(std430, binding = 1) readonly buffer I { int ids[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
DECLARE_STATUS(3)

layout(push_constant) uniform params {
    uint k, m;          // row length, number of ids
    uint rows;          // rows of the whole table
    uint row0, n_rows;  // the chunk of the table this dispatch binds
    uint t_off, i_off, o_off;
    uint check;         // 1 on the dispatch that validates ids and zero-fills bad rows
} pc;

void main() {
    const uint i = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= pc.k * pc.m) return;
    const uint m = i / pc.k, k = i - m * pc.k;
    const int id = ids[pc.i_off + m];
    if (id < 0 || uint(id) >= pc.rows) {
        if (pc.check != 0u) {
            if (k == 0u) atomicOr(status_word, ERR_GET_ROWS_ID);
            o[pc.o_off + i] = 0.0;
        }
        return;
    }
    if (uint(id) < pc.row0 || uint(id) >= pc.row0 + pc.n_rows) return;
#if defined(TABLE_Q4_K) || defined(TABLE_Q6_K)
#if defined(TABLE_Q4_K)
    const uint b = pc.t_off + ((uint(id) - pc.row0) * (pc.k / QK_K) + k / QK_K) * Q4_K_BYTES;
    o[pc.o_off + i] = q4_k_element(b, k % QK_K);
#else
    const uint b = pc.t_off + ((uint(id) - pc.row0) * (pc.k / QK_K) + k / QK_K) * Q6_K_BYTES;
    o[pc.o_off + i] = q6_k_element(b, k % QK_K);
#endif
#elif defined(TABLE_Q8_0) || defined(TABLE_Q4_0)
    const uint c = k % QK;  // element c of block k / QK
#if defined(TABLE_Q8_0)
    const uint b = pc.t_off + ((uint(id) - pc.row0) * (pc.k / QK) + k / QK) * Q8_0_BYTES;
    const uint e = b + 2u + c;
    const float q = float(bitfieldExtract(int(QW(e >> 2u)), int(8u * (e & 3u)), 8));
#else
    const uint b = pc.t_off + ((uint(id) - pc.row0) * (pc.k / QK) + k / QK) * Q4_0_BYTES;
    const uint e = b + 2u + c % 16u;  // element c: low nibble of byte c, element c + 16: its high nibble
    const float q = float(bitfieldExtract(QW(e >> 2u), int(8u * (e & 3u) + (c < 16u ? 0u : 4u)), 4)) - 8.0;
#endif
    o[pc.o_off + i] = q_scale(b) * q;
#else
    const uint e = pc.t_off + (uint(id) - pc.row0) * pc.k + k;
#if defined(TABLE_F16)
    o[pc.o_off + i] = LOAD_F16(table, e);
#else
    o[pc.o_off + i] = table[e];
#endif
#endif
}
