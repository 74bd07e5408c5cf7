// top_k_f32_i32[_merge]: one pass of the top-k selection of backends/vulkan/ops/topk.cpp. Each work-group
// selects the best k (larger value first, equal values: lower index first) of `chunk` consecutive items of one
// row and writes them as a list of k (value, id) pairs, padded with id 0xffffffff when it saw fewer than k.
// The first pass reads x (id = column); MERGE passes read the lists of the previous pass as items.
// Invocation t keeps the sorted best k of items t, t + WG, ... in private arrays, then k rounds merge the
// lists: each round a tree reduction in shared memory picks the best head and its owner advances.
// Loop iterations per invocation: ceil(chunk / WG) * k (scan and insertion shifts) + k * (1 + ceil(log2 WG)).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;  // any size

#define KMAX 64u  // backends/backend.h top_k_max
#define NONE 0xffffffffu

#ifdef MERGE
layout(std430, binding = 0) readonly buffer IV { float in_val[]; };
layout(std430, binding = 1) readonly buffer II { uint in_idx[]; };
#define OUT_BINDING 2
#else
layout(std430, binding = 0) readonly buffer X { float x[]; };
#define OUT_BINDING 1
#endif
layout(std430, binding = OUT_BINDING) writeonly buffer OV { float out_val[]; };
layout(std430, binding = OUT_BINDING + 1) writeonly buffer OI { uint out_idx[]; };

layout(push_constant) uniform params {
    uint n;      // items per row: K, or (lists of the previous pass) * k
    uint m;      // rows
    uint k;
    uint parts;  // work-groups (output lists) per row
    uint chunk;  // items per work-group
    uint val_off, idx_off;  // element offsets of x (val_off) or of the input lists
    uint ov_off, oi_off;    // element offsets of the outputs
} pc;

shared float red_val[gl_WorkGroupSize.x];
shared uint red_idx[gl_WorkGroupSize.x];

bool ranks_before(float av, uint ai, float bv, uint bi) {
    return ai != NONE && (bi == NONE || av > bv || (av == bv && ai < bi));
}

void main() {
    const uint g = group_index();
    if (g >= pc.m * pc.parts) return;  // whole work-groups only: the barriers below stay uniform
    const uint row = g / pc.parts, part = g % pc.parts;
    const uint tid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    const uint begin = part * pc.chunk, end = min(pc.n, begin + pc.chunk);
    const uint base = row * pc.n;

    float lv[KMAX];
    uint li[KMAX];
    uint cnt = 0u;
    for (uint i = begin + tid; i < end; i += wg) {
#ifdef MERGE
        const float v = in_val[pc.val_off + base + i];
        const uint id = in_idx[pc.idx_off + base + i];
#else
        const float v = x[pc.val_off + base + i];
        const uint id = i;
#endif
        if (id == NONE || (cnt == pc.k && !ranks_before(v, id, lv[pc.k - 1u], li[pc.k - 1u]))) continue;
        uint j = min(cnt, pc.k - 1u);
        cnt = min(cnt + 1u, pc.k);
        for (; j > 0u && ranks_before(v, id, lv[j - 1u], li[j - 1u]); --j) {
            lv[j] = lv[j - 1u];
            li[j] = li[j - 1u];
        }
        lv[j] = v;
        li[j] = id;
    }

    const uint list = (row * pc.parts + part) * pc.k;
    uint head = 0u;
    for (uint j = 0u; j < pc.k; ++j) {
        red_val[tid] = head < cnt ? lv[head] : NEG_INF;
        red_idx[tid] = head < cnt ? li[head] : NONE;
        barrier();
        for (uint s = 1u; s < wg; s <<= 1u) {
            const uint o = tid + s;
            if ((tid & (2u * s - 1u)) == 0u && o < wg &&
                ranks_before(red_val[o], red_idx[o], red_val[tid], red_idx[tid])) {
                red_val[tid] = red_val[o];
                red_idx[tid] = red_idx[o];
            }
            barrier();
        }
        const uint win = red_idx[0];
        const float win_val = red_val[0];
        if (head < cnt && li[head] == win) ++head;  // ids are distinct: exactly one owner advances
        if (tid == 0u) {
            out_val[pc.ov_off + list + j] = win_val;
            out_idx[pc.oi_off + list + j] = win;
        }
        barrier();  // everyone has read the winner before the next round overwrites it
    }
}
