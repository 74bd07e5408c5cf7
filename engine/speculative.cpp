// Speculative decoding: drafting strategies on the draft model and one-pass tree verification on the
// target. Slot layout in both caches: committed tokens at [0, P), tree node j at P + j during a round;
// after verification the accepted path is compacted to [P, P + accepted) and the rest is dropped.
#include "engine/speculative.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>

#include "engine/error.h"

namespace tandem {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

sequence_state::sequence_state(const model& model_, int64_t capacity) : m(model_), cache(model_, capacity), fwd(model_, cache) {}

void check_vocab_match(const model& draft, const std::string& draft_name, const model& target,
                       const std::string& target_name) {
    const uint64_t a = draft.tokenizer().fingerprint(), b = target.tokenizer().fingerprint();
    if (a == b) return;
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "vocabulary mismatch: draft '%s' (%d tokens, fingerprint %016llx) and target '%s' (%d tokens, "
                  "fingerprint %016llx) do not share a tokenizer; speculative decoding needs identical vocabularies",
                  draft_name.c_str(), draft.tokenizer().n_vocab(), static_cast<unsigned long long>(a),
                  target_name.c_str(), target.tokenizer().n_vocab(), static_cast<unsigned long long>(b));
    throw error(TANDEM_ERR_INVALID_ARGUMENT, buf);
}

draft_strategy parse_draft_strategy(const std::string& s) {
    if (s == "chain") return draft_strategy::chain;
    if (s == "tree") return draft_strategy::tree;
    if (s == "dynamic") return draft_strategy::dynamic;
    if (s == "self") return draft_strategy::self;
    throw error(TANDEM_ERR_INVALID_ARGUMENT, "unknown speculation strategy '" + s + "' (chain, tree, dynamic, self)");
}

// ---------------------------------------------------------------- drafter

namespace {
sampling_params q_params(const sampling_params& target, int32_t top_k) {
    sampling_params q = target;
    q.temperature = target.temperature > 0 ? target.temperature : 1.f;
    q.top_k = top_k;
    q.top_p = 1.f;
    q.min_p = 0.f;
    q.repeat_penalty = 1.f;
    q.seed = target.seed ^ 0x9e3779b97f4a7c15ull;  // draft draws must be independent of the acceptance draws
    return q;
}
}  // namespace

drafter::drafter(const model& draft, const draft_config& cfg, const sampling_params& target_sampling, int64_t capacity)
    : m_(draft),
      cfg_(cfg),
      sp_(target_sampling),
      greedy_(target_sampling.temperature == 0.f),
      q_sampler_(q_params(target_sampling, std::max(1, cfg.q_top_k))),
      seq_(draft, capacity),
      chain_len_(std::max(1, cfg.max_len)) {
    if (cfg.strategy == draft_strategy::self) {
        if (cfg.exit_layer < 1 || cfg.exit_layer >= draft.hparams().n_layer) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "self-speculation exit layer must be in [1, " +
                                                         std::to_string(draft.hparams().n_layer - 1) + "]");
        }
        seq_.fwd.set_exit_layer(cfg.exit_layer);
    }
    if (cfg.max_len < 1 || cfg.budget < 1 || cfg.expand_children < 1) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "draft length, budget and children per node must be >= 1");
    }
    for (int32_t b : cfg.branching)
        if (b < 1) throw error(TANDEM_ERR_INVALID_ARGUMENT, "tree branching factors must be >= 1");
}

std::vector<float> drafter::sync(const std::vector<int32_t>& committed) {
    TANDEM_ASSERT(!committed.empty());
    size_t common = 0;
    while (common < seq_.tokens.size() && common < committed.size() && seq_.tokens[common] == committed[common]) ++common;
    // Roll back to the common prefix, keeping at least the last token pending so its logits are computed.
    seq_.n_cached = std::min({seq_.n_cached, common, committed.size() - 1});
    seq_.tokens = committed;
    std::vector<int32_t> pending(committed.begin() + int64_t(seq_.n_cached), committed.end());
    std::vector<float> logits;
    seq_.fwd.run(causal_rows(pending, int32_t(seq_.n_cached), 0, false), logits);
    seq_.n_cached = committed.size();
    return logits;
}

