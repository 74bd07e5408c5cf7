// llama2.c importer tests: stories260K.bin converts to a file matching the reference stories260K.gguf
// (keys, value types, values, tensor names, shapes, types and bytes), the shipped llama2xs GGUF is reproduced
// byte for byte, and malformed checkpoints or tokenizers are refused with a message naming the problem.
#include <gtest/gtest.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/llama2c.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

// Values compared bitwise (scores hold -0.0, which == would not distinguish from 0.0).
bool same_value(const gguf_value& a, const gguf_value& b) {
    if (a.type != b.type || (a.type == gguf_type::array && a.elem_type != b.elem_type)) return false;
    if (a.v.index() != b.v.index()) return false;
    return std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            const auto& y = std::get<T>(b.v);
            if constexpr (std::is_same_v<T, double>)
                return std::bit_cast<uint64_t>(x) == std::bit_cast<uint64_t>(y);
            else if constexpr (std::is_same_v<T, std::vector<double>>) {
                if (x.size() != y.size()) return false;
                for (size_t i = 0; i < x.size(); ++i)
                    if (std::bit_cast<uint64_t>(x[i]) != std::bit_cast<uint64_t>(y[i])) return false;
                return true;
            } else {
                return x == y;
            }
        },
        a.v);
}

void write_file(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), std::streamsize(data.size()));
    ASSERT_TRUE(out.good()) << path;
}

void set_i32(std::string& b, size_t index, int32_t v) { std::memcpy(b.data() + 4 * index, &v, 4); }

class convert : public ::testing::Test {
 protected:
    void SetUp() override {
        std::string tmpl = ::testing::TempDir() + "tandem_convert_XXXXXX";
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
        dir_ = tmpl;
        stories_ = test::model_path("stories260K.bin");
        tok_ = test::model_path("tok512.bin");
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::string tmp(const std::string& name) const { return dir_ + "/" + name; }

    // Converts and expects a tandem::error with `status` whose message contains `word`.
    void expect_error(const std::string& ckpt, const std::string& tok, tandem_status status, const std::string& word) {
        const std::string out = tmp("bad.gguf");
        try {
            convert_llama2c(ckpt, tok, out, "bad");
            ADD_FAILURE() << "conversion succeeded, expected an error containing '" << word << "'";
        } catch (const error& e) {
            EXPECT_EQ(e.status(), status) << e.what();
            EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
        }
        EXPECT_FALSE(std::filesystem::exists(out));
        EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
    }
    // A copy of stories260K.bin with header field `index` set to `v`.
    std::string patched_header(size_t index, int32_t v, const std::string& name) {
        std::string b = test::read_file(stories_);
        set_i32(b, index, v);
        write_file(tmp(name), b);
        return tmp(name);
    }

    std::string dir_, stories_, tok_;
};

TEST_F(convert, stories260k_matches_reference) {
    const std::string out = tmp("stories260K.gguf");
    convert_llama2c(stories_, tok_, out, "stories260K");
    EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));
    const gguf_file got = gguf_file::open(out);
    const gguf_file ref = gguf_file::open(test::model_path("stories260K.gguf"));

    std::set<std::string> got_keys, ref_keys;
    for (const auto& [k, v] : got.metadata()) got_keys.insert(k);
    for (const auto& [k, v] : ref.metadata()) ref_keys.insert(k);
    EXPECT_EQ(got_keys, ref_keys);
    for (const auto& [k, rv] : ref.metadata()) {
        const gguf_value* gv = got.find(k);
        if (!gv) continue;  // reported above
        EXPECT_EQ(gv->type, rv.type) << k;
        if (rv.type == gguf_type::array) {
            EXPECT_EQ(gv->elem_type, rv.elem_type) << k;
        }
        // general.name is the caller's; llama.context_length is the trained seq_len, where the reference has
        // its converter's default 2048 (see engine/llama2c.cpp).
        if (k == "general.name" || k == "llama.context_length") continue;
        EXPECT_TRUE(same_value(*gv, rv)) << k << ": got " << gv->to_string() << ", reference " << rv.to_string();
    }
    EXPECT_EQ(got.get("general.name").as_string("general.name"), "stories260K");
    EXPECT_EQ(got.get("llama.context_length").as_uint("llama.context_length"), 512u);

    ASSERT_EQ(got.tensors().size(), ref.tensors().size());
    for (const auto& rt : ref.tensors()) {
        const gguf_tensor_info* gt = got.find_tensor(rt.name);
        ASSERT_NE(gt, nullptr) << rt.name;
        EXPECT_EQ(gt->type, rt.type) << rt.name;
        EXPECT_EQ(gt->ne, rt.ne) << rt.name;
        ASSERT_EQ(gt->nbytes, rt.nbytes) << rt.name;
        EXPECT_EQ(std::memcmp(got.tensor_data(*gt), ref.tensor_data(rt), rt.nbytes), 0) << rt.name;
    }
}

