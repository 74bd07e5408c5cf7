// `tandem quantize IN.gguf OUT.gguf TYPE`: quantize a model's matrices to Q8_0 or Q4_0.
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
                                   "Quantize a GGUF llama model's weight matrices to q8_0 or q4_0 (norms "
                                   "stay f32; matrices whose rows are not whole 32-element blocks stay "
                                   "f32, with a note).");
    cmd->add_option("input", o->input, "Input GGUF model")->required()->check(CLI::ExistingFile);
    cmd->add_option("output", o->output, "Output GGUF path")->required();
    cmd->add_option("type", o->type, "Target type: q8_0 or q4_0")->required()->check(CLI::IsMember({"q8_0", "q4_0"}));
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
