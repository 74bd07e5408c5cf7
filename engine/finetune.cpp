// The fine-tuning loop (see finetune.h): data windows, batches, AdamW steps, validation and checkpoints.
#include "engine/finetune.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <sstream>

#include "engine/distill.h"
#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/train_graph.h"

namespace tandem {

namespace {

constexpr const char* ckpt_type = "tandem.lora_checkpoint";

// Training or validation windows: spans of at most T tokens of `ids` (a text cut every T tokens, or one window per
// generated text).
struct windows {
    std::vector<int32_t> ids;
    std::vector<std::pair<int64_t, int32_t>> spans;  // (begin, length) in ids
    int32_t T = 0;
    int64_t count() const { return int64_t(spans.size()); }
    void add_stream(std::span<const int32_t> s) {
        const int64_t at = int64_t(ids.size());
        ids.insert(ids.end(), s.begin(), s.end());
        for (int64_t b = 0; b < int64_t(s.size()); b += T)
            spans.emplace_back(at + b, int32_t(std::min<int64_t>(T, int64_t(s.size()) - b)));
    }
    void add_window(std::span<const int32_t> a, std::span<const int32_t> b) {
        spans.emplace_back(int64_t(ids.size()), int32_t(a.size() + b.size()));
        ids.insert(ids.end(), a.begin(), a.end());
        ids.insert(ids.end(), b.begin(), b.end());
    }
};

// Fills sequence slot s of b with window w (or masks the slot when w < 0): inputs BOS + the window's first
// T - 1 tokens, targets the window's tokens; rows past a short window's end are masked.
void fill_window(train_batch& b, int32_t s, const windows& ws, int64_t w, int32_t bos) {
    const int32_t T = b.n_tok;
    const int64_t begin = w < 0 ? 0 : ws.spans[size_t(w)].first;
    const int64_t len = w < 0 ? 0 : ws.spans[size_t(w)].second;
    for (int32_t t = 0; t < T; ++t) {
        const size_t r = size_t(s) * size_t(T) + size_t(t);
        b.tokens[r] = t == 0 || t > len ? bos : ws.ids[size_t(begin + t - 1)];
        const bool live = t < len;
        for (int32_t j = 0; j < b.k; ++j) {
            b.target_ids[r * size_t(b.k) + size_t(j)] = live && j == 0 ? ws.ids[size_t(begin + t)] : 0;
            b.target_p[r * size_t(b.k) + size_t(j)] = live && j == 0 ? 1.f : 0.f;
        }
    }
}

// Prompts for sequence-level distillation from the training tokens `ids` only: the first `words` words of every
// line (a newline token followed by a non-newline one; also the very start) that has that many words, re-encoded
// as a prompt is (dummy-prefix space), in a seeded order. A text without such lines falls back to every ctx-th
// position. `n` prompts, cycling through the lines when there are fewer.
std::vector<std::vector<int32_t>> distill_prompts(const model& m, std::span<const int32_t> ids, int32_t words,
                                                  int32_t ctx, int32_t n, uint64_t seed) {
    const tokenizer& tok = m.tokenizer();
    std::vector<char> newline(size_t(m.hparams().n_vocab));
    for (int32_t t = 0; t < int32_t(newline.size()); ++t)
        newline[size_t(t)] = tok.token_to_piece(-1, t).find('\n') != std::string::npos;
    // The first `words` words from position i on, within its line and within ids (the training part); "" if short.
    auto prompt_at = [&](size_t i) {
        std::string line;
        for (size_t j = i; j < ids.size() && !newline[size_t(ids[j])] && line.size() < 512; ++j)
            line += tok.token_to_piece(j == i ? tok.bos() : ids[j - 1], ids[j]);  // bos: no leading space
        std::istringstream in(line);
        std::string w, p;
        int32_t got = 0;
        while (got < words && in >> w) p += (got++ ? " " : "") + w;
        return got == words ? p : std::string();  // (at the training part's end the last word may be cut short)
    };
    std::vector<std::string> found;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (newline[size_t(ids[i])] || (i > 0 && !newline[size_t(ids[i - 1])])) continue;
        if (auto p = prompt_at(i); !p.empty()) found.push_back(std::move(p));
    }
    if (found.empty())
        for (size_t i = 0; i < ids.size(); i += size_t(ctx))
            if (auto p = prompt_at(i); !p.empty()) found.push_back(std::move(p));
    if (found.empty())
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "the training part of the text holds no line of " +
                                                     std::to_string(words) + " words to prompt the teacher with");
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 0x5851F42D4C957F2Dull);
    std::shuffle(found.begin(), found.end(), rng);
    std::vector<std::vector<int32_t>> prompts;
    for (int32_t i = 0; i < n; ++i) {
        auto p = tok.encode(found[size_t(i) % found.size()], false);
        if (int32_t(p.size()) >= ctx) p.resize(size_t(ctx - 1));  // leave room for at least one generated token
        prompts.push_back(std::move(p));
    }
    return prompts;
}

