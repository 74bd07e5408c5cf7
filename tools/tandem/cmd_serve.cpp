// `tandem serve`: the cloud's batch verification service over one target model.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "collab/http_api.h"
#include "collab/http_generators.h"
#include "collab/server.h"
#include "engine/error.h"
#include "tools/tandem/cli.h"
#include "tools/tandem/collab_cli.h"

namespace tandem_cli {

namespace {

struct serve_options {
    std::string model = default_model();
    std::string backend = "cpu";
    int threads = 0;
    tandem::collab::server_config cfg;
    std::string token_file;
    int wait_us = 2000;
    int stats_s = 10;
    int idle_s = 600;
    std::string http;
    std::vector<std::string> api_keys;
};

int run(serve_options o) {
    if (!o.token_file.empty()) {
        // Lines: "token" (a caller named caller-<index>) or "name token"; blank lines and # comments are skipped.
        std::ifstream f(o.token_file);
        if (!f) throw cli_error{"cannot read the token file '" + o.token_file + "'"};
        size_t n = 0, line_no = 0;
        for (std::string line; std::getline(f, line);) {
            ++line_no;
            std::istringstream fields(line);
            std::vector<std::string> w;
            for (std::string x; fields >> x;) w.push_back(x);
            if (w.empty() || w[0][0] == '#') continue;
            if (w.size() > 2) {
                throw cli_error{"the token file '" + o.token_file + "' line " + std::to_string(line_no) + " has " +
                                std::to_string(w.size()) + " fields; expected 'token' or 'name token'"};
            }
            if (w.size() == 1) o.cfg.tokens.push_back(w[0]);
            else o.cfg.named_tokens.push_back({w[0], w[1]});
            ++n;
        }
        if (n == 0) throw cli_error{"the token file '" + o.token_file + "' holds no token"};
    }
    const bool have_tokens = !o.cfg.tokens.empty() || !o.cfg.named_tokens.empty();
    if (const char* env = std::getenv("TANDEM_TOKEN"); env && *env && !have_tokens) o.cfg.tokens.push_back(env);
    o.cfg.sched.max_wait = std::chrono::microseconds(o.wait_us);
    o.cfg.stats_interval = std::chrono::seconds(o.stats_s);
    o.cfg.idle_timeout = std::chrono::seconds(o.idle_s);
    try {
        auto target = load_model(o.model, o.backend, o.threads);
        if (o.cfg.model_id.empty()) o.cfg.model_id = model_stem(o.model);
        tandem::collab::collab_server server(*target, o.cfg);
        server.start();
        std::unique_ptr<tandem::collab::target_generator> gen;
        std::unique_ptr<tandem::collab::http_api> http;
        if (!o.http.empty()) {
            if (const char* env = std::getenv("TANDEM_API_KEY"); env && *env && o.api_keys.empty()) o.api_keys.push_back(env);
            gen = std::make_unique<tandem::collab::target_generator>(*target, &server, o.cfg.model_id, o.cfg.seq_capacity);
            tandem::collab::http_config hc;
            hc.address = o.http;
            hc.api_keys = o.api_keys;
            http = std::make_unique<tandem::collab::http_api>(*gen, hc);
            http->start();
            std::fprintf(stderr, "tandem serve: HTTP API on port %d\n", http->port());
        }
        std::fprintf(stderr, "tandem serve: listening on port %d; Ctrl-C stops after in-flight passes\n", server.port());
        const int sig = wait_for_signal();
        std::fprintf(stderr, "tandem serve: signal %d, shutting down\n", sig);
        if (http) http->stop();
        server.shutdown(std::chrono::milliseconds(5000));
        const auto st = server.stats();
        std::fprintf(stderr, "tandem serve: %llu sessions, %llu passes (%llu with several sessions), %llu tokens committed\n",
                     static_cast<unsigned long long>(st.sessions_total()), static_cast<unsigned long long>(st.passes()),
                     static_cast<unsigned long long>(st.multi_session_passes()),
                     static_cast<unsigned long long>(st.tokens_committed()));
    } catch (const tandem::error& e) {
        throw cli_error{e.what()};
    }
    return 0;
}

}  // namespace

action add_serve(CLI::App& app) {
    auto o = std::make_shared<serve_options>();
    auto* cmd = app.add_subcommand(
        "serve", "Cloud side: serve a target model to edges over gRPC (tandem.v1.Collab). Verify requests from all "
                 "sessions are batched into single target passes. Needs --token/--token-file (or --no-auth).");
    cmd->add_option("-m,--model", o->model, "Target GGUF model")->capture_default_str();
    add_backend_options(cmd, o->backend, o->threads);
    auto& c = o->cfg;
    cmd->add_option("--listen", c.address, "Address to listen on (HOST:PORT; port 0 = any free port)")->capture_default_str();
    cmd->add_option("--model-id", c.model_id, "Model name reported to edges (default: the file name)");
    auto* sec = "Security";
    cmd->add_option("--token", c.tokens, "Accepted bearer token (repeatable; env TANDEM_TOKEN)")->group(sec);
    cmd->add_option("--token-file,--tokens-file", o->token_file,
                    "File of accepted tokens, one caller per line: 'name token' (or just 'token')")
        ->group(sec);
    cmd->add_flag("--no-auth", c.allow_no_auth, "Accept calls without a token (trusted networks only)")->group(sec);
    cmd->add_option("--tls-cert", c.tls_cert, "PEM certificate chain: serve TLS")->group(sec);
    cmd->add_option("--tls-key", c.tls_key, "PEM private key for --tls-cert")->group(sec);
    auto* lim = "Limits";
    cmd->add_option("--ctx", c.seq_capacity, "KV slots per session (0 = the model's context length)")
        ->capture_default_str()->check(CLI::NonNegativeNumber)->group(lim);
    cmd->add_option("--kv-memory-mb", c.kv_memory_mb, "KV cache pool; least recently used sessions are evicted "
                                                      "and rebuilt on their next request")
        ->capture_default_str()->check(CLI::PositiveNumber)->group(lim);
    cmd->add_option("--max-sessions", c.max_sessions, "Open sessions at most")->capture_default_str()->check(CLI::PositiveNumber)->group(lim);
    cmd->add_option("--max-tree", c.lim.max_tree_nodes, "Draft nodes per verify request")->capture_default_str()->check(CLI::Range(1, 1024))->group(lim);
    cmd->add_option("--max-draft-top-k", c.lim.max_draft_top_k, "Entries per draft distribution (sampling)")->capture_default_str()->check(CLI::Range(1, 1024))->group(lim);
    cmd->add_option("--max-prompt", c.lim.max_prompt_tokens, "Prompt tokens per session (0 = context - 1)")->capture_default_str()->group(lim);
    cmd->add_option("--max-message-bytes", c.max_message_bytes, "Largest gRPC message accepted")->capture_default_str()->check(CLI::Range(1024, 64 << 20))->group(lim);
    cmd->add_option("--idle-timeout", o->idle_s, "Seconds before an idle session is closed")->capture_default_str()->check(CLI::PositiveNumber)->group(lim);
    auto* per = "Per-caller limits (each caller, i.e. each token, has its own quota; 0 = none)";
    auto& q = c.per_caller;
    cmd->add_option("--caller-max-sessions", q.max_sessions, "Sessions one caller may hold open")
        ->capture_default_str()->check(CLI::NonNegativeNumber)->group(per);
    cmd->add_option("--caller-kv-rows", q.max_kv_rows, "KV cache rows (positions) one caller's sessions may hold")
        ->capture_default_str()->check(CLI::NonNegativeNumber)->group(per);
    cmd->add_option("--caller-rps", q.requests_per_second, "Requests per second per caller (token bucket; each verify "
                                                           "or forward message counts)")
        ->capture_default_str()->check(CLI::NonNegativeNumber)->group(per);
    cmd->add_option("--caller-burst", q.burst, "Burst of the per-caller rate limit (0 = max(1, --caller-rps))")
        ->capture_default_str()->check(CLI::NonNegativeNumber)->group(per);
    auto* bat = "Batching";
    cmd->add_option("--batch-wait-us", o->wait_us, "Wait at most this long to fill a batch")->capture_default_str()->check(CLI::Range(0, 1000000))->group(bat);
    cmd->add_option("--token-budget", c.sched.token_budget, "Rows per target pass")->capture_default_str()->check(CLI::Range(1, 1 << 16))->group(bat);
    cmd->add_option("--max-batch", c.sched.max_batch_sessions, "Sessions per target pass")->capture_default_str()->check(CLI::Range(1, 4096))->group(bat);
    cmd->add_option("--stats-interval", o->stats_s, "Seconds between counter lines in the log (0 = off)")->capture_default_str()->group(bat);
    add_emulator_options(cmd, c.emu);
    add_http_options(cmd, o->http, o->api_keys);
    return [o] { return run(*o); };
}

}  // namespace tandem_cli
