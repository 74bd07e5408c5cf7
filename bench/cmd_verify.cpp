// `tandem-bench verify` (issue 6's roofline item): the time of one target pass verifying a token tree of 1..64
// nodes after a ~64-token prompt, next to the bound no implementation can beat on this machine,
// max(weight bytes / read bandwidth, matmul flops / peak GEMM rate), both measured in the same run.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/models.h"
#include "bench/report.h"
#include "engine/error.h"
#include "engine/quantize.h"
#include "engine/speculative.h"

namespace tandem::bench {

namespace {

struct verify_options {
    std::string model, shape = "tinyllama-1.1b", type = "q4_0", backend = "cpu", out;
    int threads = 0;
    int prompt = 64;
    std::vector<int> nodes{1, 2, 4, 8, 16, 32, 64};
    int gemm_rows = 256;
    int64_t mib = 1024;
    bool small_pages = false;
    repeat_policy repeat{1, 60.0, 9, 3};  // in rounds, see the footer
};

// A weight of `type` and shape {k, n} filled with seeded values in [-1, 1) (quantized for block types).
std::unique_ptr<buffer> random_weight(backend& be, dtype type, int64_t k, int64_t n, std::mt19937& gen) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    const size_t row = dtype_row_bytes(type, k);
    std::vector<uint8_t> host(row * size_t(n));
    std::vector<float> f(static_cast<size_t>(k));
    for (int64_t r = 0; r < n; ++r) {
        for (auto& x : f) x = u(gen);
        uint8_t* dst = host.data() + size_t(r) * row;
        if (type == dtype::f32) {
            std::memcpy(dst, f.data(), row);
        } else if (type == dtype::f16) {
            for (int64_t i = 0; i < k; ++i) reinterpret_cast<uint16_t*>(dst)[i] = fp32_to_fp16(f[size_t(i)]);
        } else if (quantize_supported(type)) {
            quantize_row(type, f.data(), dst, k);
        } else {
            throw error(TANDEM_ERR_UNSUPPORTED, "no quantizer for " + std::string(dtype_name(type)) + " weights");
        }
    }
    auto buf = be.alloc(host.size());
    be.upload(*buf, 0, host.data(), host.size());
    return buf;
}

// The FFN matmul (the model's FFN weight type and shape {k, n}) by any number of activation rows up to max_rows,
// on one set of buffers.
class gemm_bench {
 public:
    gemm_bench(backend& be, dtype type, int64_t k, int64_t n, int64_t max_rows) : be_(be), type_(type), k_(k), n_(n) {
        std::mt19937 gen(7);
        w_ = random_weight(be, type, k, n, gen);
        // Prepared as the model's weights are (backend::prepare_weight), so that the rate is the model's.
        be.prepare_weight(tensor{w_.get(), 0, type, {k, n, 1, 1}});
        std::vector<float> xh(size_t(k * max_rows));
        std::uniform_real_distribution<float> u(-1.f, 1.f);
        for (auto& v : xh) v = u(gen);
        x_ = be.alloc(xh.size() * sizeof(float));
        be.upload(*x_, 0, xh.data(), xh.size() * sizeof(float));
        out_ = be.alloc(size_t(n * max_rows) * sizeof(float));
    }
    double flops(int64_t rows) const { return 2.0 * double(k_) * double(n_) * double(rows); }
    // Appends the seconds of matmuls by `rows` rows, repeated for about `seconds` (at least once).
    void sample(int64_t rows, double seconds, std::vector<double>& out) {
        const tensor tw{w_.get(), 0, type_, {k_, n_, 1, 1}};
        const tensor tx{x_.get(), 0, dtype::f32, {k_, rows, 1, 1}};
        const tensor to{out_.get(), 0, dtype::f32, {n_, rows, 1, 1}};
        const timing t = measure(
            [&] {
                be_.matmul(tw, tx, to);
                be_.synchronize();
            },
            {0, seconds, 100, 1});
        out.insert(out.end(), t.seconds.begin(), t.seconds.end());
    }

