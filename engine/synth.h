// Random-weight llama models of real shapes (`tandem synth`), for benchmarks and tests that need a model of a
// given size but not a trained one: seeded weights scaled so activations stay finite through every layer, and
// a synthetic SentencePiece vocabulary the tokenizer loads, encodes and decodes like a real one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.h"
#include "engine/types.h"

namespace tandem {

struct synth_shape {
    std::string name;  // the named shape this is, or "" for a custom one
    int32_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_vocab = 0;
    int32_t n_ctx = 0;  // llama.context_length (the engine's default KV-cache size)
};

// The named shapes, smallest first: 260k, 15m, 42m, 110m (llama2.c's stories models) and tinyllama-1.1b.
const std::vector<synth_shape>& synth_shapes();
// One line per named shape: "110m: dim 768, 12 layers, 12 heads, 12 kv heads, ffn 2048, vocab 32000, ctx 1024".
std::string synth_shapes_text();

// The shape to build: the named shape (if `name` is not empty) with every field of `overrides` that is > 0 put in
// its place (n_head_kv follows an overridden n_head if the shape had n_head_kv == n_head and no n_head_kv is
// given); without a name, overrides must give n_embd, n_layer, n_head, n_ff and n_vocab, n_head_kv defaults
// to n_head and n_ctx to 2048. The result's name is kept only if no field changed. Throws tandem::error
// (TANDEM_ERR_INVALID_ARGUMENT) for an unknown name (the message lists the known ones), a negative field, a
// missing field or a shape synth_check_shape refuses.
synth_shape synth_resolve_shape(std::string_view name, const synth_shape& overrides);

// Throws tandem::error (TANDEM_ERR_INVALID_ARGUMENT) naming the problem unless: every field > 0 and within the
// engine's limits, n_head divides n_embd, n_head_kv divides n_head, the head size is even (rotary pairs) and
// n_vocab >= 260 (<unk>, <s>, </s>, 256 byte tokens and the word marker).
void synth_check_shape(const synth_shape& s);

// The synthetic vocabulary of n_vocab tokens (n_vocab >= 260), in the tokenizer's convention (' ' for "▁").
// It depends on n_vocab only, so synthetic models with equal vocab sizes share it (a draft and a target can
// pair). Ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), 3..258 <0x00>..<0xFF>, then normal pieces, each scored
// -(its rank): " ", the printable ASCII characters, the left-growing prefixes of " " + common English words and
// of common suffixes, then made-up letter pieces. Every multi-character piece is the concatenation of two
// earlier pieces, so byte-pair merging can reach it; all texts are distinct.
vocab synth_vocab(int32_t n_vocab);

struct synth_result {
    int64_t n_params = 0;  // elements over all tensors
    int64_t n_tensors = 0;
    int64_t n_quantized = 0;  // matrices written in the requested type
    // "name: reason, written as TYPE" for each matrix that could not take the block type (see matrix_quant_type).
    std::vector<std::string> fallbacks;
};

// Writes a GGUF llama model of shape `s` to `path` (atomically). Per-tensor types follow `tandem quantize`:
// norms are F32; every matrix (token_embd and output included) is `type`, except that a matrix whose rows are
// not whole blocks falls back by matrix_quant_type (engine/quantize_model.h: q4_k -> q4_0, q6_k -> q8_0, else
// F32; listed in the result, logged by the "synth" logger). Unlike `tandem quantize`, q4_0 keeps output.weight
// in q4_0 too, so synth q4_0 files load on backends without K-quants. Weights are a bell-shaped (Irwin-Hall, 4 terms)
// distribution with std: token_embd 1; attn_q/k/v, ffn_gate/up and output 1/sqrt(fan_in); attn_output and ffn_down
// 1/sqrt(fan_in * 2 * n_layer); norms are 1. Each row is drawn from a generator keyed by (seed, tensor name, row), so
// the file is a pure function of (shape, type, seed). Tensors are generated and converted one at a time; the file's
// tensor data is held in memory in the target type until the write (the full model is never held in F32 unless the type
// is f32). progress(done, total) is called after each tensor; the write follows the last call. Throws tandem::error:
// TANDEM_ERR_INVALID_ARGUMENT for a bad shape or a type other than f32, f16, q8_0, q4_0, q4_k, q6_k; TANDEM_ERR_IO if
// the file cannot be written.
synth_result synth_model(const synth_shape& s, dtype type, uint64_t seed, const std::string& path,
                         const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace tandem
