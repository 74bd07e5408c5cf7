// The case runner and comparator of the backend_ops harness (gtest-free: also linked into tandem-bench).
#include "tests/backend_ops/op_case.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/error.h"

namespace tandem::test {

namespace {

uint8_t guard_byte(size_t i) { return uint8_t(0xa5u ^ (i * 29u)); }

// memcpy / memcmp that accept empty ranges (an empty vector's data() may be null, which they must not get).
void copy_bytes(void* dst, const void* src, size_t n) {
    if (n) std::memcpy(dst, src, n);
}
bool same_bytes(const void* a, const void* b, size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

struct placed {
    std::vector<uint8_t> image;  // host copy; backs the buffer when it was made by wrap_host
    std::unique_ptr<buffer> buf;
    tensor t;
    size_t size = 0;
};

bool is_output(const op_case& c, int i) { return std::find(c.outputs.begin(), c.outputs.end(), i) != c.outputs.end(); }

// Each argument in its own buffer: front guard, data, back guard.
std::vector<placed> place(backend& b, const op_case& c) {
    std::vector<placed> out(c.args.size());
    for (size_t n = 0; n < c.args.size(); ++n) {
        const arg& a = c.args[n];
        placed& p = out[n];
        p.size = front_guard + a.nbytes() + back_guard;
        p.image.resize(p.size);
        for (size_t i = 0; i < front_guard; ++i) p.image[i] = guard_byte(i);
        copy_bytes(p.image.data() + front_guard, a.bytes.data(), a.nbytes());
        for (size_t i = front_guard + a.nbytes(); i < p.size; ++i) p.image[i] = guard_byte(i);
        if (c.wrap_inputs && !is_output(c, int(n))) {
            p.buf = b.wrap_host(p.image.data(), p.size);
        } else {
            p.buf = b.alloc(p.size);
            b.upload(*p.buf, 0, p.image.data(), p.size);
        }
        p.t.buf = p.buf.get();
        p.t.offset = front_guard;
        p.t.type = a.type;
        p.t.ne = a.ne;
    }
    return out;
}

std::vector<tensor> views(const std::vector<placed>& ps) {
    std::vector<tensor> ts;
    for (const auto& p : ps) ts.push_back(p.t);
    return ts;
}

std::vector<uint8_t> fetch(backend& b, const placed& p) {
    std::vector<uint8_t> bytes(p.size);
    b.download(*p.buf, 0, bytes.data(), p.size);
    return bytes;
}

std::string coords(const arg& a, int64_t flat) {
    std::ostringstream s;
    s << "[" << flat % a.ne[0] << "," << flat / a.ne[0] % a.ne[1] << "," << flat / (a.ne[0] * a.ne[1]) % a.ne[2] << ","
      << flat / (a.ne[0] * a.ne[1] * a.ne[2]) << "]";
    return s.str();
}

std::string check_guards(const std::vector<uint8_t>& buf, size_t data_bytes) {
    for (size_t i = 0; i < buf.size(); ++i) {
        if (i >= front_guard && i < front_guard + data_bytes) continue;
        if (buf[i] != guard_byte(i)) {
            const long rel = i < front_guard ? long(i) - long(front_guard) : long(i - front_guard - data_bytes);
            return "guard byte " + std::string(i < front_guard ? "before" : "after") + " the tensor overwritten at " +
                   std::to_string(rel);
        }
    }
    return "";
}

double element(const arg& a, const uint8_t* p, int64_t i) {
    if (a.type == dtype::f16) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        return fp16_to_fp32(h);
    }
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
}

std::string compare(const arg& a, const uint8_t* ref, const uint8_t* got, const tolerance& tol, deviation* dev) {
    const int64_t n = int64_t(a.nbytes()) / (a.type == dtype::f16 ? 2 : 4);
    std::ostringstream s;
    if (a.type == dtype::i32 || (tol.nmse == 0 && tol.max_abs == 0)) {
        for (int64_t i = 0; i < n; ++i) {
            const size_t w = a.type == dtype::f16 ? 2 : 4;
            if (std::memcmp(ref + w * size_t(i), got + w * size_t(i), w) != 0) {
                s << "element " << coords(a, i) << " differs (exact compare): ";
                if (a.type == dtype::i32) {
                    int32_t r, g;
                    std::memcpy(&r, ref + 4 * i, 4), std::memcpy(&g, got + 4 * i, 4);
                    s << "got " << g << ", want " << r;
                } else {
                    s << "got " << element(a, got, i) << ", want " << element(a, ref, i);
                }
                return s.str();
            }
        }
        return "";
    }
    double err2 = 0, ref2 = 0, max_abs = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double r = element(a, ref, i), g = element(a, got, i);
        if (!std::isfinite(r) || !std::isfinite(g)) {
            if ((std::isnan(r) && std::isnan(g)) || r == g) continue;
            s << "element " << coords(a, i) << ": got " << g << ", want " << r;
            return s.str();
        }
        const double e = std::abs(g - r);
        err2 += e * e, ref2 += r * r;
        if (e > max_abs) max_abs = e, worst = i;
    }
    const double nmse = ref2 > 0 ? err2 / ref2 : err2;
    if (nmse > tol.nmse || max_abs > tol.max_abs) {
        s << "nmse " << nmse << " (limit " << tol.nmse << "), max abs error " << max_abs << " (limit " << tol.max_abs
          << ") at " << coords(a, worst) << ": got " << element(a, got, worst) << ", want " << element(a, ref, worst);
        return s.str();
    }
    if (dev) dev->nmse = std::max(dev->nmse, nmse), dev->max_abs = std::max(dev->max_abs, max_abs);
    return "";
}

}  // namespace

