// The server's security boundary on loopback, through the raw generated stub (no edge logic in between): every
// Collab RPC refuses a call without a valid token while the standard health service answers without one; a
// session is usable only by the caller that opened it; per-caller quotas of sessions, KV rows and request rate
// refuse the caller over its limit with RESOURCE_EXHAUSTED naming the limit and the caller, while another
// caller proceeds; `tandem serve --tokens-file` rejects malformed lines.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "collab/server.h"
#include "engine/error.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tandem/v1/collab.grpc.pb.h"
#include "tests/common/collab_util.h"

namespace tandem::collab {
namespace {

using grpc::StatusCode;
using namespace test;

// One caller: a channel and a token ("" = no authorization metadata at all).
class caller {
 public:
    caller(int port, std::string token)
        : stub_(v1::Collab::NewStub(
              grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()))),
          token_(std::move(token)) {}

    grpc::Status open(const std::vector<int32_t>& prompt, v1::OpenSessionResponse* resp, uint32_t split_layer = 0) {
        auto ctx = context();
        v1::OpenSessionRequest req = open_request(split_layer ? std::vector<int32_t>{} : prompt);
        req.set_split_layer(split_layer);
        return stub_->OpenSession(ctx.get(), req, resp);
    }
    grpc::Status close(const std::string& id) {
        auto ctx = context();
        v1::CloseSessionRequest req;
        req.set_session_id(id);
        v1::CloseSessionResponse resp;
        return stub_->CloseSession(ctx.get(), req, &resp);
    }
    grpc::Status stats() {
        auto ctx = context();
        v1::StatsResponse resp;
        return stub_->GetStats(ctx.get(), v1::StatsRequest{}, &resp);
    }
    // One verify request on its own stream: `nodes` draft nodes in a chain (token 5 each), no committed tokens.
    grpc::Status verify(const std::string& id, uint64_t base, int nodes, v1::VerifyResponse* resp) {
        v1::VerifyRequest req;
        req.set_session_id(id);
        req.set_request_id(1);
        req.set_base_position(base);
        for (int i = 0; i < nodes; ++i) {
            auto* n = req.add_tree();
            n->set_token(5);
            n->set_parent(i - 1);
        }
        auto ctx = context();
        auto stream = stub_->Verify(ctx.get());
        stream->Write(req);
        stream->WritesDone();
        (void)stream->Read(resp);
        return stream->Finish();
    }
    // One forward request of n rows of zero hidden states (INT8, scale 1) at `base`.
    grpc::Status forward(const std::string& id, uint64_t base, uint32_t n, v1::ForwardResponse* resp) {
        v1::ForwardRequest req;
        req.set_session_id(id);
        req.set_request_id(1);
        req.set_base_position(base);
        req.set_n_tokens(n);
        req.set_encoding(v1::HIDDEN_INT8);
        req.set_hidden(std::string(size_t(n) * size_t(target_model().hparams().n_embd), '\0'));
        for (uint32_t i = 0; i < n; ++i) req.add_scales(1.f);
        auto ctx = context();
        auto stream = stub_->Forward(ctx.get());
        stream->Write(req);
        stream->WritesDone();
        (void)stream->Read(resp);
        return stream->Finish();
    }

