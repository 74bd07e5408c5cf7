// Repeated timing for benchmarks: warm-up runs excluded, then repeats until enough time or enough runs, and the
// min / median / max of the runs (the median is the headline: on a shared VM single runs jump, see MISSION.md).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace tandem::bench {

struct repeat_policy {
    int warmup = 1;            // untimed runs first (first-touch, caches, program builds, buffer growth)
    double min_seconds = 1.0;  // stop once the timed runs add up to this ...
    int max_runs = 10;         // ... or after this many timed runs, whichever comes first
    int min_runs = 3;          // but never fewer than this (a median needs a few); min_runs <= max_runs
};

struct timing {
    std::vector<double> seconds;  // every timed run, in order
    double min = 0, median = 0, max = 0;
};

// Summary of given run times (seconds non-empty).
timing summarize(std::vector<double> seconds);

// Times fn() (wall clock, steady_clock) under the policy.
timing measure(const std::function<void()>& fn, const repeat_policy& p);

// Adds --min-time, --runs and --warmup bound to p.
void add_repeat_options(CLI::App* cmd, repeat_policy& p);

// Seconds since an arbitrary epoch (steady clock).
double now_seconds();

}  // namespace tandem::bench
