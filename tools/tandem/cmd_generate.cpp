// `tandem generate`: stream a continuation of a prompt to stdout, timings to stderr.
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {

struct generate_options {
    std::string model = default_model();
    std::string prompt;
    int n_predict = 256;
    std::string backend = "cpu";
    int threads = 0;
    int ctx = 0;
    float temp = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float repeat_penalty = 1.0f;
    int repeat_last_n = 64;
    int64_t seed = -1;
    bool ignore_eos = false;
    bool no_timings = false;
};

struct model_deleter {
    void operator()(tandem_model* m) const { tandem_model_free(m); }
};
struct session_deleter {
    void operator()(tandem_session* s) const { tandem_session_free(s); }
};

int run(const generate_options& o) {
    tandem_model_params mp = tandem_model_default_params();
    mp.backend = o.backend.c_str();
    mp.n_threads = o.threads;
    mp.n_ctx = o.ctx;
    tandem_model* raw_model = nullptr;
    check(tandem_model_load(o.model.c_str(), &mp, &raw_model), "loading " + o.model);
    std::unique_ptr<tandem_model, model_deleter> model(raw_model);
    tandem_model_desc desc;
    check(tandem_model_describe(model.get(), &desc), "model");

    tandem_sampling_params sp = tandem_sampling_default_params();
    sp.temperature = o.temp;
    sp.top_k = o.top_k;
    sp.top_p = o.top_p;
    sp.min_p = o.min_p;
    sp.repeat_penalty = o.repeat_penalty;
    sp.repeat_last_n = o.repeat_last_n;
    sp.seed = o.seed >= 0 ? uint64_t(o.seed) : std::random_device{}();
    tandem_session* raw_session = nullptr;
    check(tandem_session_open(model.get(), &sp, &raw_session), "opening a session");
    std::unique_ptr<tandem_session, session_deleter> session(raw_session);

    std::vector<int32_t> prompt(o.prompt.size() + 2);
    size_t n_prompt = 0;
    check(tandem_tokenize(model.get(), o.prompt.data(), o.prompt.size(), 1, prompt.data(), prompt.size(), &n_prompt),
          "tokenizing the prompt");
    prompt.resize(n_prompt);
    if (!o.no_timings) {
        std::fprintf(stderr, "tandem: %s on %s, %zu prompt tokens, seed %llu\n", o.model.c_str(), o.backend.c_str(),
                     n_prompt, static_cast<unsigned long long>(sp.seed));
    }
    // Echo the prompt as the tokenizer sees it, then stream the continuation.
    char piece[256];
    size_t n_piece = 0;
    for (size_t i = 1; i < prompt.size(); ++i) {
        check(tandem_token_to_piece(model.get(), prompt[i - 1], prompt[i], piece, sizeof piece, &n_piece), "decoding");
        std::fwrite(piece, 1, n_piece, stdout);
    }
    check(tandem_session_feed(session.get(), prompt.data(), prompt.size()), "evaluating the prompt");
    int32_t prev = prompt.back();
    for (int i = 0; i < o.n_predict; ++i) {
        if (tandem_session_length(session.get()) >= size_t(o.ctx > 0 ? o.ctx : desc.n_ctx_train)) {
            std::fprintf(stderr, "\ntandem: context full after %zu tokens\n", tandem_session_length(session.get()));
            break;
        }
        int32_t tok = 0;
        check(tandem_session_step(session.get(), &tok), "generating");
        if (!o.ignore_eos && (tok == desc.eos || tok == desc.bos)) break;  // llama2.c models delimit with BOS
        check(tandem_token_to_piece(model.get(), prev, tok, piece, sizeof piece, &n_piece), "decoding");
        std::fwrite(piece, 1, n_piece, stdout);
        std::fflush(stdout);
        prev = tok;
    }
    std::fputc('\n', stdout);
    if (!o.no_timings) {
        tandem_timings t;
        check(tandem_session_timings(session.get(), &t), "timings");
        std::fprintf(stderr, "tandem: prompt %llu tokens in %.2f ms (%.1f tokens/s); generation %llu tokens in %.2f ms "
                             "(%.1f tokens/s)\n",
                     static_cast<unsigned long long>(t.prompt_tokens), t.prompt_seconds * 1e3,
                     t.prompt_seconds > 0 ? double(t.prompt_tokens) / t.prompt_seconds : 0.0,
                     static_cast<unsigned long long>(t.gen_tokens), t.gen_seconds * 1e3,
                     t.gen_seconds > 0 ? double(t.gen_tokens) / t.gen_seconds : 0.0);
    }
    return 0;
}

}  // namespace

action add_generate(CLI::App& app) {
    auto o = std::make_shared<generate_options>();
    auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streaming tokens to stdout and timings "
                                               "to stderr. With no arguments: a story from the bundled stories260K.");
    cmd->add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
    cmd->add_option("-p,--prompt", o->prompt, "Prompt text (BOS is added; empty = start from BOS)");
    cmd->add_option("-n,--n-predict", o->n_predict, "Tokens to generate (stops early at EOS/BOS)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    add_backend_options(cmd, o->backend, o->threads);
    cmd->add_option("-c,--ctx", o->ctx, "KV cache size in tokens (0 = the model's context length)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--temp", o->temp, "Temperature; 0 = greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
    cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
    cmd->add_option("--top-p", o->top_p, "Nucleus sampling threshold (1 = off)")->capture_default_str();
    cmd->add_option("--min-p", o->min_p, "Drop tokens below min-p x the top probability (0 = off)")
        ->capture_default_str();
    cmd->add_option("--repeat-penalty", o->repeat_penalty, "Penalty for recently seen tokens (1 = off)")
        ->capture_default_str();
    cmd->add_option("--repeat-last-n", o->repeat_last_n, "Window of recent tokens the penalty looks at")
        ->capture_default_str();
    cmd->add_option("-s,--seed", o->seed, "Random seed (-1 = random; printed on stderr)")->capture_default_str();
    cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at EOS/BOS");
    cmd->add_flag("--no-timings", o->no_timings, "Do not print the header and timings on stderr");
    return [o] { return run(*o); };
}

}  // namespace tandem_cli
