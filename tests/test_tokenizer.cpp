// Tests of the llama SentencePiece tokenizer: loading from GGUF and llama2.c tokenizer files, the 28,769-token
// oracle on the TinyStories sample, decoding of known model output, byte-exact round trips on text and random
// bytes, agreement of the heap-based merge with a naive llama2.c-style encoder, fingerprints and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <unordered_map>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "tests/common/test_util.h"

namespace {

using tandem::token_type;
using tandem::tokenizer;
using tandem::vocab;

tokenizer load_stories() {
    return tokenizer::from_gguf(tandem::gguf_file::open(tandem::test::model_path("stories260K.gguf")));
}

// llama2.c tokenizer.bin: i32 max_token_length, then per token f32 score, i32 length, bytes.
vocab load_llama2c_vocab(const std::string& name) {
    const std::string data = tandem::test::read_file(tandem::test::model_path(name));
    vocab v;
    size_t p = 4;
    auto read = [&](void* dst, size_t n) {
        if (p + n > data.size()) throw std::runtime_error(name + ": truncated at byte " + std::to_string(p));
        std::memcpy(dst, data.data() + p, n);
        p += n;
    };
    while (p < data.size()) {
        float score;
        int32_t len;
        read(&score, 4);
        read(&len, 4);
        std::string text(size_t(len), '\0');
        read(text.data(), size_t(len));
        const auto id = int32_t(v.tokens.size());
        const token_type t = id == 0                ? token_type::unknown
                             : id <= 2              ? token_type::control
                             : id <= 258            ? token_type::byte
                                                    : token_type::normal;
        v.tokens.push_back(std::move(text));
        v.scores.push_back(score);
        v.types.push_back(int32_t(t));
    }
    return v;
}

std::string show(const std::vector<int32_t>& t, size_t n = 40) {
    std::ostringstream s;
    for (size_t i = 0; i < t.size() && i < n; ++i) s << t[i] << ' ';
    if (t.size() > n) s << "... (" << t.size() << " tokens)";
    return s.str();
}

std::string escape(std::string_view b) {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (char c : b) {
        const auto u = uint8_t(c);
        if (u >= 0x20 && u < 0x7f && c != '\\') s += c;
        else s += std::string("\\x") + hex[u >> 4] + hex[u & 15];
    }
    return s;
}

// A straightforward llama2.c-style encoder written against the vocabulary: the same rules as the tokenizer
// (lookups exclude control/unknown/byte pieces and "<0xNN>" texts, lowest id per text, byte fallback, -1e10
// score floor), but a
// literal UTF-8 buffer walk and an O(n^2) "best score, leftmost on ties, repeat" merge loop.
class naive_encoder {
   public:
    explicit naive_encoder(const vocab& v) : v_(v) {
        std::fill(std::begin(byte_), std::end(byte_), -1);
        for (size_t i = 0; i < v.tokens.size(); ++i) {
            const auto t = token_type(v.types[i]);
            const std::string& x = v.tokens[i];
            const bool byte_text = x.size() == 6 && x.compare(0, 3, "<0x") == 0 && x[5] == '>' &&
                                   std::isxdigit(uint8_t(x[3])) && std::isxdigit(uint8_t(x[4]));
            if (t != token_type::control && t != token_type::unknown && t != token_type::byte && !byte_text)
                ids_.try_emplace(v.tokens[i], int32_t(i));
            char name[8];
            for (int b = 0; b < 256; ++b) {
                std::snprintf(name, sizeof name, "<0x%02X>", b);
                if (t == token_type::byte && v.tokens[i] == name && byte_[b] < 0) byte_[b] = int32_t(i);
            }
        }
        for (auto& b : byte_) {
            if (b < 0) b = v.unk;
        }
    }

