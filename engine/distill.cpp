// The local teacher: each batch runs through the teacher's own forward pass as one ragged batch (sequence s in
// cache slots [s*T, s*T + T)), all logits returned; the top-k selection and its softmax are done on the host
// in double, since the logits are downloaded anyway.
#include "engine/distill.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"

namespace tandem {

void top_k_distribution(std::span<const float> logits, int32_t n_vocab, int32_t k, std::vector<int32_t>& ids,
                        std::vector<float>& p) {
    if (k < 1 || k > n_vocab) throw error(TANDEM_ERR_INVALID_ARGUMENT, "distillation top-k must be in [1, n_vocab]");
    const size_t rows = logits.size() / size_t(n_vocab);
    ids.assign(rows * size_t(k), 0);
    p.assign(rows * size_t(k), 0.f);
    std::vector<int32_t> order(static_cast<size_t>(n_vocab));
    for (size_t r = 0; r < rows; ++r) {
        const float* z = logits.data() + r * size_t(n_vocab);
        std::iota(order.begin(), order.end(), 0);
        // Largest first; ties by lower id, so the selection is deterministic.
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
        double sum = 0;
        const double top = z[order[0]];
        std::vector<double> e(static_cast<size_t>(k));
        for (int32_t j = 0; j < k; ++j) sum += e[size_t(j)] = std::exp(double(z[order[size_t(j)]]) - top);
        for (int32_t j = 0; j < k; ++j) {
            ids[r * size_t(k) + size_t(j)] = order[size_t(j)];
            p[r * size_t(k) + size_t(j)] = float(e[size_t(j)] / sum);
        }
    }
}

double target_entropy_sum(std::span<const float> p) {
    double h = 0;
    for (float x : p)
        if (x > 0) h -= double(x) * std::log(double(x));
    return h;
}

local_teacher::local_teacher(const model& m) : m_(m) {}

int32_t local_teacher::n_vocab() const { return m_.hparams().n_vocab; }

uint64_t local_teacher::vocab_fingerprint() const { return m_.tokenizer().fingerprint(); }

void local_teacher::top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) {
    const int64_t M = b.rows();
    if (!cache_ || cache_->n_slots() < M) {
        fwd_.reset();
        cache_ = std::make_unique<kv_cache>(m_, M);
        fwd_ = std::make_unique<forward_pass>(m_, *cache_);
    }
    std::vector<batch_row> rows;
    rows.reserve(size_t(M));
    for (int32_t s = 0; s < b.n_seq; ++s) {
        const std::span<const int32_t> seq(b.tokens.data() + size_t(s) * size_t(b.n_tok), size_t(b.n_tok));
        const auto r = causal_rows(seq, 0, s * b.n_tok, true);
        rows.insert(rows.end(), r.begin(), r.end());
    }
    fwd_->run(rows, logits_);
    top_k_distribution(logits_, m_.hparams().n_vocab, k, ids, p);
}

}  // namespace tandem
