// Importer for llama2.c checkpoints (Karpathy's legacy "version 0" export: a 7 x int32 header and fp32
// weights) and their tokenizer .bin, producing a GGUF v3 "llama" model that loads like the files made by
// llama.cpp's llama2.c converter (same keys, value types, tensor names, shapes and bytes).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem {

// Converts `checkpoint` + `tokenizer_bin` into a GGUF file at `out_path` (written atomically), with
// general.name = model_name. Throws tandem::error: TANDEM_ERR_IO if a file cannot be read or written,
// TANDEM_ERR_FORMAT if a header field, size or tokenizer entry is invalid (the message names it and gives
// expected vs actual sizes), TANDEM_ERR_UNSUPPORTED for the newer llama2.c export versions (magic "ak42").
void convert_llama2c(const std::string& checkpoint, const std::string& tokenizer_bin, const std::string& out_path,
                     const std::string& model_name);

// The same conversion in memory: returns the GGUF bytes convert_llama2c would write, or throws the same errors
// (TANDEM_ERR_FORMAT / UNSUPPORTED, with "<memory>" in place of the file names). For the fuzzer and tests.
std::vector<uint8_t> convert_llama2c_bytes(std::span<const uint8_t> checkpoint, std::span<const uint8_t> tokenizer_bin,
                                           const std::string& model_name);

}  // namespace tandem
