// LoRA training: the backward pass against finite differences on cpu_ref, every backend against cpu_ref, AdamW
// lowering the loss, the training forward against the inference forward, checkpoint/resume, distillation targets
// and the `tandem finetune` CLI.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "backends/backend.h"
#include "engine/distill.h"
#include "engine/error.h"
#include "engine/finetune.h"
#include "engine/forward.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "engine/session.h"
#include "engine/train_graph.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

std::unique_ptr<model> load_stories(const std::string& backend) {
    return model::load(test::model_path("stories260K.gguf"), make_backend(backend));
}

bool can_train(const model& m, std::string& why) {
    try {
        require_training_support(m);
        return true;
    } catch (const error& e) {
        why = e.what();
        return false;
    }
}

std::vector<float> read(backend& be, const tensor& t) {
    std::vector<float> out(size_t(t.nelements()));
    be.download(*t.buf, t.offset, out.data(), t.nbytes());
    return out;
}

void write(backend& be, const tensor& t, const std::vector<float>& v) {
    ASSERT_EQ(v.size(), size_t(t.nelements()));
    be.upload(*t.buf, t.offset, v.data(), t.nbytes());
}

// Every parameter filled with seeded uniform values in [-bound, bound] (B nonzero, so every path carries gradient).
std::vector<std::vector<float>> randomise(lora_adapter& a, uint64_t seed, float bound) {
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_real_distribution<float> u(-bound, bound);
    std::vector<std::vector<float>> values;
    for (const auto& t : a.parameters()) {
        std::vector<float> v(size_t(t.nelements()));
        for (auto& x : v) x = u(rng);
        write(a.be(), t, v);
        values.push_back(std::move(v));
    }
    return values;
}

// n_seq random sequences of n_tok tokens with hard next-token targets; the last row of sequence 0 is masked.
train_batch random_batch(int32_t n_vocab, int32_t n_seq, int32_t n_tok, uint64_t seed) {
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_int_distribution<int32_t> tok(3, n_vocab - 1);
    train_batch b;
    b.n_seq = n_seq, b.n_tok = n_tok, b.k = 1;
    for (int64_t r = 0; r < b.rows(); ++r) {
        b.tokens.push_back(r % n_tok == 0 ? 1 : tok(rng));
        b.target_ids.push_back(tok(rng));
        b.target_p.push_back(r == n_tok - 1 ? 0.f : 1.f);
    }
    return b;
}

lora_config all_targets(int32_t rank, float alpha) {
    lora_config c;
    c.rank = rank;
    c.alpha = alpha;
    c.targets = parse_lora_targets("all");
    return c;
}

// One checked entry: the backward's gradient and the central difference of the loss.
struct grad_sample {
    size_t param, index;
    double backprop, numeric;
};

// |numeric - backprop| within tolerance for every sample (see check_gradients for the numbers).
bool gradients_agree(const std::vector<grad_sample>& s, double scale, std::string& report) {
    bool ok = true;
    for (const auto& x : s) {
        const double g = x.backprop * scale;
        const double err = std::abs(x.numeric - g);
        const double tol = 2e-4 + 1e-2 * std::abs(x.numeric);
        if (err > tol) {
            ok = false;
            report += "param " + std::to_string(x.param) + "[" + std::to_string(x.index) + "]: backprop " +
                      std::to_string(g) + ", finite difference " + std::to_string(x.numeric) + "\n";
        }
    }
    return ok;
}

