// The acceptance rules of speculative decoding. Greedy follows the target's argmax exactly; sampling over a
// tree must reproduce the target's distribution exactly, which a chi-square test over many seeds checks —
// and a plausible-looking wrong rule (resample from p instead of the residual) must fail the same test.
#include <gtest/gtest.h>

#include <map>

#include "engine/draft_tree.h"
#include "engine/error.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

TEST(spec_accept, greedy_follows_target_argmax) {
    draft_tree t;
    const int a = t.add(5, -1), b = t.add(6, -1), c = t.add(7, a), d = t.add(8, b), e = t.add(9, d);
    (void)c, (void)e;
    // Target argmax: root -> 6, after node b -> 8, after node d -> 3 (draft said 9: rejected).
    std::vector<int32_t> am(t.size(), 0);
    am[size_t(b)] = 8, am[size_t(d)] = 3;
    const auto r = accept_greedy(t, 6, am);
    EXPECT_EQ(r.path, (std::vector<int32_t>{b, d}));
    EXPECT_EQ(r.next_token, 3);
    const auto none = accept_greedy(t, 4, am);
    EXPECT_TRUE(none.path.empty());
    EXPECT_EQ(none.next_token, 4);
}

TEST(spec_accept, tree_validation_names_the_problem) {
    draft_tree t;
    t.add(5, -1);
    t.add(6, 0);
    EXPECT_NO_THROW(t.validate(10, 64, false));
    EXPECT_THROW(t.validate(6, 64, false), error);  // token 6 outside a 6-token vocabulary
    EXPECT_THROW(t.validate(10, 1, false), error);  // too many nodes
    t.parents[1] = 1;
    EXPECT_THROW(t.validate(10, 64, false), error);  // parent not earlier
    t.parents[1] = 0;
    EXPECT_THROW(t.validate(10, 64, true), error);   // sampling needs q
    t.q_root = {{5, 1.f}};
    t.q[0] = {{6, 0.5f}, {7, 0.5f}};
    EXPECT_NO_THROW(t.validate(10, 64, true));
    t.q[0] = {{6, 0.5f}, {7, 0.4f}};
    EXPECT_THROW(t.validate(10, 64, true), error);   // does not sum to 1
}

// A toy two-step world over 6 tokens: target p(x1), p(x2 | x1); draft q(x1), q(x2 | x1), all different.
constexpr int V = 6;
std::vector<token_prob> dist(std::initializer_list<float> w) {
    std::vector<token_prob> d;
    float s = 0;
    for (float x : w) s += x;
    int i = 0;
    for (float x : w) {
        if (x > 0) d.push_back({i, x / s});
        ++i;
    }
    return d;
}
std::vector<token_prob> target_at(int x1) {
    return x1 % 2 ? dist({1, 2, 3, 1, 0, 1}) : dist({4, 1, 0, 2, 2, 1});
}
std::vector<token_prob> draft_at(int x1) { return x1 % 3 ? dist({2, 2, 2, 1, 1, 1}) : dist({1, 0, 4, 1, 3, 1}); }
const std::vector<token_prob> p_root = dist({1, 3, 2, 0.5f, 2, 1.5f});
const std::vector<token_prob> q_root = dist({3, 1, 1, 2, 0, 2});  // q misses token 4, which p has

int32_t draw(const std::vector<token_prob>& d, rng& r) {
    const float u = r.uniform();
    float c = 0;
    for (const auto& e : d)
        if (u < (c += e.p)) return e.token;
    return d.back().token;
}

// Builds a random tree: 3 root children i.i.d. from q_root, each with 2 children i.i.d. from q(. | x1).
draft_tree random_tree(rng& r) {
    draft_tree t;
    t.q_root = q_root;
    for (int i = 0; i < 3; ++i) {
        const int32_t n = t.add(draw(q_root, r), -1);
        t.q[size_t(n)] = draft_at(t.tokens[size_t(n)]);
    }
    for (int32_t n = 0; n < 3; ++n)
        for (int j = 0; j < 2; ++j) t.add(draw(t.q[size_t(n)], r), n);
    return t;
}

// The first two output tokens of one verification (the second comes from the target if the first was the
// correction token).
std::pair<int, int> two_tokens(const acceptance& a, const draft_tree& t, rng& r) {
    std::vector<int32_t> out;
    for (int32_t n : a.path) out.push_back(t.tokens[size_t(n)]);
    out.push_back(a.next_token);
    if (out.size() < 2) out.push_back(draw(target_at(out[0]), r));
    return {out[0], out[1]};
}

double chi_square(const std::map<std::pair<int, int>, int>& count, int n) {
    double chi2 = 0;
    for (const auto& e1 : p_root)
        for (const auto& e2 : target_at(e1.token)) {
            const double want = double(e1.p) * e2.p * n;
            const auto it = count.find({e1.token, e2.token});
            const double got = it == count.end() ? 0 : it->second;
            chi2 += (got - want) * (got - want) / want;
        }
    for (const auto& [k, c] : count) {  // mass outside the target's support
        bool inside = false;
        for (const auto& e1 : p_root)
            for (const auto& e2 : target_at(e1.token)) inside |= (e1.token == k.first && e2.token == k.second);
        if (!inside) chi2 += 1e9;
    }
    return chi2;
}

// The wrong rule: on rejection, draw the correction from p itself instead of the residual max(p - q, 0).
acceptance accept_wrong(const draft_tree& t, rng& r) {
    acceptance a;
    int32_t u = -1;
    std::vector<token_prob> p = p_root;
    for (;;) {
        int32_t acc = -1;
        for (int32_t k : t.children(u)) {
            const auto& q = u < 0 ? t.q_root : t.q[size_t(u)];
            double px = 0, qx = 0;
            for (const auto& e : p) px += e.token == t.tokens[size_t(k)] ? e.p : 0;
            for (const auto& e : q) qx += e.token == t.tokens[size_t(k)] ? e.p : 0;
            if (r.uniform() < std::min(1.0, px / qx)) {
                acc = k;
                break;
            }
        }
        if (acc < 0) break;
        a.path.push_back(acc);
        u = acc;
        p = target_at(t.tokens[size_t(u)]);
    }
    a.next_token = draw(p, r);
    return a;
}

TEST(spec_accept, sampling_over_a_tree_gives_the_target_distribution) {
    const uint64_t seed = test::test_seed();
    rng r(seed);
    const int n = 200000;
    std::map<std::pair<int, int>, int> good, wrong;
    for (int i = 0; i < n; ++i) {
        const draft_tree t = random_tree(r);
        std::vector<std::vector<token_prob>> p_at(t.size());
        for (size_t k = 0; k < t.size(); ++k) p_at[k] = target_at(t.tokens[k]);
        ++good[two_tokens(accept_sampling(t, p_root, p_at, r), t, r)];
        ++wrong[two_tokens(accept_wrong(t, r), t, r)];
    }
    // 6 first tokens x 5 possible second tokens = 30 cells, 29 degrees of freedom: p = 0.001 at 58.3.
    const double chi2 = chi_square(good, n), chi2_wrong = chi_square(wrong, n);
    EXPECT_LT(chi2, 58.3) << "seed " << seed;
    EXPECT_GT(chi2_wrong, 200.0) << "the negative control passed: the test cannot tell a wrong rule (seed " << seed
                                 << ")";
}

}  // namespace
}  // namespace tandem
