// The forward pass: embedding, n_layer x (attention block + SwiGLU FFN block), final norm, output head.
// Buffer shapes are given in ggml order {innermost, ...}; M is the number of rows in the batch.
#include "engine/forward.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace tandem {

std::vector<batch_row> causal_rows(std::span<const int32_t> tokens, int32_t pos0, int32_t base, bool all_logits) {
    std::vector<batch_row> rows(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        auto& r = rows[i];
        r.token = tokens[i];
        r.pos = pos0 + int32_t(i);
        r.slot = base + r.pos;
        r.kv_begin = base;
        r.kv_len = r.pos + 1;  // the whole prefix and itself: chain tokens sit contiguously in the cache
        r.logits = all_logits || i + 1 == tokens.size();
    }
    return rows;
}

forward_pass::forward_pass(const model& m, kv_cache& cache) : m_(m), cache_(cache), be_(m.be()) {}

tensor forward_pass::act(size_t offset, int64_t ne0, int64_t ne1, int64_t ne2, dtype t) const {
    return tensor{scratch_.get(), offset, t, {ne0, ne1, ne2, 1}};
}

void forward_pass::reserve(int64_t n_rows, int64_t n_logits) {
    // Adapters may be added to the model between passes: their rank is part of the capacity.
    const int64_t rank = m_.max_adapter_rank();
    if (n_rows <= cap_rows_ && n_logits <= cap_logits_ && rank <= cap_rank_) return;
    cap_rows_ = std::max(n_rows, cap_rows_);
    cap_logits_ = std::max(n_logits, cap_logits_);
    cap_rank_ = std::max(rank, cap_rank_);
    const auto& hp = m_.hparams();
    const int64_t m = cap_rows_;
    size_t off = 0;
    auto take = [&](int64_t floats) {
        const size_t at = off;
        off += (size_t(floats) * 4 + 255) / 256 * 256;  // keep every activation 256-byte aligned for GPU backends
        return at;
    };
    const int64_t qd = int64_t(hp.n_head) * hp.head_dim;
    off_x_ = take(hp.n_embd * m);
    off_xb_ = take(hp.n_embd * m);
    off_q_ = take(qd * m);
    off_k_ = take(hp.kv_dim() * m);
    off_v_ = take(hp.kv_dim() * m);
    off_att_ = take(qd * m);
    off_tmp_ = take(std::max<int64_t>(hp.n_embd, qd) * m);
    off_gate_ = take(hp.n_ff * m);
    off_up_ = take(hp.n_ff * m);
    off_logits_ = take(int64_t(hp.n_vocab) * cap_logits_);
    off_ids_ = take(m * 8 + cap_logits_);  // tokens, pos, slots, meta (4 per walk entry), logit row ids
    if (cap_rank_ > 0) {
        off_lora_h_ = take(cap_rank_ * m);
        off_lora_y_ = take(std::max({int64_t(hp.n_embd), qd, int64_t(hp.n_ff)}) * m);
    }
    scratch_ = be_.alloc(off);
}

void forward_pass::validate(std::span<const batch_row> rows, std::span<const context_entry> context) const {
    const auto& hp = m_.hparams();
    const int64_t n_slots = cache_.n_slots();
    const int32_t table = int32_t(rows.size() + context.size());
    auto bad = [](size_t i, const std::string& what) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "batch row " + std::to_string(i) + ": " + what);
    };
    for (size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        if (r.token < 0 || r.token >= hp.n_vocab) bad(i, "token " + std::to_string(r.token) + " is not in the vocabulary");
        if (r.pos < 0) bad(i, "negative position");
        if (r.slot < 0 || r.slot >= n_slots) bad(i, "slot " + std::to_string(r.slot) + " outside the KV cache");
        if (r.kv_begin < 0 || r.kv_len < 0 || int64_t(r.kv_begin) + r.kv_len > n_slots) bad(i, "kv range outside cache");
        if (r.parent < -1 || r.parent >= table || r.parent == int32_t(i)) bad(i, "parent out of range");
        if (r.tree >= table || r.tree < -1) bad(i, "tree start out of range");
        if (r.kv_len == 0 && r.tree < 0) bad(i, "row attends to nothing");
    }
    for (size_t c = 0; c < context.size(); ++c) {
        const auto& e = context[c];
        if (e.slot < 0 || e.slot >= n_slots) bad(rows.size() + c, "context slot outside the KV cache");
        if (e.parent < -1 || e.parent >= table) bad(rows.size() + c, "context parent out of range");
    }
    // Every walk must end within `table` steps (no cycles).
    auto parent_of = [&](int32_t j) { return j < int32_t(rows.size()) ? rows[size_t(j)].parent : context[size_t(j) - rows.size()].parent; };
    for (size_t i = 0; i < rows.size(); ++i) {
        int32_t steps = 0;
        for (int32_t j = rows[i].tree; j >= 0; j = parent_of(j))
            if (++steps > table) bad(i, "tree walk has a cycle");
    }
}

