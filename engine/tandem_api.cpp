// The C boundary: every entry point catches exceptions and returns a status, recording the message in a
// thread-local string for tandem_last_error(). Handles own the C++ objects behind them.
#include <cstring>
#include <memory>
#include <new>
#include <sstream>
#include <string>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/gguf_report.h"
#include "engine/llama2c.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/quantize_model.h"
#include "engine/session.h"
#include "engine/speculative.h"
#include "engine/synth.h"
#include "engine/tandem.h"
#if TANDEM_WITH_OPENCL
#include "backends/opencl/opencl.h"
#endif
#if TANDEM_WITH_VULKAN
#include "backends/vulkan/vulkan_backend.h"
#endif

struct tandem_model {
    std::unique_ptr<tandem::model> impl;
    int n_ctx = 0;
    std::string path;
};

struct tandem_spec_session {
    std::unique_ptr<tandem::speculative_generator> impl;
};

struct tandem_session {
    std::unique_ptr<tandem::session> impl;
};

namespace {

thread_local std::string g_last_error;

template <typename F>
tandem_status guarded(F&& f) {
    try {
        g_last_error.clear();
        f();
        return TANDEM_OK;
    } catch (const tandem::error& e) {
        g_last_error = e.what();
        return e.status();
    } catch (const std::bad_alloc&) {
        g_last_error = "out of memory";
        return TANDEM_ERR_BACKEND;
    } catch (const std::exception& e) {
        g_last_error = std::string("internal error: ") + e.what();
        return TANDEM_ERR_INTERNAL;
    }
}

void require(bool ok, const char* what) {
    if (!ok) throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, what);
}

tandem::sampling_params to_cpp(const tandem_sampling_params& p) {
    tandem::sampling_params s;
    s.temperature = p.temperature;
    s.top_k = p.top_k;
    s.top_p = p.top_p;
    s.min_p = p.min_p;
    s.repeat_penalty = p.repeat_penalty;
    s.repeat_last_n = p.repeat_last_n;
    s.seed = p.seed;
    return s;
}

}  // namespace

