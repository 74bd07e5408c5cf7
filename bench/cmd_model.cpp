// `tandem-bench model` (issue 9): what a model does per second on each backend and thread count: prompt
// processing, greedy decode steps and one tree-verification pass, each also as the bytes of weights it streams
// per second, set against the read bandwidth measured at the same thread count in the same run.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <span>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/models.h"
#include "bench/report.h"
#include "engine/error.h"
#include "engine/forward.h"

namespace tandem::bench {

namespace {

struct model_options {
    std::string model, shape = "tinyllama-1.1b", type = "q4_0", out;
    std::vector<std::string> backends{"cpu"};
    std::vector<int> threads;  // empty: 1 and all hardware threads
    int prompt = 64;
    int decode = 16;
    std::vector<int> tree{16, 64};
    int repeats = 5, warmup = 1;
    int64_t mib = 1024;
    bool smoke = false;
};

// The --smoke run: the bundled 260K model, tiny sizes, one timed round; seconds, not minutes.
void apply_smoke(model_options& o) {
    o.model = std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf";
    o.prompt = 16, o.decode = 4, o.tree = {4, 16};
    o.repeats = 1, o.warmup = 1, o.mib = 64;
    if (o.threads.empty()) o.threads = {1};
}

int32_t argmax(std::span<const float> x) { return int32_t(std::max_element(x.begin(), x.end()) - x.begin()); }

// Breadth-first, four children per node (four roots under the pending token), as `verify`'s bushy tree: the shape
// of a wide static tree such as --tree 4,4,4 of `tandem generate`; 64 nodes are 4 + 16 + 44, depth 3.
std::vector<int32_t> bushy_parents(int n) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) p[size_t(i)] = i < 4 ? -1 : (i - 4) / 4;
    return p;
}

// The passes of one (backend, threads) configuration on one KV cache: the prompt at slots [0, P), decode steps
// at [P, P + decode), and a tree pass: the pending token at slot P, then the nodes behind it, each attending to
// [0, P] and its own ancestors (the layout engine/batch_verify.cpp gives one sequence).
class passes {
 public:
    passes(const model& m, const model_options& o)
        : o_(o),
          cache_(m, int64_t(o.prompt) + 1 + std::max(o.decode, *std::max_element(o.tree.begin(), o.tree.end()))),
          fwd_(m, cache_) {
        std::mt19937 gen(1234);
        std::uniform_int_distribution<int32_t> tok(std::min(259, m.hparams().n_vocab - 1), m.hparams().n_vocab - 1);
        prompt_.push_back(1);
        while (int(prompt_.size()) < o.prompt) prompt_.push_back(tok(gen));
        for (int n : o.tree) {
            std::vector<int32_t> tokens(static_cast<size_t>(n));
            for (auto& t : tokens) t = tok(gen);
            trees_.push_back(std::move(tokens));
        }
    }
    // One prompt pass (logits of the last row); returns its seconds and leaves the first decode token pending.
    double prompt() {
        const auto rows = causal_rows(prompt_, 0, 0, false);
        const double t0 = now_seconds();
        fwd_.run(rows, logits_);
        pending_ = argmax(logits_);
        return now_seconds() - t0;
    }
    // The greedy decode steps after the prompt, each the pass of one row plus the argmax of its logits.
    void decode(std::vector<double>& seconds) {
        int32_t next = pending_;
        for (int i = 0; i < o_.decode; ++i) {
            const int32_t pos = o_.prompt + i;
            const batch_row row{next, pos, pos, 0, pos + 1, -1, -1, true};
            const double t0 = now_seconds();
            fwd_.run({&row, 1}, logits_);
            next = argmax(logits_);
            seconds.push_back(now_seconds() - t0);
        }
    }
    // One verification pass of tree i (o.tree[i] nodes, so nodes + 1 rows), logits of every row.
    double tree(size_t i) {
        const auto& tokens = trees_[i];
        const auto parents = bushy_parents(int(tokens.size()));
        const int32_t P = o_.prompt + 1;  // committed tokens, the pending one included
        std::vector<int32_t> depth(tokens.size());
        std::vector<batch_row> rows{{pending_, P - 1, P - 1, 0, P, -1, -1, true}};
        for (size_t k = 0; k < tokens.size(); ++k) {
            const int32_t p = parents[k];
            depth[k] = p < 0 ? 0 : depth[size_t(p)] + 1;
            rows.push_back({tokens[k], P + depth[k], P + int32_t(k), 0, P, 1 + int32_t(k), p < 0 ? -1 : 1 + p, true});
        }
        const double t0 = now_seconds();
        fwd_.run(rows, logits_);
        return now_seconds() - t0;
    }

