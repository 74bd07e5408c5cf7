// Speculative decoding in one process: a draft model (or the target's own first layers) drafts a chain or a
// tree of tokens, the target verifies every node in ONE forward pass (tree attention), and the acceptance
// rule keeps greedy output identical to target-only decoding and sampled output distributed as the target's.
// The pieces are separable because the cloud service runs the verifier and the edge the drafter.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/batch_verify.h"
#include "engine/draft_tree.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampling.h"

namespace tandem {

// One model's view of a sequence: the committed tokens, of which the first n_cached have K/V in the cache at
// slots [0, n_cached); the rest are pending and are fed with the next pass.
struct sequence_state {
    sequence_state(const model& m, int64_t capacity);
    const model& m;
    kv_cache cache;
    forward_pass fwd;
    std::vector<int32_t> tokens;
    size_t n_cached = 0;
};

// Throws tandem::error(TANDEM_ERR_INVALID_ARGUMENT) naming both models when their vocabularies differ.
void check_vocab_match(const model& draft, const std::string& draft_name, const model& target,
                       const std::string& target_name);

enum class draft_strategy { chain, tree, dynamic, self };
draft_strategy parse_draft_strategy(const std::string& s);  // "chain" | "tree" | "dynamic" | "self"

struct draft_config {
    draft_strategy strategy = draft_strategy::chain;
    int32_t max_len = 8;                     // chain: longest draft; adapted online within [1, max_len]
    bool adaptive = true;                    // chain: adapt the length to the recent acceptance
    std::vector<int32_t> branching{4, 2, 2, 1};  // tree: children per node at each depth
    int32_t budget = 32;                     // dynamic: node budget
    int32_t expand_children = 4;             // dynamic: children added per expanded node
    int32_t exit_layer = 2;                  // self: layers of the target used as the draft
    int32_t q_top_k = 20;                    // sampling: the draft distribution is truncated to its top k
};

// Drafts trees on the draft model. The draft sequence mirrors the target's committed tokens.
class drafter {
   public:
    // `draft` is the draft model (for `self`, the target itself, run with an early exit).
    drafter(const model& draft, const draft_config& cfg, const sampling_params& target_sampling, int64_t capacity);

    // Builds a tree after the committed tokens `committed` (which must extend what this drafter saw before
    // by appending, or share a prefix with it: the drafter rolls back to the common prefix). `max_nodes`
    // bounds the tree (context room).
    draft_tree draft(const std::vector<int32_t>& committed, size_t max_nodes);
    // Feedback after verification: how many nodes of the last draft's longest chain were accepted.
    void observe(size_t accepted, size_t drafted_depth);

    const draft_config& config() const { return cfg_; }
    int32_t current_chain_len() const { return chain_len_; }

   private:
    // Draft distribution at the last committed token (feeds pending tokens).
    std::vector<float> sync(const std::vector<int32_t>& committed);
    // Runs the given tree nodes (whose ancestors are already evaluated) and returns their logits.
    std::vector<float> eval_nodes(const draft_tree& t, const std::vector<int32_t>& nodes);
    std::vector<token_prob> dist(const std::vector<float>& logits, size_t row);
    void add_children(draft_tree& t, int32_t parent, const std::vector<token_prob>& d, int32_t n);

    const model& m_;
    draft_config cfg_;
    sampling_params sp_;
    bool greedy_;
    sampler q_sampler_;  // the draft distribution (target temperature, top-k = q_top_k) and its draws
    sequence_state seq_;
    int32_t chain_len_;
};

struct verify_stats {
    uint64_t passes = 0;           // target forward passes
    uint64_t tokens = 0;           // tokens produced (accepted + one from the target per pass)
    uint64_t drafted = 0;          // draft nodes sent to verification
    std::vector<uint64_t> accepted_at_depth;  // accepted nodes per depth
    std::vector<uint64_t> offered_at_depth;   // passes that offered a node at this depth
    double draft_seconds = 0, verify_seconds = 0;
};

// The target side for one sequence: a batch_verifier with a single region.
class verifier {
   public:
    verifier(const model& target, const sampling_params& sp, int64_t capacity, size_t max_nodes = 256);
    ~verifier();

    // Sets the prompt; it is prefilled by the first verify.
    void start(const std::vector<int32_t>& prompt);
    // One target pass over the pending tokens and the tree; commits the accepted path and the target's next
    // token (which becomes pending). Returns the accepted node indices and the new token.
    acceptance verify(const draft_tree& t);
    const std::vector<int32_t>& tokens() const { return seq_.tokens; }
    int64_t room() const { return bv_.seq_capacity() - int64_t(seq_.tokens.size()); }

   private:
    batch_verifier bv_;
    verify_sequence seq_;
};

// Drafter + verifier in one process: generate up to n tokens after a prompt.
class speculative_generator {
   public:
    speculative_generator(const model& target, const model& draft, const draft_config& cfg, const sampling_params& sp,
                          int64_t capacity);
    void start(const std::vector<int32_t>& prompt);
    // One round (draft + verify); returns the new committed tokens (accepted path + the target's token).
    std::vector<int32_t> step();
    const verify_stats& stats() const { return stats_; }
    const std::vector<int32_t>& tokens() const { return verifier_.tokens(); }

   private:
    verifier verifier_;
    drafter drafter_;
    verify_stats stats_;
};

}  // namespace tandem
