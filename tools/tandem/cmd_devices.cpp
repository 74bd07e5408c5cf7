// `tandem devices`: the compute devices the GPU backends can use (OpenCL now; Vulkan joins the same report).
#include <cstdio>
#include <vector>

#include "tools/tandem/cli.h"

namespace tandem_cli {

action add_devices(CLI::App& app) {
    app.add_subcommand("devices",
                       "List the OpenCL platforms and devices (index, name, type, driver, compute units, "
                       "work-group and memory limits, fp16). Pick one with --backend opencl:P:D or "
                       "env TANDEM_OPENCL_DEVICE.");
    return [] {
        size_t needed = 0;
        tandem_status st = tandem_devices_report(nullptr, 0, &needed);
        if (st != TANDEM_ERR_BUFFER_TOO_SMALL) check(st, "listing devices");
        std::vector<char> buf(needed);
        check(tandem_devices_report(buf.data(), buf.size(), &needed), "listing devices");
        std::fputs(buf.data(), stdout);
        return 0;
    };
}

}  // namespace tandem_cli
