// The edge client; see edge.h. Output = committed tokens (agreed with the cloud, or routed) + an unverified
// tail (drafted locally while the cloud was unreachable). The cloud holds committed[0, cloud_pos).
#include "collab/edge.h"

#include <algorithm>
#include <optional>
#include <thread>

#include "collab/log.h"
#include "collab/messages.h"
#include "engine/error.h"

namespace tandem::collab {

namespace {
using clock = std::chrono::steady_clock;
double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }
}  // namespace

edge_mode parse_edge_mode(const std::string& s) {
    if (s == "spec") return edge_mode::spec;
    if (s == "cloud") return edge_mode::cloud;
    if (s == "local") return edge_mode::local;
    if (s == "route") return edge_mode::route;
    if (s == "split") return edge_mode::split;
    throw error(TANDEM_ERR_INVALID_ARGUMENT, "unknown edge mode '" + s + "' (spec, cloud, local, route, split)");
}

const char* edge_mode_name(edge_mode m) {
    switch (m) {
        case edge_mode::spec: return "spec";
        case edge_mode::cloud: return "cloud";
        case edge_mode::local: return "local";
        case edge_mode::route: return "route";
        case edge_mode::split: return "split";
    }
    return "?";
}

struct edge_session::state {
    size_t prompt_len = 0;
    int32_t n = 0;
    std::vector<int32_t> committed;
    std::vector<bool> committed_verified;  // per committed token after the prompt
    std::vector<int32_t> tail;
    std::vector<std::vector<token_prob>> tail_q;  // the draft distribution each tail token was drawn from
    std::string session_id;
    uint64_t request_id = 0, cloud_pos = 0;
    uint32_t max_tree_nodes = 0;
    int64_t cloud_ctx = 0;
    bool online = false;
    bool in_outage = false;  // unreachable since the last answered request
    clock::time_point next_retry = clock::now();
    std::chrono::milliseconds backoff{0};
    edge_stats st;
    std::optional<draft_tree> next_tree;  // drafted ahead during the last round trip, for committed as it is now
    const std::function<void(const edge_event&)>* on_event = nullptr;

    size_t produced() const { return committed.size() - prompt_len + tail.size(); }
    void emit(const edge_event& e) const {
        if (*on_event) (*on_event)(e);
    }
};

edge_session::edge_session(const model& draft, const edge_config& cfg) : draft_(draft), cfg_(cfg) {
    const int64_t cap = cfg.ctx > 0 ? cfg.ctx : draft.hparams().n_ctx_train;
    if (cfg.mode == edge_mode::split) {
        if (cfg.split_layer < 1 || cfg.split_layer >= draft.hparams().n_layer) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "--split-layer must be in [1, " + std::to_string(draft.hparams().n_layer - 1) +
                                                         "] for a model of " + std::to_string(draft.hparams().n_layer) + " layers");
        }
    } else {
        drafter_ = std::make_unique<drafter>(draft, cfg.draft, cfg.sampling, cap);
    }
    if (cfg.mode != edge_mode::local) link_ = std::make_unique<cloud_link>(cfg.link);
    if (cfg.route_threshold < 0.f || cfg.route_threshold > 1.f) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "the routing threshold is a probability in [0, 1]");
    }
}

edge_session::~edge_session() = default;

double edge_stats::bytes_per_token() const {
    const uint64_t n = verified_tokens + unverified_tokens;
    return n ? double(bytes_sent + bytes_received) / double(n) : 0.0;
}

