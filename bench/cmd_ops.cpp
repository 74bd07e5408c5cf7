// `tandem-bench ops`: every perf case of the backend_ops harness (tests/backend_ops/perf_cases.h: the ops of a
// 7B llama at its real shapes) on every available backend, each row next to what bounds it, measured in the same
// run: memory-bound cases against the device's read bandwidth (the CPU's for host backends, the device's own read
// kernel for OpenCL and Vulkan), GEMMs against OpenBLAS (host backends, lavapipe) or CLBlast (OpenCL) at the same
// shape. `--support` prints the op x type x backend support matrix instead.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <tuple>

#include "backends/backend.h"
#include "bench/baselines.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/report.h"
#include "engine/error.h"
#include "tests/backend_ops/perf_cases.h"
#include "tests/backend_ops/support.h"

namespace tandem::bench {

namespace {

struct ops_options {
    std::vector<std::string> backends;  // empty: every available one but cpu_ref
    bool with_ref = false;
    std::string filter;
    int threads = 0;
    double min_seconds = 1.0;
    int runs = 10;
    int warmup = 1;
    int64_t read_mib = 256;
    bool smoke = false, check = false, support = false;
    int64_t cold_mib = 256;
    uint64_t seed = 42;
    std::string out;
};

struct bench_backend {
    std::string name;
    std::unique_ptr<backend> b;
    double read_gbps = 0;      // the limit of its memory-bound cases (median of the read kernel)
    std::string read_what;     // which read kernel that was
    std::string gemm_library;  // its GEMM baseline: "openblas" or "clblast"
};

using shape = std::tuple<int64_t, int64_t, int64_t>;  // m, n, k

nlohmann::json ms(double s) { return s * 1e3; }

}  // namespace

action add_ops(CLI::App& app) {
    auto o = std::make_shared<ops_options>();
    auto* cmd = app.add_subcommand("ops",
                                   "Every backend_ops kernel at 7B-model shapes on every backend, against the read "
                                   "bandwidth and OpenBLAS / CLBlast measured in the same run; --support prints "
                                   "the support matrix.");
    cmd->footer(
        "Each case (tests/backend_ops/perf_cases.cpp) is staged in the backend's buffers once, run --warmup times "
        "untimed, then timed (op + synchronize; memory-bound cases rotate over copies of their data adding up to "
        "--cold-mib, so that they are not timed from the CPU's last-level cache) until the runs add up to "
        "--min-seconds or --runs runs (at least 3 "
        "unless --runs is smaller). GB/s = the case's bytes (GEMV: the packed weights; attention: the K and V rows "
        "read) / median time; GFLOP/s = 2 x multiply-adds / median time. `ratio` is GB/s / the backend's read "
        "limit for memory-bound cases (GEMV, attention, element-wise ops) and the baseline's median time / the "
        "case's median time for GEMMs (GFLOP/s relative to OpenBLAS or CLBlast SGEMM of the same f32 shape, "
        "whatever the weight type). Limits: cpu and cpu_ref use the CPU's read bandwidth at --threads (machine.h); "
        "opencl and vulkan their device's own read kernel (kernels/bench_read.cl, shaders/bench_read.comp), "
        "measured once for the run and again around each memory-bound case: such a case is timed in 5 rounds, each "
        "between a short read burst just before and one just after it (and each round starts with --warmup untimed runs "
        "of its own, after its first burst); its `limit` is the median over the rounds "
        "of the two bursts' mean, and its `ratio` the median over the rounds of the round's GB/s over the round's "
        "own limit (the 2-thread bandwidth of a shared VM changes mode between seconds). Cases "
        "a backend does not support (backend::supports) are listed as unsupported. cpu_ref (the naive oracle) is "
        "left out unless --with-ref or named in --backend.");
    cmd->add_flag("--support", o->support, "Print the op x type x backend support matrix (markdown) and exit");
    cmd->add_option("-b,--backend", o->backends, "Backends to run (comma-separated; default: all available)")
        ->delimiter(',');
    cmd->add_flag("--with-ref", o->with_ref, "Also time cpu_ref (slow)");
    cmd->add_option("--filter", o->filter, "Only cases whose name matches this regular expression (ECMAScript)");
    cmd->add_option("-t,--threads", o->threads,
                    "Threads of the cpu backend, OpenBLAS and the read bandwidth "
                    "(0 = hardware threads)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--min-seconds", o->min_seconds, "Repeat each case until its runs add up to this many seconds")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--runs", o->runs, "... or until this many runs")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--warmup", o->warmup, "Untimed runs before each measurement")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--read-mib", o->read_mib, "Size of the read-bandwidth arrays (CPU and device) in MiB")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 16));
    cmd->add_option("--cold-mib", o->cold_mib,
                    "Memory-bound cases rotate over copies of their data adding up to this many MiB (0: one copy)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_flag("--check", o->check, "Check every case against cpu_ref before timing it (exit 1 on a mismatch)");
    cmd->add_flag("--smoke", o->smoke, "Tiny shapes, 1 run each, checked against cpu_ref (for ctest)");
    cmd->add_option("--seed", o->seed, "Seed of the case data")->capture_default_str();
    add_out_option(cmd, o->out);
    return [o] {
        if (o->support) {
            std::fputs(test::support_markdown().c_str(), stdout);
            return 0;
        }
        repeat_policy policy{o->warmup, o->min_seconds, o->runs, std::min(3, o->runs)};
        int64_t read_mib = o->read_mib;
        if (o->smoke) policy = {0, 0.0, 1, 1}, o->check = true, read_mib = std::min<int64_t>(read_mib, 16);
        const int threads = o->threads > 0 ? o->threads : hardware_threads();
        std::regex filter;
        try {
            filter = std::regex(o->filter.empty() ? ".*" : o->filter);
        } catch (const std::regex_error& e) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "--filter '" + o->filter + "' is not a regular expression: " + e.what());
        }

