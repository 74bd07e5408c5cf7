// `tandem-bench load`: the load / soak run of issue 10. Starts `tandem serve` as a separate process (so its memory
// is its own and can be read from /proc/PID/status), then runs N simulated edges (threads, each a real gRPC client
// on loopback) against it for T minutes: sessions with random prompt lengths and lengths, random draft trees,
// think times, and random disconnects (the verify stream dropped between requests, or with a request in flight, and
// reopened). Reports sessions served, tokens verified, client-side verify latency percentiles, errors by status
// code, and the server's RSS sampled every few seconds, with its growth after warm-up (a leak shows as a slope).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "backends/backend.h"
#include "bench/bench.h"
#include "bench/machine.h"
#include "bench/report.h"
#include "bench/timing.h"
#include "collab/cloud_link.h"
#include "collab/messages.h"
#include "engine/error.h"
#include "engine/model.h"

extern char** environ;

namespace tandem::bench {

namespace {

using namespace tandem::collab;

struct load_options {
    std::string target = std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf";
    std::string server_bin;  // "" = tools/tandem next to this binary's build directory
    int edges = 8;
    double minutes = 0, seconds = 0;  // duration: seconds + 60 * minutes (default 30 s)
    double think_ms = 20;             // mean think time between requests (uniform in [0, 2x])
    double disconnect_prob = 0.02;    // per request: drop the verify stream (half the time with it in flight)
    double abandon_prob = 0.1;        // per session: walk away without CloseSession (the server must expire it)
    int max_prompt = 64;
    int max_nodes = 16;
    double sample_s = 5;
    double warmup_s = -1;  // -1 = a fifth of the run, at most 60 s
    int idle_timeout_s = 20;
    int server_threads = 0;
    bool strict = false;
    std::string out;
};

// A child `tandem serve`; stopped with SIGINT (then SIGKILL) when destroyed.
class server_process {
 public:
    server_process(const load_options& o, const std::string& token) {
        log_path_ =
            (std::filesystem::temp_directory_path() / ("tandem-load-" + std::to_string(getpid()) + ".log")).string();
        std::vector<std::string> args = {o.server_bin,
                                         "serve",
                                         "-m",
                                         o.target,
                                         "--listen",
                                         "127.0.0.1:0",
                                         "--stats-interval",
                                         "0",
                                         "--idle-timeout",
                                         std::to_string(o.idle_timeout_s),
                                         "--max-sessions",
                                         "4096"};
        if (o.server_threads > 0) args.insert(args.end(), {"-t", std::to_string(o.server_threads)});
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        // The token goes through the environment, not argv (which every user can read in ps).
        std::vector<std::string> env_s;
        for (char** e = environ; *e; ++e)
            if (std::strncmp(*e, "TANDEM_TOKEN=", 13) != 0) env_s.emplace_back(*e);
        env_s.push_back("TANDEM_TOKEN=" + token);
        std::vector<char*> envp;
        for (auto& e : env_s) envp.push_back(e.data());
        envp.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 2, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        const int rc = posix_spawn(&pid_, o.server_bin.c_str(), &fa, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw error(TANDEM_ERR_IO, "cannot start '" + o.server_bin + "': " + std::strerror(rc));
        for (int i = 0; i < 600 && port_ == 0;
             ++i) {  // the model loads in well under a second; allow 60 s on a busy machine
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            const std::string log = read_log();
            if (const auto at = log.find("listening on port "); at != std::string::npos)
                port_ = std::atoi(log.c_str() + at + 18);
            if (port_ == 0 && !alive()) give_up("tandem serve exited at start:\n" + log);
        }
        if (port_ == 0) give_up("tandem serve did not start listening within 60 s:\n" + read_log());
    }
    ~server_process() {
        stop();
        std::filesystem::remove(log_path_);
    }
    int port() const { return port_; }
    pid_t pid() const { return pid_; }
    bool alive() {
        if (exited_) return false;
        int st = 0;
        if (waitpid(pid_, &st, WNOHANG) == pid_) {
            exited_ = true;
            status_ = st;
        }
        return !exited_;
    }
    // SIGINT, then SIGKILL after 10 s; returns a description of how it ended.
    std::string stop() {
        if (alive()) {
            kill(pid_, SIGINT);
            for (int i = 0; i < 100 && alive(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
            if (alive()) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status_, 0);
                exited_ = true;
                return "killed after SIGINT did not stop it within 10 s";
            }
        }
        if (WIFEXITED(status_)) return "exit status " + std::to_string(WEXITSTATUS(status_));
        if (WIFSIGNALED(status_)) return "killed by signal " + std::to_string(WTERMSIG(status_));
        return "ended";
    }
    std::string read_log() const {
        std::ifstream f(log_path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    // Resident and peak resident set in kB (0 when the process is gone).
    std::pair<uint64_t, uint64_t> rss_kb() const {
        std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
        uint64_t rss = 0, hwm = 0;
        for (std::string line; std::getline(f, line);) {
            if (line.rfind("VmRSS:", 0) == 0) rss = std::strtoull(line.c_str() + 6, nullptr, 10);
            if (line.rfind("VmHWM:", 0) == 0) hwm = std::strtoull(line.c_str() + 6, nullptr, 10);
        }
        return {rss, hwm};
    }

 private:
    // The destructor does not run when the constructor throws: stop the child here.
    [[noreturn]] void give_up(const std::string& why) {
        stop();
        std::filesystem::remove(log_path_);
        throw error(TANDEM_ERR_IO, why);
    }

    pid_t pid_ = 0;
    int port_ = 0;
    bool exited_ = false;
    int status_ = 0;
    std::string log_path_;
};

// What one simulated edge saw.
struct edge_tally {
    uint64_t sessions = 0, closed = 0, abandoned = 0, reopened = 0;
    uint64_t requests = 0, nodes = 0, accepted = 0, committed = 0, resyncs = 0;
    uint64_t disconnects = 0, inflight_disconnects = 0;
    uint64_t bad_replies = 0;
    std::map<int, uint64_t> errors;  // by grpc::StatusCode
    std::string first_bad;
    std::vector<float> latency_ms;
};

// A random draft tree of n nodes: each node hangs off the root or any earlier node (parents-first order).
void random_tree(std::mt19937_64& g, int n, int32_t vocab, v1::VerifyRequest* r, std::vector<int32_t>* parents,
                 std::vector<int32_t>* tokens) {
    for (int k = 0; k < n; ++k) {
        auto* node = r->add_tree();
        // Mostly chains and narrow trees (what drafters send), sometimes wide ones.
        const int32_t parent = (k == 0 || g() % 4 == 0) ? int32_t(g() % uint64_t(k + 1)) - 1 : k - 1;
        node->set_parent(parent);
        node->set_token(int32_t(g() % uint64_t(vocab)));
        parents->push_back(parent);
        tokens->push_back(node->token());
    }
}

// The reply's accepted nodes must form a path from the root down the tree sent, with the tokens sent, plus one
// target token; the committed position must advance by exactly that many tokens. "" = consistent.
std::string check_reply(const v1::VerifyRequest& req, const v1::VerifyResponse& resp,
                        const std::vector<int32_t>& parents, const std::vector<int32_t>& tokens, int32_t vocab) {
    if (resp.request_id() != req.request_id()) return "reply to request " + std::to_string(resp.request_id());
    if (resp.resync()) {
        if (resp.committed_position() != req.base_position() + uint64_t(resp.accepted_tokens_size()))
            return "resync reply: position " + std::to_string(resp.committed_position()) + " after " +
                   std::to_string(resp.accepted_tokens_size()) + " tokens from " + std::to_string(req.base_position());
        return "";
    }
    int32_t prev = -1;
    for (int i = 0; i < resp.accepted_nodes_size(); ++i) {
        const int32_t n = resp.accepted_nodes(i);
        if (n < 0 || size_t(n) >= parents.size() || parents[size_t(n)] != prev) return "accepted nodes are not a path";
        if (resp.accepted_tokens(i) != tokens[size_t(n)]) return "an accepted token differs from the node's";
        prev = n;
    }
    if (resp.accepted_tokens_size() != resp.accepted_nodes_size() + 1) return "not one extra target token";
    const int32_t extra = resp.accepted_tokens(resp.accepted_tokens_size() - 1);
    if (extra < 0 || extra >= vocab) return "target token out of range";
    if (resp.committed_position() != req.base_position() + uint64_t(resp.accepted_tokens_size()))
        return "committed position " + std::to_string(resp.committed_position()) + " != base + accepted";
    return "";
}

struct shared_run {
    const load_options* o;
    std::string address, token;
    uint64_t fingerprint = 0;
    int32_t vocab = 0;
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> requests{0}, nodes{0}, sessions{0}, errors{0};
};

void run_edge(shared_run& run, int index, edge_tally& t) {
    const load_options& o = *run.o;
    std::mt19937_64 g(0x10adULL * uint64_t(index + 1));
    std::uniform_real_distribution<double> u01(0, 1);
    link_config lc;
    lc.address = run.address;
    lc.token = run.token;
    lc.timeout = std::chrono::milliseconds(30000);
    cloud_link link(lc);
    auto think = [&] {
        const auto ms = std::chrono::duration<double, std::milli>(u01(g) * 2 * o.think_ms);
        std::this_thread::sleep_for(ms);
    };
    auto count_error = [&](const link_error& e) {
        t.errors[int(e.code())] += 1;
        run.errors.fetch_add(1);
    };
    while (!run.stop.load()) {
        v1::OpenSessionRequest open;
        open.set_tokenizer_fingerprint(run.fingerprint);
        open.set_vocab_size(uint32_t(run.vocab));
        sampling_params greedy;
        greedy.temperature = 0;
        sampling_to_proto(greedy, open.mutable_sampling());
        const int prompt = 1 + int(g() % uint64_t(o.max_prompt));
        for (int i = 0; i < prompt; ++i) open.add_prompt_tokens(i == 0 ? 1 : int32_t(g() % uint64_t(run.vocab)));
        v1::OpenSessionResponse opened;
        try {
            opened = link.open(open);
        } catch (const link_error& e) {
            count_error(e);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // do not spin on a refusing server
            continue;
        }
        t.sessions += 1;
        run.sessions.fetch_add(1);
        const int max_nodes = std::max(1, std::min<int>(o.max_nodes, int(opened.max_tree_nodes())));
        const uint64_t ctx = opened.context_length();
        // The session ends at a random length before the context is full.
        const int64_t room = int64_t(ctx) - int64_t(opened.committed_position()) - max_nodes - 2;
        const uint64_t end = opened.committed_position() + 1 + g() % uint64_t(std::max<int64_t>(1, room));
        uint64_t pos = opened.committed_position(), id = 0;
        bool lost = false;
        while (!run.stop.load() && pos < end && !lost) {
            think();
            v1::VerifyRequest req;
            req.set_session_id(opened.session_id());
            req.set_request_id(++id);
            req.set_base_position(pos);
            std::vector<int32_t> parents, tokens;
            const int n =
                g() % 10 == 0 ? 0 : 1 + int(g() % uint64_t(max_nodes));  // sometimes an empty tree (cloud mode)
            random_tree(g, n, run.vocab, &req, &parents, &tokens);
            const bool drop = u01(g) < o.disconnect_prob;
            const bool inflight = drop && g() % 2 == 0;
            try {
                const double t0 = now_seconds();
                link.send(req);
                if (inflight) {
                    // Drop with the request in flight; the resend below (same base position, new stream) must be
                    // answered either normally or as a resync, never applied twice.
                    link.reset_stream();
                    t.inflight_disconnects += 1;
                    req.set_request_id(++id);
                    link.send(req);
                }
                const v1::VerifyResponse resp = link.receive();
                if (!inflight) t.latency_ms.push_back(float((now_seconds() - t0) * 1e3));
                if (const std::string bad = check_reply(req, resp, parents, tokens, run.vocab); !bad.empty()) {
                    if (t.bad_replies++ == 0) t.first_bad = bad;
                    lost = true;  // positions can no longer be trusted: start a new session
                    continue;
                }
                t.requests += 1;
                run.requests.fetch_add(1);
                if (resp.resync()) {
                    t.resyncs += 1;
                } else {
                    t.nodes += uint64_t(n);
                    run.nodes.fetch_add(uint64_t(n));
                    t.accepted += uint64_t(resp.accepted_nodes_size());
                }
                t.committed += resp.committed_position() - pos;
                pos = resp.committed_position();
                if (drop && !inflight) {
                    link.reset_stream();
                    t.disconnects += 1;
                }
            } catch (const link_error& e) {
                count_error(e);
                if (e.code() == grpc::StatusCode::NOT_FOUND) t.reopened += 1;  // expired or evicted: open another
                lost = true;
            }
        }
        if (lost) continue;
        if (u01(g) < o.abandon_prob) {
            link.reset_stream();
            t.abandoned += 1;
        } else {
            link.close(opened.session_id());
            t.closed += 1;
        }
    }
}

double percentile(std::vector<float>& v, double q) {
    if (v.empty()) return 0;
    const size_t k = std::min(v.size() - 1, size_t(q * double(v.size())));
    std::nth_element(v.begin(), v.begin() + int64_t(k), v.end());
    return v[k];
}

std::string default_server_bin() {
    // build/bench/tandem-bench -> build/tools/tandem
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return "tandem";
    return (self.parent_path().parent_path() / "tools" / "tandem").string();
}

int run_load(load_options o) {
    const double duration = o.seconds + 60 * o.minutes > 0 ? o.seconds + 60 * o.minutes : 30;
    const double warmup = o.warmup_s >= 0 ? o.warmup_s : std::min(60.0, duration / 5);
    if (warmup >= duration) throw error(TANDEM_ERR_INVALID_ARGUMENT, "--warmup must be shorter than the run");
    if (o.server_bin.empty()) o.server_bin = default_server_bin();
    if (!std::filesystem::exists(o.server_bin))
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "no tandem binary at '" + o.server_bin + "' (build tandem_cli or pass --server-bin)");
    // The tokenizer's fingerprint and vocabulary, as an edge with the same vocabulary would send them.
    const auto m = model::load(o.target, make_backend("cpu"));
    std::random_device rd;
    std::ostringstream token;
    token << std::hex << rd() << rd() << rd() << rd();
    server_process server(o, token.str());

    shared_run run;
    run.o = &o;
    run.address = "127.0.0.1:" + std::to_string(server.port());
    run.token = token.str();
    run.fingerprint = m->tokenizer().fingerprint();
    run.vocab = m->tokenizer().n_vocab();

    report rep("load");
    rep.meta()["target"] = o.target;
    rep.meta()["server_pid"] = server.pid();
    rep.meta()["edges"] = o.edges;
    rep.meta()["seconds"] = duration;
    rep.meta()["warmup_seconds"] = warmup;
    rep.meta()["think_ms"] = o.think_ms;
    rep.meta()["disconnect_prob"] = o.disconnect_prob;
    rep.meta()["abandon_prob"] = o.abandon_prob;
    rep.meta()["max_prompt"] = o.max_prompt;
    rep.meta()["max_nodes"] = o.max_nodes;
    rep.meta()["idle_timeout_s"] = o.idle_timeout_s;
    std::fprintf(
        stderr, "load: tandem serve (pid %d, %s) on %s; %d edges for %.0f s, think %.0f ms, disconnect p=%.3f\n",
        int(server.pid()), o.target.c_str(), run.address.c_str(), o.edges, duration, o.think_ms, o.disconnect_prob);

    std::vector<edge_tally> tallies(size_t(o.edges));
    std::vector<std::thread> edges;
    std::atomic<int> crashed{0};
    for (int e = 0; e < o.edges; ++e) {
        edges.emplace_back([&, e] {
            try {
                run_edge(run, e, tallies[size_t(e)]);
            } catch (const std::exception& ex) {  // e.g. the link could not be made: report, do not abort the run
                if (crashed.fetch_add(1) == 0) std::fprintf(stderr, "load: edge %d stopped: %s\n", e, ex.what());
            }
        });
    }

    // The sampler: the server's RSS, open sessions and the interval's throughput every sample_s seconds.
    auto& series = rep.add_table("rss", "server RSS and throughput over time",
                                 {{"t_s", "t s", 7, 0},
                                  {"rss_mb", "RSS MB", 9, 1},
                                  {"sessions_open", "open", 6, 0},
                                  {"sessions_total", "sessions", 9, 0},
                                  {"requests_per_s", "req/s", 8, 1},
                                  {"nodes_per_s", "nodes/s", 9, 0},
                                  {"errors", "errors", 7, 0}});
    link_config slc;
    slc.address = run.address;
    slc.token = run.token;
    slc.timeout = std::chrono::milliseconds(5000);
    cloud_link stats_link(slc);
    std::vector<std::pair<double, double>> rss_points;  // (t, MB)
    const double t_start = now_seconds();
    double t_prev = 0;
    uint64_t req_prev = 0, nodes_prev = 0;
    bool server_died = false;
    while (true) {
        const double t = now_seconds() - t_start;
        if (t >= duration) break;
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(o.sample_s, duration - t)));
        const double now = now_seconds() - t_start;
        if (!server.alive()) {
            server_died = true;
            break;
        }
        const double rss = double(server.rss_kb().first) / 1024.0;
        rss_points.emplace_back(now, rss);
        nlohmann::json open = nullptr, total = nullptr;
        try {
            const auto s = stats_link.stats();
            open = s.sessions_open();
            total = s.sessions_total();
        } catch (const link_error&) {
        }
        const uint64_t req = run.requests.load(), nodes = run.nodes.load();
        const double dt = std::max(1e-9, now - t_prev);
        series.add(
            {now, rss, open, total, double(req - req_prev) / dt, double(nodes - nodes_prev) / dt, run.errors.load()});
        t_prev = now;
        req_prev = req;
        nodes_prev = nodes;
    }
    run.stop.store(true);
    for (auto& th : edges) th.join();
    const double elapsed = now_seconds() - t_start;
    const uint64_t hwm_kb = server.rss_kb().second;
    const std::string server_log = server.read_log();
    const std::string ended = server.stop();

