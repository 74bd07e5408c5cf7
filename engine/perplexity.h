// The perplexity protocol, documented once and used by `tandem perplexity` and the tests:
// tokenize the text (dummy-prefix space once at the start, no BOS), cut the ids into consecutive windows of
// `window` tokens (the last may be shorter), evaluate each window from an empty cache as BOS + its tokens,
// and score every token of every window: -log p(token | BOS, earlier tokens of the window).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "engine/model.h"

namespace tandem {

struct perplexity_result {
    int64_t n_tokens = 0;  // scored tokens
    int64_t n_windows = 0;
    double nll_sum = 0;    // nats
    double mean_nll() const { return n_tokens ? nll_sum / double(n_tokens) : 0; }
    double perplexity() const;
    double seconds = 0;
};

// progress(done_windows, total_windows) is called after each window when given.
perplexity_result perplexity(const model& m, std::string_view text, int32_t window = 255,
                             const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tandem
