// Importer for llama2.c checkpoints (Karpathy's legacy "version 0" export: a 7 x int32 header and fp32
// weights) and their tokenizer .bin, producing a GGUF v3 "llama" model that loads like the files made by
// llama.cpp's llama2.c converter (same keys, value types, tensor names, shapes and bytes).
#pragma once

#include <string>

namespace tandem {

// Converts `checkpoint` + `tokenizer_bin` into a GGUF file at `out_path` (written atomically), with
// general.name = model_name. Throws tandem::error: TANDEM_ERR_IO if a file cannot be read or written,
// TANDEM_ERR_FORMAT if a header field, size or tokenizer entry is invalid (the message names it and gives
// expected vs actual sizes), TANDEM_ERR_UNSUPPORTED for the newer llama2.c export versions (magic "ak42").
void convert_llama2c(const std::string& checkpoint, const std::string& tokenizer_bin, const std::string& out_path,
                     const std::string& model_name);

}  // namespace tandem
