// The cloud's batching scheduler: verify requests from all sessions wait in one queue; a single worker
// thread takes as many as fit a token budget, waiting at most `max_wait` for more to arrive (or less, once
// every session with an open stream has a request queued), and verifies them in ONE target pass.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/batch_verify.h"

namespace tandem::collab {

struct scheduler_config {
    std::chrono::microseconds max_wait{2000};  // latency budget to fill a batch
    int64_t token_budget = 2048;               // rows per target pass (one oversized job still runs alone)
    int32_t max_batch_sessions = 64;
};

struct scheduler_stats {
    uint64_t passes = 0;
    uint64_t multi_session_passes = 0;
    uint64_t max_batch_sessions = 0;
    uint64_t batch_sessions_sum = 0;  // mean = sum / passes
    uint64_t tokens_verified = 0;     // draft nodes checked
    uint64_t tokens_accepted = 0;
    uint64_t tokens_committed = 0;
    uint64_t evictions = 0;
    uint64_t rows = 0;         // rows through the target in all passes (pending tokens, tree nodes, catch-up)
    double pass_seconds = 0;   // time inside target passes
};

class scheduler {
   public:
    scheduler(batch_verifier& bv, const scheduler_config& cfg);
    ~scheduler();  // finishes every queued job, then stops
    scheduler(const scheduler&) = delete;
    scheduler& operator=(const scheduler&) = delete;

    // Queues the job and blocks until it has been verified (job.done) or has failed (job.error). Returns the
    // number of sessions in the pass that verified it.
    uint32_t verify(verify_job& job);
    // Runs f with the verifier to itself (between passes): session start, append, release.
    void exclusive(const std::function<void(batch_verifier&)>& f);
    // Sessions with an open verify stream: once that many requests are queued, a pass starts at once.
    void stream_opened();
    void stream_closed();
    scheduler_stats stats() const;

   private:
    struct entry {
        verify_job* job = nullptr;
        bool finished = false;
        uint32_t batch = 0;
        std::condition_variable done;  // its own: a pass wakes the callers it verified, not every caller waiting
    };
    void loop();
    // With mu_ held: every open stream has a request queued, or the queue fills a pass (sessions or rows).
    bool batch_full() const;

    batch_verifier& bv_;
    scheduler_config cfg_;
    mutable std::mutex mu_;      // queue, stats, streams
    std::mutex bv_mu_;           // the verifier
    std::condition_variable queued_;
    std::deque<entry*> queue_;
    int64_t streams_ = 0;
    bool stop_ = false;
    bool in_pass_ = false;  // the worker is in a pass (not waiting; the sequences may change under it)
    scheduler_stats stats_;
    std::thread worker_;
};

}  // namespace tandem::collab
