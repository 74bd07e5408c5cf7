/* Tandem public API: load a GGUF model on a backend, tokenize, run generation sessions, read timings.
 * C-compatible at the boundary (opaque handles, status codes, caller-owned buffers) so that C, JNI and
 * Python ctypes bindings are possible. No function throws or exits; on failure it returns a status and
 * tandem_last_error() describes the problem. Handles are not thread-safe; use one session per thread. */
#ifndef TANDEM_H
#define TANDEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tandem_status {
    TANDEM_OK = 0,
    TANDEM_ERR_INVALID_ARGUMENT = 1, /* a caller error: null handle, bad option value, token out of range */
    TANDEM_ERR_IO = 2,               /* a file could not be opened, read or written */
    TANDEM_ERR_FORMAT = 3,           /* a file is truncated, corrupt or not what it claims to be */
    TANDEM_ERR_UNSUPPORTED = 4,      /* a valid file or request this build cannot run (type, architecture) */
    TANDEM_ERR_BACKEND = 5,          /* a device or driver failure */
    TANDEM_ERR_CONTEXT_FULL = 6,     /* the session's KV cache has no room for more tokens */
    TANDEM_ERR_BUFFER_TOO_SMALL = 7, /* a caller buffer is too small; the needed size is reported */
    TANDEM_ERR_INTERNAL = 8          /* a broken invariant inside Tandem: a bug, please report it */
} tandem_status;

/* The message of the last failed call on this thread ("" if none). Valid until the next call. */
const char* tandem_last_error(void);
const char* tandem_status_name(tandem_status status);
const char* tandem_version(void);

/* ---- backends ---- */
/* Number of compiled-in backends and their names ("cpu_ref", "cpu", ...). */
size_t tandem_backend_count(void);
const char* tandem_backend_name(size_t index);

/* Text report of the compute devices of every compiled-in GPU backend (OpenCL platforms and devices:
 * index, name, type, driver, compute units, limits, fp16). Same buffer protocol as tandem_gguf_report. */
tandem_status tandem_devices_report(char* buf, size_t cap, size_t* needed);

/* ---- models ---- */
typedef struct tandem_model tandem_model;

typedef struct tandem_model_params {
    const char* backend; /* backend name; NULL means "cpu" */
    int n_threads;       /* CPU threads for the cpu backend; <= 0 means all cores */
    int n_ctx;           /* KV cache capacity per session in tokens; <= 0 means the model's context length */
} tandem_model_params;

tandem_model_params tandem_model_default_params(void);
tandem_status tandem_model_load(const char* path, const tandem_model_params* params, tandem_model** out);
void tandem_model_free(tandem_model* model);

typedef struct tandem_model_desc {
    int32_t n_vocab, n_embd, n_ff, n_layer, n_head, n_head_kv, n_ctx_train;
    int32_t bos, eos;
    uint64_t vocab_fingerprint; /* hash over every token's text and type; equal iff vocabularies match */
} tandem_model_desc;
tandem_status tandem_model_describe(const tandem_model* model, tandem_model_desc* out);

/* Text report of a GGUF file without loading weights: metadata, tensors and the vocabulary fingerprint.
 * Writes at most cap bytes including the NUL; *needed receives the full length + 1. */
tandem_status tandem_gguf_report(const char* path, char* buf, size_t cap, size_t* needed);

/* Convert a llama2.c checkpoint (+ its tokenizer .bin) into a GGUF v3 file. */
tandem_status tandem_convert_llama2c(const char* checkpoint, const char* tokenizer, const char* out_path,
                                     const char* model_name);

/* Progress of a long call: `done` of `total` steps (tensors, windows). */
typedef void (*tandem_progress_fn)(int64_t done, int64_t total, void* user);
/* Quantize a GGUF model's matrices to `type` ("q8_0", "q4_0", "q4_k", "q6_k", or "q4_k_m" for llama.cpp's Q4_K_M mix)
 * and write `out` (all metadata copied, general.file_type set). Norms stay F32; under q4_0 the output projection is
 * written as q6_k when its rows allow (llama.cpp's default). A matrix whose rows are not whole blocks (32 elements,
 * 256 for the K-quants) falls back (q4_k to q4_0, q6_k to q8_0 when rows are whole 32-element blocks, else F32) and
 * is logged, or with pure != 0 (every matrix in `type`) refused (TANDEM_ERR_INVALID_ARGUMENT). progress (may be
 * NULL) is called once per tensor. */
