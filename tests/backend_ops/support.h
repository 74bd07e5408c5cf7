// The support matrix: every op of backends/backend.h with each weight / cache type it takes, against every
// compiled-in backend, as backend::supports() answers it (the single source of truth for placement, fallback and
// this table). Printed as markdown by `test_backend_ops --support` and `tandem-bench ops --support`.
#pragma once

#include <string>
#include <vector>

#include "backends/backend.h"

namespace tandem::test {

struct support_row {
    op o;
    dtype t;  // the type supports() is asked about: weights (matmul, get_rows), cache (attention, kv_*), else f32
};

// Every op in enum order, each with the types Tandem's models use for it.
std::vector<support_row> support_rows();

// The variant name of a row, `<op>_<src types>_<dst type>` as used by kernels, shaders, tests and benchmarks,
// e.g. "matmul_q4_0_f32", "kv_write_f32_f16", "argmax_f32_i32".
std::string support_variant(const support_row& r);

// The markdown table: one row per support_rows() entry, one column per backend of backend_names() ("yes" or
// "-"); a backend that cannot be created here (no device) gets "n/a" cells and a note under the table.
std::string support_markdown();

}  // namespace tandem::test
