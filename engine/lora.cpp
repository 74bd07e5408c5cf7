// LoRA adapters: target names, creation (Kaiming-uniform A, zero B), and GGUF I/O in llama.cpp's adapter layout.
// The loader checks every tensor against the model before anything is allocated, so a wrong adapter is refused
// with the tensor's name and the shape it should have instead of producing garbage at inference.
#include "engine/lora.h"

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <sstream>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/model.h"

namespace tandem {

namespace {

constexpr lora_target all_targets[lora_target_count] = {lora_target::q, lora_target::k,    lora_target::v,
                                                        lora_target::o, lora_target::gate, lora_target::down,
                                                        lora_target::up};

// The GGUF tensor stem of each target, in enum order (blk.N.<stem>.weight).
constexpr const char* gguf_stems[lora_target_count] = {"attn_q",   "attn_k",   "attn_v", "attn_output",
                                                       "ffn_gate", "ffn_down", "ffn_up"};

std::string shape_str(const std::vector<int64_t>& ne) {
    std::ostringstream s;
    s << "{";
    for (size_t i = 0; i < ne.size(); ++i) s << (i ? ", " : "") << ne[i];
    s << "}";
    return s.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The base weight target t adapts in layer l of m ({K, N}).
const tensor& base_weight(const model& m, int32_t l, lora_target t) {
    const auto& w = m.layer(l);
    switch (t) {
        case lora_target::q:
            return w.wq;
        case lora_target::k:
            return w.wk;
        case lora_target::v:
            return w.wv;
        case lora_target::o:
            return w.wo;
        case lora_target::gate:
            return w.w_gate;
        case lora_target::down:
            return w.w_down;
        case lora_target::up:
            return w.w_up;
    }
    TANDEM_ASSERT(false);
    return w.wq;
}

// Byte offset of each tensor in the adapter's one buffer: 256-byte aligned for GPU backends, as the forward
// pass's activations are.
size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

// Builds an adapter's layout (which pairs exist, their shapes and offsets) and allocates its buffer.
struct lora_adapter_builder {
    struct pending {
        int32_t layer;
        lora_target t;
        int64_t k, n;  // the base weight {K, N}
    };
    static std::unique_ptr<lora_adapter> build(const model& m, int32_t rank, float alpha,
                                               const std::vector<pending>& pairs) {
        std::unique_ptr<lora_adapter> a(new lora_adapter());
        a->be_ = &m.be();
        a->rank_ = rank;
        a->alpha_ = alpha;
        a->layers_.resize(size_t(m.hparams().n_layer));
        size_t off = 0;
        bool has[lora_target_count] = {};
        std::vector<std::pair<lora_pair*, std::array<size_t, 2>>> placed;
        for (const auto& p : pairs) {
            lora_pair pr;
            pr.a = tensor{nullptr, off, dtype::f32, {p.k, rank, 1, 1}};
            off += aligned(size_t(p.k * rank) * 4);
            pr.b = tensor{nullptr, off, dtype::f32, {rank, p.n, 1, 1}};
            off += aligned(size_t(rank * p.n) * 4);
            a->layers_[size_t(p.layer)][size_t(p.t)] = pr;
            has[size_t(p.t)] = true;
        }
        for (lora_target t : all_targets)
            if (has[size_t(t)]) a->targets_.push_back(t);
        a->data_ = m.be().alloc(std::max<size_t>(off, 256));
        for (auto& layer : a->layers_)
            for (auto& p : layer)
                if (p) p->a.buf = p->b.buf = a->data_.get();
        return a;
    }
};

const char* lora_target_name(lora_target t) {
    static constexpr const char* names[lora_target_count] = {"q", "k", "v", "o", "gate", "down", "up"};
    return names[size_t(t)];
}

std::vector<lora_target> parse_lora_targets(const std::string& list) {
    bool want[lora_target_count] = {};
    size_t start = 0;
    bool any = false;
    while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        std::string item = list.substr(start, end - start);
        start = end + 1;
        while (!item.empty() && item.front() == ' ') item.erase(item.begin());
        while (!item.empty() && item.back() == ' ') item.pop_back();
        if (item.empty()) continue;
        any = true;
        auto set = [&](std::initializer_list<lora_target> ts) {
            for (lora_target t : ts) want[size_t(t)] = true;
        };
        using lt = lora_target;
        if (item == "all")
            set({lt::q, lt::k, lt::v, lt::o, lt::gate, lt::down, lt::up});
        else if (item == "attn")
            set({lt::q, lt::k, lt::v, lt::o});
        else if (item == "ffn")
            set({lt::gate, lt::down, lt::up});
        else if (item == "q" || item == "wq")
            set({lt::q});
        else if (item == "k" || item == "wk")
            set({lt::k});
        else if (item == "v" || item == "wv")
            set({lt::v});
        else if (item == "o" || item == "wo")
            set({lt::o});
        else if (item == "gate" || item == "w1")
            set({lt::gate});
        else if (item == "down" || item == "w2")
            set({lt::down});
        else if (item == "up" || item == "w3")
            set({lt::up});
        else {
            throw error(TANDEM_ERR_INVALID_ARGUMENT,
                        "unknown LoRA target '" + item +
                            "' (known: q, k, v, o, gate, down, up, wq, wk, wv, wo, w1, w2, w3, attn, ffn, all)");
        }
    }
    if (!any) throw error(TANDEM_ERR_INVALID_ARGUMENT, "empty LoRA target list");
    std::vector<lora_target> out;
    for (lora_target t : all_targets)
        if (want[size_t(t)]) out.push_back(t);
    return out;
}

std::string lora_base_tensor_name(int32_t layer, lora_target t) {
    return "blk." + std::to_string(layer) + "." + gguf_stems[size_t(t)] + ".weight";
}

bool parse_lora_base_tensor_name(const std::string& name, int32_t* layer, lora_target* t) {
    if (name.rfind("blk.", 0) != 0 || !ends_with(name, ".weight")) return false;
    const size_t dot = name.find('.', 4);
    if (dot == std::string::npos || dot == 4 || dot - 4 > 6) return false;
    int32_t l = 0;
    for (size_t i = 4; i < dot; ++i) {
        if (name[i] < '0' || name[i] > '9') return false;
        l = l * 10 + (name[i] - '0');
    }
    const std::string stem = name.substr(dot + 1, name.size() - dot - 1 - 7);
    for (lora_target c : all_targets) {
        if (stem == gguf_stems[size_t(c)]) {
            *layer = l;
            *t = c;
            return true;
        }
    }
    return false;
}

float lora_use::factor() const { return scale * adapter->alpha() / float(adapter->rank()); }

std::unique_ptr<lora_adapter> lora_adapter::create(const model& m, const lora_config& cfg, uint64_t seed) {
    if (cfg.rank < 1)
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA rank must be >= 1, got " + std::to_string(cfg.rank));
    if (cfg.targets.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA config has no targets");
    if (!(std::isfinite(cfg.alpha))) throw error(TANDEM_ERR_INVALID_ARGUMENT, "LoRA alpha must be finite");
    bool want[lora_target_count] = {};
    for (lora_target t : cfg.targets) want[size_t(t)] = true;
    std::vector<lora_adapter_builder::pending> pairs;
    for (int32_t l = 0; l < m.hparams().n_layer; ++l) {
        for (lora_target t : all_targets) {
            if (!want[size_t(t)]) continue;
            const tensor& w = base_weight(m, l, t);
            pairs.push_back({l, t, w.ne[0], w.ne[1]});
        }
    }
    auto a = lora_adapter_builder::build(m, cfg.rank, cfg.alpha, pairs);
    // A ~ U(-1/sqrt(K), 1/sqrt(K)) (kaiming_uniform_ with a = sqrt(5), fan_in = K), B = 0: the adapter starts
    // as the identity update. Uniforms from the top 24 bits of a 64-bit Mersenne twister, so the draw is the same
    // with every standard library.
    std::mt19937_64 rng(seed);
    std::vector<float> host;
    for (const auto& p : pairs) {
        const lora_pair& pr = *a->layers_[size_t(p.layer)][size_t(p.t)];
        const float bound = 1.f / std::sqrt(float(p.k));
        host.resize(size_t(pr.a.nelements()));
        for (float& x : host) x = (float(rng() >> 40) * (1.f / 16777216.f) * 2.f - 1.f) * bound;
        a->be_->upload(*a->data_, pr.a.offset, host.data(), host.size() * 4);
        host.assign(size_t(pr.b.nelements()), 0.f);
        a->be_->upload(*a->data_, pr.b.offset, host.data(), host.size() * 4);
    }
    return a;
}

const lora_pair* lora_adapter::get(int32_t layer, lora_target t) const {
    if (layer < 0 || layer >= n_layer()) return nullptr;
    const auto& p = layers_[size_t(layer)][size_t(t)];
    return p ? &*p : nullptr;
}

std::vector<tensor> lora_adapter::parameters() const {
    std::vector<tensor> out;
    for (const auto& layer : layers_) {
        for (const auto& p : layer) {
            if (!p) continue;
            out.push_back(p->a);
            out.push_back(p->b);
        }
    }
    return out;
}

void lora_adapter::save(const std::string& path, const model& m) const {
    (void)m;  // the adapter's own layout names every tensor; m is kept in the signature for symmetry with load()
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    w.set_string("general.type", "adapter");
    w.set_string("adapter.type", "lora");
    w.set_f32("adapter.lora.alpha", alpha_);
    std::vector<float> host;
    for (int32_t l = 0; l < n_layer(); ++l) {
        for (lora_target t : all_targets) {
            const lora_pair* p = get(l, t);
            if (!p) continue;
            const std::string base = lora_base_tensor_name(l, t);
            for (int i = 0; i < 2; ++i) {
                const tensor& x = i == 0 ? p->a : p->b;
                host.resize(size_t(x.nelements()));
                be_->download(*x.buf, x.offset, host.data(), host.size() * 4);
                w.add_tensor(base + (i == 0 ? ".lora_a" : ".lora_b"), dtype::f32, {x.ne[0], x.ne[1]}, host.data(),
                             host.size() * 4);
            }
        }
    }
    w.write(path);
}

std::unique_ptr<lora_adapter> lora_adapter::load(const std::string& path, const model& m) {
    const gguf_file f = gguf_file::open(path);
    auto fail = [&](const std::string& what) -> void { throw error(TANDEM_ERR_FORMAT, path + ": " + what); };
    auto str_key = [&](const char* key) -> std::string {
        const gguf_value* v = f.find(key);
        return v && v->type == gguf_type::string ? v->as_string(key) : std::string();
    };
    const std::string type = str_key("general.type");
    if (type != "adapter") {
        fail("not a LoRA adapter (general.type is " + (type.empty() ? std::string("missing") : "'" + type + "'") +
             ", expected 'adapter')");
    }
    const std::string atype = str_key("adapter.type");
    if (atype != "lora") {
        throw error(TANDEM_ERR_UNSUPPORTED, path + ": adapter.type is " +
                                                (atype.empty() ? std::string("missing") : "'" + atype + "'") +
                                                "; only 'lora' adapters are supported");
    }
    const std::string arch = str_key("general.architecture");
    if (!arch.empty() && arch != "llama") {
        throw error(TANDEM_ERR_UNSUPPORTED, path + ": adapter for architecture '" + arch + "', the model is 'llama'");
    }

    // Pair every <base>.lora_a with its <base>.lora_b and check both against the base weight.
    struct found {
        const gguf_tensor_info* a = nullptr;
        const gguf_tensor_info* b = nullptr;
    };
    std::map<std::pair<int32_t, int32_t>, found> by_base;
    for (const auto& t : f.tensors()) {
        const bool is_a = ends_with(t.name, ".lora_a"), is_b = ends_with(t.name, ".lora_b");
        if (!is_a && !is_b) fail("tensor '" + t.name + "' is neither a .lora_a nor a .lora_b tensor");
        const std::string base = t.name.substr(0, t.name.size() - 7);
        int32_t layer = 0;
        lora_target target{};
        if (!parse_lora_base_tensor_name(base, &layer, &target)) {
            throw error(TANDEM_ERR_UNSUPPORTED, path + ": tensor '" + t.name + "' adapts '" + base +
                                                    "', which is not an adaptable projection (blk.N.attn_q/attn_k/"
                                                    "attn_v/attn_output/ffn_gate/ffn_down/ffn_up.weight)");
        }
        if (layer >= m.hparams().n_layer) {
            fail("tensor '" + t.name + "' adapts '" + base + "', which is not in the model (it has " +
                 std::to_string(m.hparams().n_layer) + " layers)");
        }
        if (t.type != dtype::f32 && t.type != dtype::f16) {
            throw error(TANDEM_ERR_UNSUPPORTED, path + ": tensor '" + t.name + "' has type " +
                                                    std::string(dtype_name(t.type)) + " (only f32 and f16 are read)");
        }
        auto& slot = by_base[{layer, int32_t(target)}];
        (is_a ? slot.a : slot.b) = &t;
    }
    if (by_base.empty()) fail("the adapter has no tensors");
    int32_t rank = 0;
    std::vector<lora_adapter_builder::pending> pairs;
    for (const auto& [key, fd] : by_base) {
        const std::string base = lora_base_tensor_name(key.first, lora_target(key.second));
        if (!fd.a) fail("'" + base + ".lora_b' has no matching '" + base + ".lora_a'");
        if (!fd.b) fail("'" + base + ".lora_a' has no matching '" + base + ".lora_b'");
        const tensor& w = base_weight(m, key.first, lora_target(key.second));
        const int64_t K = w.ne[0], N = w.ne[1];
        const int64_t r = fd.a->ne.size() == 2 ? fd.a->ne[1] : 0;
        if (fd.a->ne.size() != 2 || fd.a->ne[0] != K || r < 1) {
            fail("tensor '" + fd.a->name + "' has shape " + shape_str(fd.a->ne) + ", expected {" + std::to_string(K) +
                 ", rank} for base '" + base + "' of shape {" + std::to_string(K) + ", " + std::to_string(N) + "}");
        }
        if (fd.b->ne != std::vector<int64_t>{r, N}) {
            fail("tensor '" + fd.b->name + "' has shape " + shape_str(fd.b->ne) + ", expected {" + std::to_string(r) +
                 ", " + std::to_string(N) + "} (rank " + std::to_string(r) + " from its lora_a, base '" + base +
                 "' of shape {" + std::to_string(K) + ", " + std::to_string(N) + "})");
        }
        if (rank != 0 && r != rank) {
            fail("tensor '" + fd.a->name + "' has rank " + std::to_string(r) + " but earlier tensors have rank " +
                 std::to_string(rank) + " (mixed ranks are not supported)");
        }
        rank = int32_t(r);
        pairs.push_back({key.first, lora_target(key.second), K, N});
    }
    float alpha = float(rank);  // llama.cpp: no alpha means a factor of 1 (alpha = rank)
    if (const gguf_value* v = f.find("adapter.lora.alpha")) {
        alpha = float(v->as_float("adapter.lora.alpha"));
        if (!std::isfinite(alpha)) fail("adapter.lora.alpha is not finite");
        if (alpha == 0.f) alpha = float(rank);  // llama.cpp treats 0 as unset
    }

    auto a = lora_adapter_builder::build(m, rank, alpha, pairs);
    std::vector<float> host;
    for (const auto& p : pairs) {
        const found& fd = by_base[{p.layer, int32_t(p.t)}];
        const lora_pair& pr = *a->layers_[size_t(p.layer)][size_t(p.t)];
        for (int i = 0; i < 2; ++i) {
            const gguf_tensor_info& info = *(i == 0 ? fd.a : fd.b);
            const tensor& dst = i == 0 ? pr.a : pr.b;
            host.resize(size_t(info.nelements()));
            const uint8_t* src = f.tensor_data(info);
            if (info.type == dtype::f32) {
                std::memcpy(host.data(), src, host.size() * 4);
            } else {
                for (size_t j = 0; j < host.size(); ++j) {
                    uint16_t h;
                    std::memcpy(&h, src + 2 * j, 2);
                    host[j] = fp16_to_fp32(h);
                }
            }
            a->be_->upload(*a->data_, dst.offset, host.data(), host.size() * 4);
        }
    }
    return a;
}

}  // namespace tandem
