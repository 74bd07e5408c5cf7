// `tandem-bench limits`: what this machine can do at most, the denominators of every other benchmark's ratios:
// memory bandwidth (read / copy / triad) and peak FMA throughput for 1..N threads, and the launch overhead of
// each GPU API and of a one-element op through each backend.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/launch.h"
#include "bench/machine.h"
#include "bench/report.h"
#include "engine/error.h"

namespace tandem::bench {

namespace {

struct limits_options {
    int threads = 0;
    int64_t mib = 1024;
    bool small_pages = false;
    bool no_pin = false;
    std::vector<std::string> parts{"bandwidth", "fma", "launch"};
    std::vector<std::string> variants;  // bandwidth variants to time (empty: all)
    bool only_max_threads = false;      // bandwidth and FMA at --threads only, not 1..N
    int launch_runs = 1000;
    repeat_policy repeat{1, 1.0, 20, 3};
    std::string out;
};

nlohmann::json us(double seconds) { return seconds * 1e6; }

// One element of `add` enqueued and waited for through the backend interface: the per-op cost the forward pass
// pays on top of the work (argument setup, enqueue, a wait). On host backends synchronize() returns at once.
std::optional<timing> backend_tiny_op(backend& be, const repeat_policy& p) {
    auto buf = be.alloc(3 * 64);
    const float init[1] = {1.f};
    tensor a{buf.get(), 0, dtype::f32, {1, 1, 1, 1}}, b = a, out = a;
    b.offset = 64, out.offset = 128;
    be.upload(*buf, 0, init, sizeof init);
    be.upload(*buf, 64, init, sizeof init);
    return measure(
        [&] {
            be.add(a, b, out);
            be.synchronize();
        },
        p);
}

}  // namespace

action add_limits(CLI::App& app) {
    auto o = std::make_shared<limits_options>();
    auto* cmd = app.add_subcommand("limits",
                                   "This machine's limits: memory bandwidth (read, copy, triad) and peak FMA "
                                   "GFLOP/s for 1..N threads, launch overhead of OpenCL, Vulkan and each backend.");
    cmd->footer(
        "Bandwidth: `read` sums an array of --mib MiB, `copy` copies one half of it to the other, `triad` computes "
        "a = b + s*c over its thirds. Each kernel has several implementations (vector width 128/256/512 bits x "
        "unroll 2/4/8, and for copy and triad cached or non-temporal stores), timed round robin; the table reports "
        "the fastest (by median) as the limit, names it, and gives the best cached-store and non-temporal figures "
        "(every variant is in the JSON's meta.bandwidth_variants). GB/s counts each element read or written once "
        "(STREAM's and likwid-bench's convention): the write-allocate read of a cached store is not counted, so a "
        "cached copy / triad really moves 1.5x / 1.33x the bytes it is credited with. Each thread works on an equal "
        "contiguous part, first-touched by itself; threads are started once and pinned one per CPU (--no-pin: not). "
        "FMA: "
        "12 independent register-resident vector FMA chains per thread (AVX2 and AVX-512 where the CPU has them), "
        "2 flops per lane. Every figure is min / median / max over the timed runs (warm-up excluded): on a shared "
        "VM the 2-thread bandwidth is bimodal, so read the median and the spread, and measure the limit in the "
        "same run as the thing you compare with it.\n\nLaunch: an empty OpenCL kernel (1 work-item) enqueued + "
        "clFinish, an empty Vulkan command buffer submitted + fence wait (the default device of each API), and "
        "`add` of one element + synchronize() through every backend of this build.");
    cmd->add_option("-t,--threads", o->threads, "Largest thread count (0 = hardware threads)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--mib", o->mib, "Bandwidth array size in MiB")
        ->capture_default_str()
        ->check(CLI::Range(16, 1 << 20));
    cmd->add_flag("--small-pages", o->small_pages,
                  "Keep the bandwidth array on 4 KiB pages, as a model mmapped from its file is (default: huge pages)");
    cmd->add_flag("--no-pin", o->no_pin, "Let the OS move the threads between CPUs (default: one thread per CPU)");
    cmd->add_option("--variants", o->variants,
                    "Time only these bandwidth variants (names as in the JSON's meta.bandwidth_variants, e.g. "
                    "copy_128x4 copy_256x8_nt); a kernel with none of them is left out")
        ->delimiter(',');
    cmd->add_flag("--only-max-threads", o->only_max_threads,
                  "Measure bandwidth and FMA at --threads threads only (default: every count from 1)");
    cmd->add_option("--parts", o->parts, "What to measure")
        ->capture_default_str()
        ->check(CLI::IsMember({"bandwidth", "fma", "launch"}));
    cmd->add_option("--launch-runs", o->launch_runs, "Most timed launches per API or backend")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    add_repeat_options(cmd, o->repeat);
    add_out_option(cmd, o->out);
    return [o] {
        const int max_threads = o->threads > 0 ? o->threads : hardware_threads();
        report rep("limits");
        rep.meta()["bandwidth_bytes"] = int64_t(o->mib) << 20;
        rep.meta()["huge_pages"] = !o->small_pages;
        rep.meta()["pinned"] = !o->no_pin;
        rep.meta()["repeat"] = {
            {"warmup", o->repeat.warmup}, {"min_seconds", o->repeat.min_seconds}, {"max_runs", o->repeat.max_runs}};
        const auto& mi = rep.meta()["machine"];
        std::printf("%s, %d hardware threads, load average %s\n", mi["cpu"].get<std::string>().c_str(),
                    mi["hardware_threads"].get<int>(), mi["load_average_start"].dump().c_str());

        auto wanted = [&](const char* part) {
            return std::find(o->parts.begin(), o->parts.end(), part) != o->parts.end();
        };
        for (const auto& name : o->variants) {
            bool known = false;
            for (mem_kernel k : {mem_kernel::read, mem_kernel::copy, mem_kernel::triad})
                for (const auto& v : mem_variants(k)) known = known || v.name() == name;
            if (!known)
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "--variants: no bandwidth variant named '" + name +
                                                             "' on this CPU (see `limits -o x.json`)");
        }
        thread_team team(max_threads, !o->no_pin);
        if (wanted("bandwidth")) {
            bandwidth_array arr(size_t(o->mib) << 20, team, !o->small_pages);
            auto& t = rep.add_table("bandwidth",
                                    "Memory bandwidth (GB/s = 1e9 B/s), " + std::to_string(o->mib) +
                                        " MiB array, fastest of each kernel's variants",
                                    {{"kernel", "kernel", 6, 0},
                                     {"threads", "threads", 7, 0},
                                     {"variant", "fastest variant", 16, 0},
                                     {"gbps_min", "GB/s min", 9, 1},
                                     {"gbps_median", "GB/s med", 9, 1},
                                     {"gbps_max", "GB/s max", 9, 1},
                                     {"runs", "runs", 5, 0},
                                     {"cached_gbps", "best cached", 11, 1},
                                     {"nt_gbps", "best nt", 8, 1}});
            auto& all = rep.meta()["bandwidth_variants"] = nlohmann::json::array();
            for (int n = o->only_max_threads ? max_threads : 1; n <= max_threads; ++n) {
                for (mem_kernel k : {mem_kernel::read, mem_kernel::copy, mem_kernel::triad}) {
                    auto vs = mem_variants(k);
                    if (!o->variants.empty())
                        std::erase_if(vs, [&](const mem_variant& v) {
                            return std::find(o->variants.begin(), o->variants.end(), v.name()) == o->variants.end();
                        });
                    if (vs.empty()) continue;
                    const auto ts = measure_bandwidth_variants(vs, arr, team, n, o->repeat);
                    const double bytes = mem_kernel_bytes(k, arr);
                    size_t best = 0;
                    nlohmann::json best_of[2] = {nullptr, nullptr};  // [nontemporal]: best median GB/s
                    for (size_t i = 0; i < vs.size(); ++i) {
                        const double med = bytes / ts[i].median / 1e9;
                        all.push_back({{"kernel", mem_kernel_name(k)},
                                       {"threads", n},
                                       {"variant", vs[i].name()},
                                       {"nontemporal", vs[i].nontemporal},
                                       {"gbps_min", bytes / ts[i].max / 1e9},
                                       {"gbps_median", med},
                                       {"gbps_max", bytes / ts[i].min / 1e9},
                                       {"runs", ts[i].seconds.size()}});
                        auto& b = best_of[vs[i].nontemporal];
                        if (b.is_null() || med > b.get<double>()) b = med;
                        if (ts[i].median < ts[best].median) best = i;
                    }
                    const timing& tm = ts[best];
                    t.add({mem_kernel_name(k), n, vs[best].name(), bytes / tm.max / 1e9, bytes / tm.median / 1e9,
                           bytes / tm.min / 1e9, int64_t(tm.seconds.size()), best_of[0], best_of[1]});
                }
            }
        }
        if (wanted("fma")) {
            auto& t = rep.add_table("fma", "Peak FMA throughput (register-resident, f32)",
                                    {{"isa", "isa", 6, 0},
                                     {"threads", "threads", 7, 0},
                                     {"gflops_min", "GFLOP/s min", 11, 1},
                                     {"gflops_median", "GFLOP/s med", 11, 1},
                                     {"gflops_max", "GFLOP/s max", 11, 1},
                                     {"runs", "runs", 5, 0}});
            for (fma_isa isa : {fma_isa::avx2, fma_isa::avx512}) {
                if (!fma_available(isa)) {
                    t.note(std::string(fma_isa_name(isa)) + ": not available on this CPU");
                    continue;
                }
                for (int n = o->only_max_threads ? max_threads : 1; n <= max_threads; ++n) {
                    double flops = 0;
                    const timing tm = measure_fma(isa, team, n, o->repeat, &flops);
                    t.add({fma_isa_name(isa), n, flops / tm.max / 1e9, flops / tm.median / 1e9, flops / tm.min / 1e9,
                           int64_t(tm.seconds.size())});
                }
            }
        }
        if (wanted("launch")) {
            const repeat_policy lp{20, o->repeat.min_seconds, o->launch_runs, 3};
            auto& t = rep.add_table("launch", "Launch overhead (one launch, enqueue to completion, microseconds)",
                                    {{"what", "what", 34, 0},
                                     {"device", "device", 28, 0},
                                     {"us_min", "us min", 8, 1},
                                     {"us_median", "us med", 8, 1},
                                     {"us_max", "us max", 9, 1},
                                     {"runs", "runs", 5, 0}});
            auto row = [&](const std::string& what, const launch_result& r) {
                if (r.t) {
                    t.add({what, r.device, us(r.t->min), us(r.t->median), us(r.t->max), int64_t(r.t->seconds.size())});
                } else {
                    t.add({what, r.device.empty() ? r.why_not : r.device + ": " + r.why_not, nullptr, nullptr, nullptr,
                           0});
                }
            };
            row("opencl: empty kernel + clFinish", opencl_empty_kernel(lp));
            row("vulkan: empty submit + fence wait", vulkan_empty_submit(lp));
            for (const auto& name : backend_names()) {
                launch_result r;
                try {
                    auto be = make_backend(name);
                    be->set_threads(max_threads);
                    r.device = be->name();
                    r.t = backend_tiny_op(*be, lp);
                } catch (const std::exception& e) {
                    r.why_not = e.what();
                }
                row(name + ": add(1 elt) + synchronize()", r);
            }
        }
        rep.write(o->out);
        return 0;
    };
}

}  // namespace tandem::bench
