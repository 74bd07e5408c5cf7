// attention_back: the backward of attention for layouts of contiguous runs (meta[m] = {kv_begin, kv_len, -1, _}),
// recomputing the softmax from q and k. q, out, d_out, dq {HEAD_DIM, Hq, M}; k, v, dk, dv {HEAD_DIM * Hkv, S} f32;
// query head h reads kv head h / (Hq / Hkv). With P the softmax row, dP = d_out . v, dS = P * (dP - d_out . out):
//   dq[m] = scale * sum_j dS[m][j] k[j];  dk[j] = scale * sum_m dS[m][j] q[m];  dv[j] = sum_m P[m][j] d_out[m]
// Two kernels and no atomics (every output has exactly one writer, sums run in a fixed order):
//   1. attention_back_dq_f32, one work-item per (q head, query row), one pass over its visible slots with the
//      forward's online-softmax trick: sum_j exp(s_j - max) (dP_j - D) k[j] is rescaled whenever the running max
//      grows, exactly like the forward's output, and divided by the final sum: dq without a second pass. It stores
//      (lse = max + log(sum), D = d_out . out) per (row, head) in `stats` {2, Hq, M} for kernel 2.
//   2. attention_back_dkv_f32, one work-item per (kv head, slot j): loops over the query rows whose run
//      [kv_begin, kv_begin + kv_len) contains j (increasing m) and the q heads of the kv head's group, recomputing
//      P = exp(scale * q . k[j] - lse) and dS, and sums dk[j] and dv[j]. A slot no row sees gets zeros.
// The per-work-item vectors (q, d_out, the accumulators) live in private memory, HEAD_DIM is compiled in, as
// float8 lanes when HEAD_DIM is a multiple of 8 (as kernels/attention.cl). Kernel 1 scans its run once, kernel 2
// the M rows once (no per-invocation loop limits apply to OpenCL devices). A row with a tree walk (tree != -1)
// raises ERR_ATTENTION_BACK_TREE and is treated as its run only; a run outside [0, S) raises
// ERR_ATTENTION_BACK_SLOT and is clipped (the host turns either into tandem::error).

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif

// Bits of the error word used here (backends/opencl/opencl_backend.h has the same values).
#define ERR_ATTENTION_BACK_TREE 128
#define ERR_ATTENTION_BACK_SLOT 256

#if HEAD_DIM % 8 == 0
#define VW 8
#define vecf float8
#define VLOAD(p, i) vload8(i, p)
#define VSTORE(v, i, p) vstore8(v, i, p)
#define VSUM(v) hsum8(v)
#else
#define VW 1
#define vecf float
#define VLOAD(p, i) (p)[i]
#define VSTORE(v, i, p) ((p)[i] = (v))
#define VSUM(v) (v)
#endif
#define NV (HEAD_DIM / VW)

inline float dot_head(__private const vecf* a, __global const float* b) {
    vecf s = (vecf)(0.f);
    for (int i = 0; i < NV; ++i) s = fma(a[i], VLOAD(b, i), s);
    return VSUM(s);
}

// Row m's visible run clipped to [0, S): [*lo, *hi).
inline void visible_run(__global const int* mt, int m, int S, long* lo, long* hi) {
    const long begin = mt[4 * m], end = begin + (long)mt[4 * m + 1];
    *lo = max(begin, 0L);
    *hi = min(end, (long)S);
}

