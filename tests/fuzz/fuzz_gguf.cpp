// libFuzzer target for the GGUF reader: any byte string must either parse or throw tandem::error. On success
// every metadata value is rendered and every tensor's first and last byte is read, so ASan catches a tensor
// info that points outside the buffer. Seeds: tests/fuzz/corpus/gguf (small files made with gguf_writer).
#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const tandem::gguf_file f = tandem::gguf_file::parse(data, size, "fuzz");
        size_t sink = 0;
        for (const auto& [key, value] : f.metadata()) sink += key.size() + value.to_string().size();
        for (const auto& t : f.tensors()) {
            const uint8_t* p = f.tensor_data(t);
            sink += p[0] + p[t.nbytes - 1];
        }
        volatile size_t keep = sink;
        (void)keep;
    } catch (const tandem::error&) {
        // Refusing bad input is the expected outcome; anything else escaping is a bug the fuzzer reports.
    }
    return 0;
}
