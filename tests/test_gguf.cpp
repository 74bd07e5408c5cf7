// GGUF reader and writer tests: round trips of every value type through gguf_writer, the bundled model, and
// hostile images (truncations, bad counts, types, shapes, offsets, alignment, duplicates, random byte flips)
// that must each throw tandem::error naming the problem, never crash or throw anything else.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "tests/common/test_util.h"

namespace tandem {
namespace {

using bytes = std::vector<uint8_t>;

gguf_file parse(const bytes& b) { return gguf_file::parse(b.data(), b.size(), "test.gguf"); }

// Parses `b` and expects a TANDEM_ERR_FORMAT tandem::error whose message contains every word.
void expect_format_error(const bytes& b, std::initializer_list<std::string> words) {
    try {
        (void)parse(b);
        ADD_FAILURE() << "parse succeeded, expected an error containing '" << *words.begin() << "'";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_FORMAT) << e.what();
        for (const auto& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
    }
}

// Raw GGUF image builder for files the writer refuses to produce.
struct raw_image {
    bytes b;
    raw_image& u32(uint32_t v) {
        for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
        return *this;
    }
    raw_image& u64(uint64_t v) {
        for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
        return *this;
    }
    raw_image& str(std::string_view s) {
        u64(s.size());
        b.insert(b.end(), s.begin(), s.end());
        return *this;
    }
    raw_image& header(uint64_t n_tensors, uint64_t n_kv) { return u32(0x46554747).u32(3).u64(n_tensors).u64(n_kv); }
    raw_image& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
        str(name).u32(uint32_t(ne.size()));
        for (auto d : ne) u64(d);
        return u32(type).u64(offset);
    }
    raw_image& pad(size_t align = 32) {
        while (b.size() % align) b.push_back(0);
        return *this;
    }
    raw_image& zeros(size_t n) {
        b.insert(b.end(), n, 0);
        return *this;
    }
};

// One tensor, its info followed by `data_bytes` zero bytes of data after the aligned data start.
bytes single_tensor(std::vector<uint64_t> ne, uint32_t type, uint64_t offset = 0, size_t data_bytes = 256) {
    raw_image r;
    r.header(1, 0).tensor("t", std::move(ne), type, offset).pad().zeros(data_bytes);
    return r.b;
}

// A small valid file whose tensor sizes are multiples of 32, so it ends exactly with tensor data.
gguf_writer small_writer() {
    gguf_writer w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_arr_f32("tokenizer.ggml.scores", {0.0f, -1.5f, 2.0f});
    w.set_arr_str("tokenizer.ggml.tokens", {"a",
                                            "\xe2\x96\x81"
                                            "b",
                                            ""});
    std::vector<float> a(32);
    for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f;
    w.add_tensor("a.weight", dtype::f32, {8, 4}, a.data(), a.size() * 4);
    std::vector<uint16_t> h(32, fp32_to_fp16(1.0f));
    w.add_tensor("b.weight", dtype::f16, {32}, h.data(), h.size() * 2);
    return w;
}

// ---- writer -> reader round trips ----

TEST(gguf, round_trip_every_value_type) {
    gguf_writer w;
    w.set_u8("v.u8", 200);
    w.set_i8("v.i8", -100);
    w.set_u16("v.u16", 60000);
    w.set_i16("v.i16", -30000);
    w.set_u32("v.u32", 4000000000u);
    w.set_i32("v.i32", -2000000000);
    w.set_u64("v.u64", std::numeric_limits<uint64_t>::max());
    w.set_i64("v.i64", std::numeric_limits<int64_t>::min());
    w.set_f32("v.f32", 3.25f);
    w.set_f32("v.f32_negzero", -0.0f);
    w.set_f32("v.f32_nan", std::numeric_limits<float>::quiet_NaN());
    w.set_f64("v.f64", 3.141592653589793);
    w.set_bool("v.true", true);
    w.set_bool("v.false", false);
    w.set_string("v.str", std::string_view("h\xc3\xa9llo\0world", 12));
    w.set_string("v.empty", "");
    w.set_arr_u8("a.u8", {0, 255});
    w.set_arr_i8("a.i8", {-128, 127});
    w.set_arr_u16("a.u16", {0, 65535});
    w.set_arr_i16("a.i16", {-32768, 32767});
    w.set_arr_u32("a.u32", {0, 0xffffffffu});
    w.set_arr_i32("a.i32", {std::numeric_limits<int32_t>::min(), 7});
    w.set_arr_u64("a.u64", {1, std::numeric_limits<uint64_t>::max()});
    w.set_arr_i64("a.i64", {std::numeric_limits<int64_t>::min(), -1});
    w.set_arr_f32("a.f32", {1.5f, -2.25f, 1e-40f});
    w.set_arr_f64("a.f64", {1e300, -0.0});
    w.set_arr_bool("a.bool", {true, false, true});
    w.set_arr_str("a.str", {"x", "", "\xe2\x96\x81y"});
    w.set_arr_i32("a.empty", {});
    w.set_arr_str("a.empty_str", {});
    const bytes b = w.to_bytes();
    const gguf_file f = parse(b);

    ASSERT_EQ(f.metadata().size(), 30u);
    EXPECT_EQ(f.metadata()[0].first, "v.u8");  // insertion order
    EXPECT_EQ(f.metadata()[29].first, "a.empty_str");
    EXPECT_EQ(f.tensors().size(), 0u);
    auto type_of = [&](const char* k) { return f.get(k).type; };
    EXPECT_EQ(type_of("v.u8"), gguf_type::u8);
    EXPECT_EQ(type_of("v.i8"), gguf_type::i8);
    EXPECT_EQ(type_of("v.u16"), gguf_type::u16);
    EXPECT_EQ(type_of("v.i16"), gguf_type::i16);
    EXPECT_EQ(type_of("v.u32"), gguf_type::u32);
    EXPECT_EQ(type_of("v.i32"), gguf_type::i32);
    EXPECT_EQ(type_of("v.u64"), gguf_type::u64);
    EXPECT_EQ(type_of("v.i64"), gguf_type::i64);
    EXPECT_EQ(type_of("v.f32"), gguf_type::f32);
    EXPECT_EQ(type_of("v.f64"), gguf_type::f64);
    EXPECT_EQ(type_of("v.true"), gguf_type::boolean);
    EXPECT_EQ(type_of("v.str"), gguf_type::string);
    EXPECT_EQ(f.get("v.u8").as_uint("v.u8"), 200u);
    EXPECT_EQ(f.get("v.i8").as_int("v.i8"), -100);
    EXPECT_EQ(f.get("v.u16").as_uint("v.u16"), 60000u);
    EXPECT_EQ(f.get("v.i16").as_int("v.i16"), -30000);
    EXPECT_EQ(f.get("v.u32").as_uint("v.u32"), 4000000000u);
    EXPECT_EQ(f.get("v.i32").as_int("v.i32"), -2000000000);
    EXPECT_EQ(f.get("v.u64").as_uint("v.u64"), std::numeric_limits<uint64_t>::max());
    EXPECT_EQ(f.get("v.i64").as_int("v.i64"), std::numeric_limits<int64_t>::min());
    EXPECT_EQ(f.get("v.f32").as_float("v.f32"), 3.25);
    EXPECT_TRUE(std::signbit(f.get("v.f32_negzero").as_float("x")));
    EXPECT_TRUE(std::isnan(f.get("v.f32_nan").as_float("x")));
    EXPECT_EQ(f.get("v.f64").as_float("v.f64"), 3.141592653589793);
    EXPECT_TRUE(f.get("v.true").as_bool("v.true"));
    EXPECT_FALSE(f.get("v.false").as_bool("v.false"));
    EXPECT_EQ(f.get("v.str").as_string("v.str"), std::string("h\xc3\xa9llo\0world", 12));
    EXPECT_EQ(f.get("v.empty").as_string("v.empty"), "");

    auto arr = [&](const char* k, gguf_type et) -> const gguf_value& {
        const gguf_value& v = f.get(k);
        EXPECT_EQ(v.type, gguf_type::array) << k;
        EXPECT_EQ(v.elem_type, et) << k;
        return v;
    };
    EXPECT_EQ(std::get<std::vector<uint64_t>>(arr("a.u8", gguf_type::u8).v), (std::vector<uint64_t>{0, 255}));
    EXPECT_EQ(std::get<std::vector<int64_t>>(arr("a.i8", gguf_type::i8).v), (std::vector<int64_t>{-128, 127}));
    EXPECT_EQ(std::get<std::vector<uint64_t>>(arr("a.u16", gguf_type::u16).v), (std::vector<uint64_t>{0, 65535}));
    EXPECT_EQ(std::get<std::vector<int64_t>>(arr("a.i16", gguf_type::i16).v), (std::vector<int64_t>{-32768, 32767}));
    EXPECT_EQ(std::get<std::vector<uint64_t>>(arr("a.u32", gguf_type::u32).v), (std::vector<uint64_t>{0, 0xffffffffu}));
    EXPECT_EQ(std::get<std::vector<int64_t>>(arr("a.i32", gguf_type::i32).v),
              (std::vector<int64_t>{std::numeric_limits<int32_t>::min(), 7}));
    EXPECT_EQ(std::get<std::vector<uint64_t>>(arr("a.u64", gguf_type::u64).v),
              (std::vector<uint64_t>{1, std::numeric_limits<uint64_t>::max()}));
    EXPECT_EQ(std::get<std::vector<int64_t>>(arr("a.i64", gguf_type::i64).v),
              (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1}));
    EXPECT_EQ(std::get<std::vector<double>>(arr("a.f32", gguf_type::f32).v),
              (std::vector<double>{1.5, -2.25, double(1e-40f)}));
    const auto& f64 = std::get<std::vector<double>>(arr("a.f64", gguf_type::f64).v);
    ASSERT_EQ(f64.size(), 2u);
    EXPECT_EQ(f64[0], 1e300);
    EXPECT_TRUE(std::signbit(f64[1]));
    EXPECT_EQ(std::get<std::vector<bool>>(arr("a.bool", gguf_type::boolean).v), (std::vector<bool>{true, false, true}));
    EXPECT_EQ(std::get<std::vector<std::string>>(arr("a.str", gguf_type::string).v),
              (std::vector<std::string>{"x", "", "\xe2\x96\x81y"}));
    EXPECT_EQ(arr("a.empty", gguf_type::i32).array_size(), 0u);
    EXPECT_EQ(arr("a.empty_str", gguf_type::string).array_size(), 0u);
    EXPECT_EQ(f.get("a.bool").to_string(), "[bool x 3] true, false, true");

