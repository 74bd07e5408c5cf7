// Shared by the attention_back shaders (train_attention_back.comp, train_attention_back_dkv.comp): the push
// constants and the layout of the scratch buffer, and the check of a row's run. Scratch (floats):
//   stats at st_off: {max, sum of exp(s - max)} per (row, q head, split) over the split's part of the run
//   info at ri_off:  {lse, delta = d_out . out} per (row, q head)
//   part at pq_off:  the split's share of dq (D floats) per (row, q head, split), when n_split > 1
layout(push_constant) uniform params {
    uint hq, group;  // query heads, query heads per kv head
    uint m, s;       // query rows, kv slots
    uint stride;     // elements per k / v row (D * Hkv)
    uint q_off, k_off, v_off, meta_off, o_off, go_off, dq_off, dk_off, dv_off;
    uint n_split;
    float scale;
    uint st_off, ri_off, pq_off;
    uint r0, r1;     // dkv: the query rows of this dispatch
    uint accumulate; // dkv: add to dk, dv (a later range of rows)
} pc;

#if !defined(NO_ROW_RUN)
// Row r's contiguous run [begin, begin + len), or len = 0 when the row is not a plain run inside the cache (a tree
// row or a run outside the cache: the host reports those through status bits set by the stats pass).
void row_run(uint r, out uint begin, out uint len, out bool tree, out bool bad) {
    const int b = meta[pc.meta_off + 4u * r], l = meta[pc.meta_off + 4u * r + 1u];
    tree = meta[pc.meta_off + 4u * r + 2u] != -1;
    bad = b < 0 || l < 0 || uint(b) > pc.s || uint(l) > pc.s - uint(b);
    begin = uint(max(b, 0));
    len = tree || bad ? 0u : uint(l);
}
#endif