 private:
    std::unique_ptr<grpc::ClientContext> context() {
        auto ctx = std::make_unique<grpc::ClientContext>();
        ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
        if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
        return ctx;
    }
    std::unique_ptr<v1::Collab::Stub> stub_;
    std::string token_;
};

// The status is RESOURCE_EXHAUSTED and its message names every one of `words`.
void expect_exhausted(const grpc::Status& st, std::initializer_list<const char*> words) {
    EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    for (const char* w : words) EXPECT_NE(st.error_message().find(w), std::string::npos) << st.error_message();
}

std::unique_ptr<collab_server> start_server(const caller_limits& q) {
    server_config c = test_server_config();
    c.per_caller = q;
    auto s = std::make_unique<collab_server>(target_model(), c);
    s->start();
    return s;
}

TEST(collab_security, every_rpc_needs_a_valid_token_but_health_does_not) {
    auto server = start_server({});
    caller a(server->port(), token_a);
    v1::OpenSessionResponse opened;
    ASSERT_TRUE(a.open(prompt_of("Hi"), &opened).ok());
    for (const std::string& token : std::vector<std::string>{"", "not-the-secret", std::string(token_a) + "x"}) {
        SCOPED_TRACE("token '" + token + "'");
        caller bad(server->port(), token);
        v1::OpenSessionResponse o;
        v1::VerifyResponse v;
        v1::ForwardResponse f;
        EXPECT_EQ(bad.open(prompt_of("Hi"), &o).error_code(), StatusCode::UNAUTHENTICATED);
        EXPECT_EQ(bad.close(opened.session_id()).error_code(), StatusCode::UNAUTHENTICATED);
        EXPECT_EQ(bad.stats().error_code(), StatusCode::UNAUTHENTICATED);
        EXPECT_EQ(bad.verify(opened.session_id(), opened.committed_position(), 0, &v).error_code(),
                  StatusCode::UNAUTHENTICATED);
        EXPECT_EQ(bad.forward(opened.session_id(), 0, 1, &f).error_code(), StatusCode::UNAUTHENTICATED);
    }
    // Health is deliberately open (Kubernetes' gRPC probe cannot send a token); it reveals only the status.
    auto health = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server->port()), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("tandem.v1.Collab");
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    // The refused calls did nothing to the session: it is still open and where it was.
    v1::VerifyResponse v;
    ASSERT_TRUE(a.verify(opened.session_id(), opened.committed_position(), 0, &v).ok());
    EXPECT_EQ(v.committed_position(), opened.committed_position() + 1);
}

