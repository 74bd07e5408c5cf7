// The edge side: a draft model on the device and a verification server in the cloud.
//
// Modes: `spec` drafts a chain or tree locally and has the cloud verify it (greedy output identical to the
// target's; sampled output distributed as the target's), pipelined: while a tree is being verified the edge
// drafts the next one on the most likely outcome (the draft's best path accepted in full, then the draft's
// best guess at the target's token) and keeps it only if that outcome happens; `cloud` sends empty trees (one round trip per
// token: the baseline that speculation beats); `local` runs the draft alone; `route` emits tokens the draft
// is confident about (top-1 probability >= threshold) without verification and verifies the rest (lossy,
// opt-in; every token says whether it was verified); `split` runs the embedding and the first split_layer
// layers of the TARGET on the edge and sends hidden states (F16, or int8 with a per-token scale) to the cloud,
// which runs the rest and returns the next token (one round trip per token; no local fallback: without the
// cloud's layers there is no output).
//
// Outages: when the cloud cannot be reached, the edge goes on with the draft alone, marks those tokens
// unverified, retries with exponential back-off and, once the cloud is back, re-verifies the unverified
// tokens as a chain from the last acknowledged position: the accepted prefix becomes verified, the rest is
// retracted and replaced by the target's tokens. No verified token is lost or duplicated.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collab/cloud_link.h"
#include "engine/model.h"
#include "engine/speculative.h"

namespace tandem::collab {

enum class edge_mode { spec, cloud, local, route, split };
edge_mode parse_edge_mode(const std::string& s);  // throws tandem::error naming the modes
const char* edge_mode_name(edge_mode m);

struct edge_config {
    edge_mode mode = edge_mode::spec;
    link_config link;
    std::string model_id;             // "" = whatever the server serves
    std::string draft_name = "draft"; // how errors name the draft model
    draft_config draft;
    sampling_params sampling{0.f, 0, 1.f, 0.f, 1.f, 64, 0};  // greedy by default
    int64_t ctx = 0;                  // draft KV capacity; 0 = the draft model's context length
    float route_threshold = 0.9f;
    int32_t split_layer = 0;          // split: layers [0, split_layer) run on the edge
    bool split_int8 = false;          // split: int8 hidden states instead of F16
    bool pipeline = true;             // spec: draft the next tree while the cloud verifies this one
    bool ignore_eos = false;          // otherwise stop after EOS (or BOS, which llama2.c models emit between stories)
    std::chrono::milliseconds backoff_initial{100}, backoff_max{4000};
};

// A change to the output, applied in this order: the first `confirmed` unverified tokens became verified,
// the last `retracted` unverified tokens were withdrawn (the cloud disagreed), `tokens` were appended.
struct edge_event {
    size_t confirmed = 0;
    size_t retracted = 0;
    std::vector<int32_t> tokens;
    bool verified = true;  // of the appended tokens
};

struct edge_stats {
    uint64_t round_trips = 0;     // verify requests answered
    uint64_t drafted = 0;         // draft nodes sent
    uint64_t accepted = 0;        // draft nodes the cloud accepted
    uint64_t verified_tokens = 0; // output tokens the target confirmed or produced
    uint64_t unverified_tokens = 0;  // output tokens still unverified at the end
    uint64_t routed_tokens = 0;   // route mode: tokens committed without verification
    uint64_t retracted = 0;       // unverified tokens replaced after the cloud came back
    double bytes_per_token() const;
    uint64_t pipelined = 0;       // rounds whose tree was drafted during the previous round trip
    uint64_t outages = 0, reconnects = 0;
    uint64_t bytes_sent = 0, bytes_received = 0;
    double seconds = 0, draft_seconds = 0, wait_seconds = 0;
    double tokens_per_round_trip() const { return round_trips ? double(verified_tokens) / double(round_trips) : 0.0; }
};

struct edge_result {
    std::vector<int32_t> tokens;   // generated tokens (after the prompt)
    std::vector<bool> verified;    // per token
    edge_stats stats;
};

class edge_session {
   public:
    // Throws tandem::error for a bad configuration. Connects lazily.
    edge_session(const model& draft, const edge_config& cfg);
    ~edge_session();

    // Generates up to n tokens after `prompt`. In split mode the model given to the constructor is the target. (stops after an end-of-sequence token, see ignore_eos). on_event, if given, sees
    // every change to the output as it happens. Throws link_error when the server refuses the session for a
    // reason retrying cannot fix (authentication, vocabulary mismatch, invalid request).
    // `cancelled`, if given, is polled between rounds: true stops the generation (a client went away, a stop
    // string was seen).
    edge_result generate(const std::vector<int32_t>& prompt, int32_t n,
                         const std::function<void(const edge_event&)>& on_event = {},
                         const std::function<bool()>& cancelled = {});

   private:
    struct state;
    bool try_open(state& s);
    enum class round_result { ok, unreachable, session_lost };
    round_result round(state& s);  // one verify round trip
    void local_step(state& s);
    edge_result generate_split(const std::vector<int32_t>& prompt, int32_t n,
                               const std::function<void(const edge_event&)>& on_event,
                               const std::function<bool()>& cancelled);

    const model& draft_;
    edge_config cfg_;
    std::unique_ptr<cloud_link> link_;
    std::unique_ptr<drafter> drafter_;
};

}  // namespace tandem::collab
