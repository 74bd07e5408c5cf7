// Thin move-only RAII owners for OpenCL objects, and the one place driver status codes become exceptions.
// Every clCreate* result goes straight into a handle; destructors release and never throw.
#pragma once

#include <CL/cl.h>

#include <string>
#include <utility>

namespace tandem::opencl {

// The symbolic name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or "CL error <n>".
std::string status_name(cl_int status);
// Throws tandem::error(TANDEM_ERR_BACKEND) "OpenCL: <what>: <status name>" when status != CL_SUCCESS.
void check(cl_int status, const char* what);

template <typename T, cl_int (*Release)(T)>
class handle {
 public:
    handle() = default;
    explicit handle(T h) : h_(h) {}
    ~handle() { reset(); }
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;
    handle(handle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    handle& operator=(handle&& o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    T get() const { return h_; }
    explicit operator bool() const { return h_ != nullptr; }
    void reset() {
        if (h_) Release(h_);  // a failing release cannot be acted on in a destructor
        h_ = nullptr;
    }

 private:
    T h_ = nullptr;
};

using context_handle = handle<cl_context, clReleaseContext>;
using queue_handle = handle<cl_command_queue, clReleaseCommandQueue>;
using mem_handle = handle<cl_mem, clReleaseMemObject>;
using program_handle = handle<cl_program, clReleaseProgram>;
using kernel_handle = handle<cl_kernel, clReleaseKernel>;
using event_handle = handle<cl_event, clReleaseEvent>;

}  // namespace tandem::opencl
