// KV cache storage: one backend allocation holding every layer's K and V.
#include "engine/kv_cache.h"

#include "engine/error.h"

namespace tandem {

kv_cache::kv_cache(const model& m, int64_t n_slots, dtype type) : be_(m.be()), n_slots_(n_slots), type_(type) {
    if (n_slots <= 0) throw error(TANDEM_ERR_INVALID_ARGUMENT, "KV cache needs at least one slot");
    if (type != dtype::f32 && type != dtype::f16) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "KV cache type must be f32 or f16");
    }
    if (!be_.supports(op::attention, type) || !be_.supports(op::kv_write, type)) {
        throw error(TANDEM_ERR_UNSUPPORTED, "backend '" + be_.name() + "' has no " + std::string(dtype_name(type)) +
                                                " KV cache");
    }
    const auto& hp = m.hparams();
    tensor t;
    t.type = type;
    t.ne = {hp.kv_dim(), n_slots, 1, 1};
    const size_t per = t.nbytes();
    mem_ = be_.alloc(per * 2 * size_t(hp.n_layer));
    t.buf = mem_.get();
    for (int l = 0; l < hp.n_layer; ++l) {
        t.offset = per * size_t(2 * l);
        k_.push_back(t);
        t.offset = per * size_t(2 * l + 1);
        v_.push_back(t);
    }
}

void kv_cache::copy_slots(std::span<const int32_t> src, std::span<const int32_t> dst) {
    TANDEM_ASSERT(src.size() == dst.size());
    const int64_t n = int64_t(src.size());
    if (n == 0) return;
    for (int64_t i = 0; i < n; ++i) {
        if (src[size_t(i)] < 0 || src[size_t(i)] >= n_slots_ || dst[size_t(i)] < 0 || dst[size_t(i)] >= n_slots_) {
            throw error(TANDEM_ERR_INVALID_ARGUMENT, "KV copy: slot out of range");
        }
    }
    if (n > index_cap_) {
        index_ = be_.alloc(size_t(n) * 8);
        index_cap_ = n;
    }
    be_.upload(*index_, 0, src.data(), size_t(n) * 4);
    be_.upload(*index_, size_t(n) * 4, dst.data(), size_t(n) * 4);
    tensor s{index_.get(), 0, dtype::i32, {n, 1, 1, 1}};
    tensor d{index_.get(), size_t(n) * 4, dtype::i32, {n, 1, 1, 1}};
    for (size_t l = 0; l < k_.size(); ++l) {
        be_.kv_copy(k_[l], s, d);
        be_.kv_copy(v_[l], s, d);
    }
}

}  // namespace tandem
