// `tandem info`: metadata, tensors and vocabulary fingerprint of a GGUF file.
#include <cstdio>
#include <memory>
#include <vector>

#include "tools/tandem/cli.h"

namespace tandem_cli {

action add_info(CLI::App& app) {
    auto path = std::make_shared<std::string>(default_model());
    auto* cmd = app.add_subcommand("info", "Print a GGUF file's metadata, tensors (name, type, shape, bytes) and "
                                           "vocabulary fingerprint without loading the weights.");
    cmd->add_option("model", *path, "GGUF file")->capture_default_str();
    return [path] {
        size_t needed = 0;
        tandem_status st = tandem_gguf_report(path->c_str(), nullptr, 0, &needed);
        if (st != TANDEM_ERR_BUFFER_TOO_SMALL) check(st, *path);
        std::vector<char> buf(needed);
        check(tandem_gguf_report(path->c_str(), buf.data(), buf.size(), &needed), *path);
        std::fputs(buf.data(), stdout);
        return 0;
    };
}

}  // namespace tandem_cli
