// Loading a llama GGUF: read and check hyper-parameters, then check every tensor's name, shape and type
// before exposing it, so a wrong or hostile file is refused with the tensor's name instead of misread.
#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "engine/error.h"

namespace tandem {

namespace {

int32_t get_i32(const gguf_file& f, const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
    const gguf_value* v = f.find(key);
    if (!v) {
        if (fallback) return int32_t(*fallback);
        throw error(TANDEM_ERR_FORMAT, f.path() + ": missing metadata key '" + key + "'");
    }
    const int64_t x = v->as_int(key);
    if (x <= 0 || x > (int64_t(1) << 30)) {
        throw error(TANDEM_ERR_FORMAT, f.path() + ": metadata '" + key + "' = " + std::to_string(x) + " is out of range");
    }
    return int32_t(x);
}

std::string shape_str(const std::vector<int64_t>& ne) {
    std::ostringstream s;
    s << "{";
    for (size_t i = 0; i < ne.size(); ++i) s << (i ? ", " : "") << ne[i];
    s << "}";
    return s.str();
}

}  // namespace

model::model(gguf_file f, std::unique_ptr<backend> be) : file_(std::move(f)), be_(std::move(be)) {}

std::unique_ptr<model> model::load(const std::string& path, std::unique_ptr<backend> be) {
    TANDEM_ASSERT(be);
    std::unique_ptr<model> m(new model(gguf_file::open(path), std::move(be)));
    m->load_hparams();
    m->tok_ = std::make_unique<tandem::tokenizer>(tokenizer::from_gguf(m->file_));
    if (m->tok_->n_vocab() != m->hp_.n_vocab) {
        throw error(TANDEM_ERR_FORMAT, path + ": tokenizer has " + std::to_string(m->tok_->n_vocab()) +
                                           " tokens but token_embd.weight has " + std::to_string(m->hp_.n_vocab) +
                                           " rows");
    }
    m->load_tensors();
    return m;
}

void model::load_hparams() {
    const auto& f = file_;
    const std::string arch = f.get("general.architecture").as_string("general.architecture");
    if (arch != "llama") {
        throw error(TANDEM_ERR_UNSUPPORTED, f.path() + ": architecture '" + arch + "' is not supported (only 'llama')");
    }
    hp_.n_ctx_train = get_i32(f, "llama.context_length", 2048);
    hp_.n_embd = get_i32(f, "llama.embedding_length");
    hp_.n_ff = get_i32(f, "llama.feed_forward_length");
    hp_.n_layer = get_i32(f, "llama.block_count");
    hp_.n_head = get_i32(f, "llama.attention.head_count");
    hp_.n_head_kv = get_i32(f, "llama.attention.head_count_kv", hp_.n_head);
    if (hp_.n_embd % hp_.n_head != 0 || hp_.n_head % hp_.n_head_kv != 0) {
        throw error(TANDEM_ERR_FORMAT, f.path() + ": embedding length " + std::to_string(hp_.n_embd) + ", " +
                                           std::to_string(hp_.n_head) + " heads and " + std::to_string(hp_.n_head_kv) +
                                           " kv heads are inconsistent");
    }
    hp_.head_dim = hp_.n_embd / hp_.n_head;
    hp_.n_rot = get_i32(f, "llama.rope.dimension_count", hp_.head_dim);
    if (hp_.n_rot > hp_.head_dim || hp_.n_rot % 2 != 0) {
        throw error(TANDEM_ERR_FORMAT, f.path() + ": rope dimension count " + std::to_string(hp_.n_rot) +
                                           " does not fit head size " + std::to_string(hp_.head_dim));
    }
    if (auto v = f.find("llama.attention.layer_norm_rms_epsilon")) hp_.rms_eps = float(v->as_float("rms epsilon"));
    if (auto v = f.find("llama.rope.freq_base")) hp_.rope_base = float(v->as_float("llama.rope.freq_base"));
    if (!(hp_.rms_eps > 0.f) || !(hp_.rope_base > 0.f)) {
        throw error(TANDEM_ERR_FORMAT, f.path() + ": rms epsilon and rope base must be positive");
    }
    const gguf_tensor_info* emb = f.find_tensor("token_embd.weight");
    if (!emb) throw error(TANDEM_ERR_FORMAT, f.path() + ": missing tensor 'token_embd.weight'");
    if (emb->ne.size() != 2 || emb->ne[0] != hp_.n_embd) {
        throw error(TANDEM_ERR_FORMAT, f.path() + ": tensor 'token_embd.weight' has shape " + shape_str(emb->ne) +
                                           ", expected {" + std::to_string(hp_.n_embd) + ", n_vocab}");
    }
    hp_.n_vocab = int32_t(emb->ne[1]);
}

void model::load_tensors() {
    weights_ = be_->wrap_host(file_.data_section(), file_.data_section_size());
    // Looks a tensor up, checks shape and type, and returns a view into the weights buffer.
    auto get = [&](const std::string& name, std::vector<int64_t> want, bool matrix) -> tensor {
        const gguf_tensor_info* t = file_.find_tensor(name);
        if (!t) throw error(TANDEM_ERR_FORMAT, file_.path() + ": missing tensor '" + name + "'");
        if (t->ne != want) {
            throw error(TANDEM_ERR_FORMAT, file_.path() + ": tensor '" + name + "' has shape " + shape_str(t->ne) +
                                               ", expected " + shape_str(want));
        }
        const bool ok = matrix ? be_->supports(op::matmul, t->type) && be_->supports(op::get_rows, t->type)
                               : t->type == dtype::f32;
        if (!ok) {
            throw error(TANDEM_ERR_UNSUPPORTED,
                        file_.path() + ": tensor '" + name + "' has type " + std::string(dtype_name(t->type)) +
                            (matrix ? ", which backend '" + be_->name() + "' cannot multiply yet"
                                    : "; norm weights must be f32"));
        }
        tensor v;
        v.buf = weights_.get();
        v.offset = size_t(t->offset);
        v.type = t->type;
        for (size_t i = 0; i < t->ne.size(); ++i) v.ne[i] = t->ne[i];
        return v;
    };
    const int64_t e = hp_.n_embd, qd = int64_t(hp_.n_head) * hp_.head_dim, kvd = hp_.kv_dim(), ff = hp_.n_ff;
    token_embd_ = get("token_embd.weight", {e, hp_.n_vocab}, true);
    output_norm_ = get("output_norm.weight", {e}, false);
    output_ = file_.find_tensor("output.weight") ? get("output.weight", {e, hp_.n_vocab}, true) : token_embd_;
    layers_.resize(size_t(hp_.n_layer));
    for (int i = 0; i < hp_.n_layer; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".";
        auto& l = layers_[size_t(i)];
        l.attn_norm = get(p + "attn_norm.weight", {e}, false);
        l.wq = get(p + "attn_q.weight", {e, qd}, true);
        l.wk = get(p + "attn_k.weight", {e, kvd}, true);
        l.wv = get(p + "attn_v.weight", {e, kvd}, true);
        l.wo = get(p + "attn_output.weight", {qd, e}, true);
        l.ffn_norm = get(p + "ffn_norm.weight", {e}, false);
        l.w_gate = get(p + "ffn_gate.weight", {e, ff}, true);
        l.w_down = get(p + "ffn_down.weight", {ff, e}, true);
        l.w_up = get(p + "ffn_up.weight", {e, ff}, true);
    }
    copy_norms();
    prepare_weights();
}

void model::copy_norms() {
    // The norm weights move out of the file's mapping into one buffer of the backend's own. A CPU backend reads
    // them where they lie, and there they sat on 4 KiB pages of a 600 MB mapping between the matrices, whose
    // stream evicts those pages' translations every pass: 9-row verification passes of the 1.1B shape on the
    // Intel VM, the norms' two places alternated pass by pass in one process, 43.8-44.9 -> 41.6-42.8 ms median.
    std::vector<tensor*> norms = {&output_norm_};
    for (auto& l : layers_) norms.insert(norms.end(), {&l.attn_norm, &l.ffn_norm});
    size_t bytes = 0;
    for (const tensor* t : norms) bytes += (t->nbytes() + 255) / 256 * 256;
    norms_ = be_->alloc(bytes);
    size_t at = 0;
    for (tensor* t : norms) {
        be_->upload(*norms_, at, file_.data_section() + t->offset, t->nbytes());
        t->buf = norms_.get();
        t->offset = at;
        at += (t->nbytes() + 255) / 256 * 256;
    }
}

void model::prepare_weights() {
    // TANDEM_PREPARE_WEIGHTS=0 keeps every weight in the file's layout (for comparisons and debugging).
    if (const char* env = std::getenv("TANDEM_PREPARE_WEIGHTS"); env != nullptr && std::string(env) == "0") return;
    std::vector<const tensor*> ws = {&output_};
    for (const auto& l : layers_) {
        for (const tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_down, &l.w_up}) ws.push_back(t);
    }
    for (const tensor* t : ws) {
        // The backend's own copy replaces the file's bytes for matmul: let the OS drop those pages (read back from
        // the file if get_rows or a backward pass touches them), so memory does not double.
        if (be_->prepare_weight(*t)) file_.release_pages(file_.data_section() + t->offset, t->nbytes());
    }
}