TEST_F(convert, llama2xs_shapes) {
    const std::string out = tmp("xs.gguf");
    convert_llama2c(test::model_path("llama2xs_tinystories_279K.bin"), tok_, out, "llama2xs_tinystories_279K");
    const gguf_file f = gguf_file::open(out);
    auto u = [&](const char* k) { return f.get(k).as_uint(k); };
    EXPECT_EQ(u("llama.embedding_length"), 64u);
    EXPECT_EQ(u("llama.feed_forward_length"), 192u);
    EXPECT_EQ(u("llama.block_count"), 5u);
    EXPECT_EQ(u("llama.attention.head_count"), 8u);
    EXPECT_EQ(u("llama.attention.head_count_kv"), 4u);
    EXPECT_EQ(u("llama.rope.dimension_count"), 8u);
    EXPECT_EQ(u("llama.context_length"), 256u);
    EXPECT_EQ(f.get("tokenizer.ggml.tokens").array_size(), 512u);
    EXPECT_EQ(f.tensors().size(), 3u + 5 * 9);
    const std::map<std::string, std::vector<int64_t>> shapes = {
        {"token_embd.weight", {64, 512}},       {"output.weight", {64, 512}},
        {"output_norm.weight", {64}},           {"blk.4.attn_q.weight", {64, 64}},
        {"blk.4.attn_k.weight", {64, 32}},      {"blk.4.attn_v.weight", {64, 32}},
        {"blk.4.attn_output.weight", {64, 64}}, {"blk.4.attn_norm.weight", {64}},
        {"blk.4.ffn_gate.weight", {64, 192}},   {"blk.4.ffn_down.weight", {192, 64}},
        {"blk.4.ffn_up.weight", {64, 192}},     {"blk.4.ffn_norm.weight", {64}},
    };
    for (const auto& [name, ne] : shapes) {
        const auto* t = f.find_tensor(name);
        ASSERT_NE(t, nullptr) << name;
        EXPECT_EQ(t->ne, ne) << name;
        EXPECT_EQ(t->type, dtype::f32) << name;
    }
}

// models/llama2xs_tinystories_279K.gguf was produced by this converter; it must stay reproducible.
TEST_F(convert, shipped_llama2xs_gguf_is_reproducible) {
    const std::string out = tmp("xs.gguf");
    convert_llama2c(test::model_path("llama2xs_tinystories_279K.bin"), tok_, out, "llama2xs_tinystories_279K");
    const std::string shipped = test::read_file(test::model_path("llama2xs_tinystories_279K.gguf"));
    const std::string fresh = test::read_file(out);
    EXPECT_EQ(shipped.size(), fresh.size());
    EXPECT_TRUE(shipped == fresh) << "models/llama2xs_tinystories_279K.gguf differs from a fresh conversion";
}