    std::vector<int32_t> encode(std::string_view text, bool add_bos) const {
        std::vector<int32_t> tok;
        std::vector<bool> can;  // may this token take part in a merge
        if (add_bos) tok.push_back(v_.bos), can.push_back(false);
        if (!text.empty()) {
            if (const int32_t sp = find(" "); sp >= 0) tok.push_back(sp), can.push_back(true);
        }
        char buf[5];
        size_t len = 0;
        for (size_t i = 0; i < text.size(); ++i) {
            const auto c = uint8_t(text[i]);
            if ((c & 0xC0) != 0x80) len = 0;
            buf[len++] = char(c);
            if (i + 1 < text.size() && (uint8_t(text[i + 1]) & 0xC0) == 0x80 && len < 4) continue;
            if (const int32_t id = find(std::string(buf, len)); id >= 0) {
                tok.push_back(id), can.push_back(true);
            } else {
                for (size_t k = 0; k < len; ++k) tok.push_back(byte_[uint8_t(buf[k])]), can.push_back(false);
            }
            len = 0;
        }
        for (;;) {
            float best = -1e10f;
            int32_t best_id = -1;
            size_t best_i = 0;
            for (size_t i = 0; i + 1 < tok.size(); ++i) {
                if (!can[i] || !can[i + 1]) continue;
                const int32_t id = find(v_.tokens[size_t(tok[i])] + v_.tokens[size_t(tok[i + 1])]);
                if (id >= 0 && v_.scores[size_t(id)] > best) best = v_.scores[size_t(id)], best_id = id, best_i = i;
            }
            if (best_id < 0) break;
            tok[best_i] = best_id;
            tok.erase(tok.begin() + std::ptrdiff_t(best_i) + 1);
            can.erase(can.begin() + std::ptrdiff_t(best_i) + 1);
        }
        return tok;
    }

   private:
    int32_t find(const std::string& s) const {
        const auto it = ids_.find(s);
        return it == ids_.end() ? -1 : it->second;
    }

