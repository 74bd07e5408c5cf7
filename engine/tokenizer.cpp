// The llama SentencePiece tokenizer: vocabulary validation and GGUF loading, llama2.c-compatible encoding
// (UTF-8 grouping, byte fallback, best-score-first merges done with a heap over a linked list of symbols),
// decoding with byte tokens and the after-BOS space rule, and the vocabulary fingerprint.
#include "engine/tokenizer.h"

#include <climits>
#include <cstdint>
#include <queue>
#include <utility>

#include "engine/error.h"

namespace tandem {
namespace {

// llama2.c starts its best-score search at -1e10, so a piece scoring at or below this never merges.
constexpr float min_merge_score = -1e10f;

// The byte NN if `s` is exactly "<0xNN>" (two hex digits, either case), else -1.
int parse_byte_piece(std::string_view s) {
    if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hex(s[3]), lo = hex(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string replace_sp_space(const std::string& s) {
    static constexpr std::string_view sp = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        if (s.compare(i, sp.size(), sp) == 0) {
            out += ' ';
            i += sp.size();
        } else {
            out += s[i++];
        }
    }
    return out;
}

int32_t optional_id(const gguf_file& f, std::string_view key, int32_t def) {
    const gguf_value* v = f.find(key);
    if (!v) return def;
    const int64_t id = v->as_int(key);
    if (id < INT32_MIN || id > INT32_MAX)
        throw error(TANDEM_ERR_FORMAT, "metadata key '" + std::string(key) + "' = " + std::to_string(id) +
                                           " is not a valid token id");
    return int32_t(id);
}

}  // namespace

tokenizer::tokenizer(vocab v) : vocab_(std::move(v)) {
    const size_t n = vocab_.tokens.size();
    if (n == 0) throw error(TANDEM_ERR_FORMAT, "vocabulary is empty");
    if (n > size_t(INT32_MAX)) throw error(TANDEM_ERR_FORMAT, "vocabulary has too many tokens: " + std::to_string(n));
    if (vocab_.scores.size() != n)
        throw error(TANDEM_ERR_FORMAT, "vocabulary has " + std::to_string(n) + " tokens but " +
                                           std::to_string(vocab_.scores.size()) + " scores");
    if (vocab_.types.size() != n)
        throw error(TANDEM_ERR_FORMAT, "vocabulary has " + std::to_string(n) + " tokens but " +
                                           std::to_string(vocab_.types.size()) + " token types");
    for (size_t i = 0; i < n; ++i) {
        if (vocab_.types[i] < int32_t(token_type::undefined) || vocab_.types[i] > int32_t(token_type::byte))
            throw error(TANDEM_ERR_FORMAT, "vocabulary token " + std::to_string(i) + " has unknown token type " +
                                               std::to_string(vocab_.types[i]));
    }
    const std::pair<const char*, int32_t> special[] = {{"bos", vocab_.bos}, {"eos", vocab_.eos}, {"unk", vocab_.unk}};
    for (const auto& [name, id] : special) {
        if (!is_valid(id))
            throw error(TANDEM_ERR_FORMAT, std::string(name) + " token id " + std::to_string(id) +
                                               " is out of range for a vocabulary of " + std::to_string(n) +
                                               " tokens");
    }

    for (auto& id : byte_ids_) id = -1;
    byte_value_.assign(n, -1);
    piece_ids_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const auto id = int32_t(i);
        const auto type = token_type(vocab_.types[i]);
        const int b = parse_byte_piece(vocab_.tokens[i]);
        byte_value_[i] = int16_t(b);
        if (type == token_type::byte && b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = id;
        if (mergeable(id)) piece_ids_.try_emplace(vocab_.tokens[i], id);  // keeps the lowest id per text
    }
    for (auto& id : byte_ids_) {
        if (id < 0) id = vocab_.unk;
    }
    space_id_ = lookup(" ");
}

tokenizer tokenizer::from_gguf(const gguf_file& f) {
    const std::string& model = f.get("tokenizer.ggml.model").as_string("tokenizer.ggml.model");
    if (model != "llama")
        throw error(TANDEM_ERR_UNSUPPORTED, "tokenizer model '" + model + "' is not supported (only 'llama')");

    const gguf_value& tv = f.get("tokenizer.ggml.tokens");
    const auto* toks = std::get_if<std::vector<std::string>>(&tv.v);
    if (tv.type != gguf_type::array || !toks)
        throw error(TANDEM_ERR_FORMAT, "metadata key 'tokenizer.ggml.tokens' is not an array of strings");
    vocab v;
    v.tokens.reserve(toks->size());
    for (const auto& t : *toks) v.tokens.push_back(replace_sp_space(t));
    const size_t n = v.tokens.size();

    if (const gguf_value* sv = f.find("tokenizer.ggml.scores")) {
        const auto* s = std::get_if<std::vector<double>>(&sv->v);
        if (sv->type != gguf_type::array || !s)
            throw error(TANDEM_ERR_FORMAT, "metadata key 'tokenizer.ggml.scores' is not an array of floats");
        v.scores.assign(s->begin(), s->end());
    } else {
        v.scores.assign(n, 0.0f);
    }
    if (const gguf_value* yv = f.find("tokenizer.ggml.token_type")) {
        const auto* y = std::get_if<std::vector<int64_t>>(&yv->v);
        if (yv->type != gguf_type::array || !y)
            throw error(TANDEM_ERR_FORMAT,
                        "metadata key 'tokenizer.ggml.token_type' is not an array of signed integers");
        v.types.reserve(y->size());
        for (int64_t t : *y) {
            if (t < INT32_MIN || t > INT32_MAX)
                throw error(TANDEM_ERR_FORMAT, "metadata key 'tokenizer.ggml.token_type' holds invalid type " +
                                                   std::to_string(t));
            v.types.push_back(int32_t(t));
        }
    } else {
        v.types.assign(n, int32_t(token_type::normal));
    }
    v.bos = optional_id(f, "tokenizer.ggml.bos_token_id", 1);
    v.eos = optional_id(f, "tokenizer.ggml.eos_token_id", 2);
    v.unk = optional_id(f, "tokenizer.ggml.unknown_token_id", 0);
    return tokenizer(std::move(v));
}

bool tokenizer::mergeable(int32_t id) const {
    const auto t = token_type(vocab_.types[size_t(id)]);
    // A "<0xNN>" text decodes as the byte NN whatever its type, so producing it from the text "<0xNN>" would not
    // round-trip (found by fuzz_tokenizer); SentencePiece never produces byte pieces by merging either.
    return t != token_type::control && t != token_type::unknown && t != token_type::byte && byte_value_[size_t(id)] < 0;
}

int32_t tokenizer::lookup(std::string_view piece) const {
    const auto it = piece_ids_.find(piece);
    return it == piece_ids_.end() ? -1 : it->second;
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_bos) const {
    // Symbols form a doubly linked list in text order; a merge keeps the left symbol and unlinks the right
    // one, so a symbol's index orders it left to right for the whole run.
    struct symbol {
        int32_t id;
        int32_t prev, next;
        bool can_merge;
        bool alive;
    };
    std::vector<symbol> syms;
    syms.reserve(text.size() + 1);
    auto push = [&](int32_t id, bool can_merge) {
        const auto i = int32_t(syms.size());
        syms.push_back({id, i - 1, i + 1, can_merge, true});
    };

    if (!text.empty() && space_id_ >= 0) push(space_id_, true);
    // llama2.c's UTF-8 grouping: a byte plus the continuation bytes after it, at most 4 bytes in all.
    for (size_t i = 0; i < text.size();) {
        size_t len = 1;
        while (len < 4 && i + len < text.size() && (uint8_t(text[i + len]) & 0xC0) == 0x80) ++len;
        const std::string_view chr = text.substr(i, len);
        if (const int32_t id = lookup(chr); id >= 0) {
            push(id, true);
        } else {
            for (char c : chr) push(byte_ids_[uint8_t(c)], false);
        }
        i += len;
    }
    if (!syms.empty()) syms.back().next = -1;

    // Candidate merges, best first: highest score, then the leftmost pair. Entries go stale when either
    // symbol is merged away or changes token; they are recognised by the recorded ids and skipped.
    struct candidate {
        float score;
        int32_t left, right;
        int32_t left_id, right_id, merged_id;
    };
    auto worse = [](const candidate& a, const candidate& b) {
        if (a.score != b.score) return a.score < b.score;
        return a.left > b.left;
    };
    std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> heap(worse);
    std::string buf;
    auto consider = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const symbol& a = syms[size_t(l)];
        const symbol& b = syms[size_t(r)];
        if (!a.can_merge || !b.can_merge) return;
        buf.assign(vocab_.tokens[size_t(a.id)]);
        buf += vocab_.tokens[size_t(b.id)];
        const int32_t id = lookup(buf);
        if (id < 0) return;
        const float score = vocab_.scores[size_t(id)];
        if (!(score > min_merge_score)) return;  // also rejects NaN, as llama2.c's comparison does
        heap.push({score, l, r, a.id, b.id, id});
    };
    for (size_t i = 0; i + 1 < syms.size(); ++i) consider(int32_t(i), int32_t(i + 1));

