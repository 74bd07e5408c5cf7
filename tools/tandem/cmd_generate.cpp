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
    std::vector<std::string> loras;        // FILE[:SCALE] applied to -m
    std::vector<std::string> draft_loras;  // FILE[:SCALE] applied to --draft
    // speculative decoding
    std::string draft;
    std::string spec;
    int draft_max = 8;
    std::vector<int> tree{4, 2, 2, 1};
    int tree_budget = 32;
    int exit_layer = 2;
};

struct model_deleter {
    void operator()(tandem_model* m) const { tandem_model_free(m); }
};
struct session_deleter {
    void operator()(tandem_session* s) const { tandem_session_free(s); }
};

// Streams `tok` after `prev`; returns false at a stop token.
bool emit(tandem_model* model, const tandem_model_desc& desc, const generate_options& o, int32_t& prev, int32_t tok) {
    if (!o.ignore_eos && (tok == desc.eos || tok == desc.bos)) return false;  // llama2.c models delimit with BOS
    char piece[256];
    size_t n_piece = 0;
    check(tandem_token_to_piece(model, prev, tok, piece, sizeof piece, &n_piece), "decoding");
    std::fwrite(piece, 1, n_piece, stdout);
    std::fflush(stdout);
    prev = tok;
    return true;
}

// Draft + verify rounds until n tokens, a stop token or a full context; statistics on stderr.
void run_speculative(const generate_options& o, tandem_model* target, const tandem_model_desc& desc,
                     const tandem_model_params& mp, const tandem_sampling_params& sp, const std::vector<int32_t>& prompt) {
    std::unique_ptr<tandem_model, model_deleter> draft;
    const std::string strategy = o.spec.empty() ? "chain" : o.spec;
    if (strategy != "self") {
        if (o.draft.empty()) throw cli_error{"--spec " + strategy + " needs a draft model (--draft FILE)"};
        tandem_model* d = nullptr;
        check(tandem_model_load(o.draft.c_str(), &mp, &d), "loading draft " + o.draft);
        draft.reset(d);
        add_loras(draft.get(), o.draft_loras);
    } else if (!o.draft_loras.empty()) {
        throw cli_error{"--draft-lora needs a separate draft model (--draft FILE); with --spec self the target's "
                        "--lora adapters apply to the draft layers too"};
    }
    tandem_spec_params pp = tandem_spec_default_params();
    pp.strategy = strategy.c_str();
    pp.draft_max = o.draft_max;
    pp.tree = o.tree.data();
    pp.tree_len = o.tree.size();
    pp.budget = o.tree_budget;
    pp.exit_layer = o.exit_layer;
    pp.n_ctx = o.ctx;
    tandem_spec_session* raw = nullptr;
    check(tandem_spec_open(target, draft.get(), &sp, &pp, &raw), "speculative decoding");
    std::unique_ptr<tandem_spec_session, void (*)(tandem_spec_session*)> spec(raw, tandem_spec_free);
    check(tandem_spec_start(spec.get(), prompt.data(), prompt.size()), "evaluating the prompt");
    std::vector<int32_t> buf(4096);
    int32_t prev = prompt.back();
    int produced = 0;
    const size_t ctx = size_t(o.ctx > 0 ? o.ctx : desc.n_ctx_train);
    size_t length = prompt.size();
    const auto t0 = std::chrono::steady_clock::now();
    bool going = true;
    while (going && produced < o.n_predict) {
        if (length + 2 >= ctx) {
            std::fprintf(stderr, "\ntandem: context full after %zu tokens\n", length);
            break;
        }
        size_t n = 0;
        check(tandem_spec_step(spec.get(), buf.data(), buf.size(), &n), "generating");
        length += n;
        for (size_t i = 0; i < n && going && produced < o.n_predict; ++i, ++produced) going = emit(target, desc, o, prev, buf[i]);
    }
    std::fputc('\n', stdout);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.no_timings) return;
    tandem_spec_stats st;
    check(tandem_spec_get_stats(spec.get(), &st), "statistics");
    std::fprintf(stderr, "tandem: speculative (%s): %d tokens in %.2f ms (%.1f tokens/s), %llu target passes, %.2f tokens "
                         "per pass, %llu draft nodes; draft %.1f ms, verify %.1f ms\n",
                 strategy.c_str(), produced, secs * 1e3, secs > 0 ? produced / secs : 0.0,
                 static_cast<unsigned long long>(st.passes), st.passes ? double(st.tokens) / double(st.passes) : 0.0,
                 static_cast<unsigned long long>(st.drafted), st.draft_seconds * 1e3, st.verify_seconds * 1e3);
    std::fprintf(stderr, "tandem: acceptance by depth:");
    for (int d = 0; d < TANDEM_SPEC_MAX_DEPTH && st.offered_at_depth[d] > 0; ++d) {
        std::fprintf(stderr, " %d:%.0f%%", d + 1, 100.0 * double(st.accepted_at_depth[d]) / double(st.offered_at_depth[d]));
    }
    std::fputc('\n', stderr);
}

