// Synthetic llama models: the named shapes, the synthetic vocabulary, and the seeded weight generator feeding
// gguf_writer tensor by tensor. Random numbers come from splitmix64 and a hand-rolled bell curve, not from
// <random>'s distributions, whose output differs between standard libraries: the file must be a pure function
// of (shape, type, seed) on every platform.
#include "engine/synth.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <unordered_set>

#include "engine/error.h"
#include "engine/gguf_writer.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"

namespace tandem {

namespace {

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("synth")) return l;
        try {
            return spdlog::stderr_color_mt("synth");
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("synth");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

[[noreturn]] void bad_arg(const std::string& msg) { throw error(TANDEM_ERR_INVALID_ARGUMENT, "synth: " + msg); }

constexpr int32_t k_default_ctx = 2048;
constexpr int32_t k_min_vocab = 260;                      // <unk>, <s>, </s>, 256 byte tokens, "▁"
constexpr uint64_t k_vocab_seed = 0x7a6e645f766f6362ull;  // fixed: the vocabulary does not depend on --seed

// splitmix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by the golden-ratio increment, then mixed.
uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
struct splitmix64 {
    uint64_t s;
    uint64_t next() { return mix64(s += 0x9e3779b97f4a7c15ull); }
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
};

uint64_t fnv1a(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
    return h;
}

// ---- vocabulary ----

// Words whose " "-prefixed forms become pieces, TinyStories-flavoured so story prompts tokenize into words.
// clang-format off
constexpr const char* k_words[] = {
    "the", "and", "to", "a", "was", "he", "she", "it", "of", "in", "they", "her", "his", "said", "with", "you",
    "that", "for", "on", "is", "one", "day", "had", "big", "little", "time", "upon", "once", "there", "play",
    "happy", "saw", "very", "friend", "friends", "not", "mom", "but", "so", "we", "all", "be", "are", "at", "as",
    "have", "this", "from", "by", "or", "an", "were", "can", "what", "when", "your", "will", "would", "out",
    "up", "about", "who", "get", "go", "like", "just", "know", "me", "my", "no", "do", "if", "see", "look",
    "then", "them", "some", "into", "could", "him", "over", "make", "new", "good", "first", "well", "way",
    "down", "back", "girl", "boy", "named", "sun", "tree", "dog", "cat", "ball", "love", "loved", "wanted",
    "went", "came", "help", "home", "park", "fun", "toy", "water", "sky", "bird", "red", "blue", "green", "run",
    "jump", "smile", "sad", "nice", "thank", "let", "too", "after", "because", "more", "other", "than", "now",
    "only", "its", "also", "how", "our", "two", "even", "want", "any", "give", "us", "world", "mother", "father",
    "house", "school", "Once", "The", "He", "She", "It", "They", "One", "Lily", "Tom", "Ben", "Sue", "Max",
};
// Word endings, as pieces without the word marker.
constexpr const char* k_suffixes[] = {
    "ing", "ed", "er", "ly", "es", "en", "on", "an", "re", "at", "or", "ar", "al", "le", "nd", "st", "ion",
    "ent", "ter", "ous", "ness", "ful", "est", "ay", "ow", "ight", "ould", "ame", "ook", "ind",
};
// clang-format on
// The printable ASCII characters, lower-case letters by English frequency first.
constexpr const char* k_chars =
    "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?'\"-:;()[]{}<>/\\|@#$%^&*_+=~`";

bool lower_letters(std::string_view s) {
    if (s.empty()) return false;
    for (const char c : s)
        if (c < 'a' || c > 'z') return false;
    return true;
}

}  // namespace

vocab synth_vocab(int32_t n_vocab) {
    if (n_vocab < k_min_vocab) {
        bad_arg("vocab " + std::to_string(n_vocab) + " is too small: at least " + std::to_string(k_min_vocab) +
                " (<unk>, <s>, </s>, 256 byte tokens and the word marker)");
    }
    const size_t n = size_t(n_vocab);
    vocab v;
    v.tokens.reserve(n);
    v.scores.reserve(n);
    v.types.reserve(n);
    auto special = [&](std::string text, token_type t) {
        v.tokens.push_back(std::move(text));
        v.scores.push_back(0.f);
        v.types.push_back(int32_t(t));
    };
    special("<unk>", token_type::unknown);
    special("<s>", token_type::control);
    special("</s>", token_type::control);
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        special(buf, token_type::byte);
    }

