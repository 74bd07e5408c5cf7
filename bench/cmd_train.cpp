// `tandem-bench train` (issues 8 and 9): LoRA training tokens per second per backend and thread count, on a real
// model or a synthetic shape, next to the FMA peak and the read bandwidth measured at the same thread count in the
// same run. One step is engine/finetune.h's: forward over --batch windows of --ctx tokens with the adapter, the
// loss, the backward pass to the adapter and one AdamW update.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/models.h"
#include "bench/report.h"
#include "engine/error.h"
#include "engine/finetune.h"
#include "engine/model.h"

namespace tandem::bench {

namespace {

struct train_options {
    std::string model, shape = "110m", type = "f32", text, targets = "q,v", out;
    std::vector<std::string> backends{"cpu"};
    std::vector<int> threads;  // empty: 1 and all hardware threads
    int ctx = 128, batch = 4, steps = 4, warmup = 1, rank = 8;
    int64_t mib = 1024;
    bool smoke = false;
};

void apply_smoke(train_options& o) {
    o.model = std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf";
    o.ctx = 32, o.batch = 2, o.steps = 2, o.warmup = 1, o.mib = 64;
    if (o.threads.empty()) o.threads = {1};
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw error(TANDEM_ERR_IO, "cannot read " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Runs `steps` training steps from a fresh adapter and returns (trained tokens, seconds).
std::pair<int64_t, double> train_steps(const model& m, const std::string& text, const train_options& o, int steps) {
    finetune_config cfg;
    cfg.lora.rank = o.rank;
    cfg.lora.alpha = float(2 * o.rank);
    cfg.lora.targets = parse_lora_targets(o.targets);
    cfg.ctx = o.ctx;
    cfg.batch = o.batch;
    cfg.epochs = 1;
    cfg.val_split = 0;
    cfg.max_steps = steps;
    const finetune_result r = finetune(m, text, cfg, nullptr);
    return {r.tokens_trained, r.seconds};
}

}  // namespace

action add_train(CLI::App& app) {
    auto o = std::make_shared<train_options>();
    auto* cmd = app.add_subcommand("train",
                                   "LoRA training tokens/s per backend and thread count, against the FMA peak and "
                                   "the read bandwidth of the same run.");
    cmd->footer(
        "Per backend and thread count: --warmup untimed training steps (kernel compilation, first touch), then "
        "--steps timed ones, each a step of `tandem finetune`: --batch windows of --ctx tokens of the text through "
        "the model with a rank --rank adapter on --targets, the cross-entropy loss, the backward pass to the adapter "
        "and one AdamW update. The FMA peak and the read bandwidth are measured on that many threads just before.\n\n"
        "tok/s: trained tokens per second. GFLOP/s counts 4 x the model's matrix parameters per token (the forward "
        "matmuls and the gradients to their inputs; the frozen base has no weight gradient; attention and the "
        "adapter's own matmuls are left out, so this is a lower bound), / FMA: that over the FMA peak. weights "
        "GB/s: the weights are streamed twice per step (forward and backward), over the read bandwidth: / read. "
        "GPU backends ignore --threads (see `tandem-bench model --help`).\n\n"
        "With no --model, the model is the synthetic --shape in --type (cached as for `tandem-bench model`); the "
        "text defaults to the bundled TinyStories sample.");
    cmd->add_option("-m,--model", o->model, "GGUF model (default: the synthetic --shape/--type model)");
    cmd->add_option("--shape", o->shape, "Synthetic shape when no --model: 260k, 15m, 42m, 110m, tinyllama-1.1b")
        ->capture_default_str();
    cmd->add_option("--type", o->type, "Weight type of the synthetic model: f32, f16, q8_0, q4_0")->capture_default_str();
    cmd->add_option("-f,--text", o->text, "Training text (default: models/tinystories_valid_head.txt)");
    std::string names;
    for (const auto& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
    cmd->add_option("-b,--backend", o->backends, "Backends, comma-separated: " + names)
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("-t,--threads", o->threads, "Thread counts, comma-separated (default: 1 and all hardware threads)")
        ->delimiter(',')
        ->check(CLI::PositiveNumber);
    cmd->add_option("--ctx", o->ctx, "Tokens per window")->capture_default_str()->check(CLI::Range(2, 4096));
    cmd->add_option("--batch", o->batch, "Windows per step")->capture_default_str()->check(CLI::Range(1, 256));
    cmd->add_option("--steps", o->steps, "Timed steps")->capture_default_str()->check(CLI::Range(1, 10000));
    cmd->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str()->check(CLI::Range(0, 100));
    cmd->add_option("--rank", o->rank, "Adapter rank")->capture_default_str()->check(CLI::Range(1, 1024));
    cmd->add_option("--targets", o->targets, "Adapted projections (as tandem finetune --targets)")->capture_default_str();
    cmd->add_option("--mib", o->mib, "Bandwidth array size in MiB")
        ->capture_default_str()
        ->check(CLI::Range(16, 1 << 20));
    cmd->add_flag("--smoke", o->smoke,
                  "A tiny run (ctest): stories260K, ctx 32, batch 2, 2 timed steps, 64 MiB bandwidth array; 1 thread "
                  "unless --threads; --backend and --out apply");
    add_out_option(cmd, o->out);
    return [o] {
        if (o->smoke) apply_smoke(*o);
        std::vector<int> threads = o->threads;
        if (threads.empty()) threads = {1, hardware_threads()};
        std::sort(threads.begin(), threads.end());
        threads.erase(std::unique(threads.begin(), threads.end()), threads.end());
        const std::string text =
            slurp(o->text.empty() ? std::string(TANDEM_MODELS_DIR) + "/tinystories_valid_head.txt" : o->text);

        report rep("train");
        const std::string path = o->model.empty() ? synth_model_cached(o->shape, parse_type(o->type)) : o->model;
        auto& meta = rep.meta();
        meta["model"] = path;
        meta["ctx"] = o->ctx;
        meta["batch"] = o->batch;
        meta["steps"] = o->steps;
        meta["warmup"] = o->warmup;
        meta["rank"] = o->rank;
        meta["targets"] = o->targets;
        meta["smoke"] = o->smoke;
        meta["backends"] = nlohmann::json::object();

        thread_team team(threads.back());
        bandwidth_array arr(size_t(o->mib) << 20, team);
        const double read_bytes = mem_kernel_bytes(mem_kernel::read, arr);
        const fma_isa isa = fma_available(fma_isa::avx512) ? fma_isa::avx512 : fma_isa::avx2;

        auto& t = rep.add_table("train", "LoRA training throughput per backend and thread count",
                                {{"backend", "backend", 8, 0},
                                 {"threads", "thr", 3, 0},
                                 {"tokens", "tokens", 7, 0},
                                 {"seconds", "seconds", 8, 2},
                                 {"tokens_per_s", "tok/s", 9, 1},
                                 {"gflops", "GFLOP/s", 8, 2},
                                 {"fma_gflops", "FMA GFLOP/s", 11, 1},
                                 {"vs_fma", "/ FMA", 6, 3},
                                 {"weights_gbps", "wts GB/s", 8, 2},
                                 {"read_gbps", "read GB/s", 9, 2},
                                 {"vs_read", "/ read", 6, 3}});
        int failures = 0;
        for (const std::string& name : o->backends) {
            try {
                auto m = model::load(path, make_backend(name));
                const weight_totals w = streamed_weights(*m);
                rep.add_backend(name, m->be().describe());
                meta["weight_bytes"] = w.bytes;
                meta["matrix_params"] = w.params;
                for (int n_threads : threads) {
                    m->be().set_threads(n_threads);
                    double flops_per_run = 0;
                    const timing fma = measure_fma(isa, team, n_threads, {0, 0.3, 10, 3}, &flops_per_run);
                    const timing bw = measure_bandwidth(mem_kernel::read, arr, team, n_threads, {0, 0.3, 10, 3});
                    if (o->warmup > 0) train_steps(*m, text, *o, o->warmup);
                    const auto [tokens, seconds] = train_steps(*m, text, *o, o->steps);
                    const double tps = double(tokens) / seconds;
                    const double gflops = 4.0 * double(w.params) * tps / 1e9;
                    const double fma_gflops = flops_per_run / fma.median / 1e9;
                    const double wgbps = 2.0 * w.bytes * o->steps / seconds / 1e9;
                    const double read_gbps = read_bytes / bw.median / 1e9;
                    t.add({name, n_threads, tokens, seconds, tps, gflops, fma_gflops, gflops / fma_gflops, wgbps,
                           read_gbps, wgbps / read_gbps});
                }
            } catch (const std::exception& e) {
                ++failures;
                std::fprintf(stderr, "tandem-bench train: %s: %s\n", name.c_str(), e.what());
                t.note(name + ": failed: " + e.what());
            }
        }
        t.note("GFLOP/s: 4 x matrix parameters per trained token (a lower bound); FMA and read measured at the same "
               "thread count just before each row.");
        rep.write(o->out);
        return failures ? 1 : 0;
    };
}

}  // namespace tandem::bench
