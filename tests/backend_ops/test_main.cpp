// test_backend_ops's main: `test_backend_ops --support` prints the op x type x backend support matrix (support.h)
// as markdown and exits; anything else runs the GoogleTest suite as gtest_main would.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "tests/backend_ops/support.h"

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--support") == 0) {
            std::fputs(tandem::test::support_markdown().c_str(), stdout);
            return 0;
        }
    }
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