train_batch make_batch(const windows& ws, std::span<const int64_t> which, int32_t B, int32_t bos) {
    train_batch b;
    b.n_seq = B, b.n_tok = ws.T, b.k = 1;
    b.tokens.resize(size_t(b.rows()));
    b.target_ids.resize(size_t(b.rows()));
    b.target_p.resize(size_t(b.rows()));
    for (int32_t s = 0; s < B; ++s) fill_window(b, s, ws, size_t(s) < which.size() ? which[size_t(s)] : -1, bos);
    return b;
}

// Replaces b's hard targets by the teacher's top-k on the rows that have a target; other rows stay masked.
// Returns the sum of the teacher's entropies over those rows.
double teacher_targets(train_batch& b, teacher& t, int32_t k) {
    std::vector<int32_t> ids;
    std::vector<float> p;
    t.top_k(b, k, ids, p);
    const int32_t k0 = b.k;
    for (int64_t r = 0; r < b.rows(); ++r) {
        float live = 0;
        for (int32_t j = 0; j < k0; ++j) live += b.target_p[size_t(r * k0 + j)];
        if (live <= 0)
            for (int32_t j = 0; j < k; ++j) p[size_t(r * k + j)] = 0.f;
    }
    b.k = k;
    b.target_ids = std::move(ids);
    b.target_p = std::move(p);
    return target_entropy_sum(b.target_p);
}

struct eval_result {
    double nll = std::numeric_limits<double>::quiet_NaN(), kl = std::numeric_limits<double>::quiet_NaN();
};

// Mean NLL per token over every window of ws (and, with a teacher, the mean KL(teacher || student) over its top-k).
eval_result evaluate(train_graph& g, const windows& ws, int32_t B, int32_t bos, teacher* t, int32_t k) {
    eval_result out;
    if (ws.ids.empty()) return out;
    train_loss hard, soft;
    double entropy = 0;
    std::vector<int64_t> which;
    for (int64_t w0 = 0; w0 < ws.count(); w0 += B) {
        which.clear();
        for (int64_t w = w0; w < std::min<int64_t>(w0 + B, ws.count()); ++w) which.push_back(w);
        train_batch b = make_batch(ws, which, B, bos);
        const train_loss l = g.loss(b);
        hard.sum += l.sum, hard.rows += l.rows;
        if (t) {
            entropy += teacher_targets(b, *t, k);
            const train_loss s = g.loss(b);
            soft.sum += s.sum, soft.rows += s.rows;
        }
    }
    out.nll = hard.mean();
    if (t && soft.rows) out.kl = (soft.sum - entropy) / double(soft.rows);
    return out;
}

// Names of the adapter's parameters in parameters() order.
std::vector<std::string> parameter_names(const lora_adapter& a) {
    std::vector<std::string> names;
    for (int32_t l = 0; l < a.n_layer(); ++l)
        for (int32_t t = 0; t < lora_target_count; ++t)
            if (a.get(l, lora_target(t))) {
                names.push_back(lora_base_tensor_name(l, lora_target(t)) + ".lora_a");
                names.push_back(lora_base_tensor_name(l, lora_target(t)) + ".lora_b");
            }
    return names;
}

