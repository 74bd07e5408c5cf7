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
} tandem_finetune_result;

/* Fine-tunes on `text` (len bytes of UTF-8). progress may be NULL. */
tandem_status tandem_finetune(const tandem_finetune_params* params, const char* text, size_t len,
                              tandem_finetune_progress_fn progress, void* user, tandem_finetune_result* out);

#ifdef __cplusplus
}
#endif

#endif /* TANDEM_TRAIN_H */