std::vector<float> drafter::eval_nodes(const draft_tree& t, const std::vector<int32_t>& nodes) {
    const int32_t P = int32_t(seq_.tokens.size());
    const auto depth = t.depths();
    std::map<int32_t, int32_t> index;  // tree node -> walk table index
    for (size_t i = 0; i < nodes.size(); ++i) index[nodes[i]] = int32_t(i);
    std::vector<context_entry> ctx;
    // Table index of node u, adding walk-only entries for ancestors evaluated in earlier passes.
    std::function<int32_t(int32_t)> idx = [&](int32_t u) -> int32_t {
        if (u < 0) return -1;
        if (auto it = index.find(u); it != index.end()) return it->second;
        const int32_t at = int32_t(nodes.size() + ctx.size());
        index[u] = at;
        ctx.push_back({P + u, -1});
        const int32_t parent = idx(t.parents[size_t(u)]);
        ctx[size_t(at) - nodes.size()].parent = parent;
        return at;
    };
    std::vector<batch_row> rows(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) {
        const int32_t u = nodes[i];
        rows[i] = batch_row{t.tokens[size_t(u)], P + depth[size_t(u)], P + u, 0, P, int32_t(i), -1, true};
    }
    for (size_t i = 0; i < nodes.size(); ++i) rows[i].parent = idx(t.parents[size_t(nodes[i])]);
    std::vector<float> logits;
    seq_.fwd.run(rows, logits, ctx);
    return logits;
}

std::vector<token_prob> drafter::dist(const std::vector<float>& logits, size_t row) {
    const size_t V = size_t(m_.hparams().n_vocab);
    const std::span<const float> l(logits.data() + row * V, V);
    return q_sampler_.distribution(l, {});
}

void drafter::add_children(draft_tree& t, int32_t parent, const std::vector<token_prob>& d, int32_t n) {
    if (parent < 0) t.q_root = d;
    else t.q[size_t(parent)] = d;
    for (int32_t i = 0; i < n; ++i) {
        if (greedy_) {
            if (size_t(i) >= d.size()) break;  // distinct most likely tokens, best first
            t.add(d[size_t(i)].token, parent);
        } else {
            t.add(q_sampler_.draw(d), parent);  // i.i.d. draws from q: what the sampling rule needs
        }
    }
}

draft_tree drafter::draft(const std::vector<int32_t>& committed, size_t max_nodes) {
    draft_tree t;
    const std::vector<float> root_logits = sync(committed);
    if (max_nodes == 0) return t;
    const size_t budget_cap = std::min<size_t>(max_nodes, size_t(seq_.cache.n_slots()) - committed.size());
    const std::vector<token_prob> root = dist(root_logits, root_logits.size() / size_t(m_.hparams().n_vocab) - 1);
    switch (cfg_.strategy) {
        case draft_strategy::chain:
        case draft_strategy::self: {
            const size_t len = std::min<size_t>(size_t(cfg_.adaptive ? chain_len_ : cfg_.max_len), budget_cap);
            add_children(t, -1, root, 1);
            while (t.size() < len) {
                const int32_t last = int32_t(t.size()) - 1;
                const auto logits = eval_nodes(t, {last});
                add_children(t, last, dist(logits, 0), 1);
            }
            break;
        }
        case draft_strategy::tree: {
            std::vector<int32_t> level;
            add_children(t, -1, root, std::min<int32_t>(cfg_.branching[0], int32_t(budget_cap)));
            for (size_t i = 0; i < t.size(); ++i) level.push_back(int32_t(i));
            for (size_t d = 1; d < cfg_.branching.size() && t.size() < budget_cap && !level.empty(); ++d) {
                const auto logits = eval_nodes(t, level);
                std::vector<int32_t> next;
                for (size_t i = 0; i < level.size() && t.size() < budget_cap; ++i) {
                    const size_t before = t.size();
                    const int32_t n = std::min<int32_t>(cfg_.branching[d], int32_t(budget_cap - t.size()));
                    add_children(t, level[i], dist(logits, i), n);
                    for (size_t k = before; k < t.size(); ++k) next.push_back(int32_t(k));
                }
                level = std::move(next);
            }
            break;
        }
        case draft_strategy::dynamic: {
            // Best-first expansion by cumulative draft log-probability, a few nodes per draft pass. Children are
            // never pruned after drawing (that would bias sampled drafts); the budget only stops expansion.
            const size_t budget = std::min<size_t>(size_t(cfg_.budget), budget_cap);
            std::vector<double> score;
            std::vector<bool> expanded;
            auto add_scored = [&](int32_t parent, const std::vector<token_prob>& d) {
                const size_t before = t.size();
                add_children(t, parent, d, std::min<int32_t>(cfg_.expand_children, int32_t(budget - t.size())));
                for (size_t k = before; k < t.size(); ++k) {
                    double p = 0;
                    for (const auto& e : d)
                        if (e.token == t.tokens[k]) p = e.p;
                    score.push_back((parent < 0 ? 0.0 : score[size_t(parent)]) + std::log(std::max(p, 1e-30)));
                    expanded.push_back(false);
                }
            };
            add_scored(-1, root);
            const size_t per_pass = 4;
            while (t.size() < budget) {
                std::vector<int32_t> pick;
                for (size_t k = 0; k < t.size(); ++k)
                    if (!expanded[k]) pick.push_back(int32_t(k));
                if (pick.empty()) break;
                std::stable_sort(pick.begin(), pick.end(),
                                 [&](int32_t a, int32_t b) { return score[size_t(a)] > score[size_t(b)]; });
                pick.resize(std::min(pick.size(), per_pass));
                for (int32_t k : pick) expanded[size_t(k)] = true;
                const auto logits = eval_nodes(t, pick);
                for (size_t i = 0; i < pick.size() && t.size() < budget; ++i) add_scored(pick[i], dist(logits, i));
            }
            break;
        }
    }
    return t;
}