    // set_value re-encodes every value read back into the identical bytes.
    gguf_writer w2;
    for (const auto& [k, v] : f.metadata()) w2.set_value(k, v);
    EXPECT_EQ(w2.to_bytes(), b);
}

TEST(gguf, round_trip_tensors_and_rewrite) {
    const gguf_writer w = small_writer();
    const bytes b = w.to_bytes();
    const gguf_file f = parse(b);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.alignment(), 32u);
    ASSERT_EQ(f.tensors().size(), 2u);
    const auto* a = f.find_tensor("a.weight");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->type, dtype::f32);
    EXPECT_EQ(a->ne, (std::vector<int64_t>{8, 4}));
    EXPECT_EQ(a->nbytes, 128u);
    float x;
    std::memcpy(&x, f.tensor_data(*a) + 4 * 5, 4);
    EXPECT_EQ(x, 2.5f);
    const auto* h = f.find_tensor("b.weight");
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->type, dtype::f16);
    EXPECT_EQ(h->offset, 128u);
    EXPECT_EQ(size_t(f.data_section() - b.data()) % 32, 0u);
    EXPECT_EQ(f.find_tensor("missing"), nullptr);

    // Rewriting what was read reproduces the file byte for byte.
    gguf_writer w2;
    for (const auto& [k, v] : f.metadata()) w2.set_value(k, v);
    for (const auto& t : f.tensors()) w2.add_tensor(t.name, t.type, t.ne, f.tensor_data(t), t.nbytes);
    EXPECT_EQ(w2.to_bytes(), b);
}