__kernel void attention_back_dq_f32(__global const uchar* q, ulong q_off, __global const uchar* k, ulong k_off,
                                    __global const uchar* v, ulong v_off, __global const uchar* meta, ulong meta_off,
                                    __global const uchar* out, ulong out_off, __global const uchar* d_out,
                                    ulong d_out_off, __global uchar* dq, ulong dq_off, __global float* stats, int Hq,
                                    int Hkv, int M, int S, float scale, __global int* err) {
    const int h = get_global_id(0), m = get_global_id(1);
    if (h >= Hq || m >= M) return;
    const size_t row_elems = (size_t)Hkv * HEAD_DIM, head_elem = (size_t)(h / (Hq / Hkv)) * HEAD_DIM;
    __global const float* kb = CVIEW(float, k, k_off) + head_elem;
    __global const float* vb = CVIEW(float, v, v_off) + head_elem;
    __global const int* mt = CVIEW(int, meta, meta_off);
    const size_t qe = ((size_t)m * Hq + h) * HEAD_DIM;

    const long begin = mt[4 * m], end = begin + (long)mt[4 * m + 1];
    if (mt[4 * m + 2] != -1) raise_error(err, ERR_ATTENTION_BACK_TREE);
    if (begin < 0 || end < begin || end > S) raise_error(err, ERR_ATTENTION_BACK_SLOT);  // as cpu_ref's check
    long lo, hi;
    visible_run(mt, m, S, &lo, &hi);

    vecf qv[NV], dov[NV], acc[NV];
    __global const float* qr = CVIEW(float, q, q_off) + qe;
    __global const float* dor = CVIEW(float, d_out, d_out_off) + qe;
    __global const float* orow = CVIEW(float, out, out_off) + qe;
    vecf dsv = (vecf)(0.f);
    for (int i = 0; i < NV; ++i) {
        qv[i] = VLOAD(qr, i);
        dov[i] = VLOAD(dor, i);
        acc[i] = (vecf)(0.f);
        dsv = fma(dov[i], VLOAD(orow, i), dsv);
    }
    const float dsum = VSUM(dsv);

    float best = -INFINITY, sum = 0.f;
    for (long s = lo; s < hi; ++s) {
        __global const float* kr = kb + (size_t)s * row_elems;
        const float sc = dot_head(qv, kr) * scale;
        if (sc > best) {  // new maximum: rescale what was accumulated under the old one (exp(-inf) = 0 at the start)
            const float c = exp(best - sc);
            sum *= c;
            for (int i = 0; i < NV; ++i) acc[i] *= c;
            best = sc;
        }
        const float p = exp(sc - best);
        sum += p;
        const vecf w = (vecf)(p * (dot_head(dov, vb + (size_t)s * row_elems) - dsum));
        for (int i = 0; i < NV; ++i) acc[i] = fma(w, VLOAD(kr, i), acc[i]);
    }
    const float f = sum > 0.f ? scale / sum : 0.f;
    __global float* o = VIEW(float, dq, dq_off) + qe;
    for (int i = 0; i < NV; ++i) VSTORE(acc[i] * f, i, o);
    stats[2 * ((size_t)m * Hq + h)] = sum > 0.f ? best + log(sum) : INFINITY;  // INFINITY: nothing visible
    stats[2 * ((size_t)m * Hq + h) + 1] = dsum;
}

__kernel void attention_back_dkv_f32(__global const uchar* q, ulong q_off, __global const uchar* k, ulong k_off,
                                     __global const uchar* v, ulong v_off, __global const uchar* meta,
                                     ulong meta_off, __global const uchar* d_out, ulong d_out_off,
                                     __global const float* stats, __global uchar* dk, ulong dk_off,
                                     __global uchar* dv, ulong dv_off, int Hq, int Hkv, int M, int S, float scale) {
    const int g = get_global_id(0), j = get_global_id(1);
    if (g >= Hkv || j >= S) return;
    const int group = Hq / Hkv;
    const size_t e = (size_t)j * Hkv * HEAD_DIM + (size_t)g * HEAD_DIM;
    __global const int* mt = CVIEW(int, meta, meta_off);
    vecf kv[NV], vv[NV], dka[NV], dva[NV];
    for (int i = 0; i < NV; ++i) {
        kv[i] = VLOAD(CVIEW(float, k, k_off) + e, i);
        vv[i] = VLOAD(CVIEW(float, v, v_off) + e, i);
        dka[i] = dva[i] = (vecf)(0.f);
    }
    for (int m = 0; m < M; ++m) {
        long lo, hi;
        visible_run(mt, m, S, &lo, &hi);
        if (j < lo || j >= hi) continue;
        for (int h = g * group; h < (g + 1) * group; ++h) {
            const size_t qe = ((size_t)m * Hq + h) * HEAD_DIM;
            __global const float* qr = CVIEW(float, q, q_off) + qe;
            __global const float* dor = CVIEW(float, d_out, d_out_off) + qe;
            const float lse = stats[2 * ((size_t)m * Hq + h)], dsum = stats[2 * ((size_t)m * Hq + h) + 1];
            const float p = exp(dot_head(kv, qr) * scale - lse);
            const vecf pv = (vecf)(p), ds = (vecf)(p * (dot_head(vv, dor) - dsum));
            for (int i = 0; i < NV; ++i) {
                dva[i] = fma(pv, VLOAD(dor, i), dva[i]);
                dka[i] = fma(ds, VLOAD(qr, i), dka[i]);
            }
        }
    }
    __global float* dko = VIEW(float, dk, dk_off) + e;
    __global float* dvo = VIEW(float, dv, dv_off) + e;
    for (int i = 0; i < NV; ++i) {
        VSTORE(dka[i] * scale, i, dko);
        VSTORE(dva[i], i, dvo);
    }
}
