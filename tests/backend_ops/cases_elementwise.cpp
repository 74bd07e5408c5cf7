// Cases of the element-wise and row-wise ops: get_rows, rms_norm, rope, swiglu, add, softmax, kv_write,
// kv_copy, argmax and top_k, over odd sizes around vector widths, in-place (aliased) variants and edge values.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>

#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"
#include "tests/common/test_util.h"

namespace tandem::test {

namespace {

using ne4 = std::array<int64_t, 4>;

std::string dims(const char* name, const ne4& ne) { return std::string(" ") + name + "=" + shape_str(ne); }

void get_rows_sweep(backend_ops& t, dtype table_type) {
    for (int64_t k : {1, 7, 16, 64, 4097}) {
        for (int64_t n_rows : {1, 5, 300}) {
            for (int64_t m : {1, 4, 33}) {
                std::vector<int32_t> ids(static_cast<size_t>(m));
                for (auto& id : ids) id = int32_t(t.random().integer(0, n_rows - 1));  // duplicates allowed
                op_case c;
                c.desc = "get_rows_" + std::string(dtype_name(table_type)) + "_f32" + dims("table", {k, n_rows, 1, 1}) +
                         " M=" + std::to_string(m);
                c.args = {random_arg(t.random(), table_type, {k, n_rows, 1, 1}), i32_arg({m, 1, 1, 1}, ids),
                          output_arg(dtype::f32, {k, m, 1, 1})};
                c.outputs = {2};
                c.tol = {};  // a copy (f16 -> f32 is exact): bit-exact
                c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows(a[0], a[1], a[2]); };
                t.check(c);
            }
        }
    }
}

// Unary-shaped f32 op over x {K, M}: out = f(x), either into a separate output or in place.
op_case row_case(backend_ops& t, const std::string& name, ne4 ne, float lo, float hi, bool in_place) {
    op_case c;
    c.desc = name + dims("x", ne) + " range=[" + std::to_string(lo) + "," + std::to_string(hi) + "]" +
             (in_place ? " in-place" : "");
    c.args = {random_arg(t.random(), dtype::f32, ne, lo, hi)};
    if (!in_place) c.args.push_back(output_arg(dtype::f32, ne));
    c.outputs = {in_place ? 0 : 1};
    return c;
}

}  // namespace

TEST_P(backend_ops, get_rows_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::f32);
    get_rows_sweep(*this, dtype::f32);
}

TEST_P(backend_ops, get_rows_f16_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::get_rows, dtype::f16);
    get_rows_sweep(*this, dtype::f16);
}

TEST_P(backend_ops, rms_norm_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::rms_norm, dtype::f32);
    for (int64_t k : {1, 5, 16, 33, 768, 4097}) {
        for (int64_t m : {1, 3, 64}) {
            for (float mag : {1e-3f, 1.f, 1000.f}) {  // 1e-3: mean(x^2) < eps, so eps must be applied
                for (bool in_place : {false, true}) {
                    op_case c = row_case(*this, "rms_norm_f32_f32", {k, m, 1, 1}, -mag, mag, in_place);
                    c.args.push_back(random_arg(random(), dtype::f32, {k, 1, 1, 1}, -2.f, 2.f));
                    const int w = int(c.args.size()) - 1, out = c.outputs[0];
                    // Only the sum of squares (up to 4097 terms) is reordered: ~1e-6 relative on outputs up to
                    // |3.5| (seen: 5e-6); a dropped eps or element shows at 1e-2 relative or more.
                    c.tol = {1e-10, 5e-5};
                    c.run = [w, out](backend& b, const std::vector<tensor>& a) {
                        b.rms_norm(a[0], a[w], 1e-5f, a[out]);
                    };
                    check(c);
                }
            }
        }
    }
}

