// GGUF Q8_0 / Q4_0 weight blocks (byte layouts in backends/cpu/dequant.cpp) read from 32-bit words: blocks are
// 34 and 18 bytes, so one starts at any even byte offset, i.e. in the low or in the high half of a word. Needs
// no 8/16-bit storage feature; on lavapipe, where every buffer load is a per-lane operation, a few word loads
// and shifts also beat one load per byte. All decodes are exact: d * q is one fp16 times a small integer.
// A shader that defines QW(i) (word i of the weight buffer) before including this also gets the loaders.

#define QK 32u
#define Q8_0_BYTES 34u
#define Q4_0_BYTES 18u

// The 4 signed bytes of a word as floats (byte i -> component i).
vec4 i8x4(uint v) { return vec4(ivec4(uvec4(v) << uvec4(24u, 16u, 8u, 0u)) >> 24); }
// The low and the high nibbles of the 4 bytes of a word, minus 8 (byte i -> component i).
vec4 lo4(uint v) { return vec4((uvec4(v) >> uvec4(0u, 8u, 16u, 24u)) & 15u) - 8.0; }
vec4 hi4(uint v) { return vec4((uvec4(v) >> uvec4(4u, 12u, 20u, 28u)) & 15u) - 8.0; }

// The scale and the 8 quant words (quants 4j .. 4j+3 in word j) of a Q8_0 block from the 9 words covering it;
// `odd`: the block starts in the high half of v[0].
void q8_0_decode(const uint v[9], bool odd, out float d, out uint q[8]) {
    d = odd ? unpackHalf2x16(v[0]).y : unpackHalf2x16(v[0]).x;
    [[unroll]] for (uint j = 0u; j < 8u; ++j) q[j] = odd ? v[j + 1u] : (v[j] >> 16u) | (v[j + 1u] << 16u);
}

// The same for Q4_0 from the 5 words covering it: quant bytes 4j .. 4j+3 in word j (byte i holds element i in
// its low nibble and element i + 16 in its high nibble).
void q4_0_decode(const uint v[5], bool odd, out float d, out uint q[4]) {
    d = odd ? unpackHalf2x16(v[0]).y : unpackHalf2x16(v[0]).x;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) q[j] = odd ? v[j + 1u] : (v[j] >> 16u) | (v[j + 1u] << 16u);
}

#if defined(QW)
// The block at byte b (even): 9 or 5 word loads, all inside the block's own words.
void q8_0_load(uint b, out float d, out uint q[8]) {
    uint v[9];
    [[unroll]] for (uint j = 0u; j < 9u; ++j) v[j] = QW((b >> 2u) + j);
    q8_0_decode(v, (b & 2u) != 0u, d, q);
}
void q4_0_load(uint b, out float d, out uint q[4]) {
    uint v[5];
    [[unroll]] for (uint j = 0u; j < 5u; ++j) v[j] = QW((b >> 2u) + j);
    q4_0_decode(v, (b & 2u) != 0u, d, q);
}
// The scale of the block at byte b, and the 4 bytes at even byte e (one or two loads, never past byte e + 3's word).
float q_scale(uint b) {
    const vec2 h = unpackHalf2x16(QW(b >> 2u));
    return (b & 2u) != 0u ? h.y : h.x;
}
uint q_bytes4(uint e) {
    const uint i = e >> 2u;
    uint v = QW(i);
    if ((e & 2u) != 0u) v = (v >> 16u) | (QW(i + 1u) << 16u);
    return v;
}
#endif