        report rep("ops");
        rep.meta()["threads"] = threads;
        rep.meta()["smoke"] = o->smoke;
        rep.meta()["read_bytes"] = read_mib << 20;
        rep.meta()["repeat"] = {
            {"warmup", policy.warmup}, {"min_seconds", policy.min_seconds}, {"max_runs", policy.max_runs}};
        const auto& mi = rep.meta()["machine"];
        std::printf("%s, %d hardware threads, %d used, load average %s\n", mi["cpu"].get<std::string>().c_str(),
                    mi["hardware_threads"].get<int>(), threads, mi["load_average_start"].dump().c_str());

        // ---- the backends ----
        std::vector<std::string> names = o->backends;
        const bool explicit_list = !names.empty();
        if (!explicit_list) {
            for (const auto& n : backend_names())
                if (n != "cpu_ref" || o->with_ref) names.push_back(n);
        }
        std::vector<bench_backend> bes;
        auto& limits = rep.add_table("limits", "Read limits measured in this run (GB/s = 1e9 B/s)",
                                     {{"backend", "backend", 8, 0},
                                      {"what", "what", 34, 0},
                                      {"gbps_min", "GB/s min", 9, 2},
                                      {"gbps_median", "GB/s med", 9, 2},
                                      {"gbps_max", "GB/s max", 9, 2},
                                      {"runs", "runs", 5, 0}});
        for (const auto& n : names) {
            bench_backend bb{n, nullptr, 0, "", n == "opencl" ? "clblast" : "openblas"};
            try {
                bb.b = make_backend(n);
            } catch (const error& e) {
                // A named backend that does not exist is the user's mistake; an absent device is a fact here.
                if (e.status() != TANDEM_ERR_BACKEND || explicit_list) throw;
                limits.add({n, std::string("not available: ") + e.what(), nullptr, nullptr, nullptr, 0});
                continue;
            }
            bb.b->set_threads(threads);
            rep.add_backend(n, bb.b->describe());
            bes.push_back(std::move(bb));
        }
        std::unique_ptr<backend> ref;
        if (o->check) ref = make_backend("cpu_ref");

        // ---- the limits: CPU read bandwidth at the thread count used, each device's read kernel ----
        const size_t read_bytes = size_t(read_mib) << 20;
        const double cold_bytes = o->smoke ? 0.0 : double(o->cold_mib << 20);
        rep.meta()["cold_bytes"] = cold_bytes;
        // The CPU's 2-thread bandwidth here changes mode (~30 or ~50 GB/s) from one minute to the next, so besides
        // these run-wide limits every memory-bound case is compared with the read bandwidth measured just before
        // and just after it (read_now).
        thread_team team(threads);
        bandwidth_array arr(read_bytes, team, true);
        double cpu_read = 0;
        {
            const repeat_policy rp{1, policy.min_seconds, std::max(policy.max_runs, 3), std::min(3, policy.max_runs)};
            const timing t = measure_bandwidth(mem_kernel::read, arr, team, threads, rp);
            const double b = mem_kernel_bytes(mem_kernel::read, arr);
            cpu_read = b / t.median / 1e9;
            limits.add({"cpu", "CPU read, " + std::to_string(threads) + " threads", b / t.max / 1e9, cpu_read,
                        b / t.min / 1e9, int64_t(t.seconds.size())});
        }
        for (auto& bb : bes) {
            if (bb.name == "cpu" || bb.name == "cpu_ref") {
                bb.read_gbps = cpu_read, bb.read_what = "cpu read";
                continue;
            }
            const baseline_result r = device_read(*bb.b, read_bytes, policy);
            if (r.t) {
                bb.read_gbps = r.bytes / r.t->median / 1e9, bb.read_what = bb.name + " read";
                limits.add({bb.name, r.what, r.bytes / r.t->max / 1e9, bb.read_gbps, r.bytes / r.t->min / 1e9,
                            int64_t(r.t->seconds.size())});
            } else {
                limits.add({bb.name, r.why_not, nullptr, nullptr, nullptr, 0});
            }
        }
        // The backend's read bandwidth now (GB/s, median of a short burst), 0 when it has no read kernel.
        const repeat_policy burst{1, 0.2, 5, 3};
        auto read_now = [&](const bench_backend& bb) -> double {
            if (o->smoke || bb.read_gbps <= 0) return bb.read_gbps;
            if (bb.name == "cpu" || bb.name == "cpu_ref") {
                const timing t = measure_bandwidth(mem_kernel::read, arr, team, threads, burst);
                return mem_kernel_bytes(mem_kernel::read, arr) / t.median / 1e9;
            }
            const baseline_result r = device_read(*bb.b, read_bytes, burst);
            return r.t ? r.bytes / r.t->median / 1e9 : bb.read_gbps;
        };