extern "C" {

const char* tandem_last_error(void) { return g_last_error.c_str(); }

const char* tandem_status_name(tandem_status status) {
    switch (status) {
        case TANDEM_OK: return "ok";
        case TANDEM_ERR_INVALID_ARGUMENT: return "invalid argument";
        case TANDEM_ERR_IO: return "i/o error";
        case TANDEM_ERR_FORMAT: return "format error";
        case TANDEM_ERR_UNSUPPORTED: return "unsupported";
        case TANDEM_ERR_BACKEND: return "backend error";
        case TANDEM_ERR_CONTEXT_FULL: return "context full";
        case TANDEM_ERR_BUFFER_TOO_SMALL: return "buffer too small";
        case TANDEM_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char* tandem_version(void) { return TANDEM_VERSION_STRING; }

size_t tandem_backend_count(void) { return tandem::backend_names().size(); }

const char* tandem_backend_name(size_t index) {
    static const std::vector<std::string> names = tandem::backend_names();
    return index < names.size() ? names[index].c_str() : nullptr;
}

tandem_status tandem_devices_report(char* buf, size_t cap, size_t* needed) {
    return guarded([&] {
        std::string text;
#if TANDEM_WITH_OPENCL
        text += tandem::opencl_devices_report();
#else
        text += "OpenCL: not in this build (no OpenCL backend compiled in)\n";
#endif
#if TANDEM_WITH_VULKAN
        text += tandem::vulkan_devices_report();
#else
        text += "Vulkan: not in this build (no Vulkan backend compiled in)\n";
#endif
        if (needed) *needed = text.size() + 1;
        if (!buf || cap < text.size() + 1) throw tandem::error(TANDEM_ERR_BUFFER_TOO_SMALL, "report buffer too small");
        std::memcpy(buf, text.c_str(), text.size() + 1);
    });
}

tandem_model_params tandem_model_default_params(void) { return tandem_model_params{nullptr, 0, 0}; }

tandem_status tandem_model_load(const char* path, const tandem_model_params* params, tandem_model** out) {
    return guarded([&] {
        require(path && out, "tandem_model_load: path and out must not be null");
        *out = nullptr;
        const tandem_model_params p = params ? *params : tandem_model_default_params();
        require(p.n_ctx >= 0, "n_ctx must be >= 0");
        auto be = tandem::make_backend(p.backend ? p.backend : "cpu");
        if (p.n_threads > 0) be->set_threads(p.n_threads);
        auto m = std::make_unique<tandem_model>();
        m->impl = tandem::model::load(path, std::move(be));
        m->n_ctx = p.n_ctx;
        m->path = path;
        *out = m.release();
    });
}

void tandem_model_free(tandem_model* model) { delete model; }

tandem_status tandem_model_describe(const tandem_model* model, tandem_model_desc* out) {
    return guarded([&] {
        require(model && out, "tandem_model_describe: null argument");
        const auto& hp = model->impl->hparams();
        const auto& tok = model->impl->tokenizer();
        *out = tandem_model_desc{hp.n_vocab, hp.n_embd,  hp.n_ff,    hp.n_layer,         hp.n_head,
                                 hp.n_head_kv, hp.n_ctx_train, tok.bos(), tok.eos(), tok.fingerprint()};
    });
}

tandem_status tandem_gguf_report(const char* path, char* buf, size_t cap, size_t* needed) {
    return guarded([&] {
        require(path != nullptr, "tandem_gguf_report: null path");
        const std::string text = tandem::gguf_report(path);
        if (needed) *needed = text.size() + 1;
        if (!buf || cap < text.size() + 1) throw tandem::error(TANDEM_ERR_BUFFER_TOO_SMALL, "report buffer too small");
        std::memcpy(buf, text.c_str(), text.size() + 1);
    });
}

tandem_status tandem_convert_llama2c(const char* checkpoint, const char* tokenizer, const char* out_path,
                                     const char* model_name) {
    return guarded([&] {
        require(checkpoint && tokenizer && out_path, "tandem_convert_llama2c: null path");
        tandem::convert_llama2c(checkpoint, tokenizer, out_path, model_name ? model_name : "llama2c");
    });
}

tandem_status tandem_quantize(const char* in, const char* out, const char* type, int pure, tandem_progress_fn progress,
                              void* user) {
    return guarded([&] {
        require(in && out && type, "tandem_quantize: null argument");
        const auto target = tandem::parse_quant_target(type);
        if (!target) {
            throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "tandem_quantize: unknown type '" + std::string(type) +
                                                                 "' (q8_0, q4_0, q4_k, q6_k, q4_k_m)");
        }
        std::function<void(int64_t, int64_t)> cb;
        if (progress) cb = [&](int64_t d, int64_t n) { progress(d, n, user); };
        tandem::quantize_model(in, out, *target, pure != 0, cb);
    });
}

tandem_status tandem_synth(const tandem_synth_params* params, const char* out_path, tandem_progress_fn progress,
                           void* user) {
    return guarded([&] {
        require(params && out_path, "tandem_synth: null argument");
        require(params->type, "tandem_synth: no type (f32, f16, q8_0, q4_0, q4_k, q6_k)");
        const std::string t = params->type;
        tandem::dtype type = tandem::dtype::f32;
        bool known = false;
        for (tandem::dtype c : {tandem::dtype::f32, tandem::dtype::f16, tandem::dtype::q8_0, tandem::dtype::q4_0,
                                tandem::dtype::q4_k, tandem::dtype::q6_k}) {
            if (t == tandem::dtype_name(c)) type = c, known = true;
        }
        if (!known) {
            throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT,
                                "tandem_synth: unknown type '" + t + "' (f32, f16, q8_0, q4_0, q4_k, q6_k)");
        }
        tandem::synth_shape o;
        o.n_embd = params->n_embd;
        o.n_layer = params->n_layer;
        o.n_head = params->n_head;
        o.n_head_kv = params->n_head_kv;
        o.n_ff = params->n_ff;
        o.n_vocab = params->n_vocab;
        o.n_ctx = params->n_ctx;
        const auto shape = tandem::synth_resolve_shape(params->shape ? params->shape : "", o);
        std::function<void(int64_t, int64_t)> cb;
        if (progress) cb = [&](int64_t d, int64_t n) { progress(d, n, user); };
        tandem::synth_model(shape, type, params->seed, out_path, cb);
    });
}

const char* tandem_synth_shapes(void) {
    static const std::string text = tandem::synth_shapes_text();
    return text.c_str();
}

tandem_status tandem_model_add_lora(tandem_model* model, const char* path, float scale) {
    return guarded([&] {
        require(model && path, "tandem_model_add_lora: null argument");
        std::shared_ptr<const tandem::lora_adapter> a = tandem::lora_adapter::load(path, *model->impl);
        model->impl->add_adapter(std::move(a), scale);
    });
}

tandem_status tandem_model_clear_loras(tandem_model* model) {
    return guarded([&] {
        require(model, "tandem_model_clear_loras: null model");
        model->impl->clear_adapters();
    });
}

size_t tandem_model_lora_count(const tandem_model* model) { return model ? model->impl->adapters().size() : 0; }

tandem_status tandem_export_lora(const char* base, const char* const* adapters, const float* scales, size_t n,
                                 const char* out, const char* out_type, tandem_progress_fn progress, void* user) {
    return guarded([&] {
        require(base && out && (adapters || n == 0), "tandem_export_lora: null argument");
        require(n > 0, "tandem_export_lora: no adapters");
        std::vector<std::pair<std::string, float>> list;
        for (size_t i = 0; i < n; ++i) {
            require(adapters[i] != nullptr, "tandem_export_lora: null adapter path");
            list.emplace_back(adapters[i], scales ? scales[i] : 1.f);
        }
        std::optional<tandem::dtype> type;
        if (out_type && std::string(out_type) != "same") {
            for (tandem::dtype c : {tandem::dtype::f32, tandem::dtype::f16, tandem::dtype::q8_0, tandem::dtype::q4_0,
                                    tandem::dtype::q4_k, tandem::dtype::q6_k}) {
                if (out_type == tandem::dtype_name(c)) type = c;
            }
            if (!type) {
                throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "tandem_export_lora: unknown output type '" +
                                                                     std::string(out_type) +
                                                                     "' (same, f32, f16, q8_0, q4_0, q4_k, q6_k)");
            }
        }
        std::function<void(int64_t, int64_t)> cb;
        if (progress) cb = [&](int64_t d, int64_t t) { progress(d, t, user); };
        tandem::export_merged(base, list, out, type, cb);
    });
}