// The backward pass of the whole model (every projection adapted, grouped-query attention, rope, norms, SwiGLU,
// masked rows) against central differences of the loss, on cpu_ref.
void check_gradients(const std::string& model_file) {
    auto m = model::load(model_file, make_backend("cpu_ref"));
    std::string why;
    if (!can_train(*m, why)) GTEST_SKIP() << why;
    const uint64_t seed = test::test_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    // alpha / rank = 2: a backward that forgot the scale would be off by 2x.
    auto a = lora_adapter::create(*m, all_targets(4, 8.f), seed);
    auto values = randomise(*a, seed + 1, 0.05f);
    const train_batch b = random_batch(m->hparams().n_vocab, 2, 7, seed + 2);
    train_graph g(*m, *a);
    g.loss_and_grad(b);
    const auto params = a->parameters();
    std::vector<std::vector<float>> grads;
    for (const auto& t : g.grads()) grads.push_back(read(m->be(), t));

    // Per parameter tensor: its largest-gradient entry (so relative errors are meaningful) and one random entry.
    // The loss (~6 nats per row in f32, summed in double) carries rounding noise of ~2e-6 in the mean. A central
    // difference with step h has that noise / h plus a truncation error of h^2 / 6 times the third derivative
    // (O(1) .. O(10) for a softmax loss in one weight); Richardson extrapolation (4 D(h/2) - D(h)) / 3 cancels the
    // h^2 term, leaving O(h^4), at ~1.5 x noise / h: with h = 4e-2 about 1e-4. Hence |error| <= 2e-4 + 1%. A wrong
    // backward (a missing scale, a transposed product, a dropped path, rope rotated the wrong way) is off by tens
    // of percent on the large entries.
    const float h = 4e-2f;
    std::mt19937 rng(uint32_t(seed + 3));
    std::vector<grad_sample> samples;
    for (size_t p = 0; p < params.size(); ++p) {
        size_t big = 0;
        for (size_t i = 0; i < grads[p].size(); ++i)
            if (std::abs(grads[p][i]) > std::abs(grads[p][big])) big = i;
        const size_t rnd = std::uniform_int_distribution<size_t>(0, grads[p].size() - 1)(rng);
        for (size_t i : {big, rnd}) {
            auto loss_at = [&](float delta) {
                auto v = values[p];
                v[i] = values[p][i] + delta;
                write(m->be(), params[p], v);
                return g.loss(b).mean();
            };
            const double d_h = (loss_at(h) - loss_at(-h)) / (2.0 * h);
            const double d_half = (loss_at(h / 2) - loss_at(-h / 2)) / double(h);
            write(m->be(), params[p], values[p]);
            samples.push_back({p, i, grads[p][i], (4 * d_half - d_h) / 3});
        }
    }
    std::string report;
    EXPECT_TRUE(gradients_agree(samples, 1.0, report)) << report;
    double worst_abs = 0, worst_rel = 0;
    for (const auto& s : samples) {
        worst_abs = std::max(worst_abs, std::abs(s.numeric - s.backprop));
        if (std::abs(s.numeric) > 1e-2)
            worst_rel = std::max(worst_rel, std::abs(s.numeric - s.backprop) / std::abs(s.numeric));
    }
    if (std::getenv("TANDEM_TRAIN_VERBOSE"))
        for (const auto& s : samples)
            std::printf("  p%zu[%zu] backprop %+.6e numeric %+.6e\n", s.param, s.index, s.backprop, s.numeric);
    std::printf("%zu entries checked: worst |error| %.2e, worst relative error on entries > 1e-2: %.2e\n",
                samples.size(), worst_abs, worst_rel);
    // The checked entries must be large enough for the check to mean something ...
    double largest = 0;
    for (const auto& s : samples) largest = std::max(largest, std::abs(s.numeric));
    EXPECT_GT(largest, 1e-2);
    // ... and the comparison must reject a gradient 10% off (negative control).
    std::string ignored;
    EXPECT_FALSE(gradients_agree(samples, 1.1, ignored));
}

TEST(train_graph, gradient_matches_finite_differences) { check_gradients(test::model_path("stories260K.gguf")); }

// QLoRA: the gradient flows through the dequantized Q4_0 base (matmul_t on quantized weights).
TEST(train_graph, gradient_matches_finite_differences_q4_0_base) {
    check_gradients(test::quantized_stories260k("q4_0"));
}

