// LoRA adapters with PEFT's semantics: an adapted projection W {K, N} computes W x + s * B (A x) with
// s = scale * alpha / rank, A {K, r} (r rows of K; ggml ne = {K, r}) and B {r, N} (ne = {r, N}) — the shapes and
// tensor names of llama.cpp's adapter GGUF ("<base tensor name>.lora_a" / ".lora_b", general.type = "adapter",
// adapter.type = "lora", adapter.lora.alpha). The base weights stay frozen (and may be quantized); A and B are f32
// tensors in one buffer on the model's backend.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace tandem {

class model;

// The projections an adapter can target, in the order parameters() lists them within a layer.
enum class lora_target : int32_t { q, k, v, o, gate, down, up };
constexpr int32_t lora_target_count = 7;
// "q", "k", "v", "o", "gate", "down", "up".
const char* lora_target_name(lora_target t);
// Parses a comma-separated list of target names (also "w1" = gate, "w2" = down, "w3" = up, "wq" ..., "all" =
// every target, "attn" = q,k,v,o, "ffn" = gate,down,up); throws tandem::error (invalid argument) naming a bad item.
std::vector<lora_target> parse_lora_targets(const std::string& list);
// The GGUF name of the base weight a target adapts in layer `layer`, e.g. "blk.3.attn_q.weight".
std::string lora_base_tensor_name(int32_t layer, lora_target t);

struct lora_config {
    int32_t rank = 8;
    float alpha = 16.f;
    std::vector<lora_target> targets{lora_target::q, lora_target::k, lora_target::v, lora_target::o};
};

// One adapted projection: a f32 {K, r}, b f32 {r, N}, views into the adapter's buffer.
struct lora_pair {
    tensor a, b;
};

class lora_adapter {
 public:
    // A fresh adapter for every layer and target of `cfg` on m's backend: A Kaiming-uniform (bound
    // sqrt(6 / ((1 + 5) * K)) = 1 / sqrt(K), as PEFT/PyTorch's kaiming_uniform_(a = sqrt(5))), drawn from `seed`;
    // B zeros. Throws tandem::error for rank < 1 or no targets.
    static std::unique_ptr<lora_adapter> create(const model& m, const lora_config& cfg, uint64_t seed);
    // Loads a llama.cpp-layout adapter GGUF for m onto m's backend (f32 or f16 tensors; f16 is widened). Throws
    // tandem::error naming the problem: not an adapter / not lora, a tensor whose base is not in m, shapes that do
    // not match the base weight, an a without its b, mixed ranks, a missing alpha (then alpha = rank, as llama.cpp).
    static std::unique_ptr<lora_adapter> load(const std::string& path, const model& m);
    // Writes the adapter (downloaded from the backend) in llama.cpp's adapter layout, f32 tensors.
    void save(const std::string& path, const model& m) const;

    int32_t rank() const { return rank_; }
    float alpha() const { return alpha_; }
    const std::vector<lora_target>& targets() const { return targets_; }
    int32_t n_layer() const { return int32_t(layers_.size()); }
    // The pair adapting target t of layer `layer`, or nullptr.
    const lora_pair* get(int32_t layer, lora_target t) const;
    // Every a and b tensor, layer by layer, targets in enum order, a before b (the optimizer's parameter order).
    std::vector<tensor> parameters() const;
    backend& be() const { return *be_; }

 private:
    lora_adapter() = default;
    friend struct lora_adapter_builder;
    backend* be_ = nullptr;
    int32_t rank_ = 0;
    float alpha_ = 0.f;
    std::vector<lora_target> targets_;
    std::vector<std::array<std::optional<lora_pair>, lora_target_count>> layers_;
    std::unique_ptr<buffer> data_;
};

// An adapter applied at inference (model::add_adapter; every forward pass on the model applies it after each
// adapted projection's base matmul): effective factor scale * alpha / rank.
struct lora_use {
    const lora_adapter* adapter = nullptr;
    float scale = 1.f;
    float factor() const;  // scale * alpha / rank
};

// The adapted base tensor a GGUF tensor name refers to: "blk.N.attn_q.weight" -> (N, q). False for any other name.
bool parse_lora_base_tensor_name(const std::string& name, int32_t* layer, lora_target* t);

// Merges adapters into a copy of the model file: W' = W + sum scale * alpha / rank * B A for every adapted tensor,
// written in the base tensor's type (re-quantized with tandem's quantizer when the base is quantized) unless
// out_type is given; every other tensor and all metadata copied unchanged. out_type may be f32, f16, q8_0, q4_0,
// q4_k or q6_k; a merged matrix whose rows are not whole blocks of its type falls back as `tandem quantize` does
// (matrix_quant_type, logged on the "lora" logger and listed in the result). The merge runs on the host in f32
// (the adapters are read with the base model on cpu_ref). progress(done, total) is called once per tensor.
// Throws tandem::error as lora_adapter::load and the GGUF reader/writer do, INVALID_ARGUMENT for no adapters.
struct export_result {
    int64_t n_merged = 0;                // base tensors that received at least one adapter's delta
    std::vector<std::string> fallbacks;  // as quantize_result::fallbacks
};
export_result export_merged(const std::string& base_path, const std::vector<std::pair<std::string, float>>& adapters,
                            const std::string& out_path, std::optional<dtype> out_type,
                            const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tandem