bool edge_session::try_open(state& s) {
    v1::OpenSessionRequest req;
    req.set_model_id(cfg_.model_id);
    req.set_tokenizer_fingerprint(draft_.tokenizer().fingerprint());
    req.set_vocab_size(uint32_t(draft_.tokenizer().n_vocab()));
    sampling_to_proto(cfg_.sampling, req.mutable_sampling());
    for (int32_t t : s.committed) req.add_prompt_tokens(t);
    try {
        const auto resp = link_->open(req);
        s.session_id = resp.session_id();
        s.cloud_pos = resp.committed_position();
        s.max_tree_nodes = resp.max_tree_nodes();
        s.cloud_ctx = resp.context_length();
        s.request_id = 0;
        if (s.cloud_pos != s.committed.size()) {
            throw link_error(grpc::StatusCode::INTERNAL, "the server committed " + std::to_string(s.cloud_pos) +
                                                             " prompt tokens, the edge sent " + std::to_string(s.committed.size()));
        }
        return true;
    } catch (const link_error& e) {
        if (e.code() == grpc::StatusCode::FAILED_PRECONDITION) {
            throw link_error(e.code(), "the server refused draft '" + cfg_.draft_name + "': " + e.what());
        }
        if (!e.unreachable()) throw;
        return false;
    }
}

void edge_session::local_step(state& s) {
    std::vector<int32_t> ctx = s.committed;
    ctx.insert(ctx.end(), s.tail.begin(), s.tail.end());
    const auto t0 = clock::now();
    const draft_tree t = drafter_->draft(ctx, 1);
    s.st.draft_seconds += since(t0);
    if (t.size() == 0) throw error(TANDEM_ERR_CONTEXT_FULL, "the draft model's context is full");
    s.tail.push_back(t.tokens[0]);
    s.tail_q.push_back(t.q_root);
    s.emit({0, 0, {t.tokens[0]}, false});
}