// Every backend that runs the training ops gives cpu_ref's loss and gradients.
TEST(train_graph, gradients_across_backends) {
    auto ref = load_stories("cpu_ref");
    std::string why;
    if (!can_train(*ref, why)) GTEST_SKIP() << why;
    const uint64_t seed = test::test_seed();
    auto a_ref = lora_adapter::create(*ref, all_targets(4, 8.f), seed);
    const auto values = randomise(*a_ref, seed + 1, 0.15f);
    const train_batch b = random_batch(ref->hparams().n_vocab, 3, 17, seed + 2);
    train_graph g_ref(*ref, *a_ref);
    const double want_loss = g_ref.loss_and_grad(b).mean();
    std::vector<std::vector<float>> want;
    for (const auto& t : g_ref.grads()) want.push_back(read(ref->be(), t));

    int checked = 0;
    for (const auto& name : backend_names()) {
        if (name == "cpu_ref") continue;
        auto be = test::try_backend(name, why);
        if (!be) {
            std::printf("[ skipped ] %s: %s\n", name.c_str(), why.c_str());
            continue;
        }
        auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
        if (!can_train(*m, why)) {
            std::printf("[ skipped ] %s: %s\n", name.c_str(), why.c_str());
            continue;
        }
        SCOPED_TRACE(name + ", seed " + std::to_string(seed));
        auto a = lora_adapter::create(*m, all_targets(4, 8.f), seed);
        const auto params = a->parameters();
        for (size_t p = 0; p < params.size(); ++p) write(m->be(), params[p], values[p]);
        train_graph g(*m, *a);
        const double got_loss = g.loss_and_grad(b).mean();
        // Same math in another summation order: the loss (~6) agrees to float rounding.
        EXPECT_NEAR(got_loss, want_loss, 1e-4);
        for (size_t p = 0; p < params.size(); ++p) {
            const auto got = read(m->be(), g.grads()[p]);
            double worst = 0, scale = 0;
            for (size_t i = 0; i < got.size(); ++i) {
                worst = std::max(worst, double(std::abs(got[i] - want[p][i])));
                scale = std::max(scale, double(std::abs(want[p][i])));
            }
            // Gradients pass through ~30 reductions of float sums; 1e-3 of the tensor's largest entry is far
            // above that rounding and far below any wrong term.
            EXPECT_LE(worst, 1e-3 * scale + 1e-7) << "parameter " << p;
        }
        ++checked;
        std::printf("%s: loss %.6f vs cpu_ref %.6f\n", name.c_str(), got_loss, want_loss);
    }
    std::printf("backends checked against cpu_ref: %d\n", checked);
}

// A handful of AdamW steps on one fixed batch lower its loss.
TEST(train_graph, adamw_steps_lower_the_loss) {
    auto m = load_stories("cpu_ref");
    std::string why;
    if (!can_train(*m, why)) GTEST_SKIP() << why;
    if (!m->be().supports(op::adamw, dtype::f32) || !m->be().supports(op::sum_sq, dtype::f32))
        GTEST_SKIP() << "cpu_ref has no adamw/sum_sq yet";
    lora_config c;  // q, k, v, o; B = 0 at the start, as in real fine-tuning
    auto a = lora_adapter::create(*m, c, test::test_seed());
    const train_batch b = random_batch(m->hparams().n_vocab, 2, 16, test::test_seed() + 5);
    train_graph g(*m, *a);
    optimizer_config oc;
    oc.lr = 1e-2f;
    oc.schedule = lr_schedule::constant;
    adamw_optimizer opt(m->be(), a->parameters(), oc);
    const double first = g.loss_and_grad(b).mean();
    double last = first;
    for (int i = 0; i < 8; ++i) {
        const double norm = opt.step(g.grads());
        EXPECT_TRUE(std::isfinite(norm));
        last = g.loss_and_grad(b).mean();
    }
    EXPECT_EQ(opt.steps(), 8);
    // Random targets: the model starts near ln(512) = 6.2 nats; 8 steps at lr 1e-2 memorise a visible part.
    EXPECT_LT(last, first - 0.05) << "loss " << first << " -> " << last;
}