    const vocab& v_;
    std::unordered_map<std::string, int32_t> ids_;
    int32_t byte_[256];
};

// Random byte strings mixing text, invalid UTF-8, lone continuation bytes, NULs, 4-byte sequences and runs.
std::string random_bytes(std::mt19937_64& rng) {
    auto pick = [&](size_t n) { return size_t(rng() % n); };
    static const std::string_view ascii = "abcdefghijklmnopqrstuvwxyz     ,.!?\"'\nTLOS";
    static const std::string_view seqs[] = {"\xE2\x80\x9C", "\xC3\xA9", "\xF0\x9F\x98\x80", "\xE2\x96\x81",
                                            "\xF4\x8F\xBF\xBF", "\xED\xA0\x80", "\xC0\xAF", "\xFF\xFE"};
    std::string s;
    const size_t segments = pick(10) == 0 ? 0 : 1 + pick(12);
    for (size_t seg = 0; seg < segments; ++seg) {
        const size_t n = pick(8) == 0 ? 50 + pick(200) : 1 + pick(12);
        switch (pick(8)) {
            case 0: for (size_t i = 0; i < n; ++i) s += char(rng()); break;
            case 1: for (size_t i = 0; i < n; ++i) s += char(0x80 + pick(64)); break;
            case 2: s.append(pick(3) + 1, '\0'); break;
            case 3: for (size_t i = 0; i < n; ++i) s += seqs[pick(std::size(seqs))]; break;
            case 4: s.append(n, pick(2) ? ' ' : char(ascii[pick(ascii.size())])); break;
            case 5: for (size_t i = 0; i < n; ++i) s += char(0xC0 + pick(64)); break;  // lead bytes alone
            default: for (size_t i = 0; i < n; ++i) s += ascii[pick(ascii.size())]; break;
        }
    }
    return s;
}

// A tiny GGUF v3 image with only metadata, for from_gguf tests.
struct gguf_builder {
    std::string out;
    uint64_t n = 0;
    void raw(const void* p, size_t k) { out.append(static_cast<const char*>(p), k); }
    void u32(uint32_t x) { raw(&x, 4); }
    void u64(uint64_t x) { raw(&x, 8); }
    void str(std::string_view s) { u64(s.size()), out += s; }
    void key(std::string_view k, tandem::gguf_type t) { str(k), u32(uint32_t(t)), ++n; }
    void string_kv(std::string_view k, std::string_view v) { key(k, tandem::gguf_type::string), str(v); }
    void u32_kv(std::string_view k, uint32_t v) { key(k, tandem::gguf_type::u32), u32(v); }
    void strings_kv(std::string_view k, const std::vector<std::string>& v) {
        key(k, tandem::gguf_type::array), u32(uint32_t(tandem::gguf_type::string)), u64(v.size());
        for (const auto& s : v) str(s);
    }
    void i32s_kv(std::string_view k, const std::vector<int32_t>& v) {
        key(k, tandem::gguf_type::array), u32(uint32_t(tandem::gguf_type::i32)), u64(v.size());
        for (int32_t x : v) raw(&x, 4);
    }
    std::string image() const {
        std::string h = "GGUF";
        const uint32_t version = 3;
        const uint64_t zero = 0;
        h.append(reinterpret_cast<const char*>(&version), 4);
        h.append(reinterpret_cast<const char*>(&zero), 8);
        h.append(reinterpret_cast<const char*>(&n), 8);
        return h + out;
    }
};

tokenizer from_image(const std::string& img) {
    return tokenizer::from_gguf(tandem::gguf_file::parse(reinterpret_cast<const uint8_t*>(img.data()), img.size()));
}

// A small hand-made vocabulary: specials, byte tokens only for 'x' and 0xFF, and a few pieces.
vocab small_vocab() {
    vocab v;
    auto add = [&](std::string t, float s, token_type y) {
        v.tokens.push_back(std::move(t)), v.scores.push_back(s), v.types.push_back(int32_t(y));
    };
    add("<unk>", 0, token_type::unknown);    // 0
    add("<s>", 0, token_type::control);      // 1
    add("</s>", 0, token_type::control);     // 2
    add("<0x78>", 0, token_type::byte);      // 3 'x'
    add("<0xFF>", 0, token_type::byte);      // 4
    add(" ", -10, token_type::normal);       // 5
    add("a", -10, token_type::normal);       // 6
    add("b", -10, token_type::normal);       // 7
    add("aa", -1, token_type::normal);       // 8
    add("ab", -1, token_type::normal);       // 9
    add(" a", -5, token_type::normal);       // 10
    add("a", -3, token_type::normal);        // 11: duplicate text, the lowest id (6) wins
    add("<s>", -1, token_type::normal);      // 12: normal piece with the BOS text
    add("bb", -1e10f, token_type::normal);   // 13: at llama2.c's score floor, never merges
    return v;
}

TEST(Tokenizer, LoadsStories260K) {
    const tokenizer tok = load_stories();
    EXPECT_EQ(tok.n_vocab(), 512);
    EXPECT_EQ(tok.bos(), 1);
    EXPECT_EQ(tok.eos(), 2);
    EXPECT_EQ(tok.get_vocab().unk, 0);
    EXPECT_EQ(tok.get_vocab().tokens[259], " t");  // "▁t" converted
    for (int b = 0; b < 256; ++b) {
        SCOPED_TRACE(b);
        EXPECT_EQ(tok.get_vocab().types[size_t(b + 3)], int32_t(token_type::byte));
        EXPECT_EQ(tok.token_to_piece(-1, b + 3), std::string(1, char(b)));
        // A lone byte without a piece of its own falls back to its byte token.
        if (b >= 0x80 || b < 0x20) {
            EXPECT_EQ(tok.encode(std::string(1, char(b)), false).back(), b + 3);
        }
    }
    EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{1});
    EXPECT_TRUE(tok.encode("", false).empty());
    const std::vector<int32_t> s = tok.encode("<s></s><unk>", true);
    EXPECT_EQ(std::count(s.begin(), s.end(), 1), 1) << show(s);
    EXPECT_EQ(std::count(s.begin(), s.end(), 2), 0) << show(s);
    EXPECT_EQ(std::count(s.begin(), s.end(), 0), 0) << show(s);
}

