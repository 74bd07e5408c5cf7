// attention_<cache>: fused attention with an online softmax, one work-group per (split, query head, row):
// the cooperative variant for GPUs (attention_lane.comp is the one for CPU-like devices).
// Row m sees cache slots [kv_begin, kv_begin + kv_len) and then the slots of the entries on its tree walk
// (meta = {kv_begin, kv_len, tree, parent} per entry: the M query rows, then T - M walk-only entries).
// Split p (work-group x) covers part p of the contiguous run (n_split equal parts) and tree nodes
// [p * tree_chunk, (p + 1) * tree_chunk) of the walk, which one invocation follows (past the earlier nodes)
// to fill the blocks. Slots go through in blocks of WG:
// invocation t scores slot t of the block (q.k over D, q in shared memory), the block max updates the running
// max, and the probability-weighted V rows are accumulated with invocation t owning output dim t % D
// (D <= WG; the WG / D groups of invocations take every (WG / D)-th slot) or dims t, t + WG, ... (D > WG).
// n_split == 1 writes the normalised output; otherwise {max, sum, acc[D]} per split for attention_combine.
// Loop count per invocation: per block ~2 D + log2 WG (+ the walk for the walking invocation): the host sizes
// the splits so that lavapipe's 65,535-iteration limit is never reached, and bounds the walk (walk_limit).
// Bad ranges, slots and trees (a row outside the batch, a cycle) set status bits; bad slots are skipped.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;          // WG, a power of two
layout(constant_id = 1) const uint D = 64;    // head size
layout(constant_id = 2) const uint DPT = 1;   // ceil(D / WG)
#define WG gl_WorkGroupSize.x

layout(std430, binding = 0) readonly buffer Q { float q[]; };
#if defined(CACHE_F16)
layout(std430, binding = 1) readonly buffer K { uint kc[]; };
layout(std430, binding = 2) readonly buffer V { uint vc[]; };
#define LOAD_K(i) LOAD_F16(kc, i)
#define LOAD_V(i) LOAD_F16(vc, i)
#else
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
    uint hq, group;        // query heads, query heads per kv head
    uint m;                // query rows of the whole batch
    uint s;                // cache slots
    uint stride;           // elements per cache row (D * Hkv)
    uint q_off, k_off, v_off, meta_off, slots_off, o_off;
    uint n_split;
    float scale;
    uint row_base;         // first row of this dispatch
    uint walk_limit;       // most tree nodes one row may walk on this device
    uint tree_chunk;       // tree nodes per split
    uint rows;             // rows in this dispatch (unused here: one row per work-group z)
    uint t;                // meta / slots entries (T >= M: entries M.. are walk-only)
} pc;

shared float q_s[D];
shared float p_s[WG];
shared uint slot_s[WG];
shared float red[WG];
shared int walk_node;
shared uint walk_steps, walk_taken, block_n;

// Running state of this invocation (the max is uniform over the work-group).
float m_run = NEG_INF;
float l_part = 0.0;
float acc[DPT];
uint kv_base;

