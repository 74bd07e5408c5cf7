// `tandem-bench spec`: speculative decoding on the real pair (stories260K target, llama2xs draft, greedy): mean
// tokens per target pass (accepted + 1) for each drafting strategy, over prompts from the TinyStories sample.
// The same measurement and CSV columns as bench/spec_acceptance.cpp, which it replaces. --held-out takes the prompts
// from the text's tail only (the validation split of `tandem finetune --val-split`), and --draft-lora /
// --target-lora apply adapters, so a distilled draft is measured on prompts it was not trained on.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/report.h"
#include "engine/error.h"
#include "engine/lora.h"
#include "engine/speculative.h"

namespace tandem::bench {

namespace {

struct spec_options {
    int prompts = 40, tokens = 96;
    std::string backend = "cpu", models = TANDEM_MODELS_DIR, out;
    double held_out = 0;
    std::vector<std::string> draft_loras, target_loras;
};

// Applies FILE[:SCALE] adapters to m (a ':' followed by something that is not a number belongs to the path).
void add_loras(model& m, const std::vector<std::string>& args) {
    for (const auto& arg : args) {
        std::string path = arg;
        float scale = 1.f;
        const size_t colon = arg.rfind(':');
        if (colon != std::string::npos && colon > 0 && colon + 1 < arg.size()) {
            char* end = nullptr;
            const float v = std::strtof(arg.c_str() + colon + 1, &end);
            if (*end == '\0' && std::isfinite(v)) path = arg.substr(0, colon), scale = v;
        }
        m.add_adapter(lora_adapter::load(path, m), scale);
    }
}

// The byte offset where the last `fraction` of text's tokens starts (the split of `tandem finetune --val-split`:
// the same tokenization and rounding), so that lines starting at or after it are held out from training.
size_t held_out_start(const model& m, const std::string& text, double fraction) {
    if (fraction <= 0) return 0;
    const auto ids = m.tokenizer().encode(text, false);
    const int64_t n = int64_t(ids.size());
    const int64_t n_train = n - int64_t(double(n) * fraction);
    // Decoding after BOS drops the dummy-prefix space, so the training tokens decode to a prefix of the text.
    return m.tokenizer().decode(std::span(ids).first(size_t(n_train)), true).size();
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

action add_spec(CLI::App& app) {
    auto o = std::make_shared<spec_options>();
    auto* cmd = app.add_subcommand("spec",
                                   "Tokens per target pass of each speculative drafting strategy on stories260K + "
                                   "llama2xs (greedy), over prompts from the TinyStories sample.");
    cmd->add_option("--prompts", o->prompts, "Prompts from the text sample")->capture_default_str();
    cmd->add_option("--tokens", o->tokens, "Tokens generated per prompt")->capture_default_str();
    cmd->add_option("-b,--backend", o->backend, "Backend")->capture_default_str();
    cmd->add_option("--models", o->models, "Directory with the bundled models")->capture_default_str();
    cmd->add_option("--held-out", o->held_out,
                    "Take the prompts only from lines in the last FRACTION of the sample's tokens (what `tandem "
                    "finetune --val-split FRACTION` holds out); 0 = from the start")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 0.99));
    cmd->add_option("--draft-lora", o->draft_loras, "LoRA adapter FILE[:SCALE] applied to the draft (repeatable)");
    cmd->add_option("--target-lora", o->target_loras, "LoRA adapter FILE[:SCALE] applied to the target (repeatable)");
    add_out_option(cmd, o->out);
    return [o] {
        report rep("spec");
        auto target = model::load(o->models + "/stories260K.gguf", make_backend(o->backend));
        auto draft = model::load(o->models + "/llama2xs_tinystories_279K.gguf", make_backend(o->backend));
        add_loras(*target, o->target_loras);
        add_loras(*draft, o->draft_loras);
        // Prompts: the first 8 words of each sufficiently long line of the sample (of its held-out tail).
        std::vector<std::vector<int32_t>> prompts;
        const std::string text = slurp(o->models + "/tinystories_valid_head.txt");
        const size_t first = held_out_start(*target, text, o->held_out);
        std::istringstream in(text);
        std::string line;
        for (size_t at = 0; int(prompts.size()) < o->prompts && std::getline(in, line); at += line.size() + 1) {
            if (at < first || line.size() < 60) continue;
            std::istringstream words(line);
            std::string word, p;
            for (int i = 0; i < 8 && words >> word; ++i) p += (i ? " " : "") + word;
            prompts.push_back(target->tokenizer().encode(p, true));
        }
        struct row {
            std::string name;
            draft_config cfg;
            int nodes;
        };
        auto chain = [](int n) {
            draft_config c;
            c.strategy = draft_strategy::chain, c.max_len = n, c.adaptive = false;
            return c;
        };
        auto tree = [](std::vector<int32_t> b) {
            draft_config c;
            c.strategy = draft_strategy::tree, c.branching = std::move(b);
            return c;
        };
        auto dyn = [](int budget) {
            draft_config c;
            c.strategy = draft_strategy::dynamic, c.budget = budget;
            return c;
        };
        draft_config self = chain(4);
        self.strategy = draft_strategy::self, self.exit_layer = 3;
        const std::vector<row> rows = {
            {"chain N=4", chain(4), 4},
            {"chain N=8", chain(8), 8},
            {"tree 4,1,1,1", tree({4, 1, 1, 1}), 16},  // node count = sum of the products of prefixes
            {"dynamic 16", dyn(16), 16},
            {"tree 4,1,1,1,1,1,1,1", tree({4, 1, 1, 1, 1, 1, 1, 1}), 32},
            {"tree 8,3", tree({8, 3}), 32},
            {"dynamic 32", dyn(32), 32},
            {"tree 4,3,2,1", tree({4, 3, 2, 1}), 64},
            {"dynamic 64", dyn(64), 64},
            {"self (3 of 5 layers), chain 4", self, 4},
        };
        rep.meta()["backend"] = o->backend;
        rep.meta()["held_out"] = o->held_out;
        rep.meta()["draft_lora"] = o->draft_loras;
        rep.meta()["target_lora"] = o->target_loras;
        auto& t = rep.add_table("spec",
                                "Speculative decoding, greedy, " + std::to_string(prompts.size()) + " prompts x " +
                                    std::to_string(o->tokens) + " tokens",
                                {{"strategy", "strategy", 30, 0},
                                 {"node_budget", "nodes", 5, 0},
                                 {"prompts", "prompts", 7, 0},
                                 {"tokens", "tokens", 7, 0},
                                 {"target_passes", "passes", 7, 0},
                                 {"tokens_per_pass", "tok/pass", 8, 2},
                                 {"draft_s", "draft s", 8, 2},
                                 {"verify_s", "verify s", 8, 2}});
        for (const auto& r : rows) {
            sampling_params sp;
            sp.temperature = 0;
            verify_stats total;
            for (const auto& p : prompts) {
                const model& d = r.cfg.strategy == draft_strategy::self ? *target : *draft;
                speculative_generator g(*target, d, r.cfg, sp, 512);
                g.start(p);
                size_t made = 0;
                while (made < size_t(o->tokens)) made += g.step().size();
                const auto& s = g.stats();
                total.passes += s.passes, total.tokens += s.tokens;
                total.draft_seconds += s.draft_seconds, total.verify_seconds += s.verify_seconds;
            }
            t.add({r.name, r.nodes, int64_t(prompts.size()), int64_t(total.tokens), int64_t(total.passes),
                   double(total.tokens) / double(total.passes), total.draft_seconds, total.verify_seconds});
        }
        rep.write(o->out);
        return 0;
    };
}

}  // namespace tandem::bench