TEST(Tokenizer, OracleTokenCount) {
    const tokenizer tok = load_stories();
    const std::string text = tandem::test::read_file(tandem::test::model_path("tinystories_valid_head.txt"));
    ASSERT_GT(text.size(), 60000u);
    ASSERT_NE(uint8_t(text[60000]) & 0xC0, 0x80) << "60,000 bytes would split a UTF-8 character";
    const std::vector<int32_t> ids = tok.encode(std::string_view(text).substr(0, 60000), false);
    EXPECT_EQ(ids.size(), 28769u) << "first tokens: " << show(ids, 64);
    EXPECT_EQ(tok.decode(ids), text.substr(0, 60000));
}

TEST(Tokenizer, DecodesGreedyReference) {
    const tokenizer tok = load_stories();
    const std::vector<int32_t> ids = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338,
                                      401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385,
                                      328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267,
                                      337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13,  438, 310};
    EXPECT_EQ(tok.decode(ids),
              "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
              "she saw a big, red ball. She wanted to play with it, but it was too high.\nLily");
    EXPECT_EQ(tok.token_to_piece(1, 403), "Once");
    EXPECT_EQ(tok.token_to_piece(-1, 403), " Once");
    EXPECT_EQ(tok.decode(ids, false).substr(0, 5), " Once");
    EXPECT_EQ(tok.token_to_piece(5, 1), "");  // control and unknown tokens contribute nothing
    EXPECT_EQ(tok.token_to_piece(5, 2), "");
    EXPECT_EQ(tok.token_to_piece(5, 0), "");
}

TEST(Tokenizer, RoundTripsSampleFile) {
    const tokenizer tok = load_stories();
    const std::string text = tandem::test::read_file(tandem::test::model_path("tinystories_valid_head.txt"));
    ASSERT_GT(text.size(), 700000u);
    size_t n_tokens = 0;
    for (size_t at = 0; at < text.size(); at += 4096) {
        const std::string_view chunk = std::string_view(text).substr(at, 4096);
        const std::vector<int32_t> ids = tok.encode(chunk, false);
        n_tokens += ids.size();
        ASSERT_EQ(tok.decode(ids), chunk) << "chunk at byte " << at;
    }
    EXPECT_LT(n_tokens, text.size() / 2);  // merges happened
}

TEST(Tokenizer, RoundTripsRandomBytes) {
    const tokenizer tok = load_stories();
    const uint64_t seed = tandem::test::test_seed();
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 5000; ++i) {
        const std::string s = random_bytes(rng);
        const std::vector<int32_t> ids = tok.encode(s, i % 2 == 0);
        const std::string back = i % 2 == 0 ? tok.decode(std::span(ids).subspan(1)) : tok.decode(ids);
        ASSERT_EQ(back, s) << "seed " << seed << " case " << i << " input \"" << escape(s) << "\" tokens "
                           << show(ids);
    }
}

TEST(Tokenizer, FastMergeMatchesNaiveOnRandomInput) {
    const tokenizer tok = load_stories();
    const naive_encoder naive(tok.get_vocab());
    const uint64_t seed = tandem::test::test_seed();
    std::mt19937_64 rng(seed ^ 0x5eed);
    for (int i = 0; i < 3000; ++i) {
        const std::string s = random_bytes(rng);
        const bool bos = rng() % 2;
        const std::vector<int32_t> want = naive.encode(s, bos);
        ASSERT_EQ(tok.encode(s, bos), want) << "seed " << seed << " case " << i << " input \"" << escape(s) << "\"";
    }
}

