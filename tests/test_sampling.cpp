// Sampling: each truncation rule, the repetition penalty, seeded determinism, and that draws follow the
// distribution the sampler reports (the property speculative sampling will rely on).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "engine/error.h"
#include "engine/sampling.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

sampling_params plain(float temp) {
    sampling_params p;
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.f;
    p.min_p = 0.f;
    p.repeat_penalty = 1.f;
    return p;
}

const std::vector<float> k_logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f};

TEST(sampling, greedy_is_first_argmax) {
    sampler s(plain(0.f));
    EXPECT_EQ(s.sample(k_logits, {}), 1);  // tokens 1 and 3 tie: the first wins
    EXPECT_EQ(argmax(k_logits), 1);
}

// argmax scans in independent lanes: ties across lanes and lane blocks, NaNs and every tail length must give the
// first maximum, as one strict compare from the front does.
TEST(sampling, argmax_is_the_first_maximum_of_a_plain_scan) {
    std::mt19937 gen(7);
    auto scan = [](const std::vector<float>& x) {
        int32_t best = 0;
        for (size_t i = 1; i < x.size(); ++i)
            if (x[i] > x[size_t(best)]) best = int32_t(i);
        return best;
    };
    for (size_t n : {1, 2, 15, 16, 17, 31, 32, 33, 100, 512, 1001}) {
        for (int rep = 0; rep < 20; ++rep) {
            std::vector<float> x(n);
            for (float& v : x) v = float(int(gen() % 9)) - 4.f;  // few distinct values: many ties
            if (rep % 4 == 1) x[gen() % n] = NAN;
            if (rep % 4 == 2) x[gen() % n] = -0.f;
            if (rep == 3) x[0] = NAN;
            EXPECT_EQ(argmax(x), scan(x)) << "n=" << n << " rep=" << rep;
        }
    }
}

TEST(sampling, distribution_is_softmax_at_temperature) {
    const auto p = plain(2.f);
    const auto d = sampler(p).distribution(k_logits, {});
    ASSERT_EQ(d.size(), k_logits.size());
    double z = 0;
    for (float l : k_logits) z += std::exp(l / 2.0);
    double sum = 0;
    for (const auto& e : d) {
        EXPECT_NEAR(e.p, std::exp(k_logits[size_t(e.token)] / 2.0) / z, 1e-6);
        sum += e.p;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    for (size_t i = 1; i < d.size(); ++i) EXPECT_GE(d[i - 1].p, d[i].p);
    EXPECT_EQ(d[0].token, 1);  // stable order among the tied pair
    EXPECT_EQ(d[1].token, 3);
}

TEST(sampling, top_k_top_p_min_p_truncate) {
    auto p = plain(1.f);
    p.top_k = 2;
    auto d = sampler(p).distribution(k_logits, {});
    ASSERT_EQ(d.size(), 2u);
    EXPECT_NEAR(d[0].p, 0.5, 1e-6);

    p = plain(1.f);
    p.top_p = 0.8f;  // 0.384 + 0.384 = 0.768 < 0.8, so the third token (p 0.141) is needed
    d = sampler(p).distribution(k_logits, {});
    EXPECT_EQ(d.size(), 3u);

    p = plain(1.f);
    p.min_p = 0.3f;  // keeps tokens with p >= 0.3 * p_max: logits 3, 3, 2 (ratio e^-1 = 0.37)
    d = sampler(p).distribution(k_logits, {});
    EXPECT_EQ(d.size(), 3u);
    double sum = 0;
    for (const auto& e : d) sum += e.p;
    EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(sampling, repetition_penalty_discourages_recent_tokens) {
    auto p = plain(0.f);
    p.repeat_penalty = 2.f;
    const std::vector<int32_t> history = {1, 1, 1};
    EXPECT_EQ(sampler(p).sample(k_logits, history), 3);  // token 1's logit 3 -> 1.5
    p.repeat_last_n = 0;
    EXPECT_EQ(sampler(p).sample(k_logits, history), 1);
}

TEST(sampling, same_seed_same_tokens) {
    auto p = plain(1.f);
    p.seed = 42;
    sampler a(p), b(p);
    std::vector<int32_t> ta, tb;
    for (int i = 0; i < 200; ++i) ta.push_back(a.sample(k_logits, {})), tb.push_back(b.sample(k_logits, {}));
    EXPECT_EQ(ta, tb);
    a.reset();
    for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(k_logits, {}), ta[size_t(i)]);
    p.seed = 43;
    sampler c(p);
    int same = 0;
    for (int i = 0; i < 200; ++i) same += c.sample(k_logits, {}) == ta[size_t(i)];
    EXPECT_LT(same, 150);
}

TEST(sampling, draws_follow_the_reported_distribution) {
    auto p = plain(0.7f);
    p.top_k = 4;
    p.seed = test::test_seed();
    sampler s(p);
    const auto d = s.distribution(k_logits, {});
    const int n = 200000;
    std::map<int32_t, int> count;
    for (int i = 0; i < n; ++i) ++count[s.draw(d)];
    double chi2 = 0;
    for (const auto& e : d) {
        const double want = e.p * n;
        chi2 += (count[e.token] - want) * (count[e.token] - want) / want;
    }
    EXPECT_EQ(count.size(), d.size());
    EXPECT_LT(chi2, 16.3) << "seed " << p.seed;  // chi-square, 3 degrees of freedom, p = 0.001
}

TEST(sampling, rng_uniform_in_range) {
    rng r(7);
    double sum = 0;
    for (int i = 0; i < 100000; ++i) {
        const float u = r.uniform();
        ASSERT_GE(u, 0.f);
        ASSERT_LT(u, 1.f);
        sum += u;
    }
    EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

TEST(sampling, bad_parameters_are_refused) {
    auto p = plain(-1.f);
    EXPECT_THROW(sampler{p}, error);
    p = plain(1.f);
    p.top_p = 0.f;
    EXPECT_THROW(sampler{p}, error);
    p = plain(1.f);
    p.min_p = 1.f;
    EXPECT_THROW(sampler{p}, error);
}

}  // namespace
}  // namespace tandem