TEST(collab_security, another_callers_session_is_refused_and_left_untouched) {
    auto server = start_server({});
    caller a(server->port(), token_a), b(server->port(), token_b);
    v1::OpenSessionResponse opened;
    ASSERT_TRUE(a.open(prompt_of("Once upon a time"), &opened).ok());
    const uint64_t p0 = opened.committed_position();
    v1::VerifyResponse v;
    EXPECT_EQ(b.verify(opened.session_id(), p0, 3, &v).error_code(), StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(b.close(opened.session_id()).error_code(), StatusCode::PERMISSION_DENIED);
    v1::ForwardResponse f;
    EXPECT_EQ(b.forward(opened.session_id(), 0, 1, &f).error_code(), StatusCode::PERMISSION_DENIED);
    // Had B advanced the session, A's request at p0 would be answered as a resync from a later position.
    ASSERT_TRUE(a.verify(opened.session_id(), p0, 0, &v).ok());
    EXPECT_FALSE(v.resync());
    EXPECT_EQ(v.committed_position(), p0 + 1);
    EXPECT_TRUE(a.close(opened.session_id()).ok());
}

TEST(collab_security, a_caller_over_its_session_limit_is_refused_and_another_proceeds) {
    caller_limits q;
    q.max_sessions = 2;
    auto server = start_server(q);
    caller a(server->port(), token_a), b(server->port(), token_b);
    v1::OpenSessionResponse s1, s2, s3;
    ASSERT_TRUE(a.open(prompt_of("One"), &s1).ok());
    ASSERT_TRUE(a.open(prompt_of("Two"), &s2).ok());
    expect_exhausted(a.open(prompt_of("Three"), &s3), {"caller-0", "limit of 2 open session"});
    for (int i = 0; i < 2; ++i) {
        v1::OpenSessionResponse o;
        EXPECT_TRUE(b.open(prompt_of("B"), &o).ok()) << "caller B is held back by caller A's limit";
    }
    // Closing gives the quota back.
    ASSERT_TRUE(a.close(s1.session_id()).ok());
    EXPECT_TRUE(a.open(prompt_of("Three"), &s3).ok());
    EXPECT_EQ(server->stats().sessions_open(), 4u);
}

TEST(collab_security, a_caller_over_its_kv_rows_is_refused_and_another_proceeds) {
    caller_limits q;
    q.max_kv_rows = 20;
    auto server = start_server(q);
    caller a(server->port(), token_a), b(server->port(), token_b);
    auto prompt = prompt_of("Once upon a time there was a little girl named Lily who loved the sea");
    ASSERT_GE(prompt.size(), 12u);
    prompt.resize(12);  // two prompts do not fit in 20 rows
    const int64_t held = 12;
    v1::OpenSessionResponse s1, s2;
    ASSERT_TRUE(a.open(prompt, &s1).ok());
    expect_exhausted(a.open(prompt, &s2), {"caller-0", "KV memory limit of 20"});
    ASSERT_TRUE(b.open(prompt, &s2).ok()) << "caller B is held back by caller A's rows";

    // A verify may add the tree's accepted path and one token: a tree that could pass the limit is refused
    // before anything is verified, a smaller one goes through.
    v1::VerifyResponse v;
    const int too_many = int(20 - held);  // held + too_many + 1 = 21 rows at most
    expect_exhausted(a.verify(s1.session_id(), uint64_t(held), too_many, &v), {"caller-0", "KV memory"});
    ASSERT_TRUE(a.verify(s1.session_id(), uint64_t(held), 0, &v).ok()) << "the refused request applied nothing";
    EXPECT_EQ(v.committed_position(), uint64_t(held) + 1);
    EXPECT_TRUE(b.verify(s2.session_id(), uint64_t(held), too_many - 1, &v).ok())
        << "B is limited by its own rows only";

    // Layer-split sessions count their forwarded positions; closing A's token session frees its rows.
    ASSERT_TRUE(a.close(s1.session_id()).ok());
    v1::OpenSessionResponse split;
    ASSERT_TRUE(a.open({}, &split, 1).ok());
    v1::ForwardResponse f;
    ASSERT_TRUE(a.forward(split.session_id(), 0, 8, &f).ok());
    ASSERT_TRUE(a.forward(split.session_id(), 8, 8, &f).ok());
    expect_exhausted(a.forward(split.session_id(), 16, 8, &f), {"caller-0", "KV memory limit of 20", "holds 16"});
    EXPECT_TRUE(a.forward(split.session_id(), 16, 4, &f).ok()) << "the refused request applied nothing";
}

TEST(collab_security, a_caller_over_its_request_rate_is_refused_and_another_proceeds) {
    caller_limits q;
    q.requests_per_second = 0.2;  // one new request every 5 s: the burst below cannot refill during the test
    q.burst = 3;
    auto server = start_server(q);
    caller a(server->port(), token_a), b(server->port(), token_b);
    v1::OpenSessionResponse opened;
    ASSERT_TRUE(a.open(prompt_of("Hi"), &opened).ok());
    ASSERT_TRUE(a.stats().ok());
    v1::VerifyResponse v;
    ASSERT_TRUE(a.verify(opened.session_id(), opened.committed_position(), 0, &v).ok()) << "stream messages count";
    expect_exhausted(a.stats(), {"caller-0", "request rate limit of 0.2 requests/s (burst 3)"});
    expect_exhausted(a.verify(opened.session_id(), v.committed_position(), 0, &v), {"caller-0", "rate"});
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(b.stats().ok()) << "caller B is held back by caller A's rate";
    EXPECT_TRUE(a.close(opened.session_id()).ok()) << "closing is never rate limited";
}

TEST(collab_security, named_callers_appear_in_limit_messages_and_tokens_must_be_distinct) {
    server_config c = test_server_config();
    c.named_tokens = {{"alice", "alice-secret"}};
    c.per_caller.max_sessions = 1;
    {
        collab_server server(target_model(), c);
        server.start();
        caller alice(server.port(), "alice-secret");
        v1::OpenSessionResponse o;
        ASSERT_TRUE(alice.open(prompt_of("Hi"), &o).ok());
        expect_exhausted(alice.open(prompt_of("Hi"), &o), {"caller 'alice'"});
    }
    c.named_tokens = {{"mallory", token_a}};
    EXPECT_THROW({ collab_server s(target_model(), c); }, tandem::error);
    c.named_tokens = {{"alice", "one"}, {"alice", "two"}};
    EXPECT_THROW({ collab_server s(target_model(), c); }, tandem::error);
    c.named_tokens = {{"alice", ""}};
    EXPECT_THROW({ collab_server s(target_model(), c); }, tandem::error);
}

TEST(collab_security, serve_refuses_a_malformed_tokens_file_naming_the_line) {
    const std::string path = ::testing::TempDir() + "tandem_tokens_bad.txt";
    {
        std::ofstream f(path);
        f << "# callers\nalice alice-secret\nbob bob-secret extra\n";
    }
    const std::string cmd =
        std::string(TANDEM_CLI_PATH) + " serve --listen 127.0.0.1:0 --tokens-file " + path + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[256];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int rc = pclose(p);
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(out.find("line 3"), std::string::npos) << out;
    EXPECT_NE(out.find("'name token'"), std::string::npos) << out;
    std::remove(path.c_str());
}

}  // namespace
}  // namespace tandem::collab