void forward_pass::set_layers(int32_t first, int32_t end) {
    const int32_t L = m_.hparams().n_layer;
    const int32_t e = end > 0 ? end : L;
    if (first < 0 || e > L || first >= e) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "layer range [" + std::to_string(first) + ", " + std::to_string(e) +
                                                     ") is not a non-empty part of the model's " + std::to_string(L) + " layers");
    }
    first_layer_ = first;
    end_layer_ = e;
}

void forward_pass::apply_adapters(int32_t l, lora_target t, const tensor& x, const tensor& y) {
    for (const lora_use& u : m_.adapters()) {
        const lora_pair* p = u.adapter->get(l, t);
        if (!p) continue;
        const int64_t M = x.ne[1];
        const tensor h = act(off_lora_h_, p->a.ne[1], M);  // A x {r, M}
        const tensor y2 = act(off_lora_y_, y.ne[0], M);    // B h {N, M}
        be_.matmul(p->a, x, h);
        be_.scale(h, u.factor(), h);  // on the rank-r side: the cheapest place for the factor
        be_.matmul(p->b, h, y2);
        be_.add(y, y2, y);
    }
}

void forward_pass::run(std::span<const batch_row> rows, std::vector<float>& logits,
                       std::span<const context_entry> context, const hidden_io* io) {
    const std::span<const float> view = run_view(rows, logits, context, io);
    if (view.data() != logits.data()) logits.assign(view.begin(), view.end());  // no zero fill of a reused vector
}

std::span<const float> forward_pass::run_view(std::span<const batch_row> rows, std::vector<float>& fallback,
                                              std::span<const context_entry> context, const hidden_io* io) {
    const size_t n = size_t(compute(rows, context, io) * m_.hparams().n_vocab);
    if (n == 0) return {};
    if (const void* host = scratch_->host_ptr()) {
        be_.synchronize();
        return {reinterpret_cast<const float*>(static_cast<const char*>(host) + off_logits_), n};
    }
    fallback.resize(n);
    be_.download(*scratch_, off_logits_, fallback.data(), n * 4);
    return fallback;
}