 private:
    const model_options& o_;
    kv_cache cache_;
    forward_pass fwd_;
    std::vector<int32_t> prompt_;
    std::vector<std::vector<int32_t>> trees_;
    std::vector<float> logits_;
    int32_t pending_ = 0;
};

struct phase_times {
    std::vector<double> prompt, decode, read;
    std::vector<std::vector<double>> tree;  // per tree size
};

// Every phase once per round, the read bandwidth first, so that a change of load touches every figure alike;
// --warmup untimed rounds, then --repeats timed ones.
phase_times time_rounds(passes& p, const model_options& o, bandwidth_array& arr, thread_team& team, int n_threads,
                        const std::string& label) {
    phase_times times, scratch;
    times.tree.resize(o.tree.size());
    scratch.tree.resize(o.tree.size());
    const double t_start = now_seconds();
    const bool progress = isatty(fileno(stderr));  // a log file gets the tables only
    for (int round = 0; round < o.warmup + o.repeats; ++round) {
        const bool timed = round >= o.warmup;
        if (progress) {
            std::fprintf(stderr, "\r  %s, %d threads: %s round %d, %.0f s ...", label.c_str(), n_threads,
                         timed ? "timed" : "warm-up", timed ? round - o.warmup + 1 : round + 1,
                         now_seconds() - t_start);
        }
        phase_times& into = timed ? times : scratch;
        const timing bw = measure_bandwidth(mem_kernel::read, arr, team, n_threads, {0, 0.3, 10, 3});
        into.read.insert(into.read.end(), bw.seconds.begin(), bw.seconds.end());
        into.prompt.push_back(p.prompt());
        p.decode(into.decode);
        for (size_t i = 0; i < o.tree.size(); ++i) into.tree[i].push_back(p.tree(i));
    }
    if (progress) std::fprintf(stderr, "\r%70s\r", "");
    return times;
}

}  // namespace

