// The memory-bandwidth kernels of machine.h (read / copy / triad), each in several implementations as STREAM-style
// tools do it: vector width 128/256/512 bits x unroll 2/4/8 x (copy, triad) cached or non-temporal stores. Which
// one is fastest depends on the CPU (on this Zen 5 VM narrow loads can beat AVX-512 ones), so `limits` times them
// all and reports the best; the other benchmarks take the best width at unroll 4 (measure_bandwidth by kernel).
#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>

#include "bench/machine.h"
#include "engine/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <sys/mman.h>

namespace tandem::bench {

namespace {

// Parts are split in whole 64-byte blocks so every thread's part starts aligned for any width's aligned loads and
// non-temporal stores (the array itself is 2 MiB aligned).
constexpr size_t block_floats = 16;

// Copy and triad cut the array into 2 or 3 sub-arrays with this many floats between them (STREAM's OFFSET): a
// destination exactly a power of two past its source shares every address's low 12 bits with it, and the loads then
// wait on the stores they falsely seem to depend on (4K aliasing): copy measured 0.5-0.65 of likwid-bench's without
// it. 1088 bytes: 17 cache lines, no simple fraction of a page.
constexpr size_t skew_floats = 272;

// Elements of each of k sub-arrays (whole blocks) with the skew between them.
size_t sub_array(size_t count, size_t k) {
    return (count - (k - 1) * skew_floats) / k / block_floats * block_floats;
}

// Keeps a result alive without a store the compiler can drop.
volatile float sink;

// [begin, end) of part i of n equal parts of `count` elements, in whole blocks.
std::pair<size_t, size_t> part(size_t count, int i, int n) {
    const size_t blocks = count / block_floats;
    return {blocks * size_t(i) / size_t(n) * block_floats, blocks * size_t(i + 1) / size_t(n) * block_floats};
}

// One struct per vector width: the handful of operations the kernels need. The widths are compiled when the
// build's -march has them (-march=native here; a -march=x86-64-v3 build has no 512-bit variants), like the
// kernels the engine itself runs.
#if defined(__SSE2__)
struct w128 {
    using v = __m128;
    static constexpr int bits = 128;
    static v zero() { return _mm_setzero_ps(); }
    static v set1(float s) { return _mm_set1_ps(s); }
    static v load(const float* p) { return _mm_load_ps(p); }
    static void store(float* p, v x) { _mm_store_ps(p, x); }
    static void stream(float* p, v x) { _mm_stream_ps(p, x); }
    static v add(v a, v b) { return _mm_add_ps(a, b); }
#if defined(__FMA__)
    static v fmadd(v a, v b, v c) { return _mm_fmadd_ps(a, b, c); }
#else
    static v fmadd(v a, v b, v c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
#endif
    static float sum(v x) {
        alignas(16) float l[4];
        _mm_store_ps(l, x);
        return (l[0] + l[1]) + (l[2] + l[3]);
    }
};
#endif
#if defined(__AVX__)
struct w256 {
    using v = __m256;
    static constexpr int bits = 256;
    static v zero() { return _mm256_setzero_ps(); }
    static v set1(float s) { return _mm256_set1_ps(s); }
    static v load(const float* p) { return _mm256_load_ps(p); }
    static void store(float* p, v x) { _mm256_store_ps(p, x); }
    static void stream(float* p, v x) { _mm256_stream_ps(p, x); }
    static v add(v a, v b) { return _mm256_add_ps(a, b); }
#if defined(__FMA__)
    static v fmadd(v a, v b, v c) { return _mm256_fmadd_ps(a, b, c); }
#else
    static v fmadd(v a, v b, v c) { return _mm256_add_ps(_mm256_mul_ps(a, b), c); }
#endif
    static float sum(v x) {
        alignas(32) float l[8];
        _mm256_store_ps(l, x);
        float r = 0;
        for (float f : l) r += f;
        return r;
    }
};
#endif
#if defined(__AVX512F__)
struct w512 {
    using v = __m512;
    static constexpr int bits = 512;
    static v zero() { return _mm512_setzero_ps(); }
    static v set1(float s) { return _mm512_set1_ps(s); }
    static v load(const float* p) { return _mm512_load_ps(p); }
    static void store(float* p, v x) { _mm512_store_ps(p, x); }
    static void stream(float* p, v x) { _mm512_stream_ps(p, x); }
    static v add(v a, v b) { return _mm512_add_ps(a, b); }
    static v fmadd(v a, v b, v c) { return _mm512_fmadd_ps(a, b, c); }
    static float sum(v x) {
        alignas(64) float l[16];  // not _mm512_reduce_add_ps: GCC 12 warns inside it (-Wuninitialized)
        _mm512_store_ps(l, x);
        float r = 0;
        for (float f : l) r += f;
        return r;
    }
};
#endif

// n is a multiple of block_floats (see part()), so of every width's vector; the unrolled loop leaves at most
// unroll - 1 vectors to a one-vector loop.
template <class W, int U>
float read_kernel(const float* p, size_t n) {
    constexpr size_t f = W::bits / 32;
    typename W::v acc[U];  // U independent chains: the adds' latency never limits a memory-bound loop
    for (int k = 0; k < U; ++k) acc[k] = W::zero();
    size_t i = 0;
    for (; i + U * f <= n; i += U * f)
        for (int k = 0; k < U; ++k) acc[k] = W::add(acc[k], W::load(p + i + k * f));
    for (; i < n; i += f) acc[0] = W::add(acc[0], W::load(p + i));
    for (int k = 1; k < U; ++k) acc[0] = W::add(acc[0], acc[k]);
    return W::sum(acc[0]);
}

// Orders this thread's non-temporal stores before whatever follows (the team's barrier).
inline void store_fence() {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

template <class W, bool NT>
inline void put(float* p, typename W::v x) {
    if constexpr (NT)
        W::stream(p, x);
    else
        W::store(p, x);
}

// Non-temporal stores bypass the caches (no read of the destination line before it is written); the sfence
// makes them complete before the thread reports its part done.
template <class W, int U, bool NT>
void copy_kernel(float* dst, const float* src, size_t n) {
    constexpr size_t f = W::bits / 32;
    size_t i = 0;
    for (; i + U * f <= n; i += U * f) {
        typename W::v x[U];
        for (int k = 0; k < U; ++k) x[k] = W::load(src + i + k * f);
        for (int k = 0; k < U; ++k) put<W, NT>(dst + i + k * f, x[k]);
    }
    for (; i < n; i += f) put<W, NT>(dst + i, W::load(src + i));
    if constexpr (NT) store_fence();
}

template <class W, int U, bool NT>
void triad_kernel(float* a, const float* b, const float* c, float scale, size_t n) {
    constexpr size_t f = W::bits / 32;
    const typename W::v s = W::set1(scale);
    size_t i = 0;
    for (; i + U * f <= n; i += U * f) {
        typename W::v x[U];
        for (int k = 0; k < U; ++k) x[k] = W::fmadd(s, W::load(c + i + k * f), W::load(b + i + k * f));
        for (int k = 0; k < U; ++k) put<W, NT>(a + i + k * f, x[k]);
    }
    for (; i < n; i += f) put<W, NT>(a + i, W::fmadd(s, W::load(c + i), W::load(b + i)));
    if constexpr (NT) store_fence();
}

using read_fn = float (*)(const float*, size_t);
using copy_fn = void (*)(float*, const float*, size_t);
using triad_fn = void (*)(float*, const float*, const float*, float, size_t);

struct variant_impl {
    int bits, unroll;
    bool nontemporal;
    read_fn read;  // null for the non-temporal entries: a read has no stores
    copy_fn copy;
    triad_fn triad;
};

template <class W, int U>
void add_variants(std::vector<variant_impl>& out) {
    out.push_back({W::bits, U, false, read_kernel<W, U>, copy_kernel<W, U, false>, triad_kernel<W, U, false>});
    out.push_back({W::bits, U, true, nullptr, copy_kernel<W, U, true>, triad_kernel<W, U, true>});
}

template <class W>
void add_width(std::vector<variant_impl>& out) {
    add_variants<W, 2>(out);
    add_variants<W, 4>(out);
    add_variants<W, 8>(out);
}

const std::vector<variant_impl>& implementations() {
    static const std::vector<variant_impl> all = [] {
        std::vector<variant_impl> v;
#if defined(__SSE2__)
        add_width<w128>(v);
#endif
#if defined(__AVX__)
        add_width<w256>(v);
#endif
#if defined(__AVX512F__)
        add_width<w512>(v);
#endif
        return v;
    }();
    return all;
}

const variant_impl& implementation(const mem_variant& v) {
    for (const auto& i : implementations())
        if (i.bits == v.bits && i.unroll == v.unroll && i.nontemporal == v.nontemporal &&
            (v.kernel != mem_kernel::read || !v.nontemporal))
            return i;
    throw error(TANDEM_ERR_INVALID_ARGUMENT, "no such bandwidth kernel variant: " + v.name());
}

// One run of the variant on `threads` threads of the team, each on an equal contiguous part of the kernel's
// arrays (which start on block boundaries).
std::function<void(int)> kernel_body(const mem_variant& v, bandwidth_array& a, int threads,
                                     std::vector<float>& partial) {
    const variant_impl& impl = implementation(v);
    float* d = a.data();
    const size_t count = a.bytes() / sizeof(float);
    const size_t half = sub_array(count, 2), third = sub_array(count, 3), gap = skew_floats;
    switch (v.kernel) {
        case mem_kernel::read:
            return [=, &partial](int i) {
                if (i >= threads) return;
                const auto [b, e] = part(count, i, threads);
                partial[size_t(i)] = impl.read(d + b, e - b);
            };
        case mem_kernel::copy:
            return [=](int i) {
                if (i >= threads) return;
                const auto [b, e] = part(half, i, threads);
                impl.copy(d + half + gap + b, d + b, e - b);
            };
        case mem_kernel::triad:
            return [=](int i) {
                if (i >= threads) return;
                const auto [b, e] = part(third, i, threads);
                impl.triad(d + b, d + third + gap + b, d + 2 * (third + gap) + b, 0.5f, e - b);
            };
    }
    return [](int) {};
}

void keep(const std::vector<float>& partial) {
    float s = 0;
    for (float x : partial) s += x;
    sink = s;
}

}  // namespace

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

std::string mem_variant::name() const {
    return std::string(mem_kernel_name(kernel)) + "_" + std::to_string(bits) + "x" + std::to_string(unroll) +
           (nontemporal ? "_nt" : "");
}

std::vector<mem_variant> mem_variants(mem_kernel k) {
    std::vector<mem_variant> out;
    for (const auto& i : implementations())
        if (k != mem_kernel::read || !i.nontemporal) out.push_back({k, i.bits, i.unroll, i.nontemporal});
    return out;
}

mem_variant default_variant(mem_kernel k) {
    // The widest vector with 4 chains and cached stores: what the engine's own streaming loops look like.
    const auto all = mem_variants(k);
    TANDEM_ASSERT(!all.empty());
    mem_variant best = all.front();
    for (const auto& v : all)
        if (!v.nontemporal && v.unroll == 4 && v.bits >= best.bits) best = v;
    return best;
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
    // First touch by the team: each thread its own contiguous part (likwid-bench -W does the same). On this
    // one-node VM placement does not depend on it; on a NUMA machine the pages land next to their reader.
    const size_t count = bytes_ / sizeof(float);
    team.run([&](int i) {
        const auto [b, e] = part(count, i, team.size());
        std::fill(data_ + b, data_ + e, 1.0f);
    });
    std::fill(data_ + count / block_floats * block_floats, data_ + count, 1.0f);
}

bandwidth_array::~bandwidth_array() { std::free(data_); }

double mem_kernel_bytes(mem_kernel k, const bandwidth_array& a) {
    const size_t count = a.bytes() / sizeof(float);
    switch (k) {
        case mem_kernel::read:
            return double(count / block_floats * block_floats) * sizeof(float);
        case mem_kernel::copy:
            return 2.0 * double(sub_array(count, 2)) * sizeof(float);
        case mem_kernel::triad:
            return 3.0 * double(sub_array(count, 3)) * sizeof(float);
    }
    return 0;
}

timing measure_bandwidth(const mem_variant& v, bandwidth_array& a, thread_team& team, int threads,
                         const repeat_policy& p) {
    TANDEM_ASSERT(threads >= 1 && threads <= team.size());
    std::vector<float> partial(size_t(team.size()), 0.f);
    const auto body = kernel_body(v, a, threads, partial);
    timing t = measure([&] { team.run(body); }, p);
    keep(partial);
    return t;
}

timing measure_bandwidth(mem_kernel k, bandwidth_array& a, thread_team& team, int threads, const repeat_policy& p) {
    // Every vector width at unroll 4 with cached stores, round robin, and the best median: the limit other
    // subcommands divide by must not depend on which width this CPU streams best with (128-bit loads beat 512-bit
    // ones on this Zen 5), or a kernel could score above 1.
    std::vector<mem_variant> vs;
    for (const auto& v : mem_variants(k))
        if (!v.nontemporal && v.unroll == 4) vs.push_back(v);
    if (vs.size() <= 1) return measure_bandwidth(default_variant(k), a, team, threads, p);
    std::vector<timing> ts = measure_bandwidth_variants(vs, a, team, threads, p);
    size_t best = 0;
    for (size_t i = 1; i < ts.size(); ++i)
        if (ts[i].median < ts[best].median) best = i;
    return ts[best];
}

std::vector<timing> measure_bandwidth_variants(const std::vector<mem_variant>& vs, bandwidth_array& a,
                                               thread_team& team, int threads, const repeat_policy& p) {
    TANDEM_ASSERT(threads >= 1 && threads <= team.size());
    std::vector<float> partial(size_t(team.size()), 0.f);
    std::vector<std::function<void(int)>> bodies;
    for (const auto& v : vs) bodies.push_back(kernel_body(v, a, threads, partial));
    for (int r = 0; r < p.warmup; ++r)
        for (const auto& b : bodies) team.run(b);
    // Round robin, one run of each variant per round: a drift of the machine's bandwidth (bimodal at 2 threads
    // here) hits every variant alike instead of favouring whichever ran in a fast second.
    std::vector<std::vector<double>> runs(vs.size());
    const int max_runs = std::max(1, p.max_runs), min_runs = std::clamp(p.min_runs, 1, max_runs);
    double total = 0;
    for (int r = 0; r < max_runs && (r < min_runs || total < p.min_seconds); ++r) {
        for (size_t i = 0; i < bodies.size(); ++i) {
            const double t0 = now_seconds();
            team.run(bodies[i]);
            runs[i].push_back(now_seconds() - t0);
            total += runs[i].back();
        }
    }
    keep(partial);
    std::vector<timing> out;
    for (auto& r : runs) out.push_back(summarize(std::move(r)));
    return out;
}

}  // namespace tandem::bench