tandem_status tandem_perplexity(const tandem_model* model, const char* text, size_t len, int32_t window,
                                tandem_progress_fn progress, void* user, tandem_perplexity_result* out) {
    return guarded([&] {
        require(model && out && (text || len == 0), "tandem_perplexity: null argument");
        std::function<void(int64_t, int64_t)> cb;
        if (progress) cb = [&](int64_t d, int64_t t) { progress(d, t, user); };
        const auto r = tandem::perplexity(*model->impl, std::string_view(text, len), window, cb);
        *out = tandem_perplexity_result{r.n_tokens, r.n_windows, r.mean_nll(), r.perplexity(), r.seconds};
    });
}

tandem_status tandem_tokenize(const tandem_model* model, const char* text, size_t len, int add_bos, int32_t* tokens,
                              size_t cap, size_t* n_out) {
    return guarded([&] {
        require(model && n_out && (text || len == 0), "tandem_tokenize: null argument");
        const auto ids = model->impl->tokenizer().encode(std::string_view(text, len), add_bos != 0);
        *n_out = ids.size();
        if (ids.size() > cap || (!tokens && !ids.empty())) {
            throw tandem::error(TANDEM_ERR_BUFFER_TOO_SMALL, "token buffer holds " + std::to_string(cap) + ", need " +
                                                                 std::to_string(ids.size()));
        }
        std::copy(ids.begin(), ids.end(), tokens);
    });
}

tandem_status tandem_token_to_piece(const tandem_model* model, int32_t prev, int32_t token, char* buf, size_t cap,
                                    size_t* n_out) {
    return guarded([&] {
        require(model && n_out, "tandem_token_to_piece: null argument");
        const std::string piece = model->impl->tokenizer().token_to_piece(prev, token);
        *n_out = piece.size();
        if (piece.size() > cap || (!buf && !piece.empty())) {
            throw tandem::error(TANDEM_ERR_BUFFER_TOO_SMALL, "piece buffer too small");
        }
        std::memcpy(buf, piece.data(), piece.size());
    });
}

tandem_sampling_params tandem_sampling_default_params(void) {
    const tandem::sampling_params d;
    return tandem_sampling_params{d.temperature, d.top_k, d.top_p, d.min_p, d.repeat_penalty, d.repeat_last_n, d.seed};
}

tandem_status tandem_session_open(tandem_model* model, const tandem_sampling_params* params, tandem_session** out) {
    return guarded([&] {
        require(model && out, "tandem_session_open: null argument");
        *out = nullptr;
        const tandem_sampling_params p = params ? *params : tandem_sampling_default_params();
        auto s = std::make_unique<tandem_session>();
        s->impl = std::make_unique<tandem::session>(*model->impl, to_cpp(p), model->n_ctx);
        *out = s.release();
    });
}

void tandem_session_free(tandem_session* session) { delete session; }

tandem_status tandem_session_reset(tandem_session* session) {
    return guarded([&] {
        require(session, "tandem_session_reset: null session");
        session->impl->reset();
    });
}

tandem_status tandem_session_feed(tandem_session* session, const int32_t* tokens, size_t n) {
    return guarded([&] {
        require(session && (tokens || n == 0), "tandem_session_feed: null argument");
        session->impl->feed(std::span<const int32_t>(tokens, n));
    });
}

tandem_status tandem_session_step(tandem_session* session, int32_t* token) {
    return guarded([&] {
        require(session && token, "tandem_session_step: null argument");
        *token = session->impl->step();
    });
}

