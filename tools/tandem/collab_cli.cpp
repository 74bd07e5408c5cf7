#include "tools/tandem/collab_cli.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

#include "backends/backend.h"
#include "engine/error.h"
#include "tools/tandem/cli.h"

namespace tandem_cli {

std::unique_ptr<tandem::model> load_model(const std::string& path, const std::string& backend, int threads) {
    try {
        auto be = tandem::make_backend(backend);
        if (threads > 0) be->set_threads(threads);
        return tandem::model::load(path, std::move(be));
    } catch (const tandem::error& e) {
        throw cli_error{"loading " + path + ": " + e.what()};
    }
}

std::string model_stem(const std::string& path) {
    std::string s = path.substr(path.find_last_of('/') + 1);
    if (const auto dot = s.rfind('.'); dot != std::string::npos && dot > 0) s.resize(dot);
    return s;
}

namespace {
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }
}  // namespace

int wait_for_signal() {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return g_signal.load();
}

void add_http_options(CLI::App* cmd, std::string& address, std::vector<std::string>& keys) {
    auto* g = "OpenAI-compatible HTTP API";
    cmd->add_option("--http", address, "Serve /v1/completions, /v1/chat/completions, /v1/models, /health and /metrics "
                                       "on HOST:PORT")->group(g);
    cmd->add_option("--api-key", keys, "Required 'Authorization: Bearer KEY' for the HTTP API (repeatable; env "
                                       "TANDEM_API_KEY)")->group(g);
}

void add_emulator_options(CLI::App* cmd, tandem::collab::net_emu_config& emu) {
    auto* g = "Network emulation (edge: both directions of its link; serve: its replies)";
    cmd->add_option("--delay-ms", emu.delay_ms, "Fixed one-way delay")->capture_default_str()->check(CLI::Range(0.0, 60000.0))->group(g);
    cmd->add_option("--jitter-ms", emu.jitter_ms, "Extra uniform random delay")->capture_default_str()->check(CLI::Range(0.0, 60000.0))->group(g);
    cmd->add_option("--bandwidth-mbps", emu.bandwidth_mbps, "Bandwidth cap (0 = none)")->capture_default_str()->check(CLI::NonNegativeNumber)->group(g);
    cmd->add_option("--spike-prob", emu.spike_prob, "Probability that a message meets a delay spike")->capture_default_str()->check(CLI::Range(0.0, 1.0))->group(g);
    cmd->add_option("--spike-ms", emu.spike_ms, "Length of a delay spike")->capture_default_str()->check(CLI::Range(0.0, 60000.0))->group(g);
    cmd->add_option("--loss", emu.loss_prob, "Probability that a message's transmission is lost; TCP retransmits it "
                                             "after --rto-ms (doubling per repeated loss), so it arrives late")->capture_default_str()->check(CLI::Range(0.0, 0.9))->group(g);
    cmd->add_option("--rto-ms", emu.rto_ms, "Retransmission timeout of a lost message")->capture_default_str()->check(CLI::Range(1.0, 60000.0))->group(g);
}

}  // namespace tandem_cli
