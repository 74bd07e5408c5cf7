// Device memory: large blocks (one VkDeviceMemory + one VkBuffer each) sub-allocated first-fit, so tensors
// are (block buffer, offset) ranges and a model needs a handful of allocations, not one per tensor.
// Two kinds: `device` (tensor storage; host-mapped only on the direct path) and `host` (staging and the status
// word; always host-visible, coherent and mapped). The direct path is taken when the largest device-local heap
// is host-visible and coherent (lavapipe, UMA, resizable BAR); otherwise, or with TANDEM_VULKAN_FORCE_STAGING=1,
// tensors live in memory the host never maps and every transfer goes through `host` staging buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "backends/vulkan/device.h"
#include "backends/vulkan/vk_handles.h"

namespace tandem::vk {

enum class mem_kind { device, host };

struct memory_block {
    memory_handle memory;
    buffer_handle buffer;
    VkDeviceSize size = 0;
    void* mapped = nullptr;                     // host address of offset 0 when mapped
    std::map<VkDeviceSize, VkDeviceSize> free;  // offset -> size, coalesced
    mem_kind kind = mem_kind::device;
    bool dedicated = false;  // one allocation that owns the whole block
    size_t live = 0;         // sub-allocations in use
};

// One sub-allocation; `size` is the rounded size actually reserved.
struct allocation {
    memory_block* block = nullptr;
    VkDeviceSize offset = 0, size = 0;
    VkBuffer buffer() const { return block ? block->buffer.get() : VK_NULL_HANDLE; }
    // Host address of the first byte, or nullptr when the memory is not mapped.
    char* mapped() const { return block && block->mapped ? static_cast<char*>(block->mapped) + offset : nullptr; }
    explicit operator bool() const { return block != nullptr; }
};

class allocator {
 public:
    allocator(const device& dev, bool force_staging);
    ~allocator();
    allocator(const allocator&) = delete;
    allocator& operator=(const allocator&) = delete;

    // Throws tandem::error(TANDEM_ERR_BACKEND) when the device is out of memory or bytes exceeds one allocation.
    allocation alloc(VkDeviceSize bytes, mem_kind kind);
    // Returns the range at once: the caller guarantees no pending GPU work uses it.
    void free(allocation a);
    // True when `device` memory is host-mapped (no staging needed).
    bool direct() const { return mapped_[0]; }
    // Called before a block's VkBuffer is destroyed (descriptor sets naming it become invalid).
    void set_block_release_hook(std::function<void(VkBuffer)> hook) { on_release_ = std::move(hook); }
    VkDeviceSize bytes_in_use() const { return in_use_; }
    std::string describe() const;

 private:
    memory_block* new_block(VkDeviceSize size, mem_kind kind, bool dedicated);
    void release_block(memory_block* b);

    const device& dev_;
    uint32_t type_[2] = {0, 0};  // memory type index per kind
    bool mapped_[2] = {false, true};
    VkDeviceSize align_ = 256, block_size_ = VkDeviceSize(64) << 20;
    std::vector<std::unique_ptr<memory_block>> blocks_;
    std::function<void(VkBuffer)> on_release_;
    VkDeviceSize in_use_ = 0;
};

}  // namespace tandem::vk
