// The edge's connection to a verification server: a channel (plaintext or TLS), the bearer token and the
// routing key on every call, a deadline on every call (a verify stream's reply is awaited at most `timeout`;
// then the stream is cancelled), byte counters, and the network emulator on what the edge sends and receives.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "collab/net_emu.h"
#include "tandem/v1/collab.grpc.pb.h"

namespace tandem::collab {

struct link_config {
    std::string address = "127.0.0.1:50051";
    std::string token;      // bearer token ("" = none)
    std::string tls_ca;     // PEM file of the CA (or self-signed certificate) to trust; "" = plaintext
    std::chrono::milliseconds timeout{10000};  // per call / per verify reply
    int32_t max_message_bytes = 1 << 20;
    net_emu_config emu;     // applied to each message in each direction
    // Sent as `x-tandem-route` metadata on every call so that a load balancer hashing on it (deploy/nginx)
    // keeps all of this link's sessions on one replica, the one holding their KV cache. "" = a random 64-bit
    // hex key drawn when the link is made; it stays the same for the link's lifetime, across reopened sessions.
    std::string route_key;
};

// The metadata key of the routing key (lower case, as gRPC requires).
inline constexpr const char* route_header = "x-tandem-route";
// A fresh random routing key: 16 lower-case hex digits.
std::string make_route_key();

// A failed call. unreachable(): the cloud cannot be reached now (retry later, go on locally); otherwise the
// server refused the request (bad token, bad input, mismatch) and retrying will not help, except for
// NOT_FOUND (the session is gone: reopen it).
class link_error : public std::runtime_error {
   public:
    link_error(grpc::StatusCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
    grpc::StatusCode code() const { return code_; }
    bool unreachable() const {
        return code_ == grpc::StatusCode::UNAVAILABLE || code_ == grpc::StatusCode::DEADLINE_EXCEEDED ||
               code_ == grpc::StatusCode::CANCELLED || code_ == grpc::StatusCode::ABORTED;
    }

   private:
    grpc::StatusCode code_;
};

struct link_counters {
    uint64_t bytes_sent = 0, bytes_received = 0;  // serialized message bytes
    uint64_t round_trips = 0;                     // verify request/reply pairs
    double wait_seconds = 0;                      // time blocked on verify replies
};

class cloud_link {
   public:
    explicit cloud_link(const link_config& cfg);
    ~cloud_link();
    cloud_link(const cloud_link&) = delete;
    cloud_link& operator=(const cloud_link&) = delete;

    // Unary calls; throw link_error.
    v1::OpenSessionResponse open(const v1::OpenSessionRequest& req);
    void close(const std::string& session_id);  // best effort, never throws
    v1::StatsResponse stats();
    // Verify on the session's stream (opened on first use, reopened after an error); throws link_error.
    // Split in two so the edge can draft while the cloud verifies: send, then receive.
    void send(const v1::VerifyRequest& req);
    v1::VerifyResponse receive();
    // One layer-split exchange on the session's Forward stream; throws link_error.
    v1::ForwardResponse forward(const v1::ForwardRequest& req);
    // Drops the streams (after an error, or to start over with a new session).
    void reset_stream();
    const link_counters& counters() const { return counters_; }
    const link_config& config() const { return cfg_; }
    const std::string& route_key() const { return cfg_.route_key; }

   private:
    std::unique_ptr<grpc::ClientContext> context(std::chrono::milliseconds timeout) const;
    [[noreturn]] void fail_stream();
    void arm();
    bool disarm();  // true if the watchdog fired
    void watchdog();

    link_config cfg_;
    std::shared_ptr<grpc::Channel> channel_;
    std::unique_ptr<v1::Collab::Stub> stub_;
    std::unique_ptr<grpc::ClientContext> stream_ctx_;
    std::unique_ptr<grpc::ClientReaderWriter<v1::VerifyRequest, v1::VerifyResponse>> stream_;
    std::unique_ptr<grpc::ClientContext> fwd_ctx_;
    std::unique_ptr<grpc::ClientReaderWriter<v1::ForwardRequest, v1::ForwardResponse>> fwd_stream_;
    net_emu up_, down_;
    link_counters counters_;
    // Watchdog: cancels the stream when a reply is overdue.
    std::mutex wd_mu_;
    std::condition_variable wd_cv_;
    std::chrono::steady_clock::time_point wd_deadline_;
    bool wd_armed_ = false, wd_fired_ = false, wd_stop_ = false;
    std::thread wd_;
};

}  // namespace tandem::collab
