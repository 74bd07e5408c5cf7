// Conversions and validation of protocol messages; see messages.h.
#include "collab/messages.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "engine/error.h"
#include "engine/types.h"

namespace tandem::collab {

namespace {
[[noreturn]] void bad(const std::string& msg) { throw error(TANDEM_ERR_INVALID_ARGUMENT, msg); }

std::vector<token_prob> dist_from_proto(const google::protobuf::RepeatedField<int32_t>& toks,
                                        const google::protobuf::RepeatedField<float>& probs, int32_t n_vocab,
                                        const limits& lim, const std::string& where) {
    if (toks.size() != probs.size()) {
        bad(where + ": " + std::to_string(toks.size()) + " draft tokens but " + std::to_string(probs.size()) +
            " probabilities");
    }
    if (uint32_t(toks.size()) > lim.max_draft_top_k) {
        bad(where + ": draft distribution of " + std::to_string(toks.size()) + " entries exceeds the limit of " +
            std::to_string(lim.max_draft_top_k));
    }
    std::vector<token_prob> d(size_t(toks.size()));
    std::unordered_set<int32_t> seen;
    for (int i = 0; i < toks.size(); ++i) {
        if (toks[i] < 0 || toks[i] >= n_vocab) bad(where + ": draft token " + std::to_string(toks[i]) + " is not in [0, " + std::to_string(n_vocab) + ")");
        if (!seen.insert(toks[i]).second) bad(where + ": draft token " + std::to_string(toks[i]) + " appears twice");
        if (!std::isfinite(probs[i]) || probs[i] < 0.f || probs[i] > 1.f) bad(where + ": draft probability is not in [0, 1]");
        d[size_t(i)] = {toks[i], probs[i]};
    }
    return d;
}
}  // namespace

sampling_params sampling_from_proto(const v1::SamplingParams& p) {
    sampling_params s;
    if (!std::isfinite(p.temperature()) || p.temperature() < 0.f || p.temperature() > 100.f) bad("sampling.temperature must be in [0, 100]");
    if (!std::isfinite(p.top_p()) || p.top_p() < 0.f || p.top_p() > 1.f) bad("sampling.top_p must be in [0, 1]");
    if (!std::isfinite(p.min_p()) || p.min_p() < 0.f || p.min_p() > 1.f) bad("sampling.min_p must be in [0, 1]");
    if (!std::isfinite(p.repeat_penalty()) || p.repeat_penalty() < 0.f || p.repeat_penalty() > 10.f) bad("sampling.repeat_penalty must be in [0, 10]");
    if (p.repeat_last_n() < 0 || p.repeat_last_n() > 1 << 20) bad("sampling.repeat_last_n is out of range");
    if (p.top_k() > (1u << 20)) bad("sampling.top_k is out of range");
    s.temperature = p.temperature();
    s.top_k = int32_t(p.top_k());
    s.top_p = p.top_p() == 0.f ? 1.f : p.top_p();
    s.min_p = p.min_p();
    s.repeat_penalty = p.repeat_penalty() == 0.f ? 1.f : p.repeat_penalty();
    s.repeat_last_n = p.repeat_last_n();
    s.seed = p.seed();
    return s;
}

void sampling_to_proto(const sampling_params& s, v1::SamplingParams* p) {
    p->set_temperature(s.temperature);
    p->set_top_k(uint32_t(std::max(s.top_k, 0)));
    p->set_top_p(s.top_p);
    p->set_min_p(s.min_p);
    p->set_seed(s.seed);
    p->set_repeat_penalty(s.repeat_penalty);
    p->set_repeat_last_n(s.repeat_last_n);
}

draft_tree tree_from_proto(const v1::VerifyRequest& r, int32_t n_vocab, const limits& lim, bool sampling) {
    if (uint32_t(r.tree_size()) > lim.max_tree_nodes) {
        bad("draft tree of " + std::to_string(r.tree_size()) + " nodes exceeds the limit of " +
            std::to_string(lim.max_tree_nodes));
    }
    draft_tree t;
    for (int i = 0; i < r.tree_size(); ++i) {
        const auto& n = r.tree(i);
        if (n.parent() < -1 || n.parent() >= i) {
            bad("tree node " + std::to_string(i) + ": parent " + std::to_string(n.parent()) +
                " must be -1 or an earlier node");
        }
        if (n.token() < 0 || n.token() >= n_vocab) {
            bad("tree node " + std::to_string(i) + ": token " + std::to_string(n.token()) + " is not in [0, " +
                std::to_string(n_vocab) + ")");
        }
        t.add(n.token(), n.parent());
    }
    if (sampling) {
        t.q_root = dist_from_proto(r.root_draft_tokens(), r.root_draft_probs(), n_vocab, lim, "root");
        t.q.resize(t.size());
        for (int i = 0; i < r.tree_size(); ++i) {
            t.q[size_t(i)] = dist_from_proto(r.tree(i).draft_tokens(), r.tree(i).draft_probs(), n_vocab, lim,
                                             "tree node " + std::to_string(i));
        }
    } else if (r.root_draft_tokens_size() || r.root_draft_probs_size()) {
        bad("draft distributions are only sent in sampling mode");
    }
    // Structure, sums and that every sampled child was drawn from its parent's distribution.
    t.validate(n_vocab, lim.max_tree_nodes, sampling);
    return t;
}

void tree_to_proto(const draft_tree& t, bool sampling, v1::VerifyRequest* r) {
    r->clear_tree();
    r->clear_root_draft_tokens();
    r->clear_root_draft_probs();
    for (size_t i = 0; i < t.size(); ++i) {
        auto* n = r->add_tree();
        n->set_token(t.tokens[i]);
        n->set_parent(t.parents[i]);
        if (sampling && i < t.q.size()) {
            for (const auto& e : t.q[i]) n->add_draft_tokens(e.token), n->add_draft_probs(e.p);
        }
    }
    if (sampling) {
        for (const auto& e : t.q_root) r->add_root_draft_tokens(e.token), r->add_root_draft_probs(e.p);
    }
}

void check_tokens(const google::protobuf::RepeatedField<int32_t>& tokens, int32_t n_vocab, size_t max_count,
                  const char* what) {
    if (size_t(tokens.size()) > max_count) {
        bad(std::string(what) + ": " + std::to_string(tokens.size()) + " tokens exceed the limit of " +
            std::to_string(max_count));
    }
    for (int32_t t : tokens)
        if (t < 0 || t >= n_vocab) bad(std::string(what) + ": token " + std::to_string(t) + " is not in [0, " + std::to_string(n_vocab) + ")");
}

void encode_hidden(const std::vector<float>& rows, int64_t dim, v1::HiddenEncoding enc, v1::ForwardRequest* r) {
    const int64_t n = int64_t(rows.size()) / dim;
    r->set_n_tokens(uint32_t(n));
    r->set_encoding(enc);
    r->clear_scales();
    std::string& out = *r->mutable_hidden();
    if (enc == v1::HIDDEN_F16) {
        out.resize(size_t(n * dim) * 2);
        for (size_t i = 0; i < size_t(n * dim); ++i) {
            const uint16_t h = fp32_to_fp16(rows[i]);
            out[2 * i] = char(h & 0xff);
            out[2 * i + 1] = char(h >> 8);
        }
        return;
    }
    out.resize(size_t(n * dim));
    for (int64_t t = 0; t < n; ++t) {
        float amax = 0.f;
        for (int64_t j = 0; j < dim; ++j) amax = std::max(amax, std::fabs(rows[size_t(t * dim + j)]));
        const float scale = amax > 0.f ? amax / 127.f : 1.f;
        r->add_scales(scale);
        for (int64_t j = 0; j < dim; ++j) {
            const long q = std::lround(rows[size_t(t * dim + j)] / scale);
            out[size_t(t * dim + j)] = char(int8_t(std::clamp<long>(q, -127, 127)));
        }
    }
}

std::vector<float> decode_hidden(const v1::ForwardRequest& r, int64_t dim) {
    const size_t n = r.n_tokens();
    if (n == 0) bad("n_tokens must be at least 1");
    const size_t width = r.encoding() == v1::HIDDEN_F16 ? 2 : r.encoding() == v1::HIDDEN_INT8 ? 1 : 0;
    if (width == 0) bad("unknown hidden-state encoding " + std::to_string(int(r.encoding())));
    if (r.hidden().size() != n * size_t(dim) * width) {
        bad("hidden: " + std::to_string(r.hidden().size()) + " bytes for " + std::to_string(n) + " rows of " +
            std::to_string(dim) + " values (expected " + std::to_string(n * size_t(dim) * width) + ")");
    }
    std::vector<float> out(n * size_t(dim));
    const auto* b = reinterpret_cast<const uint8_t*>(r.hidden().data());
    if (width == 2) {
        if (r.scales_size() != 0) bad("scales are only sent with INT8 hidden states");
        for (size_t i = 0; i < out.size(); ++i) out[i] = fp16_to_fp32(uint16_t(b[2 * i] | (b[2 * i + 1] << 8)));
    } else {
        if (size_t(r.scales_size()) != n) bad("INT8 hidden states need one scale per row (" + std::to_string(n) + "), got " + std::to_string(r.scales_size()));
        for (size_t t = 0; t < n; ++t) {
            const float s = r.scales(int(t));
            if (!std::isfinite(s) || s < 0.f) bad("scale of row " + std::to_string(t) + " is not a finite non-negative number");
            for (size_t j = 0; j < size_t(dim); ++j) out[t * size_t(dim) + j] = float(int8_t(b[t * size_t(dim) + j])) * s;
        }
    }
    for (float v : out)
        if (!std::isfinite(v)) bad("hidden states must be finite");
    return out;
}

bool valid_session_id(const std::string& id) {
    if (id.size() != 32) return false;
    for (char c : id)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

}  // namespace tandem::collab