std::vector<std::vector<uint8_t>> execute(backend& b, const op_case& c) {
    auto ps = place(b, c);
    if (c.prepare) c.prepare(b, views(ps));
    c.run(b, views(ps));
    b.synchronize();
    std::vector<std::vector<uint8_t>> after;
    for (const auto& p : ps) after.push_back(fetch(b, p));
    return after;
}

size_t arg::nbytes() const { return dtype_row_bytes(type, ne[0]) * size_t(ne[1] * ne[2] * ne[3]); }

std::string run_case(backend& ref, backend& dut, const op_case& c, const perturb_fn& perturb, deviation* dev) {
    std::vector<std::vector<uint8_t>> want, got;
    try {
        want = execute(ref, c);
    } catch (const std::exception& e) {
        return "cpu_ref threw: " + std::string(e.what());
    }
    try {
        got = execute(dut, c);
    } catch (const std::exception& e) {
        return dut.name() + " threw: " + std::string(e.what());
    }
    for (int i = 0; i < int(c.args.size()); ++i) {
        if (perturb && is_output(c, i)) perturb(i, got[size_t(i)]);
        const arg& a = c.args[size_t(i)];
        std::string g = check_guards(got[size_t(i)], a.nbytes());
        if (!g.empty()) return "arg " + std::to_string(i) + ": " + g;
        const uint8_t* wd = want[size_t(i)].data() + front_guard;
        const uint8_t* gd = got[size_t(i)].data() + front_guard;
        if (is_output(c, i)) {
            std::string m = compare(a, wd, gd, c.tol, dev);
            if (!m.empty()) return "output arg " + std::to_string(i) + " " + shape_str(a.ne) + ": " + m;
        } else if (!same_bytes(gd, a.bytes.data(), a.nbytes())) {
            return "input arg " + std::to_string(i) + " was modified by the op";
        }
    }
    return "";
}

std::string expect_error(backend& b, const op_case& c) {
    try {
        execute(b, c);
    } catch (const error&) {
        return "";
    } catch (const std::exception& e) {
        return "threw a non-tandem exception: " + std::string(e.what());
    }
    return "did not throw";
}

staged_case::staged_case(backend& b, const op_case& c) : b_(b), c_(c) {
    auto ps = place(b, c);
    for (auto& p : ps) {
        tensors_.push_back(p.t);
        // Only wrap_host buffers need their host image to live on (a 180 MB weight matrix is big enough).
        images_.push_back(c.wrap_inputs ? std::move(p.image) : std::vector<uint8_t>{});
        buffers_.push_back(std::move(p.buf));
    }
    if (c.prepare) c.prepare(b, tensors_);
}

void staged_case::run() {
    c_.run(b_, tensors_);
    b_.synchronize();
}

std::vector<float> random_floats(rng& r, int64_t n, float lo, float hi) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = r.uniform(lo, hi);
    return v;
}

arg float_arg(dtype t, std::array<int64_t, 4> ne, const std::vector<float>& values) {
    arg a;
    a.type = t, a.ne = ne;
    a.bytes.resize(a.nbytes());
    TANDEM_ASSERT(values.size() == size_t(ne[0] * ne[1] * ne[2] * ne[3]));
    if (t == dtype::f32) {
        copy_bytes(a.bytes.data(), values.data(), a.nbytes());
    } else {
        TANDEM_ASSERT(t == dtype::f16);
        for (size_t i = 0; i < values.size(); ++i) {
            const uint16_t h = fp32_to_fp16(values[i]);
            std::memcpy(a.bytes.data() + 2 * i, &h, 2);
        }
    }
    return a;
}

arg random_arg(rng& r, dtype t, std::array<int64_t, 4> ne, float lo, float hi) {
    return float_arg(t, ne, random_floats(r, ne[0] * ne[1] * ne[2] * ne[3], lo, hi));
}

arg i32_arg(std::array<int64_t, 4> ne, const std::vector<int32_t>& values) {
    arg a;
    a.type = dtype::i32, a.ne = ne;
    a.bytes.resize(a.nbytes());
    TANDEM_ASSERT(values.size() == size_t(ne[0] * ne[1] * ne[2] * ne[3]));
    copy_bytes(a.bytes.data(), values.data(), a.nbytes());
    return a;
}

arg output_arg(dtype t, std::array<int64_t, 4> ne) {
    arg a;
    a.type = t, a.ne = ne;
    a.bytes.assign(a.nbytes(), 0xff);
    return a;
}

std::string shape_str(const std::array<int64_t, 4>& ne) {
    std::ostringstream s;
    s << "{" << ne[0] << "," << ne[1] << "," << ne[2] << "," << ne[3] << "}";
    return s.str();
}

}  // namespace tandem::test
