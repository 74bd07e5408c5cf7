// Bad arguments on every backend (cpu_ref included): mismatched shapes or types, tensors overrunning their
// buffers, out-of-range ids and slots, malformed token trees. Each must throw tandem::error (at the op or,
// for an asynchronous backend, by the following synchronize/download), and the backend must stay usable.
#include <algorithm>
#include <string>
#include <utility>

#include "engine/error.h"
#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

using ne4 = std::array<int64_t, 4>;

op_case matmul_shapes(ne4 w, ne4 x, ne4 out) {
    op_case c;
    c.desc = "matmul w=" + shape_str(w) + " x=" + shape_str(x) + " out=" + shape_str(out);
    c.args = {output_arg(dtype::f32, w), output_arg(dtype::f32, x), output_arg(dtype::f32, out)};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.matmul(a[0], a[1], a[2]); };
    return c;
}

op_case get_rows_ids(std::vector<int32_t> ids) {
    op_case c;
    c.desc = "get_rows with ids outside a table of 5 rows";
    const int64_t m = int64_t(ids.size());
    c.args = {output_arg(dtype::f32, {8, 5, 1, 1}), i32_arg({m, 1, 1, 1}, ids), output_arg(dtype::f32, {8, m, 1, 1})};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.get_rows(a[0], a[1], a[2]); };
    return c;
}

op_case kv_write_slots(dtype cache, std::vector<int32_t> slots) {
    op_case c;
    c.desc = "kv_write " + std::string(dtype_name(cache)) + " with slots outside a cache of 6";
    const int64_t m = int64_t(slots.size());
    c.args = {output_arg(dtype::f32, {8, m, 1, 1}), output_arg(cache, {8, 6, 1, 1}), i32_arg({m, 1, 1, 1}, slots)};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.kv_write(a[0], a[1], a[2]); };
    return c;
}

op_case kv_copy_slots(dtype cache, std::vector<int32_t> src, std::vector<int32_t> dst) {
    op_case c;
    c.desc = "kv_copy " + std::string(dtype_name(cache)) + " with slots outside a cache of 6";
    const int64_t n = int64_t(src.size());
    c.args = {output_arg(cache, {8, 6, 1, 1}), i32_arg({n, 1, 1, 1}, src), i32_arg({n, 1, 1, 1}, dst)};
    c.run = [](backend& b, const std::vector<tensor>& a) { b.kv_copy(a[0], a[1], a[2]); };
    return c;
}

// A raw meta/slots table whose first m entries (all if m < 0) are query rows, the rest walk-only.
op_case attention_meta(dtype cache, std::vector<int32_t> meta, std::vector<int32_t> slots, const char* what,
                       int64_t m = -1) {
    attention_rows rows;
    const size_t q = m < 0 ? slots.size() : size_t(m);
    rows.meta.assign(meta.begin(), meta.begin() + ptrdiff_t(4 * q));
    rows.walk_meta.assign(meta.begin() + ptrdiff_t(4 * q), meta.end());
    rows.slots.assign(slots.begin(), slots.begin() + ptrdiff_t(q));
    rows.walk_slots.assign(slots.begin() + ptrdiff_t(q), slots.end());
    rng r(1);
    op_case c = attention_case(r, std::string("attention ") + what, {8, 2, 1, 16, cache, 1.f}, rows);
    return c;
}

op_case top_k_args(const std::string& what, int64_t k_row, int32_t k, dtype ids_type, ne4 ids, ne4 vals) {
    op_case c;
    c.desc = "top_k " + what;
    c.args = {output_arg(dtype::f32, {k_row, 3, 1, 1}), output_arg(ids_type, ids), output_arg(dtype::f32, vals)};
    c.run = [k](backend& b, const std::vector<tensor>& a) { b.top_k(a[0], k, a[1], a[2]); };
    return c;
}

}  // namespace

