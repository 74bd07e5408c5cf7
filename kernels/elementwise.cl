// Element-wise ops over n f32 values, one work-item per element. out may alias the first input.

__kernel void swiglu_f32(__global const uchar* gate, ulong gate_off, __global const uchar* up, ulong up_off,
                         __global uchar* out, ulong out_off, int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = CVIEW(float, gate, gate_off)[i];
    VIEW(float, out, out_off)[i] = g / (1.f + exp(-g)) * CVIEW(float, up, up_off)[i];
}

__kernel void add_f32(__global const uchar* a, ulong a_off, __global const uchar* b, ulong b_off, __global uchar* out,
                      ulong out_off, int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    VIEW(float, out, out_off)[i] = CVIEW(float, a, a_off)[i] + CVIEW(float, b, b_off)[i];
}

// f16 -> f32 rows, for the CLBlast path on devices without cl_khr_fp16 (CLBlast's HGEMM needs it).
__kernel void convert_f16_f32(__global const uchar* src, ulong src_off, __global uchar* dst, ulong dst_off, int n) {
    const int i = get_global_id(0);
    if (i >= n) return;
    VIEW(float, dst, dst_off)[i] = vload_half(i, CVIEW(half, src, src_off));
}