    edge_tally all;
    for (auto& t : tallies) {
        all.sessions += t.sessions;
        all.closed += t.closed;
        all.abandoned += t.abandoned;
        all.reopened += t.reopened;
        all.requests += t.requests;
        all.nodes += t.nodes;
        all.accepted += t.accepted;
        all.committed += t.committed;
        all.resyncs += t.resyncs;
        all.disconnects += t.disconnects;
        all.inflight_disconnects += t.inflight_disconnects;
        all.bad_replies += t.bad_replies;
        if (all.first_bad.empty()) all.first_bad = t.first_bad;
        for (auto [code, n] : t.errors) all.errors[code] += n;
        all.latency_ms.insert(all.latency_ms.end(), t.latency_ms.begin(), t.latency_ms.end());
    }
    // RSS growth after warm-up: last sample minus the first after warm-up, and the least-squares slope over them.
    std::vector<std::pair<double, double>> after;
    for (const auto& p : rss_points)
        if (p.first >= warmup) after.push_back(p);
    double growth = 0, slope = 0;
    if (after.size() >= 2) {
        growth = after.back().second - after.front().second;
        double mt = 0, mr = 0;
        for (const auto& [t, r] : after) mt += t, mr += r;
        mt /= double(after.size());
        mr /= double(after.size());
        double num = 0, den = 0;
        for (const auto& [t, r] : after) num += (t - mt) * (r - mr), den += (t - mt) * (t - mt);
        slope = den > 0 ? num / den * 60.0 : 0;  // MB per minute
    }

