// Self-test of the harness: cpu_ref compared with itself must pass, and must fail once its result is
// deliberately perturbed (one element off by ten times the tolerance, a NaN, a guard byte, a skipped
// output, a modified input). A comparator that accepts these would let a wrong kernel through.
#include <cmath>
#include <cstring>

#include "tests/backend_ops/cases.h"
#include "tests/backend_ops/harness.h"

namespace tandem::test {

namespace {

std::vector<op_case> representative_cases() {
    rng r(7);
    std::vector<op_case> cases;
    cases.push_back(matmul_case(r, random_arg(r, dtype::f16, {172, 33, 1, 1}), 5));
    cases.push_back(matmul_case(r, random_arg(r, dtype::f32, {4097, 7, 1, 1}), 1));
    attention_rows rows;
    rows.add_chain(0, 30, 3);
    rows.add_tree(r, 40, 20, 12, 8, true);
    cases.push_back(attention_case(r, "attention_ragged_f16", {64, 4, 2, 80, dtype::f16, 1.f}, rows));

    op_case sm;
    sm.desc = "softmax_f32_f32";
    sm.args = {random_arg(r, dtype::f32, {300, 2, 1, 1}, -10.f, 10.f), output_arg(dtype::f32, {300, 2, 1, 1})};
    sm.outputs = {1};
    sm.tol = {1e-9, 1e-6};
    sm.run = [](backend& b, const std::vector<tensor>& a) { b.softmax(a[0], a[1]); };
    cases.push_back(sm);

    op_case kv;
    kv.desc = "kv_copy_f16 compaction";
    kv.args = {random_arg(r, dtype::f16, {64, 10, 1, 1}), i32_arg({2, 1, 1, 1}, {4, 5}), i32_arg({2, 1, 1, 1}, {3, 4})};
    kv.outputs = {0};
    kv.run = [](backend& b, const std::vector<tensor>& a) { b.kv_copy(a[0], a[1], a[2]); };
    cases.push_back(kv);

    op_case am;
    am.desc = "argmax_f32_i32";
    am.args = {random_arg(r, dtype::f32, {100, 3, 1, 1}), output_arg(dtype::i32, {3, 1, 1, 1})};
    am.outputs = {1};
    am.run = [](backend& b, const std::vector<tensor>& a) { b.argmax(a[0], a[1]); };
    cases.push_back(am);
    return cases;
}

// Index of the element of largest magnitude in an f32/f16 output (where a relative error shows least).
int64_t largest(const arg& a, const std::vector<uint8_t>& buf) {
    int64_t best = 0;
    double best_v = -1;
    const int64_t n = a.ne[0] * a.ne[1] * a.ne[2] * a.ne[3];
    for (int64_t i = 0; i < n; ++i) {
        double v;
        if (a.type == dtype::f16) {
            uint16_t h;
            std::memcpy(&h, buf.data() + front_guard + 2 * i, 2);
            v = fp16_to_fp32(h);
        } else {
            float f;
            std::memcpy(&f, buf.data() + front_guard + 4 * i, 4);
            v = f;
        }
        if (std::abs(v) > best_v) best_v = std::abs(v), best = i;
    }
    return best;
}

// One element off: ten times the allowed error for toleranced outputs, the lowest bit otherwise.
void perturb_one(const op_case& c, int idx, std::vector<uint8_t>& buf) {
    const arg& a = c.args[size_t(idx)];
    const int64_t i = a.type == dtype::i32 ? 0 : largest(a, buf);
    uint8_t* p = buf.data() + front_guard;
    if (a.type == dtype::f32 && c.tol.max_abs > 0) {
        float f;
        std::memcpy(&f, p + 4 * i, 4);
        f += float(10 * c.tol.max_abs);
        std::memcpy(p + 4 * i, &f, 4);
    } else {
        p[(a.type == dtype::f16 ? 2 : 4) * i] ^= 1;  // lowest mantissa bit, or index + 1
    }
}

class harness_self_test : public ::testing::Test {
   protected:
    std::unique_ptr<backend> a_ = make_backend("cpu_ref"), b_ = make_backend("cpu_ref");
};

}  // namespace

TEST_F(harness_self_test, accepts_identical_results) {
    for (const auto& c : representative_cases()) EXPECT_EQ(run_case(*a_, *b_, c), "") << c.desc;
}

TEST_F(harness_self_test, rejects_perturbed_element) {
    for (const auto& c : representative_cases()) {
        const std::string msg =
            run_case(*a_, *b_, c, [&](int i, std::vector<uint8_t>& buf) { perturb_one(c, i, buf); });
        EXPECT_NE(msg, "") << c.desc << ": a perturbed element was accepted";
    }
}

TEST_F(harness_self_test, rejects_nan) {
    for (const auto& c : representative_cases()) {
        if (c.args[size_t(c.outputs[0])].type != dtype::f32) continue;
        const std::string msg = run_case(*a_, *b_, c, [](int, std::vector<uint8_t>& buf) {
            const float nan = std::nanf("");
            std::memcpy(buf.data() + front_guard, &nan, 4);
        });
        EXPECT_NE(msg, "") << c.desc << ": a NaN was accepted";
    }
}

TEST_F(harness_self_test, rejects_guard_writes) {
    const op_case c = representative_cases()[0];
    for (long where : {-1L, 0L, 63L}) {  // the byte before the tensor, right after it, the last guard byte
        const std::string msg = run_case(*a_, *b_, c, [&](int i, std::vector<uint8_t>& buf) {
            const size_t at = where < 0 ? front_guard - 1 : front_guard + c.args[size_t(i)].nbytes() + size_t(where);
            buf[at] ^= 0x40;
        });
        EXPECT_NE(msg, "") << "a guard write at " << where << " was accepted";
    }
}

TEST_F(harness_self_test, rejects_unwritten_output_and_modified_input) {
    rng r(3);
    op_case c;
    c.desc = "add_f32_f32";
    c.args = {random_arg(r, dtype::f32, {40, 1, 1, 1}), random_arg(r, dtype::f32, {40, 1, 1, 1}),
              output_arg(dtype::f32, {40, 1, 1, 1})};
    c.outputs = {2};
    auto calls = std::make_shared<int>(0);
    c.run = [calls](backend& b, const std::vector<tensor>& a) {
        if ((*calls)++ == 0) b.add(a[0], a[1], a[2]);  // the second run (the "tested" one) skips the op
    };
    EXPECT_NE(run_case(*a_, *b_, c), "") << "an output left unwritten was accepted";

    c.run = [](backend& b, const std::vector<tensor>& a) {
        b.add(a[0], a[1], a[2]);
        b.add(a[0], a[1], a[1]);  // also clobbers an input
    };
    EXPECT_NE(run_case(*a_, *b_, c), "") << "a modified input was accepted";
}

}  // namespace tandem::test
