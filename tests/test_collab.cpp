// The edge-cloud layer on loopback: a collab_server in this process on a free port, edges talking to it
// over real gRPC. Greedy output must equal target-only greedy output; bad requests must be refused with
// the right status while the server keeps serving; outages must lose no token.
#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>
#include <fstream>
#include <thread>

#include "collab/edge.h"
#include "collab/messages.h"
#include "collab/server.h"
#include "engine/error.h"
#include "engine/llama2c.h"
#include "engine/session.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/common/collab_util.h"
#include "tests/common/test_util.h"

namespace tandem::collab {
namespace {

using grpc::StatusCode;

using namespace test;

// One verify exchange on a fresh link; returns the status code (OK when a reply came).
StatusCode verify_status(cloud_link& link, const v1::VerifyRequest& req, std::string* message = nullptr) {
    try {
        link.send(req);
        (void)link.receive();
        return StatusCode::OK;
    } catch (const link_error& e) {
        if (message) *message = e.what();
        link.reset_stream();
        return e.code();
    }
}

class collab_loopback : public ::testing::Test {
   protected:
    void SetUp() override {
        server_ = std::make_unique<collab_server>(target_model(), test_server_config());
        server_->start();
        port_ = server_->port();
    }
    std::unique_ptr<collab_server> server_;
    int port_ = 0;
};

TEST_F(collab_loopback, greedy_output_equals_target_only_for_chain_tree_dynamic_and_cloud_only) {
    const auto prompt = prompt_of("Once upon a time, there was a little dog");
    const auto want = target_greedy(prompt, 96);
    for (auto strategy : {draft_strategy::chain, draft_strategy::tree, draft_strategy::dynamic}) {
        edge_session edge(draft_model(), test_edge_config(port_, strategy));
        const auto r = edge.generate(prompt, 96);
        EXPECT_EQ(r.tokens, want) << "strategy " << int(strategy);
        EXPECT_EQ(r.stats.unverified_tokens, 0u);
        EXPECT_LT(r.stats.round_trips, 96u) << "speculation should need fewer round trips than tokens";
    }
    auto cfg = test_edge_config(port_);
    cfg.mode = edge_mode::cloud;
    edge_session cloud_only(draft_model(), cfg);
    const auto r = cloud_only.generate(prompt, 40);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(want.begin(), want.begin() + 40));
    EXPECT_EQ(r.stats.round_trips, 40u);
}

TEST_F(collab_loopback, thirty_two_concurrent_edges_get_target_output_and_are_batched) {
    const int n_edges = 32, n = 48;
    const std::string text = tandem::test::read_file(tandem::test::model_path("tinystories_valid_head.txt"));
    std::vector<std::vector<int32_t>> prompts, want;
    for (int i = 0; i < n_edges; ++i) {
        // Prompts of different lengths: the first 3..12 words of successive lines.
        size_t at = 0;
        for (int k = 0; k < i * 3; ++k) at = text.find('\n', at) + 1;
        std::string words;
        size_t p = at;
        for (int w = 0; w < 3 + i % 10; ++w) p = text.find(' ', p) + 1;
        prompts.push_back(prompt_of(text.substr(at, p - at)));
        want.push_back(target_greedy(prompts.back(), n));
    }
    std::vector<edge_result> got(n_edges);
    std::vector<std::string> errors(n_edges);
    std::vector<std::thread> threads;
    for (int i = 0; i < n_edges; ++i) {
        threads.emplace_back([&, i] {
            try {
                edge_session edge(draft_model(), test_edge_config(port_, i % 2 ? draft_strategy::tree : draft_strategy::chain));
                got[size_t(i)] = edge.generate(prompts[size_t(i)], n);
            } catch (const std::exception& e) {
                errors[size_t(i)] = e.what();
            }
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < n_edges; ++i) {
        EXPECT_EQ(errors[size_t(i)], "");
        EXPECT_EQ(got[size_t(i)].tokens, want[size_t(i)]) << "edge " << i;
    }
    const auto st = server_->stats();
    EXPECT_GT(st.multi_session_passes(), 0u) << "no pass verified more than one session";
    EXPECT_GT(st.max_batch_sessions(), 1u);
    EXPECT_EQ(st.sessions_open(), 0u) << "edges close their sessions";
}

TEST(collab_eviction, sessions_evicted_from_a_small_kv_pool_are_rebuilt_transparently) {
    auto cfg = test_server_config();
    cfg.kv_regions = 2;
    collab_server server(target_model(), cfg);
    server.start();
    const std::vector<std::string> texts = {"Once upon a time", "The cat sat", "Tom and Sue went to", "A big red"};
    std::vector<std::thread> threads;
    std::vector<edge_result> got(texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
        threads.emplace_back([&, i] {
            edge_session edge(draft_model(), test_edge_config(server.port()));
            // A drafting pace (2 ms per round), so that the four sessions are open at the same time however fast
            // this machine verifies: with two KV regions, some must then be evicted and rebuilt.
            got[i] = edge.generate(prompt_of(texts[i]), 40, [](const edge_event&) {
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            });
        });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(got[i].tokens, target_greedy(prompt_of(texts[i]), 40)) << texts[i];
    EXPECT_GT(server.stats().evictions(), 0u);
}

TEST_F(collab_loopback, vocabulary_mismatch_is_refused_at_session_open) {
    const std::string aidreams = ::testing::TempDir() + "/collab_aidreams260K.gguf";
    convert_llama2c(tandem::test::model_path("aidreams260K.bin"), tandem::test::model_path("aidreams_tok512.bin"), aidreams, "aidreams260K");
    auto other = model::load(aidreams, make_backend("cpu"));
    auto cfg = test_edge_config(port_);
    cfg.draft_name = "aidreams260K";
    edge_session edge(*other, cfg);
    try {
        edge.generate(other->tokenizer().encode("Once", true), 8);
        FAIL() << "a draft with another vocabulary was accepted";
    } catch (const link_error& e) {
        EXPECT_EQ(e.code(), StatusCode::FAILED_PRECONDITION);
        const std::string msg = e.what();
        EXPECT_NE(msg.find("vocabulary mismatch"), std::string::npos) << msg;
        EXPECT_NE(msg.find("aidreams260K"), std::string::npos) << msg;
        EXPECT_NE(msg.find("stories260K"), std::string::npos) << msg;
    }
}

TEST_F(collab_loopback, missing_or_wrong_token_is_unauthenticated_and_sessions_belong_to_their_caller) {
    link_config lc;
    lc.address = "127.0.0.1:" + std::to_string(port_);
    for (const std::string token : {"", "not-the-secret"}) {
        lc.token = token;
        cloud_link link(lc);
        try {
            link.open(open_request(prompt_of("Hi")));
            FAIL() << "token '" << token << "' accepted";
        } catch (const link_error& e) {
            EXPECT_EQ(e.code(), StatusCode::UNAUTHENTICATED) << e.what();
        }
        EXPECT_THROW(link.stats(), link_error);
    }
    lc.token = "edge-a-secret";
    cloud_link a(lc);
    const auto opened = a.open(open_request(prompt_of("Hi")));
    lc.token = "edge-b-secret";
    cloud_link b(lc);
    v1::VerifyRequest req;
    req.set_session_id(opened.session_id());
    req.set_request_id(1);
    req.set_base_position(opened.committed_position());
    std::string msg;
    EXPECT_EQ(verify_status(b, req, &msg), StatusCode::PERMISSION_DENIED) << msg;
    EXPECT_EQ(verify_status(a, req, &msg), StatusCode::OK) << msg;
    a.reset_stream();
    req.set_session_id("0123456789abcdef0123456789abcdef");
    EXPECT_EQ(verify_status(a, req, &msg), StatusCode::NOT_FOUND) << msg;
}

TEST_F(collab_loopback, malformed_requests_are_invalid_argument_and_the_server_stays_up) {
    link_config lc;
    lc.address = "127.0.0.1:" + std::to_string(port_);
    lc.token = "edge-a-secret";
    lc.max_message_bytes = 64 << 20;  // let the client send what the server must refuse
    cloud_link link(lc);
    const auto prompt = prompt_of("Once upon a time");
    const auto opened = link.open(open_request(prompt));
    const uint64_t P = opened.committed_position();
    uint64_t id = 0;
    auto base = [&] {
        v1::VerifyRequest r;
        r.set_session_id(opened.session_id());
        r.set_request_id(++id);
        r.set_base_position(P);
        return r;
    };
    const int32_t V = target_model().tokenizer().n_vocab();
    struct bad_case {
        const char* what;
        std::function<void(v1::VerifyRequest&)> make;
        StatusCode want;
    };
    const std::vector<bad_case> cases = {
        {"oversized tree", [](v1::VerifyRequest& r) { for (int i = 0; i < 65; ++i) { auto* n = r.add_tree(); n->set_token(5); n->set_parent(i - 1); } }, StatusCode::INVALID_ARGUMENT},
        {"parent out of range", [](v1::VerifyRequest& r) { auto* n = r.add_tree(); n->set_token(5); n->set_parent(3); }, StatusCode::INVALID_ARGUMENT},
        {"parent below -1", [](v1::VerifyRequest& r) { auto* n = r.add_tree(); n->set_token(5); n->set_parent(-7); }, StatusCode::INVALID_ARGUMENT},
        {"token >= vocab", [V](v1::VerifyRequest& r) { auto* n = r.add_tree(); n->set_token(V); n->set_parent(-1); }, StatusCode::INVALID_ARGUMENT},
        {"negative token", [](v1::VerifyRequest& r) { auto* n = r.add_tree(); n->set_token(-1); n->set_parent(-1); }, StatusCode::INVALID_ARGUMENT},
        {"committed token >= vocab", [V](v1::VerifyRequest& r) { r.add_committed_tokens(V + 10); }, StatusCode::INVALID_ARGUMENT},
        {"too many committed tokens", [](v1::VerifyRequest& r) { for (int i = 0; i < 300; ++i) r.add_committed_tokens(5); }, StatusCode::INVALID_ARGUMENT},
        {"position ahead of the cloud", [P](v1::VerifyRequest& r) { r.set_base_position(P + 5); }, StatusCode::OUT_OF_RANGE},
        {"conflicting committed history", [P](v1::VerifyRequest& r) { r.set_base_position(P - 1); r.add_committed_tokens(7); r.add_committed_tokens(7); }, StatusCode::INVALID_ARGUMENT},
        {"draft distribution in greedy mode", [](v1::VerifyRequest& r) { r.add_root_draft_tokens(3); r.add_root_draft_probs(1.f); }, StatusCode::INVALID_ARGUMENT},
        {"malformed session id", [](v1::VerifyRequest& r) { r.set_session_id("../../etc"); }, StatusCode::INVALID_ARGUMENT},
        // Past the server's message size limit gRPC itself refuses the message (RESOURCE_EXHAUSTED).
        {"absurd message size", [](v1::VerifyRequest& r) { for (int i = 0; i < 1500000; ++i) r.add_committed_tokens(5); }, StatusCode::RESOURCE_EXHAUSTED},
    };
    for (const auto& c : cases) {
        auto r = base();
        c.make(r);
        std::string msg;
        EXPECT_EQ(verify_status(link, r, &msg), c.want) << c.what << ": " << msg;
        EXPECT_FALSE(msg.empty()) << c.what;
    }
    // Request ids must increase within a stream: a duplicate ends the stream.
    {
        auto r1 = base();
        link.send(r1);
        (void)link.receive();
        std::string msg;
        EXPECT_EQ(verify_status(link, r1, &msg), StatusCode::INVALID_ARGUMENT) << msg;
    }
    // Nothing was committed by the refused requests except the one valid empty verify above; the session and
    // the server go on, and another edge is unaffected.
    auto next = base();
    next.set_base_position(P + 1);
    EXPECT_EQ(verify_status(link, next), StatusCode::OK);
    const auto want = target_greedy(prompt, 24);
    edge_session edge(draft_model(), test_edge_config(port_));
    EXPECT_EQ(edge.generate(prompt, 24).tokens, want);
    EXPECT_GE(server_->stats().requests_rejected(), cases.size());
}

TEST_F(collab_loopback, a_request_behind_the_cloud_is_answered_from_committed_tokens) {
    link_config lc;
    lc.address = "127.0.0.1:" + std::to_string(port_);
    lc.token = "edge-a-secret";
    cloud_link link(lc);
    const auto prompt = prompt_of("Once upon a time");
    const auto opened = link.open(open_request(prompt));
    v1::VerifyRequest r;
    r.set_session_id(opened.session_id());
    r.set_request_id(1);
    r.set_base_position(opened.committed_position());
    link.send(r);
    const auto first = link.receive();  // the cloud's next token; pretend this reply was lost
    ASSERT_EQ(first.accepted_tokens_size(), 1);
    r.set_request_id(2);
    auto* n = r.add_tree();
    n->set_token(9);
    n->set_parent(-1);
    link.send(r);
    const auto again = link.receive();
    EXPECT_TRUE(again.resync());
    ASSERT_EQ(again.accepted_tokens_size(), 1);
    EXPECT_EQ(again.accepted_tokens(0), first.accepted_tokens(0));
    EXPECT_EQ(again.committed_position(), first.committed_position());
}

bool have_openssl() { return std::system("openssl version >/dev/null 2>&1") == 0; }

TEST(collab_tls, self_signed_tls_works_and_plaintext_to_a_tls_server_fails_cleanly) {
    if (!have_openssl()) GTEST_SKIP() << "the openssl command is not installed (apt-get install openssl)";
    const std::string dir = ::testing::TempDir();
    const std::string cert = dir + "/collab_cert.pem", key = dir + "/collab_key.pem";
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                            "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto cfg = test_server_config();
    cfg.tls_cert = cert;
    cfg.tls_key = key;
    collab_server server(target_model(), cfg);
    server.start();
    const auto prompt = prompt_of("Once upon a time");
    auto ecfg = test_edge_config(server.port());
    ecfg.link.tls_ca = cert;
    edge_session edge(draft_model(), ecfg);
    const auto r = edge.generate(prompt, 24);
    EXPECT_EQ(r.tokens, target_greedy(prompt, 24));
    EXPECT_EQ(r.stats.unverified_tokens, 0u);

    link_config plain;
    plain.address = "127.0.0.1:" + std::to_string(server.port());
    plain.token = "edge-a-secret";
    plain.timeout = std::chrono::milliseconds(3000);
    cloud_link link(plain);
    try {
        link.open(open_request(prompt));
        FAIL() << "plaintext call to a TLS server succeeded";
    } catch (const link_error& e) {
        EXPECT_TRUE(e.unreachable()) << e.what();
    }
}

TEST(collab_config, a_server_without_token_or_with_half_a_tls_pair_is_refused) {
    auto cfg = test_server_config();
    cfg.tokens.clear();
    EXPECT_THROW(collab_server(target_model(), cfg), error);
    cfg.allow_no_auth = true;
    EXPECT_NO_THROW(collab_server(target_model(), cfg));
    cfg.tls_cert = "/nonexistent.pem";
    EXPECT_THROW(collab_server(target_model(), cfg), error);
}

TEST(collab_outage, the_edge_finishes_locally_when_the_server_dies_and_reverifies_after_a_restart) {
    auto server = std::make_unique<collab_server>(target_model(), test_server_config());
    server->start();
    const int port = server->port();
    const auto prompt = prompt_of("Once upon a time, there was a");
    const int n = 120;
    const auto want = target_greedy(prompt, n);

    // 1. The server dies after 20 verified tokens and stays down: the edge finishes alone.
    {
        edge_session edge(draft_model(), test_edge_config(port));
        size_t verified = 0;
        const auto r = edge.generate(prompt, n, [&](const edge_event& e) {
            if (e.verified) verified += e.tokens.size();
            if (verified >= 20 && server) server.reset();  // graceful shutdown, then gone
        });
        ASSERT_EQ(r.tokens.size(), size_t(n));
        EXPECT_GT(r.stats.unverified_tokens, 0u);
        EXPECT_GT(r.stats.outages, 0u);
        for (size_t i = 0; i < r.tokens.size() && r.verified[i]; ++i) EXPECT_EQ(r.tokens[i], want[i]) << i;
    }
    // 2. Restarted: the next generation verifies again.
    server = std::make_unique<collab_server>(target_model(), test_server_config(port));
    server->start();
    {
        edge_session edge(draft_model(), test_edge_config(port));
        const auto r = edge.generate(prompt, 32);
        EXPECT_EQ(r.stats.unverified_tokens, 0u);
        EXPECT_EQ(r.tokens, std::vector<int32_t>(want.begin(), want.begin() + 32));
    }
    // 3. The server restarts in the middle: once re-verified, the output equals the uninterrupted run. Tokens made
    // locally take a millisecond each here (a drafting pace, whatever the speed of this machine and backend), so that
    // the edge's retry, 20 ms after the outage, comes before the last of the 120.
    // Generates n tokens, stopping the server after 20 verified tokens and starting it again after 5 unverified
    // ones; `pace`: a millisecond per locally made token. Returns the result and whether the server restarted.
    auto restart_midway = [&](edge_session& edge, bool pace) {
        size_t verified = 0, unverified = 0;
        bool restarted = false;
        auto r = edge.generate(prompt, n, [&](const edge_event& e) {
            if (pace && !e.verified) std::this_thread::sleep_for(std::chrono::milliseconds(e.tokens.size()));
            (e.verified ? verified : unverified) += e.tokens.size();
            if (verified >= 20 && !restarted && server) server.reset();
            if (!server && unverified >= 5) {
                server = std::make_unique<collab_server>(target_model(), test_server_config(port));
                server->start();
                restarted = true;
            }
        });
        return std::make_pair(std::move(r), restarted);
    };
    {
        edge_session edge(draft_model(), test_edge_config(port));
        const auto [r, restarted] = restart_midway(edge, true);
        EXPECT_TRUE(restarted);
        EXPECT_EQ(r.tokens, want);
        EXPECT_EQ(r.stats.unverified_tokens, 0u);
        EXPECT_GT(r.stats.reconnects, 0u);
    }
    // 4. The server is back before the end, but the edge's next retry would come after it (a long backoff): the
    // edge tries once more when its output is complete, so the tail made during the outage is still verified
    // (the failover test had an edge finish its last 101 tokens inside one 100 ms backoff step).
    {
        auto cfg = test_edge_config(port);
        cfg.backoff_initial = cfg.backoff_max = std::chrono::milliseconds(60000);
        edge_session edge(draft_model(), cfg);
        const auto t0 = std::chrono::steady_clock::now();
        const auto [r, restarted] = restart_midway(edge, false);
        EXPECT_TRUE(restarted);
        EXPECT_EQ(r.tokens, want);
        EXPECT_EQ(r.stats.unverified_tokens, 0u);
        EXPECT_EQ(r.stats.reconnects, 1u);
        EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30)) << "it waited for the backoff";
    }
}

}  // namespace
}  // namespace tandem::collab

