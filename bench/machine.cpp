// The thread team, the FMA-peak kernels and the machine description, see machine.h (the bandwidth kernels are in
// machine_kernels.cpp).
#include "bench/machine.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "engine/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TANDEM_BENCH_X86 1
#endif

namespace tandem::bench {

namespace {

// Keeps a result alive without a store the compiler can drop.
volatile float sink;

#if TANDEM_BENCH_X86
constexpr int fma_chains = 12;

__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iters, float seed) {
    __m512 acc[fma_chains];
    for (int k = 0; k < fma_chains; ++k) acc[k] = _mm512_set1_ps(seed + float(k));
    const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; ++i)
        for (int k = 0; k < fma_chains; ++k) acc[k] = _mm512_fmadd_ps(acc[k], mul, add);
    __m512 s = acc[0];
    for (int k = 1; k < fma_chains; ++k) s = _mm512_add_ps(s, acc[k]);
    alignas(64) float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 warns inside it (-Wuninitialized)
    _mm512_store_ps(lanes, s);
    float r = 0;
    for (float x : lanes) r += x;
    return r;
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iters, float seed) {
    __m256 acc[fma_chains];
    for (int k = 0; k < fma_chains; ++k) acc[k] = _mm256_set1_ps(seed + float(k));
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; ++i)
        for (int k = 0; k < fma_chains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], mul, add);
    __m256 s = acc[0];
    for (int k = 1; k < fma_chains; ++k) s = _mm256_add_ps(s, acc[k]);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, s);
    float r = 0;
    for (float x : lanes) r += x;
    return r;
}
#endif

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    }
    return "unknown";
}

}  // namespace

int hardware_threads() { return std::max(1, int(std::thread::hardware_concurrency())); }

nlohmann::json load_average() {
    double l[3];
    if (getloadavg(l, 3) != 3) return nlohmann::json::array();
    return {l[0], l[1], l[2]};
}

nlohmann::json machine_info() {
    nlohmann::json j;
    j["cpu"] = cpu_model();
    j["hardware_threads"] = hardware_threads();
    std::vector<std::string> isa;
    for (fma_isa i : {fma_isa::avx2, fma_isa::avx512})
        if (fma_available(i)) isa.push_back(fma_isa_name(i));
    j["fma_isa"] = isa;
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    j["openblas_coretype"] = coretype ? nlohmann::json(coretype) : nlohmann::json(nullptr);
    j["load_average_start"] = load_average();
    return j;
}

namespace {

// The CPUs of the calling thread's affinity mask, in order.
std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    return cpus;
}

// Moves the calling thread onto these CPUs; a failure only leaves it unpinned (a hint, like madvise).
void set_affinity(const std::vector<int>& cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) CPU_SET(c, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

}  // namespace

thread_team::thread_team(int n, bool pin) : n_(std::max(1, n)), start_(n_), done_(n_) {
    std::vector<int> cpus;
    if (pin) cpus = allowed_cpus();
    if (!cpus.empty()) {
        caller_cpus_ = cpus;
        set_affinity({cpus[0]});
    }
    workers_.reserve(size_t(n_ - 1));
    for (int i = 1; i < n_; ++i) {
        workers_.emplace_back([this, i, cpus] {
            // More threads than CPUs: the extra ones share them round robin.
            if (!cpus.empty()) set_affinity({cpus[size_t(i) % cpus.size()]});
            for (;;) {
                start_.arrive_and_wait();
                if (stop_) return;
                (*fn_)(i);
                done_.arrive_and_wait();
            }
        });
    }
}

thread_team::~thread_team() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& w : workers_) w.join();
    if (!caller_cpus_.empty()) set_affinity(caller_cpus_);
}

void thread_team::run(const std::function<void(int)>& fn) {
    fn_ = &fn;
    start_.arrive_and_wait();  // the barrier's phase completion publishes fn_ to the workers
    fn(0);
    done_.arrive_and_wait();
}

const char* fma_isa_name(fma_isa isa) { return isa == fma_isa::avx512 ? "avx512" : "avx2"; }

bool fma_available(fma_isa isa) {
#if TANDEM_BENCH_X86
    __builtin_cpu_init();
    if (isa == fma_isa::avx512) return __builtin_cpu_supports("avx512f");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)isa;
    return false;
#endif
}

timing measure_fma(fma_isa isa, thread_team& team, int threads, const repeat_policy& p, double* flops) {
    TANDEM_ASSERT(threads >= 1 && threads <= team.size() && fma_available(isa));
#if TANDEM_BENCH_X86
    // About 40 ms per run at 4 GHz with two FMA pipes: long enough to swamp the barrier, short enough to repeat.
    const int64_t iters = isa == fma_isa::avx512 ? 8'000'000 : 16'000'000;
    const int lanes = isa == fma_isa::avx512 ? 16 : 8;
    *flops = 2.0 * lanes * fma_chains * double(iters) * threads;
    std::vector<float> out(size_t(team.size()), 0.f);
    const std::function<void(int)> body = [&](int i) {
        if (i >= threads) return;
        out[size_t(i)] = isa == fma_isa::avx512 ? fma_loop_avx512(iters, float(i)) : fma_loop_avx2(iters, float(i));
    };
    timing t = measure([&] { team.run(body); }, p);
    float s = 0;
    for (float x : out) s += x;
    sink = s;
    return t;
#else
    (void)team, (void)p, (void)flops;
    return {};
#endif
}

}  // namespace tandem::bench
