// llama2.c -> GGUF conversion. The checkpoint is read whole, its header validated and its size checked to
// the byte before any weight is touched; the GGUF tensors reference slices of that buffer (fp32, copied
// unchanged: llama2.c and GGUF llama both rotate interleaved pairs, so q/k need no permutation).
// Metadata keys, value types, key order and tensor order follow the reference models/stories260K.gguf.
#include "engine/llama2c.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <sstream>
#include <vector>

#include "engine/error.h"
#include "engine/gguf_writer.h"

namespace tandem {

namespace {

constexpr size_t k_header_bytes = 7 * 4;
constexpr int32_t k_magic_v1 = 0x616b3432;  // "ak42": the header of llama2.c export versions 1 and 2
constexpr float k_rms_eps = 1e-5f;          // llama2.c's RMSNorm epsilon

std::vector<uint8_t> read_whole(const std::string& path, const char* what) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw error(TANDEM_ERR_IO, std::string("cannot open ") + what + " '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error(TANDEM_ERR_IO, std::string(what) + " '" + path + "' is not a regular file");
    }
    std::vector<uint8_t> buf(size_t(st.st_size));
    size_t got = 0;
    while (got < buf.size()) {
        const ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int e = r < 0 ? errno : EIO;
            ::close(fd);
            throw error(TANDEM_ERR_IO, std::string("cannot read ") + what + " '" + path + "': " + std::strerror(e));
        }
        got += size_t(r);
    }
    ::close(fd);
    return buf;
}

int32_t le_i32(const uint8_t* p) {
    return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
}
float le_f32(const uint8_t* p) {
    const uint32_t u = uint32_t(le_i32(p));
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct header {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;

    std::string describe() const {
        std::ostringstream s;
        s << "{dim=" << dim << " hidden_dim=" << hidden_dim << " n_layers=" << n_layers << " n_heads=" << n_heads
          << " n_kv_heads=" << n_kv_heads << " vocab_size=" << vocab_size << " seq_len=" << seq_len << "}";
        return s.str();
    }
};

// Sizes (in floats) of the checkpoint's arrays, derived from a validated header.
struct layout {
    uint64_t dim, hidden, n_layers, kv_dim, head_size, vocab, seq_len;
    bool shared_classifier;
    uint64_t total_floats;
};

[[noreturn]] void bad_checkpoint(const std::string& path, const std::string& what) {
    throw error(TANDEM_ERR_FORMAT, "llama2.c checkpoint '" + path + "': " + what);
}
[[noreturn]] void bad_tokenizer(const std::string& path, const std::string& what) {
    throw error(TANDEM_ERR_FORMAT, "llama2.c tokenizer '" + path + "': " + what);
}

uint64_t mul(uint64_t a, uint64_t b, const std::string& path, const header& h) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) bad_checkpoint(path, "header sizes overflow: " + h.describe());
    return r;
}

