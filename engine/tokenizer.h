// The llama SentencePiece (BPE + byte fallback) tokenizer, encoding exactly as llama2.c's encode() in run.c:
// optional BOS, a dummy-prefix " " token, one symbol per UTF-8 character (byte-fallback tokens <0xNN> for
// characters without a piece), then greedy merges of the adjacent pair with the highest-scoring piece.
// Decoding drops the leading space of the token after BOS and turns <0xNN> tokens into raw bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/gguf.h"

namespace tandem {

enum class token_type : int32_t {
    undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct vocab {
    std::vector<std::string> tokens;  // piece text, SentencePiece's U+2581 "▁" already replaced by ' '
    std::vector<float> scores;
    std::vector<int32_t> types;  // token_type values
    int32_t bos = 1, eos = 2, unk = 0;
};

class tokenizer {
   public:
    // Validates the vocabulary: non-empty, tokens/scores/types of equal length, every type a token_type value,
    // bos/eos/unk in range. Throws tandem::error (TANDEM_ERR_FORMAT) naming the problem.
    explicit tokenizer(vocab v);

    // Reads tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,unknown_token_id}.
    // The model must be "llama" (else TANDEM_ERR_UNSUPPORTED); scores default to 0, types to normal,
    // bos/eos/unk to 1/2/0. Every "▁" (U+2581) in a token becomes ' '.
    static tokenizer from_gguf(const gguf_file& f);

    // Any bytes are accepted (invalid UTF-8 and NUL included): bytes without a piece become byte-fallback
    // tokens (or unk if the vocabulary has no <0xNN> byte tokens). No EOS is added. Pieces of type control,
    // unknown and byte, and pieces whose text is "<0xNN>" (whatever their type: they decode as a byte), are never
    // produced by lookup or merging, and byte-fallback/unk symbols never merge.
    std::vector<int32_t> encode(std::string_view text, bool add_bos) const;

    // The bytes `token` contributes after `prev` (prev may be -1 or any id; only prev == bos matters).
    // Control and unknown tokens contribute "". Throws TANDEM_ERR_INVALID_ARGUMENT if token is out of range.
    std::string token_to_piece(int32_t prev, int32_t token) const;
    // Concatenated token_to_piece; the first token's prev is bos if after_bos, else -1.
    std::string decode(std::span<const int32_t> tokens, bool after_bos = true) const;

    // Vocabulary identity: 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the token
    // count as u32 little-endian, then for each token in id order: its byte length (u32 LE), its bytes (as
    // stored, i.e. with ' ' in place of "▁"), and its type (i32 LE). Scores and bos/eos/unk are not included.
    uint64_t fingerprint() const;

    int32_t n_vocab() const { return int32_t(vocab_.tokens.size()); }
    int32_t bos() const { return vocab_.bos; }
    int32_t eos() const { return vocab_.eos; }
    const vocab& get_vocab() const { return vocab_; }
    bool is_valid(int32_t token) const { return token >= 0 && token < n_vocab(); }

   private:
    struct string_hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };

    int32_t lookup(std::string_view piece) const;  // -1 if no mergeable piece has this text
    bool mergeable(int32_t id) const;
    void append_piece(int32_t prev, int32_t token, std::string& out) const;

    vocab vocab_;
    std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>> piece_ids_;
    int32_t byte_ids_[256];           // byte value -> id of its <0xNN> byte token, or unk
    std::vector<int16_t> byte_value_;  // per token: the byte NN if its text is "<0xNN>" or -1
    int32_t space_id_ = -1;            // the dummy-prefix piece " ", or -1
};

}  // namespace tandem
