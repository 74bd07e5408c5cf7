// LoRA adapters: target names, creation, the llama.cpp adapter GGUF layout (round trip, exact keys and tensor
// names), load errors, inference with adapters (B = 0 is bit-identical on every backend; a nonzero adapter equals
// the merged model of export-lora), and the CLI's --lora / export-lora.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/forward.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

// A temporary directory per test, removed afterwards.
class temp_dir {
 public:
    temp_dir() {
        path_ = fs::temp_directory_path() /
                ("tandem_lora_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
        fs::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
    fs::path path_;
    static inline int counter_ = 0;
};

std::unique_ptr<model> load_stories(const std::string& backend = "cpu_ref") {
    return model::load(test::model_path("stories260K.gguf"), make_backend(backend));
}

const std::vector<lora_target> every_target = {lora_target::q,    lora_target::k,    lora_target::v, lora_target::o,
                                               lora_target::gate, lora_target::down, lora_target::up};

std::vector<float> download(const lora_adapter& a, const tensor& t) {
    std::vector<float> v(size_t(t.nelements()));
    a.be().download(*t.buf, t.offset, v.data(), v.size() * 4);
    return v;
}

// Fills every B of the adapter with U(-amp, amp) from `seed` (A keeps its Kaiming init), making it nonzero.
void randomize_b(lora_adapter& a, uint64_t seed, float amp) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_real_distribution<float> u(-amp, amp);
    const auto params = a.parameters();
    for (size_t i = 1; i < params.size(); i += 2) {
        std::vector<float> v(size_t(params[i].nelements()));
        for (float& x : v) x = u(rng);
        a.be().upload(*params[i].buf, params[i].offset, v.data(), v.size() * 4);
    }
}

// The logits of a 10-token prompt (every row, one batch) followed by 3 single-row decode steps: both the batched
// and the M = 1 paths of the forward pass.
std::vector<float> prompt_logits(const model& m) {
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 300, 289, 326, 267, 373};
    kv_cache cache(m, 64);
    forward_pass f(m, cache);
    std::vector<float> all, lg;
    f.run(causal_rows(prompt, 0, 0, true), all);
    int32_t pos = int32_t(prompt.size());
    for (int32_t tok : {300, 412, 290}) {
        const std::vector<int32_t> one = {tok};
        f.run(causal_rows(one, pos++, 0, false), lg);
        all.insert(all.end(), lg.begin(), lg.end());
    }
    return all;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float worst = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
    return worst;
}

// Expects `f` to throw tandem::error with `status` and a message containing every one of `parts`.
template <typename F>
void expect_error(F&& f, tandem_status status, std::initializer_list<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "no error thrown";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), status) << e.what();
        for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
}

TEST(lora, target_names_parse_and_map_to_gguf_tensors) {
    EXPECT_EQ(parse_lora_targets("q,v"), (std::vector<lora_target>{lora_target::q, lora_target::v}));
    EXPECT_EQ(parse_lora_targets("v, q"), (std::vector<lora_target>{lora_target::q, lora_target::v}));
    EXPECT_EQ(parse_lora_targets("all"), every_target);
    EXPECT_EQ(parse_lora_targets("attn").size(), 4u);
    EXPECT_EQ(parse_lora_targets("w1,w2,w3"),
              (std::vector<lora_target>{lora_target::gate, lora_target::down, lora_target::up}));
    expect_error([] { parse_lora_targets("q,bogus"); }, TANDEM_ERR_INVALID_ARGUMENT, {"'bogus'"});
    expect_error([] { parse_lora_targets(""); }, TANDEM_ERR_INVALID_ARGUMENT, {"empty"});

    EXPECT_EQ(lora_base_tensor_name(3, lora_target::o), "blk.3.attn_output.weight");
    EXPECT_EQ(lora_base_tensor_name(0, lora_target::gate), "blk.0.ffn_gate.weight");
    // Every name maps back, and every name is a tensor the model loads with the shape of its base weight.
    const auto m = load_stories();
    for (int32_t l = 0; l < m->hparams().n_layer; ++l) {
        for (lora_target t : every_target) {
            const std::string name = lora_base_tensor_name(l, t);
            int32_t l2 = -1;
            lora_target t2{};
            ASSERT_TRUE(parse_lora_base_tensor_name(name, &l2, &t2)) << name;
            EXPECT_EQ(l2, l);
            EXPECT_EQ(t2, t);
            EXPECT_NE(m->file().find_tensor(name), nullptr) << name;
        }
    }
    int32_t l = 0;
    lora_target t{};
    EXPECT_FALSE(parse_lora_base_tensor_name("token_embd.weight", &l, &t));
    EXPECT_FALSE(parse_lora_base_tensor_name("blk.0.attn_norm.weight", &l, &t));
    EXPECT_FALSE(parse_lora_base_tensor_name("blk.x.attn_q.weight", &l, &t));
}

