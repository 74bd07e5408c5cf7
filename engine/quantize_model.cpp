// Whole-model quantization: plan every tensor's type first (so fallbacks are reported before the slow
// part), then convert tensor by tensor through f32 rows and write the file with gguf_writer.
#include "engine/quantize_model.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "backends/cpu/dequant.h"
#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/quantize.h"

namespace tandem {

namespace {

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("quantize")) return l;
        try {
            return spdlog::stderr_color_mt("quantize");
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("quantize");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

}  // namespace

dtype matrix_quant_type(const std::string& name, int64_t row_len, dtype type, std::string* why) {
    if ((type != dtype::q8_0 && type != dtype::q4_0) || row_len % 32 == 0) return type;
    *why = name + ": row length " + std::to_string(row_len) + " is not a multiple of the block size 32";
    return dtype::f32;
}

quantize_result quantize_model(const std::string& in_path, const std::string& out_path, dtype type, bool pure,
                               const std::function<void(int64_t, int64_t)>& progress) {
    if (!quantize_supported(type)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT,
                    "quantize: unsupported target type " + std::string(dtype_name(type)) + " (supported: q8_0, q4_0)");
    }
    const gguf_file in = gguf_file::open(in_path);
    gguf_writer w;
    for (const auto& [key, value] : in.metadata()) w.set_value(key, value);
    w.set_u32("general.file_type", type == dtype::q8_0 ? 7u : 2u);  // llama_ftype MOSTLY_Q8_0 / MOSTLY_Q4_0
    w.set_u32("general.quantization_version", 2);

    quantize_result res;
    const auto& tensors = in.tensors();
    std::vector<dtype> plan(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        if (t.ne.size() < 2) {
            plan[i] = t.type;
            continue;
        }
        if (!dequant_supported(t.type)) {
            throw error(TANDEM_ERR_UNSUPPORTED, "quantize: " + t.name + " has type " + std::string(dtype_name(t.type)) +
                                                    ", which cannot be read");
        }
        std::string why;
        if (matrix_quant_type(t.name, t.ne[0], type, &why) != type) {
            if (pure) throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize --pure: " + why);
            res.fallbacks.push_back(why + ", kept as f32");
            log().warn("{}, kept as f32", why);
            plan[i] = dtype::f32;
        } else {
            plan[i] = type;
        }
    }

    const int64_t total = int64_t(tensors.size());
    std::vector<float> row;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const uint8_t* src = in.tensor_data(t);
        if (plan[i] == t.type) {
            w.add_tensor_ref(t.name, t.type, t.ne, src, t.nbytes);  // the mapping outlives write()
        } else {
            const int64_t k = t.ne[0], rows = t.nelements() / k;
            const size_t in_rb = dtype_row_bytes(t.type, k), out_rb = dtype_row_bytes(plan[i], k);
            std::vector<uint8_t> out(out_rb * size_t(rows));
            row.resize(size_t(k));
            for (int64_t r = 0; r < rows; ++r) {
                dequantize_row(t.type, src + size_t(r) * in_rb, row.data(), k);
                if (plan[i] == dtype::f32) {
                    std::memcpy(out.data() + size_t(r) * out_rb, row.data(), out_rb);
                } else {
                    quantize_row(plan[i], row.data(), out.data() + size_t(r) * out_rb, k);
                }
            }
            w.add_tensor(t.name, plan[i], t.ne, out.data(), out.size());
        }
        ++(t.ne.size() >= 2 && plan[i] == type ? res.n_quantized : res.n_kept);
        if (progress) progress(int64_t(i) + 1, total);
    }
    w.write(out_path);
    return res;
}

}  // namespace tandem
