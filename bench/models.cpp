// The synthetic-model cache, see models.h. Files are named by shape, type and seed; synth_model writes them
// atomically, so a reader never sees a half-written model and a concurrent writer at worst repeats the work.
#include "bench/models.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "bench/timing.h"
#include "engine/error.h"
#include "engine/synth.h"

namespace tandem::bench {

namespace {
constexpr uint64_t synth_seed = 42;
}

std::string bench_cache_dir() {
    namespace fs = std::filesystem;
    if (const char* d = std::getenv("TANDEM_CACHE_DIR"); d && *d) return (fs::path(d) / "bench").string();
    if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "tandem" / "bench").string();
    const char* home = std::getenv("HOME");
    return (fs::path(home && *home ? home : ".") / ".cache" / "tandem" / "bench").string();
}

std::string synth_model_cached(const std::string& shape, dtype type) {
    namespace fs = std::filesystem;
    const synth_shape s = synth_resolve_shape(shape, {});
    const fs::path dir = bench_cache_dir();
    const fs::path path =
        dir / ("synth-" + shape + "-" + std::string(dtype_name(type)) + "-seed" + std::to_string(synth_seed) + ".gguf");
    if (fs::exists(path)) return path.string();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw error(TANDEM_ERR_IO, "cannot create " + dir.string() + ": " + ec.message());
    std::fprintf(stderr, "tandem-bench: writing the synthetic %s %s model to %s\n", shape.c_str(),
                 std::string(dtype_name(type)).c_str(), path.string().c_str());
    const double t0 = now_seconds();
    synth_model(s, type, synth_seed, path.string(), [](int64_t done, int64_t total) {
        std::fprintf(stderr, "\r  tensor %lld/%lld", static_cast<long long>(done), static_cast<long long>(total));
        if (done == total) std::fputc('\n', stderr);
    });
    std::fprintf(stderr, "tandem-bench: wrote it in %.1f s\n", now_seconds() - t0);
    return path.string();
}

dtype parse_type(const std::string& s) {
    for (uint32_t id = 0; id < 64; ++id)
        if (auto info = dtype_info(id); info && info->name == s) return dtype(id);
    throw error(TANDEM_ERR_INVALID_ARGUMENT, "unknown weight type " + s);
}

weight_totals streamed_weights(const model& m) {
    weight_totals w;
    auto matrix = [&](const tensor& t) { w.bytes += double(t.nbytes()), w.params += double(t.nelements()); };
    for (int l = 0; l < m.hparams().n_layer; ++l) {
        const layer_weights& L = m.layer(l);
        for (const tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) matrix(*t);
        w.bytes += double(L.attn_norm.nbytes() + L.ffn_norm.nbytes());
    }
    matrix(m.output());
    w.bytes += double(m.output_norm().nbytes());
    return w;
}

}  // namespace tandem::bench
