// attention_<cache>_lane: fused attention with one invocation per (split, row, group of G query heads that
// share a kv head): no shared memory and no barriers, every K and V element loaded once for the G heads.
// The variant for CPU-like devices (lavapipe runs work-groups as SIMD loops, where barriers and shared-memory
// reductions cost more than the arithmetic); attention.comp is the cooperative one for GPUs.
// Split p covers part p of the contiguous run [kv_begin, kv_begin + kv_len) (n_split equal parts) and tree
// nodes [p * tree_chunk, (p + 1) * tree_chunk) of the row's walk tree -> parent -> ... through the T meta
// entries (M query rows, then walk-only entries; it walks past the earlier nodes). n_split == 1 writes the
// normalised output, else {max, sum, acc[D]} per split and head for attention_combine_f32. Loop count per
// invocation: ~2 D (G + 1) per slot plus one per skipped node; the host sizes the splits for lavapipe's
// 65,535-iteration limit. Bad ranges, slots and trees set status bits.
// attention_<cache>_lane_texel (TEXEL): K and V read as 4-wide texels (RGBA32F / RGBA16F uniform texel buffers,
// which lavapipe loads like vectors); needs D, the cache row stride and the cache offsets to be multiples of 4.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 64;  // head size
layout(constant_id = 2) const uint G = 1;   // query heads per invocation (divides the GQA group)

layout(std430, binding = 0) readonly buffer Q { float q[]; };
#if defined(TEXEL)
#define W 4u
#define VEC vec4
layout(binding = 1) uniform samplerBuffer kt;
layout(binding = 2) uniform samplerBuffer vt;
#define LOAD_K(i) texelFetch(kt, int(i))
#define LOAD_V(i) texelFetch(vt, int(i))
#elif defined(CACHE_F16)
#define W 1u
#define VEC float
layout(std430, binding = 1) readonly buffer K { uint kc[]; };
layout(std430, binding = 2) readonly buffer V { uint vc[]; };
#define LOAD_K(i) LOAD_F16(kc, i)
#define LOAD_V(i) LOAD_F16(vc, i)
#else
#define W 1u
#define VEC float
layout(std430, binding = 1) readonly buffer K { float kc[]; };
layout(std430, binding = 2) readonly buffer V { float vc[]; };
#define LOAD_K(i) kc[i]
#define LOAD_V(i) vc[i]
#endif
layout(std430, binding = 3) readonly buffer Meta { int meta[]; };
layout(std430, binding = 4) readonly buffer Slots { int slots[]; };
layout(std430, binding = 5) writeonly buffer O { float o[]; };
DECLARE_STATUS(6)

layout(push_constant) uniform params {
    uint hq, group, m, s, stride;
    uint q_off, k_off, v_off, meta_off, slots_off, o_off;
    uint n_split;
    float scale;
    uint row_base, walk_limit;
    uint tree_chunk;  // tree nodes per split
    uint rows;        // rows in this dispatch
    uint t;           // meta / slots entries (T >= M: entries M.. are walk-only)
} pc;

const uint DW = D / W;  // loads per cache row (elements or 4-wide texels)
VEC qv[G * DW];
VEC acc[G * DW];
float mx[G], l[G];
uint kv_base;

void fold(uint slot) {
    float dot_g[G];
    [[unroll]] for (uint g = 0u; g < G; ++g) dot_g[g] = 0.0;
    const uint kb = (pc.k_off + slot * pc.stride + kv_base) / W;
    for (uint d = 0u; d < DW; ++d) {
        const VEC kd = LOAD_K(kb + d);
        [[unroll]] for (uint g = 0u; g < G; ++g) dot_g[g] += dot(qv[g * DW + d], kd);
    }
    float alpha[G], p[G];
    [[unroll]] for (uint g = 0u; g < G; ++g) {
        const float sc = dot_g[g] * pc.scale;
        const float nm = max(mx[g], sc);
        alpha[g] = mx[g] == NEG_INF ? 0.0 : exp(mx[g] - nm);
        p[g] = exp(sc - nm);
        l[g] = l[g] * alpha[g] + p[g];
        mx[g] = nm;
    }
    const uint vb = (pc.v_off + slot * pc.stride + kv_base) / W;
    for (uint d = 0u; d < DW; ++d) {
        const VEC vd = LOAD_V(vb + d);
        [[unroll]] for (uint g = 0u; g < G; ++g) acc[g * DW + d] = acc[g * DW + d] * alpha[g] + p[g] * vd;
    }
}

