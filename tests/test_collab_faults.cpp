// The fault matrix of the edge-cloud layer on loopback, beyond the outages of test_collab.cpp: a client that
// stops reading its replies, a client that sends garbage after a valid handshake (raw bytes on the HTTP/2
// connection, and an unparsable message on an authenticated call), and a link with delay spikes and lost
// segments, and a device that cannot build a kernel. In each, the server stays up, other sessions are unaffected and
// no committed token is lost.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include "collab/cloud_link.h"
#include "engine/error.h"
#include "engine/session.h"
#include "tests/common/collab_util.h"
#include "tests/common/test_util.h"

namespace tandem::collab {
namespace {

using grpc::StatusCode;
using namespace test;

class collab_faults : public ::testing::Test {
   protected:
    void SetUp() override {
        server_ = std::make_unique<collab_server>(target_model(), test_server_config());
        server_->start();
        port_ = server_->port();
    }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
    // A well-behaved edge's whole generation: it must equal target-only greedy output.
    void expect_a_normal_edge_is_served(const std::string& text, int n) {
        const auto prompt = prompt_of(text);
        edge_session edge(draft_model(), test_edge_config(port_));
        const auto r = edge.generate(prompt, n);
        EXPECT_EQ(r.tokens, target_greedy(prompt, n)) << text;
        EXPECT_EQ(r.stats.unverified_tokens, 0u) << text;
    }
    std::unique_ptr<collab_server> server_;
    int port_ = 0;
};

// The raw Verify stream of a session, written but never read.
TEST_F(collab_faults, a_client_that_stops_reading_blocks_only_itself) {
    const auto prompt = prompt_of("One day, a cat");
    link_config lc;
    lc.address = address();
    lc.token = token_a;
    cloud_link opener(lc);
    const auto opened = opener.open(open_request(prompt));

    auto channel = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
    auto stub = v1::Collab::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + token_a);
    auto stream = stub->Verify(&ctx);
    std::atomic<uint64_t> written{0};
    std::thread writer([&] {
        // Empty trees at the session's position: each is valid (the reply is the target's next token, the
        // same every time), and the replies pile up unread until the connection's flow-control window fills
        // and the server's write blocks.
        for (uint64_t id = 1; id <= 200000; ++id) {
            v1::VerifyRequest req;
            req.set_session_id(opened.session_id());
            req.set_request_id(id);
            req.set_base_position(prompt.size());
            if (!stream->Write(req)) break;
            written = id;
        }
    });
    // Meanwhile other edges are served as usual.
    expect_a_normal_edge_is_served("Once upon a time, there was a little dog", 48);
    expect_a_normal_edge_is_served("Lily wanted to play", 24);
    std::printf("[ info ] the stalled client had written %llu requests while the other edges ran\n",
                (unsigned long long)written.load());
    EXPECT_GT(written.load(), 0u);
    ctx.TryCancel();
    writer.join();
    EXPECT_EQ(stream->Finish().error_code(), StatusCode::CANCELLED);
    // The stalled session is intact: it answers from its position on a new stream.
    v1::VerifyRequest req;
    req.set_session_id(opened.session_id());
    req.set_request_id(1);
    req.set_base_position(prompt.size());
    opener.send(req);
    const auto reply = opener.receive();
    ASSERT_EQ(reply.accepted_tokens_size(), 1);
    EXPECT_EQ(reply.accepted_tokens(0), target_greedy(prompt, 1)[0]);
    // The first of the stalled requests committed the target's token; the thousands after it were answered
    // as resyncs from the same position and moved nothing.
    EXPECT_EQ(reply.committed_position(), prompt.size() + 1);
    expect_a_normal_edge_is_served("The sun was shining", 16);
}

// Bytes read from fd until it is closed or `seconds` pass; -1 when it timed out with the socket still open.
long drain(int fd, int seconds) {
    timeval tv{seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long total = 0;
    char buf[4096];
    for (;;) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) return total;
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : total;
        total += n;
    }
}

TEST_F(collab_faults, raw_garbage_after_the_http2_preface_drops_only_that_connection) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(port_));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
    // A valid HTTP/2 start: the client preface and an empty SETTINGS frame...
    std::string bytes = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    bytes += std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
    // ...then 64 KiB of noise.
    std::mt19937 gen(7);
    for (int i = 0; i < 65536; ++i) bytes += char(gen() & 0xff);
    (void)send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    EXPECT_GE(drain(fd, 10), 0) << "the server kept a connection that sent garbage";
    close(fd);
    expect_a_normal_edge_is_served("Once upon a time, there was a little dog", 32);
}

