// `tandem quantize IN.gguf OUT.gguf TYPE`: quantize a model's matrices to Q8_0, Q4_0, Q4_K, Q6_K or the Q4_K_M mix.
#include <cstdio>
#include <memory>

#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {
struct quantize_options {
    std::string input, output, type;
    bool pure = false;
};
}  // namespace

action add_quantize(CLI::App& app) {
    auto o = std::make_shared<quantize_options>();
    auto* cmd = app.add_subcommand("quantize",
                                   "Quantize a GGUF llama model's weight matrices to q8_0, q4_0, q4_k, q6_k or the "
                                   "q4_k_m mix (norms stay f32).");
    cmd->footer(
        "Types: q8_0 and q4_0 use blocks of 32 weights, q4_k and q6_k (the GGUF K-quants) super-blocks of 256.\n"
        "q4_0 writes output.weight (token_embd.weight if the model has no output.weight) in q6_k when its rows are "
        "whole 256-weight super-blocks, as llama.cpp's default Q4_0 does: the output projection is the most "
        "sensitive matrix. Backends without q6_k cannot load such a file; --pure keeps every matrix in q4_0.\n"
        "q4_k_m is llama.cpp's Q4_K_M mix: q4_k, with q6_k for the output projection and for attn_v and ffn_down in "
        "the first and last eighth of the layers and every third layer between.\n"
        "A matrix whose rows are not whole blocks falls back, with a note: q4_k to q4_0 and q6_k to q8_0 when its rows "
        "are whole 32-weight blocks, anything else to f32. --pure makes every matrix TYPE and such a matrix an error.");
    cmd->add_option("input", o->input, "Input GGUF model")->required()->check(CLI::ExistingFile);
    cmd->add_option("output", o->output, "Output GGUF path")->required();
    cmd->add_option("type", o->type, "Target type: q8_0, q4_0, q4_k, q6_k or q4_k_m")
        ->required()
        ->check(CLI::IsMember({"q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m"}));
    cmd->add_flag("--pure", o->pure, "Every matrix in TYPE; a matrix that does not fit the blocks is an error");
    return [o] {
        auto bar = [](int64_t done, int64_t total, void*) { progress_bar(done, total, "tensors"); };
        check(tandem_quantize(o->input.c_str(), o->output.c_str(), o->type.c_str(), o->pure ? 1 : 0, bar, nullptr),
              "quantizing " + o->input);
        std::fprintf(stderr, "tandem: wrote %s\n", o->output.c_str());
        return 0;
    };
}

}  // namespace tandem_cli
