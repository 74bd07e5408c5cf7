// GGUF v3 serialisation. Values are encoded to little-endian bytes when set (explicit shifts, so the output
// does not depend on the host byte order); write()/to_bytes() stream the header, then each tensor's bytes
// followed by zero padding up to the alignment (the last tensor is padded too, as ggml's writer does).
#include "engine/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/error.h"

namespace tandem {

namespace {

constexpr uint32_t k_magic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr uint32_t k_version = 3;
constexpr size_t k_default_alignment = 32;
constexpr size_t k_max_alignment = size_t(1) << 20;  // the reader's limit

void put_le(std::vector<uint8_t>& b, uint64_t u, size_t n) {
    for (size_t i = 0; i < n; ++i) b.push_back(uint8_t(u >> (8 * i)));
}

template <typename T>
void put(std::vector<uint8_t>& b, T v) {
    if constexpr (std::is_same_v<T, bool>)
        put_le(b, v ? 1 : 0, 1);
    else if constexpr (std::is_same_v<T, float>)
        put_le(b, std::bit_cast<uint32_t>(v), 4);
    else if constexpr (std::is_same_v<T, double>)
        put_le(b, std::bit_cast<uint64_t>(v), 8);
    else
        put_le(b, uint64_t(std::make_unsigned_t<T>(v)), sizeof(T));
}

void put_str(std::vector<uint8_t>& b, std::string_view s) {
    put<uint64_t>(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
}

template <typename T>
std::vector<uint8_t> scalar_payload(T v) {
    std::vector<uint8_t> b;
    put<T>(b, v);
    return b;
}

template <typename T>
std::vector<uint8_t> array_payload(gguf_type elem, const std::vector<T>& v) {
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(elem));
    put<uint64_t>(b, v.size());
    for (const auto& x : v) {
        if constexpr (std::is_same_v<T, std::string>)
            put_str(b, x);
        else
            put<T>(b, T(x));
    }
    return b;
}

[[noreturn]] void bad_arg(const std::string& msg) { throw error(TANDEM_ERR_INVALID_ARGUMENT, "gguf_writer: " + msg); }

// Appends one element of scalar type t taken from the reader's widened representation, range-checked.
void put_widened(std::vector<uint8_t>& b, gguf_type t, const std::string& key, uint64_t u, int64_t i, double d,
                 bool is_signed) {
    auto need_range = [&](int64_t lo, uint64_t hi) {
        const bool ok = is_signed ? (i >= lo && (i < 0 || uint64_t(i) <= hi)) : u <= hi;
        if (!ok) bad_arg("metadata key '" + key + "': value out of range for " + gguf_type_name(t));
    };
    switch (t) {
        case gguf_type::u8:
            need_range(0, 0xff);
            put<uint8_t>(b, uint8_t(is_signed ? uint64_t(i) : u));
            break;
        case gguf_type::u16:
            need_range(0, 0xffff);
            put<uint16_t>(b, uint16_t(is_signed ? uint64_t(i) : u));
            break;
        case gguf_type::u32:
            need_range(0, 0xffffffffu);
            put<uint32_t>(b, uint32_t(is_signed ? uint64_t(i) : u));
            break;
        case gguf_type::u64:
            need_range(0, std::numeric_limits<uint64_t>::max());
            put<uint64_t>(b, is_signed ? uint64_t(i) : u);
            break;
        case gguf_type::i8:
            need_range(-128, 127);
            put<int8_t>(b, int8_t(is_signed ? i : int64_t(u)));
            break;
        case gguf_type::i16:
            need_range(-32768, 32767);
            put<int16_t>(b, int16_t(is_signed ? i : int64_t(u)));
            break;
        case gguf_type::i32:
            need_range(std::numeric_limits<int32_t>::min(), uint64_t(std::numeric_limits<int32_t>::max()));
            put<int32_t>(b, int32_t(is_signed ? i : int64_t(u)));
            break;
        case gguf_type::i64:
            need_range(std::numeric_limits<int64_t>::min(), uint64_t(std::numeric_limits<int64_t>::max()));
            put<int64_t>(b, is_signed ? i : int64_t(u));
            break;
        case gguf_type::f32:
            put<float>(b, float(d));
            break;
        case gguf_type::f64:
            put<double>(b, d);
            break;
        default:
            bad_arg("metadata key '" + key + "': unexpected scalar type " + gguf_type_name(t));
    }
}

void write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            throw error(TANDEM_ERR_IO, "cannot write '" + path + "': " + std::strerror(errno));
        }
        p += w;
        n -= size_t(w);
    }
}

}  // namespace

