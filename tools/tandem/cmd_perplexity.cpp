// `tandem perplexity`: mean negative log-likelihood of a text under the protocol of engine/perplexity.h.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {
struct perplexity_options {
    std::string model = default_model();
    std::string file;
    std::string backend = "cpu";
    int threads = 0;
    int window = 255;
    long long max_chars = 0;
    std::vector<std::string> loras;  // FILE[:SCALE]
};
}  // namespace

action add_perplexity(CLI::App& app) {
    auto o = std::make_shared<perplexity_options>();
    auto* cmd = app.add_subcommand(
        "perplexity",
        "Score a text file: tokenize it (one dummy-prefix space at the start), cut it into windows of --window "
        "tokens, evaluate each window from an empty cache as BOS + window and score every token. Prints nats/token "
        "and perplexity.");
    cmd->add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
    cmd->add_option("-f,--file", o->file, "UTF-8 text file")->required()->check(CLI::ExistingFile);
    cmd->add_option("--window", o->window, "Tokens scored per window")->capture_default_str()->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--chars", o->max_chars, "Use only the first N bytes of the file (0 = all)")->capture_default_str();
    add_backend_options(cmd, o->backend, o->threads);
    cmd->add_option("--lora", o->loras,
                    "LoRA adapter GGUF applied without merging: FILE[:SCALE] (default 1); repeatable")
        ->take_all();
    return [o] {
        std::ifstream in(o->file, std::ios::binary);
        if (!in) throw cli_error{"cannot read " + o->file};
        std::ostringstream ss;
        ss << in.rdbuf();
        std::string text = ss.str();
        if (o->max_chars > 0 && size_t(o->max_chars) < text.size()) text.resize(size_t(o->max_chars));
        tandem_model_params mp = tandem_model_default_params();
        mp.backend = o->backend.c_str();
        mp.n_threads = o->threads;
        tandem_model* m = nullptr;
        check(tandem_model_load(o->model.c_str(), &mp, &m), "loading " + o->model);
        std::unique_ptr<tandem_model, void (*)(tandem_model*)> model(m, tandem_model_free);
        add_loras(model.get(), o->loras);
        tandem_perplexity_result r{};
        auto progress = [](int64_t done, int64_t total, void*) { progress_bar(done, total, "windows"); };
        check(tandem_perplexity(model.get(), text.data(), text.size(), o->window, progress, nullptr, &r), "perplexity");
        for (const auto& a : o->loras) std::printf("LoRA adapter: %s\n", a.c_str());
        std::printf("model: %s\nbackend: %s\ntext: %s (%zu bytes)\ntokens scored: %lld in %lld windows of %d\n"
                    "mean NLL: %.4f nats/token\nperplexity: %.4f\ntime: %.2f s (%.0f tokens/s)\n",
                    o->model.c_str(), o->backend.c_str(), o->file.c_str(), text.size(),
                    static_cast<long long>(r.n_tokens), static_cast<long long>(r.n_windows), o->window, r.mean_nll,
                    r.perplexity, r.seconds, r.seconds > 0 ? double(r.n_tokens) / r.seconds : 0.0);
        return 0;
    };
}

}  // namespace tandem_cli