    std::unordered_set<std::string> seen;
    seen.reserve(n);
    int32_t rank = 0;
    // Adds a normal piece unless present; false once the vocabulary is full.
    auto piece = [&](const std::string& text) {
        if (v.tokens.size() >= n) return false;
        if (!seen.insert(text).second) return true;
        v.tokens.push_back(text);
        v.scores.push_back(-float(rank++));
        v.types.push_back(int32_t(token_type::normal));
        return true;
    };
    // Adds every prefix of `s` of 2+ characters (each is the previous prefix plus one character, so reachable).
    auto prefixes = [&](const std::string& s) {
        for (size_t len = 2; len <= s.size(); ++len)
            if (!piece(s.substr(0, len))) return false;
        return true;
    };

    if (!piece(" ")) return v;
    for (const char* c = k_chars; *c; ++c)
        if (!piece(std::string(1, *c))) return v;
    for (const char* w : k_words)
        if (!prefixes(std::string(" ") + w)) return v;
    for (const char* s : k_suffixes)
        if (!prefixes(s)) return v;

    // Made-up pieces: a left part (a lower-case piece, with or without the word marker, or the marker alone)
    // joined to a lower-case right part, both drawn with a bias towards early (short, frequent) pieces.
    std::vector<int32_t> left, right;
    auto classify = [&](int32_t id) {
        const std::string& t = v.tokens[size_t(id)];
        const bool marked = !t.empty() && t[0] == ' ';
        const std::string_view body = marked ? std::string_view(t).substr(1) : std::string_view(t);
        if (body.empty() || lower_letters(body)) left.push_back(id);
        if (!marked && lower_letters(body)) right.push_back(id);
    };
    for (int32_t id = 259; id < int32_t(v.tokens.size()); ++id) classify(id);
    splitmix64 rng{k_vocab_seed};
    auto pick = [&](const std::vector<int32_t>& from) {
        const double u = rng.uniform();
        return from[size_t(u * u * u * double(from.size()))];
    };
    constexpr size_t k_max_body = 8;  // letters after the word marker: keeps made-up pieces word-sized
    // Most rounds add a piece (up to the 2^20-token limit there are far more candidate pairs than pieces); the
    // bound turns a broken generator into an error instead of a hang.
    for (uint64_t tries = 0; v.tokens.size() < n; ++tries) {
        if (tries > 100 * uint64_t(n)) {
            throw error(TANDEM_ERR_INTERNAL,
                        "synth: the vocabulary generator stalled at " + std::to_string(v.tokens.size()) + " tokens");
        }
        const std::string text = v.tokens[size_t(pick(left))] + v.tokens[size_t(pick(right))];
        if (text.size() - (text[0] == ' ' ? 1 : 0) > k_max_body || seen.count(text)) continue;
        piece(text);
        classify(int32_t(v.tokens.size()) - 1);
    }
    return v;
}

const std::vector<synth_shape>& synth_shapes() {
    // llama2.c's stories models (karpathy/llama2.c README; 260k is stories260K with its 512-token vocabulary)
    // and TinyLlama-1.1B (its config.json: hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632).
    static const std::vector<synth_shape> shapes = {
        {"260k", 64, 5, 8, 4, 172, 512, 512},
        {"15m", 288, 6, 6, 6, 768, 32000, 256},
        {"42m", 512, 8, 8, 8, 1376, 32000, 1024},
        {"110m", 768, 12, 12, 12, 2048, 32000, 1024},
        {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048},
    };
    return shapes;
}

std::string synth_shapes_text() {
    std::string out;
    for (const auto& s : synth_shapes()) {
        out += s.name + ": dim " + std::to_string(s.n_embd) + ", " + std::to_string(s.n_layer) + " layers, " +
               std::to_string(s.n_head) + " heads, " + std::to_string(s.n_head_kv) + " kv heads, ffn " +
               std::to_string(s.n_ff) + ", vocab " + std::to_string(s.n_vocab) + ", ctx " + std::to_string(s.n_ctx) +
               "\n";
    }
    return out;
}