TEST(lora, create_gives_kaiming_a_zero_b_and_ordered_parameters) {
    const auto m = load_stories();
    lora_config cfg;
    cfg.rank = 4;
    cfg.alpha = 8;
    cfg.targets = {lora_target::v, lora_target::q, lora_target::down};
    const auto a = lora_adapter::create(*m, cfg, 7);
    EXPECT_EQ(a->rank(), 4);
    EXPECT_EQ(a->alpha(), 8.f);
    EXPECT_EQ(a->targets(), (std::vector<lora_target>{lora_target::q, lora_target::v, lora_target::down}));
    const auto params = a->parameters();
    ASSERT_EQ(params.size(), size_t(m->hparams().n_layer) * 3 * 2);
    size_t i = 0;
    for (int32_t l = 0; l < m->hparams().n_layer; ++l) {
        EXPECT_EQ(a->get(l, lora_target::k), nullptr);
        for (lora_target t : a->targets()) {
            const lora_pair* p = a->get(l, t);
            ASSERT_NE(p, nullptr);
            const auto* base = m->file().find_tensor(lora_base_tensor_name(l, t));
            const int64_t K = base->ne[0], N = base->ne[1];
            EXPECT_EQ(p->a.ne, (std::array<int64_t, 4>{K, 4, 1, 1}));
            EXPECT_EQ(p->b.ne, (std::array<int64_t, 4>{4, N, 1, 1}));
            EXPECT_EQ(params[i].offset, p->a.offset);
            EXPECT_EQ(params[i + 1].offset, p->b.offset);
            i += 2;
            const auto av = download(*a, p->a), bv = download(*a, p->b);
            const float bound = 1.f / std::sqrt(float(K));
            float amax = 0;
            for (float x : av) amax = std::max(amax, std::abs(x));
            EXPECT_LE(amax, bound);
            EXPECT_GT(amax, 0.5f * bound);  // hundreds of uniform draws: the largest is close to the bound
            for (float x : bv) EXPECT_EQ(x, 0.f);
        }
    }
    // The same seed gives the same A; another seed another.
    const auto a2 = lora_adapter::create(*m, cfg, 7), a3 = lora_adapter::create(*m, cfg, 8);
    EXPECT_EQ(download(*a, params[0]), download(*a2, a2->parameters()[0]));
    EXPECT_NE(download(*a, params[0]), download(*a3, a3->parameters()[0]));

    cfg.rank = 0;
    expect_error([&] { lora_adapter::create(*m, cfg, 1); }, TANDEM_ERR_INVALID_ARGUMENT, {"rank"});
    cfg.rank = 4;
    cfg.targets.clear();
    expect_error([&] { lora_adapter::create(*m, cfg, 1); }, TANDEM_ERR_INVALID_ARGUMENT, {"targets"});
}

