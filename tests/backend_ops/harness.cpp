// The GoogleTest fixtures of test_backend_ops (harness.h) and their instantiation over the backends.
#include "tests/backend_ops/harness.h"

#include <cstdlib>
#include <iostream>

#include "engine/error.h"
#include "tests/common/test_util.h"

namespace tandem::test {

std::vector<std::string> tested_backends() {
    std::vector<std::string> names;
    for (const auto& n : backend_names())
        if (n != "cpu_ref") names.push_back(n);
    return names;
}

// A compiled-in backend whose device is absent on this machine (no OpenCL platform, no Vulkan device) is
// reported SKIPPED with the backend's own message, never passed silently.
#define TANDEM_MAKE_OR_SKIP(dst, name)                                                    \
    do {                                                                                  \
        try {                                                                             \
            dst = make_backend(name);                                                     \
        } catch (const error& e) {                                                        \
            if (e.status() != TANDEM_ERR_BACKEND) throw;                                  \
            GTEST_SKIP() << "backend '" << (name) << "' is not available here: " << e.what(); \
        }                                                                                 \
    } while (0)

void backend_ops::SetUp() {
    ref_ = make_backend("cpu_ref");
    TANDEM_MAKE_OR_SKIP(dut_, GetParam());
    rng_ = rng(test_seed());
}

void backend_ops::TearDown() {
    if (failures_ > 5) ADD_FAILURE() << failures_ << " of " << cases_ << " cases failed (the first 5 are shown)";
    if (std::getenv("TANDEM_TEST_VERBOSE")) {
        std::cout << "[ stats    ] " << ::testing::UnitTest::GetInstance()->current_test_info()->name() << ": "
                  << cases_ << " cases, worst passing nmse " << worst_.nmse << ", max abs error " << worst_.max_abs
                  << "\n";
    }
}

void backend_ops::check(const op_case& c) {
    ++cases_;
    const std::string msg = run_case(*ref_, *dut_, c, {}, &worst_);
    if (msg.empty()) return;
    if (++failures_ <= 5) {
        ADD_FAILURE() << GetParam() << ": " << c.desc << ": " << msg << " [seed " << test_seed()
                      << "; rerun with TANDEM_TEST_SEED=" << test_seed() << "]";
    }
}

void backend_errors::SetUp() { TANDEM_MAKE_OR_SKIP(dut_, GetParam()); }

void backend_errors::check_throws(const op_case& c) {
    const std::string msg = expect_error(*dut_, c);
    EXPECT_TRUE(msg.empty()) << GetParam() << ": " << c.desc << ": " << msg;
}

void backend_errors::check_attention_rejects(const op_case& c) {
    const bool host = dut_->alloc(64)->host_ptr() != nullptr;
    if (host) return check_throws(c);
    try {
        execute(*dut_, c);
    } catch (const error&) {
    } catch (const std::exception& e) {
        ADD_FAILURE() << GetParam() << ": " << c.desc << ": threw a non-tandem exception: " << e.what();
    }
}

namespace {
std::string param_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }
}  // namespace

INSTANTIATE_TEST_SUITE_P(all, backend_ops, ::testing::ValuesIn(tested_backends()), param_name);
INSTANTIATE_TEST_SUITE_P(all, backend_errors, ::testing::ValuesIn(backend_names()), param_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(backend_ops);

}  // namespace tandem::test
