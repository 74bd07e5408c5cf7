// Element-wise training ops over n f32 values, one work-item per element, and get_rows_back.
//   swiglu_back: with s = sigmoid(g): d_gate = dy * u * s * (1 + g * (1 - s)), d_up = dy * g * s. d_gate may alias
//                gate or dy and d_up may alias up: each work-item loads its three inputs before either store.
//   scale:       out = s * x (out may alias x).
//   get_rows_back: d_table[ids[m]] += d_out[m]. One work-item per column k looping over m in increasing order, so
//                repeated ids add up in a fixed order without float atomics (the result is deterministic and equal
//                to cpu_ref's order). An id outside [0, R) is skipped and raises ERR_GET_ROWS_BACK_ID.

// Bits of the error word used here (backends/opencl/opencl_backend.h has the same values).
#define ERR_GET_ROWS_BACK_ID 32

__kernel void swiglu_back_f32(__global const uchar* gate, ulong gate_off, __global const uchar* up, ulong up_off,
                              __global const uchar* dy, ulong dy_off, __global uchar* d_gate, ulong d_gate_off,
                              __global uchar* d_up, ulong d_up_off, int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = CVIEW(float, gate, gate_off)[i];
    const float u = CVIEW(float, up, up_off)[i];
    const float d = CVIEW(float, dy, dy_off)[i];
    const float s = 1.f / (1.f + exp(-g));
    VIEW(float, d_gate, d_gate_off)[i] = d * u * s * (1.f + g * (1.f - s));
    VIEW(float, d_up, d_up_off)[i] = d * g * s;
}

__kernel void scale_f32(__global const uchar* x, ulong x_off, __global uchar* out, ulong out_off, int n, float s) {
    const int i = get_global_id(0);
    if (i >= n) return;
    VIEW(float, out, out_off)[i] = s * CVIEW(float, x, x_off)[i];
}

__kernel void get_rows_back_f32(__global const uchar* d_out, ulong d_out_off, __global const uchar* ids,
                                ulong ids_off, __global uchar* d_table, ulong d_table_off, int K, int R, int M,
                                __global int* err) {
    const int k = get_global_id(0);
    if (k >= K) return;
    __global const float* src = CVIEW(float, d_out, d_out_off) + k;
    __global const int* id = CVIEW(int, ids, ids_off);
    __global float* dst = VIEW(float, d_table, d_table_off) + k;
    for (int m = 0; m < M; ++m) {
        const int r = id[m];
        if (r < 0 || r >= R) {
            if (k == 0) raise_error(err, ERR_GET_ROWS_BACK_ID);
            continue;
        }
        dst[(size_t)r * K] += src[(size_t)m * K];
    }
}
