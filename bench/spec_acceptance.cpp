// Speculative decoding on the real pair: mean tokens per target pass (accepted + 1) for each drafting
// strategy, greedy, over prompts taken from the TinyStories sample. Writes a table and a CSV.
// Usage: bench_spec_acceptance [--prompts N] [--tokens N] [--backend cpu] [--csv FILE]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "backends/backend.h"
#include "engine/speculative.h"

using namespace tandem;

namespace {
std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Tokens per target pass of speculative decoding strategies on stories260K + llama2xs (greedy)"};
    int n_prompts = 40, n_tokens = 96;
    std::string backend = "cpu", csv = "spec_acceptance.csv", models = TANDEM_MODELS_DIR;
    app.add_option("--prompts", n_prompts, "Prompts from the text sample")->capture_default_str();
    app.add_option("--tokens", n_tokens, "Tokens generated per prompt")->capture_default_str();
    app.add_option("--backend", backend, "Backend")->capture_default_str();
    app.add_option("--csv", csv, "CSV output")->capture_default_str();
    app.add_option("--models", models, "Directory with the bundled models")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    auto target = model::load(models + "/stories260K.gguf", make_backend(backend));
    auto draft = model::load(models + "/llama2xs_tinystories_279K.gguf", make_backend(backend));
    // Prompts: the first 8 words of each sufficiently long line of the sample.
    std::vector<std::vector<int32_t>> prompts;
    std::istringstream in(read_file(models + "/tinystories_valid_head.txt"));
    std::string line;
    while (int(prompts.size()) < n_prompts && std::getline(in, line)) {
        if (line.size() < 60) continue;
        std::istringstream w(line);
        std::string word, p;
        for (int i = 0; i < 8 && w >> word; ++i) p += (i ? " " : "") + word;
        prompts.push_back(target->tokenizer().encode(p, true));
    }
    struct row {
        std::string name;
        draft_config cfg;
        int nodes;
    };
    std::vector<row> rows;
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
    rows.push_back({"chain N=4", chain(4), 4});
    rows.push_back({"chain N=8", chain(8), 8});
    rows.push_back({"tree 4,1,1,1", tree({4, 1, 1, 1}), 16});  // node count = sum of the products of prefixes
    rows.push_back({"dynamic 16", dyn(16), 16});
    rows.push_back({"tree 4,1,1,1,1,1,1,1", tree({4, 1, 1, 1, 1, 1, 1, 1}), 32});
    rows.push_back({"tree 8,3", tree({8, 3}), 32});
    rows.push_back({"dynamic 32", dyn(32), 32});
    rows.push_back({"tree 4,3,2,1", tree({4, 3, 2, 1}), 64});
    rows.push_back({"dynamic 64", dyn(64), 64});
    rows.push_back({"self (3 of 5 layers), chain 4", self, 4});

    std::ofstream out(csv);
    out << "strategy,node_budget,prompts,tokens,target_passes,tokens_per_pass,draft_s,verify_s\n";
    std::printf("%-32s %6s %8s %8s %10s %9s %9s\n", "strategy", "nodes", "tokens", "passes", "tok/pass", "draft s",
                "verify s");
    for (const auto& r : rows) {
        sampling_params sp;
        sp.temperature = 0;
        verify_stats total;
        for (const auto& p : prompts) {
            const model& d = r.cfg.strategy == draft_strategy::self ? *target : *draft;
            speculative_generator g(*target, d, r.cfg, sp, 512);
            g.start(p);
            size_t made = 0;
            while (made < size_t(n_tokens)) made += g.step().size();
            const auto& s = g.stats();
            total.passes += s.passes, total.tokens += s.tokens;
            total.draft_seconds += s.draft_seconds, total.verify_seconds += s.verify_seconds;
        }
        const double tpp = double(total.tokens) / double(total.passes);
        std::printf("%-32s %6d %8llu %8llu %10.2f %9.2f %9.2f\n", r.name.c_str(), r.nodes,
                    static_cast<unsigned long long>(total.tokens), static_cast<unsigned long long>(total.passes), tpp,
                    total.draft_seconds, total.verify_seconds);
        out << '"' << r.name << "\"," << r.nodes << ',' << prompts.size() << ',' << total.tokens << ',' << total.passes
            << ',' << tpp << ',' << total.draft_seconds << ',' << total.verify_seconds << '\n';
    }
    std::printf("wrote %s\n", csv.c_str());
    return 0;
}