int run(const generate_options& o) {
    tandem_model_params mp = tandem_model_default_params();
    mp.backend = o.backend.c_str();
    mp.n_threads = o.threads;
    mp.n_ctx = o.ctx;
    tandem_model* raw_model = nullptr;
    check(tandem_model_load(o.model.c_str(), &mp, &raw_model), "loading " + o.model);
    std::unique_ptr<tandem_model, model_deleter> model(raw_model);
    add_loras(model.get(), o.loras);
    if (!o.draft_loras.empty() && o.draft.empty()) throw cli_error{"--draft-lora needs a draft model (--draft FILE)"};
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
        for (const auto& a : o.loras) std::fprintf(stderr, "tandem: LoRA adapter %s\n", a.c_str());
    }
    // Echo the prompt as the tokenizer sees it, then stream the continuation.
    char piece[256];
    size_t n_piece = 0;
    for (size_t i = 1; i < prompt.size(); ++i) {
        check(tandem_token_to_piece(model.get(), prompt[i - 1], prompt[i], piece, sizeof piece, &n_piece), "decoding");
        std::fwrite(piece, 1, n_piece, stdout);
    }
    if (!o.spec.empty() || !o.draft.empty()) {
        run_speculative(o, model.get(), desc, mp, sp, prompt);
        return 0;
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
        if (!emit(model.get(), desc, o, prev, tok)) break;
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
    cmd->add_option("--lora", o->loras,
                    "LoRA adapter GGUF (llama.cpp layout) applied to -m without merging, optionally scaled: "
                    "FILE[:SCALE] (default 1, on top of the adapter's alpha / rank). Repeatable: adapters add up")
        ->take_all();
    auto* spec = "Speculative decoding";
    cmd->add_option("--draft", o->draft, "Draft model (same vocabulary as -m) for speculative decoding")->group(spec);
    cmd->add_option("--draft-lora", o->draft_loras,
                    "LoRA adapter for the draft model (e.g. one distilled toward -m by `tandem finetune "
                    "--distill-from`): FILE[:SCALE], repeatable")
        ->take_all()
        ->group(spec);
    cmd->add_option("--spec", o->spec, "Drafting strategy: chain, tree, dynamic, or self (the target's first "
                                       "--exit-layer layers draft; no --draft needed). Default with --draft: chain")
        ->check(CLI::IsMember({"chain", "tree", "dynamic", "self"}))
        ->group(spec);
    cmd->add_option("--draft-max", o->draft_max, "chain/self: longest draft, adapted online to the acceptance")
        ->capture_default_str()
        ->check(CLI::Range(1, 64))
        ->group(spec);
    cmd->add_option("--tree", o->tree, "tree: children per node at each depth, e.g. 4,2,2,1")
        ->delimiter(',')
        ->capture_default_str()
        ->check(CLI::Range(1, 64))
        ->group(spec);
    cmd->add_option("--tree-budget", o->tree_budget, "dynamic: draft nodes per round (expanded best-first)")
        ->capture_default_str()
        ->check(CLI::Range(1, 256))
        ->group(spec);
    cmd->add_option("--exit-layer", o->exit_layer, "self: number of target layers used as the draft")
        ->capture_default_str()
        ->check(CLI::PositiveNumber)
        ->group(spec);
    return [o] { return run(*o); };
}

}  // namespace tandem_cli
