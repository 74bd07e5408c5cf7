// tandem-bench: one binary, one subcommand per file (bench/cmd_<name>.cpp). Each add_<name> adds its
// subcommand to the app and returns the action to run when it is selected; main.cpp lists them, one line each.
// Shared helpers: timing.h (warm-up, repeats, min/median/max), report.h (terminal tables, --out CSV/JSON),
// machine.h (bandwidth, FMA peak, load average), models.h (the synthetic-model cache).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace tandem::bench {

// Returns the process exit code. Throws tandem::error or std::exception on failure (main reports it).
using action = std::function<int()>;

action add_limits(CLI::App& app);  // memory bandwidth, FMA peak, launch overhead
action add_verify(CLI::App& app);  // tree verification time against its roofline bound
action add_spec(CLI::App& app);    // speculative decoding acceptance on the real pair
action add_ops(CLI::App& app);     // every backend_ops kernel on every backend, with OpenBLAS/CLBlast baselines
action add_model(CLI::App& app);   // prompt, decode and tree-verification tokens/s of a GGUF per backend
action add_train(CLI::App& app);   // LoRA training tokens/s per backend, against the FMA peak and read bandwidth
// Defined by bench/cmd_collab.cpp (to come), which CMake compiles only with TANDEM_COLLAB; main.cpp registers
// it under #ifdef TANDEM_HAVE_COLLAB.
action add_collab(CLI::App& app);
// Defined by bench/cmd_load.cpp (TANDEM_COLLAB only): the long load/soak run against one server.
action add_load(CLI::App& app);

}  // namespace tandem::bench
