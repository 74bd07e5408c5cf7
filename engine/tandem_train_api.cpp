// The C boundary of fine-tuning (engine/tandem_train.h): loads the model (and teacher) on the requested backend,
// or wraps an embedder's teacher callbacks, runs engine/finetune.cpp, and turns exceptions into a status plus
// tandem_last_error().
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "engine/distill.h"
#include "engine/error.h"
#include "engine/finetune.h"
#include "engine/model.h"
#include "engine/tandem_train.h"

namespace tandem {
void set_last_error(const std::string& message);  // engine/tandem_api.cpp
}

namespace {

tandem_status train_guarded(const auto& f) {
    try {
        tandem::set_last_error("");
        f();
        return TANDEM_OK;
    } catch (const tandem::error& e) {
        tandem::set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc&) {
        tandem::set_last_error("out of memory");
        return TANDEM_ERR_BACKEND;
    } catch (const std::exception& e) {
        tandem::set_last_error(std::string("internal error: ") + e.what());
        return TANDEM_ERR_INTERNAL;
    }
}

// A tandem_teacher's callbacks behind the engine's teacher interface. bind() is called by the constructor; its
// success means the teacher serves the student's vocabulary, which n_vocab() / vocab_fingerprint() then report.
// Replies are validated here, since a bad id would index past the vocabulary in the loss.
class callback_teacher final : public tandem::teacher {
   public:
    callback_teacher(const tandem_teacher& t, const tandem::model& student)
        : t_(t), n_vocab_(student.hparams().n_vocab), fingerprint_(student.tokenizer().fingerprint()) {
        if (!t_.top_k) throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "tandem_teacher: top_k is NULL");
        if (t_.bind) check(t_.bind(t_.user, n_vocab_, fingerprint_, msg_, sizeof msg_), "binding the teacher");
    }
    int32_t n_vocab() const override { return n_vocab_; }
    uint64_t vocab_fingerprint() const override { return fingerprint_; }
    void top_k(const tandem::train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) override {
        ids.assign(size_t(b.rows()) * size_t(k), 0);
        p.assign(size_t(b.rows()) * size_t(k), 0.f);
        check(t_.top_k(t_.user, b.tokens.data(), b.n_seq, b.n_tok, k, ids.data(), p.data(), msg_, sizeof msg_),
              "the teacher's top-k");
        for (size_t i = 0; i < ids.size(); ++i) {
            if (ids[i] < 0 || ids[i] >= n_vocab_ || !(p[i] >= 0.f && p[i] <= 1.f)) {
                throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "the teacher returned an invalid entry (token " +
                                                                     std::to_string(ids[i]) + ", probability " +
                                                                     std::to_string(p[i]) + ")");
            }
        }
    }

   private:
    void check(tandem_status st, const char* what) {
        if (st == TANDEM_OK) return;
        msg_[sizeof msg_ - 1] = 0;
        throw tandem::error(st, msg_[0] ? std::string(msg_) : std::string(what) + " failed (status " +
                                                                  std::to_string(int(st)) + ")");
    }
    tandem_teacher t_;
    int32_t n_vocab_;
    uint64_t fingerprint_;
    char msg_[1024] = {};
};

std::unique_ptr<tandem::model> load(const char* path, const char* backend, int threads) {
    auto be = tandem::make_backend(backend && *backend ? backend : "cpu");
    if (threads > 0) be->set_threads(threads);
    return tandem::model::load(path, std::move(be));
}

}  // namespace

extern "C" {

tandem_finetune_params tandem_finetune_default_params(void) {
    tandem_finetune_params p{};
    p.rank = 8;
    p.alpha = 16.f;
    p.lr = 1e-3f;
    p.max_grad_norm = 1.f;
    p.epochs = 1;
    p.ctx = 128;
    p.batch = 8;
    p.val_split = 0.1f;
    p.seed = 42;
    p.distill_top_k = 16;
    return p;
}

tandem_status tandem_finetune(const tandem_finetune_params* params, const char* text, size_t len,
                              tandem_finetune_progress_fn progress, void* user, tandem_finetune_result* out) {
    return train_guarded([&] {
        if (!params || !params->model_path || (!text && len) || !out)
            throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "tandem_finetune: null argument");
        const auto& p = *params;
        tandem::finetune_config c;
        c.lora.rank = p.rank;
        c.lora.alpha = p.alpha;
        if (p.targets && *p.targets) c.lora.targets = tandem::parse_lora_targets(p.targets);
        c.seed = p.seed;
        c.ctx = p.ctx;
        c.batch = p.batch;
        c.epochs = p.epochs;
        c.val_split = p.val_split;
        c.opt.lr = p.lr;
        c.opt.weight_decay = p.weight_decay;
        c.opt.max_grad_norm = p.max_grad_norm;
        c.opt.warmup_steps = p.warmup_steps;
        const std::string sched = p.schedule ? p.schedule : "cosine";
        if (sched == "constant")
            c.opt.schedule = tandem::lr_schedule::constant;
        else if (sched != "cosine")
            throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "unknown lr schedule '" + sched + "' (cosine, constant)");
        c.max_steps = p.max_steps;
        c.out_path = p.out_path ? p.out_path : "";
        c.checkpoint_path = p.checkpoint_path ? p.checkpoint_path : "";
        c.checkpoint_every = p.checkpoint_every;
        c.resume_path = p.resume_path ? p.resume_path : "";
        c.distill_top_k = p.distill_top_k;
        c.distill_generate = p.distill_generate;
        c.distill_temp = p.distill_temp;

        const auto m = load(p.model_path, p.backend, p.n_threads);
        std::unique_ptr<tandem::model> teacher_model;
        std::unique_ptr<tandem::teacher> teacher;
        const bool from_file = p.distill_from && *p.distill_from;
        if (from_file && p.teacher)
            throw tandem::error(TANDEM_ERR_INVALID_ARGUMENT, "distill_from and teacher are mutually exclusive");
        if (p.teacher) teacher = std::make_unique<callback_teacher>(*p.teacher, *m);
        if (from_file) {
            teacher_model = load(p.distill_from, p.backend, p.n_threads);
            teacher = std::make_unique<tandem::local_teacher>(*teacher_model);
        }
        auto on_progress = [&](const tandem::finetune_progress& pr) {
            if (!progress) return;
            tandem_finetune_progress c_pr{pr.step,     pr.total_steps,  pr.epoch, pr.epochs,
                                          pr.loss,     pr.tokens_per_s, pr.eta_s, pr.epoch_end ? 1 : 0,
                                          pr.val_loss, pr.val_kl};
            progress(&c_pr, user);
        };
        const auto r = tandem::finetune(*m, std::string_view(text ? text : "", len), c, teacher.get(), on_progress);
        int64_t n_params = 0;
        for (const auto& t : r.adapter->parameters()) n_params += t.nelements();
        *out = tandem_finetune_result{r.val_loss_before, r.val_loss_after,
                                      r.val_kl_before,   r.val_kl_after,
                                      r.steps,           r.train_tokens,
                                      r.val_tokens,      r.tokens_trained,
                                      r.seconds,         r.seconds > 0 ? double(r.tokens_trained) / r.seconds : 0,
                                      r.last_loss,       n_params,
                                      r.generated_tokens, r.generate_seconds};
    });
}

}  // extern "C"
