// The edge's gRPC link; see cloud_link.h.
#include "collab/cloud_link.h"

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/error.h"

namespace tandem::collab {

namespace {
std::shared_ptr<grpc::ChannelCredentials> credentials(const link_config& c) {
    if (c.tls_ca.empty()) return grpc::InsecureChannelCredentials();
    std::ifstream f(c.tls_ca, std::ios::binary);
    if (!f) throw error(TANDEM_ERR_IO, "cannot read the TLS CA file '" + c.tls_ca + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ss.str();
    return grpc::SslCredentials(o);
}

link_error from_status(const grpc::Status& st, const char* what) {
    // A stream reset at the HTTP/2 level (nginx resets the edge's stream when the replica behind it dies) reaches
    // gRPC as INTERNAL, but it is a transport failure, not the server's answer (the server's own statuses arrive
    // in trailers): report it as UNAVAILABLE so the edge reconnects instead of giving up.
    if (st.error_code() == grpc::StatusCode::INTERNAL && st.error_message().rfind("Received RST_STREAM", 0) == 0) {
        return link_error(grpc::StatusCode::UNAVAILABLE,
                          std::string(what) + ": " + st.error_message() + " (the connection to the server was lost)");
    }
    return link_error(st.error_code(), std::string(what) + ": " + st.error_message());
}
}  // namespace

std::string make_route_key() {
    // Only needs to spread edges evenly over replicas, not to be secret: the session id is the capability.
    std::random_device rd;
    const uint64_t k = (uint64_t(rd()) << 32) ^ uint64_t(rd());
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(k));
    return buf;
}

cloud_link::cloud_link(const link_config& cfg) : cfg_(cfg), up_(cfg.emu), down_([&] {
    net_emu_config d = cfg.emu;
    d.seed ^= 0x5bd1e995u;
    return d;
}()) {
    if (cfg_.route_key.empty()) cfg_.route_key = make_route_key();
    // gRPC rejects metadata values outside printable ASCII; say which setting is wrong instead.
    for (const char ch : cfg_.route_key) {
        if (ch < 0x20 || ch > 0x7e) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the routing key must be printable ASCII");
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(cfg.max_message_bytes);
    args.SetMaxSendMessageSize(cfg.max_message_bytes);
    // Reconnect promptly after an outage rather than after gRPC's default back-off of up to 2 minutes; the
    // edge paces its own retries.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel(cfg.address, credentials(cfg), args);
    stub_ = v1::Collab::NewStub(channel_);
    wd_ = std::thread([this] { watchdog(); });
}

cloud_link::~cloud_link() {
    {
        std::lock_guard lock(wd_mu_);
        wd_stop_ = true;
    }
    wd_cv_.notify_all();
    wd_.join();
    reset_stream();
}

std::unique_ptr<grpc::ClientContext> cloud_link::context(std::chrono::milliseconds timeout) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!cfg_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + cfg_.token);
    ctx->AddMetadata(route_header, cfg_.route_key);
    if (timeout.count() > 0) ctx->set_deadline(std::chrono::system_clock::now() + timeout);
    return ctx;
}

v1::OpenSessionResponse cloud_link::open(const v1::OpenSessionRequest& req) {
    reset_stream();
    auto ctx = context(cfg_.timeout);
    v1::OpenSessionResponse resp;
    up_.pass(req.ByteSizeLong());
    counters_.bytes_sent += req.ByteSizeLong();
    const grpc::Status st = stub_->OpenSession(ctx.get(), req, &resp);
    if (!st.ok()) throw from_status(st, "open session");
    down_.pass(resp.ByteSizeLong());
    counters_.bytes_received += resp.ByteSizeLong();
    return resp;
}

void cloud_link::close(const std::string& session_id) {
    reset_stream();
    if (session_id.empty()) return;
    auto ctx = context(std::chrono::milliseconds(std::min<int64_t>(cfg_.timeout.count(), 2000)));
    v1::CloseSessionRequest req;
    req.set_session_id(session_id);
    v1::CloseSessionResponse resp;
    (void)stub_->CloseSession(ctx.get(), req, &resp);
}

v1::StatsResponse cloud_link::stats() {
    auto ctx = context(cfg_.timeout);
    v1::StatsResponse resp;
    const grpc::Status st = stub_->GetStats(ctx.get(), v1::StatsRequest{}, &resp);
    if (!st.ok()) throw from_status(st, "stats");
    return resp;
}

void cloud_link::arm() {
    {
        std::lock_guard lock(wd_mu_);
        wd_deadline_ = std::chrono::steady_clock::now() + cfg_.timeout;
        wd_armed_ = true;
        wd_fired_ = false;
    }
    wd_cv_.notify_all();
}

bool cloud_link::disarm() {
    std::lock_guard lock(wd_mu_);
    const bool fired = wd_fired_;
    wd_armed_ = wd_fired_ = false;
    return fired;
}