void model::add_adapter(std::shared_ptr<const lora_adapter> adapter, float scale) {
    TANDEM_ASSERT(adapter);
    if (&adapter->be() != be_.get()) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA adapter lives on another backend instance than the model");
    }
    if (!std::isfinite(scale)) throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA scale must be finite");
    if (adapter->n_layer() != hp_.n_layer) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA adapter has " + std::to_string(adapter->n_layer()) +
                                                     " layers, the model " + std::to_string(hp_.n_layer));
    }
    for (op o : {op::matmul, op::scale, op::add}) {
        if (!be_->supports(o, dtype::f32)) {
            throw error(TANDEM_ERR_UNSUPPORTED, "backend '" + be_->name() + "' cannot apply LoRA adapters yet: op " +
                                                    op_name(o) + " (f32) is not supported");
        }
    }
    const int64_t r = adapter->rank();
    for (int32_t l = 0; l < hp_.n_layer; ++l) {
        const auto& w = layers_[size_t(l)];
        const tensor* base[lora_target_count] = {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_down, &w.w_up};
        for (int32_t t = 0; t < lora_target_count; ++t) {
            const lora_pair* p = adapter->get(l, lora_target(t));
            if (!p) continue;
            const int64_t K = base[t]->ne[0], N = base[t]->ne[1];
            if (p->a.ne != std::array<int64_t, 4>{K, r, 1, 1} || p->b.ne != std::array<int64_t, 4>{r, N, 1, 1} ||
                p->a.type != dtype::f32 || p->b.type != dtype::f32) {
                throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA adapter does not fit the model at '" +
                                                             lora_base_tensor_name(l, lora_target(t)) + "'");
            }
        }
    }
    adapters_.push_back(std::move(adapter));
    adapter_uses_.push_back(lora_use{adapters_.back().get(), scale});
}

void model::clear_adapters() {
    adapter_uses_.clear();
    adapters_.clear();
}

int32_t model::max_adapter_rank() const {
    int32_t r = 0;
    for (const auto& u : adapter_uses_) r = std::max(r, u.adapter->rank());
    return r;
}

}  // namespace tandem
