/* Tandem public API for on-device LoRA fine-tuning (the protocol of engine/finetune.h): an embedder trains an
 * adapter for a GGUF model on its own text without sending it anywhere, and optionally distils a teacher model's
 * next-token distribution into it. Same conventions as tandem.h: no function throws or exits; on failure a status
 * is returned and tandem_last_error() describes the problem. */
#ifndef TANDEM_TRAIN_H
#define TANDEM_TRAIN_H

#include "engine/tandem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A distillation teacher supplied by the embedder, used instead of distill_from: e.g. the CLI's
 * --distill-server, which fetches the targets from a `tandem serve` over the network (the engine library itself
 * does not talk to the network). Each callback returns TANDEM_OK, or a status and a NUL-terminated message written
 * to msg (at most msg_cap bytes): fine-tuning then stops with that status and message (checkpoints already written
 * keep the progress). */
typedef struct tandem_teacher {
    void* user;
    /* Called once before any top_k with the student's vocabulary (its size and tokenizer fingerprint): the teacher
     * connects if it has to, and refuses another vocabulary than its own. May be NULL. */
    tandem_status (*bind)(void* user, int32_t n_vocab, uint64_t vocab_fingerprint, char* msg, size_t msg_cap);
    /* tokens: n_seq sequences of n_tok token ids each (row t of a sequence at position t, BOS first). For every row
     * r < n_seq * n_tok writes ids[r * k + j] and p[r * k + j], j < k: the teacher's k most likely next tokens after
     * the row's prefix within its sequence (ids in [0, n_vocab)) and their probabilities, a softmax over those k
     * logits (summing to 1). Rows of a sequence the trainer masks (padding) may be left at zeros. */
    tandem_status (*top_k)(void* user, const int32_t* tokens, int32_t n_seq, int32_t n_tok, int32_t k, int32_t* ids,
                           float* p, char* msg, size_t msg_cap);
} tandem_teacher;

typedef struct tandem_finetune_params {
    const char* model_path;     /* the GGUF model to adapt (its weights stay frozen) */
    const char* backend;        /* NULL = "cpu" */
    int n_threads;              /* <= 0: all cores */
    const char* out_path;       /* adapter GGUF (llama.cpp's LoRA layout) written at the end; NULL = none */
    int32_t rank;               /* LoRA rank r */
    float alpha;                /* scale alpha / r */
    const char* targets;        /* comma-separated projections, e.g. "q,k,v,o" (see lora.h); NULL = q,k,v,o */
    float lr;                   /* peak learning rate */
    const char* schedule;       /* "cosine" (to 0.1 lr) or "constant"; NULL = cosine */
    int32_t warmup_steps;
    float weight_decay;         /* AdamW decoupled weight decay */
    float max_grad_norm;        /* global-norm gradient clip; <= 0: none */
    int32_t epochs;
    int32_t ctx;                /* tokens per training window */
    int32_t batch;              /* windows per step */
    float val_split;            /* fraction of the text held out at its end for validation, in [0, 1) */
    int64_t max_steps;          /* > 0: stop after this many steps in all */
    uint64_t seed;              /* adapter initialisation and data order */
    const char* checkpoint_path; /* resumable checkpoint (adapter + optimizer + data position); NULL = none */
    int64_t checkpoint_every;   /* steps between checkpoints (also written at the end) */
    const char* resume_path;    /* continue from this checkpoint; NULL = start fresh */
    const char* distill_from;   /* teacher GGUF (same vocabulary) loaded on the same backend; NULL = plain LM loss */
    int32_t distill_top_k;      /* teacher top-k entries per position */
    const tandem_teacher* teacher; /* an embedder's teacher (not with distill_from); NULL = none */
    int32_t distill_generate;   /* > 0: train on this many texts the teacher writes, continuing prompts (first 8 words
                                 * of lines) from the training part of the text, instead of on the text; 0 = off */
    float distill_temp;         /* temperature of those continuations; 0 = greedy */
} tandem_finetune_params;

/* rank 8, alpha 16, q,k,v,o, lr 1e-3 cosine, no warm-up, no weight decay, clip 1, 1 epoch, ctx 128, batch 8,
 * val_split 0.1, seed 42, distill_top_k 16. */
tandem_finetune_params tandem_finetune_default_params(void);

typedef struct tandem_finetune_progress {
    int64_t step, total_steps;
    int32_t epoch, epochs;  /* 1-based */
    double loss;            /* this step's training loss (nats per token) */
    double tokens_per_s;
    double eta_seconds;
    int epoch_end;          /* 1 once per finished epoch; then val_loss (and val_kl when distilling) are set */
    double val_loss, val_kl;
} tandem_finetune_progress;
typedef void (*tandem_finetune_progress_fn)(const tandem_finetune_progress* progress, void* user);

typedef struct tandem_finetune_result {
    double val_loss_before, val_loss_after; /* mean NLL per held-out token; NaN without a validation split */
    double val_kl_before, val_kl_after;     /* distillation: mean KL(teacher top-k || student); else NaN */
    int64_t steps;                          /* global steps done */
    int64_t train_tokens, val_tokens;
    int64_t tokens_trained;                 /* in this call */
    double seconds;                         /* training time in this call (validation excluded) */
    double tokens_per_s;
    double last_loss;
    int64_t n_params;                       /* trainable adapter parameters */
    int64_t generated_tokens;               /* distill_generate: tokens the teacher wrote (prompts excluded) */
    double generate_seconds;                /* and the time it took */
} tandem_finetune_result;

/* Fine-tunes on `text` (len bytes of UTF-8). progress may be NULL. */
tandem_status tandem_finetune(const tandem_finetune_params* params, const char* text, size_t len,
                              tandem_finetune_progress_fn progress, void* user, tandem_finetune_result* out);

#ifdef __cplusplus
}
#endif

#endif /* TANDEM_TRAIN_H */
