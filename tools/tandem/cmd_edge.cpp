// `tandem edge`: the edge side. Drafts with a small model, has a `tandem serve` verify, streams the text.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <random>

#include "collab/edge.h"
#include "collab/http_api.h"
#include "collab/http_generators.h"
#include "engine/error.h"
#include "tools/tandem/cli.h"
#include "tools/tandem/collab_cli.h"

namespace tandem_cli {

namespace {

struct edge_options {
    std::string model = std::string(TANDEM_MODELS_DIR) + "/llama2xs_tinystories_279K.gguf";
    std::string backend = "cpu";
    int threads = 0;
    std::string mode = "spec";
    std::string prompt;
    int n_predict = 256;
    std::string spec = "tree";
    int draft_max = 8;
    std::vector<int> tree{4, 2, 2, 1};
    int tree_budget = 32;
    float temp = 0.f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    int64_t seed = -1;
    int timeout_ms = 10000;
    int retry_ms = 100;
    bool quiet = false;
    bool no_stream = false;
    bool model_given = false;
    std::string http;
    std::vector<std::string> api_keys;
    tandem::collab::edge_config cfg;
};

int run(edge_options o) {
    auto& c = o.cfg;
    c.mode = tandem::collab::parse_edge_mode(o.mode);
    if (c.mode == tandem::collab::edge_mode::split && !o.model_given) o.model = default_model();  // the target itself
    if (c.link.token.empty()) {
        if (const char* env = std::getenv("TANDEM_TOKEN")) c.link.token = env;
    }
    c.link.timeout = std::chrono::milliseconds(o.timeout_ms);
    c.backoff_initial = std::chrono::milliseconds(o.retry_ms);
    c.draft.strategy = tandem::parse_draft_strategy(o.spec);
    c.draft.max_len = o.draft_max;
    c.draft.branching = o.tree;
    c.draft.budget = o.tree_budget;
    c.sampling.temperature = o.temp;
    c.sampling.top_k = o.top_k;
    c.sampling.top_p = o.top_p;
    c.sampling.min_p = o.min_p;
    c.sampling.seed = o.seed >= 0 ? uint64_t(o.seed) : std::random_device{}();
    c.draft_name = model_stem(o.model);
    auto draft = load_model(o.model, o.backend, o.threads);
    if (!o.http.empty()) {  // serve the OpenAI-compatible API instead of one prompt
        if (const char* env = std::getenv("TANDEM_API_KEY"); env && *env && o.api_keys.empty()) o.api_keys.push_back(env);
        tandem::collab::edge_generator gen(*draft, c, model_stem(o.model) + "+cloud");
        tandem::collab::http_config hc;
        hc.address = o.http;
        hc.api_keys = o.api_keys;
        tandem::collab::http_api api(gen, hc);
        try {
            api.start();
        } catch (const tandem::error& e) {
            throw cli_error{e.what()};
        }
        std::fprintf(stderr, "tandem edge: HTTP API on port %d (mode %s, server %s); Ctrl-C stops\n", api.port(),
                     o.mode.c_str(), c.link.address.c_str());
        wait_for_signal();
        return 0;
    }
    const auto& tok = draft->tokenizer();
    const std::vector<int32_t> prompt = tok.encode(o.prompt, true);
    if (!o.quiet) {
        std::fprintf(stderr, "tandem edge: %s, mode %s (%s), server %s, %zu prompt tokens, seed %llu\n", o.model.c_str(),
                     o.mode.c_str(), o.spec.c_str(), c.link.address.c_str(), prompt.size(),
                     static_cast<unsigned long long>(c.sampling.seed));
    }
    std::fputs(tok.decode(prompt).c_str(), stdout);
    // Verified text plain; unverified text dim on a terminal, in [brackets] otherwise; retractions announced.
    const bool tty = isatty(fileno(stdout));
    std::vector<int32_t> shown = prompt;
    std::vector<bool> shown_verified;
    auto put = [&](int32_t t, bool verified) {
        const std::string piece = tok.token_to_piece(shown.back(), t);
        if (verified) std::fputs(piece.c_str(), stdout);
        else if (tty) std::fprintf(stdout, "\x1b[2m%s\x1b[0m", piece.c_str());
        else std::fprintf(stdout, "[%s]", piece.c_str());
        shown.push_back(t);
        shown_verified.push_back(verified);
    };
    tandem::collab::edge_result r;
    try {
        tandem::collab::edge_session edge(*draft, c);
        r = edge.generate(prompt, o.n_predict, [&](const tandem::collab::edge_event& e) {
            if (o.no_stream) return;
            if (e.retracted) {
                std::fprintf(stdout, "\n[cloud corrected the last %zu unverified tokens]\n", e.retracted);
                shown.resize(shown.size() - e.retracted);
                shown_verified.resize(shown_verified.size() - e.retracted);
            }
            for (int32_t t : e.tokens) put(t, e.verified);
            std::fflush(stdout);
        });
    } catch (const tandem::collab::link_error& e) {
        throw cli_error{std::string("the server refused: ") + e.what()};
    } catch (const tandem::error& e) {
        throw cli_error{e.what()};
    }
    for (size_t i = 0; o.no_stream && i < r.tokens.size(); ++i) put(r.tokens[i], r.verified[i]);
    std::fputc('\n', stdout);
    std::fflush(stdout);  // the text before the statistics on stderr
    const auto& s = r.stats;
    if (!o.quiet) {
        std::fprintf(stderr,
                     "tandem edge: %zu tokens in %.2f s (%.1f tokens/s); %llu verified, %llu unverified, %llu routed; "
                     "%llu round trips, %.2f tokens per target pass, %llu/%llu draft nodes accepted; %.1f kB sent, %.1f "
                     "kB received; draft %.0f ms, waiting %.0f ms; %llu rounds drafted ahead; %llu outages, %llu reconnects, %llu retracted\n",
                     r.tokens.size(), s.seconds, s.seconds > 0 ? double(r.tokens.size()) / s.seconds : 0.0,
                     static_cast<unsigned long long>(s.verified_tokens), static_cast<unsigned long long>(s.unverified_tokens),
                     static_cast<unsigned long long>(s.routed_tokens), static_cast<unsigned long long>(s.round_trips),
                     s.tokens_per_round_trip(), static_cast<unsigned long long>(s.accepted),
                     static_cast<unsigned long long>(s.drafted), double(s.bytes_sent) / 1e3,
                     double(s.bytes_received) / 1e3, s.draft_seconds * 1e3, s.wait_seconds * 1e3,
                     static_cast<unsigned long long>(s.pipelined),
                     static_cast<unsigned long long>(s.outages), static_cast<unsigned long long>(s.reconnects),
                     static_cast<unsigned long long>(s.retracted));
        if (c.mode == tandem::collab::edge_mode::split) {
            std::fprintf(stderr, "tandem edge: layer split at %d (%s hidden states): %.0f bytes per token on the wire\n",
                         c.split_layer, c.split_int8 ? "int8" : "F16", s.bytes_per_token());
        }
    }
    return 0;
}

}  // namespace

action add_edge(CLI::App& app) {
    auto o = std::make_shared<edge_options>();
    auto* cmd = app.add_subcommand(
        "edge", "Edge side: generate with a local draft model and a `tandem serve` in the cloud. Modes: spec (draft "
                "locally, verify in the cloud; output equals the target's), cloud (one round trip per token), local "
                "(draft only), route (confident tokens unverified, lossy), split (the target's first --split-layer layers here, "
                "the rest in the cloud). If the cloud is unreachable the edge goes on "
                "locally, marks tokens unverified ([brackets] or dim), and re-verifies them when it is back.");
    cmd->add_option("-m,--model", o->model, "Draft GGUF model (same vocabulary as the server's target); in split mode the "
                                            "target itself (default there: the bundled stories260K)")
        ->capture_default_str()
        ->each([o](const std::string&) { o->model_given = true; });
    add_backend_options(cmd, o->backend, o->threads);
    cmd->add_option("--mode", o->mode, "spec, cloud, local, route or split")->capture_default_str()
        ->check(CLI::IsMember({"spec", "cloud", "local", "route", "split"}));
    cmd->add_option("-p,--prompt", o->prompt, "Prompt text (BOS is added)");
    cmd->add_option("-n,--n-predict", o->n_predict, "Tokens to generate")->capture_default_str()->check(CLI::Range(0, 1 << 20));
    cmd->add_flag("--ignore-eos", o->cfg.ignore_eos, "Do not stop at EOS/BOS");
    cmd->add_flag("-q,--quiet", o->quiet, "No header and statistics on stderr");
    cmd->add_flag("--no-stream", o->no_stream, "Print the text once generation ends, every correction applied, "
                                               "instead of streaming it");
    auto* net = "Server";
    cmd->add_option("--server", o->cfg.link.address, "Server address HOST:PORT")->capture_default_str()->group(net);
    cmd->add_option("--token", o->cfg.link.token, "Bearer token (env TANDEM_TOKEN)")->group(net);
    cmd->add_option("--tls-ca", o->cfg.link.tls_ca, "PEM file of the CA (or self-signed certificate) to trust: use TLS")->group(net);
    cmd->add_option("--route-key", o->cfg.link.route_key,
                    "Sticky-routing key sent as x-tandem-route on every call (default: random per run; see deploy/nginx)")
        ->group(net);
    cmd->add_option("--model-id", o->cfg.model_id, "Target model to ask for (default: the server's)")->group(net);
    cmd->add_option("--retry-ms", o->retry_ms, "First retry after the cloud became unreachable (doubles up to 4 s); "
                                               "behind a load balancer another replica is usually there at once")
        ->capture_default_str()->check(CLI::Range(1, 4000))->group(net);
    cmd->add_option("--timeout-ms", o->timeout_ms, "Deadline of each call; past it the cloud counts as unreachable")
        ->capture_default_str()->check(CLI::Range(1, 600000))->group(net);
    auto* spec = "Drafting";
    cmd->add_option("--spec", o->spec, "chain, tree or dynamic")->capture_default_str()
        ->check(CLI::IsMember({"chain", "tree", "dynamic"}))->group(spec);
    cmd->add_option("--draft-max", o->draft_max, "chain: longest draft, adapted online")->capture_default_str()->check(CLI::Range(1, 64))->group(spec);
    cmd->add_option("--tree", o->tree, "tree: children per node at each depth")->delimiter(',')->capture_default_str()->check(CLI::Range(1, 64))->group(spec);
    cmd->add_option("--tree-budget", o->tree_budget, "dynamic: draft nodes per round")->capture_default_str()->check(CLI::Range(1, 256))->group(spec);
    cmd->add_option("--route-threshold", o->cfg.route_threshold, "route: emit unverified when the draft's top-1 "
                                                                  "probability is at least this")
        ->capture_default_str()->check(CLI::Range(0.0, 1.0))->group(spec);
    cmd->add_option("--split-layer", o->cfg.split_layer, "split: layers [0, K) run on the edge, the rest in the cloud")
        ->capture_default_str()->group(spec);
    cmd->add_flag("--split-int8", o->cfg.split_int8, "split: send hidden states as int8 with a per-token scale (default F16)")->group(spec);
    auto* smp = "Sampling (the cloud samples with the same settings)";
    cmd->add_option("--temp", o->temp, "Temperature; 0 = greedy")->capture_default_str()->check(CLI::NonNegativeNumber)->group(smp);
    cmd->add_option("--top-k", o->top_k, "Top-k (0 = off)")->capture_default_str()->group(smp);
    cmd->add_option("--top-p", o->top_p, "Top-p (1 = off)")->capture_default_str()->group(smp);
    cmd->add_option("--min-p", o->min_p, "Min-p (0 = off)")->capture_default_str()->group(smp);
    cmd->add_option("-s,--seed", o->seed, "Random seed (-1 = random)")->capture_default_str()->group(smp);
    add_emulator_options(cmd, o->cfg.link.emu);
    add_http_options(cmd, o->http, o->api_keys);
    return [o] { return run(*o); };
}

}  // namespace tandem_cli
