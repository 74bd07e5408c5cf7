// get_rows_back_f32_f32: the backward of get_rows into an f32 table, d_table[ids[m]] += d_out[m]. One invocation per
// column c: it walks the rows m of its range [m0, m1) in increasing order adding d_out[m][c] into
// d_table[ids[m]][c], so repeated ids add up in the order cpu_ref uses, with no atomics and no race (no other
// invocation touches column c). Long M goes in ranges dispatched in order (the host sizes them under lavapipe's
// 65,535-iteration limit). An id outside the table sets a status bit and is skipped.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "train.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer DO { float d_out[]; };
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) buffer T { float table[]; };
DECLARE_STATUS(3)

layout(push_constant) uniform params {
    uint k;       // columns
    uint rows;    // table rows
    uint m0, m1;  // batch rows of this dispatch
    uint d_off, i_off, t_off;
} pc;

void main() {
    const uint c = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (c >= pc.k) return;
    for (uint m = pc.m0; m < pc.m1; ++m) {
        const int id = ids[pc.i_off + m];
        if (id < 0 || uint(id) >= pc.rows) {
            if (c == 0u) atomicOr(status_word, ERR_GET_ROWS_BACK_ID);
            continue;
        }
        table[pc.t_off + uint(id) * pc.k + c] += d_out[pc.d_off + m * pc.k + c];
    }
}
