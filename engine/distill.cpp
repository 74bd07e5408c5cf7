// The local teacher: each batch runs through the teacher's own forward pass as one ragged batch (sequence s in
// cache slots [s*T, s*T + T)), all logits returned; the top-k selection and its softmax are done on the host
// in double, since the logits are downloaded anyway. Generation (sequence-level distillation data) continues up to
// 32 prompts at a time, one cache region of BOS + prompt + n_new slots each, one row per live prompt per pass.
#include "engine/distill.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/backend.h"
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

namespace {

int32_t generation_k(const teacher_generation& cfg, int32_t n_vocab) {
    if (!(cfg.temperature >= 0)) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the generation temperature must be >= 0");
    if (cfg.n_new < 0) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the number of tokens to generate must be >= 0");
    // Greedy needs only the argmax; a draw needs the candidates.
    return cfg.temperature > 0 ? std::clamp(cfg.top_k, 1, std::min(n_vocab, top_k_max)) : 1;
}

// Prompt i's own generator: the draws do not depend on how prompts are grouped into batches.
rng prompt_rng(uint64_t seed, size_t i) { return rng(seed ^ (0x9E3779B97F4A7C15ull * (uint64_t(i) + 1))); }

}  // namespace

int32_t pick_next_token(std::span<const int32_t> ids, std::span<const float> p, float temperature, rng& r) {
    if (ids.empty() || ids.size() != p.size()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "pick_next_token: bad top-k");
    if (temperature <= 0 || ids.size() == 1) return ids[0];
    std::vector<double> w(ids.size());
    double sum = 0;
    for (size_t j = 0; j < ids.size(); ++j) sum += w[j] = p[j] > 0 ? std::pow(double(p[j]), 1.0 / temperature) : 0.0;
    if (!(sum > 0)) return ids[0];  // every weight underflowed: only the first entry is left
    double u = double(r.uniform()) * sum;
    for (size_t j = 0; j < ids.size(); ++j)
        if ((u -= w[j]) < 0) return ids[j];
    for (size_t j = ids.size(); j-- > 0;)  // rounding left u >= 0: the last candidate with weight
        if (w[j] > 0) return ids[j];
    return ids[0];
}

std::vector<std::vector<int32_t>> teacher::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                    const teacher_generation& cfg) {
    const int32_t k = generation_k(cfg, n_vocab());
    std::vector<std::vector<int32_t>> out(prompts.size());
    constexpr size_t chunk = 16;
    std::vector<int32_t> ids;
    std::vector<float> p;
    for (size_t c0 = 0; c0 < prompts.size(); c0 += chunk) {
        const size_t c1 = std::min(prompts.size(), c0 + chunk);
        size_t longest = 0;
        for (size_t i = c0; i < c1; ++i) longest = std::max(longest, prompts[i].size());
        train_batch b;
        b.n_seq = int32_t(c1 - c0), b.n_tok = int32_t(1 + longest + size_t(cfg.n_new)), b.k = 1;
        b.tokens.assign(size_t(b.rows()), cfg.bos);  // rows past a sequence's end do not affect it (causal)
        b.target_ids.assign(size_t(b.rows()), 0);
        b.target_p.assign(size_t(b.rows()), 0.f);
        std::vector<size_t> len(c1 - c0);
        std::vector<rng> rngs;
        std::vector<bool> live(c1 - c0, true);
        for (size_t i = c0; i < c1; ++i) {
            const size_t s = i - c0, at = s * size_t(b.n_tok);
            std::copy(prompts[i].begin(), prompts[i].end(), b.tokens.begin() + std::ptrdiff_t(at + 1));
            len[s] = 1 + prompts[i].size();
            rngs.push_back(prompt_rng(cfg.seed, i));
        }
        for (int32_t step = 0; step < cfg.n_new && std::find(live.begin(), live.end(), true) != live.end(); ++step) {
            top_k(b, k, ids, p);
            for (size_t s = 0; s < c1 - c0; ++s) {
                if (!live[s]) continue;
                const size_t r = s * size_t(b.n_tok) + len[s] - 1;
                const int32_t tok = pick_next_token(std::span(ids).subspan(r * size_t(k), size_t(k)),
                                                    std::span(p).subspan(r * size_t(k), size_t(k)), cfg.temperature,
                                                    rngs[s]);
                if (tok == cfg.bos || tok == cfg.eos) {
                    live[s] = false;
                    continue;
                }
                b.tokens[s * size_t(b.n_tok) + len[s]++] = tok;
                out[c0 + s].push_back(tok);
            }
        }
    }
    return out;
}

std::vector<std::vector<int32_t>> local_teacher::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                          const teacher_generation& cfg) {
    const int32_t V = m_.hparams().n_vocab;
    const int32_t k = generation_k(cfg, V);
    std::vector<std::vector<int32_t>> out(prompts.size());
    constexpr size_t chunk = 32;
    std::vector<float> logits;
    std::vector<int32_t> ids;
    std::vector<float> p;
    for (size_t c0 = 0; c0 < prompts.size(); c0 += chunk) {
        const size_t c1 = std::min(prompts.size(), c0 + chunk);
        size_t longest = 0;
        for (size_t i = c0; i < c1; ++i) longest = std::max(longest, prompts[i].size());
        const int32_t T = int32_t(1 + longest + size_t(cfg.n_new));  // cache slots per prompt
        kv_cache cache(m_, int64_t(c1 - c0) * T);
        forward_pass fwd(m_, cache);
        std::vector<batch_row> rows;
        std::vector<size_t> live, len(c1 - c0);  // live: prompts (chunk-relative) whose logits the pass returns
        std::vector<rng> rngs;
        for (size_t i = c0; i < c1; ++i) {
            std::vector<int32_t> seq{cfg.bos};
            seq.insert(seq.end(), prompts[i].begin(), prompts[i].end());
            const auto r = causal_rows(seq, 0, int32_t(i - c0) * T, false);  // logits of the last row only
            rows.insert(rows.end(), r.begin(), r.end());
            live.push_back(i - c0);
            len[i - c0] = seq.size();
            rngs.push_back(prompt_rng(cfg.seed, i));
        }
        for (int32_t step = 0; step < cfg.n_new && !live.empty(); ++step) {
            fwd.run(rows, logits);
            top_k_distribution(logits, V, k, ids, p);
            rows.clear();
            std::vector<size_t> next;
            for (size_t j = 0; j < live.size(); ++j) {
                const size_t s = live[j];
                const int32_t tok = pick_next_token(std::span(ids).subspan(j * size_t(k), size_t(k)),
                                                    std::span(p).subspan(j * size_t(k), size_t(k)), cfg.temperature,
                                                    rngs[s]);
                if (tok == cfg.bos || tok == cfg.eos) continue;
                out[c0 + s].push_back(tok);
                const int32_t one[1] = {tok};
                const auto r = causal_rows(one, int32_t(len[s]++), int32_t(s) * T, true);
                rows.push_back(r[0]);
                next.push_back(s);
            }
            live = std::move(next);
        }
    }
    return out;
}

}  // namespace tandem
