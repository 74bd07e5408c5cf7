// `tandem export-lora`: merge LoRA adapters into a new GGUF model; also the --lora FILE[:SCALE] parsing shared by
// generate and perplexity.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "tools/tandem/cli.h"

namespace tandem_cli {

lora_spec parse_lora_spec(const std::string& arg) {
    lora_spec s{arg, 1.f};
    const size_t colon = arg.rfind(':');
    if (colon == std::string::npos || colon == 0) return s;
    const std::string tail = arg.substr(colon + 1);
    if (tail.empty()) throw cli_error{"--lora " + arg + ": empty scale after ':'"};
    char* end = nullptr;
    errno = 0;
    const float v = std::strtof(tail.c_str(), &end);
    if (end != tail.c_str() + tail.size()) return s;  // not a number: the ':' belongs to the path
    if (errno != 0 || !std::isfinite(v))
        throw cli_error{"--lora " + arg + ": scale '" + tail + "' is not a finite number"};
    s.path = arg.substr(0, colon);
    s.scale = v;
    return s;
}

void add_loras(tandem_model* model, const std::vector<std::string>& args) {
    for (const auto& a : args) {
        const lora_spec s = parse_lora_spec(a);
        check(tandem_model_add_lora(model, s.path.c_str(), s.scale), "loading LoRA adapter " + s.path);
    }
}

namespace {
struct export_options {
    std::string model;
    std::vector<std::string> loras;
    std::string output;
    std::string outtype = "same";
};
}  // namespace

action add_export_lora(CLI::App& app) {
    auto o = std::make_shared<export_options>();
    auto* cmd = app.add_subcommand(
        "export-lora",
        "Merge LoRA adapters into a copy of a GGUF model: W' = W + sum SCALE * alpha / rank * B A for every adapted "
        "matrix. The result needs no --lora at inference.");
    cmd->footer(
        "Adapters use llama.cpp's LoRA GGUF layout (general.type = adapter, adapter.type = lora, adapter.lora.alpha, "
        "tensors <base>.lora_a / <base>.lora_b), as written by `tandem finetune` or llama.cpp's "
        "convert_lora_to_gguf.py.\n"
        "Only the adapted matrices are rewritten; every other tensor and all metadata are copied unchanged. "
        "Quantized matrices are dequantized, merged and re-quantized to their own type with tandem's quantizer "
        "(--outtype same), or written as --outtype. A merged matrix whose rows are not whole blocks of the type falls "
        "back as in `tandem quantize` (with a note).");
    cmd->add_option("-m,--model", o->model, "Base GGUF model")->required()->check(CLI::ExistingFile);
    cmd->add_option("--lora", o->loras, "Adapter GGUF, optionally with a scale: FILE[:SCALE] (default 1); repeatable")
        ->required()
        ->take_all();
    cmd->add_option("-o,--output", o->output, "Output GGUF path")->required();
    cmd->add_option("--outtype", o->outtype,
                    "Type of the merged matrices: same (the base's), f32, f16, q8_0, q4_0, q4_k or q6_k")
        ->capture_default_str()
        ->check(CLI::IsMember({"same", "f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"}));
    return [o] {
        std::vector<lora_spec> specs;
        for (const auto& a : o->loras) specs.push_back(parse_lora_spec(a));
        std::vector<const char*> paths;
        std::vector<float> scales;
        for (const auto& s : specs) {
            paths.push_back(s.path.c_str());
            scales.push_back(s.scale);
        }
        auto bar = [](int64_t done, int64_t total, void*) { progress_bar(done, total, "tensors"); };
        check(tandem_export_lora(o->model.c_str(), paths.data(), scales.data(), paths.size(), o->output.c_str(),
                                 o->outtype.c_str(), bar, nullptr),
              "merging into " + o->model);
        std::fprintf(stderr, "tandem: wrote %s (%zu adapter%s merged)\n", o->output.c_str(), specs.size(),
                     specs.size() == 1 ? "" : "s");
        return 0;
    };
}

}  // namespace tandem_cli