void synth_check_shape(const synth_shape& s) {
    // Upper limits keep every size far inside int32 and the model loader's 2^30 metadata limit.
    const struct {
        const char* name;
        int32_t v, max;
    } fields[] = {
        {"dim", s.n_embd, 1 << 16},         {"layers", s.n_layer, 1 << 10}, {"heads", s.n_head, 1 << 12},
        {"kv heads", s.n_head_kv, 1 << 12}, {"ffn", s.n_ff, 1 << 18},       {"vocab", s.n_vocab, 1 << 20},
        {"ctx", s.n_ctx, 1 << 24},
    };
    for (const auto& f : fields) {
        if (f.v <= 0 || f.v > f.max) {
            bad_arg(std::string(f.name) + " " + std::to_string(f.v) + " is out of range (1 to " +
                    std::to_string(f.max) + ")");
        }
    }
    if (s.n_embd % s.n_head != 0) {
        bad_arg("heads " + std::to_string(s.n_head) + " does not divide dim " + std::to_string(s.n_embd));
    }
    if (s.n_head % s.n_head_kv != 0) {
        bad_arg("kv heads " + std::to_string(s.n_head_kv) + " does not divide heads " + std::to_string(s.n_head));
    }
    if ((s.n_embd / s.n_head) % 2 != 0) {
        bad_arg("head size " + std::to_string(s.n_embd / s.n_head) +
                " (dim / heads) must be even for rotary embeddings");
    }
    if (s.n_vocab < k_min_vocab) {
        bad_arg("vocab " + std::to_string(s.n_vocab) + " is too small: at least " + std::to_string(k_min_vocab) +
                " (<unk>, <s>, </s>, 256 byte tokens and the word marker)");
    }
}

synth_shape synth_resolve_shape(std::string_view name, const synth_shape& o) {
    synth_shape s;
    if (!name.empty()) {
        const synth_shape* found = nullptr;
        for (const auto& k : synth_shapes())
            if (k.name == name) found = &k;
        if (!found) {
            std::string known;
            for (const auto& k : synth_shapes()) known += (known.empty() ? "" : ", ") + k.name;
            bad_arg("unknown shape '" + std::string(name) + "' (known shapes: " + known + ")");
        }
        s = *found;
    }
    const std::pair<const char*, int32_t> given[] = {
        {"dim", o.n_embd}, {"layers", o.n_layer}, {"heads", o.n_head}, {"kv heads", o.n_head_kv},
        {"ffn", o.n_ff},   {"vocab", o.n_vocab},  {"ctx", o.n_ctx},
    };
    for (const auto& [field, v] : given)
        if (v < 0) bad_arg(std::string(field) + " " + std::to_string(v) + " is negative");
    if (name.empty()) {
        std::string missing;
        for (const auto& [field, v] : {given[0], given[1], given[2], given[4], given[5]})
            if (v == 0) missing += (missing.empty() ? "" : ", ") + std::string(field);
        if (!missing.empty())
            bad_arg("a custom shape needs dim, layers, heads, ffn and vocab (missing: " + missing + ")");
        s.n_head_kv = o.n_head_kv > 0 ? o.n_head_kv : o.n_head;
        s.n_ctx = k_default_ctx;
    }
    const synth_shape before = s;
    auto take = [](int32_t& field, int32_t v) {
        if (v > 0) field = v;
    };
    take(s.n_embd, o.n_embd);
    take(s.n_layer, o.n_layer);
    take(s.n_head, o.n_head);
    take(s.n_head_kv, o.n_head_kv);
    take(s.n_ff, o.n_ff);
    take(s.n_vocab, o.n_vocab);
    take(s.n_ctx, o.n_ctx);
    // A multi-head shape stays multi-head when only its head count changes (else kv heads would rarely divide).
    if (o.n_head > 0 && o.n_head_kv == 0 && before.n_head_kv == before.n_head) s.n_head_kv = s.n_head;
    const bool changed = s.n_embd != before.n_embd || s.n_layer != before.n_layer || s.n_head != before.n_head ||
                         s.n_head_kv != before.n_head_kv || s.n_ff != before.n_ff || s.n_vocab != before.n_vocab ||
                         s.n_ctx != before.n_ctx;
    if (changed) s.name.clear();
    synth_check_shape(s);
    return s;
}