TEST(lora, save_load_round_trip_is_bit_identical) {
    temp_dir dir;
    const auto m = load_stories();
    lora_config cfg;
    cfg.rank = 3;
    cfg.alpha = 5.5f;
    cfg.targets = every_target;
    auto a = lora_adapter::create(*m, cfg, 11);
    randomize_b(*a, 12, 0.1f);
    a->save(dir.file("a.gguf"), *m);
    const auto b = lora_adapter::load(dir.file("a.gguf"), *m);
    EXPECT_EQ(b->rank(), 3);
    EXPECT_EQ(b->alpha(), 5.5f);
    EXPECT_EQ(b->targets(), every_target);
    const auto pa = a->parameters(), pb = b->parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
        EXPECT_EQ(pa[i].ne, pb[i].ne) << i;
        const auto va = download(*a, pa[i]), vb = download(*b, pb[i]);
        ASSERT_EQ(va.size(), vb.size());
        EXPECT_EQ(std::memcmp(va.data(), vb.data(), va.size() * 4), 0) << "parameter " << i;
    }
}

// The keys and tensors llama.cpp's adapter loader reads (llama-adapter.cpp / convert_lora_to_gguf.py): exactly
// general.architecture, general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32), and per adapted
// weight "<base name>.lora_a" with ne {K, r} and "<base name>.lora_b" with ne {r, N}, f32.
TEST(lora, gguf_has_llama_cpp_adapter_keys_and_tensors) {
    temp_dir dir;
    const auto m = load_stories();
    lora_config cfg;
    cfg.rank = 2;
    cfg.alpha = 4;
    cfg.targets = {lora_target::q, lora_target::v, lora_target::up};
    lora_adapter::create(*m, cfg, 1)->save(dir.file("a.gguf"), *m);
    const gguf_file f = gguf_file::open(dir.file("a.gguf"));
    std::vector<std::pair<std::string, gguf_type>> keys;
    for (const auto& [k, v] : f.metadata()) keys.emplace_back(k, v.type);
    EXPECT_EQ(keys, (std::vector<std::pair<std::string, gguf_type>>{{"general.architecture", gguf_type::string},
                                                                    {"general.type", gguf_type::string},
                                                                    {"adapter.type", gguf_type::string},
                                                                    {"adapter.lora.alpha", gguf_type::f32}}));
    EXPECT_EQ(f.get("general.architecture").as_string(""), "llama");
    EXPECT_EQ(f.get("general.type").as_string(""), "adapter");
    EXPECT_EQ(f.get("adapter.type").as_string(""), "lora");
    EXPECT_EQ(f.get("adapter.lora.alpha").as_float(""), 4.0);

    std::set<std::string> want;
    for (int32_t l = 0; l < m->hparams().n_layer; ++l) {
        for (const char* stem : {"attn_q", "attn_v", "ffn_up"}) {
            want.insert("blk." + std::to_string(l) + "." + stem + ".weight.lora_a");
            want.insert("blk." + std::to_string(l) + "." + stem + ".weight.lora_b");
        }
    }
    std::set<std::string> got;
    for (const auto& t : f.tensors()) {
        got.insert(t.name);
        EXPECT_EQ(t.type, dtype::f32) << t.name;
        const bool is_a = t.name.ends_with(".lora_a");
        const auto* base = m->file().find_tensor(t.name.substr(0, t.name.size() - 7));
        ASSERT_NE(base, nullptr) << t.name;
        const std::vector<int64_t> ne =
            is_a ? std::vector<int64_t>{base->ne[0], 2} : std::vector<int64_t>{2, base->ne[1]};
        EXPECT_EQ(t.ne, ne) << t.name;
    }
    EXPECT_EQ(got, want);
}

TEST(lora, f16_tensors_load_widened_and_missing_alpha_means_rank) {
    temp_dir dir;
    const auto m = load_stories();
    const int64_t E = m->hparams().n_embd;
    std::vector<uint16_t> a16(size_t(E * 2)), b16(size_t(2 * E));
    for (size_t i = 0; i < a16.size(); ++i) a16[i] = fp32_to_fp16(float(i % 17) * 0.125f - 1.f);
    for (size_t i = 0; i < b16.size(); ++i) b16[i] = fp32_to_fp16(float(i % 5) * 0.25f);
    gguf_writer w;
    w.set_string("general.type", "adapter");
    w.set_string("adapter.type", "lora");
    w.add_tensor("blk.1.attn_k.weight.lora_a", dtype::f16, {E, 2}, a16.data(), a16.size() * 2);
    w.add_tensor("blk.1.attn_k.weight.lora_b", dtype::f16, {2, m->file().find_tensor("blk.1.attn_k.weight")->ne[1]},
                 b16.data(), size_t(2 * m->hparams().kv_dim()) * 2);
    w.write(dir.file("f16.gguf"));
    const auto a = lora_adapter::load(dir.file("f16.gguf"), *m);
    EXPECT_EQ(a->rank(), 2);
    EXPECT_EQ(a->alpha(), 2.f);
    EXPECT_EQ(a->targets(), std::vector<lora_target>{lora_target::k});
    const auto av = download(*a, a->get(1, lora_target::k)->a);
    for (size_t i = 0; i < av.size(); ++i) EXPECT_EQ(av[i], fp16_to_fp32(a16[i]));
    EXPECT_EQ(a->get(0, lora_target::k), nullptr);
}

