// Distillation from a network teacher: rpc TopK of a loopback `tandem serve` (stories260K) against the local
// teacher on the same batch, its refusals (token, vocabulary, limits), the remote teacher's retries against a
// server that is not there, and a fine-tuning step through the C API's teacher callbacks against the same step
// with the local teacher.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "collab/remote_teacher.h"
#include "collab/server.h"
#include "engine/distill.h"
#include "engine/error.h"
#include "engine/tandem_train.h"
#include "tandem/v1/collab.grpc.pb.h"
#include "tests/common/collab_util.h"
#include "tests/common/test_util.h"

namespace tandem::collab {
namespace {

using test::target_model;

// A loopback server with the test callers; at most 2 sequences per TopK request, so that a batch of 3 or more is
// cut into several requests.
struct distill_server {
    explicit distill_server(int32_t max_sequences = 2) : srv(target_model(), config(max_sequences)) { srv.start(); }
    static server_config config(int32_t max_sequences) {
        server_config c = test::test_server_config();
        c.topk_max_sequences = max_sequences;
        return c;
    }
    std::string address() const { return "127.0.0.1:" + std::to_string(srv.port()); }
    remote_teacher_config teacher_config() const {
        remote_teacher_config c;
        c.address = address();
        c.token = test::token_a;
        c.timeout = std::chrono::milliseconds(20000);
        return c;
    }
    collab_server srv;
};

const tokenizer& student_vocab() { return test::draft_model().tokenizer(); }

// n_seq seeded random sequences of n_tok tokens, BOS first, as the trainer builds its rows.
train_batch random_batch(int32_t n_seq, int32_t n_tok, uint64_t seed) {
    train_batch b;
    b.n_seq = n_seq, b.n_tok = n_tok;
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(3, target_model().hparams().n_vocab - 1);
    for (int32_t s = 0; s < n_seq; ++s) {
        b.tokens.push_back(target_model().tokenizer().bos());
        for (int32_t t = 1; t < n_tok; ++t) b.tokens.push_back(tok(rng));
    }
    return b;
}

// The error's message, expecting tandem::error with `status` from f.
template <class F>
std::string error_of(F&& f, tandem_status status) {
    try {
        f();
    } catch (const error& e) {
        EXPECT_EQ(e.status(), status) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
}

std::string hex(uint64_t x) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
    return buf;
}

// The remote teacher gives the local teacher's targets: ids exactly, probabilities to float rounding (the logits
// come from the same forward pass on the same backend; only the batch's packing into passes may differ).
TEST(collab_distill, remote_top_k_equals_local) {
    distill_server s;
    remote_teacher remote(s.teacher_config(), student_vocab().n_vocab(), student_vocab().fingerprint());
    local_teacher local(target_model());
    const uint64_t seed = tandem::test::test_seed();
    const train_batch b = random_batch(3, 40, seed);
    for (int32_t k : {1, 8, 64}) {
        std::vector<int32_t> want_ids, got_ids;
        std::vector<float> want_p, got_p;
        local.top_k(b, k, want_ids, want_p);
        remote.top_k(b, k, got_ids, got_p);
        ASSERT_EQ(got_ids.size(), want_ids.size());
        ASSERT_EQ(got_p.size(), want_p.size());
        for (size_t i = 0; i < want_ids.size(); ++i) {
            ASSERT_EQ(got_ids[i], want_ids[i]) << "k " << k << " entry " << i << " seed " << seed;
            ASSERT_NEAR(got_p[i], want_p[i], 1e-5f) << "k " << k << " entry " << i << " seed " << seed;
        }
    }
    // Two requests per batch (3 sequences, at most 2 per request), each counted with its positions; the client
    // also made the probe, which the server does not count.
    const auto st = s.srv.stats();
    EXPECT_EQ(st.topk_requests(), 3u * 2u);
    EXPECT_EQ(st.topk_tokens(), 3u * 3u * 40u);
    EXPECT_EQ(remote.counters().calls, 1 + st.topk_requests());
    // No session was touched: TopK runs in a cache of its own.
    EXPECT_EQ(st.sessions_total(), 0u);
    EXPECT_EQ(st.passes(), 0u);
}

// Padding sequences (no targets at all) are not sent and come back as zeros.
TEST(collab_distill, padding_sequences_are_not_sent) {
    distill_server s;
    remote_teacher remote(s.teacher_config(), student_vocab().n_vocab(), student_vocab().fingerprint());
    train_batch b = random_batch(3, 16, 7);
    b.k = 1;
    b.target_ids.assign(size_t(b.rows()), 0);
    b.target_p.assign(size_t(b.rows()), 0.f);
    for (size_t r = 0; r < 16; ++r) b.target_p[r] = 1.f;  // only the first sequence is live
    std::vector<int32_t> ids;
    std::vector<float> p;
    remote.top_k(b, 4, ids, p);
    EXPECT_EQ(s.srv.stats().topk_tokens(), 16u);
    double live = 0, padding = 0;
    for (size_t i = 0; i < p.size(); ++i) (i < 16 * 4 ? live : padding) += p[i];
    EXPECT_NEAR(live, 16.0, 1e-4);
    EXPECT_EQ(padding, 0.0);
}

TEST(collab_distill, wrong_token_is_refused) {
    distill_server s;
    auto c = s.teacher_config();
    c.token = "not-a-token";
    const std::string msg =
        error_of([&] { remote_teacher t(c, student_vocab().n_vocab(), student_vocab().fingerprint()); },
                 TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(msg.find("invalid bearer token"), std::string::npos) << msg;
    c.token.clear();
    const std::string none =
        error_of([&] { remote_teacher t(c, student_vocab().n_vocab(), student_vocab().fingerprint()); },
                 TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(none.find("authorization"), std::string::npos) << none;
}

TEST(collab_distill, vocabulary_mismatch_names_both_fingerprints) {
    distill_server s;
    const uint64_t wrong = student_vocab().fingerprint() ^ 0x5a5a;
    const std::string msg = error_of([&] { remote_teacher t(s.teacher_config(), student_vocab().n_vocab(), wrong); },
                                     TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(msg.find(hex(wrong)), std::string::npos) << msg;
    EXPECT_NE(msg.find(hex(target_model().tokenizer().fingerprint())), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocabulary mismatch"), std::string::npos) << msg;
}

// Requests over a limit are refused with INVALID_ARGUMENT naming it, before any work.
TEST(collab_distill, oversized_requests_are_refused) {
    distill_server s;
    auto stub = v1::Collab::NewStub(grpc::CreateChannel(s.address(), grpc::InsecureChannelCredentials()));
    const int32_t bos = target_model().tokenizer().bos();
    auto call = [&](uint32_t k, std::vector<int32_t> lengths, int32_t token = 5) {
        v1::TopKRequest req;
        req.set_tokenizer_fingerprint(student_vocab().fingerprint());
        req.set_vocab_size(uint32_t(student_vocab().n_vocab()));
        req.set_top_k(k);
        for (int32_t n : lengths) {
            auto* seq = req.add_sequences();
            for (int32_t i = 0; i < n; ++i) seq->add_tokens(i == 0 ? bos : token);
        }
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", std::string("Bearer ") + test::token_a);
        v1::TopKResponse resp;
        return stub->TopK(&ctx, req, &resp);
    };
    ASSERT_TRUE(call(4, {8}).ok());
    auto refused = [](const grpc::Status& st, const std::string& what) {
        EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what << ": " << st.error_message();
        EXPECT_NE(st.error_message().find(what), std::string::npos) << st.error_message();
    };
    refused(call(65, {8}), "top_k 65 is not in [1, 64]");
    refused(call(0, {8}), "top_k 0");
    refused(call(4, {8, 8, 8}), "3 sequences exceed the limit of 2");
    refused(call(4, {1100}), "over the limit of 1023");                 // the server's prompt limit (capacity 1024)
    refused(call(64, {1000, 1000}), "would exceed the message limit");  // ~1.2 MB of reply > 1 MB
    refused(call(4, {8}, 512), "token 512 is not in [0, 512)");
    refused(call(4, {8}, -1), "token -1");
    refused(call(4, {8, 0}), "sequence 1 is empty");
    EXPECT_EQ(s.srv.stats().topk_requests(), 1u);  // the first call only
    // The per-caller KV quota applies to the positions being evaluated.
    server_config c = distill_server::config(8);
    c.per_caller.max_kv_rows = 100;
    collab_server small(target_model(), c);
    small.start();
    stub = v1::Collab::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(small.port()), grpc::InsecureChannelCredentials()));
    EXPECT_TRUE(call(4, {50, 50}).ok());
    const auto st = call(4, {60, 60});
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
}

// A server that is not there: bounded retries with back-off, then an error naming it.
TEST(collab_distill, unreachable_server_fails_after_retries) {
    remote_teacher_config c;
    c.address = "127.0.0.1:1";  // nothing listens on port 1
    c.attempts = 3;
    c.backoff_initial = std::chrono::milliseconds(20);
    c.timeout = std::chrono::milliseconds(2000);
    const auto t0 = std::chrono::steady_clock::now();
    const std::string msg =
        error_of([&] { remote_teacher t(c, student_vocab().n_vocab(), student_vocab().fingerprint()); }, TANDEM_ERR_IO);
    EXPECT_NE(msg.find("127.0.0.1:1 is unreachable after 3 attempt(s)"), std::string::npos) << msg;
    // Two back-off waits of 20 and 40 ms at least.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(60));
}

// A retry that succeeds: the server goes away between calls and a new one comes up on the same port.
TEST(collab_distill, retries_reach_a_restarted_server) {
    auto srv = std::make_unique<distill_server>();
    auto c = srv->teacher_config();
    c.attempts = 40;
    c.backoff_initial = std::chrono::milliseconds(50);
    c.backoff_max = std::chrono::milliseconds(200);
    remote_teacher remote(c, student_vocab().n_vocab(), student_vocab().fingerprint());
    const int port = srv->srv.port();
    srv.reset();
    std::unique_ptr<collab_server> again;
    std::thread restart([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        server_config sc = distill_server::config(2);
        sc.address = "127.0.0.1:" + std::to_string(port);
        again = std::make_unique<collab_server>(target_model(), sc);
        again->start();
    });
    std::vector<int32_t> ids;
    std::vector<float> p;
    EXPECT_NO_THROW(remote.top_k(random_batch(1, 8, 3), 4, ids, p));
    restart.join();
    EXPECT_GE(remote.counters().retries, 1u);
    EXPECT_EQ(ids.size(), 32u);
}

// With TLS configured, the teacher's calls go over TLS (trusting the server's self-signed certificate).
TEST(collab_distill, remote_teacher_over_tls) {
    if (std::system("openssl version >/dev/null 2>&1") != 0) GTEST_SKIP() << "the openssl command is not installed";
    const std::string dir = ::testing::TempDir();
    const std::string cert = dir + "/distill_cert.pem", key = dir + "/distill_key.pem";
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
        "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
        key + " -out " + cert + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    server_config sc = distill_server::config(8);
    sc.tls_cert = cert, sc.tls_key = key;
    collab_server srv(target_model(), sc);
    srv.start();
    remote_teacher_config c;
    c.address = "127.0.0.1:" + std::to_string(srv.port());
    c.token = test::token_b;
    c.tls_ca = cert;
    remote_teacher remote(c, student_vocab().n_vocab(), student_vocab().fingerprint());
    const train_batch b = random_batch(2, 12, 11);
    std::vector<int32_t> ids, want_ids;
    std::vector<float> p, want_p;
    remote.top_k(b, 5, ids, p);
    local_teacher(target_model()).top_k(b, 5, want_ids, want_p);
    EXPECT_EQ(ids, want_ids);
    // Plaintext to a TLS server never gets an answer: the bounded retries end in an error.
    c.tls_ca.clear();
    c.attempts = 2;
    c.backoff_initial = std::chrono::milliseconds(10);
    c.timeout = std::chrono::milliseconds(2000);
    error_of([&] { remote_teacher t(c, student_vocab().n_vocab(), student_vocab().fingerprint()); }, TANDEM_ERR_IO);
}

struct first_step {
    tandem_status status = TANDEM_OK;
    std::string error;
    double loss = std::nan("");
    tandem_finetune_result result{};
};

// One distillation step of llama2xs_tinystories_279K toward stories260K through the C API.
first_step finetune_once(const tandem_teacher* remote) {
    const std::string text =
        tandem::test::read_file(tandem::test::model_path("tinystories_valid_head.txt")).substr(0, 3000);
    const std::string student = tandem::test::model_path("llama2xs_tinystories_279K.gguf");
    const std::string teacher = tandem::test::model_path("stories260K.gguf");
    tandem_finetune_params p = tandem_finetune_default_params();
    p.model_path = student.c_str();
    p.backend = "cpu";
    p.n_threads = 2;
    p.ctx = 32, p.batch = 4, p.max_steps = 1, p.rank = 4, p.val_split = 0.2f;
    p.distill_top_k = 8;
    if (remote)
        p.teacher = remote;
    else
        p.distill_from = teacher.c_str();
    first_step out;
    auto progress = [](const tandem_finetune_progress* pr, void* user) {
        auto& o = *static_cast<first_step*>(user);
        if (!pr->epoch_end && pr->step == 1) o.loss = pr->loss;
    };
    out.status = tandem_finetune(&p, text.data(), text.size(), progress, &out, &out.result);
    if (out.status != TANDEM_OK) out.error = tandem_last_error();
    return out;
}

// Through the remote teacher, the first step's loss and the validation KL are the local teacher's.
TEST(collab_distill, finetune_step_matches_the_local_teacher) {
    const first_step local = finetune_once(nullptr);
    if (local.status == TANDEM_ERR_UNSUPPORTED) GTEST_SKIP() << local.error;
    ASSERT_EQ(local.status, TANDEM_OK) << local.error;
    distill_server s;
    remote_teacher_binding binding{s.teacher_config(), nullptr};
    const tandem_teacher c = c_teacher(binding);
    const first_step remote = finetune_once(&c);
    ASSERT_EQ(remote.status, TANDEM_OK) << remote.error;
    ASSERT_FALSE(std::isnan(local.loss));
    EXPECT_NEAR(remote.loss, local.loss, 1e-5);
    EXPECT_NEAR(remote.result.val_kl_before, local.result.val_kl_before, 1e-5);
    EXPECT_NEAR(remote.result.val_kl_after, local.result.val_kl_after, 1e-5);
    EXPECT_GT(s.srv.stats().topk_requests(), 1u);

    // A refusal reaches the caller as the fine-tuning's error.
    remote_teacher_binding bad{s.teacher_config(), nullptr};
    bad.cfg.token = "wrong";
    const tandem_teacher cb = c_teacher(bad);
    const first_step refused = finetune_once(&cb);
    EXPECT_EQ(refused.status, TANDEM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(refused.error.find("invalid bearer token"), std::string::npos) << refused.error;
}

using tandem::test::run_cli;

// `tandem finetune --distill-server`: the options in --help, exclusive with --distill-from, and a short run.
TEST(collab_distill, cli_distills_from_a_server) {
    if (!std::filesystem::exists(TANDEM_CLI_PATH)) GTEST_SKIP() << "the tandem CLI is not built";
    const auto [hcode, help] = run_cli("finetune --help");
    EXPECT_EQ(hcode, 0);
    for (const char* opt : {"--distill-server", "--token", "--token-file", "--tls-ca", "--distill-top-k"})
        EXPECT_NE(help.find(opt), std::string::npos) << opt;
    distill_server s;
    const auto dir = std::filesystem::temp_directory_path() / ("tandem_distill_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string common = "finetune -m " + tandem::test::model_path("llama2xs_tinystories_279K.gguf") + " -f " +
                               tandem::test::model_path("tinystories_valid_head.txt") + " --chars 3000 -o " +
                               (dir / "a.gguf").string() + " --ctx 32 --batch 2 --max-steps 1 --rank 4 -b cpu -t 2";
    const auto [xcode, xlog] = run_cli(common + " --distill-server " + s.address() + " --distill-from " +
                                       tandem::test::model_path("stories260K.gguf"));
    EXPECT_NE(xcode, 0);
    EXPECT_NE(xlog.find("excludes"), std::string::npos) << xlog;
    const std::string token_file = (dir / "token").string();
    std::FILE* f = std::fopen(token_file.c_str(), "w");
    std::fprintf(f, "# the trainer's token\nedge-a %s\n", test::token_a);
    std::fclose(f);
    const auto [code, log] = run_cli(common + " --distill-server " + s.address() + " --token-file " + token_file);
    if (log.find("cannot train") == std::string::npos && log.find("nsupported") == std::string::npos) {
        EXPECT_EQ(code, 0) << log;
        EXPECT_NE(log.find("validation KL to teacher"), std::string::npos) << log;
    }
    const auto [bcode, blog] = run_cli(common + " --distill-server " + s.address() + " --token wrong");
    EXPECT_NE(bcode, 0);
    EXPECT_NE(blog.find("invalid bearer token"), std::string::npos) << blog;
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::collab
