// Perplexity over windows (see perplexity.h for the protocol). Log-softmax is computed in double.
#include "engine/perplexity.h"

#include <chrono>
#include <cmath>

#include "engine/error.h"
#include "engine/session.h"

namespace tandem {

double perplexity_result::perplexity() const { return std::exp(mean_nll()); }

perplexity_result perplexity(const model& m, std::string_view text, int32_t window,
                             const std::function<void(int64_t, int64_t)>& progress) {
    if (window < 1) throw error(TANDEM_ERR_INVALID_ARGUMENT, "perplexity window must be at least 1 token");
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = m.tokenizer().encode(text, false);
    sampling_params greedy;
    greedy.temperature = 0;
    session s(m, greedy, window + 1, window + 1);
    perplexity_result r;
    const int64_t n = int64_t(ids.size());
    const int64_t total = (n + window - 1) / window;
    const size_t V = size_t(m.hparams().n_vocab);
    std::vector<int32_t> in;
    std::vector<float> logits;
    for (int64_t w0 = 0; w0 < n; w0 += window) {
        const int64_t len = std::min<int64_t>(window, n - w0);
        in.assign(1, m.tokenizer().bos());
        in.insert(in.end(), ids.begin() + w0, ids.begin() + w0 + len);
        s.reset();
        s.feed(in, &logits);
        for (int64_t i = 0; i < len; ++i) {
            const float* row = logits.data() + size_t(i) * V;  // row i predicts in[i + 1]
            double best = row[0];
            for (size_t k = 1; k < V; ++k) best = std::max(best, double(row[k]));
            double z = 0;
            for (size_t k = 0; k < V; ++k) z += std::exp(double(row[k]) - best);
            r.nll_sum += -(double(row[size_t(in[size_t(i) + 1])]) - best - std::log(z));
        }
        r.n_tokens += len;
        ++r.n_windows;
        if (progress) progress(r.n_windows, total);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

}  // namespace tandem