v1::ForwardResponse cloud_link::forward(const v1::ForwardRequest& req) {
    if (!fwd_stream_) {
        auto ctx = context(std::chrono::milliseconds(0));
        fwd_stream_ = stub_->Forward(ctx.get());
        std::lock_guard lock(wd_mu_);
        fwd_ctx_ = std::move(ctx);
    }
    up_.pass(req.ByteSizeLong());
    counters_.bytes_sent += req.ByteSizeLong();
    const auto t0 = std::chrono::steady_clock::now();
    arm();
    v1::ForwardResponse resp;
    if (!fwd_stream_->Write(req) || !fwd_stream_->Read(&resp)) {
        grpc::Status st = fwd_stream_->Finish();
        fwd_stream_.reset();
        const bool fired = disarm();
        {
            std::lock_guard lock(wd_mu_);
            fwd_ctx_.reset();
        }
        if (fired) throw link_error(grpc::StatusCode::DEADLINE_EXCEEDED, "forward: no reply within " + std::to_string(cfg_.timeout.count()) + " ms");
        if (st.ok()) st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server ended the stream");
        throw from_status(st, "forward");
    }
    disarm();
    down_.pass(resp.ByteSizeLong());
    counters_.bytes_received += resp.ByteSizeLong();
    counters_.round_trips += 1;
    counters_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return resp;
}

void cloud_link::reset_stream() {
    if (fwd_stream_) {
        fwd_ctx_->TryCancel();
        (void)fwd_stream_->Finish();
        fwd_stream_.reset();
        std::lock_guard lock(wd_mu_);
        fwd_ctx_.reset();
    }
    if (!stream_) return;
    stream_ctx_->TryCancel();
    (void)stream_->Finish();
    stream_.reset();
    std::lock_guard lock(wd_mu_);
    wd_armed_ = wd_fired_ = false;
    stream_ctx_.reset();
}

void cloud_link::fail_stream() {
    grpc::Status st = stream_->Finish();
    stream_.reset();
    bool fired;
    {
        std::lock_guard lock(wd_mu_);
        fired = wd_fired_;
        wd_armed_ = wd_fired_ = false;
        stream_ctx_.reset();
    }
    if (fired) throw link_error(grpc::StatusCode::DEADLINE_EXCEEDED, "verify: no reply within " + std::to_string(cfg_.timeout.count()) + " ms");
    if (st.ok()) st = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server ended the stream");
    throw from_status(st, "verify");
}

void cloud_link::send(const v1::VerifyRequest& req) {
    if (!stream_) {
        auto ctx = context(std::chrono::milliseconds(0));
        stream_ = stub_->Verify(ctx.get());
        std::lock_guard lock(wd_mu_);
        stream_ctx_ = std::move(ctx);
    }
    arm();  // the emulated uplink delay counts against the reply's deadline, as a real link's would
    up_.pass(req.ByteSizeLong());
    counters_.bytes_sent += req.ByteSizeLong();
    if (!stream_->Write(req)) fail_stream();
}

v1::VerifyResponse cloud_link::receive() {
    if (!stream_) throw link_error(grpc::StatusCode::FAILED_PRECONDITION, "verify: receive without send");
    const auto t0 = std::chrono::steady_clock::now();
    v1::VerifyResponse resp;
    if (!stream_->Read(&resp)) fail_stream();
    // The emulated downlink delay counts too: a reply that would arrive after the deadline is given up on, as
    // the watchdog gives up on a real one (the stream is dropped; the next send opens a new one).
    const double down = down_.cost(resp.ByteSizeLong());
    std::chrono::steady_clock::time_point deadline;
    {
        std::lock_guard lock(wd_mu_);
        deadline = wd_deadline_;
    }
    disarm();
    const auto arrival = std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(down));
    if (down > 0 && arrival > deadline) {
        std::this_thread::sleep_until(deadline);
        reset_stream();
        throw link_error(grpc::StatusCode::DEADLINE_EXCEEDED,
                         "verify: no reply within " + std::to_string(cfg_.timeout.count()) + " ms (emulated link)");
    }
    std::this_thread::sleep_until(arrival);
    counters_.bytes_received += resp.ByteSizeLong();
    counters_.round_trips += 1;
    counters_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return resp;
}

void cloud_link::watchdog() {
    std::unique_lock lock(wd_mu_);
    while (!wd_stop_) {
        if (!wd_armed_) {
            wd_cv_.wait(lock);
            continue;
        }
        if (wd_cv_.wait_until(lock, wd_deadline_) == std::cv_status::timeout && wd_armed_ &&
            std::chrono::steady_clock::now() >= wd_deadline_) {
            wd_armed_ = false;
            wd_fired_ = true;
            if (stream_ctx_) stream_ctx_->TryCancel();
            if (fwd_ctx_) fwd_ctx_->TryCancel();
        }
    }
}

}  // namespace tandem::collab
