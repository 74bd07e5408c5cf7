// Text generators for the HTTP API; see http_generators.h.
#include "collab/http_generators.h"

#include "engine/session.h"

namespace tandem::collab {

std::string gguf_chat_template(const model& m) {
    const gguf_value* v = m.file().find("tokenizer.chat_template");
    return v && std::holds_alternative<std::string>(v->v) ? std::get<std::string>(v->v) : std::string();
}

edge_generator::edge_generator(const model& m, const edge_config& cfg, std::string name) : m_(m), cfg_(cfg), name_(std::move(name)) {}

int64_t edge_generator::context_length() const { return cfg_.ctx > 0 ? cfg_.ctx : m_.hparams().n_ctx_train; }

std::string edge_generator::chat_template() const { return gguf_chat_template(m_); }

gen_stats edge_generator::generate(const gen_request& r, const std::function<bool(int32_t, bool)>& on_token) {
    edge_config c = cfg_;
    c.sampling = r.sampling;
    c.ignore_eos = true;  // the API decides where to stop
    edge_session es(m_, c);
    std::vector<int32_t> held;  // unverified tokens not yet streamed
    bool going = true;
    int32_t emitted = 0;  // the last round may commit a few tokens beyond max_tokens: they are not sent
    auto emit = [&](int32_t t, bool verified) {
        if (going && emitted < r.max_tokens) going = on_token(t, verified), ++emitted;
        if (emitted >= r.max_tokens) going = false;
    };
    const edge_result res = es.generate(
        r.prompt, r.max_tokens,
        [&](const edge_event& e) {
            for (size_t i = 0; i < e.confirmed && i < held.size(); ++i) emit(held[i], true);
            held.erase(held.begin(), held.begin() + int64_t(std::min(e.confirmed, held.size())));
            held.resize(held.size() - std::min(e.retracted, held.size()));
            for (int32_t t : e.tokens) {
                if (e.verified && held.empty()) emit(t, true);
                else held.push_back(t);
            }
        },
        [&] { return !going; });
    for (int32_t t : held) emit(t, false);
    gen_stats st;
    st.mode = edge_mode_name(c.mode);
    st.round_trips = res.stats.round_trips;
    st.unverified_tokens = res.stats.unverified_tokens;
    st.retracted = res.stats.retracted;
    st.tokens_per_target_pass = res.stats.tokens_per_round_trip();
    return st;
}

target_generator::target_generator(const model& m, collab_server* server, std::string name, int64_t ctx)
    : m_(m), server_(server), name_(std::move(name)), ctx_(ctx > 0 ? ctx : m.hparams().n_ctx_train) {}

std::string target_generator::chat_template() const { return gguf_chat_template(m_); }

gen_stats target_generator::generate(const gen_request& r, const std::function<bool(int32_t, bool)>& on_token) {
    session s(m_, r.sampling, ctx_);
    auto locked = [&](const std::function<void()>& f) {
        if (server_) server_->exclusive(f);
        else f();
    };
    locked([&] { s.feed(r.prompt); });
    gen_stats st;
    st.mode = "target";
    for (int32_t i = 0; i < r.max_tokens && int64_t(s.length()) < ctx_; ++i) {
        int32_t t = 0;
        locked([&] { t = s.step(); });
        st.round_trips += 0;
        if (!on_token(t, true)) break;
    }
    st.tokens_per_target_pass = 1;
    return st;
}

}  // namespace tandem::collab
