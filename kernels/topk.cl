// top_k: the k largest x[m][*] of each row in descending order, ties to the lower index, with their values.
// A work-group holds ROWS rows of WGS work-items each (see rms_norm.cl); WGS may be any size. Work-item t keeps
// the sorted best k of its strided slice t, t + WGS, ... in private memory, then k rounds merge the lists: each
// round a tree reduction in local memory picks the best head of all lists and its owner advances.

#ifndef WGS
#define WGS 64
#endif
#ifndef ROWS
#define ROWS 1
#endif
#ifndef KMAX
#define KMAX 64  // capacity of a list; the launcher passes the next power of two >= k
#endif

// (av, ai) ranks before (bv, bi): the larger value, on equal values the lower index; index -1 ("none") last.
inline bool ranks_before(float av, int ai, float bv, int bi) {
    return ai >= 0 && (bi < 0 || av > bv || (av == bv && ai < bi));
}

__kernel __attribute__((reqd_work_group_size(WGS, ROWS, 1)))
void top_k_f32_i32(__global const uchar* x, ulong x_off, __global uchar* ids, ulong ids_off, __global uchar* vals,
                   ulong vals_off, int K, int M, int k) {
    __local float red_v_all[ROWS * WGS];
    __local int red_i_all[ROWS * WGS];
    __local float* red_v = red_v_all + get_local_id(1) * WGS;
    __local int* red_i = red_i_all + get_local_id(1) * WGS;
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const int n = m < M ? K : 0;  // padding rows take part in the barriers only
    __global const float* xr = CVIEW(float, x, x_off) + (size_t)m * K;
    __global int* oi = VIEW(int, ids, ids_off) + (size_t)m * k;
    __global float* ov = VIEW(float, vals, vals_off) + (size_t)m * k;

    float lv[KMAX];
    int li[KMAX];
    int cnt = 0;
    for (int i = lid; i < n; i += WGS) {
        const float v = xr[i];
        // Indices ascend within a slice: an element equal to the last kept one ranks after it.
        if (cnt == k && !(v > lv[k - 1])) continue;
        int j = min(cnt, k - 1);
        cnt = min(cnt + 1, k);
        for (; j > 0 && v > lv[j - 1]; --j) {
            lv[j] = lv[j - 1];
            li[j] = li[j - 1];
        }
        lv[j] = v;
        li[j] = i;
    }
#if WGS == 1
    // One work-item per row: its list is the answer (cnt == k since K >= k).
    for (int j = 0; j < cnt; ++j) oi[j] = li[j], ov[j] = lv[j];
#else
    int head = 0;
    for (int j = 0; j < k; ++j) {
        red_v[lid] = head < cnt ? lv[head] : -INFINITY;
        red_i[lid] = head < cnt ? li[head] : -1;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int s = 1; s < WGS; s <<= 1) {
            const int o = lid + s;
            if ((lid & (2 * s - 1)) == 0 && o < WGS && ranks_before(red_v[o], red_i[o], red_v[lid], red_i[lid])) {
                red_v[lid] = red_v[o];
                red_i[lid] = red_i[o];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        const int win = red_i[0];
        const float win_v = red_v[0];
        if (head < cnt && li[head] == win) ++head;  // ids are distinct: exactly one owner advances
        if (lid == 0 && m < M) oi[j] = win, ov[j] = win_v;
        barrier(CLK_LOCAL_MEM_FENCE);  // everyone has read the winner before the next round overwrites it
    }
#endif
}
