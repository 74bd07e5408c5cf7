// Fused attention over the KV cache with online softmax (one pass over the visible slots, no score matrix).
// One work-item per (query head h, batch row m): it walks the visible slots of row m exactly as
// backends/backend.h defines them -- the contiguous run [kv_begin, kv_begin + kv_len), then the tree walk from
// entry `tree` through `parent` links (at most T steps), attending to slots[j] of every entry j on the walk --
// and reads kv head h / (Hq / Hkv) (grouped-query attention). q {HEAD_DIM, Hq, M} f32, caches
// {HEAD_DIM * Hkv, S} f32/f16, meta i32 {4, T} and slots i32 {T} with T >= M (entries M..T-1 are walk-only:
// tokens already in the cache), out like q. Slots outside [0, S) are skipped
// and a bad link stops the walk; both raise a bit in the error word. A row that sees nothing outputs zeros.

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif

// Head vectors are processed VW elements at a time: 8-wide when the head size allows (every slot's head then
// starts on a multiple of 8 elements), else one by one.
#if HEAD_DIM % 8 == 0
#define VW 8
#define vecf float8
#define VLOAD(row, i, is_f16) load8(row, i, is_f16)
#define VSUM(v) hsum8(v)
#else
#define VW 1
#define vecf float
#define VLOAD(row, i, is_f16) load1(row, i, is_f16)
#define VSUM(v) (v)
#endif
#define NV (HEAD_DIM / VW)

// Folds one cache slot (its kv-head vector starts at element `e` of both caches) into the running state.
inline void attend(__private const vecf* q, __global const uchar* kc, __global const uchar* vc, size_t e, float scale,
                   __private vecf* o, __private float* best, __private float* sum, const int is_f16) {
    const size_t ev = e / VW;
    vecf dot = (vecf)(0.f);
    for (int i = 0; i < NV; ++i) dot = fma(q[i], VLOAD(kc, ev + i, is_f16), dot);
    const float s = VSUM(dot) * scale;
    if (s > *best) {  // new maximum: rescale what was accumulated under the old one (exp(-inf) = 0 at the start)
        const float c = exp(*best - s);
        *sum *= c;
        for (int i = 0; i < NV; ++i) o[i] *= c;
        *best = s;
    }
    const float p = exp(s - *best);
    *sum += p;
    for (int i = 0; i < NV; ++i) o[i] = fma((vecf)(p), VLOAD(vc, ev + i, is_f16), o[i]);
}

// Folds up to 8 consecutive slots (first, first + 1, ..., first + n - 1) into the running state with one
// rescale and one 8-wide exp: the contiguous run goes through here, 8 slots at a time.
inline void attend8(__private const vecf* q, __global const uchar* kc, __global const uchar* vc, size_t e0,
                    size_t row_elems, int n, float scale, __private vecf* o, __private float* best,
                    __private float* sum, const int is_f16) {
    float sc[8];
    for (int j = 0; j < 8; ++j) {
        sc[j] = -INFINITY;
        if (j < n) {
            const size_t ev = (e0 + (size_t)j * row_elems) / VW;
            vecf dot = (vecf)(0.f);
            for (int i = 0; i < NV; ++i) dot = fma(q[i], VLOAD(kc, ev + i, is_f16), dot);
            sc[j] = VSUM(dot) * scale;
        }
    }
    const float8 sv = vload8(0, sc);
    const float4 m4 = fmax(sv.lo, sv.hi);
    const float bm = fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w));
    if (bm > *best) {
        const float c = exp(*best - bm);
        *sum *= c;
        for (int i = 0; i < NV; ++i) o[i] *= c;
        *best = bm;
    }
    const float8 pv = exp(sv - *best);  // padding lanes: exp(-inf) = 0
    *sum += hsum8(pv);
    float p[8];
    vstore8(pv, 0, p);
    for (int j = 0; j < n; ++j) {
        const size_t ev = (e0 + (size_t)j * row_elems) / VW;
        for (int i = 0; i < NV; ++i) o[i] = fma((vecf)(p[j]), VLOAD(vc, ev + i, is_f16), o[i]);
    }
}