// A negative vocab_size means an untied classifier stored after freq_cis; it becomes output.weight.
TEST_F(convert, separate_classifier) {
    std::string b = test::read_file(stories_);
    set_i32(b, 5, -512);
    std::string wcls(512 * 64 * 4, '\0');
    for (size_t i = 0; i < 512 * 64; ++i) {
        const float x = float(i % 97) * 0.01f;
        std::memcpy(wcls.data() + 4 * i, &x, 4);
    }
    write_file(tmp("untied.bin"), b + wcls);
    const std::string out = tmp("untied.gguf");
    convert_llama2c(tmp("untied.bin"), tok_, out, "untied");
    const gguf_file f = gguf_file::open(out);
    const auto* o = f.find_tensor("output.weight");
    const auto* e = f.find_tensor("token_embd.weight");
    ASSERT_TRUE(o && e);
    EXPECT_EQ(std::memcmp(f.tensor_data(*o), wcls.data(), wcls.size()), 0);
    EXPECT_EQ(std::memcmp(f.tensor_data(*e), b.data() + 28, wcls.size()), 0);
    EXPECT_EQ(f.get("tokenizer.ggml.tokens").array_size(), 512u);
}

TEST_F(convert, bad_checkpoints) {
    const std::string full = test::read_file(stories_);
    write_file(tmp("short.bin"), full.substr(0, full.size() - 4));
    expect_error(tmp("short.bin"), tok_, TANDEM_ERR_FORMAT, "truncated");
    expect_error(tmp("short.bin"), tok_, TANDEM_ERR_FORMAT, "expected 1056540 bytes");
    write_file(tmp("long.bin"), full + "abcd");
    expect_error(tmp("long.bin"), tok_, TANDEM_ERR_FORMAT, "trailing");
    write_file(tmp("tiny.bin"), full.substr(0, 20));
    expect_error(tmp("tiny.bin"), tok_, TANDEM_ERR_FORMAT, "header");

    expect_error(patched_header(0, 0, "dim0.bin"), tok_, TANDEM_ERR_FORMAT, "dim is 0");
    expect_error(patched_header(1, -5, "hidden.bin"), tok_, TANDEM_ERR_FORMAT, "hidden_dim is -5");
    expect_error(patched_header(2, -1, "layers.bin"), tok_, TANDEM_ERR_FORMAT, "n_layers is -1");
    expect_error(patched_header(3, 0, "heads0.bin"), tok_, TANDEM_ERR_FORMAT, "n_heads is 0");
    expect_error(patched_header(4, 0, "kv0.bin"), tok_, TANDEM_ERR_FORMAT, "n_kv_heads is 0");
    expect_error(patched_header(5, 0, "vocab0.bin"), tok_, TANDEM_ERR_FORMAT, "vocab_size is 0");
    expect_error(patched_header(6, 0, "seq0.bin"), tok_, TANDEM_ERR_FORMAT, "seq_len is 0");
    expect_error(patched_header(3, 7, "heads7.bin"), tok_, TANDEM_ERR_FORMAT, "n_heads 7 does not divide dim 64");
    expect_error(patched_header(4, 3, "kv3.bin"), tok_, TANDEM_ERR_FORMAT, "n_kv_heads 3 does not divide");
    expect_error(patched_header(3, 64, "odd_head.bin"), tok_, TANDEM_ERR_FORMAT, "even");
    expect_error(patched_header(6, 1024, "seq.bin"), tok_, TANDEM_ERR_FORMAT, "expected");
    {
        std::string b = full;
        set_i32(b, 0, 1 << 30);
        set_i32(b, 1, 1 << 30);
        set_i32(b, 2, 1 << 30);
        set_i32(b, 3, 1 << 29);
        set_i32(b, 4, 1 << 29);
        write_file(tmp("huge.bin"), b);
        expect_error(tmp("huge.bin"), tok_, TANDEM_ERR_FORMAT, "overflow");
    }
    {
        std::string b = full;
        std::memcpy(b.data(), "24ka", 4);  // the v1/v2 export magic: u32 0x616b3432 stored little-endian
        write_file(tmp("v1.bin"), b);
        expect_error(tmp("v1.bin"), tok_, TANDEM_ERR_UNSUPPORTED, "version");
    }
    expect_error(tmp("missing.bin"), tok_, TANDEM_ERR_IO, "missing.bin");
}

