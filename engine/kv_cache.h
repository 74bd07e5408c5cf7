// The KV cache: per layer, one K and one V tensor of n_slots rows (row = n_head_kv * head_dim values).
// Slots are addressed explicitly; which sequence owns which slots, and at which positions, is decided by
// the caller (a session owns a contiguous range; a server pool may hand out ranges to many sessions).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "backends/backend.h"
#include "engine/model.h"

namespace tandem {

class kv_cache {
   public:
    // n_slots rows per layer of type `type` (f32 or f16), allocated on the model's backend.
    kv_cache(const model& m, int64_t n_slots, dtype type = dtype::f32);

    int64_t n_slots() const { return n_slots_; }
    dtype type() const { return type_; }
    const tensor& k(int layer) const { return k_[size_t(layer)]; }
    const tensor& v(int layer) const { return v_[size_t(layer)]; }

    // Moves rows src[i] -> dst[i] in every layer (all reads before writes): commits an accepted tree branch
    // by compacting its slots behind the prefix. Throws tandem::error if a slot is out of range.
    void copy_slots(std::span<const int32_t> src, std::span<const int32_t> dst);

   private:
    backend& be_;
    int64_t n_slots_;
    dtype type_;
    std::unique_ptr<buffer> mem_;
    std::unique_ptr<buffer> index_;  // scratch for copy_slots' index lists
    int64_t index_cap_ = 0;
    std::vector<tensor> k_, v_;
};

}  // namespace tandem