 private:
    backend& be_;
    dtype type_;
    int64_t k_, n_;
    std::unique_ptr<buffer> w_, x_, out_;
};

draft_tree chain_tree(int n, std::mt19937& gen, int32_t n_vocab) {
    std::uniform_int_distribution<int32_t> tok(259, n_vocab - 1);
    draft_tree t;
    for (int i = 0; i < n; ++i) t.add(tok(gen), i - 1);
    return t;
}

// Breadth-first, four children per node (four roots under the last committed token): 64 nodes are 4 + 16 + 44,
// depth 3, the shape of a wide static tree such as --tree 4,4,4.
draft_tree bushy_tree(int n, std::mt19937& gen, int32_t n_vocab) {
    std::uniform_int_distribution<int32_t> tok(259, n_vocab - 1);
    draft_tree t;
    for (int i = 0; i < n; ++i) t.add(tok(gen), i < 4 ? -1 : (i - 4) / 4);
    return t;
}

// One tree of the benchmark with its own sequence in the verifier's pool.
struct tree_case {
    std::string name;
    draft_tree tree;
    std::unique_ptr<verify_sequence> seq;
    std::vector<double> seconds;  // timed passes, one per round
};

int tree_depth(const draft_tree& t) {
    const auto d = t.depths();
    return d.empty() ? 0 : 1 + *std::max_element(d.begin(), d.end());
}

}  // namespace