tandem_status tandem_quantize(const char* in, const char* out, const char* type, int pure, tandem_progress_fn progress,
                              void* user);

/* Write a random-weight llama model of a real shape with a synthetic SentencePiece vocabulary (for benchmarks):
 * see engine/synth.h for the weight scales, the vocabulary and the per-tensor types. `shape` names a shape
 * (tandem_synth_shapes lists them) or is NULL/"" for a custom one; each size field > 0 overrides the shape's,
 * 0 keeps it (n_head_kv follows an overridden n_head in a shape without grouped-query attention). A custom
 * shape needs n_embd, n_layer, n_head, n_ff and n_vocab; n_head_kv defaults to n_head and n_ctx to 2048.
 * A zero-initialised struct plus a shape and a type is valid. */
typedef struct tandem_synth_params {
    const char* shape;
    int32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    const char* type; /* "f32", "f16", "q8_0", "q4_0", "q4_k" or "q6_k" */
    uint64_t seed;    /* the file is a pure function of (shape, type, seed) */
} tandem_synth_params;
/* progress (may be NULL) is called once per tensor; the file is written (atomically) after the last call. */
tandem_status tandem_synth(const tandem_synth_params* params, const char* out_path, tandem_progress_fn progress,
                           void* user);
/* The named shapes, one per line: "110m: dim 768, 12 layers, 12 heads, 12 kv heads, ffn 2048, vocab 32000, ctx 1024".
 * A static string. */
const char* tandem_synth_shapes(void);

/* ---- LoRA adapters (llama.cpp's adapter GGUF layout: general.type = "adapter", adapter.type = "lora") ---- */
/* Load the adapter at `path` for `model` onto the model's backend and apply it, multiplied by `scale` (on top of
 * its alpha / rank), in every forward pass that follows: new and already open sessions and speculative sessions
 * (tokens already in a session's cache keep the values they were computed with). Several adapters add up.
 * Errors name the problem: TANDEM_ERR_FORMAT for a file that is not an adapter or does not fit the model,
 * TANDEM_ERR_UNSUPPORTED for a backend that cannot run the adapter ops yet. */
tandem_status tandem_model_add_lora(tandem_model* model, const char* path, float scale);
/* Stop applying every adapter of the model. */
tandem_status tandem_model_clear_loras(tandem_model* model);
/* Number of adapters the model applies (0 for NULL). */
size_t tandem_model_lora_count(const tandem_model* model);
/* Merge n adapters into a copy of the base model file: W' = W + sum scales[i] * alpha_i / rank_i * B_i A_i for
 * every adapted matrix, written as `out_type` ("f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"), or in the base
 * matrix's own type when out_type is NULL or "same" (quantized bases are dequantized, merged and re-quantized with
 * tandem's quantizer). Every other tensor and all metadata are copied unchanged. A merged matrix whose rows are not
 * whole blocks of the type falls back as in tandem_quantize (logged). scales may be NULL (all 1). progress (may be
 * NULL) is called once per tensor. */
tandem_status tandem_export_lora(const char* base, const char* const* adapters, const float* scales, size_t n,
                                 const char* out, const char* out_type, tandem_progress_fn progress, void* user);

/* ---- evaluation ---- */
typedef struct tandem_perplexity_result {
    int64_t n_tokens;  /* scored tokens */
    int64_t n_windows;
    double mean_nll;   /* nats per token */
    double perplexity; /* exp(mean_nll) */
    double seconds;
} tandem_perplexity_result;
/* The perplexity protocol of engine/perplexity.h: tokenize (dummy prefix once, no BOS), cut into windows of
 * `window` tokens, evaluate each from an empty cache as BOS + window, score every token. */
tandem_status tandem_perplexity(const tandem_model* model, const char* text, size_t len, int32_t window,
                                tandem_progress_fn progress, void* user, tandem_perplexity_result* out);

/* ---- tokenizer ---- */
/* Encode UTF-8 text (len bytes, any bytes allowed) with a dummy-prefix space, optionally BOS first.
 * *n_out receives the token count; if cap is too small, TANDEM_ERR_BUFFER_TOO_SMALL. */
