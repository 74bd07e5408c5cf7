// The CPU backend's thread pool. Workers spin briefly after a job (ops of one forward pass arrive back to
// back, and a futex wake costs more than a small op) and then sleep on a condition variable.
#include "backends/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tandem {

namespace {

// Short enough not to steal a core from OpenBLAS's own threads for long, long enough to bridge the gap
// between consecutive ops of a forward pass, including the calling thread's serial stretches (a tile's
// activation quantization, the bookkeeping between passes): at 50 us the worker started a 9-row pass's q/k/v
// projections 10-12 us late on average, against 2-3 us for its other matmuls (see cpu.cpp's grain for the runs).
constexpr auto spin_time = std::chrono::microseconds(150);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
}

// Spins until done() or spin_time has passed; true when done() became true.
template <typename F>
bool spin_until(F&& done) {
    const auto deadline = std::chrono::steady_clock::now() + spin_time;
    for (int i = 0;; ++i) {
        if (done()) return true;
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return done();
    }
}

}  // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve(size_t(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

thread_pool::~thread_pool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
}

void thread_pool::run(int64_t n_items, int64_t min_chunk, void* ctx, trampoline fn) {
    if (n_items <= 0) return;
    min_chunk = std::max<int64_t>(1, min_chunk);
    if (n_threads_ == 1 || n_items <= min_chunk) {
        fn(ctx, 0, n_items);
        return;
    }
    std::lock_guard<std::mutex> call(call_mu_);
    // About four chunks per thread: balances a thread that was descheduled without much claiming traffic.
    const int64_t per = int64_t(n_threads_) * 4;
    const int64_t chunk = std::max(min_chunk, (n_items + per - 1) / per);
    job j{0, fn, ctx, n_items, chunk, (n_items + chunk - 1) / chunk};
    {
        std::lock_guard<std::mutex> lk(mu_);
        j.gen = current_.gen + 1;
        current_ = j;
        error_ = nullptr;
        failed_.store(false, std::memory_order_relaxed);
        chunks_done_.store(0, std::memory_order_relaxed);
        ticket_.store(uint64_t(j.gen) << 32, std::memory_order_release);
    }
    // Published after mu_ is released: a spinning worker that sees the new generation takes mu_ at once. (It
    // used to be published under the lock; the worker then blocked on mu_ in the kernel and started its chunks
    // ~13 us late on average, measured over a 9-row verification pass of the 1.1B shape on the Intel VM.)
    // seq_cst with the load of sleeping_workers_: a worker that counted itself asleep before this store is
    // notified, one that counts itself later sees the new generation in its wait predicate.
    published_.store(j.gen, std::memory_order_seq_cst);
    if (sleeping_workers_.load(std::memory_order_seq_cst) > 0) {
        { std::lock_guard<std::mutex> lk(mu_); }  // a worker between its count and its wait is now waiting
        wake_.notify_all();
    }
    run_chunks(j);
    auto all_done = [&] { return chunks_done_.load(std::memory_order_seq_cst) == j.n_chunks; };
    if (!spin_until(all_done)) {
        std::unique_lock<std::mutex> lk(mu_);
        caller_sleeping_.store(true, std::memory_order_seq_cst);
        done_.wait(lk, all_done);
        caller_sleeping_.store(false, std::memory_order_relaxed);
    }
    if (failed_.load(std::memory_order_relaxed)) {  // ordered by the acquire of the last chunk's count
        std::exception_ptr err;
        {
            std::lock_guard<std::mutex> lk(mu_);
            err = std::exchange(error_, nullptr);
        }
        std::rethrow_exception(err);
    }
}

void thread_pool::run_chunks(const job& j) {
    for (;;) {
        uint64_t t = ticket_.load(std::memory_order_acquire);
        int64_t idx;
        for (;;) {
            if (uint32_t(t >> 32) != j.gen) return;
            idx = int64_t(uint32_t(t));
            if (idx >= j.n_chunks) return;
            if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) break;
        }
        const int64_t begin = idx * j.chunk, end = std::min(j.n_items, begin + j.chunk);
        try {
            j.fn(j.ctx, begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lk(mu_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
        // seq_cst with the caller's store of caller_sleeping_: the last chunk notifies only a caller that may
        // be asleep, and takes no lock otherwise (the caller spinning on the count would block on it).
        if (chunks_done_.fetch_add(1, std::memory_order_seq_cst) + 1 == j.n_chunks &&
            caller_sleeping_.load(std::memory_order_seq_cst)) {
            std::lock_guard<std::mutex> lk(mu_);
            done_.notify_all();
        }
    }
}

void thread_pool::worker_loop() {
    uint32_t seen = 0;
    for (;;) {
        const bool ready = spin_until([&] {
            return published_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire);
        });
        job j;
        {
            std::unique_lock<std::mutex> lk(mu_);
            if (!ready) {
                sleeping_workers_.fetch_add(1, std::memory_order_seq_cst);
                wake_.wait(lk, [&] {
                    return stop_.load(std::memory_order_seq_cst) ||
                           published_.load(std::memory_order_seq_cst) != seen;
                });
                sleeping_workers_.fetch_sub(1, std::memory_order_relaxed);
            }
            if (stop_.load(std::memory_order_relaxed)) return;
            // The newest job, which may already be newer than the generation that woke this worker.
            j = current_;
        }
        seen = j.gen;
        run_chunks(j);
    }
}

}  // namespace tandem