inline void attention(__global const uchar* q, ulong q_off, __global const uchar* kc, ulong k_off,
                      __global const uchar* vc, ulong v_off, __global const uchar* meta, ulong meta_off,
                      __global const uchar* slots, ulong slots_off, __global uchar* out, ulong out_off, int Hq,
                      int Hkv, int M, int T, int S, float scale, __global int* err, const int is_f16) {
    const int h = get_global_id(0), m = get_global_id(1);
    if (h >= Hq || m >= M) return;
    const int kvh = h / (Hq / Hkv);
    const size_t row_elems = (size_t)Hkv * HEAD_DIM, head_elem = (size_t)kvh * HEAD_DIM;
    kc += k_off;
    vc += v_off;
    __global const int* mt = CVIEW(int, meta, meta_off);
    __global const int* sl = CVIEW(int, slots, slots_off);

    vecf qv[NV], o[NV];
    __global const uchar* qr = q + q_off + ((size_t)m * Hq + h) * HEAD_DIM * 4;
    for (int i = 0; i < NV; ++i) {
        qv[i] = VLOAD(qr, i, 0);
        o[i] = (vecf)(0.f);
    }
    float best = -INFINITY, sum = 0.f;

    // The contiguous run, clipped to the cache.
    const long begin = mt[4 * m], end = begin + (long)mt[4 * m + 1];
    if (end > begin && (begin < 0 || end > S)) raise_error(err, ERR_ATTENTION_SLOT);
    const long lo = max(begin, 0L), hi = min(end, (long)S);
    for (long s = lo; s < hi; s += 8)
        attend8(qv, kc, vc, (size_t)s * row_elems + head_elem, row_elems, (int)min(8L, hi - s), scale, o, &best, &sum,
                is_f16);

    // The tree walk: at most T steps, every link inside meta.
    int j = mt[4 * m + 2];
    for (int steps = 0; j >= 0; ++steps) {
        if (j >= T || steps >= T) {
            raise_error(err, ERR_ATTENTION_TREE);
            break;
        }
        const int s = sl[j];
        if (s < 0 || s >= S)
            raise_error(err, ERR_ATTENTION_SLOT);
        else
            attend(qv, kc, vc, (size_t)s * row_elems + head_elem, scale, o, &best, &sum, is_f16);
        j = mt[4 * j + 3];
    }

    __global float* orow = VIEW(float, out, out_off) + ((size_t)m * Hq + h) * HEAD_DIM;
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#if VW == 8
    for (int i = 0; i < NV; ++i) vstore8(o[i] * inv, i, orow);
#else
    for (int i = 0; i < NV; ++i) orow[i] = o[i] * inv;
#endif
}

__kernel void attention_f32(__global const uchar* q, ulong q_off, __global const uchar* kc, ulong k_off,
                            __global const uchar* vc, ulong v_off, __global const uchar* meta, ulong meta_off,
                            __global const uchar* slots, ulong slots_off, __global uchar* out, ulong out_off, int Hq,
                            int Hkv, int M, int T, int S, float scale, __global int* err) {
    attention(q, q_off, kc, k_off, vc, v_off, meta, meta_off, slots, slots_off, out, out_off, Hq, Hkv, M, T, S, scale,
              err, 0);
}

__kernel void attention_f16(__global const uchar* q, ulong q_off, __global const uchar* kc, ulong k_off,
                            __global const uchar* vc, ulong v_off, __global const uchar* meta, ulong meta_off,
                            __global const uchar* slots, ulong slots_off, __global uchar* out, ulong out_off, int Hq,
                            int Hkv, int M, int T, int S, float scale, __global int* err) {
    attention(q, q_off, kc, k_off, vc, v_off, meta, meta_off, slots, slots_off, out, out_off, Hq, Hkv, M, T, S, scale,
              err, 1);
}
