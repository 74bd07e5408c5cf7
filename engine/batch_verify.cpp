// Batched tree verification over a pooled KV cache; see batch_verify.h for the layout.
#include "engine/batch_verify.h"

#include <algorithm>
#include <string>

#include "engine/error.h"

namespace tandem {

verify_sequence::verify_sequence(const sampling_params& p) : sp(p), sampler(p), accept_rng(p.seed) {}

batch_verifier::batch_verifier(const model& target, int64_t seq_capacity, int32_t n_regions, size_t max_nodes,
                               int64_t chunk)
    : m_(target),
      capacity_(seq_capacity),
      max_nodes_(max_nodes),
      chunk_(std::max<int64_t>(chunk, 1)),
      cache_(target, seq_capacity * std::max(n_regions, 1)),
      fwd_(target, cache_),
      owner_(size_t(std::max(n_regions, 1)), nullptr) {
    if (seq_capacity < 2) throw error(TANDEM_ERR_INVALID_ARGUMENT, "sequence capacity must be at least 2 tokens");
}

// Sequences still holding a region are not touched: they may already be gone (a server destroys its sessions
// before its verifier); a sequence that outlives its verifier must not be verified again.
batch_verifier::~batch_verifier() = default;

void batch_verifier::start(verify_sequence& s, std::span<const int32_t> prompt) {
    if (prompt.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the prompt needs at least one token (BOS)");
    if (int64_t(prompt.size()) >= capacity_) {
        throw error(TANDEM_ERR_CONTEXT_FULL, "prompt of " + std::to_string(prompt.size()) +
                                                 " tokens does not fit the context of " + std::to_string(capacity_));
    }
    const int32_t V = m_.hparams().n_vocab;
    for (int32_t t : prompt)
        if (t < 0 || t >= V) throw error(TANDEM_ERR_INVALID_ARGUMENT, "prompt token " + std::to_string(t) + " is not in [0, " + std::to_string(V) + ")");
    s.tokens.assign(prompt.begin(), prompt.end());
    s.n_cached = 0;
    s.sampler = sampler(s.sp);
    s.accept_rng = rng(s.sp.seed);
}

void batch_verifier::append(verify_sequence& s, std::span<const int32_t> tokens) {
    const int32_t V = m_.hparams().n_vocab;
    for (int32_t t : tokens)
        if (t < 0 || t >= V) throw error(TANDEM_ERR_INVALID_ARGUMENT, "token " + std::to_string(t) + " is not in [0, " + std::to_string(V) + ")");
    if (int64_t(s.tokens.size() + tokens.size()) >= capacity_) throw error(TANDEM_ERR_CONTEXT_FULL, "context full");
    s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
}

void batch_verifier::release(verify_sequence& s) {
    if (s.region >= 0 && owner_[size_t(s.region)] == &s) owner_[size_t(s.region)] = nullptr;
    s.region = -1;
    s.n_cached = 0;
}

int64_t batch_verifier::rows_for(const verify_sequence& s, size_t tree_nodes) const {
    const int64_t pending = int64_t(s.tokens.size()) - int64_t(s.region >= 0 ? s.n_cached : 0);
    return std::min(pending, chunk_) + int64_t(tree_nodes);
}

bool batch_verifier::acquire(verify_sequence& s, std::span<const verify_job> pinned) {
    if (s.region >= 0) return true;
    int32_t pick = -1;
    for (size_t r = 0; r < owner_.size() && pick < 0; ++r)
        if (!owner_[r]) pick = int32_t(r);
    if (pick < 0) {  // evict the least recently used sequence that is not part of this pass
        uint64_t oldest = UINT64_MAX;
        for (size_t r = 0; r < owner_.size(); ++r) {
            const bool in_pass = std::any_of(pinned.begin(), pinned.end(), [&](const verify_job& j) { return j.seq == owner_[r]; });
            if (!in_pass && owner_[r]->last_used < oldest) oldest = owner_[r]->last_used, pick = int32_t(r);
        }
        if (pick < 0) return false;
        owner_[size_t(pick)]->region = -1;
        owner_[size_t(pick)]->n_cached = 0;
        ++stats_.evictions;
    }
    owner_[size_t(pick)] = &s;
    s.region = pick;
    s.n_cached = 0;
    return true;
}

void batch_verifier::catch_up(verify_sequence& s) {
    std::vector<float> none;
    while (int64_t(s.tokens.size() - s.n_cached) > chunk_) {
        const int64_t n = std::min<int64_t>(chunk_, int64_t(s.tokens.size() - s.n_cached) - 1);
        const std::span<const int32_t> part(s.tokens.data() + s.n_cached, size_t(n));
        const auto rows = causal_rows(part, int32_t(s.n_cached), base(s), false);
        fwd_.run(rows, none);
        s.n_cached += size_t(n);
        ++stats_.prefill_passes;
        stats_.rows += uint64_t(n);
    }
}

void batch_verifier::run(std::span<verify_job> jobs) {
    // Admission: validate each job on its own, then give it a region (evicting idle sequences).
    std::vector<verify_job*> live;
    for (auto& j : jobs) {
        j.done = false;
        j.error = nullptr;
        j.result = {};
        try {
            TANDEM_ASSERT(j.seq && j.tree && !j.seq->tokens.empty());
            const bool greedy = j.seq->sp.temperature == 0.f;
            j.tree->validate(m_.hparams().n_vocab, max_nodes_, !greedy);
            const int64_t need = int64_t(j.seq->tokens.size() + j.tree->size()) + 1;
            if (need > capacity_) {
                throw error(TANDEM_ERR_CONTEXT_FULL, "context full: " + std::to_string(j.seq->tokens.size()) +
                                                         " tokens + a tree of " + std::to_string(j.tree->size()) +
                                                         " nodes exceed " + std::to_string(capacity_));
            }
            for (const verify_job* o : live)
                if (o->seq == j.seq) throw error(TANDEM_ERR_INVALID_ARGUMENT, "one sequence twice in a pass");
        } catch (...) {
            j.error = std::current_exception();
            j.done = true;
            continue;
        }
        if (!acquire(*j.seq, jobs)) continue;  // no region this pass
        j.seq->last_used = ++clock_;
        live.push_back(&j);
    }
    if (live.empty()) return;
    // A failing device (a kernel that does not build, a lost device) fails the pass, not the process: every live
    // job gets the error and no sequence changes (rows written past n_cached are overwritten by the next pass).
    std::vector<size_t> logit0(live.size());
    std::span<const float> logits;
    try {
        logits = pass(live, logit0);
    } catch (...) {
        for (verify_job* j : live) j->error = std::current_exception(), j->done = true;
        return;
    }
    accept_and_commit(live, logits, logit0);
}

std::span<const float> batch_verifier::pass(std::span<verify_job* const> live, std::vector<size_t>& logit0) {
    for (verify_job* j : live) catch_up(*j->seq);

    // One pass: per job, its pending chain (the last row yields the root distribution), then its tree nodes.
    std::vector<batch_row> rows;
    size_t n_logits = 0;
    for (size_t i = 0; i < live.size(); ++i) {
        const verify_sequence& s = *live[i]->seq;
        const draft_tree& t = *live[i]->tree;
        const int32_t B = base(s), P = int32_t(s.tokens.size());
        const std::span<const int32_t> pending(s.tokens.data() + s.n_cached, s.tokens.size() - s.n_cached);
        for (const auto& r : causal_rows(pending, int32_t(s.n_cached), B, false)) rows.push_back(r);
        const int32_t Rt = int32_t(rows.size());
        const auto depth = t.depths();
        for (size_t k = 0; k < t.size(); ++k) {
            rows.push_back(batch_row{t.tokens[k], P + depth[k], B + P + int32_t(k), B, P, Rt + int32_t(k),
                                     t.parents[k] < 0 ? -1 : Rt + t.parents[k], true});
        }
        logit0[i] = n_logits;
        n_logits += 1 + t.size();
    }
    const std::span<const float> logits = fwd_.run_view(rows, logits_);
    ++stats_.passes;
    stats_.rows += rows.size();
    return logits;
}

void batch_verifier::accept_and_commit(std::span<verify_job* const> live, std::span<const float> logits,
                                       const std::vector<size_t>& logit0) {

    const size_t V = size_t(m_.hparams().n_vocab);
    std::vector<int32_t> src, dst;
    for (size_t i = 0; i < live.size(); ++i) {
        verify_job& j = *live[i];
        verify_sequence& s = *j.seq;
        const draft_tree& t = *j.tree;
        auto row = [&](size_t k) { return std::span<const float>(logits.data() + (logit0[i] + k) * V, V); };
        acceptance a;
        if (s.sp.temperature == 0.f) {
            std::vector<int32_t> am(t.size());
            for (size_t k = 0; k < t.size(); ++k) am[k] = argmax(row(k + 1));
            a = accept_greedy(t, argmax(row(0)), am);
        } else {
            // Each node's target distribution sees its own path in the repetition-penalty history.
            std::vector<std::vector<token_prob>> p_at(t.size());
            for (size_t k = 0; k < t.size(); ++k) {
                std::vector<int32_t> hist = s.tokens, path;
                for (int32_t u = int32_t(k); u >= 0; u = t.parents[size_t(u)]) path.push_back(t.tokens[size_t(u)]);
                hist.insert(hist.end(), path.rbegin(), path.rend());
                p_at[k] = s.sampler.distribution(row(k + 1), hist);
            }
            a = accept_sampling(t, s.sampler.distribution(row(0), s.tokens), p_at, s.accept_rng);
        }
        // Commit: the accepted nodes' K/V move behind the prefix; the target's own token stays pending.
        const int32_t B = base(s), P = int32_t(s.tokens.size());
        for (size_t k = 0; k < a.path.size(); ++k) {
            if (a.path[k] != int32_t(k)) src.push_back(B + P + a.path[k]), dst.push_back(B + P + int32_t(k));
            s.tokens.push_back(t.tokens[size_t(a.path[k])]);
        }
        s.n_cached = size_t(P) + a.path.size();
        s.tokens.push_back(a.next_token);
        j.result = std::move(a);
        j.done = true;
    }
    try {
        cache_.copy_slots(src, dst);
    } catch (...) {
        // The results stand (they came from a good pass); the accepted K/V did not move, so these sequences'
        // caches are rebuilt from their tokens on their next pass.
        for (verify_job* j : live) j->seq->n_cached = 0;
    }
}

}  // namespace tandem
