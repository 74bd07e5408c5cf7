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

// PREFETCH_LINE(p): asks for the 64-byte line at p to be brought into L2 ahead of its use. Real only where the host
// defines TANDEM_PREFETCH (CPU devices compiled by clang, i.e. PoCL: __builtin_prefetch becomes prefetcht1, while
// OpenCL's own prefetch() compiles to nothing there); elsewhere nothing, GPUs hide memory latency with other
// work-groups. A prefetch never faults, so a line past the end of a buffer is harmless; kernels still stay inside.
#ifdef TANDEM_PREFETCH
#define PREFETCH_LINE(p) __builtin_prefetch((p), 0, 2)
#else
#define PREFETCH_LINE(p) ((void)0)
#endif

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

// ---- quantized weight blocks (GGUF Q8_0 / Q4_0; byte layouts in backends/cpu/dequant.cpp) ----
// Blocks are 34 and 18 bytes, so they sit at any even byte offset: scales are assembled from bytes and quants
// come through vload16 of char/uchar (element alignment 1), never through wider pointer casts.
#define QK 32
#define Q8_0_BYTES 34
#define Q4_0_BYTES 18

// The f32 value of binary16 bits (exact for every value: subnormals, infinities and NaNs too).
inline float half_bits_to_float(uint h) {
    const uint sign = (h & 0x8000u) << 16, em = h & 0x7fffu;
    uint r = (em << 13) + 0x38000000u;                                   // normal: rebias 15 -> 127
    if (em >= 0x7c00u) r = (em << 13) | 0x7f800000u;                     // inf / nan
    if (em < 0x400u) r = as_uint(convert_float(em) * 5.9604644775390625e-8f);  // subnormal: mantissa * 2^-24
    return as_float(r | sign);
}

inline float block_scale(__global const uchar* b) { return half_bits_to_float((uint)b[0] | ((uint)b[1] << 8)); }

// Half h (0: elements 0..15, 1: elements 16..31) of a block, dequantized. d * q is exact in f32 (an fp16
// times an integer of at most 8 bits), the same value cpu_ref's dequantize_row computes.
inline float16 dequant_half(__global const uchar* b, int h, const int is_q4) {
    const float d = block_scale(b);
    if (is_q4) {  // byte j: element j in the low nibble, element j + 16 in the high one
        const uchar16 q = vload16(0, b + 2);
        return d * (convert_float16(h ? q >> (uchar16)4 : q & (uchar16)0x0f) - 8.f);
    }
    return d * convert_float16(vload16(h, (__global const char*)(b + 2)));
}

// Both halves of a block with one scale load.
inline void dequant_block(__global const uchar* b, float16* lo, float16* hi, const int is_q4) {
    const float d = block_scale(b);
    if (is_q4) {
        const uchar16 q = vload16(0, b + 2);
        *lo = d * (convert_float16(q & (uchar16)0x0f) - 8.f);
        *hi = d * (convert_float16(q >> (uchar16)4) - 8.f);
    } else {
        __global const char* q = (__global const char*)(b + 2);
        *lo = d * convert_float16(vload16(0, q));
        *hi = d * convert_float16(vload16(1, q));
    }
}

inline float hsum16(float16 v) { return hsum8(v.lo + v.hi); }