void gguf_writer::set_raw(const std::string& key, gguf_type type, std::vector<uint8_t> payload) {
    if (key.empty()) bad_arg("empty metadata key");
    for (auto& e : kv_) {
        if (e.key == key) {
            e.type = type;
            e.payload = std::move(payload);
            return;
        }
    }
    kv_.push_back({key, type, std::move(payload)});
}

void gguf_writer::set_u8(const std::string& key, uint8_t v) { set_raw(key, gguf_type::u8, scalar_payload(v)); }
void gguf_writer::set_i8(const std::string& key, int8_t v) { set_raw(key, gguf_type::i8, scalar_payload(v)); }
void gguf_writer::set_u16(const std::string& key, uint16_t v) { set_raw(key, gguf_type::u16, scalar_payload(v)); }
void gguf_writer::set_i16(const std::string& key, int16_t v) { set_raw(key, gguf_type::i16, scalar_payload(v)); }
void gguf_writer::set_u32(const std::string& key, uint32_t v) { set_raw(key, gguf_type::u32, scalar_payload(v)); }
void gguf_writer::set_i32(const std::string& key, int32_t v) { set_raw(key, gguf_type::i32, scalar_payload(v)); }
void gguf_writer::set_u64(const std::string& key, uint64_t v) { set_raw(key, gguf_type::u64, scalar_payload(v)); }
void gguf_writer::set_i64(const std::string& key, int64_t v) { set_raw(key, gguf_type::i64, scalar_payload(v)); }
void gguf_writer::set_f32(const std::string& key, float v) { set_raw(key, gguf_type::f32, scalar_payload(v)); }
void gguf_writer::set_f64(const std::string& key, double v) { set_raw(key, gguf_type::f64, scalar_payload(v)); }
void gguf_writer::set_bool(const std::string& key, bool v) { set_raw(key, gguf_type::boolean, scalar_payload(v)); }
void gguf_writer::set_string(const std::string& key, std::string_view v) {
    std::vector<uint8_t> b;
    put_str(b, v);
    set_raw(key, gguf_type::string, std::move(b));
}

void gguf_writer::set_arr_u8(const std::string& key, const std::vector<uint8_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::u8, v));
}
void gguf_writer::set_arr_i8(const std::string& key, const std::vector<int8_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::i8, v));
}
void gguf_writer::set_arr_u16(const std::string& key, const std::vector<uint16_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::u16, v));
}
void gguf_writer::set_arr_i16(const std::string& key, const std::vector<int16_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::i16, v));
}
void gguf_writer::set_arr_u32(const std::string& key, const std::vector<uint32_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::u32, v));
}
void gguf_writer::set_arr_i32(const std::string& key, const std::vector<int32_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::i32, v));
}
void gguf_writer::set_arr_u64(const std::string& key, const std::vector<uint64_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::u64, v));
}
void gguf_writer::set_arr_i64(const std::string& key, const std::vector<int64_t>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::i64, v));
}
void gguf_writer::set_arr_f32(const std::string& key, const std::vector<float>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::f32, v));
}
void gguf_writer::set_arr_f64(const std::string& key, const std::vector<double>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::f64, v));
}
void gguf_writer::set_arr_bool(const std::string& key, const std::vector<bool>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::boolean, v));
}
void gguf_writer::set_arr_str(const std::string& key, const std::vector<std::string>& v) {
    set_raw(key, gguf_type::array, array_payload(gguf_type::string, v));
}

