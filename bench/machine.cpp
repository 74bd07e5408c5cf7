// Bandwidth and FMA-peak kernels and the machine description, see machine.h.
#include "bench/machine.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <new>
#include <string>

#include "engine/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TANDEM_BENCH_X86 1
#endif

namespace tandem::bench {

namespace {

// 16 floats: one AVX-512 register, or two AVX2 registers under -march=x86-64-v3 (GCC/Clang vector extension,
// so the loops below vectorise without -ffast-math reassociation).
typedef float v16 __attribute__((vector_size(64), aligned(64)));
constexpr size_t v16_floats = 16;

// Keeps a result alive without a store the compiler can drop.
volatile float sink;

float read_part(const float* p, size_t n) {
    const v16* v = reinterpret_cast<const v16*>(p);
    const size_t nv = n / v16_floats;
    v16 a0{}, a1{}, a2{}, a3{};  // four chains: the adds' latency never limits a memory-bound loop
    size_t i = 0;
    for (; i + 4 <= nv; i += 4) a0 += v[i], a1 += v[i + 1], a2 += v[i + 2], a3 += v[i + 3];
    for (; i < nv; ++i) a0 += v[i];
    const v16 s = (a0 + a1) + (a2 + a3);
    float r = 0;
    for (size_t k = 0; k < v16_floats; ++k) r += s[k];
    return r;
}

void copy_part(float* dst, const float* src, size_t n) {
    v16* d = reinterpret_cast<v16*>(dst);
    const v16* s = reinterpret_cast<const v16*>(src);
    for (size_t i = 0; i < n / v16_floats; ++i) d[i] = s[i];
}

void triad_part(float* a, const float* b, const float* c, float scale, size_t n) {
    v16* va = reinterpret_cast<v16*>(a);
    const v16* vb = reinterpret_cast<const v16*>(b);
    const v16* vc = reinterpret_cast<const v16*>(c);
    for (size_t i = 0; i < n / v16_floats; ++i) va[i] = vb[i] + scale * vc[i];
}

// [begin, end) of part i of n equal parts of `count` elements, in whole v16 vectors.
std::pair<size_t, size_t> part(size_t count, int i, int n) {
    const size_t vecs = count / v16_floats;
    return {vecs * size_t(i) / size_t(n) * v16_floats, vecs * size_t(i + 1) / size_t(n) * v16_floats};
}

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

thread_team::thread_team(int n) : n_(std::max(1, n)), start_(n_), done_(n_) {
    workers_.reserve(size_t(n_ - 1));
    for (int i = 1; i < n_; ++i) {
        workers_.emplace_back([this, i] {
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
}

void thread_team::run(const std::function<void(int)>& fn) {
    fn_ = &fn;
    start_.arrive_and_wait();  // the barrier's phase completion publishes fn_ to the workers
    fn(0);
    done_.arrive_and_wait();
}

const char* mem_kernel_name(mem_kernel k) {
    switch (k) {
        case mem_kernel::read:
            return "read";
        case mem_kernel::copy:
            return "copy";
        case mem_kernel::triad:
            return "triad";
    }
    return "?";
}

bandwidth_array::bandwidth_array(size_t bytes, thread_team& team, bool huge_pages) {
    constexpr size_t page = 4096, huge = size_t(2) << 20;
    bytes_ = bytes / page * page;
    if (bytes_ < page) throw error(TANDEM_ERR_INVALID_ARGUMENT, "bandwidth array smaller than a page");
    const size_t alloc = (bytes_ + huge - 1) / huge * huge;  // aligned_alloc wants a multiple of the alignment
    data_ = static_cast<float*>(std::aligned_alloc(huge, alloc));
    if (!data_) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE) && defined(MADV_NOHUGEPAGE)
    madvise(data_, alloc, huge_pages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);  // a hint: the kernels run either way
#endif
    const size_t count = bytes_ / sizeof(float);
    team.run([&](int i) {
        const auto [b, e] = part(count, i, team.size());
        std::fill(data_ + b, data_ + e, 1.0f);
    });
    std::fill(data_ + count / v16_floats * v16_floats, data_ + count, 1.0f);
}

bandwidth_array::~bandwidth_array() { std::free(data_); }

double mem_kernel_bytes(mem_kernel k, const bandwidth_array& a) {
    const size_t count = a.bytes() / sizeof(float);
    switch (k) {
        case mem_kernel::read:
            return double(count / v16_floats * v16_floats) * sizeof(float);
        case mem_kernel::copy:
            return 2.0 * double(count / 2 / v16_floats * v16_floats) * sizeof(float);
        case mem_kernel::triad:
            return 3.0 * double(count / 3 / v16_floats * v16_floats) * sizeof(float);
    }
    return 0;
}

timing measure_bandwidth(mem_kernel k, bandwidth_array& a, thread_team& team, int threads, const repeat_policy& p) {
    TANDEM_ASSERT(threads >= 1 && threads <= team.size());
    float* d = a.data();
    const size_t count = a.bytes() / sizeof(float);
    // Each kernel's arrays start on a v16 boundary so every thread's part is whole aligned vectors.
    const size_t half = count / 2 / v16_floats * v16_floats, third = count / 3 / v16_floats * v16_floats;
    std::vector<float> partial(size_t(team.size()), 0.f);
    const std::function<void(int)> body = [&](int i) {
        if (i >= threads) return;
        switch (k) {
            case mem_kernel::read: {
                const auto [b, e] = part(count, i, threads);
                partial[size_t(i)] = read_part(d + b, e - b);
                break;
            }
            case mem_kernel::copy: {
                const auto [b, e] = part(half, i, threads);
                copy_part(d + half + b, d + b, e - b);
                break;
            }
            case mem_kernel::triad: {
                const auto [b, e] = part(third, i, threads);
                triad_part(d + b, d + third + b, d + 2 * third + b, 0.5f, e - b);
                break;
            }
        }
    };
    timing t = measure([&] { team.run(body); }, p);
    float s = 0;
    for (float x : partial) s += x;
    sink = s;
    return t;
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