std::string targets_string(const std::vector<lora_target>& ts) {
    std::string s;
    for (auto t : ts) s += (s.empty() ? "" : ",") + std::string(lora_target_name(t));
    return s;
}

// What the training windows are made of, recorded in checkpoints (a resumed run must rebuild the same data).
std::string data_description(const finetune_config& cfg) {
    if (cfg.distill_generate <= 0) return "text";
    return "generated " + std::to_string(cfg.distill_generate) + " temp " + std::to_string(cfg.distill_temp) +
           " words " + std::to_string(cfg.distill_prompt_words) + (cfg.distill_keep_text ? " +text" : "");
}

// The training position a checkpoint records.
struct position {
    int64_t step = 0;            // global steps done
    int32_t epoch = 0;           // 0-based epoch in progress
    int64_t batch_in_epoch = 0;  // batches of that epoch done
    double val_before = std::numeric_limits<double>::quiet_NaN(), kl_before = val_before;
};

void write_checkpoint(const std::string& path, const lora_adapter& a, const adamw_optimizer& opt,
                      const finetune_config& cfg, const position& pos, int64_t n_tokens) {
    gguf_writer w;
    w.set_string("general.type", ckpt_type);
    w.set_string("adapter.type", "lora");
    w.set_f32("adapter.lora.alpha", a.alpha());
    w.set_u32("tandem.checkpoint.version", 1);
    w.set_i32("tandem.checkpoint.rank", a.rank());
    w.set_string("tandem.checkpoint.targets", targets_string(a.targets()));
    w.set_u64("tandem.checkpoint.seed", cfg.seed);  // the shuffles are a pure function of (seed, epoch)
    w.set_i32("tandem.checkpoint.ctx", cfg.ctx);
    w.set_i32("tandem.checkpoint.batch", cfg.batch);
    w.set_i64("tandem.checkpoint.data_tokens", n_tokens);
    w.set_string("tandem.checkpoint.data", data_description(cfg));
    w.set_i64("tandem.checkpoint.step", pos.step);
    w.set_i32("tandem.checkpoint.epoch", pos.epoch);
    w.set_i64("tandem.checkpoint.batch_in_epoch", pos.batch_in_epoch);
    w.set_i64("tandem.checkpoint.optimizer_steps", opt.steps());
    w.set_f64("tandem.checkpoint.val_loss_before", pos.val_before);
    w.set_f64("tandem.checkpoint.val_kl_before", pos.kl_before);
    const auto params = a.parameters();
    const auto names = parameter_names(a);
    const auto m = opt.moments(false), v = opt.moments(true);
    size_t at = 0;
    std::vector<float> host;
    for (size_t i = 0; i < params.size(); ++i) {
        const auto& p = params[i];
        const std::vector<int64_t> ne{p.ne[0], p.ne[1]};
        host.resize(size_t(p.nelements()));
        a.be().download(*p.buf, p.offset, host.data(), p.nbytes());
        w.add_tensor(names[i], dtype::f32, ne, host.data(), p.nbytes());
        w.add_tensor(names[i] + ".adam_m", dtype::f32, ne, m.data() + at, p.nbytes());
        w.add_tensor(names[i] + ".adam_v", dtype::f32, ne, v.data() + at, p.nbytes());
        at += size_t(p.nelements());
    }
    w.write(path);
}

