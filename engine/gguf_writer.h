// GGUF v3 writer: collects metadata (every GGUF value type, in insertion order) and tensors, then writes a
// little-endian GGUF file with tensor data aligned to general.alignment (default 32) and zero padding.
// Used by the llama2.c importer and by tests that build GGUF images in memory for the reader.
// Files are written atomically: to `path + ".tmp"`, flushed, then renamed over `path`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/gguf.h"
#include "engine/types.h"

namespace tandem {

class gguf_writer {
 public:
    gguf_writer() = default;

    // Metadata setters. A key set again keeps its first position and takes the new value and type.
    // An empty key throws tandem::error (TANDEM_ERR_INVALID_ARGUMENT).
    void set_u8(const std::string& key, uint8_t v);
    void set_i8(const std::string& key, int8_t v);
    void set_u16(const std::string& key, uint16_t v);
    void set_i16(const std::string& key, int16_t v);
    void set_u32(const std::string& key, uint32_t v);
    void set_i32(const std::string& key, int32_t v);
    void set_u64(const std::string& key, uint64_t v);
    void set_i64(const std::string& key, int64_t v);
    void set_f32(const std::string& key, float v);
    void set_f64(const std::string& key, double v);
    void set_bool(const std::string& key, bool v);
    void set_string(const std::string& key, std::string_view v);

    void set_arr_u8(const std::string& key, const std::vector<uint8_t>& v);
    void set_arr_i8(const std::string& key, const std::vector<int8_t>& v);
    void set_arr_u16(const std::string& key, const std::vector<uint16_t>& v);
    void set_arr_i16(const std::string& key, const std::vector<int16_t>& v);
    void set_arr_u32(const std::string& key, const std::vector<uint32_t>& v);
    void set_arr_i32(const std::string& key, const std::vector<int32_t>& v);
    void set_arr_u64(const std::string& key, const std::vector<uint64_t>& v);
    void set_arr_i64(const std::string& key, const std::vector<int64_t>& v);
    void set_arr_f32(const std::string& key, const std::vector<float>& v);
    void set_arr_f64(const std::string& key, const std::vector<double>& v);
    void set_arr_bool(const std::string& key, const std::vector<bool>& v);
    void set_arr_str(const std::string& key, const std::vector<std::string>& v);

    // Copies a value read by gguf_file (same type and element type), e.g. to rewrite a file.
    void set_value(const std::string& key, const gguf_value& v);

    bool has(std::string_view key) const;
    size_t metadata_count() const { return kv_.size(); }
    size_t tensor_count() const { return tensors_.size(); }

    // Adds a tensor; `ne` is in ggml order (ne[0] innermost, 1 to 4 dimensions, each > 0) and `nbytes` must be
    // exactly the size of that shape in `type` (ne[0] a multiple of the block size). add_tensor COPIES the
    // bytes, so the caller's buffer may be freed at once; add_tensor_ref only REFERENCES them, and the caller
    // keeps them alive and unchanged until the last write()/to_bytes(). Bad arguments (duplicate or empty name,
    // bad shape, unknown type, size mismatch) throw tandem::error (TANDEM_ERR_INVALID_ARGUMENT).
    void add_tensor(const std::string& name, dtype type, const std::vector<int64_t>& ne, const void* data,
                    size_t nbytes);
    void add_tensor_ref(const std::string& name, dtype type, const std::vector<int64_t>& ne, const void* data,
                        size_t nbytes);

    // The alignment write() will use: general.alignment if set (it must be a u32 power of two), else 32.
    size_t alignment() const;

    // Writes the file atomically (path + ".tmp", fsync, rename). I/O failures throw TANDEM_ERR_IO and leave
    // no temporary file behind; an unusable general.alignment throws TANDEM_ERR_INVALID_ARGUMENT.
    void write(const std::string& path) const;
    // The same bytes write() would produce, in memory.
    std::vector<uint8_t> to_bytes() const;

 private:
    struct kv_entry {
        std::string key;
        gguf_type type;
        std::vector<uint8_t> payload;  // the serialised value (after the u32 type field)
    };
    struct tensor_entry {
        std::string name;
        dtype type;
        std::vector<int64_t> ne;
        std::vector<uint8_t> owned;    // the copy made by add_tensor
        const uint8_t* ref = nullptr;  // the caller's bytes for add_tensor_ref
        size_t nbytes = 0;
        const uint8_t* bytes() const { return ref ? ref : owned.data(); }
    };

    void set_raw(const std::string& key, gguf_type type, std::vector<uint8_t> payload);
    tensor_entry& add_entry(const std::string& name, dtype type, const std::vector<int64_t>& ne, const void* data,
                            size_t nbytes);
    // Streams the whole file through `out` in order; header bytes are built first, tensor data is not copied.
    void emit(const std::function<void(const uint8_t*, size_t)>& out) const;

    std::vector<kv_entry> kv_;
    std::vector<tensor_entry> tensors_;
};

}  // namespace tandem