namespace {

// One tensor to generate: ne in ggml order ({in, out} for a matrix) and the std of its elements (0: all ones).
struct tensor_plan {
    std::string name;
    std::vector<int64_t> ne;
    double std;
    dtype type;
};

// Fills row `r` of a tensor: a bell-shaped variate with mean 0 and std `std` per element, the sum of four 16-bit
// uniforms (Irwin-Hall, n = 4, variance 4/12, hence the sqrt(3)) from one 64-bit draw. Cheap and deterministic.
void fill_row(uint64_t tensor_key, int64_t r, double std, float* out, int64_t k) {
    if (std == 0.0) {
        for (int64_t i = 0; i < k; ++i) out[i] = 1.f;
        return;
    }
    splitmix64 rng{mix64(tensor_key ^ mix64(uint64_t(r) + 1))};
    const float scale = float(std * std::sqrt(3.0) / 65536.0);
    for (int64_t i = 0; i < k; ++i) {
        const uint64_t x = rng.next();
        const int32_t sum = int32_t(x & 0xffff) + int32_t((x >> 16) & 0xffff) + int32_t((x >> 32) & 0xffff) +
                            int32_t(x >> 48) - 2 * 65535;  // in [-131070, 131070], mean 0
        out[i] = float(sum) * scale;
    }
}

}  // namespace

