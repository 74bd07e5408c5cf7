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
    if ((c_.spike_prob > 0 && c_.spike_ms > 0) || c_.loss_prob > 0) {
        std::lock_guard lock(mu_);
        if (c_.spike_prob > 0 && double(rng_.uniform()) < c_.spike_prob) s += c_.spike_ms * 1e-3;
        // At most 8 retransmissions (then TCP would give up the connection; the caller's deadline fires first).
        double rto = c_.rto_ms * 1e-3;
        for (int i = 0; i < 8 && c_.loss_prob > 0 && double(rng_.uniform()) < c_.loss_prob; ++i, rto *= 2) s += rto;
    }
    return s;
}

void net_emu::pass(size_t bytes) {
    if (!c_.active()) return;
    std::this_thread::sleep_for(std::chrono::duration<double>(cost(bytes)));
}

}  // namespace tandem::collab
