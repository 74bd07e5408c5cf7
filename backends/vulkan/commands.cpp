// The command recorder of commands.h: lazy begin, hazard-driven barriers, one submit + fence wait per flush.
#include "backends/vulkan/commands.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "backends/vulkan/log.h"
#include "engine/error.h"

namespace tandem::vk {

namespace {

constexpr VkPipelineStageFlags k_stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr uint32_t k_profiled_dispatches = 2048;

bool overlaps(const access& a, const access& b) {
    return a.buffer == b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

}  // namespace

recorder::recorder(const device& dev, bool profile) : dev_(dev) {
    const auto& api = dev.api();
    auto pi = make<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = dev.queue_family();
    VkCommandPool pool = VK_NULL_HANDLE;
    check(api.vkCreateCommandPool(dev.get(), &pi, nullptr, &pool), "vkCreateCommandPool");
    pool_ = command_pool_handle(dev.get(), pool, api.vkDestroyCommandPool);
    auto ai = make<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
    ai.commandPool = pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    check(api.vkAllocateCommandBuffers(dev.get(), &ai, &cmd_), "vkAllocateCommandBuffers");
    auto fi = make<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    VkFence fence = VK_NULL_HANDLE;
    check(api.vkCreateFence(dev.get(), &fi, nullptr, &fence), "vkCreateFence");
    fence_ = fence_handle(dev.get(), fence, api.vkDestroyFence);
    if (profile) {
        if (dev.limits().timestamp_bits == 0) {
            log().warn("TANDEM_VULKAN_PROFILE: the compute queue of {} has no timestamps", dev.name());
        } else {
            auto qi = make<VkQueryPoolCreateInfo>(VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO);
            qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
            qi.queryCount = 2 * k_profiled_dispatches;
            VkQueryPool q = VK_NULL_HANDLE;
            check(api.vkCreateQueryPool(dev.get(), &qi, nullptr, &q), "vkCreateQueryPool");
            queries_ = query_pool_handle(dev.get(), q, api.vkDestroyQueryPool);
            query_capacity_ = qi.queryCount;
        }
    }
}

recorder::~recorder() {
    if (recording_) {
        // Abandon unsubmitted commands: ending the buffer keeps the pool destruction valid.
        dev_.api().vkEndCommandBuffer(cmd_);
    }
    if (!timings_.empty()) log().info("profile:\n{}", profile_report());
}

VkCommandBuffer recorder::begin() {
    if (recording_) return cmd_;
    auto bi = make<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(dev_.api().vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
    recording_ = true;
    reads_.clear();
    writes_.clear();
    if (queries_) {
        dev_.api().vkCmdResetQueryPool(cmd_, queries_.get(), 0, query_capacity_);
        queries_used_ = 0;
        query_names_.clear();
    }
    return cmd_;
}

void recorder::hazard(std::span<const access> accesses) {
    bool conflict = false;
    for (const auto& a : accesses) {
        for (const auto& w : writes_) conflict = conflict || overlaps(a, w);
        if (a.write)
            for (const auto& r : reads_) conflict = conflict || overlaps(a, r);
        if (conflict) break;
    }
    if (conflict) {
        auto mb = make<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
        mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                           VK_ACCESS_TRANSFER_WRITE_BIT;
        dev_.api().vkCmdPipelineBarrier(cmd_, k_stages, k_stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
        reads_.clear();
        writes_.clear();
    }
    for (const auto& a : accesses) (a.write ? writes_ : reads_).push_back(a);
}

void recorder::dispatch(const pipeline& p, VkDescriptorSet set, const void* push, uint32_t push_bytes, uint32_t gx,
                        uint32_t gy, uint32_t gz, std::span<const access> accesses) {
    TANDEM_ASSERT(push_bytes <= k_push_bytes && push_bytes % 4 == 0);
    const auto& api = dev_.api();
    VkCommandBuffer cmd = begin();
    hazard(accesses);
    api.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.handle);
    api.vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, 1, &set, 0, nullptr);
    if (push_bytes) api.vkCmdPushConstants(cmd, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
    const bool timed = queries_ && queries_used_ + 2 <= query_capacity_;
    if (timed) api.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries_.get(), queries_used_);
    api.vkCmdDispatch(cmd, gx, gy, gz);
    if (timed) {
        api.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_.get(), queries_used_ + 1);
        queries_used_ += 2;
        query_names_.push_back(p.variant.c_str());
    }
    ++dispatches_;
}

void recorder::copy(VkBuffer src, VkDeviceSize src_offset, VkBuffer dst, VkDeviceSize dst_offset, VkDeviceSize bytes) {
    VkCommandBuffer cmd = begin();
    const access acc[2] = {{src, src_offset, bytes, false}, {dst, dst_offset, bytes, true}};
    hazard(acc);
    VkBufferCopy region{src_offset, dst_offset, bytes};
    dev_.api().vkCmdCopyBuffer(cmd, src, dst, 1, &region);
}

void recorder::fill_zero(VkBuffer dst, VkDeviceSize offset, VkDeviceSize bytes) {
    VkCommandBuffer cmd = begin();
    const access acc[1] = {{dst, offset, bytes, true}};
    hazard(acc);
    dev_.api().vkCmdFillBuffer(cmd, dst, offset, bytes, 0);
}

void recorder::submit_and_wait() {
    if (!recording_) return;
    const auto& api = dev_.api();
    // Make every shader and transfer write visible to host reads of mapped memory after the fence.
    auto mb = make<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    api.vkCmdPipelineBarrier(cmd_, k_stages, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
    recording_ = false;
    check(api.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    auto si = make<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    VkFence fence = fence_.get();
    check(api.vkQueueSubmit(dev_.queue(), 1, &si, fence), "vkQueueSubmit");
    ++submits_;
    const VkResult r = api.vkWaitForFences(dev_.get(), 1, &fence, VK_TRUE, UINT64_MAX);
    api.vkResetFences(dev_.get(), 1, &fence);
    check(r, "vkWaitForFences");
    if (queries_) collect_timestamps();
}

void recorder::collect_timestamps() {
    if (queries_used_ == 0) return;
    std::vector<uint64_t> ts(queries_used_);
    const VkResult r = dev_.api().vkGetQueryPoolResults(dev_.get(), queries_.get(), 0, queries_used_, ts.size() * 8,
                                                        ts.data(), 8, VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS) return;
    const uint64_t mask = dev_.limits().timestamp_bits >= 64 ? ~0ull : ((1ull << dev_.limits().timestamp_bits) - 1);
    for (size_t i = 0; i < query_names_.size(); ++i) {
        const uint64_t dt = (ts[2 * i + 1] - ts[2 * i]) & mask;
        auto& t = timings_[query_names_[i]];
        ++t.count;
        t.ms += double(dt) * dev_.limits().timestamp_period_ns * 1e-6;
    }
}

std::string recorder::profile_report() const {
    std::vector<std::pair<std::string, timing>> rows(timings_.begin(), timings_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
    std::ostringstream s;
    char line[160];
    for (const auto& [name, t] : rows) {
        std::snprintf(line, sizeof line, "  %-32s %8llu dispatches %10.3f ms %8.1f us each\n", name.c_str(),
                      static_cast<unsigned long long>(t.count), t.ms,
                      1000.0 * t.ms / double(std::max<uint64_t>(1, t.count)));
        s << line;
    }
    return s.str();
}

}  // namespace tandem::vk
