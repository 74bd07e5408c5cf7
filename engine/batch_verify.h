// Tree verification for many sequences in ONE target pass: the cloud side of speculative decoding.
//
// The target's KV cache is one pool of equal regions; a sequence holds a region while it is resident and is
// evicted (least recently used first) when a new sequence needs room. An evicted sequence keeps its tokens,
// so it is rebuilt transparently by the next pass that verifies it: its whole history is simply pending.
// Each pass lays out, per job, the sequence's pending committed tokens as a causal chain and then every
// tree node at position prefix + depth, attending to its own region's prefix and its own ancestors (ragged
// batch, see batch_row). After acceptance the accepted nodes' K/V are compacted behind each prefix.
#pragma once

#include <cstdint>
#include <exception>
#include <span>
#include <vector>

#include "engine/draft_tree.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/model.h"
#include "engine/sampling.h"

namespace tandem {

// One sequence as the target sees it: committed tokens, the last one pending (its successor is what the next
// pass predicts), of which the first n_cached have K/V in the sequence's region.
struct verify_sequence {
    explicit verify_sequence(const sampling_params& sp);
    sampling_params sp;
    tandem::sampler sampler;  // the target's sampling distribution
    tandem::rng accept_rng;   // draws of the acceptance rule
    std::vector<int32_t> tokens;
    size_t n_cached = 0;
    int32_t region = -1;  // pool region, -1 when not resident
    uint64_t last_used = 0;
};

struct verify_job {
    verify_sequence* seq = nullptr;
    const draft_tree* tree = nullptr;
    // Outputs.
    acceptance result;
    bool done = false;         // false with no error: no region was free this pass; submit again
    std::exception_ptr error;  // this job's own failure (bad tree, context full); other jobs are unaffected
};

struct batch_verify_stats {
    uint64_t passes = 0;       // target passes with tree rows (catch-up prefill passes not counted)
    uint64_t prefill_passes = 0;
    uint64_t evictions = 0;
    uint64_t rows = 0;         // rows computed in all passes
};

class batch_verifier {
   public:
    // n_regions regions of `seq_capacity` slots each; trees of at most max_nodes nodes; pending chains longer
    // than `chunk` tokens are prefilled in chunk-sized passes of their own before the batched pass.
    batch_verifier(const model& target, int64_t seq_capacity, int32_t n_regions, size_t max_nodes,
                   int64_t chunk = 512);
    ~batch_verifier();
    batch_verifier(const batch_verifier&) = delete;
    batch_verifier& operator=(const batch_verifier&) = delete;

    // Starts (or restarts) a sequence with a prompt of at least one token; nothing is computed yet.
    void start(verify_sequence& s, std::span<const int32_t> prompt);
    // Appends tokens committed without verification (the edge's routing mode); computed with the next pass.
    void append(verify_sequence& s, std::span<const int32_t> tokens);
    // Verifies every job in one target pass; see verify_job for the outcome of each.
    void run(std::span<verify_job> jobs);
    // The sequence is gone: frees its region.
    void release(verify_sequence& s);

    // Rows the job would add to a pass (its pending tokens, capped at chunk, plus its tree nodes).
    int64_t rows_for(const verify_sequence& s, size_t tree_nodes) const;
    int64_t seq_capacity() const { return capacity_; }
    int32_t n_regions() const { return int32_t(owner_.size()); }
    size_t max_nodes() const { return max_nodes_; }
    const model& target() const { return m_; }
    const batch_verify_stats& stats() const { return stats_; }

   private:
    bool acquire(verify_sequence& s, std::span<const verify_job> pinned);
    void catch_up(verify_sequence& s);  // prefill all but the last `chunk` pending tokens
    // run() in two halves: the forward pass over every live job (throws if the device fails), then acceptance.
    std::span<const float> pass(std::span<verify_job* const> live, std::vector<size_t>& logit0);
    void accept_and_commit(std::span<verify_job* const> live, std::span<const float> logits,
                           const std::vector<size_t>& logit0);
    int32_t base(const verify_sequence& s) const { return s.region * int32_t(capacity_); }

    const model& m_;
    int64_t capacity_;
    size_t max_nodes_;
    int64_t chunk_;
    kv_cache cache_;
    forward_pass fwd_;
    std::vector<verify_sequence*> owner_;  // per region
    std::vector<float> logits_;            // a device backend's last logits, kept so that a pass does not allocate
    uint64_t clock_ = 0;
    batch_verify_stats stats_;
};

}  // namespace tandem