TEST_P(backend_errors, top_k_bad_arguments) {
    check_throws(top_k_args("with ids of type f32", 8, 2, dtype::f32, {2, 3, 1, 1}, {2, 3, 1, 1}));
    check_throws(top_k_args("with outputs of the wrong k", 8, 2, dtype::i32, {3, 3, 1, 1}, {2, 3, 1, 1}));
    check_throws(top_k_args("with outputs of the wrong rows", 8, 2, dtype::i32, {2, 3, 1, 1}, {2, 2, 1, 1}));
    // k outside [1, min(K, top_k_max)]: an invalid argument naming the op, whatever the outputs' shapes.
    const std::pair<int64_t, int32_t> bad_k[] = {{8, 0}, {8, -1}, {8, 9}, {100, top_k_max + 1}, {1, 2}};
    for (const auto& [k_row, k] : bad_k) {
        const int64_t kk = std::max<int64_t>(1, k);
        const op_case c = top_k_args("k=" + std::to_string(k) + " on rows of " + std::to_string(k_row), k_row, k,
                                     dtype::i32, {kk, 3, 1, 1}, {kk, 3, 1, 1});
        check_throws(c);
        auto x = dut().alloc(size_t(k_row) * 3 * 4), ids = dut().alloc(size_t(kk) * 3 * 4),
             vals = dut().alloc(size_t(kk) * 3 * 4);
        tensor tx{x.get(), 0, dtype::f32, {k_row, 3, 1, 1}}, ti{ids.get(), 0, dtype::i32, {kk, 3, 1, 1}},
            tv{vals.get(), 0, dtype::f32, {kk, 3, 1, 1}};
        try {
            dut().top_k(tx, k, ti, tv);
            ADD_FAILURE() << GetParam() << ": " << c.desc << ": did not throw";
        } catch (const error& e) {
            EXPECT_EQ(e.status(), TANDEM_ERR_INVALID_ARGUMENT) << GetParam() << ": " << c.desc << ": " << e.what();
            EXPECT_NE(std::string(e.what()).find("top_k: k = "), std::string::npos) << e.what();
        }
    }
}

TEST_P(backend_errors, matmul_shape_mismatch) {
    check_throws(matmul_shapes({8, 4, 1, 1}, {7, 2, 1, 1}, {4, 2, 1, 1}));  // K differs
    check_throws(matmul_shapes({8, 4, 1, 1}, {8, 2, 1, 1}, {5, 2, 1, 1}));  // out has the wrong N
    check_throws(matmul_shapes({8, 4, 1, 1}, {8, 2, 1, 1}, {4, 3, 1, 1}));  // out has the wrong M
}

TEST_P(backend_errors, shape_and_type_mismatch) {
    op_case rms;
    rms.desc = "rms_norm with a weight of the wrong length";
    rms.args = {output_arg(dtype::f32, {8, 2, 1, 1}), output_arg(dtype::f32, {7, 1, 1, 1}),
                output_arg(dtype::f32, {8, 2, 1, 1})};
    rms.run = [](backend& b, const std::vector<tensor>& a) { b.rms_norm(a[0], a[1], 1e-5f, a[2]); };
    check_throws(rms);

    op_case add;
    add.desc = "add of different sizes";
    add.args = {output_arg(dtype::f32, {8, 1, 1, 1}), output_arg(dtype::f32, {9, 1, 1, 1}),
                output_arg(dtype::f32, {8, 1, 1, 1})};
    add.run = [](backend& b, const std::vector<tensor>& a) { b.add(a[0], a[1], a[2]); };
    check_throws(add);

    op_case sw = add;
    sw.desc = "swiglu with an i32 operand";
    sw.args[1] = output_arg(dtype::i32, {8, 1, 1, 1});
    sw.run = [](backend& b, const std::vector<tensor>& a) { b.swiglu(a[0], a[1], a[2]); };
    check_throws(sw);

    op_case rope;
    rope.desc = "rope with an odd n_rot";
    rope.args = {output_arg(dtype::f32, {8, 2, 3, 1}), i32_arg({3, 1, 1, 1}, {0, 1, 2})};
    rope.run = [](backend& b, const std::vector<tensor>& a) { b.rope(a[0], a[1], rope_params{3, 10000.f}); };
    check_throws(rope);

    op_case sm;
    sm.desc = "softmax into a differently shaped output";
    sm.args = {output_arg(dtype::f32, {8, 2, 1, 1}), output_arg(dtype::f32, {8, 3, 1, 1})};
    sm.run = [](backend& b, const std::vector<tensor>& a) { b.softmax(a[0], a[1]); };
    check_throws(sm);

    op_case am;
    am.desc = "argmax into an f32 output";
    am.args = {output_arg(dtype::f32, {8, 2, 1, 1}), output_arg(dtype::f32, {2, 1, 1, 1})};
    am.run = [](backend& b, const std::vector<tensor>& a) { b.argmax(a[0], a[1]); };
    check_throws(am);

    op_case overrun = add;
    overrun.desc = "add on a view past the end of its buffer";
    overrun.args[1] = output_arg(dtype::f32, {8, 1, 1, 1});
    overrun.run = [](backend& b, const std::vector<tensor>& a) {
        tensor x = a[0];
        x.offset += 4096;
        b.add(x, a[1], a[2]);
    };
    check_throws(overrun);

    op_case heads = attention_meta(dtype::f32, {0, 1, -1, -1}, {0}, "with 3 query heads on 2 kv heads");
    heads.args[0] = output_arg(dtype::f32, {8, 3, 1, 1});
    heads.args[1] = heads.args[2] = output_arg(dtype::f32, {16, 16, 1, 1});
    heads.args[5] = output_arg(dtype::f32, {8, 3, 1, 1});
    check_throws(heads);
}