void gguf_writer::set_value(const std::string& key, const gguf_value& v) {
    std::vector<uint8_t> b;
    // Appends one element of type t from the variant alternative `x` (scalar) to b.
    auto put_one = [&](gguf_type t, const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
            if (t != gguf_type::string)
                bad_arg("metadata key '" + key + "': string value for type " + gguf_type_name(t));
            put_str(b, x);
        } else if constexpr (std::is_same_v<T, bool>) {
            if (t != gguf_type::boolean)
                bad_arg("metadata key '" + key + "': bool value for type " + gguf_type_name(t));
            put<bool>(b, x);
        } else if constexpr (std::is_same_v<T, double>) {
            if (t != gguf_type::f32 && t != gguf_type::f64) {
                bad_arg("metadata key '" + key + "': float value for type " + gguf_type_name(t));
            }
            put_widened(b, t, key, 0, 0, x, false);
        } else if constexpr (std::is_same_v<T, int64_t>) {
            if (t == gguf_type::f32 || t == gguf_type::f64)
                put_widened(b, t, key, 0, 0, double(x), false);
            else
                put_widened(b, t, key, 0, x, 0, true);
        } else {
            if (t == gguf_type::f32 || t == gguf_type::f64)
                put_widened(b, t, key, 0, 0, double(x), false);
            else
                put_widened(b, t, key, x, 0, 0, false);
        }
    };
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            constexpr bool is_vec = !std::is_same_v<T, std::string> && requires { x.size(); };
            if constexpr (is_vec) {
                if (v.type != gguf_type::array) bad_arg("metadata key '" + key + "': array value without array type");
                if (v.elem_type == gguf_type::array || uint32_t(v.elem_type) > 12) {
                    bad_arg("metadata key '" + key + "': bad array element type");
                }
                put<uint32_t>(b, uint32_t(v.elem_type));
                put<uint64_t>(b, x.size());
                for (size_t i = 0; i < x.size(); ++i) {
                    using E = typename T::value_type;
                    const E e = x[i];
                    put_one(v.elem_type, e);
                }
            } else {
                if (v.type == gguf_type::array) bad_arg("metadata key '" + key + "': array type without array value");
                put_one(v.type, x);
            }
        },
        v.v);
    set_raw(key, v.type, std::move(b));
}

bool gguf_writer::has(std::string_view key) const {
    for (const auto& e : kv_)
        if (e.key == key) return true;
    return false;
}

gguf_writer::tensor_entry& gguf_writer::add_entry(const std::string& name, dtype type, const std::vector<int64_t>& ne,
                                                  const void* data, size_t nbytes) {
    if (name.empty()) bad_arg("empty tensor name");
    for (const auto& t : tensors_)
        if (t.name == name) bad_arg("duplicate tensor name '" + name + "'");
    const auto info = dtype_info(uint32_t(type));
    if (!info) bad_arg("tensor '" + name + "': unknown ggml type id " + std::to_string(uint32_t(type)));
    if (ne.empty() || ne.size() > 4) bad_arg("tensor '" + name + "': needs 1 to 4 dimensions");
    uint64_t n = 1;
    for (const int64_t d : ne) {
        // The reader's limits: every dimension at most 2^40, the element count at most 2^50.
        if (d <= 0 || uint64_t(d) > (uint64_t(1) << 40) || n > (uint64_t(1) << 50) / uint64_t(d)) {
            bad_arg("tensor '" + name + "': invalid dimension " + std::to_string(d));
        }
        n *= uint64_t(d);
    }
    if (ne[0] % info->block_size != 0) {
        bad_arg("tensor '" + name + "': row length " + std::to_string(ne[0]) + " is not a multiple of the " +
                std::string(info->name) + " block size " + std::to_string(info->block_size));
    }
    const uint64_t want = n / info->block_size * info->block_bytes;
    if (want != nbytes) {
        bad_arg("tensor '" + name + "': " + std::to_string(nbytes) + " bytes given, the shape needs " +
                std::to_string(want));
    }
    if (!data) bad_arg("tensor '" + name + "': null data");
    tensor_entry t;
    t.name = name;
    t.type = type;
    t.ne = ne;
    t.nbytes = nbytes;
    tensors_.push_back(std::move(t));
    return tensors_.back();
}

