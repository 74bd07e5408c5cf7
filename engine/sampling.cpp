// Sampling. The order of the steps is fixed so that the same seed and logits give the same token on
// every backend: penalty -> (greedy | temperature -> softmax -> top-k -> top-p -> min-p -> renormalise).
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "engine/error.h"

namespace tandem {

namespace {
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

rng::rng(uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
}

uint64_t rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

float rng::uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }

int32_t argmax(std::span<const float> logits) {
    TANDEM_ASSERT(!logits.empty());
    // The largest value in 16 independent running maxima (one is a chain of dependent compares, the cost of a
    // verification pass's argmax over every node's logits; this loop vectorises), then the first index holding it:
    // the first maximum, as a single strict compare finds it. NaNs never win, unless logits[0] is one (then 0).
    const float* x = logits.data();
    const size_t n = logits.size();
    if (std::isnan(x[0])) return 0;
    constexpr size_t lanes = 16;
    float lane[lanes];
    std::fill(lane, lane + lanes, x[0]);
    size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        for (size_t j = 0; j < lanes; ++j) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    float best = x[0];
    for (float v : lane) best = v > best ? v : best;
    for (; i < n; ++i) best = x[i] > best ? x[i] : best;
    size_t at = 0;
    while (x[at] != best) ++at;
    return int32_t(at);
}

sampler::sampler(const sampling_params& p) : p_(p), rng_(p.seed) {
    if (!(p.temperature >= 0.f) || p.top_k < 0 || !(p.top_p > 0.f && p.top_p <= 1.f) ||
        !(p.min_p >= 0.f && p.min_p < 1.f) || !(p.repeat_penalty > 0.f) || p.repeat_last_n < 0) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "sampling parameters out of range (temperature >= 0, top_k >= 0, 0 < top_p <= 1, "
                    "0 <= min_p < 1, repeat_penalty > 0, repeat_last_n >= 0)");
    }
}

void sampler::reset() { rng_ = tandem::rng(p_.seed); }

std::vector<token_prob> sampler::distribution(std::span<const float> logits, std::span<const int32_t> history) const {
    TANDEM_ASSERT(!logits.empty());
    std::vector<float> l(logits.begin(), logits.end());
    if (p_.repeat_penalty != 1.f && p_.repeat_last_n > 0) {
        // Penalise each distinct recent token once: shrink positive logits, grow negative ones.
        std::unordered_set<int32_t> seen;
        const size_t n = std::min(history.size(), size_t(p_.repeat_last_n));
        for (size_t i = history.size() - n; i < history.size(); ++i) {
            const int32_t t = history[i];
            if (t < 0 || size_t(t) >= l.size() || !seen.insert(t).second) continue;
            l[size_t(t)] = l[size_t(t)] > 0 ? l[size_t(t)] / p_.repeat_penalty : l[size_t(t)] * p_.repeat_penalty;
        }
    }
    if (p_.temperature == 0.f) return {{argmax(l), 1.f}};

    std::vector<token_prob> d(l.size());
    float best = -INFINITY;
    for (float x : l) best = std::max(best, x);
    double sum = 0;
    for (size_t i = 0; i < l.size(); ++i) {
        d[i] = {int32_t(i), std::exp((l[i] - best) / p_.temperature)};
        sum += d[i].p;
    }
    // Descending probability, equal probabilities in token order: a strict total order, so the result never
    // depends on sort internals. Only the top_k first entries are ever used, so only they are sorted (a full
    // stable sort of a 32,000-token vocabulary took ~4% of a TinyLlama-shape decode step).
    const auto before = [](const token_prob& a, const token_prob& b) {
        return a.p > b.p || (a.p == b.p && a.token < b.token);
    };
    const size_t head = p_.top_k > 0 ? std::min(d.size(), size_t(p_.top_k)) : d.size();
    std::partial_sort(d.begin(), d.begin() + std::ptrdiff_t(head), d.end(), before);
    d.resize(head);
    for (auto& e : d) e.p = float(e.p / sum);
    size_t keep = head;
    if (p_.top_p < 1.f) {
        double cum = 0;
        for (size_t i = 0; i < keep; ++i) {
            cum += d[i].p;
            if (cum >= p_.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (p_.min_p > 0.f) {
        const float floor = d[0].p * p_.min_p;
        size_t i = 1;
        while (i < keep && d[i].p >= floor) ++i;
        keep = i;
    }
    d.resize(std::max<size_t>(keep, 1));
    double kept = 0;
    for (const auto& e : d) kept += e.p;
    for (auto& e : d) e.p = float(e.p / kept);
    return d;
}

int32_t sampler::draw(std::span<const token_prob> dist) {
    TANDEM_ASSERT(!dist.empty());
    if (dist.size() == 1) return dist[0].token;
    const float u = rng_.uniform();
    float cum = 0.f;
    for (const auto& e : dist) {
        cum += e.p;
        if (u < cum) return e.token;
    }
    return dist.back().token;  // u landed in the rounding gap at the top
}

int32_t sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
    const auto d = distribution(logits, history);
    return draw(d);
}

}  // namespace tandem