tandem_status tandem_session_eval(tandem_session* session, const int32_t* tokens, size_t n, float* logits) {
    return guarded([&] {
        require(session && logits && (tokens || n == 0), "tandem_session_eval: null argument");
        std::vector<float> all;
        session->impl->feed(std::span<const int32_t>(tokens, n), &all);
        std::memcpy(logits, all.data(), all.size() * sizeof(float));
    });
}

size_t tandem_session_length(const tandem_session* session) { return session ? session->impl->length() : 0; }

tandem_status tandem_session_timings(const tandem_session* session, tandem_timings* out) {
    return guarded([&] {
        require(session && out, "tandem_session_timings: null argument");
        const auto& t = session->impl->timings();
        *out = tandem_timings{t.prompt_tokens, t.prompt_seconds, t.gen_tokens, t.gen_seconds};
    });
}

tandem_spec_params tandem_spec_default_params(void) {
    const tandem::draft_config d;
    return tandem_spec_params{"chain", d.max_len, d.adaptive ? 1 : 0, nullptr, 0, d.budget, d.exit_layer, 0};
}

tandem_status tandem_spec_open(tandem_model* target, tandem_model* draft, const tandem_sampling_params* sampling,
                               const tandem_spec_params* params, tandem_spec_session** out) {
    return guarded([&] {
        require(target && out, "tandem_spec_open: null argument");
        *out = nullptr;
        const tandem_spec_params p = params ? *params : tandem_spec_default_params();
        tandem::draft_config cfg;
        cfg.strategy = tandem::parse_draft_strategy(p.strategy ? p.strategy : "chain");
        cfg.max_len = p.draft_max;
        cfg.adaptive = p.adaptive != 0;
        if (p.tree && p.tree_len) cfg.branching.assign(p.tree, p.tree + p.tree_len);
        cfg.budget = p.budget;
        cfg.exit_layer = p.exit_layer;
        if (cfg.strategy != tandem::draft_strategy::self) {
            require(draft != nullptr, "speculative decoding needs a draft model (or strategy \"self\")");
            tandem::check_vocab_match(*draft->impl, draft->path, *target->impl, target->path);
        }
        const tandem::model& d = cfg.strategy == tandem::draft_strategy::self ? *target->impl : *draft->impl;
        const tandem_sampling_params sp = sampling ? *sampling : tandem_sampling_default_params();
        const int64_t ctx = p.n_ctx > 0 ? p.n_ctx : target->impl->hparams().n_ctx_train;
        auto s = std::make_unique<tandem_spec_session>();
        s->impl = std::make_unique<tandem::speculative_generator>(*target->impl, d, cfg, to_cpp(sp), ctx);
        *out = s.release();
    });
}

void tandem_spec_free(tandem_spec_session* session) { delete session; }

tandem_status tandem_spec_start(tandem_spec_session* session, const int32_t* prompt, size_t n) {
    return guarded([&] {
        require(session && prompt && n > 0, "tandem_spec_start: null argument or empty prompt");
        session->impl->start(std::vector<int32_t>(prompt, prompt + n));
    });
}

tandem_status tandem_spec_step(tandem_spec_session* session, int32_t* tokens, size_t cap, size_t* n_out) {
    return guarded([&] {
        require(session && tokens && n_out, "tandem_spec_step: null argument");
        // A round yields at most the longest draft path + 1 tokens; the caller's buffer must hold them.
        require(cap >= 257, "tandem_spec_step: the token buffer must hold at least 257 tokens");
        const auto t = session->impl->step();
        std::copy(t.begin(), t.end(), tokens);
        *n_out = t.size();
    });
}

tandem_status tandem_spec_get_stats(const tandem_spec_session* session, tandem_spec_stats* out) {
    return guarded([&] {
        require(session && out, "tandem_spec_get_stats: null argument");
        const auto& st = session->impl->stats();
        *out = tandem_spec_stats{};
        out->passes = st.passes, out->tokens = st.tokens, out->drafted = st.drafted;
        out->draft_seconds = st.draft_seconds, out->verify_seconds = st.verify_seconds;
        for (size_t d = 0; d < st.accepted_at_depth.size() && d < TANDEM_SPEC_MAX_DEPTH; ++d) {
            out->accepted_at_depth[d] = st.accepted_at_depth[d];
            out->offered_at_depth[d] = st.offered_at_depth[d];
        }
    });
}

}  // extern "C"

namespace tandem {
// For the other C entry points of libtandem (engine/tandem_train_api.cpp): the message tandem_last_error() returns.
void set_last_error(const std::string& message) { g_last_error = message; }
}  // namespace tandem