// Folds the block of n slots in slot_s into the running state; starts and ends with all invocations in step.
void process_block(uint n) {
    const uint tid = gl_LocalInvocationID.x;
    float sc = NEG_INF;
    if (tid < n) {
        const uint base = pc.k_off + slot_s[tid] * pc.stride + kv_base;
        float dot = 0.0;
        for (uint d = 0u; d < D; ++d) dot += q_s[d] * LOAD_K(base + d);
        sc = dot * pc.scale;
    }
    red[tid] = sc;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) red[tid] = max(red[tid], red[tid + s]);
        barrier();
    }
    const float new_m = max(m_run, red[0]);
    const float alpha = m_run == NEG_INF ? 0.0 : exp(m_run - new_m);
    const float p = tid < n ? exp(sc - new_m) : 0.0;
    p_s[tid] = p;
    l_part = l_part * alpha + p;
    m_run = new_m;
    barrier();
    if (D <= WG) {
        const uint ng = WG / D;
        if (tid < ng * D) {
            const uint d = tid % D;
            float a = acc[0] * alpha;
            for (uint j = tid / D; j < n; j += ng) a += p_s[j] * LOAD_V(pc.v_off + slot_s[j] * pc.stride + kv_base + d);
            acc[0] = a;
        }
    } else {
        [[unroll]] for (uint c = 0u; c < DPT; ++c) {
            const uint d = tid + c * WG;
            if (d < D) {
                float a = acc[c] * alpha;
                for (uint j = 0u; j < n; ++j) a += p_s[j] * LOAD_V(pc.v_off + slot_s[j] * pc.stride + kv_base + d);
                acc[c] = a;
            }
        }
    }
    barrier();
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
    const uint tid = gl_LocalInvocationID.x;
    const uint split = gl_WorkGroupID.x, head = gl_WorkGroupID.y, row = pc.row_base + gl_WorkGroupID.z;
    const uint mrow = pc.meta_off + 4u * row;
    const int kv_begin = meta[mrow], kv_len = meta[mrow + 1u], tree = meta[mrow + 2u];
    [[unroll]] for (uint c = 0u; c < DPT; ++c) acc[c] = 0.0;
    kv_base = (head / pc.group) * D;

    // The contiguous run, clamped to the cache (a run outside it is an error).
    int begin = kv_begin, end = kv_begin + kv_len;
    if (kv_begin < 0 || kv_len < 0 || end > int(pc.s) || end < kv_begin) {
        if (tid == 0u) atomicOr(status_word, ERR_ATTN_RANGE);
        begin = clamp(begin, 0, int(pc.s));
        end = clamp(end, begin, int(pc.s));
    }
    const uint len = uint(end - begin);
    const uint chunk = (len + pc.n_split - 1u) / pc.n_split;
    const uint c0 = min(len, split * chunk), c1 = min(len, c0 + chunk);

    const uint qb = pc.q_off + (row * pc.hq + head) * D;
    for (uint d = tid; d < D; d += WG) q_s[d] = q[qb + d];
    barrier();

    for (uint b = c0; b < c1; b += WG) {
        const uint n = min(WG, c1 - b);
        if (tid < n) slot_s[tid] = uint(begin) + b + tid;
        process_block(n);
    }

    if (tree >= 0) {
        if (tid == 0u) {
            walk_node = tree;
            walk_steps = 0u;
            walk_taken = 0u;
            const uint first = split * pc.tree_chunk;
            while (walk_node >= 0 && walk_steps < first) {  // the nodes of earlier splits
                if (!valid_node(uint(walk_node), walk_steps)) break;
                walk_node = meta[pc.meta_off + 4u * uint(walk_node) + 3u];
                ++walk_steps;
            }
            if (walk_steps < first) walk_node = -1;
        }
        barrier();
        for (;;) {
            if (tid == 0u) {
                // The invocation that walks fills up to WG slots of the next block.
                uint n = 0u;
                while (n < WG && walk_node >= 0 && walk_taken < pc.tree_chunk) {
                    const uint j = uint(walk_node);
                    if (!valid_node(j, walk_steps)) {
                        walk_node = -1;
                        break;
                    }
                    if (walk_steps >= pc.walk_limit) break;
                    const int sl = slots[pc.slots_off + j];
                    if (sl < 0 || uint(sl) >= pc.s) {
                        atomicOr(status_word, ERR_ATTN_SLOT);
                    } else {
                        slot_s[n] = uint(sl);
                        ++n;
                    }
                    walk_node = meta[pc.meta_off + 4u * j + 3u];
                    ++walk_steps;
                    ++walk_taken;
                }
                block_n = n;
            }
            barrier();
            const uint n = block_n;
            if (n == 0u) break;
            process_block(n);
        }
        // The last split owns whatever is left: a walk longer than T entries is a cycle.
        if (tid == 0u && split == pc.n_split - 1u && walk_node >= 0)
            atomicOr(status_word, walk_steps >= pc.t ? ERR_ATTN_TREE : ERR_ATTN_DEPTH);
    }

    // Sum the per-invocation softmax denominators and, for D <= WG, the per-group partial outputs.
    red[tid] = l_part;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) red[tid] += red[tid + s];
        barrier();
    }
    const float l = red[0];
    if (D <= WG) {
        const uint ng = WG / D;
        barrier();
        p_s[tid] = tid < ng * D ? acc[0] : 0.0;
        barrier();
        if (tid < D) {
            float a = 0.0;
            for (uint g = 0u; g < ng; ++g) a += p_s[g * D + tid];
            acc[0] = a;
        }
    }
    const uint out_row = row * pc.hq + head;
    if (pc.n_split == 1u) {
        const float inv = l > 0.0 ? 1.0 / l : 0.0;
        [[unroll]] for (uint c = 0u; c < DPT; ++c) {
            const uint d = tid + c * WG;
            if (d < D) o[pc.o_off + out_row * D + d] = acc[c] * inv;
        }
    } else {
        const uint pb = pc.o_off + (out_row * pc.n_split + split) * (D + 2u);
        if (tid == 0u) {
            o[pb] = m_run;
            o[pb + 1u] = l;
        }
        [[unroll]] for (uint c = 0u; c < DPT; ++c) {
            const uint d = tid + c * WG;
            if (d < D) o[pb + 2u + d] = acc[c];
        }
    }
}
