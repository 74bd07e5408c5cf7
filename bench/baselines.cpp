// The BLAS baselines and device read kernels of baselines.h. The device parts reach below the backend interface
// (its queue, its kernel loader, its dispatch recorder), the way the backend's own launchers do, so that they run
// on the very device and queue the op cases use.
#include "bench/baselines.h"

#include <cblas.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "engine/error.h"

#if TANDEM_WITH_OPENCL
#include <clblast.h>

#include "backends/opencl/opencl_backend.h"
#endif
#if TANDEM_WITH_VULKAN
#include "backends/vulkan/backend_impl.h"
#endif

namespace tandem::bench {

namespace {

std::vector<float> random_values(size_t n, uint64_t seed) {
    std::mt19937_64 g(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> v(n);
    for (float& x : v) x = u(g);
    return v;
}

}  // namespace

baseline_result openblas_matmul(int64_t m, int64_t n, int64_t k, int threads, const repeat_policy& p) {
    baseline_result r;
    r.what = m == 1 ? "openblas sgemv" : "openblas sgemm";
    const auto w = random_values(size_t(n * k), 1), x = random_values(size_t(m * k), 2);
    std::vector<float> out(size_t(m * n));
    openblas_set_num_threads(threads);
    r.t = measure(
        [&] {
            if (m == 1) {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, blasint(n), blasint(k), 1.f, w.data(), blasint(k), x.data(), 1,
                            0.f, out.data(), 1);
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(n), blasint(k), 1.f, x.data(),
                            blasint(k), w.data(), blasint(k), 0.f, out.data(), blasint(n));
            }
        },
        p);
    return r;
}

#if TANDEM_WITH_OPENCL
baseline_result clblast_matmul(backend& b, int64_t m, int64_t n, int64_t k, const repeat_policy& p) {
    baseline_result r;
    r.what = m == 1 ? "clblast sgemv" : "clblast sgemm";
    auto* cl = dynamic_cast<opencl::opencl_backend*>(&b);
    if (!cl) {
        r.why_not = "not the opencl backend";
        return r;
    }
    auto wb = b.alloc(size_t(n * k) * 4), xb = b.alloc(size_t(m * k) * 4), ob = b.alloc(size_t(m * n) * 4);
    const auto w = random_values(size_t(n * k), 1), x = random_values(size_t(m * k), 2);
    b.upload(*wb, 0, w.data(), w.size() * 4);
    b.upload(*xb, 0, x.data(), x.size() * 4);
    const cl_mem wm = static_cast<opencl::cl_buffer&>(*wb).mem(), xm = static_cast<opencl::cl_buffer&>(*xb).mem(),
                 om = static_cast<opencl::cl_buffer&>(*ob).mem();
    cl_command_queue q = cl->queue();
    bool ok = true;
    r.t = measure(
        [&] {
            clblast::StatusCode st;
            if (m == 1) {
                st = clblast::Gemv<float>(clblast::Layout::kRowMajor, clblast::Transpose::kNo, size_t(n), size_t(k),
                                          1.f, wm, 0, size_t(k), xm, 0, 1, 0.f, om, 0, 1, &q, nullptr);
            } else {
                st = clblast::Gemm<float>(clblast::Layout::kRowMajor, clblast::Transpose::kNo, clblast::Transpose::kYes,
                                          size_t(m), size_t(n), size_t(k), 1.f, xm, 0, size_t(k), wm, 0, size_t(k), 0.f,
                                          om, 0, size_t(n), &q, nullptr);
            }
            ok &= st == clblast::StatusCode::kSuccess;
            ok &= clFinish(q) == CL_SUCCESS;
        },
        p);
    if (!ok) r.t.reset(), r.why_not = "CLBlast returned an error";
    return r;
}
#else
baseline_result clblast_matmul(backend&, int64_t, int64_t, int64_t, const repeat_policy&) {
    return {std::nullopt, "clblast", "built without OpenCL", 0};
}
#endif

