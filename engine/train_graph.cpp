// The training graph (see train_graph.h). Buffers are planned once per batch shape: one buffer of saved
// activations (per layer, {width, M} with M = B*T rows), one of backward scratch, one of gradients. Shapes in
// comments use ggml order {innermost, rows}; E = n_embd, F = n_ff, QD = n_head * head_dim, KVD = kv_dim, r = rank.
#include "engine/train_graph.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/error.h"

namespace tandem {

namespace {

// Byte offsets of per-layer saved activations (each {width, M}).
struct layer_acts {
    size_t x, xb, q, k, v, att, x_mid, xb2, gate, up, h;
    std::array<size_t, lora_target_count> lora_h{};  // A x of each adapted projection {r, M}
};

}  // namespace

const std::vector<op>& train_graph::ops_used() {
    static const std::vector<op> ops = {op::get_rows,      op::rms_norm,      op::matmul,      op::rope,
                                        op::attention,     op::swiglu,        op::add,         op::scale,
                                        op::cross_entropy, op::matmul_t,      op::weight_grad, op::rms_norm_back,
                                        op::swiglu_back,   op::attention_back};
    return ops;
}

void require_training_support(const model& m) {
    const backend& be = m.be();
    auto need = [&](op o, dtype t) {
        if (!be.supports(o, t)) {
            throw error(TANDEM_ERR_UNSUPPORTED, std::string("backend '") + be.name() + "' cannot run " + op_name(o) +
                                                    " on " + std::string(dtype_name(t)) + " for training");
        }
    };
    for (op o : train_graph::ops_used()) need(o, dtype::f32);
    need(op::get_rows, m.token_embd().type);
    for (int l = 0; l < m.hparams().n_layer; ++l) {
        const auto& w = m.layer(l);
        for (const tensor* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_down, &w.w_up}) {
            need(op::matmul, t->type);
            need(op::matmul_t, t->type);
        }
    }
    need(op::matmul, m.output().type);
    need(op::matmul_t, m.output().type);
}

struct train_graph::impl {
    const model& m;
    const lora_adapter& a;
    backend& be;
    float s;  // alpha / rank
    int64_t cap_rows = 0, rows = 0;
    int32_t cap_k = 0;
    std::unique_ptr<buffer> acts, work, grad_buf, io;
    std::vector<layer_acts> layers;
    size_t off_x_final = 0, off_xn = 0, off_logits = 0;
    // backward scratch offsets (in `work`)
    size_t w_dx = 0, w_d1 = 0, w_d2 = 0, w_dq = 0, w_dk = 0, w_dv = 0, w_dsmall = 0, w_tmp = 0, w_dh = 0;
    // io offsets: tokens, pos, negated pos, identity slots, meta {4, M}, target ids {k, M}, target p {k, M}, loss
    size_t i_tok = 0, i_pos = 0, i_neg = 0, i_slot = 0, i_meta = 0, i_ids = 0, i_p = 0, i_loss = 0;
    // (layer, target) -> index of its A in parameters() (B follows), or -1
    std::vector<std::array<int32_t, lora_target_count>> param_index;
    std::vector<int32_t> host_ints;
    std::vector<float> host_loss;

    impl(const model& mm, const lora_adapter& aa) : m(mm), a(aa), be(mm.be()), s(aa.alpha() / float(aa.rank())) {}

    tensor view(buffer* b, size_t off, int64_t ne0, int64_t ne1, int64_t ne2 = 1, dtype t = dtype::f32) const {
        return tensor{b, off, t, {ne0, ne1, ne2, 1}};
    }

    void reserve(int64_t M, int32_t k);
    void forward(const train_batch& b);
    void backward(std::vector<tensor>& grads);
    train_loss run(const train_batch& b, bool with_grad, std::vector<tensor>& grads);

    // y = W x, plus s * B (A x) when (l, t) is adapted (A x saved for the backward).
    void project(const tensor& w, int l, lora_target t, const tensor& x, const tensor& y, int64_t M);
    // dx (= or +=) W^T dy, plus the adapter's gradients and its contribution to dx.
    void project_back(const tensor& w, int l, lora_target t, const tensor& x, const tensor& dy, const tensor& dx,
                      bool accumulate, int64_t M, std::vector<tensor>& grads);
};

