// A draft token tree, as the draft side builds it and the target side verifies it. Node 0..n-1 in an order
// where every parent precedes its children; parent -1 means "child of the last committed token". For
// sampling, q[u] (u = -1 for the root, else a node) is the truncated draft distribution that u's children
// were drawn from, i.i.d. — the multi-step speculative sampling rule needs exactly that distribution.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/sampling.h"

namespace tandem {

struct draft_tree {
    std::vector<int32_t> tokens;
    std::vector<int32_t> parents;
    // q_root: distribution the root's children were drawn from; q[i]: distribution node i's children were
    // drawn from (empty for leaves and in greedy mode).
    std::vector<token_prob> q_root;
    std::vector<std::vector<token_prob>> q;

    size_t size() const { return tokens.size(); }
    int32_t add(int32_t token, int32_t parent);  // returns the new node's index
    std::vector<int32_t> depths() const;         // depth of each node (roots: 0)
    std::vector<int32_t> children(int32_t u) const;  // in insertion order; u = -1 for the roots
    void clear();
    // The nodes below node u, re-rooted (u's children become roots; q_root = q[u]): what is left of a tree
    // drafted ahead once u's token is committed.
    draft_tree subtree(int32_t u) const;
    // Checks structure and limits: parents precede children, tokens in [0, n_vocab), at most max_nodes,
    // q entries (when present) are probabilities summing to ~1 over valid tokens. Throws tandem::error
    // (TANDEM_ERR_INVALID_ARGUMENT) naming the problem: trees come from the network too.
    void validate(int32_t n_vocab, size_t max_nodes, bool need_q) const;
};

// Result of verifying a tree: the accepted nodes (a root-to-node path) and the target's next token.
struct acceptance {
    std::vector<int32_t> path;  // accepted node indices, root first
    int32_t next_token = -1;    // the target's token after the accepted path (always present)
};

// Greedy: follow the children whose token equals the target's argmax; argmax_at[-1 -> root] is given as
// argmax_root, argmax_at[i] for node i.
acceptance accept_greedy(const draft_tree& t, int32_t argmax_root, const std::vector<int32_t>& argmax_at);

// Multi-step speculative sampling (SpecInfer): at node u with target distribution p, try u's children in
// order: accept child x with probability min(1, p(x)/q_u(x)), else p <- normalise(max(p - q_u, 0)) and try
// the next child; with no child accepted, draw the next token from p. Lossless when the children of u are
// i.i.d. draws from q_u. p_root / p_at[i] are the target's sampling distributions (sparse, summing to 1).
acceptance accept_sampling(const draft_tree& t, const std::vector<token_prob>& p_root,
                           const std::vector<std::vector<token_prob>>& p_at, rng& r);

}  // namespace tandem
