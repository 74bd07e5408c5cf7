// An OpenAI-compatible HTTP API (cpp-httplib + nlohmann-json) in front of a text generator: on the edge the
// collaboration modes (tandem edge --http), on the cloud target-only decoding (tandem serve --http).
//
// Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream: server-sent events),
// GET /health (no key needed), GET /metrics (Prometheus text). With API keys configured every other endpoint
// needs `Authorization: Bearer <key>`. Errors are OpenAI-style bodies {"error": {"message", "type", "param",
// "code"}} with 400 (malformed JSON, unknown or out-of-range fields), 401 (missing or wrong key), 404, 500.
// Responses carry Tandem's statistics in the extension field "tandem" (documented in the README).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace httplib {
class Server;
}

namespace tandem::collab {

struct gen_request {
    std::vector<int32_t> prompt;
    int32_t max_tokens = 16;
    sampling_params sampling;
};

struct gen_stats {
    std::string mode;              // "spec", "cloud", "target", ...
    uint64_t round_trips = 0;      // verify round trips (edge)
    uint64_t unverified_tokens = 0;
    uint64_t retracted = 0;
    double tokens_per_target_pass = 0;
};

// What the HTTP API drives. generate() calls on_token for each output token in order (verified or not) and
// stops when it returns false; it returns its statistics. Calls are serialized by the API.
class text_generator {
   public:
    virtual ~text_generator() = default;
    virtual const tokenizer& tok() const = 0;
    virtual std::string model_name() const = 0;
    virtual int64_t context_length() const = 0;
    virtual std::string chat_template() const = 0;  // tokenizer.chat_template from GGUF, or ""
    virtual gen_stats generate(const gen_request& r, const std::function<bool(int32_t token, bool verified)>& on_token) = 0;
};

struct http_config {
    std::string address = "127.0.0.1:8080";  // port 0 = any free port
    std::vector<std::string> api_keys;        // empty = no key needed
    int32_t max_tokens_limit = 4096;          // larger max_tokens -> 400
    int threads = 8;                          // HTTP worker threads
};

// The chat template: recognises Llama-3 (<|start_header_id|>), ChatML (<|im_start|>), Llama-2 ([INST]) and
// Zephyr (<|user|>) templates in
// the GGUF's Jinja source and renders them natively; anything else (or none) gets a plain template,
// "System: ...\nUser: ...\nAssistant:". messages: (role, content) pairs.
std::string apply_chat_template(const std::string& jinja, const std::vector<std::pair<std::string, std::string>>& messages);

class http_api {
   public:
    http_api(text_generator& gen, const http_config& cfg);
    ~http_api();  // stop()
    http_api(const http_api&) = delete;
    http_api& operator=(const http_api&) = delete;

    // Binds and serves in a background thread; throws tandem::error if the address cannot be bound.
    void start();
    int port() const { return port_; }
    void stop();

   private:
    void routes();

    text_generator& gen_;
    http_config cfg_;
    std::unique_ptr<httplib::Server> srv_;
    std::thread thread_;
    int port_ = 0;
    std::mutex gen_mu_;  // one generation at a time
    std::atomic<uint64_t> requests_{0}, errors_{0}, tokens_{0}, unverified_{0}, prompt_tokens_{0};
    std::atomic<uint64_t> micros_{0};
};

}  // namespace tandem::collab
