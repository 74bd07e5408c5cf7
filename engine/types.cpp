// Block geometry of every ggml type id (from the GGUF specification and ggml's type table).
#include "engine/types.h"

#include "engine/error.h"

namespace tandem {

namespace {
struct entry {
    uint32_t id;
    dtype_traits traits;
};
constexpr entry k_types[] = {
    {0, {"f32", 1, 4}},        {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},      {3, {"q4_1", 32, 20}},
    {6, {"q5_0", 32, 22}},     {7, {"q5_1", 32, 24}},      {8, {"q8_0", 32, 34}},      {9, {"q8_1", 32, 36}},
    {10, {"q2_k", 256, 84}},   {11, {"q3_k", 256, 110}},   {12, {"q4_k", 256, 144}},   {13, {"q5_k", 256, 176}},
    {14, {"q6_k", 256, 210}},  {15, {"q8_k", 256, 292}},   {16, {"iq2_xxs", 256, 66}}, {17, {"iq2_xs", 256, 74}},
    {18, {"iq3_xxs", 256, 98}}, {19, {"iq1_s", 256, 50}},  {20, {"iq4_nl", 32, 18}},   {21, {"iq3_s", 256, 110}},
    {22, {"iq2_s", 256, 82}},  {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},         {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},       {27, {"i64", 1, 8}},        {28, {"f64", 1, 8}},        {29, {"iq1_m", 256, 56}},
    {30, {"bf16", 1, 2}},      {34, {"tq1_0", 256, 54}},   {35, {"tq2_0", 256, 66}},   {39, {"mxfp4", 32, 17}},
};
}  // namespace

std::optional<dtype_traits> dtype_info(uint32_t id) {
    for (const auto& e : k_types)
        if (e.id == id) return e.traits;
    return std::nullopt;
}

std::string_view dtype_name(dtype t) {
    auto info = dtype_info(static_cast<uint32_t>(t));
    return info ? info->name : std::string_view("unknown");
}

size_t dtype_row_bytes(dtype t, int64_t n) {
    auto info = dtype_info(static_cast<uint32_t>(t));
    TANDEM_ASSERT(info && n >= 0 && n % info->block_size == 0);
    return size_t(n / info->block_size) * info->block_bytes;
}

}  // namespace tandem
