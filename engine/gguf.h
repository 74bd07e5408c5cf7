// GGUF v3 reader: maps a file read-only and exposes its metadata and tensor infos without copying.
// Every count, length and offset is checked against the file size before use; a truncated, corrupt or
// hostile file throws tandem::error (TANDEM_ERR_FORMAT) naming the field and its byte offset.
// Layout (GGUF spec): magic "GGUF", u32 version, u64 tensor count, u64 kv count, kv pairs, tensor infos,
// padding to general.alignment (default 32), tensor data; tensor offsets are relative to the data start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/types.h"

namespace tandem {

enum class gguf_type : uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
    u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_type_name(gguf_type t);

// One metadata value. Arrays hold scalars or strings of one element type (nested arrays are rejected).
struct gguf_value {
    gguf_type type = gguf_type::u8;
    gguf_type elem_type = gguf_type::u8;  // for arrays
    std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<uint64_t>, std::vector<int64_t>,
                 std::vector<double>, std::vector<bool>, std::vector<std::string>>
        v;

    // Typed accessors; throw tandem::error (format) naming `key` when the value has another type.
    uint64_t as_uint(std::string_view key) const;  // any unsigned or non-negative signed integer
    int64_t as_int(std::string_view key) const;
    double as_float(std::string_view key) const;  // f32/f64 (and integers)
    bool as_bool(std::string_view key) const;
    const std::string& as_string(std::string_view key) const;
    size_t array_size() const;
    // Short human-readable rendering (arrays abbreviated), for `tandem info`.
    std::string to_string(size_t max_items = 8) const;
};

struct gguf_tensor_info {
    std::string name;
    dtype type = dtype::f32;
    std::vector<int64_t> ne;  // ggml order: ne[0] innermost
    uint64_t offset = 0;      // relative to the data section
    size_t nbytes = 0;
    int64_t nelements() const;
};

class gguf_file {
   public:
    // Maps and parses `path`. Throws tandem::error: TANDEM_ERR_IO if unreadable, TANDEM_ERR_FORMAT if malformed.
    static gguf_file open(const std::string& path);
    // Parses a file image in memory (the caller keeps it alive). Used by tests and the fuzzer.
    static gguf_file parse(const uint8_t* data, size_t size, std::string name = "<memory>");

    gguf_file(gguf_file&&) noexcept;
    gguf_file& operator=(gguf_file&&) noexcept;
    ~gguf_file();

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }

    const std::vector<std::pair<std::string, gguf_value>>& metadata() const { return kv_; }
    const gguf_value* find(std::string_view key) const;
    // The value of a required key; throws tandem::error (format) "missing metadata key '...'".
    const gguf_value& get(std::string_view key) const;

    const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }
    const gguf_tensor_info* find_tensor(std::string_view name) const;
    // Start of a tensor's bytes inside the mapping.
    const uint8_t* tensor_data(const gguf_tensor_info& t) const { return data_ + t.offset; }

    const uint8_t* data_section() const { return data_; }
    // Lets the OS drop the pages wholly inside [p, p + bytes) of a file mapping (they are read back from the file
    // if touched again); nothing for a file parsed from memory. Returns the bytes released.
    size_t release_pages(const uint8_t* p, size_t bytes) const;
    size_t data_section_size() const { return data_size_; }
    size_t file_size() const { return size_; }

   private:
    gguf_file() = default;
    void parse_all();

    std::string path_;
    struct mapping;
    std::unique_ptr<mapping> map_;  // owns the mmap when opened from a file
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    std::vector<std::pair<std::string, gguf_value>> kv_;
    std::map<std::string, size_t, std::less<>> kv_index_;
    std::vector<gguf_tensor_info> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
    const uint8_t* data_ = nullptr;
    size_t data_size_ = 0;
};

}  // namespace tandem