TEST_P(backend_ops, rope_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::rope, dtype::f32);
    struct cfg {
        int64_t d, h, m1, m2;
    };
    for (cfg s : {cfg{8, 1, 1, 1}, cfg{64, 4, 7, 1}, cfg{128, 12, 64, 1}, cfg{64, 2, 3, 4}, cfg{6, 3, 5, 1}}) {
        for (int64_t n_rot : {s.d, s.d / 2 - (s.d / 2) % 2, int64_t(2), int64_t(0)}) {
            for (float base : {10000.f, 500000.f}) {
                std::vector<int32_t> pos(size_t(s.m1 * s.m2));
                for (auto& p : pos) p = int32_t(random().integer(0, 4096));
                pos[0] = 4096;
                op_case c;
                c.desc = "rope_f32_f32" + dims("x", {s.d, s.h, s.m1, s.m2}) + " n_rot=" + std::to_string(n_rot) +
                         " base=" + std::to_string(base);
                c.args = {random_arg(random(), dtype::f32, {s.d, s.h, s.m1, s.m2}),
                          i32_arg({s.m1 * s.m2, 1, 1, 1}, pos)};
                c.outputs = {0};
                // Angles up to 4096 rad carry float rounding of ~2.4e-4 rad (half an ulp of 4096) in any
                // implementation that does not copy cpu_ref's exact expression; a wrong frequency or pair is O(1).
                c.tol = {1e-8, 2e-3};
                rope_params p;
                p.n_rot = int32_t(n_rot), p.freq_base = base;
                c.run = [p](backend& b, const std::vector<tensor>& a) { b.rope(a[0], a[1], p); };
                check(c);
            }
        }
    }
}

TEST_P(backend_ops, swiglu_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::swiglu, dtype::f32);
    for (int64_t n : {1, 5, 17, 1000, 16896}) {
        for (float mag : {4.f, 100.f}) {
            for (bool in_place : {false, true}) {
                op_case c = row_case(*this, "swiglu_f32_f32", {n, 1, 1, 1}, -mag, mag, in_place);
                c.args.push_back(random_arg(random(), dtype::f32, {n, 1, 1, 1}, -mag, mag));
                const int up = int(c.args.size()) - 1, out = c.outputs[0];
                // A vector exp is ~2 ulp off libm's, so silu * up is ~3e-7 relative off; 1e-6 of the largest
                // possible output (mag^2) bounds it (seen: NMSE 1e-16); a wrong formula is O(1) relative.
                c.tol = {1e-12, 1e-6 * double(mag) * double(mag)};
                c.run = [up, out](backend& b, const std::vector<tensor>& a) { b.swiglu(a[0], a[up], a[out]); };
                check(c);
            }
        }
    }
}

TEST_P(backend_ops, add_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::add, dtype::f32);
    for (int64_t n : {1, 5, 17, 1000, 16896}) {
        for (bool in_place : {false, true}) {
            op_case c = row_case(*this, "add_f32_f32", {n, 1, 1, 1}, -1.f, 1.f, in_place);
            c.args.push_back(random_arg(random(), dtype::f32, {n, 1, 1, 1}));
            const int b_idx = int(c.args.size()) - 1, out = c.outputs[0];
            c.tol = {};  // one rounding per element, the same everywhere: bit-exact
            c.run = [b_idx, out](backend& b, const std::vector<tensor>& a) { b.add(a[0], a[b_idx], a[out]); };
            check(c);
        }
    }
}

TEST_P(backend_ops, softmax_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::softmax, dtype::f32);
    for (int64_t k : {1, 5, 16, 33, 512, 32000}) {
        for (int64_t m : {1, 4}) {
            // Large magnitudes overflow exp() unless the row maximum is subtracted first.
            for (float mag : {1.f, 100.f, 10000.f}) {
                for (bool in_place : {false, true}) {
                    op_case c = row_case(*this, "softmax_f32_f32", {k, m, 1, 1}, -mag, mag, in_place);
                    const int out = c.outputs[0];
                    // Probabilities in [0, 1]: exp differs by ~2 ulp, and cpu_ref's sequential sum of 32000 terms
                    // carries ~1e-5 relative error (seen: NMSE 8e-12); a wrong normaliser or shift is >> 1e-9.
                    c.tol = {1e-9, 1e-6};
                    c.run = [out](backend& b, const std::vector<tensor>& a) { b.softmax(a[0], a[out]); };
                    check(c);
                }
            }
        }
    }
}

namespace {

void kv_write_sweep(backend_ops& t, dtype cache) {
    for (int64_t k : {1, 7, 64, 1024}) {
        for (int64_t m : {1, 5, 64}) {
            const int64_t n_slots = m + 70;
            std::vector<int32_t> perm(static_cast<size_t>(n_slots));
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), t.random().engine());
            std::vector<int32_t> slots(perm.begin(), perm.begin() + m);  // distinct: the order of writes is moot
            op_case c;
            c.desc = "kv_write_f32_" + std::string(dtype_name(cache)) + dims("src", {k, m, 1, 1}) +
                     " slots=" + std::to_string(n_slots);
            c.args = {random_arg(t.random(), dtype::f32, {k, m, 1, 1}, -3.f, 3.f),
                      random_arg(t.random(), cache, {k, n_slots, 1, 1}), i32_arg({m, 1, 1, 1}, slots)};
            c.outputs = {1};
            // f32: a copy. f16: single elements may be one f16 ulp off (2e-3 at |x| <= 3) where a device breaks
            // ties differently, but rounding must be to nearest: truncation has an NMSE of ~2e-7 and fails.
            c.tol = cache == dtype::f32 ? tolerance{} : tolerance{1e-8, 2e-3};
            c.run = [](backend& b, const std::vector<tensor>& a) { b.kv_write(a[0], a[1], a[2]); };
            t.check(c);
        }
    }
}