// With B = 0 the training forward is the inference forward: its loss equals the cross-entropy of the inference
// logits of the same sequences.
TEST(train_graph, zero_adapter_loss_matches_inference) {
    auto m = load_stories("cpu_ref");
    std::string why;
    if (!can_train(*m, why)) GTEST_SKIP() << why;
    auto a = lora_adapter::create(*m, lora_config{}, test::test_seed());
    const int32_t S = 3, T = 11, V = m->hparams().n_vocab;
    const train_batch b = random_batch(V, S, T, test::test_seed() + 7);
    train_graph g(*m, *a);
    const train_loss got = g.loss(b);

    kv_cache cache(*m, S * T);
    forward_pass f(*m, cache);
    double want = 0;
    int64_t rows = 0;
    for (int32_t s = 0; s < S; ++s) {
        std::vector<float> logits;
        const std::span<const int32_t> seq(b.tokens.data() + s * T, size_t(T));
        f.run(causal_rows(seq, 0, s * T, true), logits);
        for (int32_t t = 0; t < T; ++t) {
            const size_t r = size_t(s * T + t);
            if (b.target_p[r] == 0) continue;
            const float* z = logits.data() + size_t(t) * size_t(V);
            double mx = z[0], sum = 0;
            for (int32_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
            for (int32_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
            want += mx + std::log(sum) - z[b.target_ids[r]];
            ++rows;
        }
    }
    EXPECT_EQ(got.rows, rows);
    // The same ops on the same backend; only the batch layout and the loss's float reduction differ.
    EXPECT_NEAR(got.mean(), want / double(rows), 2e-5);
}

// The teacher's targets line up with the student's rows: distilling a model into itself gives, per row, a KL of
// exactly -log(student mass on the teacher's top-k) (since p_j = q_j / Q there), computed here from inference logits.
TEST(train_graph, self_distillation_kl_is_the_missing_mass) {
    auto m = load_stories("cpu_ref");
    std::string why;
    if (!can_train(*m, why)) GTEST_SKIP() << why;
    auto teacher_model = load_stories("cpu_ref");
    local_teacher t(*teacher_model);
    auto a = lora_adapter::create(*m, lora_config{}, 1);
    const int32_t S = 2, T = 9, K = 16, V = m->hparams().n_vocab;
    train_batch b = random_batch(V, S, T, 11);
    std::vector<int32_t> ids;
    std::vector<float> p;
    t.top_k(b, K, ids, p);
    b.k = K, b.target_ids = ids, b.target_p = p;
    for (int j = 0; j < K; ++j) b.target_p[size_t((T - 1) * K + j)] = 0;  // mask one row
    train_graph g(*m, *a);
    const train_loss l = g.loss(b);
    ASSERT_EQ(l.rows, S * T - 1);
    const double kl = (l.sum - target_entropy_sum(b.target_p)) / double(l.rows);

    kv_cache cache(*m, S * T);
    forward_pass f(*m, cache);
    double want = 0;
    for (int32_t s = 0; s < S; ++s) {
        std::vector<float> logits;
        f.run(causal_rows(std::span<const int32_t>(b.tokens.data() + s * T, size_t(T)), 0, s * T, true), logits);
        for (int32_t r = 0; r < T; ++r) {
            if (s == 0 && r == T - 1) continue;
            const float* z = logits.data() + size_t(r) * size_t(V);
            double mx = z[0], all = 0, top = 0;
            for (int32_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
            for (int32_t v = 0; v < V; ++v) all += std::exp(double(z[v]) - mx);
            for (int32_t j = 0; j < K; ++j) top += std::exp(double(z[ids[size_t((s * T + r) * K + j)]]) - mx);
            want -= std::log(top / all);
        }
    }
    want /= double(l.rows);
    EXPECT_GT(want, 1e-3);  // the check is not vacuous: the top 16 miss some mass
    // Float logits and a float loss (~6 nats per row): agreement to ~1e-5 per row; a row off by one position
    // would be off by nats.
    EXPECT_NEAR(kl, want, 1e-4);
}

TEST(optimizer, learning_rate_schedule) {
    optimizer_config c;
    c.lr = 1.f, c.warmup_steps = 3, c.total_steps = 13, c.min_lr_ratio = 0.1f;
    EXPECT_FLOAT_EQ(learning_rate(c, 1), 0.25f);  // linear warm-up: lr * step / (warmup + 1)
    EXPECT_FLOAT_EQ(learning_rate(c, 3), 0.75f);
    EXPECT_FLOAT_EQ(learning_rate(c, 4), 1.f - 0.9f * 0.5f * (1 - std::cos(3.14159265f / 10)));
    EXPECT_FLOAT_EQ(learning_rate(c, 8), 0.55f);  // half way through the cosine: (1 + 0.1) / 2
    EXPECT_FLOAT_EQ(learning_rate(c, 13), 0.1f);
    c.schedule = lr_schedule::constant;
    EXPECT_FLOAT_EQ(learning_rate(c, 13), 1.f);
}

std::string sample_text() { return test::read_file(test::model_path("tinystories_valid_head.txt")).substr(0, 6000); }

std::vector<std::vector<float>> parameters_of(const lora_adapter& a) {
    std::vector<std::vector<float>> out;
    for (const auto& t : a.parameters()) out.push_back(read(a.be(), t));
    return out;
}

// A run interrupted at a checkpoint and resumed ends with the same parameters as an uninterrupted run.
TEST(finetune, resume_reproduces_an_uninterrupted_run) {
    auto m = load_stories("cpu_ref");
    std::string why;
    if (!can_train(*m, why) || !m->be().supports(op::adamw, dtype::f32)) GTEST_SKIP() << "cpu_ref cannot train yet";
    const auto dir = std::filesystem::temp_directory_path() / ("tandem_train_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string text = sample_text();
    finetune_config c;
    c.ctx = 24, c.batch = 3, c.epochs = 2, c.val_split = 0.2, c.seed = 9;
    c.opt.lr = 5e-3f, c.opt.warmup_steps = 2;
    c.max_steps = 9;  // crosses an epoch boundary (the text holds ~5 batches per epoch)
    const auto full = finetune(*m, text, c, nullptr);
    EXPECT_EQ(full.steps, 9);
    EXPECT_LT(full.val_loss_after, full.val_loss_before);

    finetune_config first = c;
    first.checkpoint_path = (dir / "ckpt.gguf").string();
    first.checkpoint_every = 2;
    first.stop_after = 7;
    const auto part = finetune(*m, text, first, nullptr);
    EXPECT_EQ(part.steps, 7);
    finetune_config second = c;
    second.resume_path = first.checkpoint_path;
    const auto resumed = finetune(*m, text, second, nullptr);
    EXPECT_EQ(resumed.steps, 9);
    EXPECT_EQ(resumed.val_loss_before, full.val_loss_before);
    const auto want = parameters_of(*full.adapter), got = parameters_of(*resumed.adapter);
    ASSERT_EQ(want.size(), got.size());
    for (size_t p = 0; p < want.size(); ++p) EXPECT_EQ(want[p], got[p]) << "parameter " << p;  // bit-identical
    // A checkpoint made with other options is refused by name.
    finetune_config other = second;
    other.ctx = 32;
    try {
        finetune(*m, text, other, nullptr);
        ADD_FAILURE() << "a mismatched checkpoint was accepted";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("ctx"), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(dir);
}

// A teacher that offers only top_k, so generate() runs the interface's default (no KV cache).
class top_k_only_teacher : public teacher {
 public:
    explicit top_k_only_teacher(teacher& t) : t_(t) {}
    int32_t n_vocab() const override { return t_.n_vocab(); }
    uint64_t vocab_fingerprint() const override { return t_.vocab_fingerprint(); }
    void top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) override {
        t_.top_k(b, k, ids, p);
    }

 private:
    teacher& t_;
};

// Sequence-level distillation data (--distill-generate): the texts are the teacher's own greedy continuations of
// prompts from the training part, the same with the KV-cache and the top-k-only paths, reproducible from the seed,
// and no prompt ever comes from the held-out tail.
TEST(finetune, distill_generate_texts_come_from_the_teacher_and_the_training_part) {
    auto student = model::load(test::model_path("llama2xs_tinystories_279K.gguf"), make_backend("cpu_ref"));
    auto teacher_model = load_stories("cpu_ref");  // cpu_ref: a row's logits do not depend on the batch around it
    local_teacher t(*teacher_model);
    const tokenizer& tok = student->tokenizer();
    // The held-out tail: lines that start with a word the training part never holds.
    std::string tail;
    for (int i = 0; i < 12; ++i) tail += "Xylophones played a happy song for the little dog number " + std::to_string(i) + ".\n";
    const std::string head = sample_text().substr(0, 2500);
    const std::string text = head + "\n" + tail;
    finetune_config c;
    c.ctx = 20, c.seed = 5, c.distill_generate = 4;
    const int64_t n = int64_t(tok.encode(text, false).size());
    c.val_split = double(tok.encode(tail, false).size() + 2) / double(n);  // the tail and a little more held out

    const distill_texts d = generate_distill_texts(*student, text, c, t);
    ASSERT_EQ(d.prompts.size(), 4u);
    ASSERT_EQ(d.continuations.size(), 4u);
    for (size_t i = 0; i < d.prompts.size(); ++i) {
        const std::string prompt = tok.decode(d.prompts[i]);
        EXPECT_NE(head.find(prompt), std::string::npos) << prompt;  // a line's first 8 words, from the head
        EXPECT_EQ(std::count(prompt.begin(), prompt.end(), ' '), 7) << prompt;
        ASSERT_FALSE(d.continuations[i].empty());
        EXPECT_LE(d.prompts[i].size() + d.continuations[i].size(), size_t(c.ctx));
        // The teacher's greedy decoding after BOS + prompt, token for token (until the window is full or it ends
        // the story).
        sampling_params greedy;
        greedy.temperature = 0;
        session s(*teacher_model, greedy, 64);
        std::vector<int32_t> fed{tok.bos()};
        fed.insert(fed.end(), d.prompts[i].begin(), d.prompts[i].end());
        s.feed(fed);
        for (size_t j = 0; j < d.continuations[i].size(); ++j) EXPECT_EQ(s.step(), d.continuations[i][j]) << i << "," << j;
        if (d.prompts[i].size() + d.continuations[i].size() < size_t(c.ctx)) {
            const int32_t next = s.step();
            EXPECT_TRUE(next == tok.bos() || next == tok.eos()) << next;
        }
    }
    EXPECT_NE(d.prompts[0], d.prompts[1]);  // distinct lines while there are enough

    // Reproducible, and the same without the KV cache; sampled texts follow the seed.
    EXPECT_EQ(generate_distill_texts(*student, text, c, t).continuations, d.continuations);
    top_k_only_teacher slow(t);
    finetune_config hot = c;
    hot.distill_temp = 0.9f;
    const auto a = generate_distill_texts(*student, text, hot, t);
    EXPECT_EQ(generate_distill_texts(*student, text, hot, slow).continuations, a.continuations);
    EXPECT_EQ(generate_distill_texts(*student, text, c, slow).continuations, d.continuations);
    EXPECT_NE(a.continuations, d.continuations);
    hot.seed = 6;
    EXPECT_NE(generate_distill_texts(*student, text, hot, t).continuations, a.continuations);

    // More texts than training lines: every line is used (so a held-out line would show), none from the tail.
    finetune_config many = c;
    many.ctx = 12, many.distill_generate = 80;
    std::set<std::vector<int32_t>> lines;
    for (const auto& p : generate_distill_texts(*student, text, many, t).prompts) {
        EXPECT_EQ(tok.decode(p).find("Xylophones"), std::string::npos);
        lines.insert(p);
    }
    EXPECT_GT(lines.size(), 8u);
    EXPECT_LT(lines.size(), 80u);  // the head has fewer lines than that: prompts were reused

    // finetune() trains on exactly those texts; a teacher is required.
    std::string why;
    if (!can_train(*student, why)) GTEST_SKIP() << why;
    c.batch = 2, c.max_steps = 1;
    const auto r = finetune(*student, text, c, &t);
    int64_t written = 0, window_tokens = 0;
    for (size_t i = 0; i < d.prompts.size(); ++i) {
        written += int64_t(d.continuations[i].size());
        window_tokens += int64_t(d.prompts[i].size() + d.continuations[i].size());
    }
    EXPECT_EQ(r.generated_tokens, written);
    EXPECT_EQ(r.train_tokens, window_tokens);
    EXPECT_THROW(finetune(*student, text, c, nullptr), error);
}

using tandem::test::run_cli;

// `tandem finetune` for a few steps writes an adapter our loader reads back.
TEST(finetune, cli_writes_a_loadable_adapter) {
    auto m = load_stories("cpu");
    std::string why;
    if (!can_train(*m, why)) GTEST_SKIP() << why;
    const auto dir = std::filesystem::temp_directory_path() / ("tandem_train_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string out = (dir / "adapter.gguf").string();
    const auto [code, log] = run_cli("finetune -m " + test::model_path("stories260K.gguf") + " -f " +
                                     test::model_path("tinystories_valid_head.txt") + " --chars 8000 -o " + out +
                                     " --ctx 32 --batch 2 --max-steps 3 --rank 4 --targets q,v -b cpu -t 2");
    ASSERT_EQ(code, 0) << log;
    EXPECT_NE(log.find("validation loss"), std::string::npos) << log;
    auto a = lora_adapter::load(out, *m);
    EXPECT_EQ(a->rank(), 4);
    EXPECT_EQ(a->targets().size(), 2u);
    EXPECT_NE(a->get(0, lora_target::q), nullptr);
    EXPECT_EQ(a->get(0, lora_target::k), nullptr);
    // Distillation from a teacher with the same vocabulary reports the KL to it.
    const auto [dcode, dlog] = run_cli("finetune -m " + test::model_path("stories260K.gguf") + " -f " +
                                       test::model_path("tinystories_valid_head.txt") + " --chars 6000 -o " + out +
                                       " --ctx 32 --batch 2 --max-steps 2 --distill-from " +
                                       test::model_path("llama2xs_tinystories_279K.gguf") + " -b cpu -t 2");
    ASSERT_EQ(dcode, 0) << dlog;
    EXPECT_NE(dlog.find("validation KL to teacher"), std::string::npos) << dlog;
    const auto [hcode, help] = run_cli("finetune --help");
    EXPECT_EQ(hcode, 0);
    for (const char* opt : {"--rank", "--alpha", "--targets", "--lr", "--epochs", "--ctx", "--batch", "--backend",
                            "--val-split", "--checkpoint", "--resume", "--distill-from", "--distill-top-k",
                            "--distill-generate", "--distill-temp"})
        EXPECT_NE(help.find(opt), std::string::npos) << opt;
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem
