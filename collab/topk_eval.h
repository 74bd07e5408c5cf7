// The server side of distillation (rpc TopK): the target's top-k next-token distribution at every position of
// independent token sequences. They run through the target in a KV cache of their own, so sessions' caches are
// never touched; the caller holds the model to itself (the scheduler's exclusive()) while run() works.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "tandem/v1/collab.pb.h"

namespace tandem::collab {

// What one TopK request may ask for; reported in every reply so that a client can cut its batches to fit.
struct topk_limits {
    uint32_t max_sequences = 0;
    uint32_t max_tokens = 0;           // positions of all the request's sequences together
    uint32_t max_sequence_tokens = 0;  // positions of one sequence (the server's prompt limit)
    uint32_t max_top_k = 0;
    uint32_t max_message_bytes = 0;  // the reply must fit (topk_reply_bytes)
};

// An upper bound of a reply's serialized size for `positions` positions of k entries: per entry a varint id
// (at most 5 bytes) and a float, plus the fixed fields.
inline uint64_t topk_reply_bytes(uint64_t positions, uint32_t k) { return 256 + positions * uint64_t(k) * 9; }

// Checks a request against the target's vocabulary and the limits. FAILED_PRECONDITION naming both
// fingerprints for another vocabulary; INVALID_ARGUMENT naming the limit or field otherwise.
grpc::Status check_topk_request(const v1::TopKRequest& req, const model& target, const std::string& model_id,
                                const topk_limits& lim);
// Writes the limits and the target's vocabulary into a reply.
void describe_topk(const topk_limits& lim, const model& target, v1::TopKResponse* resp);

class topk_evaluator {
 public:
    explicit topk_evaluator(const model& target);
    // Evaluates a checked request: resp->ids / probs get, per position (sequence-major), the k most likely next
    // tokens (largest first, ties by lower id) and a softmax over their logits. Sequences are packed into passes
    // of at most max(pass_tokens, the longest sequence) rows, which bounds the cache and the logits buffer.
    void run(const v1::TopKRequest& req, v1::TopKResponse* resp);

 private:
    static constexpr int64_t pass_tokens = 512;
    const model& m_;
    std::unique_ptr<kv_cache> cache_;
    std::unique_ptr<forward_pass> fwd_;
    std::vector<float> logits_;
};

}  // namespace tandem::collab