        // ---- the cases ----
        auto& base = rep.add_table("baselines", "BLAS baselines at the matmul shapes (f32, same run)",
                                   {{"shape", "shape", 22, 0},
                                    {"what", "what", 15, 0},
                                    {"ms_median", "ms med", 9, 3},
                                    {"gbps", "GB/s", 8, 2},
                                    {"gflops", "GFLOP/s", 9, 2},
                                    {"runs", "runs", 5, 0}});
        std::map<std::pair<std::string, shape>, std::optional<double>> baseline_s;  // (library, shape) -> median s
        auto baseline = [&](const std::string& library, bench_backend* on, const shape& s) -> std::optional<double> {
            const auto key = std::make_pair(library, s);
            if (auto it = baseline_s.find(key); it != baseline_s.end()) return it->second;
            const auto [m, n, k] = s;
            const baseline_result r = library == "clblast" ? clblast_matmul(*on->b, m, n, k, policy)
                                                           : openblas_matmul(m, n, k, threads, policy);
            const std::string sh = "M=" + std::to_string(m) + " K=" + std::to_string(k) + " N=" + std::to_string(n);
            std::optional<double> med;
            if (r.t) {
                med = r.t->median;
                const double flops = 2.0 * double(m) * double(n) * double(k), bytes = 4.0 * double(n * k);
                base.add({sh, r.what, ms(*med), bytes / *med / 1e9, flops / *med / 1e9, int64_t(r.t->seconds.size())});
            } else {
                base.add({sh, r.what + ": " + r.why_not, nullptr, nullptr, nullptr, 0});
            }
            return baseline_s[key] = med;
        };