namespace tandem::collab {
namespace {

TEST(collab_split, layer_split_with_f16_equals_target_only_and_int8_mostly_agrees) {
    collab_server server(target_model(), test_server_config());
    server.start();
    const auto prompt = prompt_of("Once upon a time, there was a");
    const int n = 64;
    const auto want = target_greedy(prompt, n);
    for (int k : {1, 3}) {
        auto cfg = test_edge_config(server.port());
        cfg.mode = edge_mode::split;
        cfg.split_layer = k;
        edge_session edge(target_model(), cfg);  // the edge holds the target's first k layers
        const auto f16 = edge.generate(prompt, n);
        EXPECT_EQ(f16.tokens, want) << "split at layer " << k;
        EXPECT_EQ(f16.stats.round_trips, uint64_t(n));
        cfg.split_int8 = true;
        edge_session edge8(target_model(), cfg);
        const auto i8 = edge8.generate(prompt, n);
        ASSERT_EQ(i8.tokens.size(), size_t(n));
        // Documented agreement: int8 hidden states (per-token scale) keep the first 16 tokens identical and at
        // least 90% of positions equal to the target-only output on this pair.
        size_t same = 0;
        for (int i = 0; i < n; ++i) same += i8.tokens[size_t(i)] == want[size_t(i)];
        EXPECT_TRUE(std::equal(want.begin(), want.begin() + 16, i8.tokens.begin())) << "split at layer " << k;
        EXPECT_GE(double(same) / n, 0.9) << same << "/" << n << " at split layer " << k;
        EXPECT_LT(i8.stats.bytes_per_token(), f16.stats.bytes_per_token());
    }
    EXPECT_GT(server.stats().split_forwards(), 0u);
}

TEST(collab_split, malformed_hidden_states_are_refused) {
    collab_server server(target_model(), test_server_config());
    server.start();
    link_config lc;
    lc.address = "127.0.0.1:" + std::to_string(server.port());
    lc.token = "edge-a-secret";
    cloud_link link(lc);
    auto open = open_request({});
    open.set_split_layer(2);
    const auto opened = link.open(open);
    const int64_t E = target_model().hparams().n_embd;
    uint64_t id = 0;
    auto status = [&](const v1::ForwardRequest& r) {
        try {
            link.forward(r);
            return StatusCode::OK;
        } catch (const link_error& e) {
            link.reset_stream();
            return e.code();
        }
    };
    auto req = [&](int rows, v1::HiddenEncoding enc) {
        v1::ForwardRequest r;
        r.set_session_id(opened.session_id());
        r.set_request_id(++id);
        encode_hidden(std::vector<float>(size_t(rows * E), 0.5f), E, enc, &r);
        return r;
    };
    auto r = req(2, v1::HIDDEN_F16);
    r.mutable_hidden()->pop_back();
    EXPECT_EQ(status(r), StatusCode::INVALID_ARGUMENT) << "truncated hidden bytes";
    r = req(2, v1::HIDDEN_INT8);
    r.mutable_scales()->RemoveLast();
    EXPECT_EQ(status(r), StatusCode::INVALID_ARGUMENT) << "missing scale";
    r = req(1, v1::HIDDEN_INT8);
    r.set_scales(0, std::numeric_limits<float>::infinity());
    EXPECT_EQ(status(r), StatusCode::INVALID_ARGUMENT) << "infinite scale";
    r = req(1, v1::HIDDEN_F16);
    r.set_base_position(3);
    EXPECT_EQ(status(r), StatusCode::OUT_OF_RANGE) << "position ahead";
    r = req(0, v1::HIDDEN_F16);
    EXPECT_EQ(status(r), StatusCode::INVALID_ARGUMENT) << "no rows";
    r = req(2, v1::HIDDEN_F16);
    EXPECT_EQ(status(r), StatusCode::OK);
    r = req(1, v1::HIDDEN_F16);
    EXPECT_EQ(status(r), StatusCode::OUT_OF_RANGE) << "position behind: nothing applied twice";
    r = req(1, v1::HIDDEN_F16);
    r.set_base_position(2);
    EXPECT_EQ(status(r), StatusCode::OK);
    EXPECT_EQ(server.stats().split_tokens(), 3u);
}

}  // namespace
}  // namespace tandem::collab


namespace tandem::collab {
namespace {

TEST(collab_health, the_standard_health_service_answers_without_a_token) {
    auto server = std::make_unique<collab_server>(target_model(), test_server_config());
    server->start();
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server->port()), grpc::InsecureChannelCredentials());
    auto stub = grpc::health::v1::Health::NewStub(channel);
    for (const std::string service : {"", "tandem.v1.Collab"}) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        grpc::health::v1::HealthCheckRequest req;
        req.set_service(service);
        grpc::health::v1::HealthCheckResponse resp;
        const grpc::Status st = stub->Check(&ctx, req, &resp);
        ASSERT_TRUE(st.ok()) << st.error_message();
        EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << "service '" << service << "'";
    }
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("no.such.Service");
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_EQ(stub->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace tandem::collab
