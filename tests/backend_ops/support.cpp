// The support matrix of support.h: creates every compiled-in backend once and asks supports() per row.
#include "tests/backend_ops/support.h"

#include <memory>
#include <sstream>

namespace tandem::test {

std::vector<support_row> support_rows() {
    const dtype weights[] = {dtype::f32, dtype::f16, dtype::q8_0, dtype::q4_0, dtype::q4_k, dtype::q6_k};
    const dtype caches[] = {dtype::f32, dtype::f16};
    std::vector<support_row> rows;
    for (op o : all_ops()) {
        if (o == op::get_rows || o == op::matmul || o == op::matmul_t) {
            for (dtype t : weights) rows.push_back({o, t});
        } else if (o == op::attention || o == op::kv_write || o == op::kv_copy) {
            for (dtype t : caches) rows.push_back({o, t});
        } else {
            rows.push_back({o, dtype::f32});
        }
    }
    return rows;
}

std::string support_variant(const support_row& r) {
    const std::string t(dtype_name(r.t)), name = op_name(r.o);
    switch (r.o) {
        case op::get_rows:
        case op::matmul:
        case op::matmul_t:
            return name + "_" + t + "_f32";
        case op::attention_back:  // q, k, v and every gradient f32, like attention_f32
        case op::adamw:           // in place on f32 parameters and moments
            return name + "_f32";
        case op::attention:
            return name + "_" + t;  // the cache type; q and out are f32
        case op::kv_write:
            return name + "_f32_" + t;
        case op::kv_copy:
            return name + "_" + t;
        case op::argmax:
            return name + "_f32_i32";
        case op::top_k:
            return name + "_f32_i32";
        default:
            return name + "_f32_f32";
    }
}

std::string support_markdown() {
    struct column {
        std::string name;
        std::unique_ptr<backend> b;
        std::string why_not;
    };
    std::vector<column> cols;
    for (const auto& n : backend_names()) {
        column c{n, nullptr, ""};
        try {
            c.b = make_backend(n);
        } catch (const std::exception& e) {
            c.why_not = e.what();
        }
        cols.push_back(std::move(c));
    }
    std::ostringstream s;
    s << "| op | type | variant |";
    for (const auto& c : cols) s << " " << c.name << " |";
    s << "\n|---|---|---|";
    for (size_t i = 0; i < cols.size(); ++i) s << ":-:|";
    s << "\n";
    for (const auto& r : support_rows()) {
        s << "| " << op_name(r.o) << " | " << dtype_name(r.t) << " | " << support_variant(r) << " |";
        for (const auto& c : cols) s << " " << (!c.b ? "n/a" : c.b->supports(r.o, r.t) ? "yes" : "-") << " |";
        s << "\n";
    }
    for (const auto& c : cols)
        if (!c.b) s << "\n" << c.name << ": not available on this machine (" << c.why_not << ")\n";
    return s.str();
}

}  // namespace tandem::test
