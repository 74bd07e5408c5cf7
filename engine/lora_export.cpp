// `tandem export-lora`: merge LoRA adapters into a copy of the base model, W' = W + sum s * alpha / r * B A.
// The base is loaded on cpu_ref (a zero-copy view of the file) only so that the adapters are validated by the
// same loader inference uses; the merge itself runs row by row on the host in f32, and quantized bases are
// dequantized, merged and re-quantized with tandem's own quantizer.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <map>

#include "backends/cpu/dequant.h"
#include "engine/error.h"
#include "engine/gguf_writer.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/quantize.h"
#include "engine/quantize_model.h"

namespace tandem {

namespace {

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("lora")) return l;
        try {
            return spdlog::stderr_color_mt("lora");
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("lora");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

bool writable_type(dtype t) { return t == dtype::f32 || t == dtype::f16 || quantize_supported(t); }

// One adapter's contribution to one base tensor: factor * B A with A {K, r}, B {r, N} as host f32 copies.
struct delta {
    const float* a;
    const float* b;
    int64_t r;
    float factor;
};

}  // namespace

export_result export_merged(const std::string& base_path, const std::vector<std::pair<std::string, float>>& adapters,
                            const std::string& out_path, std::optional<dtype> out_type,
                            const std::function<void(int64_t, int64_t)>& progress) {
    if (adapters.empty()) throw error(TANDEM_ERR_INVALID_ARGUMENT, "export-lora: no adapters to merge");
    if (out_type && !writable_type(*out_type)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "export-lora: cannot write merged tensors as " +
                                                     std::string(dtype_name(*out_type)) +
                                                     " (f32, f16, q8_0, q4_0, q4_k, q6_k)");
    }
    // cpu_ref buffers are host memory: the adapters' tensors are read through host pointers below.
    const auto m = model::load(base_path, make_backend("cpu_ref"));
    std::vector<std::unique_ptr<lora_adapter>> loaded;
    std::map<std::string, std::vector<delta>> by_name;
    for (const auto& [path, scale] : adapters) {
        loaded.push_back(lora_adapter::load(path, *m));
        const lora_adapter& a = *loaded.back();
        const lora_use use{&a, scale};
        for (int32_t l = 0; l < a.n_layer(); ++l) {
            for (lora_target t : a.targets()) {
                const lora_pair* p = a.get(l, t);
                if (!p) continue;
                by_name[lora_base_tensor_name(l, t)].push_back(
                    {p->a.host<float>(), p->b.host<float>(), a.rank(), use.factor()});
            }
        }
    }

    const gguf_file& in = m->file();
    gguf_writer w;
    for (const auto& [key, value] : in.metadata()) w.set_value(key, value);
    export_result res;
    const auto& tensors = in.tensors();
    const int64_t total = int64_t(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const auto it = by_name.find(t.name);
        if (it == by_name.end()) {
            w.add_tensor_ref(t.name, t.type, t.ne, in.tensor_data(t), t.nbytes);  // the mapping outlives write()
        } else {
            if (!dequant_supported(t.type)) {
                throw error(TANDEM_ERR_UNSUPPORTED, "export-lora: " + t.name + " has type " +
                                                        std::string(dtype_name(t.type)) + ", which cannot be read");
            }
            const dtype want = out_type.value_or(t.type);
            if (!writable_type(want)) {
                throw error(TANDEM_ERR_UNSUPPORTED, "export-lora: " + t.name + " has type " +
                                                        std::string(dtype_name(want)) +
                                                        ", which tandem cannot write; choose --outtype");
            }
            const int64_t K = t.ne[0], N = t.nelements() / K;
            std::string why;
            const dtype type = matrix_quant_type(t.name, K, want, &why);
            if (type != want) {
                res.fallbacks.push_back(fallback_note(why, type));
                log().warn("{}", res.fallbacks.back());
            }
            const size_t in_rb = dtype_row_bytes(t.type, K), out_rb = dtype_row_bytes(type, K);
            std::vector<uint8_t> out(out_rb * size_t(N));
            std::vector<float> row(static_cast<size_t>(K));
            const uint8_t* src = in.tensor_data(t);
            for (int64_t n = 0; n < N; ++n) {
                dequantize_row(t.type, src + size_t(n) * in_rb, row.data(), K);
                // row n of B A is sum_j B[n][j] * A[j] (A's rows are K long, B's rows r long).
                for (const delta& d : it->second) {
                    for (int64_t j = 0; j < d.r; ++j) {
                        const float c = d.factor * d.b[n * d.r + j];
                        const float* arow = d.a + j * K;
                        for (int64_t k = 0; k < K; ++k) row[size_t(k)] += c * arow[k];
                    }
                }
                uint8_t* dst = out.data() + size_t(n) * out_rb;
                if (type == dtype::f32) {
                    std::memcpy(dst, row.data(), out_rb);
                } else if (type == dtype::f16) {
                    for (int64_t k = 0; k < K; ++k) {
                        const uint16_t h = fp32_to_fp16(row[size_t(k)]);
                        std::memcpy(dst + 2 * k, &h, 2);
                    }
                } else {
                    quantize_row(type, row.data(), dst, K);
                }
            }
            w.add_tensor(t.name, type, t.ne, out.data(), out.size());
            ++res.n_merged;
        }
        if (progress) progress(int64_t(i) + 1, total);
    }
    w.write(out_path);
    return res;
}

}  // namespace tandem