TEST(Tokenizer, FastMergeMatchesNaiveOnSample) {
    const tokenizer tok = load_stories();
    const naive_encoder naive(tok.get_vocab());
    const std::string text = tandem::test::read_file(tandem::test::model_path("tinystories_valid_head.txt"));
    // The naive loop is quadratic: compare 1,000-byte chunks spread over the file (not aligned to characters).
    for (size_t at = 0; at + 1000 < text.size(); at += 25013) {
        const std::string_view chunk = std::string_view(text).substr(at, 1000);
        ASSERT_EQ(tok.encode(chunk, true), naive.encode(chunk, true)) << "chunk at byte " << at;
    }
}

TEST(Tokenizer, FastMergeMatchesNaiveWithTiedScores) {
    // Random vocabularies over a 4-letter alphabet whose scores take only 3 values, so that ties (broken by
    // the leftmost pair) and stale heap entries are common.
    const uint64_t seed = tandem::test::test_seed();
    std::mt19937_64 rng(seed ^ 0x7135);
    const std::string_view alphabet = "ab c";
    for (int round = 0; round < 200; ++round) {
        vocab v;
        v.tokens = {"<unk>", "<s>", "</s>"};
        v.types = {int32_t(token_type::unknown), int32_t(token_type::control), int32_t(token_type::control)};
        for (char c : alphabet) v.tokens.push_back(std::string(1, c)), v.types.push_back(int32_t(token_type::normal));
        for (int i = 0; i < 40; ++i) {
            std::string t;
            for (size_t n = 2 + rng() % 4; t.size() < n;) t += alphabet[rng() % alphabet.size()];
            v.tokens.push_back(t), v.types.push_back(int32_t(token_type::normal));
        }
        for (size_t i = 0; i < v.tokens.size(); ++i) v.scores.push_back(-float(rng() % 3));
        const tokenizer tok(v);
        const naive_encoder naive(tok.get_vocab());
        for (int i = 0; i < 20; ++i) {
            std::string s;
            for (size_t n = rng() % 60; s.size() < n;) s += alphabet[rng() % alphabet.size()];
            ASSERT_EQ(tok.encode(s, false), naive.encode(s, false))
                << "seed " << seed << " round " << round << " input \"" << s << "\"";
            ASSERT_EQ(tok.decode(tok.encode(s, false)), s);
        }
    }
}

TEST(Tokenizer, MergeRulesOnSmallVocab) {
    const tokenizer tok(small_vocab());
    const naive_encoder naive(tok.get_vocab());
    using v = std::vector<int32_t>;
    EXPECT_EQ(tok.encode("a", false), (v{10}));            // dummy prefix " " + "a" (id 6, not 11) -> " a"
    EXPECT_EQ(tok.encode("aaa", false), (v{5, 8, 6}));     // "aa" (-1) beats " a" (-5); leftmost "aa" first
    EXPECT_EQ(tok.encode("aab", false), (v{5, 8, 7}));     // "aa" and "ab" tie at -1: the leftmost wins
    EXPECT_EQ(tok.encode("bb", false), (v{5, 7, 7}));      // at the score floor: never merged
    EXPECT_EQ(tok.encode("x\xFF", false), (v{5, 3, 4}));   // byte fallback
    EXPECT_EQ(tok.encode("z", false), (v{5, 0}));          // no byte token for 'z': unk
    EXPECT_EQ(tok.encode("<s>", false), (v{5, 0, 0, 0}));  // "<s>" pieces are never looked up by text...
    EXPECT_EQ(tok.token_to_piece(1, 12), "<s>");           // ...though the normal piece 12 decodes to its text
    for (std::string s : {"a", "aaa", "aab", "bb", "abab aab  ba", "x\xFFxa", "aaaaaaaaaaa b"})
        EXPECT_EQ(tok.encode(s, true), naive.encode(s, true)) << s;
    EXPECT_EQ(tok.decode(tok.encode("x\xFF" "aab ab", false)), "x\xFF" "aab ab");
}