action add_verify(CLI::App& app) {
    auto o = std::make_shared<verify_options>();
    auto* cmd = app.add_subcommand("verify",
                                   "Time of verifying a token tree of 1..64 nodes in one target pass, against its "
                                   "roofline bound measured in the same run (issue 6).");
    cmd->footer(
        "Measured in one run: (a) the bytes of every weight a forward pass streams (all layer matrices, the output "
        "head and the norms; token_embd is only gathered); (b) the read bandwidth, as `limits` measures it, on "
        "--threads threads; (c) the backend's matmul rate on the model's FFN weight type and shape (n_ff x n_embd) "
        "by --gemm-rows activation rows, by 1 row and by each pass's row count: the peak is the best median of them "
        "(the kernel's rate depends on the row count); (d) the time of one target pass of the batch verifier "
        "(engine/batch_verify.h, greedy: the pass, the argmax of every row's logits and the accepted path's K/V "
        "move) over a chain and a bushy tree (4 children per node, breadth first) of each --nodes size, after a "
        "prompt of --prompt random tokens. A pass computes the pending token plus the tree: rows = nodes + 1; "
        "nodes = 0 is the one-token decode step. Draft tokens are random, so nothing is accepted and the context "
        "stays near the prompt; each tree keeps its own sequence, whose prefill is never timed.\n\nThe machine is "
        "shared, so (b), (c) and (d) are interleaved: each round times every tree once (in a shuffled order), 3 "
        "to 10 bandwidth runs before the passes and 2 to 5 after them, and about 50 ms of each matmul; rounds "
        "repeat (after --warmup untimed ones) until "
        "--min-time seconds or --runs rounds, at least 3. Every figure is the median over the rounds (min and max "
        "kept).\n\nbound = max(weight bytes / read bandwidth, 2 * params * rows / peak GEMM), where params are the "
        "elements of the streamed matrices; ratio = measured median / bound (the issue's goal: <= 1.5 at every size "
        "on cpu); min/bnd = fastest pass / bound, the better estimate when other work shares the machine; rnd ratio = "
        "the median over the rounds of each pass over the bound with that round's own bandwidth (the mean of its "
        "read runs just before the passes and a short burst just after them), which a change of the shared VM's "
        "2-thread bandwidth mode between rounds does not skew. The "
        "bandwidth is the host's, so for GPU backends on other memory the bound is only indicative. "
        "With no --model, the model is the synthetic --shape in --type, generated into the cache directory "
        "($TANDEM_CACHE_DIR/bench, else ~/.cache/tandem/bench) on first use.");
    cmd->add_option("-m,--model", o->model, "GGUF model (default: the synthetic --shape/--type model)");
    cmd->add_option("--shape", o->shape, "Synthetic shape when no --model: 260k, 15m, 42m, 110m, tinyllama-1.1b")
        ->capture_default_str();
    cmd->add_option("--type", o->type,
                    "Weight type of the synthetic model: f32, f16, q8_0, q4_0 (or another that `tandem synth` writes)")
        ->capture_default_str();
    std::string names;
    for (const auto& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("-b,--backend", o->backend, "Backend: " + names)->capture_default_str();
    cmd->add_option("-t,--threads", o->threads, "CPU threads for the backend and the bandwidth (0 = all)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--prompt", o->prompt, "Prompt tokens before the tree")
        ->capture_default_str()
        ->check(CLI::Range(2, 1024));
    cmd->add_option("--nodes", o->nodes, "Tree sizes")->capture_default_str()->check(CLI::Range(1, 256));
    cmd->add_option("--gemm-rows", o->gemm_rows, "Activation rows of the peak-GEMM measurement")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--mib", o->mib, "Bandwidth array size in MiB")
        ->capture_default_str()
        ->check(CLI::Range(16, 1 << 20));
    cmd->add_flag("--small-pages", o->small_pages,
                  "Keep the bandwidth array on 4 KiB pages, as a model mmapped from its file is (default: huge pages)");
    add_repeat_options(cmd, o->repeat);
    add_out_option(cmd, o->out);
    return [o] {
        const int threads = o->threads > 0 ? o->threads : hardware_threads();
        report rep("verify");
        std::string path = o->model;
        if (path.empty()) path = synth_model_cached(o->shape, parse_type(o->type));
        auto be = make_backend(o->backend);
        be->set_threads(threads);
        auto m = model::load(path, std::move(be));
        rep.add_backend(o->backend, m->be().describe());
        const llama_hparams& hp = m->hparams();
        const weight_totals w = streamed_weights(*m);
        const dtype ffn_type = m->layer(0).w_gate.type;
        auto& meta = rep.meta();
        meta["model"] = path;
        meta["backend"] = o->backend;
        meta["threads"] = threads;
        meta["bandwidth_bytes"] = int64_t(o->mib) << 20;
        meta["huge_pages"] = !o->small_pages;
        meta["hparams"] = {{"n_embd", hp.n_embd},       {"n_layer", hp.n_layer}, {"n_head", hp.n_head},
                           {"n_head_kv", hp.n_head_kv}, {"n_ff", hp.n_ff},       {"n_vocab", hp.n_vocab}};
        meta["weight_bytes"] = w.bytes;
        meta["matrix_params"] = w.params;
        meta["prompt_tokens"] = o->prompt;
        std::printf("%s: %s, %d threads, load average %s\n", path.c_str(), o->backend.c_str(), threads,
                    meta["machine"]["load_average_start"].dump().c_str());

        // The cases: the decode step, then a chain and a bushy tree of each size (they coincide at one node).
        std::vector<int> sizes = o->nodes;
        std::sort(sizes.begin(), sizes.end());
        sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
        const int max_nodes = sizes.empty() ? 0 : sizes.back();
        std::mt19937 gen(1234);
        std::uniform_int_distribution<int32_t> tok(259, hp.n_vocab - 1);
        std::vector<int32_t> prompt{1};
        while (int(prompt.size()) < o->prompt) prompt.push_back(tok(gen));
        sampling_params sp;
        sp.temperature = 0;
        std::vector<tree_case> cases;
        cases.push_back({"decode", draft_tree{}, nullptr, {}});
        for (int n : sizes) {
            cases.push_back({"chain", chain_tree(n, gen, hp.n_vocab), nullptr, {}});
            if (n > 1) cases.push_back({"bushy", bushy_tree(n, gen, hp.n_vocab), nullptr, {}});
        }
        // One pool region per case; a case whose region runs short is restarted (prefill untimed).
        const int64_t region = int64_t(o->prompt) + 2 * int64_t(max_nodes + 1) + 64;
        batch_verifier bv(*m, region, int32_t(cases.size()), size_t(std::max(max_nodes, 1)));
        auto pass = [&](tree_case& c) {
            verify_job j;
            j.seq = c.seq.get();
            j.tree = &c.tree;
            bv.run({&j, 1});
            if (j.error) std::rethrow_exception(j.error);
            if (!j.done) throw error(TANDEM_ERR_INTERNAL, "the verifier had no region for a benchmark sequence");
        };
        auto prime = [&](tree_case& c) {
            bv.start(*c.seq, prompt);
            pass(c);  // the prompt's prefill together with the tree
        };
        for (auto& c : cases) {
            c.seq = std::make_unique<verify_sequence>(sp);
            prime(c);
        }

        std::vector<int> gemm_rows{o->gemm_rows, 1};
        for (int n : sizes) gemm_rows.push_back(n + 1);
        std::sort(gemm_rows.begin(), gemm_rows.end());
        gemm_rows.erase(std::unique(gemm_rows.begin(), gemm_rows.end()), gemm_rows.end());
        gemm_bench gemm(m->be(), ffn_type, hp.n_embd, hp.n_ff, gemm_rows.back());
        std::map<int, std::vector<double>> gemm_seconds;

        thread_team team(threads);
        bandwidth_array arr(size_t(o->mib) << 20, team, !o->small_pages);
        const double read_bytes = mem_kernel_bytes(mem_kernel::read, arr);
        std::vector<double> read_seconds;
        std::vector<double> round_bandwidth;  // per timed round: mean of its before / after read medians (B/s)

        // Rounds: everything once per round, so that a change of load touches every figure alike.
        std::vector<size_t> order(cases.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        const int max_rounds = std::max(1, o->repeat.max_runs);
        const int min_rounds = std::clamp(o->repeat.min_runs, 1, max_rounds);
        const double t_start = now_seconds();
        int timed_rounds = 0;
        for (int round = 0;; ++round) {
            const bool timed = round >= o->repeat.warmup;
            std::fprintf(stderr, "\r  %s round %d, %.0f s ...", timed ? "timed" : "warm-up",
                         timed ? timed_rounds + 1 : round + 1, now_seconds() - t_start);
            std::shuffle(order.begin(), order.end(), gen);
            std::vector<double> scratch;
            const timing bw = measure_bandwidth(mem_kernel::read, arr, team, threads, {0, 0.3, 10, 3});
            if (timed) read_seconds.insert(read_seconds.end(), bw.seconds.begin(), bw.seconds.end());
            std::vector<double> pass_seconds(cases.size());
            for (size_t i : order) {
                tree_case& c = cases[i];
                if (bv.seq_capacity() - int64_t(c.seq->tokens.size()) < int64_t(c.tree.size()) + 2) prime(c);
                const double t0 = now_seconds();
                pass(c);
                pass_seconds[i] = now_seconds() - t0;
            }
            // The round's own bandwidth: its runs just before the passes and a short burst just after them (the
            // 2-thread bandwidth of a shared VM changes mode between seconds), for the per-round ratios.
            const timing bw_after = measure_bandwidth(mem_kernel::read, arr, team, threads, {0, 0.1, 5, 2});
            for (int r : gemm_rows) gemm.sample(r, 0.05, timed ? gemm_seconds[r] : scratch);
            if (timed) {
                read_seconds.insert(read_seconds.end(), bw_after.seconds.begin(), bw_after.seconds.end());
                round_bandwidth.push_back(read_bytes / ((bw.median + bw_after.median) / 2));
                for (size_t i = 0; i < cases.size(); ++i) cases[i].seconds.push_back(pass_seconds[i]);
            }
            if (!timed) continue;
            ++timed_rounds;
            const double elapsed = now_seconds() - t_start;
            if (timed_rounds >= max_rounds || (timed_rounds >= min_rounds && elapsed >= o->repeat.min_seconds)) break;
        }
        std::fprintf(stderr, "\r%60s\r", "");
        meta["rounds"] = timed_rounds;

        const timing bw = summarize(read_seconds);
        const double bandwidth = read_bytes / bw.median;
        meta["read_gbps"] = {{"median", bandwidth / 1e9},
                             {"min", read_bytes / bw.max / 1e9},
                             {"max", read_bytes / bw.min / 1e9},
                             {"runs", read_seconds.size()}};
        std::map<int, double> gemm_rate;  // median GFLOP/s by rows
        double peak = 0;
        int peak_rows = 0;
        nlohmann::json by_rows = nlohmann::json::array();
        for (int r : gemm_rows) {
            const timing t = summarize(gemm_seconds[r]);
            gemm_rate[r] = gemm.flops(r) / t.median;
            if (gemm_rate[r] > peak) peak = gemm_rate[r], peak_rows = r;
            by_rows.push_back({{"rows", r},
                               {"gflops_min", gemm.flops(r) / t.max / 1e9},
                               {"gflops_median", gemm_rate[r] / 1e9},
                               {"gflops_max", gemm.flops(r) / t.min / 1e9},
                               {"runs", t.seconds.size()}});
        }
        meta["gemm"] = {{"type", std::string(dtype_name(ffn_type))},
                        {"k", hp.n_embd},
                        {"n", hp.n_ff},
                        {"peak_gflops", peak / 1e9},
                        {"peak_rows", peak_rows},
                        {"by_rows", by_rows}};

        std::printf("(a) weights streamed per pass: %.1f MB in %.3g matrix parameters (%s FFN)\n", w.bytes / 1e6,
                    w.params, std::string(dtype_name(ffn_type)).c_str());
        std::printf("(b) read bandwidth, %d threads: %.1f GB/s median (%.1f..%.1f, %zu runs)\n", threads,
                    bandwidth / 1e9, read_bytes / bw.max / 1e9, read_bytes / bw.min / 1e9, read_seconds.size());
        std::printf("(c) %s matmul %d x %d: peak %.1f GFLOP/s (median at %d rows; %.1f at %d rows, %.1f at 1 row)\n",
                    std::string(dtype_name(ffn_type)).c_str(), hp.n_ff, hp.n_embd, peak / 1e9, peak_rows,
                    gemm_rate[o->gemm_rows] / 1e9, o->gemm_rows, gemm_rate[1] / 1e9);

        const double mem_bound = w.bytes / bandwidth;
        const double decode_s = summarize(cases.front().seconds).median;
        auto& t = rep.add_table("verify",
                                "(d) One verification pass (ms), " + std::to_string(timed_rounds) +
                                    " rounds, vs bound = max(weights / bandwidth, 2 * params * rows / peak GEMM)",
                                {{"tree", "tree", 6, 0},
                                 {"nodes", "nodes", 5, 0},
                                 {"rows", "rows", 4, 0},
                                 {"depth", "depth", 5, 0},
                                 {"ms_min", "ms min", 8, 2},
                                 {"ms_median", "ms med", 8, 2},
                                 {"ms_max", "ms max", 8, 2},
                                 {"bound_ms", "bound ms", 8, 2},
                                 {"bound_by", "bound by", 8, 0},
                                 {"ratio", "ratio", 6, 2},
                                 {"ratio_min", "min/bnd", 7, 2},
                                 {"ratio_rounds", "rnd ratio", 9, 2},
                                 {"vs_decode", "x decode", 8, 2},
                                 {"ffn_gflops", "FFN GF/s", 8, 1}});
        for (const auto& c : cases) {
            const timing tm = summarize(c.seconds);
            const int rows = int(c.tree.size()) + 1;
            const double compute_bound = 2.0 * w.params * rows / peak;
            const double bound = std::max(mem_bound, compute_bound);
            std::vector<double> per_round;  // each pass over the bound with its own round's bandwidth
            for (size_t r = 0; r < c.seconds.size(); ++r)
                per_round.push_back(c.seconds[r] / std::max(w.bytes / round_bandwidth[r], compute_bound));
            t.add({c.name, int(c.tree.size()), rows, tree_depth(c.tree), tm.min * 1e3, tm.median * 1e3, tm.max * 1e3,
                   bound * 1e3, compute_bound > mem_bound ? "compute" : "memory", tm.median / bound, tm.min / bound,
                   summarize(per_round).median, tm.median / decode_s, gemm_rate[rows] / 1e9});
        }
        char note[320];
        std::snprintf(note, sizeof note,
                      "memory bound %.2f ms (%.1f GB/s); compute bound %.2f ms per row (%.1f GFLOP/s, best at %d "
                      "rows), so compute dominates from %.1f rows on. FFN GF/s: the n_ff x n_embd matmul alone at "
                      "that many rows.",
                      mem_bound * 1e3, bandwidth / 1e9, 2.0 * w.params / peak * 1e3, peak / 1e9, peak_rows,
                      mem_bound * peak / (2.0 * w.params));
        t.note(note);
        rep.write(o->out);
        return 0;
    };
}

}  // namespace tandem::bench