void train_graph::impl::reserve(int64_t M, int32_t k) {
    if (M <= cap_rows && k <= cap_k) return;
    cap_rows = std::max(M, cap_rows);
    cap_k = std::max(k, cap_k);
    M = cap_rows;
    const auto& hp = m.hparams();
    const int64_t E = hp.n_embd, F = hp.n_ff, QD = int64_t(hp.n_head) * hp.head_dim, KVD = hp.kv_dim();
    const int64_t V = hp.n_vocab, r = a.rank();
    size_t off = 0;
    auto take = [&off](int64_t floats) {
        const size_t at = off;
        off += (size_t(floats) * 4 + 255) / 256 * 256;  // 256-byte aligned views for GPU backends
        return at;
    };
    layers.assign(size_t(hp.n_layer), {});
    for (int l = 0; l < hp.n_layer; ++l) {
        auto& L = layers[size_t(l)];
        L.x = take(E * M), L.xb = take(E * M), L.q = take(QD * M), L.k = take(KVD * M), L.v = take(KVD * M);
        L.att = take(QD * M), L.x_mid = take(E * M), L.xb2 = take(E * M);
        L.gate = take(F * M), L.up = take(F * M), L.h = take(F * M);
        for (int32_t t = 0; t < lora_target_count; ++t)
            L.lora_h[size_t(t)] = a.get(l, lora_target(t)) ? take(r * M) : 0;
    }
    off_x_final = take(E * M);
    off_xn = take(E * M);
    off_logits = take(V * M);
    acts = be.alloc(off);

    off = 0;
    const int64_t widest = std::max({E, F, QD});
    w_dx = take(E * M), w_d1 = take(widest * M), w_d2 = take(F * M);
    w_dq = take(QD * M), w_dk = take(KVD * M), w_dv = take(KVD * M);
    w_dsmall = take(E * M), w_tmp = take(widest * M), w_dh = take(r * M);
    work = be.alloc(off);

    off = 0;
    i_tok = take(M), i_pos = take(M), i_neg = take(M), i_slot = take(M), i_meta = take(4 * M);
    i_ids = take(int64_t(cap_k) * M), i_p = take(int64_t(cap_k) * M), i_loss = take(M);
    io = be.alloc(off);

    // The identity slots, positions and per-sequence layout depend on the batch shape: written per batch.
}

void train_graph::impl::project(const tensor& w, int l, lora_target t, const tensor& x, const tensor& y, int64_t M) {
    be.matmul(w, x, y);
    const lora_pair* lp = a.get(l, t);
    if (!lp) return;
    const int64_t N = y.ne[0] * y.ne[1] * y.ne[2] / M;
    const tensor h = view(acts.get(), layers[size_t(l)].lora_h[size_t(t)], a.rank(), M);
    const tensor tmp = view(work.get(), w_tmp, N, M);
    be.matmul(lp->a, x, h);    // {r, M}
    be.matmul(lp->b, h, tmp);  // {N, M}
    be.scale(tmp, s, tmp);
    be.add(y, tmp, y);
}

void train_graph::impl::project_back(const tensor& w, int l, lora_target t, const tensor& x, const tensor& dy,
                                     const tensor& dx, bool accumulate, int64_t M, std::vector<tensor>& grads) {
    const int64_t K = x.ne[0];
    const tensor tmp = view(work.get(), w_tmp, K, M);
    if (accumulate) {
        be.matmul_t(w, dy, tmp);
        be.add(dx, tmp, dx);
    } else {
        be.matmul_t(w, dy, dx);
    }
    const lora_pair* lp = a.get(l, t);
    if (!lp) return;
    const int32_t ia = param_index[size_t(l)][size_t(t)];
    const tensor h = view(acts.get(), layers[size_t(l)].lora_h[size_t(t)], a.rank(), M);
    const tensor dh = view(work.get(), w_dh, a.rank(), M);
    be.weight_grad(dy, h, s, 0.f, grads[size_t(ia) + 1]);  // dB = s * dy h^T
    be.matmul_t(lp->b, dy, dh);                            // dh = s * B^T dy
    be.scale(dh, s, dh);
    be.weight_grad(dh, x, 1.f, 0.f, grads[size_t(ia)]);  // dA = dh x^T
    be.matmul_t(lp->a, dh, tmp);                         // dx += A^T dh
    be.add(dx, tmp, dx);
}

