// `tandem finetune`: train a LoRA adapter on a text file (or distil a teacher into one) through the C API of
// engine/tandem_train.h, with a progress bar and the validation loss before and after. The teacher is a local
// GGUF (--distill-from) or, in builds with the collaboration layer, a `tandem serve` (--distill-server).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tandem_train.h"
#include "tools/tandem/cli.h"
#ifdef TANDEM_HAVE_COLLAB
#include "collab/remote_teacher.h"
#endif

namespace tandem_cli {

namespace {
struct finetune_options {
    std::string model = default_model();
    std::string file, out, targets = "q,k,v,o", schedule = "cosine", checkpoint, resume, distill_from;
    std::string backend = "cpu";
    std::string distill_server, token, token_file, tls_ca;  // the network teacher
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

#ifdef TANDEM_HAVE_COLLAB
// The bearer token in a file: its first line that is not blank or a # comment, either 'token' or, as in
// `tandem serve --token-file`, 'name token'.
std::string read_token_file(const std::string& path) {
    std::ifstream f(path);
    if (!f) throw cli_error{"cannot read the token file '" + path + "'"};
    for (std::string line; std::getline(f, line);) {
        std::istringstream fields(line);
        std::vector<std::string> w;
        for (std::string x; fields >> x;) w.push_back(x);
        if (w.empty() || w[0][0] == '#') continue;
        if (w.size() > 2) throw cli_error{"the token file '" + path + "' must hold 'token' or 'name token'"};
        return w.back();
    }
    throw cli_error{"the token file '" + path + "' holds no token"};
}
#endif
}  // namespace

action add_finetune(CLI::App& app) {
    auto o = std::make_shared<finetune_options>();
    auto* cmd = app.add_subcommand(
        "finetune",
        "Train a LoRA adapter (llama.cpp adapter GGUF) on a text file; the model's weights stay frozen. The text is "
        "tokenized, its last --val-split fraction held out for validation, and both parts cut into windows of --ctx "
        "tokens (each scored as BOS + window, as `tandem perplexity` does). Prints the validation loss (nats per "
        "token) before training and after every epoch. With --distill-from, the targets are the teacher model's "
        "top-k next-token distributions and the validation KL to the teacher is reported too; with --distill-server "
        "(collaboration builds) the teacher is a `tandem serve` on the network.");
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
    auto* from = cmd->add_option("--distill-from", o->distill_from,
                                 "Teacher GGUF with the same vocabulary: train toward its next-token distribution")
                     ->check(CLI::ExistingFile);
    cmd->add_option("--distill-top-k", p.distill_top_k, "Teacher entries per position (renormalised softmax)")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    cmd->add_option("--distill-generate", p.distill_generate,
                    "Sequence-level distillation: train on N texts the teacher writes instead of on the text. Each "
                    "continues the first 8 words of a line of the training part (never the held-out part) up to --ctx "
                    "tokens, greedy or at --distill-temp, seeded by --seed")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    cmd->add_option("--distill-temp", p.distill_temp, "Temperature of the --distill-generate texts (0 = greedy)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 10.0));
#ifdef TANDEM_HAVE_COLLAB
    auto* net = "Distillation from a server";
    cmd->add_option("--distill-server", o->distill_server,
                    "HOST:PORT of a `tandem serve` whose model (same vocabulary) is the teacher: its top-k per position "
                    "is fetched over gRPC (unreachable: retried with back-off, then the run stops; --checkpoint keeps "
                    "the progress)")
        ->excludes(from)
        ->group(net);
    cmd->add_option("--token", o->token, "Bearer token for --distill-server (env TANDEM_TOKEN)")->group(net);
    cmd->add_option("--token-file", o->token_file, "File holding the bearer token ('token' or 'name token')")
        ->check(CLI::ExistingFile)
        ->group(net);
    cmd->add_option("--tls-ca", o->tls_ca, "PEM file of the CA (or self-signed certificate) to trust: use TLS")
        ->check(CLI::ExistingFile)
        ->group(net);
#endif
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
#ifdef TANDEM_HAVE_COLLAB
        tandem::collab::remote_teacher_binding remote;
        tandem_teacher remote_c{};
        if (!o->distill_server.empty()) {
            if (!o->token.empty() && !o->token_file.empty()) throw cli_error{"--token and --token-file exclude each other"};
            remote.cfg.address = o->distill_server;
            remote.cfg.token = o->token_file.empty() ? o->token : read_token_file(o->token_file);
            if (const char* env = std::getenv("TANDEM_TOKEN"); remote.cfg.token.empty() && env) remote.cfg.token = env;
            remote.cfg.tls_ca = o->tls_ca;
            remote_c = tandem::collab::c_teacher(remote);
            p.teacher = &remote_c;
        } else if (!o->token.empty() || !o->token_file.empty() || !o->tls_ca.empty()) {
            throw cli_error{"--token, --token-file and --tls-ca go with --distill-server"};
        }
#endif
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
        const tandem_status st = tandem_finetune(&p, text.data(), text.size(), progress, nullptr, &r);
        if (st != TANDEM_OK && !o->checkpoint.empty() && std::ifstream(o->checkpoint))
            std::fprintf(stderr, "\nthe last checkpoint is in %s: continue with --resume %s\n", o->checkpoint.c_str(),
                         o->checkpoint.c_str());
        check(st, "finetune");
        std::printf("trainable parameters: %lld\ntokens: %lld train, %lld validation\nsteps: %lld\n",
                    static_cast<long long>(r.n_params), static_cast<long long>(r.train_tokens),
                    static_cast<long long>(r.val_tokens), static_cast<long long>(r.steps));
        if (r.generated_tokens > 0)
            std::printf("teacher texts: %d, %lld tokens written in %.2f s\n", p.distill_generate,
                        static_cast<long long>(r.generated_tokens), r.generate_seconds);
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