TEST(gguf, writer_key_order_replace_and_alignment) {
    gguf_writer w;
    w.set_u32("a", 1);
    w.set_u32("b", 2);
    w.set_string("a", "x");  // keeps its first position, takes the new type
    w.set_u32("general.alignment", 64);
    std::vector<uint8_t> d(34 * 2, 7);
    w.add_tensor("q", dtype::q8_0, {64}, d.data(), d.size());
    std::vector<float> e(3, 1.0f);
    w.add_tensor("e", dtype::f32, {3}, e.data(), 12);
    const bytes b = w.to_bytes();
    const gguf_file f = parse(b);
    ASSERT_EQ(f.metadata().size(), 3u);
    EXPECT_EQ(f.metadata()[0].first, "a");
    EXPECT_EQ(f.get("a").as_string("a"), "x");
    EXPECT_EQ(f.alignment(), 64u);
    EXPECT_EQ(size_t(f.data_section() - b.data()) % 64, 0u);
    EXPECT_EQ(f.find_tensor("e")->offset, 128u);  // 68 bytes of q8_0 padded to 128
    EXPECT_EQ(b.size() % 64, 0u);                 // the last tensor is padded too
    EXPECT_EQ(f.tensor_data(*f.find_tensor("q"))[67], 7);
    EXPECT_EQ(f.tensor_data(*f.find_tensor("q"))[68], 0);  // zero padding
}

