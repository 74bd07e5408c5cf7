// The explicit list of compiled-in backends (no self-registration by static initialisers).
#include <sstream>

#include "backends/backend.h"
#include "backends/cpu/cpu.h"
#include "backends/cpu/cpu_ref.h"
#include "engine/error.h"
#if TANDEM_WITH_OPENCL
#include "backends/opencl/opencl.h"
#endif
#if TANDEM_WITH_VULKAN
#include "backends/vulkan/vulkan_backend.h"
#endif

namespace tandem {

std::vector<std::string> backend_names() {
    std::vector<std::string> names = {"cpu_ref", "cpu"};
#if TANDEM_WITH_OPENCL
    names.push_back("opencl");
#endif
#if TANDEM_WITH_VULKAN
    names.push_back("vulkan");
#endif
    return names;
}

std::unique_ptr<backend> make_backend(const std::string& name) {
    if (name == "cpu_ref") return make_cpu_ref_backend();
    if (name == "cpu") return make_cpu_backend();
#if TANDEM_WITH_OPENCL
    // "opencl" (default device), "opencl:P:D" (indices) or "opencl:<device name substring>".
    if (name == "opencl") return make_opencl_backend();
    if (name.rfind("opencl:", 0) == 0) return make_opencl_backend(name.substr(7));
#endif
#if TANDEM_WITH_VULKAN
    // "vulkan" (TANDEM_VULKAN_DEVICE or the default device), "vulkan:N" (index) or "vulkan:<name substring>".
    if (name == "vulkan") return make_vulkan_backend();
    if (name.rfind("vulkan:", 0) == 0) return make_vulkan_backend(name.substr(7));
#endif
    std::ostringstream s;
    s << "unknown backend '" << name << "'; this build has:";
    for (const auto& n : backend_names()) s << " " << n;
    throw error(TANDEM_ERR_INVALID_ARGUMENT, s.str());
}

}  // namespace tandem
