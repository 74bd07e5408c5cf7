// The Vulkan backend's performance report (TANDEM_VULKAN_PERF=1; a report, not a check): lavapipe's own read
// bandwidth, F32/F16/Q8_0/Q4_0/Q4_K/Q6_K GEMV and GEMM next to it, submit cost and a stories260K decode step. SKIPs
// without the variable or without a Vulkan device.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <string>

#include "backends/backend.h"
#if TANDEM_WITH_VULKAN
#include "backends/vulkan/backend_impl.h"
#include "backends/vulkan/vulkan_backend.h"
#endif
#include "engine/error.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"
#include "engine/session.h"
#include "tests/common/test_util.h"

#if !TANDEM_WITH_VULKAN
TEST(vulkan_perf, not_built) { GTEST_SKIP() << "this build has no Vulkan backend (TANDEM_VULKAN=OFF)"; }
#else
namespace tandem {
namespace {

using test::scoped_env;

std::unique_ptr<backend> try_vulkan(const std::string& name, std::string& why) { return test::try_backend(name, why); }

// ---- performance sanity (a report, not a check): TANDEM_VULKAN_PERF=1 ----

// n rows of k weights of a block type as random quant bytes under fixed finite scales (0.01; Q4_K's d and dmin at
// bytes 0..3 of each super-block, Q6_K's d at bytes 208..209): benchmark data.
std::vector<uint8_t> random_blocks(dtype t, int64_t k, int64_t n, uint64_t seed) {
    std::vector<uint8_t> bytes(dtype_row_bytes(t, k) * size_t(n));
    std::mt19937_64 g(seed);
    for (auto& b : bytes) b = uint8_t(g());
    const auto info = *dtype_info(uint32_t(t));
    const uint16_t d = fp32_to_fp16(0.01f);
    for (size_t i = 0; i < bytes.size(); i += info.block_bytes) {
        if (t == dtype::q6_k) {
            std::memcpy(&bytes[i + 208], &d, 2);
        } else {
            std::memcpy(&bytes[i], &d, 2);
            if (t == dtype::q4_k) std::memcpy(&bytes[i + 2], &d, 2);
        }
    }
    return bytes;
}

// Median seconds of `reps` runs of fn (each ends with a synchronize), after one warm-up run.
double median_seconds(int reps, const std::function<void()>& fn) {
    fn();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

TEST(vulkan_perf, bandwidth_gemv_gemm_and_submit_cost) {
    const char* on = std::getenv("TANDEM_VULKAN_PERF");
    if (!on || std::string(on) != "1") GTEST_SKIP() << "set TANDEM_VULKAN_PERF=1 for the performance report";
    std::printf("%s", vulkan_devices_report().c_str());
    for (const char* family : {"cpu", "gpu"}) {
        scoped_env kernels("TANDEM_VULKAN_KERNELS", family);
        std::string why;
        auto owner = try_vulkan("vulkan", why);
        if (!owner) GTEST_SKIP() << why;
        auto& be = dynamic_cast<vk::vk_backend&>(*owner);
        const int64_t n = 4096;
        auto w32 = be.alloc(size_t(n * n) * 4), w16 = be.alloc(size_t(n * n) * 2), xb = be.alloc(size_t(512 * n) * 4),
             ob = be.alloc(size_t(512 * n) * 4);
        const tensor tw32{w32.get(), 0, dtype::f32, {n, n, 1, 1}}, tw16{w16.get(), 0, dtype::f16, {n, n, 1, 1}};
        const tensor x1{xb.get(), 0, dtype::f32, {n, 1, 1, 1}}, o1{ob.get(), 0, dtype::f32, {n, 1, 1, 1}};
        // Trivial read kernels over the same 64 MiB as the f32 weights, 64 invocations per group: 4-byte storage
        // buffer loads, and 16-byte texel fetches (RGBA32F; lavapipe's fast load path, the reference here).
        const vk::view vr = be.bind(tw32), vo = be.bind(tensor{ob.get(), 0, dtype::f32, {256 * 64, 1, 1, 1}});
        const struct { uint32_t n, off; } rp{uint32_t(n * n), vr.elem}, rp4{uint32_t(n * n / 4), vr.elem / 4};
        vk::arg texels;
        texels.v = vr;
        texels.texel = VK_FORMAT_R32G32B32A32_SFLOAT;
        const auto read_storage = [&] {
            be.run("bench_read_f32", {64}, {{vr, false}, {vo, true}}, rp, vk::groups{256, 1, 1});
            be.synchronize();
        };
        const auto read_texel = [&] {
            be.run("bench_read_f32_texel4", {64}, {texels, {vo, true}}, rp4, vk::groups{256, 1, 1});
            be.synchronize();
        };
        // Quantized GEMVs (random blocks with a fixed finite scale): N x K = 4096 x 4096 and 11008 x 4096.
        struct quant_gemv {
            dtype type;
            int64_t n;
            std::unique_ptr<buffer> w;
            double t = 0;
        };
        std::vector<quant_gemv> qg;
        for (dtype qt : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
            for (int64_t qn : {int64_t(4096), int64_t(11008)}) {
                const auto bytes = random_blocks(qt, n, qn, 5);
                qg.push_back({qt, qn, be.alloc(bytes.size())});
                be.upload(*qg.back().w, 0, bytes.data(), bytes.size());
            }
        }
        auto qob = be.alloc(size_t(11008) * 4);
        const double bytes32 = double(n * n) * 4;
        const int reps = 5;
        double t_read = 0, t_read1 = 0, t_gemv32 = 0, t_gemv16 = 0;
        for (int round = 0; round < 2; ++round) {  // interleaved, so contention hits all of them alike
            t_read += median_seconds(reps, read_texel);
            t_read1 += median_seconds(reps, read_storage);
            t_gemv32 += median_seconds(reps, [&] { be.matmul(tw32, x1, o1), be.synchronize(); });
            t_gemv16 += median_seconds(reps, [&] { be.matmul(tw16, x1, o1), be.synchronize(); });
            for (auto& g : qg) {
                const tensor tw{g.w.get(), 0, g.type, {n, g.n, 1, 1}}, to{qob.get(), 0, dtype::f32, {g.n, 1, 1, 1}};
                g.t += median_seconds(reps, [&] { be.matmul(tw, x1, to), be.synchronize(); });
            }
        }
        const double read_gbs = bytes32 / (t_read / 2) / 1e9, read1_gbs = bytes32 / (t_read1 / 2) / 1e9,
                     g32 = bytes32 / (t_gemv32 / 2) / 1e9, g16 = bytes32 / 2 / (t_gemv16 / 2) / 1e9;
        const int64_t gm = 512, gk = 1024, gn = 1024;
        const tensor ww{w32.get(), 0, dtype::f32, {gk, gn, 1, 1}}, xx{xb.get(), 0, dtype::f32, {gk, gm, 1, 1}},
            oo{ob.get(), 0, dtype::f32, {gn, gm, 1, 1}};
        const double t_gemm = median_seconds(3, [&] { be.matmul(ww, xx, oo), be.synchronize(); });
        const tensor a1{xb.get(), 0, dtype::f32, {1, 1, 1, 1}}, b1{ob.get(), 0, dtype::f32, {1, 1, 1, 1}};
        const double t_submit = median_seconds(51, [&] { be.add(a1, a1, b1), be.synchronize(); });
        std::printf("vulkan perf, %s kernels (median of interleaved runs):\n", family);
        std::printf("  read kernel, texels   %7.2f GB/s  (4-byte storage loads: %.2f GB/s)\n", read_gbs, read1_gbs);
        std::printf("  GEMV f32 4096x4096    %7.2f GB/s  (%.2f x read)\n", g32, g32 / read_gbs);
        std::printf("  GEMV f16 4096x4096    %7.2f GB/s  (%.2f x read)\n", g16, g16 / read_gbs);
        for (const auto& g : qg) {
            const double gbs = double(dtype_row_bytes(g.type, n)) * double(g.n) / (g.t / 2) / 1e9;
            std::printf("  GEMV %s %5lldx4096  %7.2f GB/s of weights  (%.2f x read), %.2f ms\n",
                        std::string(dtype_name(g.type)).c_str(), (long long)g.n, gbs, gbs / read_gbs, g.t / 2 * 1e3);
        }
        std::printf("  GEMM f32 M=512 K=N=1024 %5.2f GFLOP/s\n", 2.0 * gm * gk * gn / t_gemm / 1e9);
        // Quantized GEMM: M=512 K=N=4096 with the CPU-family kernels (lavapipe's default); the GPU family's tiled
        // shader runs at ~1 GFLOP/s on lavapipe, so it gets K=N=1024 to keep the report short.
        for (dtype qt : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k}) {
            const int64_t qk = std::string(family) == "cpu" ? 4096 : 1024, qn = qk;
            const auto bytes = random_blocks(qt, qk, qn, 6);
            auto wq = be.alloc(bytes.size());
            be.upload(*wq, 0, bytes.data(), bytes.size());
            const tensor tw{wq.get(), 0, qt, {qk, qn, 1, 1}}, tx{xb.get(), 0, dtype::f32, {qk, gm, 1, 1}},
                to{ob.get(), 0, dtype::f32, {qn, gm, 1, 1}};
            const double t = median_seconds(3, [&] { be.matmul(tw, tx, to), be.synchronize(); });
            std::printf("  GEMM %s M=512 K=N=%lld %5.2f GFLOP/s\n", std::string(dtype_name(qt)).c_str(), (long long)qk,
                        2.0 * double(gm) * double(qk) * double(qn) / t / 1e9);
        }
        std::printf("  1-element dispatch + submit + wait: %.1f us\n", t_submit * 1e6);
    }
    // A greedy decode step of stories260K: wall time per token (one submit + wait per token).
    std::string why;
    auto be = try_vulkan("vulkan", why);
    auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    sampling_params sp;
    sp.temperature = 0;
    session s(*m, sp, 512);
    const int32_t bos[1] = {m->tokenizer().bos()};
    s.feed(bos);
    const double t_step = median_seconds(31, [&] { s.step(); });
    std::printf("  stories260K decode step (forward + sampling): %.2f ms\n", t_step * 1e3);
}

}  // namespace
}  // namespace tandem
#endif
