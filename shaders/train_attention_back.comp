// The row side of attention_back (backends/backend.h), for layouts of contiguous runs; the slot side (dk, dv) is
// train_attention_back_dkv.comp. No float atomics anywhere: every output element has one writer.
//   attention_back_f32_stats (STATS): one invocation per (row, q head, split p) scores part p of the row's run
//     (q.k over D per slot) and keeps an online {max, sum of exp} for it. It also flags tree rows and runs outside
//     the cache in the status word (such rows then get zeros everywhere).
//   attention_back_f32_lse (LSE): one invocation per (row, q head) merges the splits' {max, sum} (in split order)
//     into the row's logsumexp and computes delta = d_out . out; stores {lse, delta} for the dq and dkv passes.
//   attention_back_f32_dq (DQ): one invocation per (row, q head, split p), over part p: P = exp(scale q.k - lse),
//     dP = d_out . v, dS = P (dP - delta), dq += scale dS k. With one split it writes dq, else its share to scratch.
//   attention_back_f32_combine (COMBINE): one invocation per (row, q head, d) sums the splits' shares in order.
// The run is cut into n_split equal parts so that no invocation loops past lavapipe's 65,535-iteration limit:
// ~(D + 1) per slot (STATS), ~(2 D + 2) per slot (DQ), n_split + D (LSE); the host picks n_split from the cache
// size S (every run is at most S long).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "train.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;  // head size

#if defined(STATS)
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float kc[]; };
layout(std430, binding = 2) readonly buffer Meta { int meta[]; };
layout(std430, binding = 3) buffer Scratch { float sc[]; };
DECLARE_STATUS(4)
#elif defined(LSE)
layout(std430, binding = 0) readonly buffer Out { float o[]; };
layout(std430, binding = 1) readonly buffer DOut { float go[]; };
layout(std430, binding = 2) buffer Scratch { float sc[]; };
#define NO_ROW_RUN
#elif defined(DQ)
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float kc[]; };
layout(std430, binding = 2) readonly buffer V { float vc[]; };
layout(std430, binding = 3) readonly buffer Meta { int meta[]; };
layout(std430, binding = 4) readonly buffer DOut { float go[]; };
layout(std430, binding = 5) buffer Scratch { float sc[]; };
layout(std430, binding = 6) writeonly buffer DQ_ { float dq[]; };
#else
layout(std430, binding = 0) readonly buffer Scratch { float sc[]; };
layout(std430, binding = 1) writeonly buffer DQ_ { float dq[]; };
#define NO_ROW_RUN
#endif

#include "attention_back.glsl"

void main() {
    const uint gid = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
#if defined(COMBINE)
    if (gid >= pc.m * pc.hq * D) return;
    const uint pair = gid / D, d = gid % D;
    float sum = 0.0;
    for (uint p = 0u; p < pc.n_split; ++p) sum += sc[pc.pq_off + (pair * pc.n_split + p) * D + d];
    dq[pc.dq_off + pair * D + d] = sum;
#elif defined(LSE)
    if (gid >= pc.m * pc.hq) return;
    const uint pair = gid;
    float mx = NEG_INF;
    for (uint t = 0u; t < pc.n_split; ++t) mx = max(mx, sc[pc.st_off + 2u * (pair * pc.n_split + t)]);
    float total = 0.0;
    for (uint t = 0u; t < pc.n_split; ++t) {
        const float m_t = sc[pc.st_off + 2u * (pair * pc.n_split + t)];
        if (m_t != NEG_INF) total += sc[pc.st_off + 2u * (pair * pc.n_split + t) + 1u] * exp(m_t - mx);
    }
    float delta = 0.0;
    for (uint d = 0u; d < D; ++d) delta += go[pc.go_off + pair * D + d] * o[pc.o_off + pair * D + d];
    sc[pc.ri_off + 2u * pair] = mx + log(total);  // -inf for a row that sees no slot (never read then)
    sc[pc.ri_off + 2u * pair + 1u] = delta;
#else
    if (gid >= pc.m * pc.hq * pc.n_split) return;
    const uint pair = gid / pc.n_split, p = gid % pc.n_split;
    const uint r = pair / pc.hq, h = pair % pc.hq;
    const uint kv = (h / pc.group) * D;
    uint begin, len;
    bool tree, bad;
    row_run(r, begin, len, tree, bad);
    const uint plen = (len + pc.n_split - 1u) / pc.n_split;
    const uint j0 = begin + min(len, p * plen), j1 = begin + min(len, (p + 1u) * plen);
    const uint qb = pc.q_off + pair * D;
#if defined(STATS)
    if (p == 0u && h == 0u) {
        if (tree) atomicOr(status_word, ERR_ATTN_BACK_TREE);
        if (bad) atomicOr(status_word, ERR_ATTN_BACK_RANGE);
    }
    float qv[D];
    for (uint d = 0u; d < D; ++d) qv[d] = q[qb + d];
    float mx = NEG_INF, sum = 0.0;
    for (uint j = j0; j < j1; ++j) {
        const uint kb = pc.k_off + j * pc.stride + kv;
        float dot = 0.0;
        for (uint d = 0u; d < D; ++d) dot += qv[d] * kc[kb + d];
        const float s = dot * pc.scale;
        if (s > mx) {
            sum = sum * exp(mx - s) + 1.0;
            mx = s;
        } else {
            sum += exp(s - mx);
        }
    }
    sc[pc.st_off + 2u * gid] = mx;
    sc[pc.st_off + 2u * gid + 1u] = sum;
#else
    const float lse = sc[pc.ri_off + 2u * pair], delta = sc[pc.ri_off + 2u * pair + 1u];
    float qv[D], gv[D], acc[D];
    for (uint d = 0u; d < D; ++d) {
        qv[d] = q[qb + d];
        gv[d] = go[pc.go_off + pair * D + d];
        acc[d] = 0.0;
    }
    for (uint j = j0; j < j1; ++j) {
        const uint kb = pc.k_off + j * pc.stride + kv, vb = pc.v_off + j * pc.stride + kv;
        float qk = 0.0, dp = 0.0;
        for (uint d = 0u; d < D; ++d) {
            qk += qv[d] * kc[kb + d];
            dp += gv[d] * vc[vb + d];
        }
        const float ds = exp(qk * pc.scale - lse) * (dp - delta);
        for (uint d = 0u; d < D; ++d) acc[d] += ds * kc[kb + d];
    }
    if (pc.n_split == 1u) {
        for (uint d = 0u; d < D; ++d) dq[pc.dq_off + pair * D + d] = pc.scale * acc[d];
    } else {
        for (uint d = 0u; d < D; ++d) sc[pc.pq_off + gid * D + d] = pc.scale * acc[d];
    }
#endif
#endif
}