layout check_header(const std::string& path, const header& h, size_t file_size) {
    const std::pair<const char*, int32_t> fields[] = {
        {"dim", h.dim},         {"hidden_dim", h.hidden_dim}, {"n_layers", h.n_layers},
        {"n_heads", h.n_heads}, {"n_kv_heads", h.n_kv_heads}, {"seq_len", h.seq_len},
    };
    for (const auto& [name, v] : fields) {
        if (v <= 0) {
            bad_checkpoint(path, std::string("header field ") + name + " is " + std::to_string(v) +
                                     " (must be positive) in " + h.describe());
        }
    }
    if (h.vocab_size == 0 || h.vocab_size == INT32_MIN) {
        bad_checkpoint(path, "header field vocab_size is " + std::to_string(h.vocab_size) + " in " + h.describe());
    }
    if (h.dim % h.n_heads != 0) {
        bad_checkpoint(path, "n_heads " + std::to_string(h.n_heads) + " does not divide dim " + std::to_string(h.dim));
    }
    if (h.n_heads % h.n_kv_heads != 0) {
        bad_checkpoint(path, "n_kv_heads " + std::to_string(h.n_kv_heads) + " does not divide n_heads " +
                                 std::to_string(h.n_heads));
    }
    const int32_t head_size = h.dim / h.n_heads;
    if (head_size % 2 != 0) {
        bad_checkpoint(
            path, "head size " + std::to_string(head_size) + " (dim / n_heads) must be even for rotary embeddings");
    }
    layout l{};
    l.dim = uint64_t(h.dim);
    l.hidden = uint64_t(h.hidden_dim);
    l.n_layers = uint64_t(h.n_layers);
    l.head_size = uint64_t(head_size);
    l.kv_dim = l.head_size * uint64_t(h.n_kv_heads);
    l.shared_classifier = h.vocab_size > 0;
    l.vocab = uint64_t(h.vocab_size > 0 ? int64_t(h.vocab_size) : -int64_t(h.vocab_size));
    l.seq_len = uint64_t(h.seq_len);
    if (l.vocab < 3) {
        bad_checkpoint(
            path, "vocab_size " + std::to_string(h.vocab_size) + " is too small (ids 0, 1, 2 are <unk>, <s>, </s>)");
    }

    // Each term is at most 2^31 * 2^31 * 2^31, so products are checked; sums of such terms are then checked too.
    const uint64_t per_layer_terms[] = {
        l.dim,                          // rms_att
        mul(l.dim, l.dim, path, h),     // wq
        mul(l.kv_dim, l.dim, path, h),  // wk
        mul(l.kv_dim, l.dim, path, h),  // wv
        mul(l.dim, l.dim, path, h),     // wo
        l.dim,                          // rms_ffn
        mul(l.hidden, l.dim, path, h),  // w1
        mul(l.dim, l.hidden, path, h),  // w2
        mul(l.hidden, l.dim, path, h),  // w3
    };
    uint64_t per_layer = 0;
    for (const uint64_t t : per_layer_terms) {
        if (__builtin_add_overflow(per_layer, t, &per_layer)) bad_checkpoint(path, "header sizes overflow");
    }
    const uint64_t terms[] = {
        mul(l.vocab, l.dim, path, h),                            // token_embedding
        mul(per_layer, l.n_layers, path, h),                     // the layers
        l.dim,                                                   // rms_final
        mul(l.seq_len, l.head_size, path, h),                    // freq_cis_real + freq_cis_imag (head_size/2 each)
        l.shared_classifier ? 0 : mul(l.vocab, l.dim, path, h),  // wcls
    };
    uint64_t total = 0;
    for (const uint64_t t : terms) {
        if (__builtin_add_overflow(total, t, &total)) bad_checkpoint(path, "header sizes overflow");
    }
    l.total_floats = total;
    uint64_t expected_bytes;
    if (__builtin_mul_overflow(total, uint64_t(4), &expected_bytes) ||
        __builtin_add_overflow(expected_bytes, uint64_t(k_header_bytes), &expected_bytes)) {
        bad_checkpoint(path, "header sizes overflow");
    }
    if (expected_bytes != file_size) {
        std::ostringstream s;
        if (file_size < expected_bytes) s << "file truncated: ";
        s << "expected " << expected_bytes << " bytes for header " << h.describe() << ", the file has " << file_size
          << " bytes";
        if (file_size > expected_bytes) s << " (trailing data, or not a legacy version 0 export)";
        bad_checkpoint(path, s.str());
    }
    return l;
}

struct token {
    std::string text;
    float score;
};

std::vector<token> read_tokenizer(std::span<const uint8_t> b, const std::string& path) {
    if (b.size() < 4) {
        bad_tokenizer(path, "file truncated: max_token_length needs 4 bytes, the file has " + std::to_string(b.size()));
    }
    const int32_t max_len = le_i32(b.data());
    if (max_len <= 0) bad_tokenizer(path, "max_token_length is " + std::to_string(max_len) + " (must be positive)");
    std::vector<token> out;
    size_t p = 4;
    while (p < b.size()) {
        const size_t id = out.size();
        const size_t left = b.size() - p;
        if (left < 8) {
            bad_tokenizer(path, "file truncated in token " + std::to_string(id) + " at byte " + std::to_string(p) +
                                    ": score and length need 8 bytes, " + std::to_string(left) + " left");
        }
        const float score = le_f32(b.data() + p);
        const int32_t len = le_i32(b.data() + p + 4);
        if (len < 0 || len > max_len) {
            bad_tokenizer(path, "token " + std::to_string(id) + " at byte " + std::to_string(p) + " has length " +
                                    std::to_string(len) + " (max_token_length is " + std::to_string(max_len) + ")");
        }
        if (size_t(len) > left - 8) {
            bad_tokenizer(path, "file truncated in token " + std::to_string(id) + " at byte " + std::to_string(p) +
                                    ": its text needs " + std::to_string(len) + " bytes, " + std::to_string(left - 8) +
                                    " left");
        }
        out.push_back({std::string(reinterpret_cast<const char*>(b.data() + p + 8), size_t(len)), score});
        p += 8 + size_t(len);
    }
    return out;
}

