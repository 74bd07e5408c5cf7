// Program cache implementation. Disk entries are "TNDMCLB1" + key + payload size + payload hash + the
// driver's program binary; anything that does not verify, or that the driver refuses, is rebuilt from source.
#include "backends/opencl/program_cache.h"

#include "backends/backend.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <vector>

#include "backends/opencl/kernel_sources.h"
#include "backends/opencl/log.h"
#include "engine/error.h"

namespace tandem::opencl {

namespace {

constexpr char k_magic[8] = {'T', 'N', 'D', 'M', 'C', 'L', 'B', '1'};

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

uint64_t fnv1a(const std::string& s, uint64_t h) { return fnv1a(s.data(), s.size() + 1, h); }  // + the NUL

std::filesystem::path default_cache_dir() {
    if (const char* d = std::getenv("TANDEM_CACHE_DIR"); d && *d) return d;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::filesystem::path(x) / "tandem" / "opencl";
    if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache" / "tandem" / "opencl";
    return {};
}

std::string hex(uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

std::string build_log(cl_program prog, cl_device_id dev) {
    size_t n = 0;
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, nullptr, &n) != CL_SUCCESS || n == 0) return "";
    std::string s(n, '\0');
    if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, n, s.data(), nullptr) != CL_SUCCESS) return "";
    while (!s.empty() && (s.back() == '\0' || s.back() == '\n')) s.pop_back();
    return s;
}

// "kernels/<file>.cl:<line>" of the first diagnostic in a build log, thanks to the #line prefix of every
// embedded file; "" when the driver's log names no line.
std::string first_location(const std::string& log) {
    static const std::regex loc(R"((kernels/[A-Za-z0-9_.\-]+\.cl):([0-9]+))");
    std::smatch m;
    if (std::regex_search(log, m, loc)) return m[1].str() + ":" + m[2].str();
    return "";
}

}  // namespace

spdlog::logger& log() {
    static std::shared_ptr<spdlog::logger> logger = [] {
        if (auto l = spdlog::get("opencl")) return l;
        try {
            return spdlog::stderr_color_mt("opencl");  // stderr: stdout carries generated text
        } catch (const spdlog::spdlog_ex&) {
            return spdlog::get("opencl");  // registered concurrently by another thread
        }
    }();
    return *logger;
}

namespace {

// Kernel files that need a shared header besides common.cl, prepended after it (the embedding step has no
// #include; each embedded text starts with its own #line, so diagnostics still name the right file and line).
struct file_header {
    const char* file;
    const char* header;
};
constexpr file_header k_file_headers[] = {
    {"mul_mv_kquant.cl", "kquant.cl"},
    {"mul_mm_kquant.cl", "kquant.cl"},
    {"get_rows_kquant.cl", "kquant.cl"},
    {"train_matmul.cl", "kquant.cl"},
};

}  // namespace

std::string_view find_kernel_source(std::string_view name) {
    for (size_t i = 0; i < k_kernel_source_count; ++i)
        if (name == k_kernel_sources[i].name) return k_kernel_sources[i].text;
    throw error(TANDEM_ERR_INTERNAL, "no embedded kernel file kernels/" + std::string(name));
}

program_cache::program_cache(cl_context ctx, const device_info& dev)
    : ctx_(ctx), dev_(dev), dir_(default_cache_dir()) {}

cl_program program_cache::get(const std::string& file, const std::string& defines) {
    const auto key = std::make_pair(file, defines);
    if (auto it = programs_.find(key); it != programs_.end()) return it->second.get();
    std::string source(find_kernel_source("common.cl"));
    source += "\n";
    for (const auto& h : k_file_headers) {
        if (file != h.file) continue;
        source += find_kernel_source(h.header);
        source += "\n";
    }
    source += find_kernel_source(file);
    auto prog = build(file, source, defines);
    return programs_.emplace(key, std::move(prog)).first->second.get();
}

cl_kernel program_cache::kernel(const std::string& file, const std::string& name, const std::string& defines) {
    const std::string key = file + "\n" + defines + "\n" + name;
    if (auto it = kernels_.find(key); it != kernels_.end()) return it->second.get();
    cl_program prog = get(file, defines);
    cl_int st = CL_SUCCESS;
    kernel_handle k(clCreateKernel(prog, name.c_str(), &st));
    check(st, ("clCreateKernel " + name + " from kernels/" + file).c_str());
    return kernels_.emplace(key, std::move(k)).first->second.get();
}

program_handle program_cache::build_text(const std::string& file, const std::string& source,
                                         const std::string& defines) {
    std::string text(find_kernel_source("common.cl"));
    text += "\n#line 1 \"kernels/" + file + "\"\n" + source;
    return build(file, text, defines);
}

