// `tandem synth`: write a random-weight llama model of a real shape (named, or given size by size) with a
// synthetic vocabulary, for benchmarks that need a model of a given size rather than a trained one.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {
struct synth_options {
    std::string shape, type, output;
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0, ctx = 0;
    uint64_t seed = 42;
};
}  // namespace

action add_synth(CLI::App& app) {
    auto o = std::make_shared<synth_options>();
    auto* cmd = app.add_subcommand("synth",
                                   "Write a random-weight llama GGUF model of a named or custom shape, with a "
                                   "synthetic vocabulary, for benchmarks.");
    cmd->footer(
        "Give a named shape (--shape) or every size of a custom one (--dim, --layers, --heads, --ffn, --vocab); "
        "with --shape, the size options override single fields.\n\nNamed shapes:\n" +
        std::string(tandem_synth_shapes()) +
        "\nThe weights are seeded (the file is a pure function of shape, type and seed) and scaled so activations "
        "stay finite through every layer; the model's output is not meaningful text. The vocabulary is synthetic "
        "but valid (<unk>, <s>, </s>, 256 byte tokens, then word pieces, some made up), so prompts encode and "
        "decode; it depends on --vocab only, so two synth models of equal vocab can pair for speculative decoding "
        "(with about zero acceptance: the weights are unrelated).\n\nPer-tensor types: norms stay f32 and every "
        "matrix is TYPE, output.weight included (`tandem quantize` q4_0 would write it in q6_k); a matrix whose rows "
        "are not whole blocks (32 elements, 256 for q4_k/q6_k) falls back as in `tandem quantize` (q4_k to q4_0, q6_k "
        "to q8_0, else f32), with a note. Tensor data is held in memory in TYPE until the file is written "
        "(tinyllama-1.1b: about 0.6 GB in "
        "q4_0, 4.4 GB in f32).");
    cmd->add_option("--shape", o->shape, "Named shape (listed below)");
    cmd->add_option("--dim", o->dim, "Model width (embedding length); heads must divide it")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--layers", o->layers, "Number of transformer blocks")->check(CLI::PositiveNumber);
    cmd->add_option("--heads", o->heads, "Attention (query) heads; dim / heads must be even")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--kv-heads", o->kv_heads,
                    "Key/value heads for grouped-query attention (default: the shape's; --heads if the shape has as "
                    "many kv heads as heads, or for a custom shape)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--ffn", o->ffn, "Feed-forward hidden width")->check(CLI::PositiveNumber);
    cmd->add_option("--vocab", o->vocab, "Vocabulary size, at least 260")->check(CLI::PositiveNumber);
    cmd->add_option("--ctx", o->ctx,
                    "Context length written to the file, the default KV size (default: the "
                    "shape's, 2048 for a custom shape)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("-t,--type", o->type, "Weight type: f32, f16, q8_0, q4_0, q4_k or q6_k")
        ->required()
        ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"}));
    cmd->add_option("-o,--output", o->output, "Output GGUF path (written atomically)")->required();
    cmd->add_option("--seed", o->seed, "Seed of the weights")->capture_default_str();
    return [o] {
        if (o->shape.empty()) {
            std::string missing;
            const std::pair<const char*, int> need[] = {{"--dim", o->dim},
                                                        {"--layers", o->layers},
                                                        {"--heads", o->heads},
                                                        {"--ffn", o->ffn},
                                                        {"--vocab", o->vocab}};
            for (const auto& [flag, v] : need)
                if (v == 0) missing += std::string(missing.empty() ? "" : ", ") + flag;
            if (!missing.empty()) {
                throw cli_error{"give --shape NAME or every size of a custom shape (missing: " + missing +
                                "); named shapes:\n" + tandem_synth_shapes()};
            }
        }
        tandem_synth_params p{};
        p.shape = o->shape.c_str();
        p.n_embd = o->dim;
        p.n_layer = o->layers;
        p.n_head = o->heads;
        p.n_head_kv = o->kv_heads;
        p.n_ff = o->ffn;
        p.n_vocab = o->vocab;
        p.n_ctx = o->ctx;
        p.type = o->type.c_str();
        p.seed = o->seed;
        auto bar = [](int64_t done, int64_t total, void* out) {
            progress_bar(done, total, "tensors");
            if (done == total) std::fprintf(stderr, "tandem: writing %s\n", static_cast<const char*>(out));
        };
        const auto t0 = std::chrono::steady_clock::now();
        check(tandem_synth(&p, o->output.c_str(), bar, const_cast<char*>(o->output.c_str())),
              "synthesizing " + o->output);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::error_code ec;
        const auto bytes = std::filesystem::file_size(o->output, ec);
        std::fprintf(stderr, "tandem: wrote %s (%.1f MiB) in %.1f s\n", o->output.c_str(),
                     ec ? 0.0 : double(bytes) / (1024.0 * 1024.0), secs);
        return 0;
    };
}

}  // namespace tandem_cli