TEST(gguf, writer_copies_or_references) {
    std::vector<float> src(8, 1.0f);
    gguf_writer w;
    w.add_tensor("copied", dtype::f32, {8}, src.data(), 32);
    w.add_tensor_ref("referenced", dtype::f32, {8}, src.data(), 32);
    src[0] = 9.0f;
    const bytes b = w.to_bytes();
    const gguf_file f = parse(b);
    float c, r;
    std::memcpy(&c, f.tensor_data(*f.find_tensor("copied")), 4);
    std::memcpy(&r, f.tensor_data(*f.find_tensor("referenced")), 4);
    EXPECT_EQ(c, 1.0f);
    EXPECT_EQ(r, 9.0f);
}

TEST(gguf, writer_rejects_bad_arguments) {
    auto expect_invalid = [](auto&& fn, const char* word) {
        try {
            fn();
            ADD_FAILURE() << "no error, expected '" << word << "'";
        } catch (const error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT) << e.what();
            EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
        }
    };
    std::vector<uint8_t> d(1024);
    expect_invalid([&] { gguf_writer().set_u32("", 1); }, "empty");
    expect_invalid(
        [&] {
            gguf_writer w;
            w.add_tensor("t", dtype::f32, {4}, d.data(), 16);
            w.add_tensor("t", dtype::f32, {4}, d.data(), 16);
        },
        "duplicate");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype::f32, {4}, d.data(), 12); }, "bytes");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype::q8_0, {33}, d.data(), 34); }, "block size");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype::f32, {}, d.data(), 4); }, "dimensions");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype::f32, {1, 1, 1, 1, 1}, d.data(), 4); }, "dimensions");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype::f32, {0}, d.data(), 0); }, "dimension");
    expect_invalid([&] { gguf_writer().add_tensor("t", dtype(4), {4}, d.data(), 16); }, "unknown ggml type");
    expect_invalid(
        [&] {
            gguf_writer w;
            w.set_u32("general.alignment", 3);
            (void)w.to_bytes();
        },
        "alignment");
    expect_invalid(
        [&] {
            gguf_writer w;
            w.set_u64("general.alignment", 32);
            (void)w.to_bytes();
        },
        "alignment");
}

