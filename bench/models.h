// The benchmark model cache: synthetic models of real shapes (engine/synth.h), written once and reused.
#pragma once

#include <string>

#include "engine/model.h"
#include "engine/types.h"

namespace tandem::bench {

// The cache directory: $TANDEM_CACHE_DIR/bench, else $XDG_CACHE_HOME/tandem/bench, else ~/.cache/tandem/bench.
std::string bench_cache_dir();

// Path of the synthetic model of a named shape (engine/synth.h) in `type` with seed 42, generated into the cache
// on first use (tinyllama-1.1b q4_0: about 6 s and 600 MB; progress on stderr) and reused afterwards. Throws
// tandem::error for an unknown shape or type, or when the file cannot be written.
std::string synth_model_cached(const std::string& shape, dtype type);

// Any GGUF type name ("q4_0", ...); throws tandem::error for an unknown one.
dtype parse_type(const std::string& s);

// What one forward pass streams: every matrix it multiplies by (token_embd is only gathered, one row per
// token, unless it is also the output head) and the norm vectors.
struct weight_totals {
    double bytes = 0;   // bytes read per pass
    double params = 0;  // elements of the matrices: a row through the model costs 2 * params flops in matmuls
};
weight_totals streamed_weights(const model& m);

}  // namespace tandem::bench