// Writes an adapter GGUF with the given tensors (f32, zero-filled) and keys.
void write_adapter(const std::string& path, const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                   const char* general_type = "adapter", const char* adapter_type = "lora") {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    if (general_type) w.set_string("general.type", general_type);
    if (adapter_type) w.set_string("adapter.type", adapter_type);
    w.set_f32("adapter.lora.alpha", 4.f);
    for (const auto& [name, ne] : tensors) {
        int64_t n = 1;
        for (int64_t x : ne) n *= x;
        std::vector<float> zeros(static_cast<size_t>(n));
        w.add_tensor(name, dtype::f32, ne, zeros.data(), zeros.size() * 4);
    }
    w.write(path);
}

TEST(lora, load_errors_name_the_problem) {
    temp_dir dir;
    const auto m = load_stories();
    const int64_t E = m->hparams().n_embd, kv = m->hparams().kv_dim();
    const std::string q = "blk.0.attn_q.weight";
    auto load = [&](const std::string& p) { return [&m, p] { lora_adapter::load(p, *m); }; };

    expect_error(load(test::model_path("stories260K.gguf")), TANDEM_ERR_FORMAT, {"not a LoRA adapter", "general.type"});
    write_adapter(dir.file("cv.gguf"), {{q + ".lora_a", {E, 2}}, {q + ".lora_b", {2, E}}}, "adapter", "control_vector");
    expect_error(load(dir.file("cv.gguf")), TANDEM_ERR_UNSUPPORTED, {"'control_vector'", "lora"});

    write_adapter(dir.file("shape_a.gguf"), {{q + ".lora_a", {E / 2, 2}}, {q + ".lora_b", {2, E}}});
    expect_error(load(dir.file("shape_a.gguf")), TANDEM_ERR_FORMAT, {q + ".lora_a", "{32, 2}", "expected {64, rank}"});
    write_adapter(dir.file("shape_b.gguf"),
                  {{"blk.1.attn_v.weight.lora_a", {E, 2}}, {"blk.1.attn_v.weight.lora_b", {2, E + 1}}});
    expect_error(load(dir.file("shape_b.gguf")), TANDEM_ERR_FORMAT,
                 {"blk.1.attn_v.weight.lora_b", "expected {2, " + std::to_string(kv) + "}"});
    // A transposed B (llama.cpp's old finetune layout) is a shape error too.
    write_adapter(dir.file("transposed.gguf"), {{q + ".lora_a", {E, 2}}, {q + ".lora_b", {E, 2}}});
    expect_error(load(dir.file("transposed.gguf")), TANDEM_ERR_FORMAT, {q + ".lora_b", "expected {2, 64}"});

    write_adapter(dir.file("no_b.gguf"), {{q + ".lora_a", {E, 2}}});
    expect_error(load(dir.file("no_b.gguf")), TANDEM_ERR_FORMAT, {q + ".lora_a' has no matching '" + q + ".lora_b'"});
    write_adapter(dir.file("no_a.gguf"), {{q + ".lora_b", {2, E}}});
    expect_error(load(dir.file("no_a.gguf")), TANDEM_ERR_FORMAT, {"has no matching '" + q + ".lora_a'"});

    write_adapter(dir.file("layer.gguf"),
                  {{"blk.99.attn_q.weight.lora_a", {E, 2}}, {"blk.99.attn_q.weight.lora_b", {2, E}}});
    expect_error(load(dir.file("layer.gguf")), TANDEM_ERR_FORMAT, {"blk.99.attn_q.weight", "not in the model"});
    write_adapter(dir.file("embd.gguf"),
                  {{"token_embd.weight.lora_a", {E, 2}}, {"token_embd.weight.lora_b", {2, 512}}});
    expect_error(load(dir.file("embd.gguf")), TANDEM_ERR_UNSUPPORTED, {"token_embd.weight", "not an adaptable"});

    write_adapter(dir.file("mixed.gguf"), {{q + ".lora_a", {E, 2}},
                                           {q + ".lora_b", {2, E}},
                                           {"blk.1.attn_q.weight.lora_a", {E, 3}},
                                           {"blk.1.attn_q.weight.lora_b", {3, E}}});
    expect_error(load(dir.file("mixed.gguf")), TANDEM_ERR_FORMAT, {"mixed ranks"});
    write_adapter(dir.file("empty.gguf"), {});
    expect_error(load(dir.file("empty.gguf")), TANDEM_ERR_FORMAT, {"no tensors"});

    // A valid adapter cut short: the GGUF reader refuses it before any tensor is read.
    lora_config cfg;
    lora_adapter::create(*m, cfg, 3)->save(dir.file("full.gguf"), *m);
    const auto size = fs::file_size(dir.file("full.gguf"));
    fs::copy_file(dir.file("full.gguf"), dir.file("cut.gguf"));
    fs::resize_file(dir.file("cut.gguf"), size - 100);
    expect_error(load(dir.file("cut.gguf")), TANDEM_ERR_FORMAT, {"cut.gguf"});
    expect_error(load(dir.file("missing.gguf")), TANDEM_ERR_IO, {"missing.gguf"});
}