namespace {

#if TANDEM_WITH_OPENCL
// Both OpenCL read kernels; the faster one's timing. 16384 work-items: a few per SIMD lane on any device.
baseline_result opencl_read(opencl::opencl_backend& cl, size_t bytes, const repeat_policy& p) {
    const size_t n4 = bytes / 16, global = 16384;
    auto xb = cl.alloc(n4 * 16), ob = cl.alloc(global * 4);
    const auto init = random_values(n4 * 4, 3);
    cl.upload(*xb, 0, init.data(), n4 * 16);
    const cl_mem xm = static_cast<opencl::cl_buffer&>(*xb).mem(), om = static_cast<opencl::cl_buffer&>(*ob).mem();
    baseline_result best;
    for (const char* name : {"bench_read_f32_strided", "bench_read_f32_chunked"}) {
        cl_kernel k = cl.kernel("bench_read.cl", name);
        cl.set_args(k, xm, cl_ulong(n4), om);
        const size_t local[1] = {0};
        const timing t = measure(
            [&] {
                cl.launch(k, name, 1, &global, local);
                cl.synchronize();
            },
            p);
        if (!best.t || t.median < best.t->median) best.t = t, best.what = name;
    }
    best.bytes = double(n4 * 16);
    return best;
}
#endif

#if TANDEM_WITH_VULKAN
// Storage-buffer and texel-buffer reads with the launch test_vulkan_perf.cpp uses (256 groups of 64).
baseline_result vulkan_read(vk::vk_backend& vb, size_t bytes, const repeat_policy& p) {
    const size_t n = bytes / 16 * 4;  // f32 elements, whole texels
    auto xb = vb.alloc(n * 4), ob = vb.alloc(256 * 64 * 4);
    const auto init = random_values(n, 3);
    vb.upload(*xb, 0, init.data(), n * 4);
    const vk::view vx = vb.bind(tensor{xb.get(), 0, dtype::f32, {int64_t(n), 1, 1, 1}});
    const vk::view vo = vb.bind(tensor{ob.get(), 0, dtype::f32, {256 * 64, 1, 1, 1}});
    struct {
        uint32_t n, off;
    } storage{vk::to_u32(int64_t(n), "read size"), vx.elem}, texels{uint32_t(n / 4), vx.elem / 4};
    baseline_result best;
    const timing ts = measure(
        [&] {
            vb.run("bench_read_f32", {64}, {{vx, false}, {vo, true}}, storage, vk::groups{256, 1, 1});
            vb.synchronize();
        },
        p);
    best.t = ts, best.what = "bench_read_f32";
    if (vb.texel_reads()) {
        const vk::arg tx = vb.texel(vx, dtype::f32, 4);
        const timing tt = measure(
            [&] {
                vb.run("bench_read_f32_texel4", {64}, {tx, {vo, true}}, texels, vk::groups{256, 1, 1});
                vb.synchronize();
            },
            p);
        if (tt.median < ts.median) best.t = tt, best.what = "bench_read_f32_texel4";
    }
    best.bytes = double(n * 4);
    return best;
}
#endif

}  // namespace

baseline_result device_read(backend& b, size_t bytes, const repeat_policy& p) {
    try {
#if TANDEM_WITH_OPENCL
        if (auto* cl = dynamic_cast<opencl::opencl_backend*>(&b)) return opencl_read(*cl, bytes, p);
#endif
#if TANDEM_WITH_VULKAN
        if (auto* vb = dynamic_cast<vk::vk_backend*>(&b)) {
            // One binding must hold the array: halve it until maxStorageBufferRange and the texel limit allow it.
            for (size_t n = bytes;; n /= 2) {
                try {
                    return vulkan_read(*vb, n, p);
                } catch (const error&) {
                    if (n <= (size_t(16) << 20)) throw;
                }
            }
        }
#endif
    } catch (const std::exception& e) {
        return {std::nullopt, "read kernel", e.what(), 0};
    }
    return {std::nullopt, "read kernel", b.name() + " has no device read kernel (host memory: see the cpu limit)", 0};
}

}  // namespace tandem::bench