TEST_P(backend_errors, get_rows_id_out_of_range) {
    check_throws(get_rows_ids({0, 5}));
    check_throws(get_rows_ids({-1}));
}

TEST_P(backend_errors, kv_slot_out_of_range) {
    for (dtype t : {dtype::f32, dtype::f16}) {
        if (!dut().supports(op::kv_write, t)) continue;
        check_throws(kv_write_slots(t, {0, 6}));
        check_throws(kv_write_slots(t, {-1}));
        check_throws(kv_copy_slots(t, {1, 6}, {0, 1}));
        check_throws(kv_copy_slots(t, {1, 2}, {0, -3}));
    }
}

TEST_P(backend_errors, attention_slot_out_of_range) {
    for (dtype t : {dtype::f32, dtype::f16}) {
        if (!dut().supports(op::attention, t)) continue;
        check_attention_rejects(attention_meta(t, {10, 7, -1, -1}, {0}, "run past the cache end"));
        check_attention_rejects(attention_meta(t, {-2, 3, -1, -1}, {0}, "run before the cache start"));
        check_attention_rejects(attention_meta(t, {0, 3, 0, -1}, {16}, "tree slot past the cache end"));
        check_attention_rejects(attention_meta(t, {0, 3, 0, -1}, {-1}, "negative tree slot"));
        check_attention_rejects(attention_meta(t, {0, 3, 0, 1, 0, 3, 1, 0}, {4, 5}, "cyclic tree"));
        check_attention_rejects(attention_meta(t, {0, 3, 0, 0}, {4}, "self-parented tree"));
        check_attention_rejects(attention_meta(t, {0, 3, 2, -1, 0, 3, 1, -1}, {4, 5}, "tree row outside the batch"));
        // Walk-only entries (T = 2 > M = 1): a walk into an index >= T, and a cycle among walk-only entries.
        check_attention_rejects(attention_meta(t, {0, 3, 0, 1, 9, 9, -1, 2}, {4, 5}, "walk past the table", 1));
        check_attention_rejects(attention_meta(t, {0, 3, 0, 1, 9, 9, -1, 1}, {4, 5}, "walk-only cycle", 1));
        check_attention_rejects(attention_meta(t, {0, 3, 0, 1, 9, 9, -1, -1}, {4, 16}, "walk-only slot past the end", 1));
    }
}

// A failed op leaves the backend usable: the next valid op still matches cpu_ref.
TEST_P(backend_errors, usable_after_error) {
    check_throws(get_rows_ids({7}));
    auto ref = make_backend("cpu_ref");
    rng r(2);
    const arg w = random_arg(r, dtype::f32, {33, 7, 1, 1});
    EXPECT_EQ(run_case(*ref, dut(), matmul_case(r, w, 3)), "");
}

// Not an error case, but one per backend like them: describe() (what benchmark records keep of the device, driver
// and kernel variants) starts with the backend's name and says more than the name.
TEST_P(backend_errors, describe_names_the_backend) {
    const std::string d = dut().describe();
    if (GetParam() == "cpu_ref") {
        EXPECT_EQ(d, "cpu_ref");
        return;
    }
    EXPECT_EQ(d.rfind(GetParam() + ": ", 0), 0u) << d;
    EXPECT_GT(d.size(), GetParam().size() + 8) << d;
}

}  // namespace tandem::test