TEST(lora, add_adapter_refuses_another_backend_instance) {
    const auto m = load_stories(), other = load_stories();
    std::shared_ptr<const lora_adapter> a = lora_adapter::create(*other, lora_config{}, 1);
    expect_error([&] { m->add_adapter(a, 1.f); }, TANDEM_ERR_INVALID_ARGUMENT, {"another backend"});
    EXPECT_TRUE(m->adapters().empty());
}

// (c) An adapter with B = 0 leaves every logit bit-identical (y + 0 = y), on every backend that runs the adapter
// ops; and the same adapter with a nonzero B does change them, agreeing with cpu_ref (so the ops really ran).
// Named *across_backends* so ctest gives it the Vulkan environment.
class lora_across_backends : public ::testing::TestWithParam<std::string> {};

TEST_P(lora_across_backends, zero_b_is_bit_identical_and_nonzero_b_matches_cpu_ref) {
    std::string why;
    auto be = test::try_backend(GetParam(), why);
    if (!be) GTEST_SKIP() << GetParam() << ": " << why;
    for (op o : {op::scale, op::matmul, op::add}) {
        if (!be->supports(o, dtype::f32)) GTEST_SKIP() << GetParam() << " does not support op " << op_name(o) << " yet";
    }
    const auto m = model::load(test::model_path("stories260K.gguf"), std::move(be));
    const auto base = prompt_logits(*m);
    lora_config cfg;
    cfg.rank = 4;
    cfg.alpha = 8;
    cfg.targets = every_target;
    auto a = std::shared_ptr<lora_adapter>(lora_adapter::create(*m, cfg, 5));
    m->add_adapter(a, 1.7f);
    const auto zero = prompt_logits(*m);
    ASSERT_EQ(zero.size(), base.size());
    EXPECT_EQ(std::memcmp(zero.data(), base.data(), base.size() * 4), 0) << "B = 0 changed the logits";

    randomize_b(*a, 6, 0.05f);
    const auto adapted = prompt_logits(*m);
    const float effect = max_abs_diff(adapted, base);
    EXPECT_GT(effect, 0.05f) << "a nonzero adapter did not change the logits";
    if (GetParam() != "cpu_ref") {
        const auto r = load_stories("cpu_ref");
        auto ra = std::shared_ptr<lora_adapter>(lora_adapter::create(*r, cfg, 5));
        randomize_b(*ra, 6, 0.05f);
        r->add_adapter(ra, 1.7f);
        // Same math in another summation order; logits are O(10) (the forward tests' tolerance).
        const float err = max_abs_diff(adapted, prompt_logits(*r));
        std::printf("%s: adapter moves logits by up to %.3g; vs cpu_ref %.3g\n", GetParam().c_str(), effect, err);
        EXPECT_LT(err, 2e-3f);
    }
    m->clear_adapters();
    const auto cleared = prompt_logits(*m);
    EXPECT_EQ(std::memcmp(cleared.data(), base.data(), base.size() * 4), 0);
}

