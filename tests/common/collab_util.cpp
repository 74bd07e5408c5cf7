// See collab_util.h.
#include "tests/common/collab_util.h"

#include "collab/messages.h"
#include "engine/session.h"
#include "tests/common/test_util.h"

namespace tandem::collab::test {

const model& target_model() {
    static auto m = model::load(tandem::test::model_path("stories260K.gguf"), make_backend("cpu"));
    return *m;
}

const model& draft_model() {
    static auto m = model::load(tandem::test::model_path("llama2xs_tinystories_279K.gguf"), make_backend("cpu"));
    return *m;
}

std::vector<int32_t> target_greedy(const std::vector<int32_t>& prompt, int n) {
    sampling_params sp;
    sp.temperature = 0;
    session s(target_model(), sp, 1024);
    s.feed(prompt);
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) out.push_back(s.step());
    return out;
}

std::vector<int32_t> prompt_of(const std::string& text) { return draft_model().tokenizer().encode(text, true); }

server_config test_server_config(int port) {
    server_config c;
    c.address = "127.0.0.1:" + std::to_string(port);
    c.model_id = "stories260K";
    c.tokens = {token_a, token_b};
    c.seq_capacity = 1024;
    c.kv_regions = 40;
    c.stats_interval = std::chrono::seconds(0);
    return c;
}

edge_config test_edge_config(int port, draft_strategy strategy) {
    edge_config c;
    c.link.address = "127.0.0.1:" + std::to_string(port);
    c.link.token = token_a;
    c.link.timeout = std::chrono::milliseconds(20000);
    c.draft.strategy = strategy;
    c.draft.branching = {3, 2, 1};
    c.draft.budget = 16;
    c.ctx = 1024;
    c.ignore_eos = true;
    c.backoff_initial = std::chrono::milliseconds(20);
    c.backoff_max = std::chrono::milliseconds(200);
    return c;
}

v1::OpenSessionRequest open_request(const std::vector<int32_t>& prompt) {
    v1::OpenSessionRequest r;
    r.set_tokenizer_fingerprint(draft_model().tokenizer().fingerprint());
    r.set_vocab_size(uint32_t(draft_model().tokenizer().n_vocab()));
    sampling_params greedy;
    greedy.temperature = 0;
    sampling_to_proto(greedy, r.mutable_sampling());
    for (int32_t t : prompt) r.add_prompt_tokens(t);
    return r;
}

}  // namespace tandem::collab::test
