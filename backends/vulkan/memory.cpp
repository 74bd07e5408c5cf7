// The block allocator of memory.h: memory-type choice per kind, first-fit sub-allocation with coalescing.
#include "backends/vulkan/memory.h"

#include <algorithm>
#include <sstream>

#include "backends/vulkan/log.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

constexpr VkBufferUsageFlags k_usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;

VkDeviceSize round_up(VkDeviceSize x, VkDeviceSize a) { return (x + a - 1) / a * a; }

}  // namespace

allocator::allocator(const device& dev, bool force_staging) : dev_(dev) {
    const auto& api = dev.api();
    const auto& mp = dev.memory_properties();
    // Which memory types a storage buffer may use (the same for every size with these usage flags).
    auto bi = make<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
    bi.size = 256;
    bi.usage = k_usage;
    VkBuffer probe = VK_NULL_HANDLE;
    check(api.vkCreateBuffer(dev.get(), &bi, nullptr, &probe), "vkCreateBuffer");
    VkMemoryRequirements req;
    api.vkGetBufferMemoryRequirements(dev.get(), probe, &req);
    api.vkDestroyBuffer(dev.get(), probe, nullptr);

    uint32_t big_heap = 0;
    VkDeviceSize big = 0;
    for (uint32_t h = 0; h < mp.memoryHeapCount; ++h) {
        if ((mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && mp.memoryHeaps[h].size > big) {
            big = mp.memoryHeaps[h].size;
            big_heap = h;
        }
    }
    auto find = [&](VkMemoryPropertyFlags want, int heap, VkMemoryPropertyFlags prefer) -> int {
        int best = -1;
        for (uint32_t t = 0; t < mp.memoryTypeCount; ++t) {
            const auto f = mp.memoryTypes[t].propertyFlags;
            if (!(req.memoryTypeBits & (1u << t)) || (f & want) != want) continue;
            if (heap >= 0 && mp.memoryTypes[t].heapIndex != uint32_t(heap)) continue;
            if (best < 0 || ((f & prefer) == prefer && (mp.memoryTypes[best].propertyFlags & prefer) != prefer))
                best = int(t);
        }
        return best;
    };
    const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int direct = find(VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv, int(big_heap), 0);
    int local = find(VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, int(big_heap), 0);
    if (local < 0) local = find(0, -1, 0);
    int host = find(hv, -1, VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (local < 0 || host < 0) throw error(TANDEM_ERR_BACKEND, "vulkan: no usable memory type for storage buffers");
    if (direct >= 0 && !force_staging) {
        type_[0] = uint32_t(direct);
        mapped_[0] = true;
    } else {
        type_[0] = uint32_t(local);
        mapped_[0] = false;
    }
    type_[1] = uint32_t(host);
    align_ = std::max<VkDeviceSize>(
        {256, req.alignment, dev.limits().storage_align, dev.properties().limits.nonCoherentAtomSize});
    block_size_ = std::min<VkDeviceSize>(block_size_, std::max<VkDeviceSize>(big / 8, VkDeviceSize(4) << 20));
    block_size_ = std::min(block_size_, dev.limits().max_allocation);
    log().debug("memory: device type {} ({}), host type {}, blocks of {} MiB", type_[0],
                mapped_[0] ? "direct, mapped" : "staging", type_[1], block_size_ >> 20);
}

allocator::~allocator() {
    for (auto& b : blocks_) {
        if (on_release_) on_release_(b->buffer.get());
    }
}

memory_block* allocator::new_block(VkDeviceSize size, mem_kind kind, bool dedicated) {
    const auto& api = dev_.api();
    const int k = kind == mem_kind::device ? 0 : 1;
    if (size > dev_.limits().max_allocation) {
        throw error(TANDEM_ERR_BACKEND, "vulkan: an allocation of " + std::to_string(size) +
                                            " bytes exceeds the device's maxMemoryAllocationSize of " +
                                            std::to_string(dev_.limits().max_allocation));
    }
    auto b = std::make_unique<memory_block>();
    auto bi = make<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
    bi.size = size;
    bi.usage = k_usage;
    VkBuffer buf = VK_NULL_HANDLE;
    check(api.vkCreateBuffer(dev_.get(), &bi, nullptr, &buf), "vkCreateBuffer");
    b->buffer = buffer_handle(dev_.get(), buf, api.vkDestroyBuffer);
    VkMemoryRequirements req;
    api.vkGetBufferMemoryRequirements(dev_.get(), buf, &req);
    auto ai = make<VkMemoryAllocateInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO);
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = type_[k];
    VkDeviceMemory mem = VK_NULL_HANDLE;
    const VkResult r = api.vkAllocateMemory(dev_.get(), &ai, nullptr, &mem);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY) {
        throw error(TANDEM_ERR_BACKEND, "vulkan: out of memory allocating " + std::to_string(size >> 20) + " MiB (" +
                                            std::to_string(in_use_ >> 20) + " MiB in use)");
    }
    check(r, "vkAllocateMemory");
    b->memory = memory_handle(dev_.get(), mem, api.vkFreeMemory);
    check(api.vkBindBufferMemory(dev_.get(), buf, mem, 0), "vkBindBufferMemory");
    if (mapped_[k]) check(api.vkMapMemory(dev_.get(), mem, 0, VK_WHOLE_SIZE, 0, &b->mapped), "vkMapMemory");
    b->size = size;
    b->kind = kind;
    b->dedicated = dedicated;
    b->free.emplace(0, size);
    blocks_.push_back(std::move(b));
    return blocks_.back().get();
}

