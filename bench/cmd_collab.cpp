// `tandem-bench collab`: the edge-cloud figures of issue 7, measured on loopback in one process.
//   delay — tokens/s the edge sees at emulated one-way delays (both directions of the edge's link), for
//           cloud-only decoding (one round trip per token), local-only, spec chain, spec tree, layer split and
//           routing, with the real pair; agreement with target-only greedy output per mode.
//   load  — the server's throughput with 1..64 concurrent edges. The edges are synthetic (each sends a draft
//           chain of random tokens and waits for the reply, no drafting), so the two cores go to the server;
//           verification cost does not depend on what is accepted. With a synthetic 110M-shape target the
//           time inside batched passes is set against its roofline bound, measured in the same run.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/models.h"
#include "bench/report.h"
#include "collab/edge.h"
#include "collab/messages.h"
#include "collab/server.h"
#include "engine/error.h"
#include "engine/session.h"

namespace tandem::bench {

namespace {

using namespace tandem::collab;

struct collab_options {
    std::string target = std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf";
    std::string draft = std::string(TANDEM_MODELS_DIR) + "/llama2xs_tinystories_279K.gguf";
    std::string shape;  // load: synthetic target of this shape (e.g. 110m) instead of --target
    std::string type = "f32";
    std::string backend = "cpu";
    int threads = 0;
    std::vector<double> delays{0, 10, 25, 50};
    std::vector<std::string> modes{"cloud", "local", "chain", "tree", "split", "route"};
    std::vector<int> edges{1, 4, 16, 64};
    int tokens = 48;
    int prompts = 3;
    int split_layer = 2;
    int nodes = 8;
    double seconds = 4;
    int batch_wait_us = 2000;
    std::string out;
};

std::unique_ptr<model> load(const std::string& path, const collab_options& o) {
    auto be = make_backend(o.backend);
    if (o.threads > 0) be->set_threads(o.threads);
    return model::load(path, std::move(be));
}

server_config bench_server(const collab_options& o) {
    server_config c;
    c.address = "127.0.0.1:0";
    c.tokens = {"bench"};
    c.seq_capacity = 1024;
    c.kv_regions = 80;
    c.max_sessions = 4096;
    c.stats_interval = std::chrono::seconds(0);
    c.lim.max_tree_nodes = 64;
    c.sched.max_wait = std::chrono::microseconds(o.batch_wait_us);
    return c;
}

std::vector<int32_t> target_greedy(const model& m, const std::vector<int32_t>& prompt, int n) {
    sampling_params sp;
    sp.temperature = 0;
    session s(m, sp, 1024);
    s.feed(prompt);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(s.step());
    return out;
}

int run_delay(const collab_options& o) {
    auto target = load(o.target, o);
    auto draft = load(o.draft, o);
    collab_server server(*target, bench_server(o));
    server.start();
    const std::vector<std::string> texts = {"Once upon a time", "Tom and his dog went to the park", "The little girl saw",
                                            "One day, a big bird", "Lily wanted to play"};
    std::vector<std::vector<int32_t>> prompts, want;
    for (int i = 0; i < o.prompts; ++i) {
        prompts.push_back(draft->tokenizer().encode(texts[size_t(i) % texts.size()], true));
        want.push_back(target_greedy(*target, prompts.back(), o.tokens));
    }
    report rep("collab delay");
    rep.meta()["target"] = o.target;
    rep.meta()["draft"] = o.draft;
    rep.meta()["tokens_per_prompt"] = o.tokens;
    rep.meta()["prompts"] = o.prompts;
    auto& t = rep.add_table("delay", "tokens/s seen by the edge vs one-way delay (round trip = 2 x delay)",
                            {{"mode", "mode", 7}, {"delay_ms", "delay ms", 9, 0}, {"tokens_per_s", "tokens/s", 10, 1},
                             {"tokens_per_rtt", "tok/RT", 7, 2}, {"round_trips", "RTs", 6, 0},
                             {"bytes_per_token", "B/token", 8, 0}, {"agree", "agree", 6, 3},
                             {"unverified", "unverif", 8, 0}, {"vs_cloud", "x cloud", 8, 2}});
    for (double d : o.delays) {
        double cloud_tps = 0;
        for (const auto& mode : o.modes) {
            edge_config c;
            c.link.address = "127.0.0.1:" + std::to_string(server.port());
            c.link.token = "bench";
            c.link.emu.delay_ms = d;
            c.ctx = 1024;
            c.ignore_eos = true;
            c.draft.max_len = 8;
            c.draft.branching = {4, 2, 2, 1};
            if (mode == "chain" || mode == "tree") {
                c.mode = edge_mode::spec;
                c.draft.strategy = parse_draft_strategy(mode);
            } else {
                c.mode = parse_edge_mode(mode);
                if (mode == "route") c.draft.strategy = draft_strategy::chain;
            }
            c.split_layer = o.split_layer;
            const model& edge_model = c.mode == edge_mode::split ? *target : *draft;
            edge_session edge(edge_model, c);
            uint64_t n = 0, rts = 0, bytes = 0, same = 0, unverified = 0;
            double secs = 0;
            for (size_t p = 0; p < prompts.size(); ++p) {
                const auto r = edge.generate(prompts[p], o.tokens);
                n += r.tokens.size();
                rts += r.stats.round_trips;
                bytes += r.stats.bytes_sent + r.stats.bytes_received;
                secs += r.stats.seconds;
                unverified += r.stats.unverified_tokens;
                for (size_t i = 0; i < r.tokens.size() && i < want[p].size(); ++i) same += r.tokens[i] == want[p][i];
            }
            const double tps = secs > 0 ? double(n) / secs : 0;
            if (mode == "cloud") cloud_tps = tps;
            t.add({mode, d, tps, rts ? nlohmann::json(double(n) / double(rts)) : nlohmann::json(nullptr), rts, n ? double(bytes) / double(n) : 0.0,
                   n ? double(same) / double(n) : 0.0, unverified,
                   cloud_tps > 0 ? nlohmann::json(tps / cloud_tps) : nlohmann::json(nullptr)});
        }
    }
    t.note("cloud: empty trees, one round trip per token. agree: fraction of tokens equal to target-only greedy output.");
    rep.write(o.out);
    return 0;
}

int run_load(const collab_options& o) {
    const std::string path = o.shape.empty() ? o.target : synth_model_cached(o.shape, parse_type(o.type));
    auto target = load(path, o);
    const weight_totals w = streamed_weights(*target);
    // The machine's limits, in this run.
    const int hw = hardware_threads();
    thread_team team(hw);
    bandwidth_array arr(size_t(512) << 20, team);
    const repeat_policy quick{1, 0.5, 5, 3};
    const double bw = mem_kernel_bytes(mem_kernel::read, arr) / measure_bandwidth(mem_kernel::read, arr, team, hw, quick).median;
    double flops = 0;
    const fma_isa isa = fma_available(fma_isa::avx512) ? fma_isa::avx512 : fma_isa::avx2;
    const double peak = measure_fma(isa, team, hw, quick, &flops).median;
    const double peak_flops = flops / peak;

    report rep("collab load");
    rep.meta()["target"] = path;
    rep.meta()["weight_bytes"] = w.bytes;
    rep.meta()["read_gbps"] = bw / 1e9;
    rep.meta()["fma_gflops"] = peak_flops / 1e9;
    std::fprintf(stderr, "collab load: %s, %.1f MB of weights; read %.1f GB/s, FMA peak %.1f GFLOP/s (%d threads)\n",
                 path.c_str(), w.bytes / 1e6, bw / 1e9, peak_flops / 1e9, hw);
    auto& t = rep.add_table("load", "server throughput vs concurrent edges (synthetic edges, draft chains of random tokens)",
                            {{"edges", "edges", 6, 0}, {"requests_per_s", "req/s", 9, 1}, {"verified_per_s", "verified/s", 11, 1},
                             {"rows_per_s", "rows/s", 9, 1}, {"mean_batch", "batch", 7, 2}, {"p50_ms", "p50 ms", 8, 2},
                             {"p99_ms", "p99 ms", 8, 2}, {"speedup", "x 1 edge", 9, 2}, {"pass_ms", "pass ms", 8, 2},
                             {"bound_ms", "bound ms", 9, 2}, {"roofline", "bound/pass", 11, 2}});
    double one = 0;
    const int32_t V = target->hparams().n_vocab;
    for (int n_edges : o.edges) {
        collab_server server(*target, bench_server(o));
        server.start();
        std::atomic<bool> stop{false};
        std::atomic<uint64_t> requests{0};
        std::vector<std::thread> edges;
        std::atomic<int> failures{0};
        for (int e = 0; e < n_edges; ++e) {
            edges.emplace_back([&, e] {
                try {
                    link_config lc;
                    lc.address = "127.0.0.1:" + std::to_string(server.port());
                    lc.token = "bench";
                    lc.timeout = std::chrono::milliseconds(60000);
                    cloud_link link(lc);
                    std::mt19937 gen(uint32_t(e) + 1);
                    v1::OpenSessionRequest open;
                    open.set_tokenizer_fingerprint(target->tokenizer().fingerprint());
                    open.set_vocab_size(uint32_t(V));
                    sampling_params greedy;
                    greedy.temperature = 0;
                    sampling_to_proto(greedy, open.mutable_sampling());
                    for (int i = 0; i < 16; ++i) open.add_prompt_tokens(i == 0 ? 1 : int32_t(gen() % uint32_t(V)));
                    // A session whose context is full is closed and another one opened, so that every edge keeps
                    // the server busy for the whole measurement (random chains are rarely accepted: a session
                    // lasts about context-length requests, a fraction of a second for one edge).
                    uint64_t id = 0;
                    while (!stop.load()) {
                        const auto opened = link.open(open);
                        uint64_t pos = opened.committed_position();
                        while (!stop.load() && pos + uint64_t(o.nodes) + 2 < opened.context_length()) {
                            v1::VerifyRequest r;
                            r.set_session_id(opened.session_id());
                            r.set_request_id(++id);
                            r.set_base_position(pos);
                            for (int k = 0; k < o.nodes; ++k) {
                                auto* node = r.add_tree();
                                node->set_token(int32_t(gen() % uint32_t(V)));
                                node->set_parent(k - 1);
                            }
                            link.send(r);
                            pos = link.receive().committed_position();
                            requests.fetch_add(1);
                        }
                        link.close(opened.session_id());
                    }
                } catch (const std::exception& ex) {
                    if (failures.fetch_add(1) == 0) std::fprintf(stderr, "collab load: edge failed: %s\n", ex.what());
                }
            });
        }
        const auto s0 = server.stats();
        const uint64_t r0 = requests.load();
        const double t0 = now_seconds();
        std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
        const auto s1 = server.stats();
        const uint64_t r1 = requests.load();
        const double secs = now_seconds() - t0;
        stop.store(true);
        for (auto& th : edges) th.join();
        const double passes = double(s1.passes() - s0.passes());
        const double rows = double(s1.rows() - s0.rows());
        const double verified = double(s1.tokens_verified() - s0.tokens_verified());
        const double pass_s = s1.pass_seconds() - s0.pass_seconds();
        const double mean_batch = passes > 0 ? double(r1 - r0) / passes : 0;
        // Bound of the mean pass: stream the weights once, or do its matmul flops at the FMA peak.
        const double mean_rows = passes > 0 ? rows / passes : 0;
        const double bound = std::max(w.bytes / bw, 2.0 * w.params * mean_rows / peak_flops);
        const double pass = passes > 0 ? pass_s / passes : 0;
        if (n_edges == o.edges.front()) one = verified / secs;
        t.add({n_edges, double(r1 - r0) / secs, verified / secs, rows / secs, mean_batch, s1.verify_p50_ms(),
               s1.verify_p99_ms(), one > 0 ? nlohmann::json(verified / secs / one) : nlohmann::json(nullptr), pass * 1e3,
               bound * 1e3, pass > 0 ? nlohmann::json(bound / pass) : nlohmann::json(nullptr)});
        if (failures.load()) t.note(std::to_string(failures.load()) + " edges failed at " + std::to_string(n_edges) + " edges");
    }
    t.note("verified/s: draft nodes checked per second; rows/s adds the pending token of each request. bound/pass: the "
           "roofline bound max(weight bytes / read bandwidth, 2 * params * rows / FMA peak) of the mean pass over its "
           "measured time (1 = at the bound).");
    rep.write(o.out);
    return 0;
}

}  // namespace

action add_collab(CLI::App& app) {
    auto o = std::make_shared<collab_options>();
    auto* cmd = app.add_subcommand("collab", "Edge-cloud figures on loopback: `delay` (edge tokens/s vs one-way delay per "
                                             "mode) and `load` (server throughput vs concurrent edges)");
    cmd->require_subcommand(1);
    auto* delay = cmd->add_subcommand("delay", "Tokens/s the edge sees at emulated one-way delays, per mode, real pair");
    delay->add_option("--target", o->target, "Target GGUF (server)")->capture_default_str();
    delay->add_option("--draft", o->draft, "Draft GGUF (edge)")->capture_default_str();
    delay->add_option("--delays", o->delays, "One-way delays in ms")->delimiter(',')->capture_default_str();
    delay->add_option("--modes", o->modes, "cloud, local, chain, tree, split, route")->delimiter(',')->capture_default_str();
    delay->add_option("--tokens", o->tokens, "Tokens per prompt")->capture_default_str();
    delay->add_option("--prompts", o->prompts, "Prompts per mode and delay")->capture_default_str()->check(CLI::Range(1, 5));
    delay->add_option("--split-layer", o->split_layer, "split: layers on the edge")->capture_default_str();
    auto* load_cmd = cmd->add_subcommand("load", "Server throughput vs concurrent synthetic edges");
    load_cmd->add_option("--target", o->target, "Target GGUF (ignored with --shape)")->capture_default_str();
    load_cmd->add_option("--shape", o->shape, "Synthetic target shape instead (e.g. 110m; see tandem synth)");
    load_cmd->add_option("--type", o->type, "Weight type of the synthetic target")->capture_default_str();
    load_cmd->add_option("--edges", o->edges, "Concurrent edges")->delimiter(',')->capture_default_str();
    load_cmd->add_option("--nodes", o->nodes, "Draft chain length per request")->capture_default_str()->check(CLI::Range(0, 64));
    load_cmd->add_option("--seconds", o->seconds, "Measured time per point")->capture_default_str();
    load_cmd->add_option("--batch-wait-us", o->batch_wait_us, "Server batching wait")->capture_default_str();
    for (auto* c : {delay, load_cmd}) {
        c->add_option("-b,--backend", o->backend, "Backend of the server (and edge)")->capture_default_str();
        c->add_option("-t,--threads", o->threads, "CPU threads (0 = all)")->capture_default_str();
        add_out_option(c, o->out);
    }
    return [o, delay] { return delay->parsed() ? run_delay(*o) : run_load(*o); };
}

}  // namespace tandem::bench
