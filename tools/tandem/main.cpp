// tandem: the command-line front end of the Tandem engine.
#include <cstdio>
#include <iostream>
#include <vector>

#include "tools/tandem/cli.h"

namespace tandem_cli {
action add_finetune(CLI::App& app);

void check(tandem_status st, const std::string& context) {
    if (st != TANDEM_OK) throw cli_error{context + ": " + tandem_last_error()};
}

std::string default_model() { return std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf"; }

void add_backend_options(CLI::App* cmd, std::string& backend, int& threads) {
    std::string names;
    for (size_t i = 0; i < tandem_backend_count(); ++i) names += std::string(i ? ", " : "") + tandem_backend_name(i);
    cmd->add_option("-b,--backend", backend, "Compute backend: " + names)->capture_default_str();
    cmd->add_option("-t,--threads", threads, "CPU threads for the cpu backend (0 = all cores)")->capture_default_str();
}

void progress_bar(int64_t done, int64_t total, const char* label) {
    const int width = 30;
    const int filled = total > 0 ? int(width * done / total) : width;
    std::fprintf(stderr, "\r[%.*s%.*s] %lld/%lld %s", filled, "##############################", width - filled,
                 "..............................", static_cast<long long>(done), static_cast<long long>(total), label);
    if (done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
}

}  // namespace tandem_cli

int main(int argc, char** argv) {
    CLI::App app{"tandem: edge-cloud collaborative LLM inference engine (version " + std::string(tandem_version()) +
                 ")\nRun `tandem SUBCOMMAND --help` for the options of each subcommand."};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string(tandem_version()));
    std::vector<std::pair<CLI::App*, tandem_cli::action>> actions;
    // Each add_* registers one subcommand; pair it with its action (the most recently added subcommand).
    auto add = [&](tandem_cli::action a) {
        actions.emplace_back(app.get_subcommands([](CLI::App*) { return true; }).back(), std::move(a));
    };
    add(tandem_cli::add_generate(app));
    add(tandem_cli::add_info(app));
    add(tandem_cli::add_perplexity(app));
    add(tandem_cli::add_convert(app));
    add(tandem_cli::add_devices(app));
    add(tandem_cli::add_quantize(app));
    add(tandem_cli::add_synth(app));
    add(tandem_cli::add_finetune(app));  // tools/tandem/cmd_finetune.cpp
    add(tandem_cli::add_export_lora(app));
#ifdef TANDEM_HAVE_COLLAB
    add(tandem_cli::add_serve(app));
    add(tandem_cli::add_edge(app));
#endif
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [cmd, act] : actions)
            if (cmd->parsed()) return act();
    } catch (const tandem_cli::cli_error& e) {
        std::fprintf(stderr, "tandem: error: %s\n", e.message.c_str());
        return 1;
    }
    return 0;
}
