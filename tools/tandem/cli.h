// Shared pieces of the tandem CLI: subcommand registration and error reporting. The CLI is thin: every
// subcommand calls only the public API in engine/tandem.h, except serve and edge, which use collab/'s.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "engine/tandem.h"

namespace tandem_cli {

// Each subcommand adds itself to `app` and returns the action to run when it is selected.
using action = std::function<int()>;
action add_generate(CLI::App& app);
action add_info(CLI::App& app);
action add_perplexity(CLI::App& app);
action add_convert(CLI::App& app);
action add_devices(CLI::App& app);
action add_quantize(CLI::App& app);
action add_synth(CLI::App& app);
action add_serve(CLI::App& app);  // collab/: built with TANDEM_COLLAB
action add_edge(CLI::App& app);
action add_export_lora(CLI::App& app);

// A --lora FILE[:SCALE] argument: the text after the last ':' is the scale when it parses as a number (default 1),
// so paths with ':' still work. Throws cli_error for a bad scale.
struct lora_spec {
    std::string path;
    float scale = 1.f;
};
lora_spec parse_lora_spec(const std::string& arg);
// Applies every --lora argument to the model (tandem_model_add_lora), throwing cli_error naming the file.
void add_loras(tandem_model* model, const std::vector<std::string>& args);

// Throws cli_error with the API's message when status is not TANDEM_OK.
struct cli_error {
    std::string message;
};
void check(tandem_status st, const std::string& context);

// Default model: the bundled stories260K.gguf of the source tree.
std::string default_model();
// Adds -b/--backend and -t/--threads options bound to the given variables.
void add_backend_options(CLI::App* cmd, std::string& backend, int& threads);
// A one-line progress bar on stderr: "[#####.....] 12/40 label".
void progress_bar(int64_t done, int64_t total, const char* label);

}  // namespace tandem_cli