void train_graph::impl::forward(const train_batch& b) {
    const auto& hp = m.hparams();
    const int64_t M = b.rows();
    const int64_t E = hp.n_embd, D = hp.head_dim, Hq = hp.n_head, Hkv = hp.n_head_kv, F = hp.n_ff;
    const int64_t QD = D * Hq, KVD = D * Hkv;
    buffer* A = acts.get();
    const tensor t_tok = view(io.get(), i_tok, M, 1, 1, dtype::i32);
    const tensor t_pos = view(io.get(), i_pos, M, 1, 1, dtype::i32);
    const tensor t_slot = view(io.get(), i_slot, M, 1, 1, dtype::i32);
    const tensor t_meta = view(io.get(), i_meta, 4, M, 1, dtype::i32);
    const rope_params rp{hp.n_rot, hp.rope_base};
    const attention_params ap{1.f / std::sqrt(float(D))};

    be.get_rows(m.token_embd(), t_tok, view(A, layers[0].x, E, M));
    for (int l = 0; l < hp.n_layer; ++l) {
        const auto& w = m.layer(l);
        const auto& L = layers[size_t(l)];
        const tensor x = view(A, L.x, E, M), xb = view(A, L.xb, E, M);
        // attention block
        be.rms_norm(x, w.attn_norm, hp.rms_eps, xb);
        project(w.wq, l, lora_target::q, xb, view(A, L.q, QD, M), M);
        project(w.wk, l, lora_target::k, xb, view(A, L.k, KVD, M), M);
        project(w.wv, l, lora_target::v, xb, view(A, L.v, KVD, M), M);
        be.rope(view(A, L.q, D, Hq, M), t_pos, rp);
        be.rope(view(A, L.k, D, Hkv, M), t_pos, rp);
        // K and V {KVD, M} are the "cache": slot m = row m.
        be.attention(view(A, L.q, D, Hq, M), view(A, L.k, KVD, M), view(A, L.v, KVD, M), t_meta, t_slot, ap,
                     view(A, L.att, D, Hq, M));
        const tensor x_mid = view(A, L.x_mid, E, M);
        project(w.wo, l, lora_target::o, view(A, L.att, QD, M), x_mid, M);
        be.add(x_mid, x, x_mid);
        // feed-forward block: w_down(silu(w_gate x) * w_up x)
        const tensor xb2 = view(A, L.xb2, E, M);
        be.rms_norm(x_mid, w.ffn_norm, hp.rms_eps, xb2);
        project(w.w_gate, l, lora_target::gate, xb2, view(A, L.gate, F, M), M);
        project(w.w_up, l, lora_target::up, xb2, view(A, L.up, F, M), M);
        const tensor h = view(A, L.h, F, M);
        be.swiglu(view(A, L.gate, F, M), view(A, L.up, F, M), h);
        const size_t next = l + 1 < hp.n_layer ? layers[size_t(l) + 1].x : off_x_final;
        const tensor x_next = view(A, next, E, M);
        project(w.w_down, l, lora_target::down, h, x_next, M);
        be.add(x_next, x_mid, x_next);
    }
    const tensor xn = view(A, off_xn, E, M);
    be.rms_norm(view(A, off_x_final, E, M), m.output_norm(), hp.rms_eps, xn);
    be.matmul(m.output(), xn, view(A, off_logits, hp.n_vocab, M));
}