tandem_status tandem_tokenize(const tandem_model* model, const char* text, size_t len, int add_bos,
                              int32_t* tokens, size_t cap, size_t* n_out);
/* The bytes token `token` contributes when it follows `prev` (a leading space after BOS is dropped,
 * <0xNN> byte tokens become that byte). Not NUL-terminated; *n_out receives the length. */
tandem_status tandem_token_to_piece(const tandem_model* model, int32_t prev, int32_t token, char* buf, size_t cap,
                                    size_t* n_out);

/* ---- sessions ---- */
typedef struct tandem_session tandem_session;

typedef struct tandem_sampling_params {
    float temperature;        /* 0 = greedy */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repeat_penalty;     /* 1 = off */
    int32_t repeat_last_n;    /* window of recent tokens the penalty looks at */
    uint64_t seed;
} tandem_sampling_params;

tandem_sampling_params tandem_sampling_default_params(void);
tandem_status tandem_session_open(tandem_model* model, const tandem_sampling_params* params, tandem_session** out);
void tandem_session_free(tandem_session* session);
/* Forget every token (empty KV cache); sampling state is re-seeded. */
tandem_status tandem_session_reset(tandem_session* session);
/* Feed tokens (the prompt, or any continuation) in one batched forward pass. */
tandem_status tandem_session_feed(tandem_session* session, const int32_t* tokens, size_t n);
/* Sample the next token from the last fed position and feed it. *token receives it. */
tandem_status tandem_session_step(tandem_session* session, int32_t* token);
/* Feed tokens and write the logits of every fed position (n * n_vocab floats, row-major). */
tandem_status tandem_session_eval(tandem_session* session, const int32_t* tokens, size_t n, float* logits);
/* Number of tokens in the session's cache. */
size_t tandem_session_length(const tandem_session* session);

typedef struct tandem_timings {
    uint64_t prompt_tokens;  /* tokens fed through tandem_session_feed/eval */
    double prompt_seconds;
    uint64_t gen_tokens;     /* tokens produced by tandem_session_step */
    double gen_seconds;
} tandem_timings;
tandem_status tandem_session_timings(const tandem_session* session, tandem_timings* out);

/* ---- speculative decoding (draft and target in one process) ---- */
typedef struct tandem_spec_session tandem_spec_session;

typedef struct tandem_spec_params {
    const char* strategy;   /* "chain" (default), "tree", "dynamic" or "self" */
    int32_t draft_max;      /* chain/self: longest draft (adapted online when adaptive != 0) */
    int32_t adaptive;
    const int32_t* tree;    /* tree: children per node at each depth, e.g. {4, 2, 2, 1} */
    size_t tree_len;
    int32_t budget;         /* dynamic: node budget */
    int32_t exit_layer;     /* self: layers of the target used as the draft */
    int32_t n_ctx;          /* KV capacity in tokens; <= 0 = the target's context length */
} tandem_spec_params;

#define TANDEM_SPEC_MAX_DEPTH 64
typedef struct tandem_spec_stats {
    uint64_t passes;   /* target forward passes */
    uint64_t tokens;   /* tokens produced */
    uint64_t drafted;  /* draft nodes verified */
    double draft_seconds, verify_seconds;
    uint64_t accepted_at_depth[TANDEM_SPEC_MAX_DEPTH]; /* accepted nodes per depth */
    uint64_t offered_at_depth[TANDEM_SPEC_MAX_DEPTH];  /* passes whose draft reached this depth */
} tandem_spec_stats;

tandem_spec_params tandem_spec_default_params(void);
/* draft may be NULL for strategy "self". Refuses a draft whose vocabulary differs from the target's. */
tandem_status tandem_spec_open(tandem_model* target, tandem_model* draft, const tandem_sampling_params* sampling,
                               const tandem_spec_params* params, tandem_spec_session** out);
void tandem_spec_free(tandem_spec_session* session);
tandem_status tandem_spec_start(tandem_spec_session* session, const int32_t* prompt, size_t n);
/* One draft + verify round: writes the new tokens (the accepted draft tokens + the target's token). */
tandem_status tandem_spec_step(tandem_spec_session* session, int32_t* tokens, size_t cap, size_t* n_out);
tandem_status tandem_spec_get_stats(const tandem_spec_session* session, tandem_spec_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* TANDEM_H */