edge_session::round_result edge_session::round(state& s) {
    const bool sampling = cfg_.sampling.temperature > 0.f;
    v1::VerifyRequest req;
    req.set_session_id(s.session_id);
    req.set_request_id(++s.request_id);
    req.set_base_position(s.cloud_pos);
    for (size_t i = s.cloud_pos; i < s.committed.size(); ++i) req.add_committed_tokens(s.committed[i]);
    const int64_t cloud_room = s.cloud_ctx - int64_t(s.committed.size()) - 1;
    const size_t max_nodes = size_t(std::clamp<int64_t>(std::min<int64_t>(cloud_room, s.max_tree_nodes), 0, 1 << 20));
    draft_tree t;
    if (!s.tail.empty()) {  // re-verify what was drafted during an outage, as a chain
        for (size_t i = 0; i < s.tail.size() && t.size() < max_nodes; ++i) {
            t.add(s.tail[i], int32_t(i) - 1);
            if (sampling) (i == 0 ? t.q_root : t.q[i - 1]) = s.tail_q[i];
        }
    } else if (s.next_tree && s.next_tree->size() > 0 && s.next_tree->size() <= max_nodes) {
        t = std::move(*s.next_tree);
        s.st.pipelined += 1;
    } else if (cfg_.mode != edge_mode::cloud && max_nodes > 0) {
        const auto t0 = clock::now();
        t = drafter_->draft(s.committed, max_nodes);
        s.st.draft_seconds += since(t0);
    }
    s.next_tree.reset();
    tree_to_proto(t, sampling, &req);
    v1::VerifyResponse resp;
    // While the cloud verifies: draft ahead on the draft's best path (first children, best first) accepted.
    std::vector<int32_t> guess;
    draft_tree ahead;
    try {
        link_->send(req);
        if (cfg_.pipeline && cfg_.mode == edge_mode::spec && s.tail.empty() && t.size() > 0) {
            guess = s.committed;
            for (auto kids = t.children(-1); !kids.empty(); kids = t.children(kids[0])) guess.push_back(t.tokens[size_t(kids[0])]);
            const int64_t room = s.cloud_ctx - int64_t(guess.size()) - 2;
            if (room > 1) {
                const auto t0 = clock::now();
                ahead = drafter_->draft(guess, size_t(std::min<int64_t>(room, s.max_tree_nodes)) + 1);
                s.st.draft_seconds += since(t0);
            }
        }
        resp = link_->receive();
    } catch (const link_error& e) {
        if (e.code() == grpc::StatusCode::NOT_FOUND) {  // the server lost the session (restart, expiry)
            log().warn("edge: {}; reopening the session", e.what());
            s.session_id.clear();
            return round_result::session_lost;
        }
        if (!e.unreachable()) throw;
        if (!s.in_outage) log().warn("edge: cloud unreachable ({}); continuing locally, tokens are unverified until it is back", e.what());
        return round_result::unreachable;
    }
    if (resp.request_id() != req.request_id()) {
        throw link_error(grpc::StatusCode::INTERNAL, "reply to request " + std::to_string(resp.request_id()) +
                                                         " while waiting for " + std::to_string(req.request_id()));
    }
    s.st.round_trips += 1;
    if (s.in_outage) {
        s.in_outage = false;
        s.st.reconnects += 1;
        log().info("edge: the cloud is back; {} unverified tokens re-verified from position {}", s.tail.size(), s.cloud_pos);
    }
    s.cloud_pos = s.committed.size();  // the routed tokens are now the cloud's
    std::vector<int32_t> acc(resp.accepted_tokens().begin(), resp.accepted_tokens().end());
    if (!resp.resync()) {
        s.st.drafted += t.size();
        s.st.accepted += uint64_t(resp.accepted_nodes_size());
        int32_t depth = 0;
        for (int32_t d : t.depths()) depth = std::max(depth, d + 1);
        if (s.tail.empty()) drafter_->observe(size_t(resp.accepted_nodes_size()), size_t(depth));
    }
    // Merge with the unverified tail: its agreeing prefix becomes verified, the rest is retracted.
    size_t m = 0;
    while (m < acc.size() && m < s.tail.size() && acc[m] == s.tail[m]) ++m;
    edge_event ev;
    ev.confirmed = m;
    if (m == acc.size()) {
        s.tail.erase(s.tail.begin(), s.tail.begin() + int64_t(m));
        s.tail_q.erase(s.tail_q.begin(), s.tail_q.begin() + int64_t(m));
    } else {
        ev.retracted = s.tail.size() - m;
        s.st.retracted += ev.retracted;
        s.tail.clear();
        s.tail_q.clear();
        ev.tokens.assign(acc.begin() + int64_t(m), acc.end());
    }
    s.committed.insert(s.committed.end(), acc.begin(), acc.end());
    s.committed_verified.insert(s.committed_verified.end(), acc.size(), true);
    s.cloud_pos = s.committed.size();
    if (resp.committed_position() != s.cloud_pos) {
        throw link_error(grpc::StatusCode::INTERNAL, "out of sync: the server is at position " +
                                                         std::to_string(resp.committed_position()) + ", the edge at " +
                                                         std::to_string(s.cloud_pos));
    }
    // Keep the tree drafted ahead if the cloud accepted the guessed path and its token is one of ahead's roots.
    if (ahead.size() > 0 && s.tail.empty() && s.committed.size() == guess.size() + 1 &&
        std::equal(guess.begin(), guess.end(), s.committed.begin())) {
        for (int32_t c : ahead.children(-1)) {
            if (ahead.tokens[size_t(c)] == s.committed.back()) {
                s.next_tree = ahead.subtree(c);
                break;
            }
        }
    }
    s.emit(ev);
    return round_result::ok;
}