TEST(gguf, write_file_atomically) {
    char tmpl[] = "/tmp/tandem_gguf_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    const std::string path = dir + "/small.gguf";
    const gguf_writer w = small_writer();
    w.write(path);
    w.write(path);  // overwriting an existing file works
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    const gguf_file f = gguf_file::open(path);
    EXPECT_EQ(f.tensors().size(), 2u);
    const std::string on_disk = test::read_file(path);
    const bytes mem = w.to_bytes();
    EXPECT_EQ(on_disk, std::string(mem.begin(), mem.end()));
    try {
        w.write(dir + "/no/such/dir/x.gguf");
        ADD_FAILURE() << "writing into a missing directory succeeded";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_IO) << e.what();
    }
    try {
        (void)gguf_file::open(dir + "/missing.gguf");
        ADD_FAILURE() << "opening a missing file succeeded";
    } catch (const error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_IO) << e.what();
    }
    std::filesystem::remove_all(dir);
}

// ---- the bundled model ----

TEST(gguf, opens_stories260k) {
    const gguf_file f = gguf_file::open(test::model_path("stories260K.gguf"));
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.tensors().size(), 48u);
    EXPECT_EQ(f.alignment(), 32u);
    const auto* t = f.find_tensor("token_embd.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->ne, (std::vector<int64_t>{64, 512}));
    EXPECT_EQ(t->type, dtype::f32);
    EXPECT_EQ(t->nbytes, 64u * 512 * 4);
    EXPECT_EQ(f.get("general.architecture").as_string("general.architecture"), "llama");
    EXPECT_EQ(f.get("llama.embedding_length").as_uint("llama.embedding_length"), 64u);
    EXPECT_EQ(f.get("tokenizer.ggml.tokens").array_size(), 512u);
    try {
        (void)f.get("no.such.key");
        ADD_FAILURE() << "missing key found";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("missing metadata key"), std::string::npos) << e.what();
    }
}

// The fuzz seeds must stay valid files.
TEST(gguf, fuzz_seed_corpus_parses) {
    const std::filesystem::path dir =
        std::filesystem::path(TANDEM_MODELS_DIR) / ".." / "tests" / "fuzz" / "corpus" / "gguf";
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        const std::string s = test::read_file(e.path().string());
        EXPECT_LT(s.size(), 64u * 1024) << e.path();
        const bytes b(s.begin(), s.end());
        EXPECT_NO_THROW((void)parse(b)) << e.path();
        ++n;
    }
    EXPECT_GE(n, 3u);
}

// ---- hostile input ----

TEST(gguf_hostile, every_truncation_throws) {
    const bytes b = small_writer().to_bytes();
    const gguf_file full = parse(b);
    const auto& last = full.tensors().back();
    const size_t data_end = size_t(full.data_section() - b.data()) + last.offset + last.nbytes;
    ASSERT_EQ(data_end, b.size());  // the file ends with tensor data: no prefix may parse
    for (size_t len = 0; len < b.size(); ++len) {
        const bytes prefix(b.begin(), b.begin() + ptrdiff_t(len));  // own allocation: over-reads are caught by ASan
        try {
            (void)parse(prefix);
            ADD_FAILURE() << "prefix of " << len << " bytes parsed";
        } catch (const error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_FORMAT);
            const std::string m = e.what();
            EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("cannot fit") != std::string::npos ||
                        m.find("beyond the end") != std::string::npos)
                << "prefix " << len << ": " << m;
        }
    }
}

