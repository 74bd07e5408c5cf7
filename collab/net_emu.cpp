// The message-level network emulator; see net_emu.h.
#include "collab/net_emu.h"

#include <chrono>
#include <thread>

namespace tandem::collab {

double net_emu::cost(size_t bytes) {
    double s = c_.delay_ms * 1e-3;
    if (c_.jitter_ms > 0) {
        std::lock_guard lock(mu_);
        s += c_.jitter_ms * 1e-3 * double(rng_.uniform());
    }
    if (c_.bandwidth_mbps > 0) s += double(bytes) * 8.0 / (c_.bandwidth_mbps * 1e6);
    return s;
}

void net_emu::pass(size_t bytes) {
    if (!c_.active()) return;
    std::this_thread::sleep_for(std::chrono::duration<double>(cost(bytes)));
}

}  // namespace tandem::collab