action add_model(CLI::App& app) {
    auto o = std::make_shared<model_options>();
    auto* cmd = app.add_subcommand("model",
                                   "Prompt, decode and tree-verification tokens/s of a model per backend and thread "
                                   "count, with the weight bytes streamed per second against the read bandwidth.");
    cmd->footer(
        "Per backend and thread count, in rounds (--warmup untimed ones, then --repeats timed ones), each round "
        "times: the read bandwidth on that many threads (as `limits` measures it, 3 to 10 runs); one prompt pass "
        "of --prompt random tokens (the first is BOS); --decode greedy decode steps after it (one row each plus "
        "the argmax of its logits, fed as the next token); and for each --tree size one verification pass: the "
        "pending token plus a tree of that many random draft nodes (four children per node, breadth first) on top "
        "of the prompt, logits for every row, as engine/batch_verify.cpp lays out one sequence. Every figure is "
        "the median over the timed passes (decode: over every step of every round), min and max kept.\n\n"
        "tok/s: prompt tokens, decode steps or tree nodes per second. x decode: time of the pass over the median "
        "decode step. weights GB/s: bytes of every weight a pass streams (all layer matrices, the output head and "
        "the norms; token_embd is only gathered) / time of the pass; / read: that over the read bandwidth of the "
        "same thread count in the same rounds (1 = the pass runs at the memory's speed; a compute-bound pass is "
        "far below). The bandwidth is the host's: for GPU backends it is only a reference. The opencl and vulkan "
        "backends ignore --threads (pocl and llvmpipe size their own thread pools: POCL_MAX_PTHREAD_COUNT, "
        "LP_NUM_THREADS), so there the thread count only chooses the bandwidth it is compared with.\n\n"
        "With no --model, the model is the synthetic --shape in --type, generated into the cache directory "
        "($TANDEM_CACHE_DIR/bench, else ~/.cache/tandem/bench) on first use. A backend that cannot load or run "
        "the model is reported in a note and the exit code is 1; the other backends still run.");
    cmd->add_option("-m,--model", o->model, "GGUF model (default: the synthetic --shape/--type model)");
    cmd->add_option("--shape", o->shape, "Synthetic shape when no --model: 260k, 15m, 42m, 110m, tinyllama-1.1b")
        ->capture_default_str();
    cmd->add_option("--type", o->type, "Weight type of the synthetic model: f32, f16, q8_0, q4_0, q4_k, q6_k")
        ->capture_default_str();
    std::string names;
    for (const auto& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("-b,--backend", o->backends, "Backends, comma-separated: " + names)
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("-t,--threads", o->threads, "Thread counts, comma-separated (default: 1 and all hardware threads)")
        ->delimiter(',')
        ->check(CLI::PositiveNumber);
    cmd->add_option("--prompt", o->prompt, "Prompt tokens")->capture_default_str()->check(CLI::Range(1, 4096));
    cmd->add_option("--decode", o->decode, "Decode steps per round")->capture_default_str()->check(CLI::Range(1, 4096));
    cmd->add_option("--tree", o->tree, "Tree sizes in nodes, comma-separated")
        ->delimiter(',')
        ->capture_default_str()
        ->check(CLI::Range(1, 256));
    cmd->add_option("--repeats", o->repeats, "Timed rounds")->capture_default_str()->check(CLI::Range(1, 1000));
    cmd->add_option("--warmup", o->warmup, "Untimed rounds first")->capture_default_str()->check(CLI::Range(0, 100));
    cmd->add_option("--mib", o->mib, "Bandwidth array size in MiB")
        ->capture_default_str()
        ->check(CLI::Range(16, 1 << 20));
    cmd->add_flag("--smoke", o->smoke,
                  "A tiny run (ctest): stories260K from the models directory, prompt 16, decode 4, trees 4 and 16, "
                  "one timed round, 64 MiB bandwidth array, in place of those options; 1 thread unless --threads; "
                  "--backend and --out apply");
    add_out_option(cmd, o->out);
    return [o] {
        if (o->smoke) apply_smoke(*o);
        std::vector<int> threads = o->threads;
        if (threads.empty()) threads = {1, hardware_threads()};
        std::sort(threads.begin(), threads.end());
        threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
        std::sort(o->tree.begin(), o->tree.end());
        o->tree.erase(std::unique(o->tree.begin(), o->tree.end()), o->tree.end());

        report rep("model");
        const std::string path = o->model.empty() ? synth_model_cached(o->shape, parse_type(o->type)) : o->model;
        auto& meta = rep.meta();
        meta["model"] = path;
        meta["prompt_tokens"] = o->prompt;
        meta["decode_steps"] = o->decode;
        meta["tree_nodes"] = o->tree;
        meta["tree_shape"] = "bushy: 4 children per node, breadth first";
        meta["repeats"] = o->repeats;
        meta["warmup"] = o->warmup;
        meta["bandwidth_bytes"] = int64_t(o->mib) << 20;
        meta["smoke"] = o->smoke;
        meta["backends"] = nlohmann::json::object();

        thread_team team(threads.back());
        bandwidth_array arr(size_t(o->mib) << 20, team);
        const double read_bytes = mem_kernel_bytes(mem_kernel::read, arr);

        auto& t = rep.add_table("model", "Tokens per second and weight bytes streamed per second, per pass",
                                {{"backend", "backend", 8, 0},
                                 {"threads", "thr", 3, 0},
                                 {"phase", "phase", 6, 0},
                                 {"tokens", "tokens", 6, 0},
                                 {"rows", "rows", 4, 0},
                                 {"ms_min", "ms min", 9, 3},
                                 {"ms_median", "ms med", 9, 3},
                                 {"ms_max", "ms max", 9, 3},
                                 {"tokens_per_s", "tok/s", 9, 1},
                                 {"vs_decode", "x decode", 8, 2},
                                 {"weights_gbps", "wts GB/s", 8, 2},
                                 {"read_gbps", "read GB/s", 9, 2},
                                 {"vs_read", "/ read", 6, 2},
                                 {"runs", "runs", 4, 0}});
        std::vector<std::vector<nlohmann::json>> summary;  // one row per configuration, printed last
        int failures = 0;
        bool printed_model = false;
        for (const std::string& name : o->backends) {
            try {
                auto m = model::load(path, make_backend(name));
                rep.add_backend(name, m->be().describe());
                const weight_totals w = streamed_weights(*m);
                const llama_hparams& hp = m->hparams();
                if (!printed_model) {
                    meta["hparams"] = {{"n_embd", hp.n_embd},       {"n_layer", hp.n_layer}, {"n_head", hp.n_head},
                                       {"n_head_kv", hp.n_head_kv}, {"n_ff", hp.n_ff},       {"n_vocab", hp.n_vocab}};
                    meta["weight_bytes"] = w.bytes;
                    meta["matrix_params"] = w.params;
                    std::printf("%s: %.1f MB of weights per pass, load average %s\n", path.c_str(), w.bytes / 1e6,
                                meta["machine"]["load_average_start"].dump().c_str());
                    printed_model = true;
                }
                const int64_t need = int64_t(o->prompt) + 1 + std::max(o->decode, o->tree.back());
                if (need > hp.n_ctx_train) {
                    const std::string what = "--prompt " + std::to_string(o->prompt) +
                                             " plus the decode steps or the largest tree need " + std::to_string(need) +
                                             " positions; the model's context is " + std::to_string(hp.n_ctx_train);
                    throw error(TANDEM_ERR_INVALID_ARGUMENT, what);
                }
                for (int n_threads : threads) {
                    m->be().set_threads(n_threads);
                    passes p(*m, *o);
                    const phase_times times = time_rounds(p, *o, arr, team, n_threads, name);
                    const double read_gbps = read_bytes / summarize(times.read).median / 1e9;
                    const double decode_s = summarize(times.decode).median;
                    auto row = [&](const std::string& phase, int tokens, int rows, const std::vector<double>& s) {
                        const timing tm = summarize(s);
                        const double gbps = w.bytes / tm.median / 1e9;
                        t.add({name, n_threads, phase, tokens, rows, tm.min * 1e3, tm.median * 1e3, tm.max * 1e3,
                               tokens / tm.median, tm.median / decode_s, gbps, read_gbps, gbps / read_gbps,
                               int64_t(s.size())});
                        return tokens / tm.median;
                    };
                    const double prompt_tps = row("prompt", o->prompt, o->prompt, times.prompt);
                    row("decode", 1, 1, times.decode);
                    nlohmann::json tree_tps = nullptr;
                    for (size_t i = 0; i < o->tree.size(); ++i)
                        tree_tps = row("tree", o->tree[i], o->tree[i] + 1, times.tree[i]);
                    summary.push_back({name, n_threads, o->prompt, prompt_tps, o->decode, decode_s * 1e3, 1 / decode_s,
                                       w.bytes / decode_s / 1e9 / read_gbps, o->tree.back(), tree_tps, read_gbps});
                }
            } catch (const std::exception& e) {
                ++failures;
                std::fprintf(stderr, "\ntandem-bench model: %s: %s\n", name.c_str(), e.what());
                t.note(name + ": failed: " + e.what());
            }
        }
        t.note(
            "tokens: prompt tokens, 1 decode step, or tree nodes (rows = nodes + the pending token) per pass. "
            "/ read: weights GB/s over the read bandwidth at that thread count, measured in the same rounds.");
        // The headline figures in one row per configuration (what bench/peers compares with llama.cpp).
        auto& s = rep.add_table("summary", "Summary: tokens/s per backend and thread count (medians)",
                                {{"backend", "backend", 8, 0},
                                 {"threads", "thr", 3, 0},
                                 {"prompt_tokens", "prompt", 6, 0},
                                 {"prompt_tps", "prompt tok/s", 12, 1},
                                 {"decode_tokens", "decode", 6, 0},
                                 {"decode_ms_median", "decode ms", 9, 3},
                                 {"decode_tps", "decode tok/s", 12, 2},
                                 {"decode_vs_read", "dec/read", 8, 2},
                                 {"tree_nodes", "tree", 4, 0},
                                 {"tree_nodes_per_s", "tree nodes/s", 12, 1},
                                 {"read_gbps", "read GB/s", 9, 2}});
        for (auto& r : summary) s.add(std::move(r));
        rep.write(o->out);
        return failures ? 1 : 0;
    };
}

}  // namespace tandem::bench
