// Shared by every Tandem compute shader: the error-status bits, the 2D work-group numbering and f16 access
// on uint storage. Element offsets of every tensor come in push constants (bindings start at an aligned byte
// offset at or before the tensor), so tensors may sit at any element offset inside a buffer.
#extension GL_EXT_control_flow_attributes : enable

// Bits of the status word (binding STATUS_BINDING of the shaders that validate indices); the host reads it
// after each submit and throws tandem::error naming the problem. Keep in sync with backends/vulkan/status.h.
#define ERR_GET_ROWS_ID 1u
#define ERR_KV_WRITE_SLOT 2u
#define ERR_KV_COPY_SLOT 4u
#define ERR_ATTN_RANGE 8u
#define ERR_ATTN_TREE 16u
#define ERR_ATTN_SLOT 32u
#define ERR_ATTN_DEPTH 64u

#define NEG_INF uintBitsToFloat(0xff800000u)

#define DECLARE_STATUS(b) \
    layout(std430, binding = b) buffer status_buffer { uint status_word; };

// Work-groups of a large 1D launch come as a 2D grid (x <= 65535 per dimension): the linear group index.
uint group_index() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// Element i of an f16 array stored as uint words (two halves per word, element 0 in the low half).
float half_at(uint word, uint i) {
    vec2 v = unpackHalf2x16(word);
    return (i & 1u) != 0u ? v.y : v.x;
}
#define LOAD_F16(buf, i) half_at(buf[(i) >> 1], (i))
// The raw 16 bits of element i.
#define BITS_F16(buf, i) ((buf[(i) >> 1] >> (((i) & 1u) * 16u)) & 0xffffu)

// The binary16 bits of the f32 with bits x, rounded to nearest even (overflow to inf, NaN kept quiet,
// subnormals exact): the conversion of backends/backend.h's kv_write, done with integer operations so that no
// device's packHalf2x16 rounding mode or denormal flushing can change it.
uint f16_bits_rne(uint x) {
    const uint sign = (x >> 16u) & 0x8000u;
    const uint a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds to 65520 or more
    if (a < 0x38800000u) {                         // a subnormal or zero half
        if (a < 0x33000000u) return sign;
        const uint shift = 126u - (a >> 23u);      // the half's units are 2^-24
        const uint m = (a & 0x7fffffu) | 0x800000u;
        uint r = m >> shift;
        const uint rem = m & ((1u << shift) - 1u), half_way = 1u << (shift - 1u);
        if (rem > half_way || (rem == half_way && (r & 1u) != 0u)) ++r;
        return sign | r;
    }
    uint h = (a - 0x38000000u) >> 13u;  // rebias the exponent 127 -> 15
    const uint rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) ++h;
    return sign | h;
}
