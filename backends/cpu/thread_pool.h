// A fixed pool of worker threads for the CPU backend's loops. parallel_for() splits [0, n) into chunks
// that the workers and the calling thread claim from a shared counter, and returns when every chunk is
// done. Workers are started once and live until the pool is destroyed: no thread creation per call.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace tandem {

class thread_pool {
   public:
    // n_threads counts the calling thread, so n_threads - 1 workers are started; values < 1 mean 1.
    explicit thread_pool(int n_threads);
    // Stops and joins the workers. Must not run concurrently with parallel_for.
    ~thread_pool();
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    int size() const { return n_threads_; }

    // Calls fn(begin, end) on disjoint ranges that cover [0, n_items), each at least min_chunk items long
    // (the last may be shorter), on up to size() threads including the caller, and blocks until all calls
    // have returned. The first exception thrown by fn is rethrown here after every chunk has finished.
    // fn must not call parallel_for on the same pool; calls from different threads are serialised.
    template <typename F>
    void parallel_for(int64_t n_items, int64_t min_chunk, F&& fn) {
        using fn_t = std::remove_reference_t<F>;
        run(n_items, min_chunk, const_cast<void*>(static_cast<const void*>(&fn)),
            [](void* ctx, int64_t begin, int64_t end) { (*static_cast<fn_t*>(ctx))(begin, end); });
    }

   private:
    using trampoline = void (*)(void*, int64_t, int64_t);

    struct job {
        uint32_t gen = 0;
        trampoline fn = nullptr;
        void* ctx = nullptr;
        int64_t n_items = 0, chunk = 1, n_chunks = 0;
    };

    void run(int64_t n_items, int64_t min_chunk, void* ctx, trampoline fn);
    void worker_loop();
    // Claims and runs chunks of job j until none is left or a newer job was published.
    void run_chunks(const job& j);

    int n_threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex call_mu_;  // one parallel_for at a time

    // The current job, written under mu_ before it is published; workers copy it under mu_. The hand-off
    // itself takes no lock that the other side may hold: a contended std::mutex puts the thread to sleep in
    // the kernel, and waking it again cost ~10 us per op on a KVM guest (see run()).
    std::mutex mu_;
    std::condition_variable wake_;  // sleeping workers wait for a new generation
    std::condition_variable done_;  // a sleeping caller waits for the last chunk
    job current_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};            // error_ is set (read by the caller without the lock)
    std::atomic<int> sleeping_workers_{0};       // workers in wake_.wait: a publish must notify
    std::atomic<bool> caller_sleeping_{false};   // the caller is in done_.wait: the last chunk must notify

    // (generation << 32) | next chunk index: a claim succeeds only for the job it was made for, so a
    // worker that wakes late can never run a chunk of a job whose caller has already returned.
    std::atomic<uint64_t> ticket_{0};
    std::atomic<int64_t> chunks_done_{0};
    std::atomic<uint32_t> published_{0};  // the newest job's generation, stored after current_ (workers spin on it)
    std::atomic<bool> stop_{false};
};

}  // namespace tandem