// One step of the tree walk: false (after raising the status bit) when node j is not an entry of meta or
// the walk has gone on longer than any tree can (T steps: a cycle).
bool valid_node(uint j, uint steps) {
    if (j >= pc.t || steps >= pc.t) {
        atomicOr(status_word, ERR_ATTN_TREE);
        return false;
    }
    return true;
}

void main() {
    const uint per_row = pc.hq / G;
    const uint item = gl_WorkGroupID.y * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (item >= pc.rows * per_row) return;
    const uint split = gl_WorkGroupID.x;
    const uint row = pc.row_base + item / per_row, h0 = (item % per_row) * G;
    kv_base = (h0 / pc.group) * D;
    const uint mrow = pc.meta_off + 4u * row;
    const int kv_begin = meta[mrow], kv_len = meta[mrow + 1u], tree = meta[mrow + 2u];

    int begin = kv_begin, end = kv_begin + kv_len;
    if (kv_begin < 0 || kv_len < 0 || end > int(pc.s) || end < kv_begin) {
        atomicOr(status_word, ERR_ATTN_RANGE);
        begin = clamp(begin, 0, int(pc.s));
        end = clamp(end, begin, int(pc.s));
    }
    const uint len = uint(end - begin);
    const uint chunk = (len + pc.n_split - 1u) / pc.n_split;
    const uint c0 = min(len, split * chunk), c1 = min(len, c0 + chunk);

    [[unroll]] for (uint g = 0u; g < G; ++g) {
        mx[g] = NEG_INF;
        l[g] = 0.0;
        const uint qb = pc.q_off + (row * pc.hq + h0 + g) * D;
        for (uint d = 0u; d < DW; ++d) {
#if defined(TEXEL)
            qv[g * DW + d] = vec4(q[qb + 4u * d], q[qb + 4u * d + 1u], q[qb + 4u * d + 2u], q[qb + 4u * d + 3u]);
#else
            qv[g * DW + d] = q[qb + d];
#endif
            acc[g * DW + d] = VEC(0.0);
        }
    }

    for (uint i = c0; i < c1; ++i) fold(uint(begin) + i);

    if (tree >= 0) {
        int node = tree;
        uint steps = 0u;
        const uint first = split * pc.tree_chunk;
        while (node >= 0 && steps < first) {  // the nodes of earlier splits
            if (!valid_node(uint(node), steps)) break;
            node = meta[pc.meta_off + 4u * uint(node) + 3u];
            ++steps;
        }
        if (steps == first) {
            for (uint taken = 0u; node >= 0 && taken < pc.tree_chunk; ++taken) {
                if (!valid_node(uint(node), steps)) {
                    node = -1;
                    break;
                }
                if (steps >= pc.walk_limit) break;
                const int sl = slots[pc.slots_off + uint(node)];
                if (sl < 0 || uint(sl) >= pc.s) {
                    atomicOr(status_word, ERR_ATTN_SLOT);
                } else {
                    fold(uint(sl));
                }
                node = meta[pc.meta_off + 4u * uint(node) + 3u];
                ++steps;
            }
            // The last split owns whatever is left: a walk longer than T entries is a cycle.
            if (split == pc.n_split - 1u && node >= 0)
                atomicOr(status_word, steps >= pc.t ? ERR_ATTN_TREE : ERR_ATTN_DEPTH);
        }
    }

    [[unroll]] for (uint g = 0u; g < G; ++g) {
        const uint out_row = row * pc.hq + h0 + g;
        uint ob = pc.o_off + out_row * D;
        VEC inv = VEC(l[g] > 0.0 ? 1.0 / l[g] : 0.0);
        if (pc.n_split != 1u) {  // unnormalised partial state for attention_combine_f32
            ob = pc.o_off + (out_row * pc.n_split + split) * (D + 2u);
            o[ob] = mx[g];
            o[ob + 1u] = l[g];
            ob += 2u;
            inv = VEC(1.0);
        }
        for (uint d = 0u; d < DW; ++d) {
            const VEC a = acc[g * DW + d] * inv;
#if defined(TEXEL)
            [[unroll]] for (uint c = 0u; c < 4u; ++c) o[ob + 4u * d + c] = a[c];
#else
            o[ob + d] = a;
#endif
        }
    }
}