bool is_byte_token(const std::string& s) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
    return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// GGUF llama token types (the values of llama.cpp's vocab token types).
constexpr int32_t k_type_normal = 1, k_type_unknown = 2, k_type_control = 3, k_type_byte = 6;

// The conversion proper: fills `w` with the model in `ck` (tensors reference `ck`, which must outlive `w`).
// `tokenizer_bytes` is called only once the checkpoint's header has been validated, so a bad checkpoint is
// reported before the tokenizer file is even read.
void build_gguf(std::span<const uint8_t> ck, const std::string& checkpoint,
                const std::function<std::vector<uint8_t>()>& tokenizer_bytes, const std::string& tokenizer_bin,
                const std::string& model_name, gguf_writer& w) {
    if (ck.size() < k_header_bytes) {
        bad_checkpoint(checkpoint, "file truncated: the header needs " + std::to_string(k_header_bytes) +
                                       " bytes, the file has " + std::to_string(ck.size()));
    }
    header h{};
    h.dim = le_i32(ck.data() + 0);
    h.hidden_dim = le_i32(ck.data() + 4);
    h.n_layers = le_i32(ck.data() + 8);
    h.n_heads = le_i32(ck.data() + 12);
    h.n_kv_heads = le_i32(ck.data() + 16);
    h.vocab_size = le_i32(ck.data() + 20);
    h.seq_len = le_i32(ck.data() + 24);
    if (h.dim == k_magic_v1) {
        throw error(TANDEM_ERR_UNSUPPORTED, "llama2.c checkpoint '" + checkpoint +
                                                "' is a version 1/2 export (magic \"ak42\"); only the legacy "
                                                "version 0 format (export.py --version 0) is supported");
    }
    const layout l = check_header(checkpoint, h, ck.size());

    const std::vector<token> toks = read_tokenizer(tokenizer_bytes(), tokenizer_bin);
    if (toks.size() != l.vocab) {
        bad_tokenizer(tokenizer_bin, "has " + std::to_string(toks.size()) +
                                         " tokens but the checkpoint's vocab_size is " + std::to_string(l.vocab));
    }

    // Vocabulary: llama2.c stores SentencePiece's U+2581 word marker as ' ' and wraps BOS/EOS in newlines;
    // GGUF keeps the SentencePiece texts. Ids 0, 1, 2 are always <unk>, <s>, </s> in llama2.c (run.c hard-codes
    // BOS = 1, EOS = 2), so their texts are written as such whatever the .bin stores.
    std::vector<std::string> texts;
    std::vector<float> scores;
    std::vector<int32_t> types;
    texts.reserve(toks.size());
    for (size_t i = 0; i < toks.size(); ++i) {
        const std::string& t = toks[i].text;
        int32_t type = k_type_normal;
        std::string text;
        if (i == 0) {
            text = "<unk>";
            type = k_type_unknown;
        } else if (i == 1 || i == 2) {
            text = i == 1 ? "<s>" : "</s>";
            type = k_type_control;
        } else if (is_byte_token(t)) {
            text = t;
            type = k_type_byte;
        } else {
            for (const char c : t) {
                if (c == ' ')
                    text += "\xe2\x96\x81";
                else
                    text += c;
            }
        }
        texts.push_back(std::move(text));
        scores.push_back(toks[i].score);
        types.push_back(type);
    }

    w.set_arr_str("tokenizer.ggml.tokens", texts);
    w.set_arr_f32("tokenizer.ggml.scores", scores);
    w.set_arr_i32("tokenizer.ggml.token_type", types);
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_string("general.architecture", "llama");
    w.set_string("general.name", model_name);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    // "seperator" is the spelling of the key in the reference files (llama.cpp's); 0xffffffff means "none".
    w.set_u32("tokenizer.ggml.seperator_token_id", 0xffffffffu);
    w.set_u32("tokenizer.ggml.padding_token_id", 0xffffffffu);
    // The reference converter writes its default 2048 here, whatever the model was trained with. We write the
    // checkpoint's seq_len instead: it is the context the model was trained on (RoPE positions beyond it were
    // never seen), and the engine uses this value as the default KV-cache size.
    w.set_u32("llama.context_length", uint32_t(l.seq_len));
    w.set_u32("llama.embedding_length", uint32_t(l.dim));
    w.set_u32("llama.feed_forward_length", uint32_t(l.hidden));
    w.set_u32("llama.attention.head_count", uint32_t(h.n_heads));
    w.set_u32("llama.attention.head_count_kv", uint32_t(h.n_kv_heads));
    w.set_u32("llama.block_count", uint32_t(l.n_layers));
    w.set_u32("llama.rope.dimension_count", uint32_t(l.head_size));
    w.set_f32("llama.attention.layer_norm_rms_epsilon", k_rms_eps);

    // Slices of the checkpoint, in file order.
    const uint8_t* p = ck.data() + k_header_bytes;
    auto take = [&](uint64_t n_floats) {
        const uint8_t* r = p;
        p += n_floats * 4;
        return r;
    };
    const uint64_t D = l.dim, H = l.hidden, KV = l.kv_dim, L = l.n_layers, V = l.vocab;
    const uint8_t* emb = take(V * D);
    const uint8_t* rms_att = take(L * D);
    const uint8_t* wq = take(L * D * D);
    const uint8_t* wk = take(L * KV * D);
    const uint8_t* wv = take(L * KV * D);
    const uint8_t* wo = take(L * D * D);
    const uint8_t* rms_ffn = take(L * D);
    const uint8_t* w1 = take(L * H * D);
    const uint8_t* w2 = take(L * D * H);
    const uint8_t* w3 = take(L * H * D);
    const uint8_t* rms_final = take(D);
    take(l.seq_len * l.head_size);  // freq_cis_real and freq_cis_imag: recomputed by the engine, not stored
    // A tied classifier is written as its own output.weight (a second copy of the embedding), as the reference is.
    const uint8_t* wcls = l.shared_classifier ? emb : take(V * D);
    TANDEM_ASSERT(p == ck.data() + ck.size());

    auto add = [&](const std::string& name, std::vector<int64_t> ne, const uint8_t* data) {
        size_t n = 4;
        for (const int64_t d : ne) n *= size_t(d);
        w.add_tensor_ref(name, dtype::f32, ne, data, n);
    };
    const int64_t d = int64_t(D), hd = int64_t(H), kv = int64_t(KV), v = int64_t(V);
    // ggml order: ne = {in, out} for a matrix stored row-major as [out][in].
    add("token_embd.weight", {d, v}, emb);
    add("output_norm.weight", {d}, rms_final);
    add("output.weight", {d, v}, wcls);
    for (uint64_t i = 0; i < L; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        add(b + "attn_q.weight", {d, d}, wq + i * D * D * 4);
        add(b + "attn_k.weight", {d, kv}, wk + i * KV * D * 4);
        add(b + "attn_v.weight", {d, kv}, wv + i * KV * D * 4);
        add(b + "attn_output.weight", {d, d}, wo + i * D * D * 4);
        add(b + "attn_norm.weight", {d}, rms_att + i * D * 4);
        add(b + "ffn_gate.weight", {d, hd}, w1 + i * H * D * 4);
        add(b + "ffn_down.weight", {hd, d}, w2 + i * D * H * 4);
        add(b + "ffn_up.weight", {d, hd}, w3 + i * H * D * 4);
        add(b + "ffn_norm.weight", {d}, rms_ffn + i * D * 4);
    }
}

}  // namespace

void convert_llama2c(const std::string& checkpoint, const std::string& tokenizer_bin, const std::string& out_path,
                     const std::string& model_name) {
    const std::vector<uint8_t> ck = read_whole(checkpoint, "llama2.c checkpoint");
    gguf_writer w;
    build_gguf(
        ck, checkpoint, [&] { return read_whole(tokenizer_bin, "llama2.c tokenizer"); }, tokenizer_bin, model_name, w);
    w.write(out_path);
}

std::vector<uint8_t> convert_llama2c_bytes(std::span<const uint8_t> checkpoint, std::span<const uint8_t> tokenizer_bin,
                                           const std::string& model_name) {
    gguf_writer w;
    build_gguf(
        checkpoint, "<memory>", [&] { return std::vector<uint8_t>(tokenizer_bin.begin(), tokenizer_bin.end()); },
        "<memory>", model_name, w);
    return w.to_bytes();
}

}  // namespace tandem
