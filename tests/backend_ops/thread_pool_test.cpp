// The cpu backend's thread pool: every item exactly once, chunk sizes honoured, exceptions delivered to
// the caller, concurrent callers serialised, and clean destruction with idle or sleeping workers.
#include "backends/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tandem {

TEST(thread_pool, covers_every_item_once) {
    for (int threads : {1, 2, 3, 8}) {
        thread_pool pool(threads);
        for (int64_t n : {0, 1, 2, 7, 100, 1000, 100003}) {
            for (int64_t min_chunk : {1, 3, 64, 1000000}) {
                std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
                std::atomic<bool> short_chunk{false};
                pool.parallel_for(n, min_chunk, [&](int64_t b, int64_t e) {
                    if (e - b < min_chunk && e != n) short_chunk = true;
                    for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
                });
                for (int64_t i = 0; i < n; ++i)
                    ASSERT_EQ(hits[size_t(i)].load(), 1) << "threads " << threads << " n " << n;
                EXPECT_FALSE(short_chunk) << "a chunk shorter than " << min_chunk;
            }
        }
    }
}

TEST(thread_pool, uses_several_threads) {
    thread_pool pool(2);
    std::atomic<int> inside{0}, most{0};
    pool.parallel_for(8, 1, [&](int64_t, int64_t) {
        const int now = ++inside;
        int prev = most.load();
        while (now > prev && !most.compare_exchange_weak(prev, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        --inside;
    });
    EXPECT_EQ(most.load(), 2);
}

TEST(thread_pool, rethrows_the_first_exception) {
    thread_pool pool(3);
    std::atomic<int64_t> done{0};
    EXPECT_THROW(pool.parallel_for(100, 1,
                                   [&](int64_t b, int64_t e) {
                                       if (b == 0) throw std::runtime_error("boom");
                                       done += e - b;
                                   }),
                 std::runtime_error);
    // The pool still works afterwards.
    std::atomic<int64_t> sum{0};
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
}

TEST(thread_pool, many_small_calls_and_concurrent_callers) {
    thread_pool pool(2);
    std::atomic<int64_t> total{0};
    auto caller = [&] {
        for (int rep = 0; rep < 2000; ++rep) pool.parallel_for(4, 1, [&](int64_t b, int64_t e) { total += e - b; });
    };
    std::thread other(caller);
    caller();
    other.join();
    EXPECT_EQ(total.load(), 2 * 2000 * 4);
}

// The hand-offs without a lock: workers that went to sleep between calls must be woken by the next publish, and a
// caller that went to sleep waiting must be woken by the last chunk. A lost wake-up of a worker would not hang (the
// caller claims every chunk itself), so the caller's chunk waits until another thread has run one, for up to 5 s.
TEST(thread_pool, wakes_sleeping_workers_and_a_sleeping_caller) {
    for (int threads : {2, 4}) {
        thread_pool pool(threads);
        for (int rep = 0; rep < 40; ++rep) {
            // Gaps of 0 us to 1 ms between calls: around the workers' 50 us spin, so some calls find them asleep.
            std::this_thread::sleep_for(std::chrono::microseconds((rep % 6) * 200));
            std::atomic<int64_t> sum{0};
            std::atomic<bool> other_ran{false}, waited_out{false};
            const auto caller = std::this_thread::get_id();
            pool.parallel_for(int64_t(threads), 1, [&](int64_t b, int64_t e) {
                if (std::this_thread::get_id() == caller) {
                    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
                    while (!other_ran.load() && !waited_out.load()) {
                        if (std::chrono::steady_clock::now() > deadline) waited_out = true;
                        std::this_thread::yield();
                    }
                } else {
                    other_ran = true;
                    // Longer than the caller's spin: the caller is asleep when this chunk ends.
                    if (rep % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
                }
                for (int64_t i = b; i < e; ++i) sum += i + 1;
            });
            ASSERT_FALSE(waited_out.load()) << "no worker ran a chunk of call " << rep << ", " << threads << " threads";
            ASSERT_EQ(sum.load(), int64_t(threads) * (threads + 1) / 2) << "rep " << rep;
        }
    }
}

TEST(thread_pool, destroys_cleanly) {
    for (int rep = 0; rep < 20; ++rep) {
        thread_pool pool(3);
        if (rep % 2) pool.parallel_for(10, 1, [](int64_t, int64_t) {});
        if (rep % 4 == 3) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // workers asleep
    }
}

}  // namespace tandem