edge_result edge_session::generate(const std::vector<int32_t>& prompt, int32_t n,
                                   const std::function<void(const edge_event&)>& on_event,
                                   const std::function<bool()>& cancelled) {
    if (prompt.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "the prompt needs at least one token (BOS)");
    if (cfg_.mode == edge_mode::split) return generate_split(prompt, n, on_event, cancelled);
    state s;
    s.prompt_len = prompt.size();
    s.n = n;
    s.committed = prompt;
    s.on_event = &on_event;
    s.backoff = cfg_.backoff_initial;
    const int32_t eos = draft_.tokenizer().eos(), bos = draft_.tokenizer().bos();
    auto is_stop = [&](int32_t t) { return !cfg_.ignore_eos && (t == eos || t == bos); };
    const auto t_start = clock::now();
    auto ends = [&] {
        if (s.produced() >= size_t(n) || (cancelled && cancelled())) return true;
        for (size_t i = s.prompt_len; i < s.committed.size(); ++i)
            if (is_stop(s.committed[i])) return true;
        return std::any_of(s.tail.begin(), s.tail.end(), is_stop);
    };
    // The output is complete but ends in tokens made during an outage: one more attempt at the cloud (now, not at
    // the next backoff step) before returning, so that an outage near the end does not leave unverified what a
    // replica that is back, or another one behind the balancer, can still check. A tail the cloud partly retracts
    // is generated on as usual; a failed attempt ends the generation as it was.
    bool finishing = false, finish_failed = false;
    auto go_offline = [&](bool lost_session) {
        s.online = false;
        if (lost_session) return;  // reopen at once
        if (finishing) finish_failed = true;
        if (!s.in_outage) s.st.outages += 1;
        s.in_outage = true;
        s.next_retry = clock::now() + s.backoff;
        s.backoff = std::min(s.backoff * 2, cfg_.backoff_max);
    };
    const link_counters c0 = link_ ? link_->counters() : link_counters{};
    for (;;) {
        if (ends()) {
            if (s.tail.empty() || finish_failed || !link_ || cfg_.mode == edge_mode::local || (cancelled && cancelled()))
                break;
            if (!finishing) {
                finishing = true;
                s.next_retry = clock::now();
            }
        }
        if (cfg_.mode == edge_mode::local) {
            local_step(s);
            continue;
        }
        if (!s.online && clock::now() >= s.next_retry) {
            if (!s.session_id.empty() || try_open(s)) {
                s.online = true;
            } else {
                if (!s.in_outage) log().warn("edge: cannot reach {}; generating locally, tokens are unverified", cfg_.link.address);
                go_offline(false);
            }
        }
        if (s.online) {
            if (cfg_.mode == edge_mode::route && s.tail.empty()) {
                const auto t0 = clock::now();
                const draft_tree t = drafter_->draft(s.committed, 1);
                s.st.draft_seconds += since(t0);
                if (t.size() == 1 && !t.q_root.empty() && t.q_root.front().p >= cfg_.route_threshold) {
                    s.committed.push_back(t.tokens[0]);
                    s.committed_verified.push_back(false);
                    s.st.routed_tokens += 1;
                    s.emit({0, 0, {t.tokens[0]}, false});
                    continue;
                }
            }
            const round_result r = round(s);
            if (r == round_result::ok) {
                s.backoff = cfg_.backoff_initial;
                continue;
            }
            go_offline(r == round_result::session_lost);
            if (r == round_result::session_lost) continue;
        }
        if (!finishing || !ends()) local_step(s);
    }
    if (s.online && link_) link_->close(s.session_id);

    edge_result r;
    for (size_t i = s.prompt_len; i < s.committed.size(); ++i) {
        r.tokens.push_back(s.committed[i]);
        r.verified.push_back(s.committed_verified[i - s.prompt_len]);
    }
    for (int32_t t : s.tail) r.tokens.push_back(t), r.verified.push_back(false);
    // Trim what the last round produced beyond n and after the end of sequence.
    size_t keep = std::min(r.tokens.size(), size_t(std::max(n, 0)));
    for (size_t i = 0; i < keep; ++i)
        if (is_stop(r.tokens[i])) keep = i + 1;
    r.tokens.resize(keep);
    r.verified.resize(keep);
    r.stats = s.st;
    r.stats.verified_tokens = uint64_t(std::count(r.verified.begin(), r.verified.end(), true));
    r.stats.unverified_tokens = r.tokens.size() - r.stats.verified_tokens;
    if (link_) {
        const auto& c = link_->counters();
        r.stats.bytes_sent = c.bytes_sent - c0.bytes_sent;
        r.stats.bytes_received = c.bytes_received - c0.bytes_received;
        r.stats.wait_seconds = c.wait_seconds - c0.wait_seconds;
    }
    r.stats.seconds = since(t_start);
    return r;
}

}  // namespace tandem::collab