program_handle program_cache::build(const std::string& file, const std::string& source_in, const std::string& defines) {
    const bool forced = kernel_failure_forced(file);  // an #error through the driver's real build path
    const std::string source = forced ? source_in + "\n#error \"compile failure forced by TANDEM_FAIL_KERNELS\"\n" : source_in;
    // Never -cl-fast-relaxed-math / -cl-finite-math-only: masks and the online softmax rely on -INFINITY.
    const std::string options = "-cl-std=CL1.2 " + defines;
    uint64_t key = fnv1a(source, 1469598103934665603ull);
    for (const std::string* s :
         std::initializer_list<const std::string*>{&options, &dev_.platform_name, &dev_.platform_version, &dev_.name,
                                                   &dev_.driver_version, &dev_.device_version})
        key = fnv1a(*s, key);
    const std::filesystem::path path = dir_.empty() ? dir_ : dir_ / (hex(key) + ".clbin");
    if (!path.empty() && !forced) {
        if (auto prog = load_binary(path, key, options)) {
            ++stats_.loaded_from_disk;
            log().debug("kernels/{} [{}]: loaded from {}", file, defines, path.string());
            return prog;
        }
    }
    cl_int st = CL_SUCCESS;
    const char* text = source.c_str();
    const size_t len = source.size();
    program_handle prog(clCreateProgramWithSource(ctx_, 1, &text, &len, &st));
    check(st, "clCreateProgramWithSource");
    cl_device_id dev = dev_.id;
    st = clBuildProgram(prog.get(), 1, &dev, options.c_str(), nullptr, nullptr);
    if (st != CL_SUCCESS) {
        const std::string log_text = build_log(prog.get(), dev);
        const std::string where = first_location(log_text);
        throw error(TANDEM_ERR_BACKEND, "OpenCL: building kernels/" + file + " failed (" + status_name(st) + ")" +
                                            (where.empty() ? "" : " at " + where) + " with options '" + options +
                                            "' on " + dev_.name + "; build log:\n" + log_text);
    }
    ++stats_.built_from_source;
    log().debug("kernels/{} [{}]: built from source", file, defines);
    if (!path.empty()) store_binary(prog.get(), path, key);
    return prog;
}

program_handle program_cache::load_binary(const std::filesystem::path& path, uint64_t key, const std::string& options) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {};  // a plain miss
    char magic[8];
    uint64_t head[3];  // key, payload size, payload hash
    std::vector<unsigned char> bin;
    bool ok = bool(in.read(magic, sizeof magic)) && std::memcmp(magic, k_magic, sizeof magic) == 0 &&
              bool(in.read(reinterpret_cast<char*>(head), sizeof head)) && head[0] == key && head[1] > 0 &&
              head[1] < (uint64_t(1) << 31);
    if (ok) {
        bin.resize(size_t(head[1]));
        ok = bool(in.read(reinterpret_cast<char*>(bin.data()), std::streamsize(bin.size()))) &&
             in.peek() == std::char_traits<char>::eof() && fnv1a(bin.data(), bin.size()) == head[2];
    }
    program_handle prog;
    if (ok) {
        cl_int st = CL_SUCCESS, bin_st = CL_SUCCESS;
        const unsigned char* p = bin.data();
        const size_t n = bin.size();
        cl_device_id dev = dev_.id;
        prog = program_handle(clCreateProgramWithBinary(ctx_, 1, &dev, &n, &p, &bin_st, &st));
        ok = st == CL_SUCCESS && bin_st == CL_SUCCESS &&
             clBuildProgram(prog.get(), 1, &dev, options.c_str(), nullptr, nullptr) == CL_SUCCESS;
    }
    if (!ok) {
        ++stats_.disk_rejected;
        log().debug("program cache entry {} is corrupt or was refused by the driver; rebuilding", path.string());
        return {};
    }
    return prog;
}

void program_cache::store_binary(cl_program prog, const std::filesystem::path& path, uint64_t key) {
    size_t n = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, nullptr) != CL_SUCCESS || n == 0) return;
    std::vector<unsigned char> bin(n);
    unsigned char* p = bin.data();
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof p, &p, nullptr) != CL_SUCCESS) return;
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    // Unique temporary name, then an atomic rename: concurrent writers and readers never see half a file.
    static std::atomic<unsigned> counter{0};
    const auto tmp = path.parent_path() / (path.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                                           std::to_string(counter++));
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        const uint64_t head[3] = {key, uint64_t(n), fnv1a(bin.data(), n)};
        out.write(k_magic, sizeof k_magic);
        out.write(reinterpret_cast<const char*>(head), sizeof head);
        out.write(reinterpret_cast<const char*>(bin.data()), std::streamsize(n));
        if (!out.flush()) {
            log().debug("cannot write the program cache entry {}; continuing without it", tmp.string());
            out.close();
            std::filesystem::remove(tmp, ec);
            return;
        }
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        log().debug("cannot store the program cache entry {}: {}", path.string(), ec.message());
        std::filesystem::remove(tmp, ec);
    }
}

}  // namespace tandem::opencl
