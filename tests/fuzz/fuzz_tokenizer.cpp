// libFuzzer target for the tokenizer. Input: u16 LE vocabulary length n, n vocabulary bytes, then the text.
// The vocabulary bytes build a second, small tokenizer (a GGUF file if they start with "GGUF", else the compact
// form described at build_vocab) so vocabulary validation is fuzzed too; the real tok512 vocabulary (from
// models/stories260K.gguf, loaded once) always runs. On each tokenizer the text is encoded and the text's bytes,
// read as i16 ids, are decoded. Invariants (std::abort on violation, so libFuzzer reports them):
//   - encode returns ids in range, BOS first when asked;
//   - decode(encode(text)) == text for valid UTF-8 whenever every byte of the text has a <0xNN> byte token and
//     bos/eos/unk are control or unknown tokens (a vocabulary where BOS is an ordinary piece changes spacing);
//   - decode throws TANDEM_ERR_INVALID_ARGUMENT exactly when some id is out of range, and never anything else.
// Seeds: tests/fuzz/corpus/tokenizer, written by tests/fuzz/make_seeds.py.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace {

using tandem::token_type;
using tandem::tokenizer;
using tandem::vocab;

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "fuzz_tokenizer: invariant violated: %s\n", what);
    std::abort();
}

bool valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const auto c = uint8_t(s[i]);
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > s.size()) return false;
        for (size_t k = 1; k < len; ++k) {
            const auto d = uint8_t(s[i + k]);
            if ((d & 0xC0) != 0x80) return false;
            cp = cp << 6 | (d & 0x3F);
        }
        const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

std::string byte_piece(int b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    return buf;
}

// The byte NN if `t` is "<0xNN>" (hex digits in either case), else -1: an independent re-implementation of
// what the tokenizer treats as a byte-fallback token.
int byte_value(std::string_view t) {
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
    int b = 0;
    for (const char c : t.substr(3, 2)) {
        const char* digits = "0123456789abcdef";
        const char* d = std::strchr(digits, std::tolower(uint8_t(c)));
        if (c == 0 || !d) return -1;
        b = b * 16 + int(d - digits);
    }
    return b;
}

// Compact vocabulary: byte 0 flags (bit 0: start with <unk> <s> </s>; bit 1: add the 256 byte tokens; bit 2: add
// " "), bytes 1..3 bos/eos/unk as i8 (may be out of range: validation must refuse them), then entries of one
// header byte (text length = low 3 bits, token type = next 3 bits, 7 being invalid), one i8 score and the text.
vocab build_vocab(const uint8_t* p, size_t n) {
    vocab v;
    auto add = [&](std::string text, float score, int32_t type) {
        v.tokens.push_back(std::move(text));
        v.scores.push_back(score);
        v.types.push_back(type);
    };
    const uint8_t flags = n > 0 ? p[0] : 0;
    if (flags & 1) {
        add("<unk>", 0, int32_t(token_type::unknown));
        add("<s>", 0, int32_t(token_type::control));
        add("</s>", 0, int32_t(token_type::control));
    }
    if (flags & 2) {
        for (int b = 0; b < 256; ++b) add(byte_piece(b), 0, int32_t(token_type::byte));
    }
    if (flags & 4) add(" ", -1, int32_t(token_type::normal));
    v.bos = n > 1 ? int8_t(p[1]) : 1;
    v.eos = n > 2 ? int8_t(p[2]) : 2;
    v.unk = n > 3 ? int8_t(p[3]) : 0;
    for (size_t i = 4; i + 2 <= n;) {
        const uint8_t hdr = p[i];
        const size_t len = std::min<size_t>(hdr & 7, n - i - 2);
        add(std::string(reinterpret_cast<const char*>(p + i + 2), len), float(int8_t(p[i + 1])), (hdr >> 3) & 7);
        i += 2 + len;
    }
    return v;
}

void check(const tokenizer& tok, std::string_view text) {
    const vocab& v = tok.get_vocab();
    const int32_t n = tok.n_vocab();

    for (const bool bos : {true, false}) {
        const std::vector<int32_t> ids = tok.encode(text, bos);
        for (const int32_t id : ids) {
            if (!tok.is_valid(id)) violated("encode produced an out-of-range id");
        }
        if (bos && (ids.empty() || ids[0] != tok.bos())) violated("encode(add_bos) does not start with BOS");
        if (!bos) continue;

        bool byte_fallback = true;
        bool have_byte[256] = {};
        for (int32_t i = 0; i < n; ++i) {
            if (v.types[size_t(i)] != int32_t(token_type::byte)) continue;
            if (const int b = byte_value(v.tokens[size_t(i)]); b >= 0) have_byte[b] = true;
        }
        for (const char c : text) byte_fallback = byte_fallback && have_byte[uint8_t(c)];
        auto special = [&](int32_t id) {
            const int32_t t = v.types[size_t(id)];
            return t == int32_t(token_type::control) || t == int32_t(token_type::unknown);
        };
        if (byte_fallback && special(v.bos) && special(v.eos) && special(v.unk) && valid_utf8(text)) {
            if (tok.decode(ids) != text) violated("decode(encode(text)) != text");
        }
    }

    // The text's bytes as i16 ids: mostly out of range for small vocabularies, in range for tok512's low ids.
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 2 <= text.size() && ids.size() < 64; i += 2) {
        ids.push_back(int16_t(uint16_t(uint8_t(text[i])) | uint16_t(uint8_t(text[i + 1])) << 8));
    }
    bool any_invalid = false;
    for (const int32_t id : ids) any_invalid = any_invalid || !tok.is_valid(id);
    try {
        (void)tok.decode(ids, !text.empty() && (uint8_t(text[0]) & 1));
        if (any_invalid) violated("decode accepted an out-of-range id");
    } catch (const tandem::error& e) {
        if (!any_invalid) violated("decode threw on valid ids");
        if (e.status() != TANDEM_ERR_INVALID_ARGUMENT) violated("decode of a bad id is not INVALID_ARGUMENT");
    }
    for (const int32_t id : ids) {
        if (!tok.is_valid(id)) continue;
        (void)tok.token_to_piece(-1, id);
    }
    (void)tok.fingerprint();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const tokenizer tok512 =
        tokenizer::from_gguf(tandem::gguf_file::open(std::string(TANDEM_MODELS_DIR) + "/stories260K.gguf"));
    if (size < 2) return 0;
    const size_t vocab_len = std::min<size_t>(size_t(data[0]) | size_t(data[1]) << 8, size - 2);
    const uint8_t* vp = data + 2;
    const std::string_view text(reinterpret_cast<const char*>(vp + vocab_len), size - 2 - vocab_len);

    check(tok512, text);

    std::optional<tokenizer> small;
    try {
        if (vocab_len >= 4 && std::memcmp(vp, "GGUF", 4) == 0) {
            small.emplace(tokenizer::from_gguf(tandem::gguf_file::parse(vp, vocab_len, "fuzz")));
        } else {
            small.emplace(build_vocab(vp, vocab_len));
        }
    } catch (const tandem::error&) {
        return 0;  // a vocabulary refused with a message is the expected outcome for most inputs
    }
    check(*small, text);
    return 0;
}
