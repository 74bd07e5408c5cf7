// libFuzzer target for the verification server's message handling: the first byte picks a message kind, the
// rest is parsed as that protobuf message and handed to the same handlers the gRPC streams use
// (collab_server::*_local), on a real target model (stories260K), without a network. Any input must end in a
// status (OK or an error naming the problem); a crash, a sanitizer report or an INTERNAL status is a bug.
// Seeds: tests/fuzz/corpus/collab (a few valid requests of each kind, hand-encoded protobuf wire format).
// Requests with base_position 0 are moved to where their session stands, so that the fuzzer reaches verification.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "backends/backend.h"
#include "collab/server.h"

#include <spdlog/spdlog.h>

namespace {

using namespace tandem;
using namespace tandem::collab;

struct fixture {
    std::unique_ptr<model> target;
    std::unique_ptr<collab_server> server;
    std::string token_session, split_session;
    uint64_t token_pos = 1, split_pos = 0;  // where each session stands (requests with base 0 are moved there)

    std::string open(uint32_t split_layer) {
        v1::OpenSessionRequest open;
        open.set_tokenizer_fingerprint(target->tokenizer().fingerprint());
        open.set_vocab_size(uint32_t(target->tokenizer().n_vocab()));
        open.set_split_layer(split_layer);
        if (split_layer == 0) open.add_prompt_tokens(1);
        v1::OpenSessionResponse resp;
        if (!server->open_local(open, &resp).ok()) std::abort();
        return resp.session_id();
    }

    fixture() {
        spdlog::set_level(spdlog::level::warn);  // every rejection is logged at info: too slow for fuzzing
        target = model::load(std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf", make_backend("cpu"));
        server_config c;
        c.allow_no_auth = true;
        c.seq_capacity = 256;
        c.kv_regions = 4;
        c.max_sessions = 64;
        c.stats_interval = std::chrono::seconds(0);
        server = std::make_unique<collab_server>(*target, c);
        token_session = open(0);
        split_session = open(2);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static fixture f;
    if (size < 1) return 0;
    const int kind = data[0] % 3;
    const uint8_t* msg = data + 1;
    const int n = int(size - 1);
    grpc::Status st;
    if (kind == 0) {
        v1::OpenSessionRequest req;
        if (!req.ParseFromArray(msg, n)) return 0;
        req.set_tokenizer_fingerprint(req.tokenizer_fingerprint() & 1 ? f.target->tokenizer().fingerprint() : req.tokenizer_fingerprint());
        v1::OpenSessionResponse resp;
        st = f.server->open_local(req, &resp);
        if (st.ok()) (void)f.server->close_local(resp.session_id());  // keep the session table small
    } else if (kind == 1) {
        v1::VerifyRequest req;
        if (!req.ParseFromArray(msg, n)) return 0;
        if (req.session_id().empty()) req.set_session_id(f.token_session);
        if (req.base_position() == 0) req.set_base_position(f.token_pos);
        v1::VerifyResponse resp;
        st = f.server->verify_local(req, &resp);
        if (st.ok() && req.session_id() == f.token_session) f.token_pos = resp.committed_position();
        if (st.error_code() == grpc::StatusCode::OUT_OF_RANGE && req.session_id() == f.token_session) {
            (void)f.server->close_local(f.token_session);  // context full: start over
            f.token_session = f.open(0);
            f.token_pos = 1;
        }
    } else {
        v1::ForwardRequest req;
        if (!req.ParseFromArray(msg, n)) return 0;
        if (req.session_id().empty()) req.set_session_id(f.split_session);
        if (req.base_position() == 0) req.set_base_position(f.split_pos);
        v1::ForwardResponse resp;
        st = f.server->forward_local(req, &resp);
        if (st.ok() && req.session_id() == f.split_session) f.split_pos = resp.committed_position();
        if (st.error_code() == grpc::StatusCode::OUT_OF_RANGE && req.session_id() == f.split_session) {
            (void)f.server->close_local(f.split_session);
            f.split_session = f.open(2);
            f.split_pos = 0;
        }
    }
    if (st.error_code() == grpc::StatusCode::INTERNAL) std::abort();  // a broken invariant, not bad input
    return 0;
}