void drafter::observe(size_t accepted, size_t drafted_depth) {
    if (!cfg_.adaptive || drafted_depth == 0) return;
    if (accepted >= drafted_depth) chain_len_ = std::min(chain_len_ + 1, cfg_.max_len);
    else if (2 * accepted < drafted_depth) chain_len_ = std::max(chain_len_ - 1, 1);
}

// ---------------------------------------------------------------- verifier

verifier::verifier(const model& target, const sampling_params& sp, int64_t capacity, size_t max_nodes)
    : bv_(target, capacity, 1, max_nodes), seq_(sp) {}

verifier::~verifier() { bv_.release(seq_); }

void verifier::start(const std::vector<int32_t>& prompt) { bv_.start(seq_, prompt); }

acceptance verifier::verify(const draft_tree& t) {
    verify_job j;
    j.seq = &seq_;
    j.tree = &t;
    bv_.run({&j, 1});
    if (j.error) std::rethrow_exception(j.error);
    TANDEM_ASSERT(j.done);
    return std::move(j.result);
}

// ---------------------------------------------------------------- in-process generation

speculative_generator::speculative_generator(const model& target, const model& draft, const draft_config& cfg,
                                             const sampling_params& sp, int64_t capacity)
    : verifier_(target, sp, capacity), drafter_(draft, cfg, sp, capacity) {}

void speculative_generator::start(const std::vector<int32_t>& prompt) { verifier_.start(prompt); }

std::vector<int32_t> speculative_generator::step() {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t room = verifier_.room();
    const size_t max_nodes = room > 1 ? size_t(std::min<int64_t>(room - 1, 256)) : 0;
    const draft_tree t = drafter_.draft(verifier_.tokens(), max_nodes);
    const auto t1 = std::chrono::steady_clock::now();
    stats_.draft_seconds += std::chrono::duration<double>(t1 - t0).count();
    const size_t before = verifier_.tokens().size();
    const acceptance a = verifier_.verify(t);
    stats_.verify_seconds += seconds_since(t1);
    stats_.passes += 1;
    stats_.drafted += t.size();
    stats_.tokens += a.path.size() + 1;
    int32_t max_depth = 0;
    for (int32_t d : t.depths()) max_depth = std::max(max_depth, d + 1);
    if (stats_.offered_at_depth.size() < size_t(max_depth)) {
        stats_.offered_at_depth.resize(size_t(max_depth));
        stats_.accepted_at_depth.resize(size_t(max_depth));
    }
    for (int32_t d = 0; d < max_depth; ++d) stats_.offered_at_depth[size_t(d)] += 1;
    for (size_t d = 0; d < a.path.size(); ++d) stats_.accepted_at_depth[d] += 1;
    drafter_.observe(a.path.size(), size_t(max_depth));
    return std::vector<int32_t>(verifier_.tokens().begin() + int64_t(before), verifier_.tokens().end());
}

}  // namespace tandem