TEST_F(collab_faults, an_unparsable_message_on_an_authenticated_stream_leaves_the_session_intact) {
    const auto prompt = prompt_of("Tom and Sue went to the park");
    const auto want = target_greedy(prompt, 2);
    link_config lc;
    lc.address = address();
    lc.token = token_a;
    cloud_link link(lc);
    const auto opened = link.open(open_request(prompt));

    // Field 1 with wire type 7, which does not exist: no protobuf parser accepts it.
    const std::string junk = std::string("\x0f\xff\xff\xff", 4) + std::string(100, '\xee');
    auto channel = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
    {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", std::string("Bearer ") + token_a);
        const grpc::internal::RpcMethod method("/tandem.v1.Collab/Verify", grpc::internal::RpcMethod::BIDI_STREAMING);
        std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> raw(
            grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(), method,
                                                                                                &ctx));
        grpc::Slice slice(junk);
        grpc::ByteBuffer msg(&slice, 1);
        raw->Write(msg);
        raw->WritesDone();
        grpc::ByteBuffer reply;
        EXPECT_FALSE(raw->Read(&reply)) << "the server answered an unparsable request";
        const auto st = raw->Finish();
        std::printf("[ info ] unparsable verify message: %d %s\n", int(st.error_code()), st.error_message().c_str());
    }
    {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", std::string("Bearer ") + token_a);
        const grpc::internal::RpcMethod method("/tandem.v1.Collab/OpenSession", grpc::internal::RpcMethod::NORMAL_RPC);
        grpc::Slice slice(junk);
        grpc::ByteBuffer req(&slice, 1), resp;
        const auto st =
            grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel.get(), method, &ctx, req, &resp);
        EXPECT_FALSE(st.ok()) << "an unparsable OpenSession was accepted";
    }
    // The session did not move: its next verify is answered at the prompt's end, and commits the accepted node
    // and the target's token.
    v1::VerifyRequest req;
    req.set_session_id(opened.session_id());
    req.set_request_id(1);
    req.set_base_position(prompt.size());
    auto* node = req.add_tree();
    node->set_token(want[0]);
    node->set_parent(-1);
    link.send(req);
    const auto reply = link.receive();
    ASSERT_EQ(reply.accepted_nodes_size(), 1);
    EXPECT_EQ(std::vector<int32_t>(reply.accepted_tokens().begin(), reply.accepted_tokens().end()), want);
    EXPECT_EQ(reply.committed_position(), prompt.size() + 2);
    expect_a_normal_edge_is_served("Once upon a time", 24);
}

TEST_F(collab_faults, delay_spikes_and_lost_segments_lose_no_token) {
    const auto prompt = prompt_of("Once upon a time, there was a big");
    const int n = 64;
    auto cfg = test_edge_config(port_);
    cfg.link.timeout = std::chrono::milliseconds(300);
    cfg.link.emu.delay_ms = 2;
    cfg.link.emu.spike_prob = 0.15;  // a spike longer than the deadline: the reply is given up on
    cfg.link.emu.spike_ms = 450;
    cfg.link.emu.loss_prob = 0.2;  // one loss costs 100 ms, two in a row 300 ms: past the deadline
    cfg.link.emu.rto_ms = 100;
    cfg.link.emu.seed = 11;
    edge_session edge(draft_model(), cfg);
    size_t verified = 0;
    const auto r = edge.generate(prompt, n, [&](const edge_event& e) {
        verified += e.confirmed;
        if (e.verified) verified += e.tokens.size();
        // A consumer that takes its time (a display, a speaker): without it the draft would finish all n tokens
        // alone during the first back-off and nothing would be re-verified.
        else std::this_thread::sleep_for(std::chrono::milliseconds(30));
    });
    const auto want = target_greedy(prompt, n);
    ASSERT_EQ(r.tokens.size(), size_t(n));
    std::printf("[ info ] bad link: %llu outages, %llu reconnects, %llu round trips, %llu unverified at the end\n",
                (unsigned long long)r.stats.outages, (unsigned long long)r.stats.reconnects,
                (unsigned long long)r.stats.round_trips, (unsigned long long)r.stats.unverified_tokens);
    EXPECT_GT(r.stats.outages, 0u) << "the emulated faults never exceeded the deadline: the test tests nothing";
    EXPECT_GT(r.stats.reconnects, 0u) << "the edge never came back after an outage";
    EXPECT_GE(verified, size_t(n / 2)) << "most of the output should have been verified across the outages";
    // Every verified token is the target's; a run that ends in an outage may leave a draft tail unverified.
    for (size_t i = 0; i < r.tokens.size() && r.verified[i]; ++i) EXPECT_EQ(r.tokens[i], want[i]) << i;
    if (r.stats.unverified_tokens == 0) {
        EXPECT_EQ(r.tokens, want);
    }
}

}  // namespace
}  // namespace tandem::collab

namespace tandem::collab {
namespace {

using namespace test;

// A device that cannot build a kernel (forced by TANDEM_FAIL_KERNELS through the backend's real error path): the
// error names the kernel; a server on that device stays up and answers UNAVAILABLE, so its edges go on alone
// (every token marked unverified, none lost) instead of failing.
class device_faults : public ::testing::TestWithParam<std::string> {};

TEST_P(device_faults, a_kernel_that_fails_to_build_is_named_and_the_server_stays_up) {
    std::string why;
    auto be = tandem::test::try_backend(GetParam(), why);
    if (!be) GTEST_SKIP() << why;
    tandem::test::scoped_env fail("TANDEM_FAIL_KERNELS", "attention");
    auto target = model::load(tandem::test::model_path("stories260K.gguf"), std::move(be));
    {
        sampling_params greedy;
        greedy.temperature = 0;
        session s(*target, greedy, 64);
        try {
            s.feed(prompt_of("Once upon a time"));
            ADD_FAILURE() << "the forward pass ran without its attention kernel";
        } catch (const error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("attention"), std::string::npos) << what;
            EXPECT_NE(what.find("TANDEM_FAIL_KERNELS"), std::string::npos) << what;
        }
    }
    collab_server server(*target, test_server_config());
    server.start();
    edge_session edge(draft_model(), test_edge_config(server.port()));
    const auto r = edge.generate(prompt_of("Once upon a time"), 16);
    EXPECT_EQ(r.tokens.size(), 16u);
    EXPECT_EQ(r.stats.unverified_tokens, 16u);
    EXPECT_GT(r.stats.outages, 0u);
    link_config lc;
    lc.address = "127.0.0.1:" + std::to_string(server.port());
    lc.token = token_a;
    cloud_link link(lc);
    EXPECT_NO_THROW(link.stats()) << "the server went down";
}

INSTANTIATE_TEST_SUITE_P(gpu, device_faults, ::testing::Values("opencl", "vulkan"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem::collab
