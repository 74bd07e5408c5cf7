// `tandem convert`: llama2.c checkpoint + tokenizer -> GGUF v3.
#include <cstdio>
#include <memory>

#include "tools/tandem/cli.h"

namespace tandem_cli {

namespace {
struct convert_options {
    std::string checkpoint, tokenizer, output, name = "llama2c";
};
}  // namespace

action add_convert(CLI::App& app) {
    auto o = std::make_shared<convert_options>();
    auto* cmd = app.add_subcommand("convert", "Convert a llama2.c checkpoint (.bin) and its tokenizer (.bin) into a "
                                              "GGUF v3 llama model (all F32, tokenizer embedded, tied output copied).");
    cmd->add_option("checkpoint", o->checkpoint, "llama2.c model checkpoint")->required()->check(CLI::ExistingFile);
    cmd->add_option("tokenizer", o->tokenizer, "llama2.c tokenizer file (e.g. tok512.bin)")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("-o,--output", o->output, "Output GGUF path")->required();
    cmd->add_option("--name", o->name, "general.name written into the file")->capture_default_str();
    return [o] {
        check(tandem_convert_llama2c(o->checkpoint.c_str(), o->tokenizer.c_str(), o->output.c_str(), o->name.c_str()),
              "converting " + o->checkpoint);
        std::fprintf(stderr, "tandem: wrote %s\n", o->output.c_str());
        return 0;
    };
}

}  // namespace tandem_cli