// Found by fuzz_tokenizer: a normal piece whose text is "<0xNN>" decodes as the byte NN, so encoding the text
// "<0x41>" to it gave "A" back. Such pieces are now never produced by merging (SentencePiece does not either).
TEST(Tokenizer, ByteLookalikePiecesAreNeverProduced) {
    vocab v;
    auto add = [&](const std::string& text, token_type t, float score) {
        v.tokens.push_back(text), v.types.push_back(int32_t(t)), v.scores.push_back(score);
    };
    add("<unk>", token_type::unknown, 0);
    add("<s>", token_type::control, 0);
    add("</s>", token_type::control, 0);
    char name[8];
    for (int b = 0; b < 256; ++b) {
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        add(name, token_type::byte, 0);
    }
    for (char c : std::string("<0x41>a")) add(std::string(1, c), token_type::normal, 0);
    const std::vector<std::string> chain = {"<0", "<0x", "<0x4", "<0x41", "<0x41>", "<0x4", "<0x4a", "<0x4a>"};
    for (size_t i = 0; i < chain.size(); ++i) add(chain[i], token_type::normal, float(i + 1));
    const tokenizer tok(v);
    const naive_encoder naive(tok.get_vocab());
    for (const std::string text : {"<0x41>", "x<0x41>A", "<0x4a>", "<0x41><0x4a>"}) {
        const std::vector<int32_t> ids = tok.encode(text, true);
        EXPECT_EQ(tok.decode(ids), text) << show(ids);
        EXPECT_EQ(ids, naive.encode(text, true)) << text;
        for (int32_t id : ids) {
            const bool lookalike = tok.get_vocab().types[size_t(id)] == int32_t(token_type::normal) &&
                                   tok.get_vocab().tokens[size_t(id)].size() == 6;
            EXPECT_FALSE(lookalike) << text << ": " << show(ids);
        }
    }
    EXPECT_EQ(tok.encode("<0x4", false).size(), 1u) << "pieces short of a byte text still merge";
}

TEST(Tokenizer, FromGgufReadsKeys) {
    gguf_builder b;
    b.string_kv("tokenizer.ggml.model", "llama");
    const std::string sp = "\xE2\x96\x81";  // SentencePiece's space, U+2581
    b.strings_kv("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", sp, "a", sp + "a" + sp});
    b.u32_kv("tokenizer.ggml.eos_token_id", 3);
    const tokenizer tok = from_image(b.image());
    EXPECT_EQ(tok.n_vocab(), 6);
    EXPECT_EQ(tok.bos(), 1);
    EXPECT_EQ(tok.eos(), 3);
    EXPECT_EQ(tok.get_vocab().tokens[5], " a ");
    EXPECT_EQ(tok.get_vocab().scores, std::vector<float>(6, 0.0f));
    EXPECT_EQ(tok.get_vocab().types, std::vector<int32_t>(6, int32_t(token_type::normal)));

    gguf_builder other;
    other.string_kv("tokenizer.ggml.model", "gpt2");
    other.strings_kv("tokenizer.ggml.tokens", {"a", "b", "c"});
    try {
        from_image(other.image());
        FAIL() << "gpt2 tokenizer accepted";
    } catch (const tandem::error& e) {
        EXPECT_EQ(e.status(), TANDEM_ERR_UNSUPPORTED);
        EXPECT_NE(std::string(e.what()).find("gpt2"), std::string::npos) << e.what();
    }

    gguf_builder bad_types;
    bad_types.string_kv("tokenizer.ggml.model", "llama");
    bad_types.strings_kv("tokenizer.ggml.tokens", {"a", "b", "c"});
    bad_types.i32s_kv("tokenizer.ggml.token_type", {1, 1});
    EXPECT_THROW(from_image(bad_types.image()), tandem::error);

    gguf_builder no_tokens;
    no_tokens.string_kv("tokenizer.ggml.model", "llama");
    EXPECT_THROW(from_image(no_tokens.image()), tandem::error);
}

