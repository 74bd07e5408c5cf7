// Element-wise training ops, one element per invocation (no loop: nothing for lavapipe's loop limit to count).
//   scale_f32_f32 (OP_SCALE):             o = s * x                                   (o may alias x)
//   swiglu_back_f32_f32 (OP_SWIGLU_BACK): with s = sigmoid(g): dg = dy * u * s * (1 + g * (1 - s)); du = dy * g * s
//                                          (dg may alias g or dy, du may alias u)
//   adamw_f32_f32 (OP_ADAMW):             one AdamW step on p, m, v in place (backends/backend.h adamw_params);
//                                          the bias corrections bc1, bc2 come from the host (double precision).
// Every invocation reads all its inputs before its first write, so the aliases above are safe; possibly aliased
// bindings are not declared readonly.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

#if defined(OP_SCALE)
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) buffer O { float o[]; };
layout(push_constant) uniform params {
    uint n;
    uint x_off, o_off;
    float s;
} pc;
#elif defined(OP_SWIGLU_BACK)
layout(std430, binding = 0) buffer G { float g[]; };
layout(std430, binding = 1) buffer U { float u[]; };
layout(std430, binding = 2) buffer DY { float dy[]; };
layout(std430, binding = 3) buffer DG { float dg[]; };
layout(std430, binding = 4) buffer DU { float du[]; };
layout(push_constant) uniform params {
    uint n;
    uint g_off, u_off, dy_off, dg_off, du_off;
} pc;
#elif defined(OP_ADAMW)
layout(std430, binding = 0) buffer P { float p[]; };
layout(std430, binding = 1) readonly buffer GR { float gr[]; };
layout(std430, binding = 2) buffer M { float m1[]; };
layout(std430, binding = 3) buffer V { float m2[]; };
layout(push_constant) uniform params {
    uint n;
    uint p_off, g_off, m_off, v_off;
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
} pc;
#endif

void main() {
    const uint i = group_index() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= pc.n) return;
#if defined(OP_SCALE)
    o[pc.o_off + i] = pc.s * x[pc.x_off + i];
#elif defined(OP_SWIGLU_BACK)
    const float gv = g[pc.g_off + i], uv = u[pc.u_off + i], d = dy[pc.dy_off + i];
    const float s = 1.0 / (1.0 + exp(-gv));
    dg[pc.dg_off + i] = d * uv * s * (1.0 + gv * (1.0 - s));
    du[pc.du_off + i] = d * gv * s;
#elif defined(OP_ADAMW)
    const float gv = gr[pc.g_off + i] * pc.grad_scale;
    float w = p[pc.p_off + i];
    w -= pc.lr * pc.weight_decay * w;
    const float mv = pc.beta1 * m1[pc.m_off + i] + (1.0 - pc.beta1) * gv;
    const float vv = pc.beta2 * m2[pc.v_off + i] + (1.0 - pc.beta2) * gv * gv;
    w -= pc.lr * (mv / pc.bc1) / (sqrt(vv / pc.bc2) + pc.eps);
    m1[pc.m_off + i] = mv;
    m2[pc.v_off + i] = vv;
    p[pc.p_off + i] = w;
#endif
}