// Restores adapter parameters, optimizer state and position from a checkpoint written for the same setup.
position read_checkpoint(const std::string& path, const model& m, const finetune_config& cfg, int64_t n_tokens,
                         std::unique_ptr<lora_adapter>& a, std::unique_ptr<adamw_optimizer>& opt) {
    const gguf_file f = gguf_file::open(path);
    const auto* type = f.find("general.type");
    if (!type || type->as_string("general.type") != ckpt_type)
        throw error(TANDEM_ERR_FORMAT, path + " is not a tandem fine-tuning checkpoint");
    auto mismatch = [&](const std::string& what, const std::string& was, const std::string& now) {
        if (was != now)
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "checkpoint " + path + " was made with " + what + " " + was + ", not " + now);
    };
    lora_config lc = cfg.lora;
    mismatch("rank", std::to_string(f.get("tandem.checkpoint.rank").as_int("rank")), std::to_string(lc.rank));
    mismatch("targets", f.get("tandem.checkpoint.targets").as_string("targets"), targets_string(lc.targets));
    mismatch("alpha", std::to_string(f.get("adapter.lora.alpha").as_float("alpha")), std::to_string(double(lc.alpha)));
    mismatch("seed", std::to_string(f.get("tandem.checkpoint.seed").as_uint("seed")), std::to_string(cfg.seed));
    mismatch("ctx", std::to_string(f.get("tandem.checkpoint.ctx").as_int("ctx")), std::to_string(cfg.ctx));
    mismatch("batch", std::to_string(f.get("tandem.checkpoint.batch").as_int("batch")), std::to_string(cfg.batch));
    mismatch("a text of tokens", std::to_string(f.get("tandem.checkpoint.data_tokens").as_int("data")),
             std::to_string(n_tokens));
    const auto* data = f.find("tandem.checkpoint.data");  // absent in checkpoints from before generated data
    mismatch("training data", data ? data->as_string("data") : "text", data_description(cfg));
    a = lora_adapter::create(m, lc, cfg.seed);
    const auto params = a->parameters();
    const auto names = parameter_names(*a);
    std::vector<float> mm, vv;
    for (size_t i = 0; i < params.size(); ++i) {
        auto load = [&](const std::string& name) {
            const auto* t = f.find_tensor(name);
            if (!t || t->type != dtype::f32 || t->nbytes != params[i].nbytes())
                throw error(TANDEM_ERR_FORMAT, "checkpoint " + path + ": tensor " + name + " is missing or mis-shaped");
            return reinterpret_cast<const float*>(f.tensor_data(*t));
        };
        const size_t n = size_t(params[i].nelements());
        a->be().upload(*params[i].buf, params[i].offset, load(names[i]), params[i].nbytes());
        const float* pm = load(names[i] + ".adam_m");
        const float* pv = load(names[i] + ".adam_v");
        mm.insert(mm.end(), pm, pm + n);
        vv.insert(vv.end(), pv, pv + n);
    }
    opt = std::make_unique<adamw_optimizer>(a->be(), params, cfg.opt);
    opt->set_state(f.get("tandem.checkpoint.optimizer_steps").as_int("optimizer_steps"), mm, vv);
    position pos;
    pos.step = f.get("tandem.checkpoint.step").as_int("step");
    pos.epoch = int32_t(f.get("tandem.checkpoint.epoch").as_int("epoch"));
    pos.batch_in_epoch = f.get("tandem.checkpoint.batch_in_epoch").as_int("batch_in_epoch");
    pos.val_before = f.get("tandem.checkpoint.val_loss_before").as_float("val_loss_before");
    pos.kl_before = f.get("tandem.checkpoint.val_kl_before").as_float("val_kl_before");
    return pos;
}

}  // namespace

