// The batching scheduler; see scheduler.h.
#include "collab/scheduler.h"

#include <algorithm>

namespace tandem::collab {

scheduler::scheduler(batch_verifier& bv, const scheduler_config& cfg) : bv_(bv), cfg_(cfg) {
    worker_ = std::thread([this] { loop(); });
}

scheduler::~scheduler() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    queued_.notify_all();
    worker_.join();
}

uint32_t scheduler::verify(verify_job& job) {
    entry e;
    e.job = &job;
    std::unique_lock lock(mu_);
    queue_.push_back(&e);
    // The worker waits for a first request, then for a full batch (or its deadline): only those wake it, not every
    // arrival (64 edges would wake it 64 times per pass to find the batch still filling). During a pass it is not
    // waiting (it looks at the queue when the pass is done), and the pass may evict the queued sequences, which
    // batch_full() reads.
    if (!in_pass_ && (queue_.size() == 1 || batch_full())) queued_.notify_all();
    e.done.wait(lock, [&] { return e.finished; });
    return e.batch;
}

bool scheduler::batch_full() const {
    if (stop_ || int64_t(queue_.size()) >= std::max<int64_t>(streams_, 1)) return true;
    if (int64_t(queue_.size()) >= cfg_.max_batch_sessions) return true;
    int64_t rows = 0;
    for (const entry* e : queue_) rows += bv_.rows_for(*e->job->seq, e->job->tree->size());
    return rows >= cfg_.token_budget;
}

void scheduler::exclusive(const std::function<void(batch_verifier&)>& f) {
    std::lock_guard lock(bv_mu_);
    f(bv_);
}

void scheduler::stream_opened() {
    std::lock_guard lock(mu_);
    ++streams_;
}

void scheduler::stream_closed() {
    {
        std::lock_guard lock(mu_);
        --streams_;
    }
    queued_.notify_all();
}

scheduler_stats scheduler::stats() const {
    std::lock_guard lock(mu_);
    return stats_;
}

void scheduler::loop() {
    std::unique_lock lock(mu_);
    for (;;) {
        queued_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        // Fill the batch: until every open stream has a request queued, the budget is full, or max_wait.
        const auto deadline = std::chrono::steady_clock::now() + cfg_.max_wait;
        queued_.wait_until(lock, deadline, [&] { return batch_full(); });
        // Take jobs in arrival order within the budget (at least one).
        std::vector<entry*> batch;
        int64_t rows = 0;
        while (!queue_.empty() && int64_t(batch.size()) < cfg_.max_batch_sessions) {
            entry* e = queue_.front();
            const int64_t r = bv_.rows_for(*e->job->seq, e->job->tree->size());
            if (!batch.empty() && rows + r > cfg_.token_budget) break;
            batch.push_back(e);
            rows += r;
            queue_.pop_front();
        }
        in_pass_ = true;
        lock.unlock();
        std::vector<verify_job> jobs(batch.size());
        for (size_t i = 0; i < batch.size(); ++i) jobs[i] = std::move(*batch[i]->job);
        double secs;
        {
            std::lock_guard bv_lock(bv_mu_);
            const auto t0 = std::chrono::steady_clock::now();
            try {
                bv_.run(jobs);  // per-job errors (and a failed device) come back in job.error
            } catch (...) {     // anything else: fail this batch's requests, keep serving
                for (auto& j : jobs) j.error = std::current_exception(), j.done = true;
            }
            secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        }
        lock.lock();
        in_pass_ = false;
        stats_.pass_seconds += secs;
        stats_.rows = bv_.stats().rows;
        uint32_t verified = 0;
        for (const auto& j : jobs) verified += j.done && !j.error;
        if (verified) {
            stats_.passes += 1;
            stats_.multi_session_passes += verified > 1;
            stats_.max_batch_sessions = std::max<uint64_t>(stats_.max_batch_sessions, verified);
            stats_.batch_sessions_sum += verified;
        }
        stats_.evictions = bv_.stats().evictions;
        for (size_t i = batch.size(); i-- > 0;) {
            verify_job& j = jobs[i];
            if (!j.done) {  // no KV region was free: first in line for the next pass
                *batch[i]->job = std::move(j);
                queue_.push_front(batch[i]);
                continue;
            }
            if (!j.error) {
                stats_.tokens_verified += j.tree->size();
                stats_.tokens_accepted += j.result.path.size();
                stats_.tokens_committed += j.result.path.size() + 1;
            }
            *batch[i]->job = std::move(j);
            batch[i]->batch = verified;
            batch[i]->finished = true;
            // Under mu_: the caller cannot return (and destroy the entry) before we unlock.
            batch[i]->done.notify_one();
        }
    }
}

}  // namespace tandem::collab
