// LoRA fine-tuning on a text: tokenize (dummy-prefix space once, no BOS), hold out the tail (val_split) for
// validation, cut both parts into windows of `ctx` tokens, and train an adapter with AdamW on batches of `batch`
// windows, in a shuffled order per epoch. Each window is evaluated as in the perplexity protocol: the model sees
// BOS + the window's first ctx - 1 tokens and is scored on all ctx of them (a short last window is masked).
// Validation loss (mean NLL per token) is measured before training and after every epoch. With a teacher
// (distillation) the targets are the teacher's top-k distributions and the validation KL is reported as well;
// with distill_generate the training windows are texts the teacher writes from prompts of the training part.
// Checkpoints hold the adapter, the AdamW moments and the position in the data, so a resumed run continues
// exactly where it stopped (the same parameters as an uninterrupted run).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/lora.h"
#include "engine/model.h"
#include "engine/optimizer.h"

namespace tandem {

class teacher;

struct finetune_config {
    lora_config lora;
    uint64_t seed = 42;  // adapter initialisation and the per-epoch shuffles
    int32_t ctx = 128;   // tokens per window
    int32_t batch = 8;   // windows per step
    int32_t epochs = 1;
    double val_split = 0.1;        // fraction of the tokens held out at the end of the text (0: no validation)
    optimizer_config opt;          // total_steps is filled in from the data
    int64_t max_steps = 0;         // > 0: train at most this many steps in all (the schedule ends there)
    std::string out_path;          // adapter GGUF written at the end ("" = none)
    std::string checkpoint_path;   // "" = no checkpoints
    int64_t checkpoint_every = 0;  // steps between checkpoints (0: only at the end)
    std::string resume_path;       // continue from this checkpoint
    int32_t distill_top_k = 16;    // teacher entries per row when distilling
    // Sequence-level distillation (needs a teacher): > 0 replaces the text's training windows by distill_generate
    // texts the teacher writes. Each starts from a prompt taken from the TRAINING part of the text (the first
    // distill_prompt_words words of a line, as `tandem-bench spec` prompts are; the held-out tail is never read) and
    // is continued by the teacher (teacher::generate, seeded by `seed`) until the window holds ctx tokens; the
    // student then trains on the teacher's top-k over those texts. Prompts are drawn without repetition in a
    // seeded order, and reused only when there are more texts than lines.
    int32_t distill_generate = 0;
    float distill_temp = 0.f;           // 0: greedy continuations; > 0: sampled at this temperature (top-40)
    int32_t distill_prompt_words = 8;
    bool distill_keep_text = false;     // train on the text's windows as well as the generated ones
    int64_t stop_after = 0;        // > 0: stop this invocation at this global step (an interruption; for tests)
};

struct finetune_progress {
    int64_t step = 0, total_steps = 0;  // global steps
    int32_t epoch = 0, epochs = 0;      // 1-based current epoch
    double loss = 0;                    // this step's training loss
    double tokens_per_s = 0;            // trained tokens per second in this invocation
    double eta_s = 0;
    bool epoch_end = false;  // set once per finished epoch, with its validation figures
    double val_loss = std::numeric_limits<double>::quiet_NaN();
    double val_kl = std::numeric_limits<double>::quiet_NaN();
};

struct finetune_result {
    double val_loss_before = std::numeric_limits<double>::quiet_NaN();
    double val_loss_after = std::numeric_limits<double>::quiet_NaN();
    double val_kl_before = std::numeric_limits<double>::quiet_NaN();  // distillation only
    double val_kl_after = std::numeric_limits<double>::quiet_NaN();
    int64_t steps = 0;  // global steps done
    int64_t train_tokens = 0, val_tokens = 0;
    int64_t generated_tokens = 0;  // tokens the teacher wrote (distill_generate), prompts excluded
    double generate_seconds = 0;
    int64_t tokens_trained = 0;  // scored tokens trained on in this invocation
    double seconds = 0;          // training time of this invocation (validation excluded)
    double last_loss = 0;
    std::unique_ptr<lora_adapter> adapter;
};

// The data finetune() trains on when cfg.distill_generate > 0: the prompts, taken from the training part of `text`
// (the part before the validation split), and the teacher's continuations of them (empty without
// distill_generate). Throws tandem::error as finetune() does for bad options.
struct distill_texts {
    std::vector<std::vector<int32_t>> prompts, continuations;  // token ids, no BOS
};
distill_texts generate_distill_texts(const model& m, std::string_view text, const finetune_config& cfg, teacher& t);

// Trains an adapter for m (which must have no adapters applied). t: the teacher for distillation, or nullptr.
// Throws tandem::error naming the problem (text too short, bad option, checkpoint mismatch, unsupported op).
finetune_result finetune(const model& m, std::string_view text, const finetune_config& cfg, teacher* t,
                         const std::function<void(const finetune_progress&)>& progress = {});

}  // namespace tandem