void train_graph::impl::backward(std::vector<tensor>& grads) {
    const auto& hp = m.hparams();
    const int64_t M = rows;
    const int64_t E = hp.n_embd, D = hp.head_dim, Hq = hp.n_head, Hkv = hp.n_head_kv, F = hp.n_ff;
    const int64_t QD = D * Hq, KVD = D * Hkv;
    buffer* A = acts.get();
    buffer* W = work.get();
    const tensor t_neg = view(io.get(), i_neg, M, 1, 1, dtype::i32);
    const tensor t_meta = view(io.get(), i_meta, 4, M, 1, dtype::i32);
    const rope_params rp{hp.n_rot, hp.rope_base};
    const attention_params ap{1.f / std::sqrt(float(D))};

    // Output head and final norm. cross_entropy left d(loss)/d(logits) in place of the logits.
    const tensor d_xn = view(W, w_dsmall, E, M);
    be.matmul_t(m.output(), view(A, off_logits, hp.n_vocab, M), d_xn);
    const tensor dx = view(W, w_dx, E, M);  // d(loss)/d(residual stream), carried down through the layers
    be.rms_norm_back(view(A, off_x_final, E, M), m.output_norm(), d_xn, hp.rms_eps, dx);

    for (int l = hp.n_layer - 1; l >= 0; --l) {
        const auto& w = m.layer(l);
        const auto& L = layers[size_t(l)];
        // feed-forward block: the residual passes dx through unchanged; the block's input gradient is added.
        const tensor d_h = view(W, w_d1, F, M), d_up = view(W, w_d2, F, M);
        project_back(w.w_down, l, lora_target::down, view(A, L.h, F, M), dx, d_h, false, M, grads);
        be.swiglu_back(view(A, L.gate, F, M), view(A, L.up, F, M), d_h, d_h, d_up);
        const tensor d_xb2 = view(W, w_dsmall, E, M);
        project_back(w.w_gate, l, lora_target::gate, view(A, L.xb2, E, M), d_h, d_xb2, false, M, grads);
        project_back(w.w_up, l, lora_target::up, view(A, L.xb2, E, M), d_up, d_xb2, true, M, grads);
        be.rms_norm_back(view(A, L.x_mid, E, M), w.ffn_norm, d_xb2, hp.rms_eps, d_xb2);
        be.add(dx, d_xb2, dx);
        // attention block
        const tensor d_att = view(W, w_d1, QD, M);
        project_back(w.wo, l, lora_target::o, view(A, L.att, QD, M), dx, d_att, false, M, grads);
        be.attention_back(view(A, L.q, D, Hq, M), view(A, L.k, KVD, M), view(A, L.v, KVD, M), t_meta,
                          view(A, L.att, D, Hq, M), view(W, w_d1, D, Hq, M), ap, view(W, w_dq, D, Hq, M),
                          view(W, w_dk, KVD, M), view(W, w_dv, KVD, M));
        // rope's backward is the inverse rotation: rope with negated positions.
        be.rope(view(W, w_dq, D, Hq, M), t_neg, rp);
        be.rope(view(W, w_dk, D, Hkv, M), t_neg, rp);
        const tensor xb = view(A, L.xb, E, M), d_xb = view(W, w_dsmall, E, M);
        project_back(w.wq, l, lora_target::q, xb, view(W, w_dq, QD, M), d_xb, false, M, grads);
        project_back(w.wk, l, lora_target::k, xb, view(W, w_dk, KVD, M), d_xb, true, M, grads);
        project_back(w.wv, l, lora_target::v, xb, view(W, w_dv, KVD, M), d_xb, true, M, grads);
        be.rms_norm_back(view(A, L.x, E, M), w.attn_norm, d_xb, hp.rms_eps, d_xb);
        be.add(dx, d_xb, dx);
    }
}

