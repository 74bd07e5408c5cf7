// Shared by every kernel file (prepended to each program): tensor-view addressing, loads of f32/f16
// elements and the device error word. OpenCL C 1.2; f16 is storage only (vload_half / vstore_half are core,
// no cl_khr_fp16 needed).

// Tensor views reach kernels as a buffer plus a byte offset (never sub-buffers).
#define VIEW(type, base, offset) ((__global type*)((__global uchar*)(base) + (offset)))
#define CVIEW(type, base, offset) ((__global const type*)((__global const uchar*)(base) + (offset)))

// Bits of the error word; the host (backends/opencl/opencl_backend.h) has the same values.
#define ERR_GET_ROWS_ID 1
#define ERR_ATTENTION_SLOT 2
#define ERR_ATTENTION_TREE 4
#define ERR_KV_WRITE_SLOT 8
#define ERR_KV_COPY_SLOT 16

inline void raise_error(__global int* err, int bit) { atomic_or(err, bit); }

// Element i of a row of f32 or f16 values; `is_f16` is a literal at every call site, so the branch folds away.
inline float load1(__global const uchar* row, size_t i, const int is_f16) {
    return is_f16 ? vload_half(i, (__global const half*)row) : ((__global const float*)row)[i];
}
// Eight f16 values (elements 8i .. 8i+7) as f32 with integer ops: PoCL's vload_half8 converts element by
// element, which halved the f16 GEMV's speed. Exact for every f16 value: subnormals, infinities and NaNs too.
inline float8 half8_to_float8(__global const uchar* row, size_t i) {
    const uint8 h = convert_uint8(vload8(i, (__global const ushort*)row));
    const uint8 sign = (h & 0x8000u) << 16;
    const uint8 em = h & 0x7fffu;  // exponent and mantissa
    const uint8 normal = (em << 13) + 0x38000000u;  // rebias the exponent: 15 -> 127
    const uint8 inf_nan = (em << 13) | 0x7f800000u;
    const uint8 subnormal = as_uint8(convert_float8(em) * 5.9604644775390625e-8f);  // mantissa * 2^-24, exact
    uint8 r = select(normal, inf_nan, em >= (uint8)0x7c00u);
    r = select(r, subnormal, em < (uint8)0x400u);
    return as_float8(r | sign);
}

// Elements 8i .. 8i+7 of a row.
inline float8 load8(__global const uchar* row, size_t i, const int is_f16) {
    return is_f16 ? half8_to_float8(row, i) : vload8(i, (__global const float*)row);
}

inline float hsum8(float8 v) {
    float4 s = v.lo + v.hi;
    return (s.x + s.y) + (s.z + s.w);
}
