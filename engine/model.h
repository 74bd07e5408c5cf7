// A llama-architecture model loaded from GGUF onto one backend: hyper-parameters, tokenizer and weight
// tensors (views into one backend buffer holding the file's data section; zero-copy on CPU backends).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "engine/gguf.h"
#include "engine/lora.h"
#include "engine/tokenizer.h"

namespace tandem {

struct llama_hparams {
    int32_t n_vocab = 0;
    int32_t n_embd = 0;       // model width (dim)
    int32_t n_ff = 0;         // FFN hidden width
    int32_t n_layer = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;    // < n_head: grouped-query attention
    int32_t n_ctx_train = 0;  // llama.context_length
    int32_t head_dim = 0;     // n_embd / n_head
    int32_t n_rot = 0;        // llama.rope.dimension_count (default head_dim)
    float rms_eps = 1e-5f;
    float rope_base = 10000.f;

    int32_t kv_dim() const { return n_head_kv * head_dim; }
};

struct layer_weights {
    tensor attn_norm;  // f32 {n_embd}
    tensor wq;         // {n_embd, n_head * head_dim}
    tensor wk, wv;     // {n_embd, n_head_kv * head_dim}
    tensor wo;         // {n_head * head_dim, n_embd}
    tensor ffn_norm;   // f32 {n_embd}
    tensor w_gate;     // ffn_gate (llama2.c w1) {n_embd, n_ff}
    tensor w_down;     // ffn_down (w2) {n_ff, n_embd}
    tensor w_up;       // ffn_up (w3) {n_embd, n_ff}
};

class model {
   public:
    // Loads `path` onto `be` (which the model then owns). Throws tandem::error naming the problem:
    // TANDEM_ERR_IO / FORMAT for bad files, UNSUPPORTED for another architecture or a tensor type `be`
    // cannot run.
    static std::unique_ptr<model> load(const std::string& path, std::unique_ptr<backend> be);

    const llama_hparams& hparams() const { return hp_; }
    const tandem::tokenizer& tokenizer() const { return *tok_; }
    backend& be() const { return *be_; }
    const gguf_file& file() const { return file_; }

    const tensor& token_embd() const { return token_embd_; }  // {n_embd, n_vocab}
    const tensor& output_norm() const { return output_norm_; }
    const tensor& output() const { return output_; }  // {n_embd, n_vocab}; token_embd when tied
    const layer_weights& layer(int i) const { return layers_[size_t(i)]; }

    // LoRA adapters applied by every forward pass on this model (sessions, speculative decoding, batch verify,
    // the server), in the order added; several adapters add up. The model shares ownership of each. Throws
    // tandem::error: INVALID_ARGUMENT for an adapter on another backend or with another layer count or shapes
    // (adapters from lora_adapter::create/load for this model always fit), UNSUPPORTED when the backend lacks
    // an op the adapters need (f32 matmul, scale, add). Not thread-safe against forward passes in flight.
    void add_adapter(std::shared_ptr<const lora_adapter> adapter, float scale);
    void clear_adapters();
    const std::vector<lora_use>& adapters() const { return adapter_uses_; }
    // The largest rank among the applied adapters (0 without adapters): sizes the forward pass's scratch.
    int32_t max_adapter_rank() const;

   private:
    model(gguf_file f, std::unique_ptr<backend> be);
    void load_hparams();
    void load_tensors();
    // Copies the norm weights into norms_ and points their tensors there (in load_tensors).
    void copy_norms();
    // Offers every matmul weight to backend::prepare_weight (after load_tensors).
    void prepare_weights();

    gguf_file file_;
    std::unique_ptr<backend> be_;
    std::unique_ptr<tandem::tokenizer> tok_;
    llama_hparams hp_;
    std::unique_ptr<buffer> weights_;
    std::unique_ptr<buffer> norms_;  // every norm weight, out of the file's mapping
    tensor token_embd_, output_norm_, output_;
    std::vector<layer_weights> layers_;
    std::vector<std::shared_ptr<const lora_adapter>> adapters_;
    std::vector<lora_use> adapter_uses_;  // adapter_uses_[i].adapter == adapters_[i].get()
};

}  // namespace tandem