    auto& sum = rep.add_table("summary", "load / soak summary",
                              {{"edges", "edges", 6, 0},
                               {"seconds", "s", 6, 0},
                               {"sessions", "sessions", 9, 0},
                               {"requests", "requests", 9, 0},
                               {"requests_per_s", "req/s", 8, 1},
                               {"tokens_verified", "verified", 9, 0},
                               {"tokens_committed", "committed", 10, 0},
                               {"p50_ms", "p50 ms", 8, 2},
                               {"p95_ms", "p95 ms", 8, 2},
                               {"p99_ms", "p99 ms", 8, 2},
                               {"disconnects", "drops", 6, 0},
                               {"resyncs", "resync", 7, 0},
                               {"errors", "errors", 7, 0},
                               {"rss_warm_mb", "RSS warm", 9, 1},
                               {"rss_end_mb", "RSS end", 8, 1},
                               {"rss_growth_mb", "growth MB", 10, 1},
                               {"rss_slope_mb_per_min", "MB/min", 8, 2},
                               {"rss_peak_mb", "peak MB", 8, 1}});
    uint64_t n_errors = 0;
    for (auto [code, n] : all.errors) n_errors += n;
    std::vector<float> lat = all.latency_ms;
    const double p50 = percentile(lat, 0.50), p95 = percentile(lat, 0.95), p99 = percentile(lat, 0.99);
    sum.add({o.edges, elapsed, all.sessions, all.requests, double(all.requests) / elapsed, all.nodes, all.committed,
             p50, p95, p99, all.disconnects + all.inflight_disconnects, all.resyncs, n_errors,
             after.empty() ? nlohmann::json(nullptr) : nlohmann::json(after.front().second),
             rss_points.empty() ? nlohmann::json(nullptr) : nlohmann::json(rss_points.back().second), growth, slope,
             double(hwm_kb) / 1024.0});
    sum.note(
        "latency: client side, send to reply, over loopback (includes batching wait and the edge's own scheduling). "
        "verified: draft nodes the server checked; committed: tokens it committed (accepted + its own). sessions: " +
        std::to_string(all.closed) + " closed, " + std::to_string(all.abandoned) + " abandoned (left to expire), " +
        std::to_string(all.reopened) + " found gone (NOT_FOUND). drops: " + std::to_string(all.disconnects) +
        " between requests, " + std::to_string(all.inflight_disconnects) + " with a request in flight.");
    sum.note("RSS growth: last sample minus the first at or after the warm-up (" + std::to_string(int(warmup)) +
             " s); MB/min: least-squares slope over those samples. Server " + ended + ".");
    auto& errs = rep.add_table("errors", "errors by gRPC status code",
                               {{"code", "code", 5, 0}, {"status", "status", 20}, {"count", "count", 8, 0}});
    static const char* names[] = {
        "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    for (auto [code, n] : all.errors) errs.add({code, code >= 0 && code <= 16 ? names[code] : "?", n});
    if (all.errors.empty()) errs.note("no errors");
    rep.write(o.out);

    int rc = 0;
    auto fail = [&](const std::string& why) {
        std::fprintf(stderr, "load: FAILED: %s\n", why.c_str());
        rc = 1;
    };
    if (server_died) fail("the server died during the run (" + ended + "); its log:\n" + server_log);
    if (crashed.load()) fail(std::to_string(crashed.load()) + " edges stopped on an exception");
    if (all.requests == 0) fail("no verify request was answered");
    if (all.bad_replies) fail(std::to_string(all.bad_replies) + " inconsistent replies, the first: " + all.first_bad);
    if (o.strict) {
        // NOT_FOUND is expected (sessions expire and are evicted); anything else is a server or protocol fault.
        for (auto [code, n] : all.errors)
            if (code != int(grpc::StatusCode::NOT_FOUND))
                fail(std::to_string(n) + " errors " + names[std::clamp(code, 0, 16)]);
    }
    return rc;
}

}  // namespace

action add_load(CLI::App& app) {
    auto o = std::make_shared<load_options>();
    auto* cmd = app.add_subcommand("load",
                                   "Load / soak run: N simulated edges (threads, real gRPC clients on loopback) "
                                   "against a `tandem serve` started as a separate process; latency percentiles, "
                                   "errors by status code, and the server's RSS over time");
    cmd->add_option("--edges", o->edges, "Concurrent simulated edges")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--minutes", o->minutes, "Duration in minutes (added to --seconds; default 30 s in all)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--seconds", o->seconds, "Duration in seconds")->check(CLI::NonNegativeNumber);
    cmd->add_option("--target", o->target, "Target GGUF the server loads")
        ->capture_default_str()
        ->check(CLI::ExistingFile);
    cmd->add_option("--think-ms", o->think_ms, "Mean think time between an edge's requests (uniform in [0, 2x])")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 600000.0));
    cmd->add_option("--disconnect-prob", o->disconnect_prob,
                    "Per request: drop the verify stream and reopen it "
                    "(half of them with the request in flight)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--abandon-prob", o->abandon_prob,
                    "Per session: leave without CloseSession (the server expires it)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--max-prompt", o->max_prompt, "Prompt lengths are uniform in [1, this]")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--max-nodes", o->max_nodes, "Tree sizes are uniform in [1, this] (capped by the server)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1024));
    cmd->add_option("--sample-s", o->sample_s, "Seconds between RSS samples")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 3600.0));
    cmd->add_option("--warmup", o->warmup_s,
                    "Seconds excluded from the RSS growth (-1 = a fifth of the run, at most 60)")
        ->capture_default_str();
    cmd->add_option("--idle-timeout", o->idle_timeout_s,
                    "The server's idle timeout (abandoned sessions expire after it)")
        ->capture_default_str()
        ->check(CLI::Range(1, 86400));
    cmd->add_option("--server-threads", o->server_threads, "Threads of the server's CPU backend (0 = all)")
        ->capture_default_str();
    cmd->add_option("--server-bin", o->server_bin,
                    "The tandem binary to run `serve` with (default: tools/tandem of this build)");
    cmd->add_flag("--strict", o->strict, "Fail on any error other than NOT_FOUND (expired or evicted sessions)");
    add_out_option(cmd, o->out);
    return [o] { return run_load(*o); };
}

}  // namespace tandem::bench