allocation allocator::alloc(VkDeviceSize bytes, mem_kind kind) {
    const VkDeviceSize size = round_up(std::max<VkDeviceSize>(bytes, 1), align_);
    memory_block* blk = nullptr;
    VkDeviceSize at = 0;
    if (size > block_size_ / 2) {
        blk = new_block(size, kind, true);
    } else {
        for (auto& b : blocks_) {
            if (b->kind != kind || b->dedicated) continue;
            for (auto& [off, len] : b->free) {
                if (len >= size) {
                    blk = b.get();
                    at = off;
                    break;
                }
            }
            if (blk) break;
        }
        if (!blk) blk = new_block(block_size_, kind, false);
    }
    auto it = blk->free.lower_bound(at);
    if (blk->dedicated || it == blk->free.end() || it->first != at) it = blk->free.begin();
    at = it->first;
    const VkDeviceSize len = it->second;
    blk->free.erase(it);
    if (len > size) blk->free.emplace(at + size, len - size);
    ++blk->live;
    in_use_ += size;
    return allocation{blk, at, size};
}

void allocator::free(allocation a) {
    if (!a.block) return;
    memory_block* b = a.block;
    in_use_ -= a.size;
    --b->live;
    auto next = b->free.emplace(a.offset, a.size).first;
    // Coalesce with the neighbours.
    if (auto after = std::next(next); after != b->free.end() && next->first + next->second == after->first) {
        next->second += after->second;
        b->free.erase(after);
    }
    if (next != b->free.begin()) {
        auto before = std::prev(next);
        if (before->first + before->second == next->first) {
            before->second += next->second;
            b->free.erase(next);
        }
    }
    if (b->live > 0) return;
    // Keep one empty shared block per kind for reuse; release dedicated and surplus empty blocks.
    bool keep = !b->dedicated;
    if (keep) {
        for (auto& o : blocks_)
            if (o.get() != b && o->kind == b->kind && !o->dedicated && o->live == 0) keep = false;
    }
    if (!keep) release_block(b);
}

void allocator::release_block(memory_block* b) {
    if (on_release_) on_release_(b->buffer.get());
    blocks_.erase(std::find_if(blocks_.begin(), blocks_.end(), [b](const auto& p) { return p.get() == b; }));
}

std::string allocator::describe() const {
    std::ostringstream s;
    s << (mapped_[0] ? "direct (host-visible device memory)" : "staging (device-local memory, host staging buffers)")
      << ", " << blocks_.size() << " block(s), " << (in_use_ >> 10) << " KiB in use";
    return s.str();
}

}  // namespace tandem::vk