    while (!heap.empty()) {
        const candidate c = heap.top();
        heap.pop();
        symbol& a = syms[size_t(c.left)];
        symbol& b = syms[size_t(c.right)];
        if (!a.alive || !b.alive || a.next != c.right || a.id != c.left_id || b.id != c.right_id) continue;
        a.id = c.merged_id;
        a.next = b.next;
        if (b.next >= 0) syms[size_t(b.next)].prev = c.left;
        b.alive = false;
        consider(a.prev, c.left);
        consider(c.left, a.next);
    }

    std::vector<int32_t> out;
    out.reserve(syms.size() + 1);
    if (add_bos) out.push_back(vocab_.bos);
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[size_t(i)].next) out.push_back(syms[size_t(i)].id);
    return out;
}

void tokenizer::append_piece(int32_t prev, int32_t token, std::string& out) const {
    if (!is_valid(token))
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "token id " + std::to_string(token) +
                                                     " is out of range for a vocabulary of " +
                                                     std::to_string(n_vocab()) + " tokens");
    const auto type = token_type(vocab_.types[size_t(token)]);
    if (type == token_type::control || type == token_type::unknown) return;
    if (const int b = byte_value_[size_t(token)]; b >= 0) {
        out += char(uint8_t(b));
        return;
    }
    std::string_view piece = vocab_.tokens[size_t(token)];
    if (prev == vocab_.bos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    out += piece;
}

std::string tokenizer::token_to_piece(int32_t prev, int32_t token) const {
    std::string out;
    append_piece(prev, token, out);
    return out;
}

std::string tokenizer::decode(std::span<const int32_t> tokens, bool after_bos) const {
    std::string out;
    int32_t prev = after_bos ? vocab_.bos : -1;
    for (int32_t t : tokens) {
        append_piece(prev, t, out);
        prev = t;
    }
    return out;
}

uint64_t tokenizer::fingerprint() const {
    uint64_t h = 0xcbf29ce484222325ull;
    auto byte = [&](uint8_t b) {
        h ^= b;
        h *= 0x100000001b3ull;
    };
    auto u32 = [&](uint32_t x) {
        for (int i = 0; i < 4; ++i) byte(uint8_t(x >> (8 * i)));
    };
    u32(uint32_t(vocab_.tokens.size()));
    for (size_t i = 0; i < vocab_.tokens.size(); ++i) {
        const std::string& t = vocab_.tokens[i];
        u32(uint32_t(t.size()));
        for (char c : t) byte(uint8_t(c));
        u32(uint32_t(vocab_.types[i]));
    }
    return h;
}

}  // namespace tandem
