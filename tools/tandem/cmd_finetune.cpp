// `tandem finetune`: train a LoRA adapter on a text file (or distil a teacher into one) through the C API of
// engine/tandem_train.h, with a progress bar and the validation loss before and after.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "engine/tandem_train.h"
#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {
struct finetune_options {
    std::string model = default_model();
    std::string file, out, targets = "q,k,v,o", schedule = "cosine", checkpoint, resume, distill_from;
    std::string backend = "cpu";
    int threads = 0;
    tandem_finetune_params p = tandem_finetune_default_params();
    long long max_chars = 0;
};

std::string format_duration(double s) {
    char buf[32];
    const long long t = static_cast<long long>(s + 0.5);
    if (t >= 3600)
        std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t / 60 % 60);
    else
        std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
    return buf;
}
}  // namespace

action add_finetune(CLI::App& app) {
    auto o = std::make_shared<finetune_options>();
    auto* cmd = app.add_subcommand(
        "finetune",
        "Train a LoRA adapter (llama.cpp adapter GGUF) on a text file; the model's weights stay frozen. The text is "
        "tokenized, its last --val-split fraction held out for validation, and both parts cut into windows of --ctx "
        "tokens (each scored as BOS + window, as `tandem perplexity` does). Prints the validation loss (nats per "
        "token) before training and after every epoch. With --distill-from, the targets are the teacher model's "
        "top-k next-token distributions and the validation KL to the teacher is reported too.");
    auto& p = o->p;
    cmd->add_option("-m,--model", o->model, "GGUF model to adapt")->capture_default_str();
    cmd->add_option("-f,--file", o->file, "UTF-8 training text")->required()->check(CLI::ExistingFile);
    cmd->add_option("-o,--output", o->out, "Adapter GGUF to write")->required();
    cmd->add_option("--rank", p.rank, "LoRA rank r")->capture_default_str()->check(CLI::Range(1, 4096));
    cmd->add_option("--alpha", p.alpha, "LoRA alpha (the update is scaled by alpha / rank)")->capture_default_str();
    cmd->add_option("--targets", o->targets,
                    "Adapted projections: q,k,v,o,gate,down,up (also w1,w2,w3, attn, ffn, all)")
        ->capture_default_str();
    cmd->add_option("--lr", p.lr, "Peak learning rate")->capture_default_str();
    cmd->add_option("--schedule", o->schedule, "Learning-rate schedule: cosine (decays to 0.1 x lr) or constant")
        ->capture_default_str()
        ->check(CLI::IsMember({"cosine", "constant"}));
    cmd->add_option("--warmup", p.warmup_steps, "Linear warm-up steps")->capture_default_str();
    cmd->add_option("--weight-decay", p.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
    cmd->add_option("--clip", p.max_grad_norm, "Clip gradients to this global L2 norm (0 = off)")
        ->capture_default_str();
    cmd->add_option("--epochs", p.epochs, "Passes over the training windows")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    cmd->add_option("--ctx", p.ctx, "Tokens per training window")->capture_default_str()->check(CLI::Range(2, 1 << 16));
    cmd->add_option("--batch", p.batch, "Windows per optimizer step")
        ->capture_default_str()
        ->check(CLI::Range(1, 4096));
    cmd->add_option("--val-split", p.val_split, "Fraction of the text (its end) held out for validation")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 0.99));
    cmd->add_option("--max-steps", p.max_steps, "Stop after this many steps in all (0 = every epoch)")
        ->capture_default_str();
    cmd->add_option("--seed", p.seed, "Seed of the adapter initialisation and the data order")->capture_default_str();
    cmd->add_option("--checkpoint", o->checkpoint,
                    "Resumable checkpoint file (adapter, optimizer state, data position), rewritten every "
                    "--checkpoint-every steps and at the end");
    cmd->add_option("--checkpoint-every", p.checkpoint_every, "Steps between checkpoints")->capture_default_str();
    cmd->add_option("--resume", o->resume, "Continue from a checkpoint (same model, text and options)")
        ->check(CLI::ExistingFile);
    cmd->add_option("--distill-from", o->distill_from,
                    "Teacher GGUF with the same vocabulary: train toward its next-token distribution")
        ->check(CLI::ExistingFile);
    cmd->add_option("--distill-top-k", p.distill_top_k, "Teacher entries per position (renormalised softmax)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    cmd->add_option("--chars", o->max_chars, "Use only the first N bytes of the file (0 = all)")->capture_default_str();
    add_backend_options(cmd, o->backend, o->threads);
    return [o] {
        std::ifstream in(o->file, std::ios::binary);
        if (!in) throw cli_error{"cannot read " + o->file};
        std::ostringstream ss;
        ss << in.rdbuf();
        std::string text = ss.str();
        if (o->max_chars > 0 && size_t(o->max_chars) < text.size()) text.resize(size_t(o->max_chars));
        auto p = o->p;
        p.model_path = o->model.c_str();
        p.backend = o->backend.c_str();
        p.n_threads = o->threads;
        p.out_path = o->out.c_str();
        p.targets = o->targets.c_str();
        p.schedule = o->schedule.c_str();
        p.checkpoint_path = o->checkpoint.empty() ? nullptr : o->checkpoint.c_str();
        p.resume_path = o->resume.empty() ? nullptr : o->resume.c_str();
        p.distill_from = o->distill_from.empty() ? nullptr : o->distill_from.c_str();
        std::printf("model: %s\nbackend: %s\ntext: %s (%zu bytes)\nadapter: rank %d, alpha %g, targets %s\n",
                    o->model.c_str(), o->backend.c_str(), o->file.c_str(), text.size(), p.rank, double(p.alpha),
                    o->targets.c_str());
        std::fflush(stdout);
        auto progress = [](const tandem_finetune_progress* pr, void*) {
            if (pr->epoch_end) {
                std::fprintf(stderr, "\nepoch %d/%d: validation loss %.4f", pr->epoch, pr->epochs, pr->val_loss);
                if (!std::isnan(pr->val_kl)) std::fprintf(stderr, ", KL to teacher %.4f", pr->val_kl);
                std::fprintf(stderr, "\n");
                return;
            }
            char label[160];
            std::snprintf(label, sizeof label, "steps  epoch %d/%d  loss %.4f  %.0f tok/s  ETA %s  ", pr->epoch,
                          pr->epochs, pr->loss, pr->tokens_per_s, format_duration(pr->eta_seconds).c_str());
            progress_bar(pr->step, pr->total_steps, label);
        };
        tandem_finetune_result r{};
        check(tandem_finetune(&p, text.data(), text.size(), progress, nullptr, &r), "finetune");
        std::printf("trainable parameters: %lld\ntokens: %lld train, %lld validation\nsteps: %lld\n",
                    static_cast<long long>(r.n_params), static_cast<long long>(r.train_tokens),
                    static_cast<long long>(r.val_tokens), static_cast<long long>(r.steps));
        if (!std::isnan(r.val_loss_before))
            std::printf("validation loss %.4f -> %.4f nats/token\n", r.val_loss_before, r.val_loss_after);
        if (!std::isnan(r.val_kl_before))
            std::printf("validation KL to teacher %.4f -> %.4f nats/token\n", r.val_kl_before, r.val_kl_after);
        std::printf("training: %lld tokens in %.2f s (%.0f tokens/s)\nadapter written to %s\n",
                    static_cast<long long>(r.tokens_trained), r.seconds, r.tokens_per_s, o->out.c_str());
        if (!o->checkpoint.empty()) std::printf("checkpoint written to %s\n", o->checkpoint.c_str());
        return 0;
    };
}

}  // namespace tandem_cli