void kv_copy_sweep(backend_ops& t, dtype cache) {
    const int64_t n_slots = 100;
    struct move {
        const char* what;
        std::vector<int32_t> src, dst;
    };
    std::vector<move> moves = {
        {"compaction", {11, 12, 13, 14}, {10, 11, 12, 13}},  // dst[i+1] == src[i]: reads must precede writes
        {"shift-up", {10, 11, 12}, {11, 12, 13}},
        {"swap", {3, 77}, {77, 3}},
        {"identity", {5, 6}, {5, 6}},
        {"single", {99}, {0}},
        {"empty", {}, {}},
    };
    std::vector<int32_t> perm(static_cast<size_t>(n_slots));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), t.random().engine());
    moves.push_back({"permutation", std::vector<int32_t>(perm.begin(), perm.begin() + 40),
                     std::vector<int32_t>(perm.begin() + 20, perm.begin() + 60)});
    for (int64_t k : {1, 7, 64, 1024}) {
        for (const auto& mv : moves) {
            const int64_t n = int64_t(mv.src.size());
            op_case c;
            c.desc = "kv_copy_" + std::string(dtype_name(cache)) + " " + mv.what + dims("cache", {k, n_slots, 1, 1});
            c.args = {random_arg(t.random(), cache, {k, n_slots, 1, 1}), i32_arg({n, 1, 1, 1}, mv.src),
                      i32_arg({n, 1, 1, 1}, mv.dst)};
            c.outputs = {0};
            c.tol = {};  // moves bytes: bit-exact
            c.run = [](backend& b, const std::vector<tensor>& a) { b.kv_copy(a[0], a[1], a[2]); };
            t.check(c);
        }
    }
}

}  // namespace

TEST_P(backend_ops, kv_write_f32_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::kv_write, dtype::f32);
    kv_write_sweep(*this, dtype::f32);
}
TEST_P(backend_ops, kv_write_f32_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::kv_write, dtype::f16);
    kv_write_sweep(*this, dtype::f16);
}
TEST_P(backend_ops, kv_copy_f32) {
    TANDEM_SKIP_UNSUPPORTED(op::kv_copy, dtype::f32);
    kv_copy_sweep(*this, dtype::f32);
}
TEST_P(backend_ops, kv_copy_f16) {
    TANDEM_SKIP_UNSUPPORTED(op::kv_copy, dtype::f16);
    kv_copy_sweep(*this, dtype::f16);
}

TEST_P(backend_ops, argmax_f32_i32) {
    TANDEM_SKIP_UNSUPPORTED(op::argmax, dtype::f32);
    for (int64_t k : {1, 5, 16, 33, 512, 32000}) {
        for (int64_t m : {1, 3, 16}) {
            for (int kind = 0; kind < 4; ++kind) {
                std::vector<float> x;
                const char* what = "";
                switch (kind) {
                    case 0:
                        what = "random", x = random_floats(random(), k * m);
                        break;
                    case 1:  // few distinct values: the maximum repeats, the first must win
                        what = "ties";
                        for (int64_t i = 0; i < k * m; ++i) x.push_back(float(random().integer(0, 3)));
                        break;
                    case 2:
                        what = "constant", x.assign(size_t(k * m), -7.f);
                        break;
                    default:  // the maximum in the last column
                        what = "max-last";
                        x = random_floats(random(), k * m, -1.f, 0.f);
                        for (int64_t r = 0; r < m; ++r) x[size_t(r * k + k - 1)] = 0.5f;
                        break;
                }
                op_case c;
                c.desc = "argmax_f32_i32 " + std::string(what) + dims("x", {k, m, 1, 1});
                c.args = {float_arg(dtype::f32, {k, m, 1, 1}, x), output_arg(dtype::i32, {m, 1, 1, 1})};
                c.outputs = {1};
                c.run = [](backend& b, const std::vector<tensor>& a) { b.argmax(a[0], a[1]); };
                check(c);
            }
        }
    }
}

