// This machine's limits, measured in the run that uses them (on a shared VM they move from second to second):
// memory bandwidth (read / copy / triad over arrays far larger than the caches) and peak FMA throughput
// (register-resident loops), on a team of threads; plus a description of the machine for the report.
#pragma once

#include <barrier>
#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/timing.h"

namespace tandem::bench {

// CPU model, hardware threads, SIMD extensions, OPENBLAS_CORETYPE and the load average now.
nlohmann::json machine_info();
// The 1, 5 and 15 minute load averages ([] where unavailable).
nlohmann::json load_average();
int hardware_threads();

// n threads (the caller is thread 0) that run one function together; started once so that measurements
// do not include thread creation. pin: thread i stays on the i-th CPU of the process's affinity mask (as
// likwid-bench pins its threads), so a thread's part of an array never migrates between cores mid-run; the caller's
// own mask is restored when the team ends.
class thread_team {
 public:
    explicit thread_team(int n, bool pin = false);
    ~thread_team();
    thread_team(const thread_team&) = delete;
    thread_team& operator=(const thread_team&) = delete;
    int size() const { return n_; }
    // Runs fn(i) on thread i for i in [0, size()) and returns when every call has returned. fn must not throw.
    void run(const std::function<void(int)>& fn);

 private:
    int n_;
    std::barrier<> start_, done_;
    const std::function<void(int)>* fn_ = nullptr;
    bool stop_ = false;
    std::vector<std::thread> workers_;
    std::vector<int> caller_cpus_;  // the caller's affinity before pinning (empty: not pinned)
};

enum class mem_kernel {
    read,   // sum of the array
    copy,   // b = a over two halves of the array
    triad,  // a = b + s * c over three thirds of the array
};
const char* mem_kernel_name(mem_kernel k);

// One implementation of a bandwidth kernel: vector width, unroll (independent vectors per loop iteration) and, for
// copy and triad, cached or non-temporal (cache-bypassing) stores. Which one is fastest depends on the CPU, so
// `limits` times them all and reports the best, as STREAM-style tools do.
struct mem_variant {
    mem_kernel kernel = mem_kernel::read;
    int bits = 512;            // 128, 256 or 512
    int unroll = 4;            // 2, 4 or 8
    bool nontemporal = false;  // copy / triad only
    std::string name() const;  // e.g. "triad_512x4_nt"
};
// Every variant of the kernel this build runs (widths up to the build's -march).
std::vector<mem_variant> mem_variants(mem_kernel k);
// The widest vector, unroll 4, cached stores: the fallback when a build has a single width.
mem_variant default_variant(mem_kernel k);

// One array of `bytes` (rounded down to whole 4 KiB pages) for the bandwidth kernels; filled (first touch) by
// the team that will read it, each thread its own contiguous part. huge_pages: ask for transparent huge pages
// (fewer TLB misses), else refuse them (what a model mmapped from its file gets).
class bandwidth_array {
 public:
    bandwidth_array(size_t bytes, thread_team& team, bool huge_pages = true);
    ~bandwidth_array();
    bandwidth_array(const bandwidth_array&) = delete;
    bandwidth_array& operator=(const bandwidth_array&) = delete;
    size_t bytes() const { return bytes_; }
    float* data() const { return data_; }

 private:
    float* data_ = nullptr;
    size_t bytes_ = 0;
};

// Bytes one run of the kernel moves, STREAM's and likwid-bench's convention: every element read or written once.
// read: bytes; copy: 2 halves; triad: 3 thirds. The write-allocate read that a cached store missing the cache
// makes (the destination line is read before it is written) is NOT counted, whatever the variant: a cached copy
// really moves 3 halves and a cached triad 4 thirds, which is why non-temporal stores score higher on them.
double mem_kernel_bytes(mem_kernel k, const bandwidth_array& a);
// Runs the kernel on the first `threads` threads of the team (each on an equal contiguous part); times whole runs
// under the policy. GB/s = mem_kernel_bytes / seconds. By kernel: every vector width (unroll 4, cached stores)
// round robin, the timing of the best median returned (the limit the other subcommands divide by); by variant:
// that one.
timing measure_bandwidth(mem_kernel k, bandwidth_array& a, thread_team& team, int threads, const repeat_policy& p);
timing measure_bandwidth(const mem_variant& v, bandwidth_array& a, thread_team& team, int threads,
                         const repeat_policy& p);
// Times several variants round robin (one run of each per round, so a drifting machine hits them alike): warm-up
// rounds, then rounds until min_runs and the runs of all variants add up to min_seconds, or max_runs rounds.
// One timing per variant, in order.
std::vector<timing> measure_bandwidth_variants(const std::vector<mem_variant>& vs, bandwidth_array& a,
                                               thread_team& team, int threads, const repeat_policy& p);

enum class fma_isa { avx2, avx512 };
const char* fma_isa_name(fma_isa isa);
// True when this CPU runs the ISA's FMA loop.
bool fma_available(fma_isa isa);
// Runs the register-resident FMA loop (12 independent vector accumulators, so a 4-cycle FMA on two pipes stays
// busy) on `threads` threads of the team; returns the timing and sets *flops to the floating-point operations
// of one run (an FMA counts 2 per lane). Precondition: fma_available(isa).
timing measure_fma(fma_isa isa, thread_team& team, int threads, const repeat_policy& p, double* flops);

}  // namespace tandem::bench