TEST_F(convert, bad_tokenizers) {
    const std::string tok = test::read_file(tok_);
    // Offset of the last entry, found by walking the entries.
    size_t p = 4, last = 4, n = 0;
    while (p < tok.size()) {
        int32_t len;
        std::memcpy(&len, tok.data() + p + 4, 4);
        last = p;
        p += 8 + size_t(len);
        ++n;
    }
    ASSERT_EQ(n, 512u);

    write_file(tmp("cut_text.bin"), tok.substr(0, tok.size() - 1));
    expect_error(stories_, tmp("cut_text.bin"), TANDEM_ERR_FORMAT, "truncated");
    write_file(tmp("cut_len.bin"), tok.substr(0, last + 6));
    expect_error(stories_, tmp("cut_len.bin"), TANDEM_ERR_FORMAT, "truncated");
    write_file(tmp("fewer.bin"), tok.substr(0, last));
    expect_error(stories_, tmp("fewer.bin"), TANDEM_ERR_FORMAT, "vocab_size");
    write_file(tmp("more.bin"), tok + tok.substr(last));
    expect_error(stories_, tmp("more.bin"), TANDEM_ERR_FORMAT, "vocab_size");
    {
        std::string b = tok;
        set_i32(b, 0, 0);
        write_file(tmp("maxlen0.bin"), b);
        expect_error(stories_, tmp("maxlen0.bin"), TANDEM_ERR_FORMAT, "max_token_length");
    }
    {
        std::string b = tok;
        const int32_t len = 100;  // longer than max_token_length 7
        std::memcpy(b.data() + last + 4, &len, 4);
        write_file(tmp("long_tok.bin"), b);
        expect_error(stories_, tmp("long_tok.bin"), TANDEM_ERR_FORMAT, "max_token_length");
        const int32_t neg = -1;
        std::memcpy(b.data() + last + 4, &neg, 4);
        write_file(tmp("neg_tok.bin"), b);
        expect_error(stories_, tmp("neg_tok.bin"), TANDEM_ERR_FORMAT, "length -1");
    }
    write_file(tmp("empty.bin"), "");
    expect_error(stories_, tmp("empty.bin"), TANDEM_ERR_FORMAT, "truncated");
    expect_error(stories_, tmp("missing_tok.bin"), TANDEM_ERR_IO, "missing_tok.bin");
}

// convert_llama2c_bytes (the fuzz_llama2c entry point) is the file conversion without the files: the same
// bytes for a good checkpoint, the same refusals for bad ones.
TEST_F(convert, in_memory_conversion_matches_the_file_conversion) {
    const std::string out = tmp("file.gguf");
    convert_llama2c(stories_, tok_, out, "stories260K");
    const std::string ck = test::read_file(stories_), tok = test::read_file(tok_);
    auto bytes = [](const std::string& s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
    const std::vector<uint8_t> mem = convert_llama2c_bytes(bytes(ck), bytes(tok), "stories260K");
    const std::string file = test::read_file(out);
    ASSERT_EQ(mem.size(), file.size());
    EXPECT_EQ(std::memcmp(mem.data(), file.data(), file.size()), 0);

    const std::string cut = ck.substr(0, ck.size() - 4);
    try {
        (void)convert_llama2c_bytes(bytes(cut), bytes(tok), "x");
        ADD_FAILURE() << "a truncated checkpoint was accepted";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_FORMAT) << e.what();
        EXPECT_NE(std::string(e.what()).find("'<memory>': file truncated"), std::string::npos) << e.what();
    }
    EXPECT_THROW((void)convert_llama2c_bytes(bytes(ck), bytes(tok.substr(0, tok.size() - 1)), "x"), error);
    EXPECT_THROW((void)convert_llama2c_bytes({}, {}, "x"), error);
}

TEST_F(convert, unwritable_output) {
    try {
        convert_llama2c(stories_, tok_, tmp("no/such/dir/out.gguf"), "x");
        ADD_FAILURE() << "conversion into a missing directory succeeded";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_IO) << e.what();
    }
}

}  // namespace
}  // namespace tandem