train_loss train_graph::impl::run(const train_batch& b, bool with_grad, std::vector<tensor>& grads) {
    const auto& hp = m.hparams();
    const int64_t M = b.rows();
    auto bad = [](const std::string& what) { throw error(TANDEM_ERR_INVALID_ARGUMENT, "training batch: " + what); };
    if (b.n_seq < 1 || b.n_tok < 1) bad("needs at least one sequence of one token");
    if (b.k < 1) bad("needs at least one target per row");
    if (int64_t(b.tokens.size()) != M)
        bad(std::to_string(b.tokens.size()) + " tokens for " + std::to_string(M) + " rows");
    if (int64_t(b.target_ids.size()) != M * b.k || int64_t(b.target_p.size()) != M * b.k)
        bad("targets are not k = " + std::to_string(b.k) + " entries per row");
    for (int32_t t : b.tokens)
        if (t < 0 || t >= hp.n_vocab) bad("token " + std::to_string(t) + " is not in the vocabulary");
    for (int32_t t : b.target_ids)
        if (t < 0 || t >= hp.n_vocab) bad("target " + std::to_string(t) + " is not in the vocabulary");
    reserve(M, b.k);
    rows = M;

    // Positions restart at 0 in every sequence; sequence s attends to its own rows [s*T, s*T + t].
    host_ints.resize(size_t(7 * M));
    int32_t* pos = host_ints.data();
    int32_t* neg = pos + M;
    int32_t* slot = neg + M;
    int32_t* meta = slot + M;
    for (int64_t r = 0; r < M; ++r) {
        const int32_t t = int32_t(r % b.n_tok);
        pos[r] = t, neg[r] = -t, slot[r] = int32_t(r);
        meta[4 * r + 0] = int32_t(r - t), meta[4 * r + 1] = t + 1, meta[4 * r + 2] = -1, meta[4 * r + 3] = -1;
    }
    be.upload(*io, i_tok, b.tokens.data(), size_t(M) * 4);
    be.upload(*io, i_pos, pos, size_t(M) * 4);
    be.upload(*io, i_neg, neg, size_t(M) * 4);
    be.upload(*io, i_slot, slot, size_t(M) * 4);
    be.upload(*io, i_meta, meta, size_t(M) * 16);
    be.upload(*io, i_ids, b.target_ids.data(), b.target_ids.size() * 4);
    be.upload(*io, i_p, b.target_p.data(), b.target_p.size() * 4);

    int64_t live = 0;
    for (int64_t r = 0; r < M; ++r) {
        float sum = 0;
        for (int32_t j = 0; j < b.k; ++j) sum += b.target_p[size_t(r * b.k + j)];
        live += sum > 0 ? 1 : 0;
    }
    forward(b);
    const tensor z = view(acts.get(), off_logits, hp.n_vocab, M);
    const tensor loss = view(io.get(), i_loss, M, 1);
    be.cross_entropy(z, view(io.get(), i_ids, b.k, M, 1, dtype::i32), view(io.get(), i_p, b.k, M),
                     live ? 1.f / float(live) : 0.f, loss, z);
    if (with_grad) backward(grads);
    host_loss.resize(size_t(M));
    be.download(*io, i_loss, host_loss.data(), host_loss.size() * 4);
    train_loss out;
    for (float v : host_loss) out.sum += double(v);
    out.rows = live;
    return out;
}

train_graph::train_graph(const model& m, const lora_adapter& a) : p_(std::make_unique<impl>(m, a)) {
    if (&a.be() != &m.be())
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "the adapter lives on another backend than the model");
    require_training_support(m);
    const auto params = a.parameters();
    // parameters() lists layer by layer, targets in enum order, A before B: record where each pair sits.
    p_->param_index.assign(size_t(m.hparams().n_layer), {});
    int32_t i = 0;
    for (int l = 0; l < m.hparams().n_layer; ++l) {
        for (int32_t t = 0; t < lora_target_count; ++t) {
            p_->param_index[size_t(l)][size_t(t)] = a.get(l, lora_target(t)) ? i : -1;
            if (a.get(l, lora_target(t))) i += 2;
        }
    }
    TANDEM_ASSERT(size_t(i) == params.size());
    size_t off = 0;
    std::vector<size_t> at;
    for (const auto& t : params) {
        at.push_back(off);
        off += (t.nbytes() + 255) / 256 * 256;
    }
    p_->grad_buf = m.be().alloc(std::max<size_t>(off, 256));
    for (size_t j = 0; j < params.size(); ++j)
        grads_.push_back(tensor{p_->grad_buf.get(), at[j], dtype::f32, params[j].ne});
}

train_graph::~train_graph() = default;

train_loss train_graph::loss(const train_batch& b) { return p_->run(b, false, grads_); }

train_loss train_graph::loss_and_grad(const train_batch& b) { return p_->run(b, true, grads_); }

}  // namespace tandem
