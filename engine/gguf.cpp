// GGUF v3 parsing with bounds checks on every read. A cursor reads little-endian fields and names the
// field and offset in every error; limits below stop hostile counts before they allocate memory.
#include "engine/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

#include "engine/error.h"

namespace tandem {

namespace {

constexpr uint32_t k_magic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t k_max_dims = 4;        // ggml tensors have at most 4 dimensions

[[noreturn]] void fail(const std::string& file, size_t offset, const std::string& what) {
    std::ostringstream s;
    s << file << ": invalid GGUF at byte " << offset << ": " << what;
    throw error(TANDEM_ERR_FORMAT, s.str());
}

class cursor {
   public:
    cursor(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

    size_t pos() const { return pos_; }
    size_t remaining() const { return size_ - pos_; }

    void need(size_t n, const char* field) const {
        if (n > remaining()) {
            std::ostringstream s;
            s << "file truncated while reading " << field << " (needs " << n << " bytes, " << remaining()
              << " left of " << size_ << ")";
            fail(file_, pos_, s.str());
        }
    }
    template <typename T>
    T read(const char* field) {
        need(sizeof(T), field);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string read_string(const char* field) {
        const size_t at = pos_;
        const uint64_t len = read<uint64_t>(field);
        if (len > remaining()) {
            std::ostringstream s;
            s << field << " has length " << len << ", beyond the end of the file (" << remaining() << " bytes left)";
            fail(file_, at, s.str());
        }
        std::string out(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
        pos_ += size_t(len);
        return out;
    }
    [[noreturn]] void error_at(size_t at, const std::string& what) const { fail(file_, at, what); }

   private:
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    const std::string& file_;
};

size_t scalar_size(gguf_type t) {
    switch (t) {
        case gguf_type::u8: case gguf_type::i8: case gguf_type::boolean: return 1;
        case gguf_type::u16: case gguf_type::i16: return 2;
        case gguf_type::u32: case gguf_type::i32: case gguf_type::f32: return 4;
        case gguf_type::u64: case gguf_type::i64: case gguf_type::f64: return 8;
        default: return 0;
    }
}

bool valid_type(uint32_t t) { return t <= 12; }

// Reads one scalar of type t into the variant's widened representation.
void read_scalar(cursor& c, gguf_type t, gguf_value& out, const char* field) {
    switch (t) {
        case gguf_type::u8: out.v = uint64_t(c.read<uint8_t>(field)); break;
        case gguf_type::u16: out.v = uint64_t(c.read<uint16_t>(field)); break;
        case gguf_type::u32: out.v = uint64_t(c.read<uint32_t>(field)); break;
        case gguf_type::u64: out.v = uint64_t(c.read<uint64_t>(field)); break;
        case gguf_type::i8: out.v = int64_t(c.read<int8_t>(field)); break;
        case gguf_type::i16: out.v = int64_t(c.read<int16_t>(field)); break;
        case gguf_type::i32: out.v = int64_t(c.read<int32_t>(field)); break;
        case gguf_type::i64: out.v = int64_t(c.read<int64_t>(field)); break;
        case gguf_type::f32: out.v = double(c.read<float>(field)); break;
        case gguf_type::f64: out.v = c.read<double>(field); break;
        case gguf_type::boolean: out.v = c.read<uint8_t>(field) != 0; break;
        case gguf_type::string: out.v = c.read_string(field); break;
        default: TANDEM_ASSERT(false);
    }
}

template <typename T, typename R>
std::vector<T> read_array(cursor& c, uint64_t n, const char* field, R reader) {
    std::vector<T> v;
    v.reserve(size_t(n));
    for (uint64_t i = 0; i < n; ++i) v.push_back(reader());
    (void)field;
    return v;
}

gguf_value read_value(cursor& c, gguf_type t, const std::string& key) {
    gguf_value out;
    out.type = t;
    if (t != gguf_type::array) {
        read_scalar(c, t, out, "metadata value");
        return out;
    }
    const size_t at = c.pos();
    const uint32_t et = c.read<uint32_t>("array element type");
    if (!valid_type(et)) c.error_at(at, "metadata key '" + key + "': unknown array element type " + std::to_string(et));
    if (et == uint32_t(gguf_type::array)) c.error_at(at, "metadata key '" + key + "': nested arrays are not supported");
    out.elem_type = gguf_type(et);
    const size_t count_at = c.pos();
    const uint64_t n = c.read<uint64_t>("array length");
    // Every element needs at least its scalar size (strings: their 8-byte length), so a count the rest of
    // the file cannot hold is rejected before anything is allocated.
    const size_t min_elem = out.elem_type == gguf_type::string ? 8 : scalar_size(out.elem_type);
    // Scalars are widened to 8 bytes in memory, so a cap keeps a hostile u8 array from costing 8x the file size.
    constexpr uint64_t k_max_array = uint64_t(1) << 26;
    if (n > k_max_array) {
        c.error_at(count_at, "metadata key '" + key + "': array length " + std::to_string(n) + " exceeds the limit of " +
                                 std::to_string(k_max_array) + " elements");
    }
    if (n > c.remaining() / min_elem) {
        std::ostringstream s;
        s << "metadata key '" << key << "': array length " << n << " cannot fit in the " << c.remaining()
          << " bytes left";
        c.error_at(count_at, s.str());
    }
    gguf_value elem;
    switch (out.elem_type) {
        case gguf_type::string:
            out.v = read_array<std::string>(c, n, "array string", [&] { return c.read_string("array string"); });
            break;
        case gguf_type::boolean:
            out.v = read_array<bool>(c, n, "array bool", [&] { return c.read<uint8_t>("array bool") != 0; });
            break;
        case gguf_type::f32: case gguf_type::f64:
            out.v = read_array<double>(c, n, "array float", [&] {
                read_scalar(c, out.elem_type, elem, "array element");
                return std::get<double>(elem.v);
            });
            break;
        case gguf_type::i8: case gguf_type::i16: case gguf_type::i32: case gguf_type::i64:
            out.v = read_array<int64_t>(c, n, "array int", [&] {
                read_scalar(c, out.elem_type, elem, "array element");
                return std::get<int64_t>(elem.v);
            });
            break;
        default:
            out.v = read_array<uint64_t>(c, n, "array uint", [&] {
                read_scalar(c, out.elem_type, elem, "array element");
                return std::get<uint64_t>(elem.v);
            });
            break;
    }
    return out;
}

[[noreturn]] void wrong_type(std::string_view key, const gguf_value& v, const char* want) {
    throw error(TANDEM_ERR_FORMAT, "metadata key '" + std::string(key) + "' has type " + gguf_type_name(v.type) +
                                       ", expected " + want);
}

}  // namespace

const char* gguf_type_name(gguf_type t) {
    static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array",
                                  "u64", "i64", "f64"};
    const auto i = uint32_t(t);
    return i < 13 ? names[i] : "unknown";
}

uint64_t gguf_value::as_uint(std::string_view key) const {
    if (auto p = std::get_if<uint64_t>(&v)) return *p;
    if (auto p = std::get_if<int64_t>(&v); p && *p >= 0) return uint64_t(*p);
    wrong_type(key, *this, "a non-negative integer");
}
int64_t gguf_value::as_int(std::string_view key) const {
    if (auto p = std::get_if<int64_t>(&v)) return *p;
    if (auto p = std::get_if<uint64_t>(&v); p && *p <= uint64_t(std::numeric_limits<int64_t>::max())) return int64_t(*p);
    wrong_type(key, *this, "an integer");
}
double gguf_value::as_float(std::string_view key) const {
    if (auto p = std::get_if<double>(&v)) return *p;
    if (auto p = std::get_if<uint64_t>(&v)) return double(*p);
    if (auto p = std::get_if<int64_t>(&v)) return double(*p);
    wrong_type(key, *this, "a number");
}
bool gguf_value::as_bool(std::string_view key) const {
    if (auto p = std::get_if<bool>(&v)) return *p;
    wrong_type(key, *this, "a bool");
}
const std::string& gguf_value::as_string(std::string_view key) const {
    if (auto p = std::get_if<std::string>(&v)) return *p;
    wrong_type(key, *this, "a string");
}
size_t gguf_value::array_size() const {
    return std::visit(
        [](const auto& x) -> size_t {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>) return 0;
            else if constexpr (requires { x.size(); }) return x.size();
            else return 0;
        },
        v);
}

std::string gguf_value::to_string(size_t max_items) const {
    std::ostringstream s;
    std::visit(
        [&](const auto& x) {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<T, std::string>) {
                s << '"' << (x.size() > 60 ? x.substr(0, 60) + "..." : x) << '"';
            } else if constexpr (std::is_same_v<T, bool>) {
                s << (x ? "true" : "false");
            } else if constexpr (std::is_arithmetic_v<T>) {
                s << x;
            } else {
                s << "[" << gguf_type_name(elem_type) << " x " << x.size() << "] ";
                for (size_t i = 0; i < x.size() && i < max_items; ++i) {
                    if (i) s << ", ";
                    if constexpr (std::is_same_v<typename T::value_type, std::string>) s << '"' << x[i] << '"';
                    else if constexpr (std::is_same_v<typename T::value_type, bool>)
                        s << (x[i] ? "true" : "false");
                    else s << x[i];
                }
                if (x.size() > max_items) s << ", ...";
            }
        },
        v);
    return s.str();
}

int64_t gguf_tensor_info::nelements() const {
    int64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
}

struct gguf_file::mapping {
    void* addr = nullptr;
    size_t size = 0;
    ~mapping() {
        if (addr && size) munmap(addr, size);
    }
};

gguf_file::gguf_file(gguf_file&&) noexcept = default;
gguf_file& gguf_file::operator=(gguf_file&&) noexcept = default;
gguf_file::~gguf_file() = default;

gguf_file gguf_file::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(TANDEM_ERR_IO, "cannot open '" + path + "': " + std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error(TANDEM_ERR_IO, "'" + path + "' is not a regular file");
    }
    gguf_file f;
    f.path_ = path;
    f.map_ = std::make_unique<mapping>();
    f.size_ = size_t(st.st_size);
    if (f.size_ > 0) {
        void* addr = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            const int e = errno;
            ::close(fd);
            throw error(TANDEM_ERR_IO, "cannot map '" + path + "': " + std::strerror(e));
        }
        f.map_->addr = addr;
        f.map_->size = f.size_;
        f.base_ = static_cast<const uint8_t*>(addr);
    }
    ::close(fd);
    f.parse_all();
    return f;
}