int64_t forward_pass::compute(std::span<const batch_row> rows, std::span<const context_entry> context,
                              const hidden_io* io) {
    validate(rows, context);
    if (io && !io->in.empty() && io->in.size() != rows.size() * size_t(m_.hparams().n_embd)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "hidden states: " + std::to_string(io->in.size()) + " floats for " +
                                                     std::to_string(rows.size()) + " rows of " +
                                                     std::to_string(m_.hparams().n_embd));
    }
    const auto& hp = m_.hparams();
    const int64_t M = int64_t(rows.size());
    int64_t n_out = 0;
    for (const auto& r : rows) n_out += r.logits ? 1 : 0;
    if (M == 0) return 0;
    const int64_t T = M + int64_t(context.size());  // the walk table: rows, then context entries
    reserve(T, std::max<int64_t>(n_out, 1));

    // Integer inputs, uploaded in one transfer: tokens {M}, pos {M}, slots {T}, meta {4, T}, logit rows.
    host_ints_.assign(size_t(2 * M + 5 * T + n_out), 0);
    int32_t* tok = host_ints_.data();
    int32_t* pos = tok + M;
    int32_t* slot = pos + M;
    int32_t* meta = slot + T;
    int32_t* out_rows = meta + 4 * T;
    for (int64_t i = 0, j = 0; i < M; ++i) {
        const auto& r = rows[size_t(i)];
        tok[i] = r.token, pos[i] = r.pos, slot[i] = r.slot;
        meta[4 * i + 0] = r.kv_begin, meta[4 * i + 1] = r.kv_len, meta[4 * i + 2] = r.tree, meta[4 * i + 3] = r.parent;
        if (r.logits) out_rows[j++] = int32_t(i);
    }
    for (int64_t c = 0; c < int64_t(context.size()); ++c) {
        const auto& e = context[size_t(c)];
        slot[M + c] = e.slot;
        meta[4 * (M + c) + 0] = 0, meta[4 * (M + c) + 1] = 0, meta[4 * (M + c) + 2] = -1, meta[4 * (M + c) + 3] = e.parent;
    }
    be_.upload(*scratch_, off_ids_, host_ints_.data(), host_ints_.size() * 4);
    const size_t at_slot = off_ids_ + size_t(2 * M) * 4, at_meta = at_slot + size_t(T) * 4;
    const tensor t_tok{scratch_.get(), off_ids_, dtype::i32, {M, 1, 1, 1}};
    const tensor t_pos{scratch_.get(), off_ids_ + size_t(M) * 4, dtype::i32, {M, 1, 1, 1}};
    const tensor t_slot{scratch_.get(), at_slot, dtype::i32, {M, 1, 1, 1}};  // the rows' own slots (kv_write)
    const tensor t_walk_slot{scratch_.get(), at_slot, dtype::i32, {T, 1, 1, 1}};
    const tensor t_meta{scratch_.get(), at_meta, dtype::i32, {4, T, 1, 1}};
    const tensor t_out_rows{scratch_.get(), at_meta + size_t(T) * 16, dtype::i32, {n_out, 1, 1, 1}};

    const int64_t E = hp.n_embd, D = hp.head_dim, Hq = hp.n_head, Hkv = hp.n_head_kv, F = hp.n_ff;
    const tensor x = act(off_x_, E, M);               // residual stream {E, M}
    const tensor xb = act(off_xb_, E, M);             // normalised input of a block {E, M}
    const tensor q = act(off_q_, D, Hq, M);           // {D, Hq, M}
    const tensor k = act(off_k_, D, Hkv, M);          // {D, Hkv, M}
    const tensor v = act(off_v_, D * Hkv, M);         // {D*Hkv, M}
    const tensor att = act(off_att_, D, Hq, M);       // attention output {D, Hq, M}
    const tensor tmp = act(off_tmp_, E, M);           // block output before the residual add {E, M}
    const tensor gate = act(off_gate_, F, M);         // {F, M}
    const tensor up = act(off_up_, F, M);             // {F, M}
    const rope_params rp{hp.n_rot, hp.rope_base};
    const attention_params ap{1.f / std::sqrt(float(D))};

    if (io && !io->in.empty()) be_.upload(*scratch_, off_x_, io->in.data(), io->in.size() * 4);
    else be_.get_rows(m_.token_embd(), t_tok, x);
    const int end = end_layer_ > 0 ? std::min(end_layer_, hp.n_layer) : hp.n_layer;
    const bool lora = !m_.adapters().empty();  // without adapters the pass enqueues exactly the base ops
    for (int l = first_layer_; l < end; ++l) {
        const auto& w = m_.layer(l);
        // attention block
        be_.rms_norm(x, w.attn_norm, hp.rms_eps, xb);
        {  // the projections see {rows, M}; rope sees {D, heads, M}
            const tensor ws[] = {w.wq, w.wk, w.wv};
            const tensor outs[] = {act(off_q_, D * Hq, M), act(off_k_, D * Hkv, M), v};
            be_.matmul_multi(ws, xb, outs);
        }
        if (lora) {
            apply_adapters(l, lora_target::q, xb, act(off_q_, D * Hq, M));
            apply_adapters(l, lora_target::k, xb, act(off_k_, D * Hkv, M));
            apply_adapters(l, lora_target::v, xb, v);
        }
        be_.rope(q, t_pos, rp);
        be_.rope(k, t_pos, rp);
        const tensor k_rows = act(off_k_, D * Hkv, M);
        be_.kv_write(k_rows, cache_.k(l), t_slot);
        be_.kv_write(v, cache_.v(l), t_slot);
        be_.attention(q, cache_.k(l), cache_.v(l), t_meta, t_walk_slot, ap, att);
        be_.matmul(w.wo, act(off_att_, D * Hq, M), tmp);
        if (lora) apply_adapters(l, lora_target::o, act(off_att_, D * Hq, M), tmp);
        be_.add(x, tmp, x);
        // feed-forward block: w_down(silu(w_gate x) * w_up x)
        be_.rms_norm(x, w.ffn_norm, hp.rms_eps, xb);
        {
            const tensor ws[] = {w.w_gate, w.w_up};
            const tensor outs[] = {gate, up};
            be_.matmul_multi(ws, xb, outs);
        }
        if (lora) {
            apply_adapters(l, lora_target::gate, xb, gate);
            apply_adapters(l, lora_target::up, xb, up);
        }
        be_.swiglu(gate, up, gate);
        be_.matmul(w.w_down, gate, tmp);
        if (lora) apply_adapters(l, lora_target::down, gate, tmp);
        be_.add(x, tmp, x);
    }
    if (io && io->out) {
        io->out->resize(size_t(M * E));
        be_.download(*scratch_, off_x_, io->out->data(), io->out->size() * 4);
    }
    if (n_out == 0) {
        be_.synchronize();
        return 0;
    }
    // Output head on the requested rows only: gather them, final norm, project to the vocabulary.
    const tensor sel = act(off_xb_, E, n_out);
    be_.get_rows(x, t_out_rows, sel);
    const tensor sel_n = act(off_tmp_, E, n_out);
    be_.rms_norm(sel, m_.output_norm(), hp.rms_eps, sel_n);
    const tensor lg = act(off_logits_, hp.n_vocab, n_out);
    be_.matmul(m_.output(), sel_n, lg);
    return n_out;
}

}  // namespace tandem
