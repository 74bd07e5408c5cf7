// Command recording: ops append dispatches and copies to one command buffer, submitted once when the host
// needs results (download, synchronize, an upload to host-mapped memory). A pipeline barrier is inserted only
// between dependent commands: every command declares the buffer ranges it reads and writes, and a barrier
// goes in front of a command that reads or writes a range written, or writes a range read, since the last one.
// With TANDEM_VULKAN_PROFILE=1 each dispatch is bracketed by timestamps, summed per shader variant.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "backends/vulkan/device.h"
#include "backends/vulkan/pipelines.h"
#include "backends/vulkan/vk_handles.h"

namespace tandem::vk {

struct access {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceSize offset = 0, size = 0;
    bool write = false;
};

class recorder {
 public:
    recorder(const device& dev, bool profile);
    ~recorder();
    recorder(const recorder&) = delete;
    recorder& operator=(const recorder&) = delete;

    void dispatch(const pipeline& p, VkDescriptorSet set, const void* push, uint32_t push_bytes, uint32_t gx,
                  uint32_t gy, uint32_t gz, std::span<const access> accesses);
    void copy(VkBuffer src, VkDeviceSize src_offset, VkBuffer dst, VkDeviceSize dst_offset, VkDeviceSize bytes);
    void fill_zero(VkBuffer dst, VkDeviceSize offset, VkDeviceSize bytes);
    // True when commands were recorded since the last submit.
    bool pending() const { return recording_; }
    // Ends the command buffer, submits it and waits for the device (no-op when nothing is pending).
    void submit_and_wait();
    uint64_t submits() const { return submits_; }
    uint64_t dispatches() const { return dispatches_; }
    // Per-variant GPU time of every profiled dispatch so far ("" when profiling is off).
    std::string profile_report() const;

 private:
    VkCommandBuffer begin();
    void hazard(std::span<const access> accesses);
    void collect_timestamps();

    const device& dev_;
    command_pool_handle pool_;
    VkCommandBuffer cmd_ = VK_NULL_HANDLE;
    fence_handle fence_;
    bool recording_ = false;
    std::vector<access> reads_, writes_;  // since the last barrier
    uint64_t submits_ = 0, dispatches_ = 0;

    // profiling
    query_pool_handle queries_;
    uint32_t query_capacity_ = 0, queries_used_ = 0;
    std::vector<const char*> query_names_;  // variant per query pair
    struct timing {
        uint64_t count = 0;
        double ms = 0;
    };
    std::map<std::string, timing> timings_;
};

}  // namespace tandem::vk
