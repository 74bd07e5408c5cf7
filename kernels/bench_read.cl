// bench_read_f32_{strided,chunked}: the trivial read kernels `tandem-bench ops` compares bandwidth-bound kernels
// against in the same run (the OpenCL device's own read limit). Each work-item sums float4s and writes one value:
//   strided: element i of work-item g is g + i * global size (neighbouring work-items read neighbouring
//            float4s: coalesced on a GPU, one contiguous stream per work-group loop on a CPU device);
//   chunked: work-item g reads its own contiguous run (one prefetchable stream per work-item on a CPU device).
// The host reports the faster of the two as the device's limit.

__kernel void bench_read_f32_strided(__global const float4* x, ulong n4, __global float* out) {
    const size_t g = get_global_id(0), stride = get_global_size(0);
    float4 acc = (float4)(0.f);
    for (size_t i = g; i < n4; i += stride) acc += x[i];
    out[g] = acc.x + acc.y + acc.z + acc.w;
}

__kernel void bench_read_f32_chunked(__global const float4* x, ulong n4, __global float* out) {
    const size_t g = get_global_id(0), per = (n4 + get_global_size(0) - 1) / get_global_size(0);
    const size_t end = min((size_t)n4, (g + 1) * per);
    float4 acc = (float4)(0.f);
    for (size_t i = g * per; i < end; ++i) acc += x[i];
    out[g] = acc.x + acc.y + acc.z + acc.w;
}
