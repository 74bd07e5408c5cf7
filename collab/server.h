// The cloud side: a gRPC verification service (tandem.v1.Collab) over one target model. Many edges open
// sessions; their verify requests are batched by the scheduler into single target passes over a pooled KV
// cache (engine/batch_verify.h). Every RPC checks the bearer token; a session belongs to the caller that
// opened it; every size and index from the network is validated (collab/messages.h); each caller has its own
// quota of sessions, KV rows and request rate (caller_limits). SECURITY.md has the threat model. The same service
// answers distillation requests (TopK: the target's top-k at every position of token sequences, topk_eval.h).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "collab/messages.h"
#include "collab/net_emu.h"
#include "collab/scheduler.h"
#include "engine/model.h"

namespace tandem::collab {

// A caller's quota; every caller gets its own, so one caller over a limit does not slow or block another.
// 0 = no limit. Over a limit the call fails with RESOURCE_EXHAUSTED naming the limit and the caller.
struct caller_limits {
    int32_t max_sessions = 0;         // sessions open at once (the server-wide max_sessions applies as well)
    int64_t max_kv_rows = 0;          // KV cache rows (positions) held by all the caller's sessions together
    double requests_per_second = 0;   // token bucket refill rate: each unary call and each stream message costs 1
    double burst = 0;                 // bucket size; 0 = max(1, requests_per_second). CloseSession is never limited
};

// A caller identified by its bearer token; `name` appears in logs and limit messages, never the token.
struct named_token {
    std::string name, token;
};

struct server_config {
    std::string address = "127.0.0.1:50051";  // port 0 picks a free port (see collab_server::port)
    std::string model_id;                     // name reported to edges; defaults to the model file's stem
    std::vector<std::string> tokens;          // accepted bearer tokens, one per caller, named caller-<index>
    std::vector<named_token> named_tokens;    // more callers, by name (tandem serve --token-file "name token")
    caller_limits per_caller;
    bool allow_no_auth = false;               // with no tokens: accept unauthenticated calls (loopback demos);
                                              // grpc.health.v1 never needs a token (probes cannot send one)
    std::string tls_cert, tls_key;            // PEM files; both empty = plaintext
    limits lim;
    scheduler_config sched;
    int64_t seq_capacity = 0;                 // KV slots per session; 0 = the model's context length
    int64_t kv_memory_mb = 256;               // KV pool size; sessions beyond it are evicted LRU and rebuilt
    int32_t kv_regions = 0;                   // sessions resident at once; 0 = as many as kv_memory_mb holds
    int32_t max_sessions = 1024;              // open sessions (idle ones expire after idle_timeout)
    std::chrono::seconds idle_timeout{600};
    std::chrono::seconds stats_interval{10};  // periodic counters in the log; 0 = off
    int32_t max_message_bytes = 1 << 20;
    // Distillation (rpc TopK): sequences and positions per request. A sequence is also held to lim's prompt limit,
    // top_k to top_k_max, and the reply to max_message_bytes; the positions count against the caller's
    // max_kv_rows while they are evaluated.
    int32_t topk_max_sequences = 256;
    int32_t topk_max_tokens = 8192;
    net_emu_config emu;                       // delay added to every reply (tests, benchmarks)
};

class collab_server {
   public:
    // Throws tandem::error naming the problem (TLS files unreadable, no token without allow_no_auth, an empty,
    // duplicate or reused caller name or token).
    collab_server(const model& target, const server_config& cfg);
    ~collab_server();  // shutdown()
    collab_server(const collab_server&) = delete;
    collab_server& operator=(const collab_server&) = delete;

    // Binds and starts serving; throws tandem::error if the address cannot be bound.
    void start();
    int port() const;
    // Blocks until shutdown() is called (from another thread or a signal handler's helper thread).
    void wait();
    // Stops accepting calls, lets in-flight calls finish within `grace`, then cancels the rest.
    void shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
    v1::StatsResponse stats() const;
    // The RPC handlers without a network, as caller "" (a server with tokens refuses them: UNAUTHENTICATED):
    // for fuzzing the message handling (tests/fuzz/fuzz_collab.cpp). Works before start().
    grpc::Status open_local(const v1::OpenSessionRequest& req, v1::OpenSessionResponse* resp);
    grpc::Status verify_local(const v1::VerifyRequest& req, v1::VerifyResponse* resp);
    grpc::Status forward_local(const v1::ForwardRequest& req, v1::ForwardResponse* resp);
    grpc::Status close_local(const std::string& session_id);
    // Runs f with the target model to itself, between batched passes (the HTTP API's target-only decoding).
    void exclusive(const std::function<void()>& f);
    int32_t kv_regions() const;

    struct impl;

   private:
    std::unique_ptr<impl> p_;
};

}  // namespace tandem::collab