TEST(gguf_hostile, header_fields) {
    const bytes good = small_writer().to_bytes();
    auto patched = [&](size_t at, uint64_t v, size_t n) {
        bytes b = good;
        for (size_t i = 0; i < n; ++i) b[at + i] = uint8_t(v >> (8 * i));
        return b;
    };
    expect_format_error(patched(0, 0x46554746, 4), {"magic"});
    expect_format_error(patched(4, 2, 4), {"version 2"});
    expect_format_error(patched(4, 4, 4), {"version 4"});
    expect_format_error(patched(8, uint64_t(1) << 60, 8), {"tensor count"});
    expect_format_error(patched(16, uint64_t(1) << 60, 8), {"metadata count"});
    expect_format_error(bytes{'G', 'G', 'U', 'F'}, {"version", "truncated"});
    expect_format_error(bytes{}, {"magic", "truncated"});
}

TEST(gguf_hostile, metadata_values) {
    {  // key length past the end
        raw_image r;
        r.header(0, 1).u64(1000).zeros(40);
        expect_format_error(r.b, {"metadata key", "length 1000", "beyond the end"});
    }
    {  // string value length past the end
        raw_image r;
        r.header(0, 1).str("k").u32(8).u64(uint64_t(1) << 63).zeros(40);
        expect_format_error(r.b, {"length", "beyond the end"});
    }
    {  // array length 2^62
        raw_image r;
        r.header(0, 1).str("k").u32(9).u32(4).u64(uint64_t(1) << 62).zeros(40);
        expect_format_error(r.b, {"'k'", "array length"});
    }
    {  // array of strings whose count is absurd
        raw_image r;
        r.header(0, 1).str("k").u32(9).u32(8).u64(uint64_t(1) << 62).zeros(40);
        expect_format_error(r.b, {"array length"});
    }
    {  // nested array
        raw_image r;
        r.header(0, 1).str("k").u32(9).u32(9).u64(1).u32(4).u64(1).u32(5).zeros(16);
        expect_format_error(r.b, {"nested"});
    }
    {  // unknown value type 13
        raw_image r;
        r.header(0, 1).str("k").u32(13).zeros(40);
        expect_format_error(r.b, {"'k'", "unknown value type 13"});
    }
    {  // unknown array element type
        raw_image r;
        r.header(0, 1).str("k").u32(9).u32(13).u64(1).zeros(40);
        expect_format_error(r.b, {"unknown array element type 13"});
    }
    {  // duplicate key
        raw_image r;
        r.header(0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2);
        expect_format_error(r.b, {"duplicate metadata key 'k'"});
    }
    {  // a value cut short
        raw_image r;
        r.header(0, 1).str("k").u32(10).zeros(4);
        expect_format_error(r.b, {"truncated"});
    }
}

TEST(gguf_hostile, tensor_shapes_and_types) {
    expect_format_error(single_tensor({}, 0), {"'t'", "0 dimensions"});
    expect_format_error(single_tensor({1, 1, 1, 1, 1}, 0), {"'t'", "5 dimensions"});
    expect_format_error(single_tensor({4, 0}, 0), {"invalid dimension 0"});
    expect_format_error(single_tensor({uint64_t(1) << 32, uint64_t(1) << 32}, 0), {"invalid dimension"});
    expect_format_error(single_tensor({uint64_t(1) << 25, uint64_t(1) << 25, uint64_t(1) << 25}, 0),
                        {"invalid dimension"});
    expect_format_error(single_tensor({std::numeric_limits<uint64_t>::max()}, 0), {"invalid dimension"});
    for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xffffffffu}) {
        expect_format_error(single_tensor({32}, id), {"unknown ggml type id " + std::to_string(id)});
    }
    expect_format_error(single_tensor({33}, uint32_t(dtype::q8_0)), {"row length 33", "block size 32"});
    expect_format_error(single_tensor({100}, uint32_t(dtype::q4_k)), {"block size 256"});

    // A known type this build cannot compute on still parses; refusing it is the model loader's job.
    const bytes q4k = single_tensor({256, 2}, uint32_t(dtype::q4_k), 0, 288);
    const gguf_file f = parse(q4k);
    EXPECT_EQ(f.tensors()[0].type, dtype::q4_k);
    EXPECT_EQ(f.tensors()[0].nbytes, 288u);
    // And one byte less of data is refused.
    expect_format_error(single_tensor({256, 2}, uint32_t(dtype::q4_k), 0, 287), {"past the end"});

    {  // duplicate tensor name
        raw_image r;
        r.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad().zeros(64);
        expect_format_error(r.b, {"duplicate tensor name 't'"});
    }
}