INSTANTIATE_TEST_SUITE_P(backends, lora_across_backends, ::testing::ValuesIn(backend_names()),
                         [](const auto& info) { return info.param; });

// (d) Adapters applied in the forward pass equal the model merged by export-lora (f32), and two adapters add up.
TEST(lora, forward_with_adapters_equals_merged_model) {
    temp_dir dir;
    const std::string base_path = test::model_path("stories260K.gguf");
    auto m = load_stories();
    const auto base = prompt_logits(*m);
    lora_config cfg;
    cfg.rank = 4;
    cfg.alpha = 8;
    cfg.targets = every_target;
    auto a1 = lora_adapter::create(*m, cfg, 21);
    randomize_b(*a1, 22, 0.05f);
    a1->save(dir.file("a1.gguf"), *m);
    cfg.rank = 2;
    cfg.alpha = 3;
    cfg.targets = {lora_target::q, lora_target::v};
    auto a2 = lora_adapter::create(*m, cfg, 23);
    randomize_b(*a2, 24, 0.2f);
    a2->save(dir.file("a2.gguf"), *m);

    m->add_adapter(lora_adapter::load(dir.file("a1.gguf"), *m), 0.8f);
    m->add_adapter(lora_adapter::load(dir.file("a2.gguf"), *m), -1.5f);
    const auto adapted = prompt_logits(*m);
    const auto res = export_merged(base_path, {{dir.file("a1.gguf"), 0.8f}, {dir.file("a2.gguf"), -1.5f}},
                                   dir.file("merged.gguf"), dtype::f32);
    EXPECT_EQ(res.n_merged, 7 * m->hparams().n_layer);
    const auto merged = model::load(dir.file("merged.gguf"), make_backend("cpu_ref"));
    const auto merged_logits = prompt_logits(*merged);
    EXPECT_GT(max_abs_diff(adapted, base), 0.1f) << "the adapters barely change the logits: the test would be weak";
    // W x + s B (A x) vs (W + s B A) x: the same sums rounded in another order; logits are O(10).
    const float err = max_abs_diff(adapted, merged_logits);
    std::printf("adapters move logits by up to %.3g; forward vs merged %.3g\n", max_abs_diff(adapted, base), err);
    EXPECT_LT(err, 1e-3f);

    // Metadata and untouched tensors are copied unchanged.
    const gguf_file in = gguf_file::open(base_path), out = gguf_file::open(dir.file("merged.gguf"));
    EXPECT_EQ(in.metadata().size(), out.metadata().size());
    const auto* e_in = in.find_tensor("token_embd.weight");
    const auto* e_out = out.find_tensor("token_embd.weight");
    ASSERT_TRUE(e_in && e_out);
    EXPECT_EQ(std::memcmp(in.tensor_data(*e_in), out.tensor_data(*e_out), e_in->nbytes), 0);
}