size_t gguf_file::release_pages(const uint8_t* p, size_t bytes) const {
    if (!map_ || map_->addr == nullptr || p < base_ || bytes > size_ || p - base_ > std::ptrdiff_t(size_ - bytes))
        return 0;
    const auto page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t first = (uintptr_t(p) + page - 1) / page * page, last = (uintptr_t(p) + bytes) / page * page;
    if (last <= first) return 0;
    // Private and never written: the pages go back to the page cache, and a later read faults them in again.
    if (madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) != 0) return 0;
    return last - first;
}

gguf_file gguf_file::parse(const uint8_t* data, size_t size, std::string name) {
    gguf_file f;
    f.path_ = std::move(name);
    f.base_ = data;
    f.size_ = size;
    f.parse_all();
    return f;
}

void gguf_file::parse_all() {
    static const uint8_t empty = 0;
    cursor c(base_ ? base_ : &empty, size_, path_);
    const uint32_t magic = c.read<uint32_t>("magic");
    if (magic != k_magic) c.error_at(0, "bad magic (not a GGUF file)");
    version_ = c.read<uint32_t>("version");
    if (version_ != 3) {
        c.error_at(4, "unsupported GGUF version " + std::to_string(version_) + " (this build reads version 3)");
    }
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // Minimum sizes: a kv pair is at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 4 + 8.
    if (n_kv > c.remaining() / 13) c.error_at(16, "metadata count " + std::to_string(n_kv) + " cannot fit in the file");
    if (n_tensors > c.remaining() / 24) {
        c.error_at(8, "tensor count " + std::to_string(n_tensors) + " cannot fit in the file");
    }

    for (uint64_t i = 0; i < n_kv; ++i) {
        const size_t at = c.pos();
        std::string key = c.read_string("metadata key");
        if (kv_index_.count(key)) c.error_at(at, "duplicate metadata key '" + key + "'");
        const size_t type_at = c.pos();
        const uint32_t t = c.read<uint32_t>("metadata value type");
        if (!valid_type(t)) c.error_at(type_at, "metadata key '" + key + "' has unknown value type " + std::to_string(t));
        gguf_value v = read_value(c, gguf_type(t), key);
        kv_index_.emplace(key, kv_.size());
        kv_.emplace_back(std::move(key), std::move(v));
    }

    if (auto a = find("general.alignment")) {
        if (a->type != gguf_type::u32) fail(path_, 0, "general.alignment must be a u32");
        const uint64_t al = a->as_uint("general.alignment");
        if (al == 0 || (al & (al - 1)) != 0 || al > (1u << 20)) {
            fail(path_, 0, "general.alignment " + std::to_string(al) + " is not a power of two up to 1 MiB");
        }
        alignment_ = size_t(al);
    }

    for (uint64_t i = 0; i < n_tensors; ++i) {
        const size_t at = c.pos();
        gguf_tensor_info t;
        t.name = c.read_string("tensor name");
        if (tensor_index_.count(t.name)) c.error_at(at, "duplicate tensor name '" + t.name + "'");
        const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
        if (n_dims == 0 || n_dims > k_max_dims) {
            c.error_at(at, "tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
        }
        uint64_t n_elem = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = c.read<uint64_t>("tensor dimension");
            if (ne == 0 || ne > (uint64_t(1) << 40) || n_elem > (uint64_t(1) << 50) / ne) {
                c.error_at(at, "tensor '" + t.name + "' has an invalid dimension " + std::to_string(ne));
            }
            n_elem *= ne;
            t.ne.push_back(int64_t(ne));
        }
        const size_t type_at = c.pos();
        const uint32_t type = c.read<uint32_t>("tensor type");
        const auto info = dtype_info(type);
        if (!info) c.error_at(type_at, "tensor '" + t.name + "' has unknown ggml type id " + std::to_string(type));
        t.type = dtype(type);
        if (t.ne[0] % info->block_size != 0) {
            c.error_at(at, "tensor '" + t.name + "' row length " + std::to_string(t.ne[0]) +
                               " is not a multiple of the " + std::string(info->name) + " block size " +
                               std::to_string(info->block_size));
        }
        t.nbytes = size_t(n_elem / info->block_size) * info->block_bytes;
        const size_t off_at = c.pos();
        t.offset = c.read<uint64_t>("tensor data offset");
        if (t.offset % alignment_ != 0) {
            c.error_at(off_at, "tensor '" + t.name + "' data offset " + std::to_string(t.offset) +
                                   " is not a multiple of the alignment " + std::to_string(alignment_));
        }
        tensor_index_.emplace(t.name, tensors_.size());
        tensors_.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment (a file without tensors may end here).
    const size_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
    if (n_tensors > 0 && data_start > size_) fail(path_, c.pos(), "file truncated before the tensor data section");
    data_ = base_ + std::min(data_start, size_);
    data_size_ = size_ - std::min(data_start, size_);
    for (const auto& t : tensors_) {
        if (t.offset > data_size_ || t.nbytes > data_size_ - t.offset) {
            std::ostringstream s;
            s << "tensor '" << t.name << "' data [" << t.offset << ", " << t.offset + t.nbytes
              << ") lies past the end of the data section (" << data_size_ << " bytes); file truncated?";
            fail(path_, data_start, s.str());
        }
    }
}

const gguf_value* gguf_file::find(std::string_view key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const gguf_value& gguf_file::get(std::string_view key) const {
    if (auto v = find(key)) return *v;
    throw error(TANDEM_ERR_FORMAT, path_ + ": missing metadata key '" + std::string(key) + "'");
}

const gguf_tensor_info* gguf_file::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace tandem
