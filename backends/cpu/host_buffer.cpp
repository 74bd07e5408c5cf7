// Host buffers and the memory half of the CPU backends.
#include "backends/cpu/host_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>
#include <string>

#include "engine/error.h"

namespace tandem {

void* host_alloc(size_t bytes) {
    constexpr size_t huge = size_t(2) << 20;
    // From 2 MiB up the allocation is padded to whole 2 MiB pages, so that its tail is on a huge page too. The last
    // 1.2 MiB of the 1.1B shape's 36.9 MB output head, left on 4 KiB pages, took ~3x as long per byte as the rest,
    // and the thread whose half held it finished the head 1.3 ms after the other (9-row verification passes on the
    // Intel VM). Two loads of the model alternated pass by pass in one process: 9 rows 51.3 -> 48.9 ms median,
    // decode 34.6 -> 31.8 ms (in a noisy hour). The padding is at most 2 MiB per allocation; weights share 32 MiB
    // chunks (host_arena), so a model pads only its few larger buffers.
    const size_t rounded =
        bytes >= huge ? (bytes + huge - 1) / huge * huge : std::max<size_t>((bytes + 63) / 64 * 64, 64);
    void* p = nullptr;
    if (posix_memalign(&p, bytes >= huge ? huge : 64, rounded) != 0 || p == nullptr)
        throw error(TANDEM_ERR_BACKEND, "out of host memory allocating " + std::to_string(bytes) + " bytes");
#if defined(MADV_HUGEPAGE)
    if (bytes >= huge) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; 4 KiB pages work too
#endif
    return p;
}

void host_free(void* p) { std::free(p); }

std::shared_ptr<uint8_t> host_arena::alloc(size_t bytes) {
    const auto own = [](size_t n) { return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(host_alloc(n)), host_free); };
    const size_t rounded = std::max<size_t>((bytes + 63) / 64 * 64, 64);
    if (rounded >= chunk_bytes) return own(rounded);
    std::lock_guard lk(mu_);
    if (chunk_bytes - used_ < rounded) {
        chunk_ = own(chunk_bytes);
        used_ = 0;
    }
    std::shared_ptr<uint8_t> out(chunk_, chunk_.get() + used_);  // shares the chunk's ownership
    used_ += rounded;
    return out;
}

host_buffer::host_buffer(size_t bytes) : data_(host_alloc(bytes)), size_(bytes), owned_(true) {
    std::memset(data_, 0, std::max<size_t>((bytes + 63) / 64 * 64, 64));
}

host_buffer::host_buffer(const void* data, size_t bytes) : data_(const_cast<void*>(data)), size_(bytes) {}

host_buffer::~host_buffer() {
    if (owned_) host_free(data_);
}

std::unique_ptr<buffer> host_memory_backend::alloc(size_t bytes) { return std::make_unique<host_buffer>(bytes); }

std::unique_ptr<buffer> host_memory_backend::wrap_host(const void* data, size_t bytes) {
    return std::make_unique<host_buffer>(data, bytes);
}

void host_memory_backend::upload(buffer& dst, size_t offset, const void* src, size_t bytes) {
    TANDEM_ASSERT(offset <= dst.size() && bytes <= dst.size() - offset);
    dst.drop_layouts(offset, bytes);
    std::memcpy(static_cast<char*>(dst.host_ptr()) + offset, src, bytes);
}

void host_memory_backend::download(const buffer& src, size_t offset, void* dst, size_t bytes) {
    TANDEM_ASSERT(offset <= src.size() && bytes <= src.size() - offset);
    std::memcpy(dst, static_cast<const char*>(const_cast<buffer&>(src).host_ptr()) + offset, bytes);
}

}  // namespace tandem
