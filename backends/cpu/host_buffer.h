// Host memory buffers shared by the CPU backends: owned (aligned heap) or a zero-copy view of memory
// the caller keeps alive (the model's mmap). Both are host-addressable.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "backends/backend.h"

namespace tandem {

// Host memory for large, long-lived data (weights, packed layouts, KV caches): 64-byte aligned; from 2 MiB up
// aligned and padded to whole 2 MiB pages and offered to the kernel as transparent huge pages (madvise), because
// a stream over 4 KiB pages restarts the hardware prefetcher at every page boundary (a 1-thread read ran ~25%
// slower here, the packed GEMV's tail up to 3x). Not zeroed. Throws on failure. Free with host_free.
void* host_alloc(size_t bytes);
void host_free(void* p);

// Long-lived allocations (prepared weight layouts) carved out of huge-page chunks, so that a model's many weights of
// a few MB each all sit on 2 MiB pages without each being padded to 2 MiB (which cost ~200 MB over a 1.1B model).
// A chunk is freed when the arena and every allocation made from it are gone; freed space is not reused (layouts
// are made once, at load).
class host_arena {
   public:
    // 64-byte aligned, not zeroed, owning a share of its chunk. Allocations of at least a chunk get their own.
    std::shared_ptr<uint8_t> alloc(size_t bytes);

   private:
    static constexpr size_t chunk_bytes = size_t(32) << 20;
    std::mutex mu_;
    std::shared_ptr<uint8_t> chunk_;
    size_t used_ = chunk_bytes;
};

class host_buffer final : public buffer {
   public:
    // Owned, 64-byte aligned, zero-initialised.
    explicit host_buffer(size_t bytes);
    // Non-owning view of [data, data + bytes); the memory must outlive the buffer and stay unchanged.
    host_buffer(const void* data, size_t bytes);
    ~host_buffer() override;
    host_buffer(const host_buffer&) = delete;
    host_buffer& operator=(const host_buffer&) = delete;

    size_t size() const override { return size_; }
    void* host_ptr() override { return data_; }

   private:
    void* data_ = nullptr;
    size_t size_ = 0;
    bool owned_ = false;
};

// Base for backends whose memory is host memory: alloc, wrap_host (zero-copy), upload, download.
class host_memory_backend : public backend {
   public:
    std::unique_ptr<buffer> alloc(size_t bytes) override;
    std::unique_ptr<buffer> wrap_host(const void* data, size_t bytes) override;
    void upload(buffer& dst, size_t offset, const void* src, size_t bytes) override;
    void download(const buffer& src, size_t offset, void* dst, size_t bytes) override;
};

}  // namespace tandem
