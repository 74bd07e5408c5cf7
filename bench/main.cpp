// tandem-bench: the benchmark driver (issue 9). Subcommands live in bench/cmd_<name>.cpp; see bench.h.
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

#include "bench/bench.h"
#include "engine/tandem.h"

int main(int argc, char** argv) {
    using namespace tandem::bench;
    CLI::App app{"tandem-bench: Tandem's benchmarks (version " + std::string(tandem_version()) +
                 "). Each prints a table and writes it with --out FILE (.json or .csv); bench/plot.py draws the "
                 "JSON.\nRun `tandem-bench SUBCOMMAND --help` for the options of each subcommand."};
    app.require_subcommand(1);
    std::vector<std::pair<CLI::App*, action>> actions;
    // Each add_* registers one subcommand; pair it with its action (the most recently added subcommand).
    auto add = [&](action a) {
        actions.emplace_back(app.get_subcommands([](CLI::App*) { return true; }).back(), std::move(a));
    };
    add(add_limits(app));
    add(add_verify(app));
    add(add_spec(app));
    add(add_ops(app));
    add(add_model(app));
    add(add_train(app));
#ifdef TANDEM_HAVE_COLLAB
    add(add_collab(app));
    add(add_load(app));
#endif
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [cmd, act] : actions)
            if (cmd->parsed()) return act();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