// Quantized bases: dequantize, merge, re-quantize to the same type. The re-quantization error must be small next
// to the adapter's effect (a merge with a wrong sign or factor would be as far from the adapted logits as the base).
TEST(lora, export_requantizes_a_quantized_base) {
    temp_dir dir;
    const std::string q8 = test::quantized_stories260k("q8_0");
    const auto m = model::load(q8, make_backend("cpu_ref"));
    const auto base = prompt_logits(*m);
    lora_config cfg;
    cfg.targets = every_target;
    std::shared_ptr<lora_adapter> a = lora_adapter::create(*m, cfg, 31);
    randomize_b(*a, 32, 0.05f);
    a->save(dir.file("a.gguf"), *m);
    m->add_adapter(a, 1.f);
    const auto adapted = prompt_logits(*m);
    export_merged(q8, {{dir.file("a.gguf"), 1.f}}, dir.file("merged.gguf"), std::nullopt);
    const gguf_file in = gguf_file::open(q8), out = gguf_file::open(dir.file("merged.gguf"));
    for (const auto& t : in.tensors()) EXPECT_EQ(out.find_tensor(t.name)->type, t.type) << t.name;
    const auto merged = model::load(dir.file("merged.gguf"), make_backend("cpu_ref"));
    const float effect = max_abs_diff(adapted, base), err = max_abs_diff(adapted, prompt_logits(*merged));
    std::printf("q8_0: adapter moves logits by up to %.3g; forward vs merged + re-quantized %.3g\n", effect, err);
    EXPECT_GT(effect, 0.1f);
    EXPECT_LT(err, 0.25f * effect);

    expect_error([&] { export_merged(q8, {}, dir.file("x.gguf"), std::nullopt); }, TANDEM_ERR_INVALID_ARGUMENT,
                 {"no adapters"});
}

// (f) `tandem generate --lora` with a B = 0 adapter prints the same text as without; a strong adapter changes it;
// export-lora writes a model the CLI loads.
TEST(lora, cli_generate_lora_and_export) {
    temp_dir dir;
    const auto m = load_stories();
    lora_config cfg;
    cfg.targets = every_target;
    auto a = lora_adapter::create(*m, cfg, 41);
    a->save(dir.file("zero.gguf"), *m);
    randomize_b(*a, 42, 0.5f);
    a->save(dir.file("strong.gguf"), *m);

    const std::string gen = "generate --temp 0 -n 40 --no-timings -b cpu_ref -p \"Once upon a time\"";
    const auto [c0, plain] = test::run_cli(gen, false);
    const auto [c1, zero] = test::run_cli(gen + " --lora " + dir.file("zero.gguf") + ":2.5", false);
    const auto [c2, strong] = test::run_cli(gen + " --lora " + dir.file("strong.gguf"), false);
    EXPECT_EQ(c0, 0);
    EXPECT_EQ(c1, 0);
    EXPECT_EQ(c2, 0);
    EXPECT_GT(plain.size(), 40u);
    EXPECT_EQ(zero, plain);
    EXPECT_NE(strong, plain);

    const auto [c3, bad] = test::run_cli(gen + " --lora " + dir.file("nope.gguf"));
    EXPECT_NE(c3, 0);
    EXPECT_NE(bad.find("nope.gguf"), std::string::npos) << bad;

    const auto [c4, exp] = test::run_cli("export-lora -m " + test::model_path("stories260K.gguf") + " --lora " +
                                   dir.file("strong.gguf") + ":0.5 -o " + dir.file("merged.gguf") + " --outtype f16");
    EXPECT_EQ(c4, 0) << exp;
    const gguf_file out = gguf_file::open(dir.file("merged.gguf"));
    EXPECT_EQ(out.find_tensor("blk.0.attn_q.weight")->type, dtype::f16);
    EXPECT_EQ(out.find_tensor("token_embd.weight")->type, dtype::f32);
    const auto [c5, merged_text] =
        test::run_cli("generate --temp 0 -n 10 --no-timings -b cpu_ref -m " + dir.file("merged.gguf"));
    EXPECT_EQ(c5, 0) << merged_text;

    const auto [c6, ppl] = test::run_cli("perplexity -b cpu_ref --chars 2000 -f " +
                                   test::model_path("tinystories_valid_head.txt") + " --lora " + dir.file("zero.gguf"));
    EXPECT_EQ(c6, 0) << ppl;
    EXPECT_NE(ppl.find("LoRA adapter"), std::string::npos) << ppl;
}

}  // namespace
}  // namespace tandem
