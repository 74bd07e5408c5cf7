// Draft trees and the two acceptance rules. Distributions are sparse (token, p) lists; the residual
// arithmetic of speculative sampling runs on a dense scratch vector indexed by token.
#include "engine/draft_tree.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "engine/error.h"

namespace tandem {

int32_t draft_tree::add(int32_t token, int32_t parent) {
    TANDEM_ASSERT(parent >= -1 && parent < int32_t(tokens.size()));
    tokens.push_back(token);
    parents.push_back(parent);
    q.emplace_back();
    return int32_t(tokens.size()) - 1;
}

std::vector<int32_t> draft_tree::depths() const {
    std::vector<int32_t> d(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) d[i] = parents[i] < 0 ? 0 : d[size_t(parents[i])] + 1;
    return d;
}

std::vector<int32_t> draft_tree::children(int32_t u) const {
    std::vector<int32_t> c;
    for (size_t i = 0; i < tokens.size(); ++i)
        if (parents[i] == u) c.push_back(int32_t(i));
    return c;
}

void draft_tree::clear() {
    tokens.clear();
    parents.clear();
    q_root.clear();
    q.clear();
}

namespace {
void check_dist(const std::vector<token_prob>& d, int32_t n_vocab, const std::string& where) {
    double sum = 0;
    for (const auto& e : d) {
        if (e.token < 0 || e.token >= n_vocab || !(e.p >= 0.f && e.p <= 1.f)) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "draft tree: invalid draft probability entry at " + where);
        }
        sum += e.p;
    }
    if (std::abs(sum - 1.0) > 1e-3) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "draft tree: draft distribution at " + where + " sums to " +
                                                     std::to_string(sum) + ", not 1");
    }
}
}  // namespace

draft_tree draft_tree::subtree(int32_t u) const {
    draft_tree r;
    if (u < 0 || size_t(u) >= size()) return r;
    std::vector<int32_t> map(size(), -2);  // old index -> new index; -1 for u itself
    map[size_t(u)] = -1;
    r.q_root = u < int32_t(q.size()) ? q[size_t(u)] : std::vector<token_prob>{};
    for (size_t i = size_t(u) + 1; i < size(); ++i) {
        const int32_t p = parents[i];
        if (p < 0 || map[size_t(p)] == -2) continue;  // not below u (parents precede children)
        map[i] = r.add(tokens[i], map[size_t(p)]);
        if (i < q.size()) r.q[size_t(map[i])] = q[i];
    }
    return r;
}

void draft_tree::validate(int32_t n_vocab, size_t max_nodes, bool need_q) const {
    auto bad = [](const std::string& what) { throw error(TANDEM_ERR_INVALID_ARGUMENT, "draft tree: " + what); };
    if (tokens.size() > max_nodes) {
        bad("has " + std::to_string(tokens.size()) + " nodes, more than the limit of " + std::to_string(max_nodes));
    }
    if (parents.size() != tokens.size() || q.size() != tokens.size()) bad("arrays of different lengths");
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) bad("node " + std::to_string(i) + " has token " +
                                                        std::to_string(tokens[i]) + " outside the vocabulary");
        if (parents[i] < -1 || parents[i] >= int32_t(i)) {
            bad("node " + std::to_string(i) + " has parent " + std::to_string(parents[i]) + " (must be an earlier node or -1)");
        }
    }
    if (!need_q) return;
    auto has_token = [](const std::vector<token_prob>& d, int32_t t) {
        return std::any_of(d.begin(), d.end(), [&](const token_prob& e) { return e.token == t && e.p > 0.f; });
    };
    for (int32_t u = -1; u < int32_t(tokens.size()); ++u) {
        const auto kids = children(u);
        if (kids.empty()) continue;
        const auto& d = u < 0 ? q_root : q[size_t(u)];
        const std::string where = u < 0 ? "the root" : "node " + std::to_string(u);
        check_dist(d, n_vocab, where);
        for (int32_t k : kids)
            if (!has_token(d, tokens[size_t(k)])) bad("node " + std::to_string(k) + "'s token has no draft probability");
    }
}

acceptance accept_greedy(const draft_tree& t, int32_t argmax_root, const std::vector<int32_t>& argmax_at) {
    acceptance a;
    int32_t u = -1, want = argmax_root;
    for (;;) {
        int32_t next = -1;
        for (size_t i = 0; i < t.size(); ++i) {
            if (t.parents[i] == u && t.tokens[i] == want) {
                next = int32_t(i);
                break;
            }
        }
        if (next < 0) break;
        a.path.push_back(next);
        u = next;
        want = argmax_at[size_t(u)];
    }
    a.next_token = want;
    return a;
}

acceptance accept_sampling(const draft_tree& t, const std::vector<token_prob>& p_root,
                           const std::vector<std::vector<token_prob>>& p_at, rng& r) {
    acceptance a;
    std::unordered_map<int32_t, double> p;  // the current (residual) target distribution
    auto load = [&](const std::vector<token_prob>& d) {
        p.clear();
        for (const auto& e : d) p[e.token] += e.p;
    };
    auto draw = [&]() -> int32_t {
        double total = 0;
        for (const auto& [tok, pr] : p) total += pr;
        // Iterate in token order so the draw does not depend on hash-map layout.
        std::vector<std::pair<int32_t, double>> items(p.begin(), p.end());
        std::sort(items.begin(), items.end());
        const double u = double(r.uniform()) * total;
        double cum = 0;
        for (const auto& [tok, pr] : items) {
            cum += pr;
            if (u < cum) return tok;
        }
        for (auto it = items.rbegin(); it != items.rend(); ++it)
            if (it->second > 0) return it->first;
        TANDEM_ASSERT(false);
        return -1;
    };
    int32_t u = -1;
    load(p_root);
    for (;;) {
        const auto kids = t.children(u);
        const auto& q = u < 0 ? t.q_root : t.q[size_t(u)];
        int32_t accepted = -1;
        for (int32_t k : kids) {
            const int32_t x = t.tokens[size_t(k)];
            double qx = 0;
            for (const auto& e : q)
                if (e.token == x) qx += e.p;
            const double px = p.count(x) ? p[x] : 0.0;
            if (qx > 0 && double(r.uniform()) < std::min(1.0, px / qx)) {
                accepted = k;
                break;
            }
            // Rejected: the residual max(p - q, 0), renormalised (draw() normalises).
            for (const auto& e : q) {
                auto it = p.find(e.token);
                if (it != p.end()) it->second = std::max(0.0, it->second - double(e.p));
            }
            double total = 0;
            for (const auto& [tok, pr] : p) total += pr;
            if (total <= 1e-12) {
                load(u < 0 ? p_root : p_at[size_t(u)]);  // p <= q everywhere: rejection had probability ~0
            } else {
                for (auto& [tok, pr] : p) pr /= total;
            }
        }
        if (accepted < 0) break;
        a.path.push_back(accepted);
        u = accepted;
        load(p_at[size_t(u)]);
    }
    a.next_token = draw();
    return a;
}

}  // namespace tandem