synth_result synth_model(const synth_shape& s, dtype type, uint64_t seed, const std::string& path,
                         const std::function<void(int64_t, int64_t)>& progress) {
    if (type != dtype::f32 && type != dtype::f16 && !quantize_supported(type)) {
        bad_arg("unsupported type " + std::string(dtype_name(type)) + " (supported: f32, f16, q8_0, q4_0, q4_k, q6_k)");
    }
    synth_check_shape(s);
    const int64_t d = s.n_embd, L = s.n_layer, ff = s.n_ff, V = s.n_vocab;
    const int64_t head_dim = d / s.n_head, kv = head_dim * s.n_head_kv;

    synth_result res;
    // Tensor order, names and shapes as the llama2.c importer writes them (engine/llama2c.cpp).
    std::vector<tensor_plan> plan;
    auto add = [&](std::string name, std::vector<int64_t> ne, double std) {
        dtype t = type;
        if (ne.size() < 2) {
            t = dtype::f32;
        } else if (std::string why; (t = matrix_quant_type(name, ne[0], type, &why)) != type) {
            res.fallbacks.push_back(fallback_note(why, t));
            log().warn("{}", res.fallbacks.back());
        }
        plan.push_back({std::move(name), std::move(ne), std, t});
    };
    // Residual-branch outputs are scaled down by sqrt(2 * layers) (GPT-2's init) so the residual stream keeps
    // an rms of about 1 after all 2 * layers additions.
    const double branch = 1.0 / std::sqrt(2.0 * double(L));
    add("token_embd.weight", {d, V}, 1.0);
    add("output_norm.weight", {d}, 0.0);
    add("output.weight", {d, V}, 1.0 / std::sqrt(double(d)));
    for (int64_t i = 0; i < L; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        add(b + "attn_q.weight", {d, d}, 1.0 / std::sqrt(double(d)));
        add(b + "attn_k.weight", {d, kv}, 1.0 / std::sqrt(double(d)));
        add(b + "attn_v.weight", {d, kv}, 1.0 / std::sqrt(double(d)));
        add(b + "attn_output.weight", {d, d}, branch / std::sqrt(double(d)));
        add(b + "attn_norm.weight", {d}, 0.0);
        add(b + "ffn_gate.weight", {d, ff}, 1.0 / std::sqrt(double(d)));
        add(b + "ffn_down.weight", {ff, d}, branch / std::sqrt(double(ff)));
        add(b + "ffn_up.weight", {d, ff}, 1.0 / std::sqrt(double(d)));
        add(b + "ffn_norm.weight", {d}, 0.0);
    }

    gguf_writer w;
    const bool named = !s.name.empty();
    const std::string model_name = named ? "synth-" + s.name
                                         : "synth-d" + std::to_string(d) + "-l" + std::to_string(L) + "-h" +
                                               std::to_string(s.n_head) + "-kv" + std::to_string(s.n_head_kv) + "-f" +
                                               std::to_string(ff) + "-v" + std::to_string(V);
    w.set_string("general.architecture", "llama");
    w.set_string("general.name", model_name);
    // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_Q4_K_S 14, MOSTLY_Q6_K 18.
    const uint32_t ftype = type == dtype::f32    ? 0u
                           : type == dtype::f16  ? 1u
                           : type == dtype::q4_0 ? 2u
                           : type == dtype::q8_0 ? 7u
                           : type == dtype::q4_k ? 14u
                                                 : 18u;
    w.set_u32("general.file_type", ftype);
    if (quantize_supported(type)) w.set_u32("general.quantization_version", 2);
    w.set_u64("tandem.synth.seed", seed);
    w.set_u32("llama.context_length", uint32_t(s.n_ctx));
    w.set_u32("llama.embedding_length", uint32_t(d));
    w.set_u32("llama.feed_forward_length", uint32_t(ff));
    w.set_u32("llama.attention.head_count", uint32_t(s.n_head));
    w.set_u32("llama.attention.head_count_kv", uint32_t(s.n_head_kv));
    w.set_u32("llama.block_count", uint32_t(L));
    w.set_u32("llama.rope.dimension_count", uint32_t(head_dim));
    w.set_f32("llama.rope.freq_base", 10000.f);
    w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);

    const vocab voc = synth_vocab(s.n_vocab);
    std::vector<std::string> texts;
    texts.reserve(voc.tokens.size());
    for (const auto& t : voc.tokens) {
        std::string g;
        for (const char c : t) {
            if (c == ' ')
                g += "\xe2\x96\x81";  // back to SentencePiece's U+2581 word marker
            else
                g += c;
        }
        texts.push_back(std::move(g));
    }
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_arr_str("tokenizer.ggml.tokens", texts);
    w.set_arr_f32("tokenizer.ggml.scores", voc.scores);
    w.set_arr_i32("tokenizer.ggml.token_type", voc.types);
    w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(voc.unk));
    w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(voc.bos));
    w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(voc.eos));

    // gguf_writer references the bytes until write(): one buffer per tensor, in the target type only.
    std::vector<std::vector<uint8_t>> data(plan.size());
    std::vector<float> row;
    const int64_t total = int64_t(plan.size());
    for (size_t i = 0; i < plan.size(); ++i) {
        const tensor_plan& t = plan[i];
        const int64_t k = t.ne[0], rows = t.ne.size() > 1 ? t.ne[1] : 1;
        const size_t rb = dtype_row_bytes(t.type, k);
        auto& out = data[i];
        out.resize(rb * size_t(rows));
        row.resize(size_t(k));
        const uint64_t key = mix64(seed ^ fnv1a(t.name));
        for (int64_t r = 0; r < rows; ++r) {
            uint8_t* dst = out.data() + size_t(r) * rb;
            fill_row(key, r, t.std, row.data(), k);
            if (t.type == dtype::f32) {
                std::memcpy(dst, row.data(), rb);
            } else if (t.type == dtype::f16) {
                for (int64_t j = 0; j < k; ++j) {
                    const uint16_t h = fp32_to_fp16(row[size_t(j)]);
                    dst[2 * j] = uint8_t(h & 0xff);
                    dst[2 * j + 1] = uint8_t(h >> 8);
                }
            } else {
                quantize_row(t.type, row.data(), dst, k);
            }
        }
        w.add_tensor_ref(t.name, t.type, t.ne, out.data(), out.size());
        res.n_params += k * rows;
        ++res.n_tensors;
        if (t.ne.size() >= 2 && t.type == type) ++res.n_quantized;
        if (progress) progress(int64_t(i) + 1, total);
    }
    w.write(path);
    return res;
}

}  // namespace tandem
