// Whole-model quantization: plan every tensor's type first (so fallbacks are reported before the slow
// part), then convert tensor by tensor through f32 rows and write the file with gguf_writer.
#include "engine/quantize_model.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>

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

bool is_block_type(dtype t) { return t == dtype::q8_0 || t == dtype::q4_0 || t == dtype::q4_k || t == dtype::q6_k; }

// The block index N of a tensor named "blk.N.*", else -1.
int64_t block_index(const std::string& name) {
    if (name.rfind("blk.", 0) != 0) return -1;
    const size_t dot = name.find('.', 4);
    if (dot == std::string::npos || dot == 4) return -1;
    int64_t i = 0;
    for (size_t p = 4; p < dot; ++p) {
        if (name[p] < '0' || name[p] > '9') return -1;
        i = i * 10 + (name[p] - '0');
    }
    return i;
}

bool ends_with(const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// f(r0, r1) over [0, rows) split into contiguous parts, one per hardware thread: rows are independent, and the
// K-quant searches cost ~100 ns per weight (a 7B model would take a quarter of an hour on one core). Small tensors
// stay on the calling thread. The first exception thrown by any part is rethrown here.
void for_rows(int64_t rows, int64_t row_len, const std::function<void(int64_t, int64_t)>& f) {
    const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
    const int64_t parts = std::clamp<int64_t>(rows * row_len / (int64_t(1) << 16), 1, std::min(hw, rows));
    if (parts == 1) return f(0, rows);
    std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
    std::vector<std::thread> threads;
    for (int64_t p = 0; p < parts; ++p) {
        threads.emplace_back([&, p] {
            try {
                f(rows * p / parts, rows * (p + 1) / parts);
            } catch (...) {
                errors[size_t(p)] = std::current_exception();
            }
        });
    }
    for (auto& th : threads) th.join();
    for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// llama.cpp's llama_ftype of a target, for general.file_type.
uint32_t file_type(const quant_target& t) {
    if (t.k_m) return 15;  // MOSTLY_Q4_K_M
    switch (t.type) {
        case dtype::q8_0:
            return 7;  // MOSTLY_Q8_0
        case dtype::q4_0:
            return 2;  // MOSTLY_Q4_0
        case dtype::q4_k:
            return 14;  // MOSTLY_Q4_K_S: the all-q4_k file
        default:
            return 18;  // MOSTLY_Q6_K
    }
}

}  // namespace

std::string quant_target::name() const { return k_m ? "q4_k_m" : std::string(dtype_name(type)); }

std::optional<quant_target> parse_quant_target(std::string_view name) {
    if (name == "q4_k_m") return quant_target{dtype::q4_k, true};
    for (dtype t : {dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k})
        if (name == dtype_name(t)) return quant_target{t, false};
    return std::nullopt;
}

dtype matrix_quant_type(const std::string& name, int64_t row_len, dtype type, std::string* why) {
    if (!is_block_type(type)) return type;
    const auto info = *dtype_info(uint32_t(type));
    if (row_len % info.block_size == 0) return type;
    *why = name + ": row length " + std::to_string(row_len) + " is not a multiple of the " + std::string(info.name) +
           " block size " + std::to_string(info.block_size);
    if (row_len % 32 == 0 && type == dtype::q4_k) return dtype::q4_0;
    if (row_len % 32 == 0 && type == dtype::q6_k) return dtype::q8_0;
    return dtype::f32;
}

std::string fallback_note(const std::string& why, dtype used) {
    return why + (used == dtype::f32 ? ", kept as f32" : ", written as " + std::string(dtype_name(used)));
}

dtype planned_quant_type(const std::string& name, const std::vector<int64_t>& ne, const quant_target& target,
                         int64_t n_layer, bool has_output, bool pure) {
    if (pure) return target.type;
    const bool output = name == "output.weight" || (!has_output && name == "token_embd.weight");
    if (target.type == dtype::q4_0 && !target.k_m) {
        return output && !ne.empty() && ne[0] % 256 == 0 ? dtype::q6_k : dtype::q4_0;
    }
    if (!target.k_m) return target.type;
    if (output) return dtype::q6_k;
    if (ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight")) {
        const int64_t i = block_index(name), n = n_layer;
        const bool more_bits = i >= 0 && (i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2);
        if (more_bits) return dtype::q6_k;
    }
    return dtype::q4_k;
}

quantize_result quantize_model(const std::string& in_path, const std::string& out_path, dtype type, bool pure,
                               const std::function<void(int64_t, int64_t)>& progress) {
    return quantize_model(in_path, out_path, quant_target{type, false}, pure, progress);
}

quantize_result quantize_model(const std::string& in_path, const std::string& out_path, const quant_target& target,
                               bool pure, const std::function<void(int64_t, int64_t)>& progress) {
    if (!quantize_supported(target.type) || (target.k_m && target.type != dtype::q4_k)) {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize: unsupported target type " + target.name() +
                                                     " (supported: q8_0, q4_0, q4_k, q6_k, q4_k_m)");
    }
    const gguf_file in = gguf_file::open(in_path);
    gguf_writer w;
    for (const auto& [key, value] : in.metadata()) w.set_value(key, value);
    w.set_u32("general.file_type", file_type(target));
    w.set_u32("general.quantization_version", 2);

    quantize_result res;
    const auto& tensors = in.tensors();
    int64_t n_layer = 0;
    for (const auto& t : tensors) n_layer = std::max(n_layer, block_index(t.name) + 1);
    const bool has_output = in.find_tensor("output.weight") != nullptr;
    std::vector<dtype> plan(tensors.size());
    std::vector<bool> fell_back(tensors.size());
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
        const dtype want = planned_quant_type(t.name, t.ne, target, n_layer, has_output, pure);
        std::string why;
        plan[i] = matrix_quant_type(t.name, t.ne[0], want, &why);
        if (plan[i] != want) {
            if (pure) throw error(TANDEM_ERR_INVALID_ARGUMENT, "quantize --pure: " + why);
            res.fallbacks.push_back(fallback_note(why, plan[i]));
            log().warn("{}", res.fallbacks.back());
            fell_back[i] = true;
        }
    }

    const int64_t total = int64_t(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        const uint8_t* src = in.tensor_data(t);
        if (plan[i] == t.type) {
            w.add_tensor_ref(t.name, t.type, t.ne, src, t.nbytes);  // the mapping outlives write()
        } else {
            const int64_t k = t.ne[0], rows = t.nelements() / k;
            const size_t in_rb = dtype_row_bytes(t.type, k), out_rb = dtype_row_bytes(plan[i], k);
            std::vector<uint8_t> out(out_rb * size_t(rows));
            for_rows(rows, k, [&](int64_t r0, int64_t r1) {
                std::vector<float> row(static_cast<size_t>(k));
                for (int64_t r = r0; r < r1; ++r) {
                    dequantize_row(t.type, src + size_t(r) * in_rb, row.data(), k);
                    if (plan[i] == dtype::f32) {
                        std::memcpy(out.data() + size_t(r) * out_rb, row.data(), out_rb);
                    } else {
                        quantize_row(plan[i], row.data(), out.data() + size_t(r) * out_rb, k);
                    }
                }
            });
            w.add_tensor(t.name, plan[i], t.ne, out.data(), out.size());
        }
        ++(t.ne.size() >= 2 && !fell_back[i] ? res.n_quantized : res.n_kept);
        if (progress) progress(int64_t(i) + 1, total);
    }
    w.write(out_path);
    return res;
}

}  // namespace tandem