TEST(Tokenizer, Fingerprint) {
    const tokenizer a = load_stories();
    const tokenizer b = load_stories();
    EXPECT_EQ(a.fingerprint(), b.fingerprint());

    vocab text = a.get_vocab();
    text.tokens[300] += "x";
    EXPECT_NE(tokenizer(text).fingerprint(), a.fingerprint());
    vocab type = a.get_vocab();
    type.types[300] = int32_t(token_type::user_defined);
    EXPECT_NE(tokenizer(type).fingerprint(), a.fingerprint());
    vocab order = a.get_vocab();
    std::swap(order.tokens[300], order.tokens[301]);
    EXPECT_NE(tokenizer(order).fingerprint(), a.fingerprint());
    vocab scores = a.get_vocab();
    scores.scores[300] = 42.0f;
    EXPECT_EQ(tokenizer(scores).fingerprint(), a.fingerprint());  // scores are not part of it
}

TEST(Tokenizer, Llama2cTokenizerFiles) {
    const tokenizer gguf = load_stories();
    const tokenizer tok512(load_llama2c_vocab("tok512.bin"));
    const tokenizer aidreams(load_llama2c_vocab("aidreams_tok512.bin"));
    ASSERT_EQ(tok512.n_vocab(), 512);
    ASSERT_EQ(aidreams.n_vocab(), 512);
    const vocab& g = gguf.get_vocab();
    const vocab& t = tok512.get_vocab();
    for (size_t i = 3; i < 512; ++i) {
        EXPECT_EQ(t.tokens[i], g.tokens[i]) << "token " << i;
        EXPECT_EQ(t.scores[i], g.scores[i]) << "token " << i;
        EXPECT_EQ(t.types[i], g.types[i]) << "token " << i;
    }
    EXPECT_EQ(t.tokens[0], "<unk>");
    EXPECT_EQ(g.tokens[0], "<unk>");
    EXPECT_EQ(t.tokens[1], "\n<s>\n");
    EXPECT_EQ(g.tokens[1], "<s>");
    EXPECT_EQ(t.tokens[2], "\n</s>\n");
    EXPECT_EQ(g.tokens[2], "</s>");
    EXPECT_NE(tok512.fingerprint(), gguf.fingerprint());  // ids 1 and 2 differ
    EXPECT_NE(aidreams.fingerprint(), tok512.fingerprint());
    // Same pieces from ids 3 on: the two vocabularies tokenize alike.
    const std::string text = "Once upon a time, Lily saw a \xE2\x80\x9C" "big\xE2\x80\x9D dog.\n";
    EXPECT_EQ(tok512.encode(text, true), gguf.encode(text, true));
    EXPECT_EQ(aidreams.decode(aidreams.encode(text, false)), text);
}

TEST(Tokenizer, RejectsBadInput) {
    const tokenizer tok = load_stories();
    vocab sizes = tok.get_vocab();
    sizes.scores.pop_back();
    EXPECT_THROW(tokenizer{sizes}, tandem::error);
    vocab types = tok.get_vocab();
    types.types.push_back(1);
    EXPECT_THROW(tokenizer{types}, tandem::error);
    vocab bad_type = tok.get_vocab();
    bad_type.types[7] = 9;
    EXPECT_THROW(tokenizer{bad_type}, tandem::error);
    vocab bos = tok.get_vocab();
    bos.bos = 512;
    EXPECT_THROW(tokenizer{bos}, tandem::error);
    vocab eos = tok.get_vocab();
    eos.eos = -1;
    EXPECT_THROW(tokenizer{eos}, tandem::error);
    EXPECT_THROW(tokenizer{vocab{}}, tandem::error);

    for (int32_t bad : {-1, 512}) {
        try {
            tok.token_to_piece(1, bad);
            FAIL() << "token " << bad << " accepted";
        } catch (const tandem::error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT);
        }
        const std::vector<int32_t> ids = {400, bad};
        EXPECT_THROW(tok.decode(ids), tandem::error);
    }
}

}  // namespace