namespace {

void check_config(const model& m, const finetune_config& cfg, const teacher* t) {
    auto bad = [](const std::string& what) { throw error(TANDEM_ERR_INVALID_ARGUMENT, what); };
    if (cfg.ctx < 2) bad("--ctx must be at least 2 tokens");
    if (cfg.batch < 1) bad("--batch must be at least 1");
    if (cfg.epochs < 1) bad("--epochs must be at least 1");
    if (!(cfg.val_split >= 0 && cfg.val_split < 1)) bad("--val-split must be in [0, 1)");
    if (!(cfg.opt.lr > 0)) bad("--lr must be positive");
    if (!m.adapters().empty()) bad("fine-tuning needs a model without applied adapters");
    if (t) {
        if (t->n_vocab() != m.hparams().n_vocab || t->vocab_fingerprint() != m.tokenizer().fingerprint())
            bad("the teacher's vocabulary differs from the student's; distillation needs identical vocabularies");
        if (cfg.distill_top_k < 1 || cfg.distill_top_k > std::min(m.hparams().n_vocab, top_k_max))
            bad("--distill-top-k must be in [1, " + std::to_string(std::min(m.hparams().n_vocab, top_k_max)) + "]");
    }
    if (cfg.distill_generate < 0) bad("--distill-generate must be >= 0");
    if (cfg.distill_generate > 0 && !t) bad("--distill-generate needs a teacher (--distill-from) to write the texts");
    if (!(cfg.distill_temp >= 0)) bad("--distill-temp must be >= 0");
    if (cfg.distill_prompt_words < 1) bad("distillation prompts need at least one word");
}

// The tokens before the validation split.
std::span<const int32_t> training_part(std::span<const int32_t> ids, double val_split) {
    const int64_t n = int64_t(ids.size());
    return ids.first(size_t(n - int64_t(double(n) * val_split)));
}

distill_texts make_distill_texts(const model& m, std::span<const int32_t> train_ids, const finetune_config& cfg,
                                 teacher& t) {
    distill_texts d;
    if (cfg.distill_generate <= 0) return d;
    d.prompts = distill_prompts(m, train_ids, cfg.distill_prompt_words, cfg.ctx, cfg.distill_generate, cfg.seed);
    size_t shortest = d.prompts[0].size();
    for (const auto& p : d.prompts) shortest = std::min(shortest, p.size());
    teacher_generation g;
    g.n_new = cfg.ctx - int32_t(shortest);
    g.temperature = cfg.distill_temp;
    g.seed = cfg.seed;
    g.bos = m.tokenizer().bos(), g.eos = m.tokenizer().eos();
    d.continuations = t.generate(d.prompts, g);
    for (size_t i = 0; i < d.prompts.size(); ++i)  // each text fills one window of ctx tokens
        d.continuations[i].resize(std::min(d.continuations[i].size(), size_t(cfg.ctx) - d.prompts[i].size()));
    return d;
}

}  // namespace

distill_texts generate_distill_texts(const model& m, std::string_view text, const finetune_config& cfg, teacher& t) {
    check_config(m, cfg, &t);
    const auto ids = m.tokenizer().encode(text, false);
    return make_distill_texts(m, training_part(ids, cfg.val_split), cfg, t);
}

