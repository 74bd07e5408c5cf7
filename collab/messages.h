// Protocol messages <-> engine types. Every count, index and value that arrives from the network is checked
// here against the server's limits before it reaches the engine; a violation throws tandem::error
// (TANDEM_ERR_INVALID_ARGUMENT) with a message naming the field, which the server returns as INVALID_ARGUMENT.
#pragma once

#include <cstdint>
#include <string>

#include "engine/draft_tree.h"
#include "engine/sampling.h"
#include "tandem/v1/collab.pb.h"

namespace tandem::collab {

struct limits {
    uint32_t max_tree_nodes = 64;     // draft nodes per verify request
    uint32_t max_draft_top_k = 32;    // entries of a draft distribution
    uint32_t max_prompt_tokens = 0;   // 0 = the context length - 1
    uint32_t max_committed_tokens = 256;  // unverified tokens appended by one request (routing mode)
};

sampling_params sampling_from_proto(const v1::SamplingParams& p);
void sampling_to_proto(const sampling_params& s, v1::SamplingParams* p);

// The request's draft tree, validated: node count, parent order (-1 or an earlier node), tokens in
// [0, n_vocab), and, when sampling, every node with children carries a draft distribution (<= max_draft_top_k
// entries, probabilities in [0, 1] summing to ~1, distinct valid tokens).
draft_tree tree_from_proto(const v1::VerifyRequest& r, int32_t n_vocab, const limits& lim, bool sampling);
void tree_to_proto(const draft_tree& t, bool sampling, v1::VerifyRequest* r);

// Token ids from the network: each in [0, n_vocab), at most max_count of them; `what` names the field.
void check_tokens(const google::protobuf::RepeatedField<int32_t>& tokens, int32_t n_vocab, size_t max_count,
                  const char* what);

// Layer split: n rows of dim floats <-> ForwardRequest.hidden (+ scales). INT8 uses one scale per row,
// max|x| / 127, values rounded to nearest. decode_hidden validates sizes, scales and finiteness.
void encode_hidden(const std::vector<float>& rows, int64_t dim, v1::HiddenEncoding enc, v1::ForwardRequest* r);
std::vector<float> decode_hidden(const v1::ForwardRequest& r, int64_t dim);

// Session ids are 32 lowercase hex digits (128 random bits).
bool valid_session_id(const std::string& id);

}  // namespace tandem::collab
