// Shared pieces of the edge-cloud tests (test_collab*.cpp): the real pair (target stories260K, draft
// llama2xs_tinystories_279K, both on cpu, loaded once), target-only greedy output to compare against, and
// loopback configurations of a server with two callers' tokens and of an edge.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "collab/edge.h"
#include "collab/server.h"
#include "engine/model.h"

namespace tandem::collab::test {

inline constexpr const char* token_a = "edge-a-secret";
inline constexpr const char* token_b = "edge-b-secret";

const model& target_model();
const model& draft_model();
// Target-only greedy continuation of `prompt`, n tokens, no stop tokens.
std::vector<int32_t> target_greedy(const std::vector<int32_t>& prompt, int n);
// The draft tokenizer's encoding of text, with BOS.
std::vector<int32_t> prompt_of(const std::string& text);
// A loopback server (port 0 = free port) accepting token_a and token_b, 40 KV regions of 1024 tokens.
server_config test_server_config(int port = 0);
// A greedy edge with token_a, a 20 s deadline and short back-off.
edge_config test_edge_config(int port, draft_strategy strategy = draft_strategy::chain);
// A greedy OpenSession request for `prompt` with the draft's tokenizer fingerprint.
v1::OpenSessionRequest open_request(const std::vector<int32_t>& prompt);

}  // namespace tandem::collab::test
