// Repeated timing with warm-up, see timing.h.
#include "bench/timing.h"

#include <algorithm>
#include <chrono>

namespace tandem::bench {

double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

timing summarize(std::vector<double> seconds) {
    timing t;
    t.seconds = seconds;
    std::sort(seconds.begin(), seconds.end());
    const size_t n = seconds.size();
    if (n == 0) return t;
    t.min = seconds.front();
    t.max = seconds.back();
    t.median = n % 2 ? seconds[n / 2] : 0.5 * (seconds[n / 2 - 1] + seconds[n / 2]);
    return t;
}

timing measure(const std::function<void()>& fn, const repeat_policy& p) {
    for (int i = 0; i < p.warmup; ++i) fn();
    std::vector<double> runs;
    double total = 0;
    const int max_runs = std::max(1, p.max_runs), min_runs = std::clamp(p.min_runs, 1, max_runs);
    while (int(runs.size()) < max_runs && (int(runs.size()) < min_runs || total < p.min_seconds)) {
        const double t0 = now_seconds();
        fn();
        runs.push_back(now_seconds() - t0);
        total += runs.back();
    }
    return summarize(std::move(runs));
}

void add_repeat_options(CLI::App* cmd, repeat_policy& p) {
    cmd->add_option("--min-time", p.min_seconds, "Repeat each measurement until its runs add up to this many seconds")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--runs", p.max_runs, "... or until this many runs (at least 3 unless this is smaller)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--warmup", p.warmup, "Untimed runs before each measurement")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
}

}  // namespace tandem::bench
