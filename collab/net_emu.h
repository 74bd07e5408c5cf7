// A network emulator for tests and benchmarks: every message that passes through it is held back by a fixed
// one-way delay, plus uniform jitter, plus its size over a bandwidth cap, plus the faults of a bad link: with
// probability spike_prob a delay spike of spike_ms, and with probability loss_prob a lost segment. gRPC runs
// over TCP, which retransmits, so a loss shows up as a late message (one retransmission timeout, rto_ms,
// doubling for each further loss of the same message), never as a missing one. The edge (tandem edge --delay-ms
// ...) applies it to both directions of its link, so a verify round trip costs two one-way delays; the
// server (tandem serve --delay-ms ...) applies it to its replies only, for tests of slow servers. Use one
// side or the other. tools/netem.sh does the same with network namespaces and tc netem (the kernel path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "engine/sampling.h"

namespace tandem::collab {

struct net_emu_config {
    double delay_ms = 0;        // fixed one-way delay
    double jitter_ms = 0;       // + uniform [0, jitter_ms)
    double bandwidth_mbps = 0;  // 0 = unlimited; else + bytes * 8 / (bandwidth_mbps * 1e6) seconds
    double spike_prob = 0;      // probability that a message meets a delay spike
    double spike_ms = 0;        // + spike_ms when it does
    double loss_prob = 0;       // probability that a transmission of the message is lost (retransmitted)
    double rto_ms = 200;        // TCP's minimum retransmission timeout; each loss of one message doubles it
    uint64_t seed = 1;
    bool active() const {
        return delay_ms > 0 || jitter_ms > 0 || bandwidth_mbps > 0 || (spike_prob > 0 && spike_ms > 0) ||
               loss_prob > 0;
    }
};

class net_emu {
   public:
    explicit net_emu(const net_emu_config& c = {}) : c_(c), rng_(c.seed) {}
    // Sleeps for what a message of `bytes` costs on the emulated link.
    void pass(size_t bytes);
    // The cost without sleeping, in seconds (jitter drawn as for pass).
    double cost(size_t bytes);
    const net_emu_config& config() const { return c_; }

   private:
    net_emu_config c_;
    std::mutex mu_;
    rng rng_;
};

}  // namespace tandem::collab
