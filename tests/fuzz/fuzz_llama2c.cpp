// libFuzzer target for the llama2.c importer. Input: u16 LE checkpoint length n, n checkpoint bytes, then the
// tokenizer .bin bytes. The importer must throw tandem::error or return a GGUF that is a valid model: the file
// parses, the engine loads it (hyper-parameters and every tensor checked by model::load) with the checkpoint's
// header values, and its tokenizer holds exactly the .bin's tokens. A crash, a sanitizer report, an allocation
// over -malloc_limit_mb (a size taken from a header field before it is checked) or an abort is a bug.
// Seeds: tests/fuzz/corpus/llama2c (tiny valid models, a truncated stories260K), by tests/fuzz/make_seeds.py.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/llama2c.h"
#include "engine/model.h"

namespace {

[[noreturn]] void violated(const std::string& what) {
    std::fprintf(stderr, "fuzz_llama2c: invariant violated: %s\n", what.c_str());
    std::abort();
}

int32_t le_i32(const uint8_t* p) {
    return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
}

// model::load takes a path, so accepted models go through one scratch file per process, removed once loaded
// (the model keeps its mapping).
const std::string& scratch_path() {
    static const std::string path = "/tmp/fuzz_llama2c_" + std::to_string(::getpid()) + ".gguf";
    return path;
}

void check_model(const std::vector<uint8_t>& gguf, const uint8_t* ck, size_t tok_count) {
    // The GGUF parses on its own before the engine sees it.
    (void)tandem::gguf_file::parse(gguf.data(), gguf.size(), "converted");

    FILE* f = std::fopen(scratch_path().c_str(), "wb");
    if (!f || std::fwrite(gguf.data(), 1, gguf.size(), f) != gguf.size() || std::fclose(f) != 0)
        violated("cannot write the scratch file " + scratch_path());
    std::unique_ptr<tandem::model> m;
    try {
        m = tandem::model::load(scratch_path(), tandem::make_backend("cpu"));
    } catch (const tandem::error& e) {
        violated(std::string("the importer accepted a checkpoint the engine cannot load: ") + e.what());
    }
    std::remove(scratch_path().c_str());
    const tandem::llama_hparams& hp = m->hparams();
    const int32_t vocab = le_i32(ck + 20);
    if (hp.n_embd != le_i32(ck) || hp.n_ff != le_i32(ck + 4) || hp.n_layer != le_i32(ck + 8) ||
        hp.n_head != le_i32(ck + 12) || hp.n_head_kv != le_i32(ck + 16) || hp.n_ctx_train != le_i32(ck + 24) ||
        int64_t(hp.n_vocab) != (vocab < 0 ? -int64_t(vocab) : int64_t(vocab)))
        violated("the loaded hyper-parameters differ from the checkpoint header");
    if (size_t(m->tokenizer().n_vocab()) != tok_count) violated("the loaded vocabulary differs from the .bin");
}

// Tokens in a llama2.c tokenizer .bin that the importer accepted (it has already validated the layout).
size_t count_tokens(const uint8_t* p, size_t n) {
    size_t count = 0;
    for (size_t i = 4; i + 8 <= n; ++count) i += 8 + size_t(le_i32(p + i + 4));
    return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool quiet = [] {
        spdlog::set_level(spdlog::level::warn);  // model loads log at info: too slow for fuzzing
        return true;
    }();
    (void)quiet;
    if (size < 2) return 0;
    const size_t ck_len = std::min<size_t>(size_t(data[0]) | size_t(data[1]) << 8, size - 2);
    const uint8_t* ck = data + 2;
    const uint8_t* tok = ck + ck_len;
    const size_t tok_len = size - 2 - ck_len;

    std::vector<uint8_t> gguf;
    try {
        gguf = tandem::convert_llama2c_bytes({ck, ck_len}, {tok, tok_len}, "fuzz");
    } catch (const tandem::error& e) {
        if (std::strlen(e.what()) == 0) violated("an error without a message");
        return 0;  // refusing bad input with a message is the expected outcome
    }
    check_model(gguf, ck, count_tokens(tok, tok_len));
    return 0;
}