finetune_result finetune(const model& m, std::string_view text, const finetune_config& cfg_in, teacher* t,
                         const std::function<void(const finetune_progress&)>& progress) {
    finetune_config cfg = cfg_in;
    auto bad = [](const std::string& what) { throw error(TANDEM_ERR_INVALID_ARGUMENT, what); };
    check_config(m, cfg, t);
    require_training_support(m);

    const auto ids = m.tokenizer().encode(text, false);
    const int64_t n = int64_t(ids.size());
    const auto train_part = training_part(ids, cfg.val_split);
    windows train{{}, {}, cfg.ctx}, val{{}, {}, cfg.ctx};
    val.add_stream(std::span(ids).subspan(train_part.size()));
    if (train_part.size() < 2) bad("the text is too short to train on (" + std::to_string(n) + " tokens)");
    if (cfg.val_split > 0 && val.ids.empty()) bad("the validation split holds no tokens; use more text");
    finetune_result res;
    if (cfg.distill_generate > 0) {
        const auto g0 = std::chrono::steady_clock::now();
        const distill_texts d = make_distill_texts(m, train_part, cfg, *t);
        res.generate_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count();
        for (size_t i = 0; i < d.prompts.size(); ++i) {
            train.add_window(d.prompts[i], d.continuations[i]);
            res.generated_tokens += int64_t(d.continuations[i].size());
        }
        if (cfg.distill_keep_text) train.add_stream(train_part);
    } else {
        train.add_stream(train_part);
    }
    const int32_t bos = m.tokenizer().bos();
    const int32_t B = cfg.batch;
    const int64_t per_epoch = (train.count() + B - 1) / B;
    int64_t total = per_epoch * cfg.epochs;
    if (cfg.max_steps > 0) total = std::min(total, cfg.max_steps);
    cfg.opt.total_steps = total;

    res.train_tokens = int64_t(train.ids.size());
    res.val_tokens = int64_t(val.ids.size());
    std::unique_ptr<adamw_optimizer> opt;
    position pos;
    if (!cfg.resume_path.empty()) {
        pos = read_checkpoint(cfg.resume_path, m, cfg, n, res.adapter, opt);
    } else {
        res.adapter = lora_adapter::create(m, cfg.lora, cfg.seed);
        opt = std::make_unique<adamw_optimizer>(res.adapter->be(), res.adapter->parameters(), cfg.opt);
    }
    train_graph g(m, *res.adapter);
    const int32_t k = cfg.distill_top_k;
    if (cfg.resume_path.empty()) {
        const eval_result e = evaluate(g, val, B, bos, t, k);
        pos.val_before = e.nll, pos.kl_before = e.kl;
    }
    res.val_loss_before = pos.val_before, res.val_kl_before = pos.kl_before;
    res.val_loss_after = pos.val_before, res.val_kl_after = pos.kl_before;

    double train_seconds = 0;
    const int64_t first_step = pos.step;
    std::vector<int64_t> order(size_t(train.count()));
    bool stopped = false;
    for (; pos.epoch < cfg.epochs && pos.step < total && !stopped; ++pos.epoch, pos.batch_in_epoch = 0) {
        // The epoch's shuffle depends only on (seed, epoch): a resumed run sees the same order.
        std::iota(order.begin(), order.end(), 0);
        std::mt19937_64 rng(cfg.seed * 0x9E3779B97F4A7C15ull + uint64_t(pos.epoch) + 1);
        std::shuffle(order.begin(), order.end(), rng);
        for (; pos.batch_in_epoch < per_epoch && pos.step < total; ++pos.batch_in_epoch) {
            const auto s0 = std::chrono::steady_clock::now();
            const size_t first = size_t(pos.batch_in_epoch * B);
            const auto which = std::span(order).subspan(first, std::min(order.size() - first, size_t(B)));
            train_batch b = make_batch(train, which, B, bos);
            if (t) teacher_targets(b, *t, k);
            const train_loss l = g.loss_and_grad(b);
            opt->step(g.grads());
            ++pos.step;
            res.tokens_trained += l.rows;
            res.last_loss = l.mean();
            train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count();
            if (progress) {
                finetune_progress pr;
                pr.step = pos.step, pr.total_steps = total, pr.epoch = pos.epoch + 1, pr.epochs = cfg.epochs;
                pr.loss = l.mean();
                pr.tokens_per_s = train_seconds > 0 ? double(res.tokens_trained) / train_seconds : 0;
                const double per_step = train_seconds / double(pos.step - first_step);
                pr.eta_s = per_step * double(total - pos.step);
                progress(pr);
            }
            const bool last = pos.step == total || (cfg.stop_after > 0 && pos.step >= cfg.stop_after);
            if (!cfg.checkpoint_path.empty() && cfg.checkpoint_every > 0 && pos.step % cfg.checkpoint_every == 0 &&
                !last) {
                position at = pos;
                ++at.batch_in_epoch;
                write_checkpoint(cfg.checkpoint_path, *res.adapter, *opt, cfg, at, n);
            }
            if (cfg.stop_after > 0 && pos.step >= cfg.stop_after && pos.step < total) {
                stopped = true;
                ++pos.batch_in_epoch;
                break;
            }
        }
        if (stopped) break;
        if (pos.batch_in_epoch == per_epoch || pos.step == total) {
            const eval_result e = evaluate(g, val, B, bos, t, k);
            res.val_loss_after = e.nll, res.val_kl_after = e.kl;
            if (progress) {
                finetune_progress pr;
                pr.step = pos.step, pr.total_steps = total, pr.epoch = pos.epoch + 1, pr.epochs = cfg.epochs;
                pr.epoch_end = true, pr.val_loss = e.nll, pr.val_kl = e.kl, pr.loss = res.last_loss;
                progress(pr);
            }
        }
    }
    res.steps = pos.step;
    res.seconds = train_seconds;
    if (!cfg.checkpoint_path.empty()) write_checkpoint(cfg.checkpoint_path, *res.adapter, *opt, cfg, pos, n);
    if (!cfg.out_path.empty()) res.adapter->save(cfg.out_path, m);
    return res;
}

}  // namespace tandem