        auto& t = rep.add_table("ops", "Op cases: time per run (op + synchronize), throughput and ratio to the limit",
                                {{"case", "case", 44, 0},
                                 {"backend", "backend", 7, 0},
                                 {"ms_min", "ms min", 9, 3},
                                 {"ms_median", "ms med", 9, 3},
                                 {"ms_max", "ms max", 9, 3},
                                 {"runs", "runs", 4, 0},
                                 {"gbps", "GB/s", 7, 2},
                                 {"gflops", "GFLOP/s", 8, 2},
                                 {"vs", "vs", 16, 0},
                                 {"limit", "limit", 8, 2},
                                 {"ratio", "ratio", 6, 2},
                                 {"status", "status", 11, 0}});
        int failures = 0;
        for (const auto& pc : test::perf_cases(o->smoke, o->seed)) {
            if (!std::regex_search(pc.name, filter)) continue;
            std::optional<test::op_case> c;
            for (auto& bb : bes) {
                auto row = [&](std::vector<nlohmann::json> cells) {
                    std::vector<nlohmann::json> r{pc.name, bb.name};
                    r.insert(r.end(), cells.begin(), cells.end());
                    t.add(std::move(r));
                };
                if (!bb.b->supports(pc.o, pc.t)) {
                    row({nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, "unsupported"});
                    continue;
                }
                if (!c) c = pc.build();
                try {
                    if (ref) {
                        const std::string msg = test::run_case(*ref, *bb.b, *c);
                        if (!msg.empty()) {
                            ++failures;
                            row({nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 "FAILED: " + msg});
                            continue;
                        }
                    }
                    // Memory-bound cases rotate over enough staged copies to exceed the last-level cache (a Q4_0
                    // 4096 x 4096 GEMV reads 9 MiB: timed on one copy it would run from a 32 MiB L3).
                    const bool memory_bound = pc.bound == test::perf_bound::memory;
                    const int copies = memory_bound ? int(std::clamp(double(cold_bytes) / pc.bytes, 1.0, 64.0)) : 1;
                    std::vector<std::unique_ptr<test::staged_case>> staged;
                    for (int i = 0; i < copies; ++i) staged.push_back(std::make_unique<test::staged_case>(*bb.b, *c));
                    size_t next = 0;
                    auto run_once = [&] { staged[next++ % staged.size()]->run(); };
                    repeat_policy rotated = policy;
                    rotated.warmup *= copies;  // every copy once: first dispatches on a buffer may cost extra
                    // A memory-bound case with a read limit is timed in rounds, each between two read bursts, and
                    // its ratio is the median over the rounds of the round's GB/s over that round's limit: the
                    // shared VM's 2-thread bandwidth changes mode from second to second, and one limit for the
                    // whole case mixes a run in one mode with a limit from the other.
                    const bool rounds = memory_bound && bb.read_gbps > 0 && !o->smoke;
                    const int n_rounds = rounds ? 5 : 1;
                    std::vector<double> all, limits, ratios;
                    for (int r = 0; r < n_rounds; ++r) {
                        repeat_policy p = rotated;
                        if (rounds) {
                            // Later rounds too start with --warmup untimed runs: the read burst just before a
                            // round runs on the bench's own threads while the backend's pool sleeps, and the
                            // first call after it can find the pool's worker not yet running (on the Intel VM a
                            // 4096 x 4096 Q4_0 GEMV round of 3 runs took 0.39-0.42 ms for its first run and
                            // 0.30-0.32 for the others; 1000 runs: a median of 0.30-0.31).
                            p.warmup = r == 0 ? rotated.warmup : policy.warmup;
                            p.min_seconds = policy.min_seconds / n_rounds;
                            p.max_runs = std::max(policy.min_runs, (policy.max_runs + n_rounds - 1) / n_rounds);
                            p.min_runs = std::min(p.min_runs, p.max_runs);
                        }
                        const double before = rounds ? read_now(bb) : 0.0;
                        const timing rt = measure(run_once, p);
                        all.insert(all.end(), rt.seconds.begin(), rt.seconds.end());
                        if (rounds) {
                            limits.push_back(0.5 * (before + read_now(bb)));
                            ratios.push_back(pc.bytes / rt.median / 1e9 / limits.back());
                        }
                    }
                    const timing tm = summarize(all);
                    const double gbps = pc.bytes / tm.median / 1e9;
                    const nlohmann::json gflops = pc.flops > 0 ? nlohmann::json(pc.flops / tm.median / 1e9) : nullptr;
                    nlohmann::json vs = nullptr, limit = nullptr, ratio = nullptr;
                    if (pc.bound == test::perf_bound::compute) {
                        if (auto b = baseline(bb.gemm_library, &bb, {pc.m, pc.n, pc.k})) {
                            vs = bb.gemm_library + " sgemm";
                            limit = pc.flops / *b / 1e9;
                            ratio = *b / tm.median;
                        }
                    } else if (rounds) {
                        vs = bb.read_what, limit = summarize(limits).median, ratio = summarize(ratios).median;
                    } else if (bb.read_gbps > 0) {
                        vs = bb.read_what, limit = bb.read_gbps, ratio = gbps / bb.read_gbps;
                    }
                    row({ms(tm.min), ms(tm.median), ms(tm.max), int64_t(tm.seconds.size()), gbps, gflops, vs, limit,
                         ratio, ref ? "ok (checked)" : "ok"});
                } catch (const std::exception& e) {
                    ++failures;
                    row({nullptr, nullptr, nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr,
                         std::string("error: ") + e.what()});
                }
            }
            // The GEMV baselines (f32 only, once per shape): what a BLAS library makes of the same weight stream.
            if (pc.o == op::matmul && pc.t == dtype::f32 && pc.m == 1) {
                for (auto& bb : bes) {
                    if (bb.name == "opencl") baseline("clblast", &bb, {pc.m, pc.n, pc.k});
                }
                baseline("openblas", nullptr, {pc.m, pc.n, pc.k});
            }
        }
        t.note(
            "ratio: memory-bound cases: the median over 5 rounds of the round's GB/s / the backend's read limit "
            "measured in short bursts just before and just after that round (`limit`: the median of those limits), "
            "since the 2-thread bandwidth of a shared VM changes mode between seconds; GEMMs: the f32 BLAS "
            "baseline's time / this time at the same shape (`vs` names the library). Run-wide limits and "
            "baselines: the tables above.");
        rep.write(o->out);
        if (failures) std::fprintf(stderr, "tandem-bench ops: %d case(s) failed or threw\n", failures);
        return failures ? 1 : 0;
    };
}

}  // namespace tandem::bench
