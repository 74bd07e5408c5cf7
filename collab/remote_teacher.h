// A distillation teacher on the network: the top-k targets of a training batch fetched from a `tandem serve`
// (rpc TopK) instead of computed by a local model. The batch is cut into requests within the server's limits
// (learned from a probe when connecting); a call that finds the server unreachable (UNAVAILABLE, or past its
// deadline) is retried with exponential back-off, and after the last attempt the fine-tuning stops with an error
// naming the server (its checkpoints keep the progress). Every reply is validated before it becomes a target.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/distill.h"
#include "engine/tandem_train.h"

namespace tandem::collab {

struct remote_teacher_config {
    std::string address = "127.0.0.1:50051";
    std::string token;   // bearer token ("" = none)
    std::string tls_ca;  // PEM file of the CA (or self-signed certificate) to trust; "" = plaintext
    std::chrono::milliseconds timeout{120000};  // deadline of each call
    int32_t attempts = 8;  // tries per call while the server is unreachable (about 24 s of back-off in all)
    std::chrono::milliseconds backoff_initial{250};  // wait before the first retry, doubled after each
    std::chrono::milliseconds backoff_max{8000};
    int32_t max_message_bytes = 64 << 20;  // what this side accepts; the server's own limit is usually smaller
};

struct remote_teacher_counters {
    uint64_t calls = 0;    // TopK calls answered (the probe included)
    uint64_t retries = 0;  // attempts repeated after UNAVAILABLE / DEADLINE_EXCEEDED
    uint64_t bytes_sent = 0, bytes_received = 0;
};

class remote_teacher final : public teacher {
 public:
    // Connects and probes the server with the student's vocabulary (n_vocab tokens, tokenizer fingerprint).
    // Throws tandem::error: TANDEM_ERR_IO if the server stays unreachable, TANDEM_ERR_INVALID_ARGUMENT if it
    // refuses the call (a bad token; another vocabulary, the message naming both fingerprints).
    remote_teacher(const remote_teacher_config& cfg, int32_t n_vocab, uint64_t vocab_fingerprint);
    ~remote_teacher() override;

    int32_t n_vocab() const override;
    uint64_t vocab_fingerprint() const override;
    // Throws tandem::error as the constructor, and TANDEM_ERR_FORMAT for a malformed reply.
    void top_k(const train_batch& b, int32_t k, std::vector<int32_t>& ids, std::vector<float>& p) override;

    const remote_teacher_counters& counters() const;

    struct impl;

 private:
    std::unique_ptr<impl> p_;
};

// A remote teacher in the C API's form (tandem_teacher of engine/tandem_train.h), for tandem_finetune: bind()
// connects with the student's vocabulary, top_k() fetches a batch; errors become the status and message.
struct remote_teacher_binding {
    remote_teacher_config cfg;
    std::unique_ptr<remote_teacher> teacher;  // made by bind()
};
// The callbacks with `b` as their user pointer; b must outlive the fine-tuning call.
tandem_teacher c_teacher(remote_teacher_binding& b);

}  // namespace tandem::collab
