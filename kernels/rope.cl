// rope: in-place rotation of the pairs (2i, 2i+1), i < n_rot/2, of every head row of x {D, H, M} by
// pos[m] * inv_freq[i]. The host computes inv_freq[i] = 1 / freq_base^(2i/n_rot) exactly as cpu_ref does,
// so the angles agree bit for bit; only cos/sin differ by their ulps. One work-item per (pair, head row).

__kernel void rope_f32(__global uchar* x, ulong x_off, __global const uchar* pos, ulong pos_off,
                       __global const float* inv_freq, int D, int H, int half_rot, int rows) {
    const int i = get_global_id(0), r = get_global_id(1);
    if (i >= half_rot || r >= rows) return;
    const float theta = (float)CVIEW(int, pos, pos_off)[r / H] * inv_freq[i];
    const float c = cos(theta), s = sin(theta);
    __global float* v = VIEW(float, x, x_off) + (size_t)r * D + 2 * i;
    const float a = v[0], b = v[1];
    v[0] = a * c - b * s;
    v[1] = a * s + b * c;
}