namespace {

// The kinds of top_k data: each stresses one rule of the selection.
enum class top_k_data { random, ties, neg_inf, ascending, count };

const char* top_k_data_name(top_k_data d) {
    switch (d) {
        case top_k_data::random:
            return "random";
        case top_k_data::ties:
            return "ties";
        case top_k_data::neg_inf:
            return "neg-inf";
        case top_k_data::ascending:
            return "ascending";
        default:
            return "?";
    }
}

op_case top_k_case(rng& r, top_k_data kind, int64_t k_row, int64_t m, int32_t k) {
    const int64_t n = k_row * m;
    std::vector<float> x;
    switch (kind) {
        case top_k_data::random:
            x = random_floats(r, n);
            break;
        case top_k_data::ties:  // four levels: long runs of equal values, the lower index must come first
            for (int64_t i = 0; i < n; ++i) x.push_back(float(r.integer(0, 3)) * 0.5f - 1.f);
            break;
        case top_k_data::neg_inf:  // mostly -inf, some huge negatives: often fewer finite values than k
            for (int64_t i = 0; i < n; ++i) {
                const int64_t u = r.integer(0, 19);
                x.push_back(u < 15   ? -std::numeric_limits<float>::infinity()
                            : u < 17 ? -std::numeric_limits<float>::max()
                            : u < 18 ? -1e30f
                                     : r.uniform(-1.f, 1.f));
            }
            break;
        default:  // rising in steps of three equal values: every element enters the selection (worst case)
            for (int64_t i = 0; i < n; ++i) x.push_back(float(i % k_row / 3));
            break;
    }
    op_case c;
    c.desc =
        "top_k_f32_i32 " + std::string(top_k_data_name(kind)) + dims("x", {k_row, m, 1, 1}) + " k=" + std::to_string(k);
    c.args = {float_arg(dtype::f32, {k_row, m, 1, 1}, x), output_arg(dtype::i32, {k, m, 1, 1}),
              output_arg(dtype::f32, {k, m, 1, 1})};
    c.outputs = {1, 2};
    c.tol = {};  // a selection: ids and values bit-exact
    c.run = [k](backend& b, const std::vector<tensor>& a) { b.top_k(a[0], k, a[1], a[2]); };
    return c;
}

}  // namespace

TEST_P(backend_ops, top_k_f32_i32) {
    TANDEM_SKIP_UNSUPPORTED(op::top_k, dtype::f32);
    for (int64_t k_row : {1, 7, 100, 512, 32000, 100003}) {
        for (int64_t m : {1, 3, 17}) {
            for (int32_t k : {1, 5, 40, 64}) {
                if (k > k_row) continue;
                for (int d = 0; d < int(top_k_data::count); ++d)
                    check(top_k_case(random(), top_k_data(d), k_row, m, k));
            }
        }
    }
}

// Layouts the default device does not choose: OpenCL with other work-group sizes (non-powers of two
// included), Vulkan with small loop budgets that cut rows into many chunks and need several merge passes.
TEST_P(backend_ops, top_k_f32_i32_layouts) {
    TANDEM_SKIP_UNSUPPORTED(op::top_k, dtype::f32);
    const char* var = nullptr;
    std::vector<const char*> values;
    if (GetParam() == "opencl") {
        var = "TANDEM_OPENCL_TOPK_WGS", values = {"1", "2", "3", "64", "100", "256"};
    } else if (GetParam() == "vulkan") {
        var = "TANDEM_VULKAN_LOOP_BUDGET", values = {"600", "2000", "9000"};
    } else {
        GTEST_SKIP() << GetParam() << " has one layout";
    }
    int cases = 0, failures = 0;
    for (const char* v : values) {
        scoped_env env(var, v);
        auto b = make_backend(GetParam());
        for (int64_t k_row : {7, 100, 4097, 100003}) {
            for (int64_t m : {1, 3}) {
                for (int32_t k : {1, 5, 64}) {
                    if (k > k_row) continue;
                    for (top_k_data d : {top_k_data::random, top_k_data::ties, top_k_data::ascending}) {
                        const op_case c = top_k_case(random(), d, k_row, m, k);
                        const std::string msg = run_case(ref(), *b, c);
                        ++cases;
                        if (!msg.empty() && ++failures <= 5) {
                            ADD_FAILURE()
                                << GetParam() << " with " << var << "=" << v << ": " << c.desc << ": " << msg
                                << " [seed " << test_seed() << "; rerun with TANDEM_TEST_SEED=" << test_seed() << "]";
                        }
                    }
                }
            }
        }
    }
    if (failures > 5) ADD_FAILURE() << failures << " of " << cases << " cases failed (the first 5 are shown)";
}

}  // namespace tandem::test