void gguf_writer::add_tensor(const std::string& name, dtype type, const std::vector<int64_t>& ne, const void* data,
                             size_t nbytes) {
    auto& t = add_entry(name, type, ne, data, nbytes);
    const auto* p = static_cast<const uint8_t*>(data);
    t.owned.assign(p, p + nbytes);
}

void gguf_writer::add_tensor_ref(const std::string& name, dtype type, const std::vector<int64_t>& ne, const void* data,
                                 size_t nbytes) {
    add_entry(name, type, ne, data, nbytes).ref = static_cast<const uint8_t*>(data);
}

size_t gguf_writer::alignment() const {
    for (const auto& e : kv_) {
        if (e.key != "general.alignment") continue;
        if (e.type != gguf_type::u32) bad_arg("general.alignment must be set as a u32");
        const uint32_t a = uint32_t(e.payload[0]) | uint32_t(e.payload[1]) << 8 | uint32_t(e.payload[2]) << 16 |
                           uint32_t(e.payload[3]) << 24;
        if (a == 0 || (a & (a - 1)) != 0 || a > k_max_alignment) {
            bad_arg("general.alignment " + std::to_string(a) + " is not a power of two up to 1 MiB");
        }
        return a;
    }
    return k_default_alignment;
}

void gguf_writer::emit(const std::function<void(const uint8_t*, size_t)>& out) const {
    const size_t align = alignment();
    auto padded = [&](uint64_t n) { return (n + align - 1) / align * align; };

    std::vector<uint8_t> h;
    put<uint32_t>(h, k_magic);
    put<uint32_t>(h, k_version);
    put<uint64_t>(h, tensors_.size());
    put<uint64_t>(h, kv_.size());
    for (const auto& e : kv_) {
        put_str(h, e.key);
        put<uint32_t>(h, uint32_t(e.type));
        h.insert(h.end(), e.payload.begin(), e.payload.end());
    }
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
        put_str(h, t.name);
        put<uint32_t>(h, uint32_t(t.ne.size()));
        for (const int64_t d : t.ne) put<uint64_t>(h, uint64_t(d));
        put<uint32_t>(h, uint32_t(t.type));
        put<uint64_t>(h, offset);
        offset += padded(t.nbytes);
    }
    h.resize(size_t(padded(h.size())), 0);
    out(h.data(), h.size());

    const std::vector<uint8_t> zeros(align, 0);
    for (const auto& t : tensors_) {
        out(t.bytes(), t.nbytes);
        const size_t pad = size_t(padded(t.nbytes) - t.nbytes);
        if (pad) out(zeros.data(), pad);
    }
}

std::vector<uint8_t> gguf_writer::to_bytes() const {
    std::vector<uint8_t> b;
    emit([&](const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); });
    return b;
}

void gguf_writer::write(const std::string& path) const {
    (void)alignment();  // validate before creating anything
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw error(TANDEM_ERR_IO, "cannot create '" + tmp + "': " + std::strerror(errno));
    try {
        emit([&](const uint8_t* p, size_t n) { write_all(fd, p, n, tmp); });
        if (::fsync(fd) != 0) throw error(TANDEM_ERR_IO, "cannot flush '" + tmp + "': " + std::strerror(errno));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    if (::close(fd) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw error(TANDEM_ERR_IO, "cannot close '" + tmp + "': " + std::strerror(e));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        throw error(TANDEM_ERR_IO, "cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(e));
    }
}

}  // namespace tandem
