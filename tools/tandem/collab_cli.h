// Pieces shared by `tandem serve` and `tandem edge`, which use the collaboration layer's C++ API
// (collab/) rather than the C API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "collab/net_emu.h"
#include "engine/model.h"

namespace tandem_cli {

// Loads a GGUF model on a backend; throws cli_error naming the file.
std::unique_ptr<tandem::model> load_model(const std::string& path, const std::string& backend, int threads);
// "models/stories260K.gguf" -> "stories260K".
std::string model_stem(const std::string& path);
// Installs SIGINT/SIGTERM handlers and blocks until one arrives; returns the signal.
int wait_for_signal();
// --http HOST:PORT, --api-key (repeatable; env TANDEM_API_KEY).
void add_http_options(CLI::App* cmd, std::string& address, std::vector<std::string>& keys);
// --delay-ms, --jitter-ms, --bandwidth-mbps.
void add_emulator_options(CLI::App* cmd, tandem::collab::net_emu_config& emu);

}  // namespace tandem_cli