TEST(gguf_hostile, tensor_offsets) {
    expect_format_error(single_tensor({4}, 0, 16, 64), {"offset 16", "alignment 32"});
    expect_format_error(single_tensor({4}, 0, 1024, 64), {"past the end"});
    expect_format_error(single_tensor({16}, 0, 32, 64), {"past the end"});  // bytes [32, 96) of 64
    expect_format_error(single_tensor({4}, 0, std::numeric_limits<uint64_t>::max() - 31, 64), {"past the end"});
    const gguf_file f = parse(single_tensor({16}, 0, 0, 64));  // exactly fits
    EXPECT_EQ(f.tensors()[0].nbytes, 64u);
}

TEST(gguf_hostile, alignment_key) {
    auto with_alignment = [](auto add_kv) {
        raw_image r;
        r.header(1, 1).str("general.alignment");
        add_kv(r);
        r.tensor("t", {4}, 0, 0).pad(64).zeros(64);
        return r.b;
    };
    expect_format_error(with_alignment([](raw_image& r) { r.u32(4).u32(0); }), {"general.alignment 0"});
    expect_format_error(with_alignment([](raw_image& r) { r.u32(4).u32(3); }), {"general.alignment 3"});
    expect_format_error(with_alignment([](raw_image& r) { r.u32(4).u32(1u << 30); }), {"general.alignment"});
    expect_format_error(with_alignment([](raw_image& r) { r.u32(10).u64(32); }), {"general.alignment", "u32"});
    expect_format_error(with_alignment([](raw_image& r) { r.u32(8).str("32"); }), {"general.alignment", "u32"});
    const gguf_file f = parse(with_alignment([](raw_image& r) { r.u32(4).u32(64); }));
    EXPECT_EQ(f.alignment(), 64u);
}

TEST(gguf_hostile, random_byte_flips) {
    const uint64_t seed = test::test_seed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    const bytes good = small_writer().to_bytes();
    const gguf_file f0 = parse(good);
    const size_t header_bytes = size_t(f0.data_section() - good.data());
    std::mt19937_64 rng(seed);
    size_t ok = 0, rejected = 0;
    for (int iter = 0; iter < 4000; ++iter) {
        bytes b = good;
        const int flips = 1 + int(rng() % 4);
        for (int k = 0; k < flips; ++k) {
            // Mostly the header: flips in tensor data are always harmless to the parser.
            const size_t at = (rng() % 8 != 0) ? rng() % header_bytes : rng() % b.size();
            b[at] = (rng() % 2) ? uint8_t(rng()) : uint8_t(b[at] ^ (1u << (rng() % 8)));
        }
        if (rng() % 8 == 0) b.resize(rng() % b.size());
        try {
            const gguf_file f = parse(b);
            for (const auto& [k, v] : f.metadata()) (void)v.to_string();
            for (const auto& t : f.tensors()) {
                ASSERT_LE(t.offset + t.nbytes, f.data_section_size());
                volatile uint8_t x = f.tensor_data(t)[0];
                x = f.tensor_data(t)[t.nbytes - 1];
                (void)x;
            }
            ++ok;
        } catch (const error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_FORMAT) << e.what();
            ++rejected;
        } catch (const std::exception& e) {
            FAIL() << "iteration " << iter << ": non-tandem exception: " << e.what();
        }
    }
    EXPECT_GT(ok, 0u);
    EXPECT_GT(rejected, 0u);
}

}  // namespace
}  // namespace tandem
