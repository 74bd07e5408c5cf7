// attention_back_f32_dkv: the slot side of attention_back (backends/backend.h): one invocation per (kv slot j, kv
// head) walks the query rows r of its range [r0, r1) in order, and for each row whose run holds j, for each of
// the group's query heads h: P = exp(scale q.k_j - lse), dP = d_out . v_j, dS = P (dP - delta) (lse and delta per
// (row, head) from the dq pass), dv_j += P d_out, dk_j += scale dS q. One writer per element of dk and dv: no
// atomics. Loop count per invocation ~ 4 D + (r1 - r0) (1 + G (2 D + 2)); the host cuts M into row ranges
// dispatched in order (`accumulate` adds to dk, dv) so that it stays under lavapipe's 65,535-iteration limit.
// A slot no row attends to gets zeros (the first range always writes).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;  // head size

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float kc[]; };
layout(std430, binding = 2) readonly buffer V { float vc[]; };
layout(std430, binding = 3) readonly buffer Meta { int meta[]; };
layout(std430, binding = 4) readonly buffer DOut { float go[]; };
layout(std430, binding = 5) readonly buffer Scratch { float sc[]; };
layout(std430, binding = 6) buffer DK { float dk[]; };
layout(std430, binding = 7) buffer DV { float dv[]; };

#include "attention_back.glsl"

void main() {
    const uint hkv = pc.hq / pc.group;
    const uint gid = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (gid >= pc.s * hkv) return;
    const uint j = gid / hkv, hk = gid % hkv;
    const uint kb = pc.k_off + j * pc.stride + hk * D, vb = pc.v_off + j * pc.stride + hk * D;
    float kv[D], vv[D], ak[D], av[D];
    for (uint d = 0u; d < D; ++d) {
        kv[d] = kc[kb + d];
        vv[d] = vc[vb + d];
        ak[d] = 0.0;
        av[d] = 0.0;
    }
    for (uint r = pc.r0; r < pc.r1; ++r) {
        uint begin, len;
        bool tree, bad;
        row_run(r, begin, len, tree, bad);
        if (j < begin || j - begin >= len) continue;
        for (uint g = 0u; g < pc.group; ++g) {
            const uint pair = r * pc.hq + hk * pc.group + g;
            const uint qb = pc.q_off + pair * D, gb = pc.go_off + pair * D;
            float qk = 0.0, dp = 0.0;
            for (uint d = 0u; d < D; ++d) {
                qk += q[qb + d] * kv[d];
                dp += go[gb + d] * vv[d];
            }
            const float pr = exp(qk * pc.scale - sc[pc.ri_off + 2u * pair]);
            const float ds = pc.scale * pr * (dp - sc[pc.ri_off + 2u * pair + 1u]);
            for (uint d = 0u; d < D; ++d) {
                ak[d] += ds * q[qb + d];
                av[d] += pr * go[gb + d];
            }
        }
    }
    const uint ob = j * pc.stride + hk * D;
    for (uint d = 0u; d < D; ++d) {
        const uint ki = pc.dk_off + ob + d, vi = pc.dv_off + ob + d;
        dk[ki] = (pc.accumulate != 0u ? dk[ki] : 0.0) + ak[d];
        dv[vi] = (pc.accumulate != 0u ? dv[vi] : 0.0) + av[d];
    }
}
