// The OpenAI-compatible HTTP API; see http_api.h.
#include "collab/http_api.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "collab/log.h"
#include "engine/error.h"

namespace tandem::collab {

namespace {

using json = nlohmann::json;

// A request the API refuses: HTTP status + OpenAI error type and message.
struct api_error {
    api_error(int s, std::string m, std::string t = "invalid_request_error", std::string p = "", std::string c = "")
        : status(s), message(std::move(m)), type(std::move(t)), param(std::move(p)), code(std::move(c)) {}
    int status;
    std::string message, type, param, code;
};

std::string error_body(const api_error& e) {
    json j = {{"error", {{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                         {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
    return j.dump();
}

std::string random_id(const char* prefix) {
    static std::mutex mu;
    static std::mt19937_64 gen{std::random_device{}()};
    std::lock_guard lock(mu);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s-%016llx", prefix, static_cast<unsigned long long>(gen()));
    return buf;
}

int64_t unix_time() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The parsed, validated request of either endpoint.
struct completion_call {
    bool chat = false;
    bool stream = false;
    std::string prompt_text;
    int32_t max_tokens = 16;
    sampling_params sp;
    std::vector<std::string> stop;
};

[[noreturn]] void bad(const std::string& msg, const std::string& param = "") { throw api_error{400, msg, "invalid_request_error", param}; }

double number(const json& j, const char* key, double lo, double hi) {
    if (!j.is_number()) bad(std::string("'") + key + "' must be a number", key);
    const double v = j.get<double>();
    if (!(v >= lo && v <= hi)) bad(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key);
    return v;
}

completion_call parse_call(const std::string& body, bool chat, const text_generator& gen, int32_t max_limit) {
    json j;
    try {
        j = json::parse(body);
    } catch (const json::parse_error& e) {
        bad(std::string("invalid JSON in the request body: ") + e.what());
    }
    if (!j.is_object()) bad("the request body must be a JSON object");
    static const std::set<std::string> common = {"model", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                                                 "stream", "stop", "seed", "n", "user", "repeat_penalty",
                                                 "presence_penalty", "frequency_penalty", "stream_options",
                                                 "max_completion_tokens"};
    completion_call c;
    c.chat = chat;
    c.sp.temperature = 1.f;  // OpenAI's default
    c.sp.top_k = 0;
    c.sp.top_p = 1.f;
    c.sp.min_p = 0.f;
    c.sp.seed = std::random_device{}();
    for (const auto& [key, value] : j.items()) {
        if (!common.count(key) && key != (chat ? "messages" : "prompt")) {
            bad("Unrecognized request argument supplied: " + key, key);
        }
    }
    if (chat) {
        if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) bad("'messages' must be a non-empty array", "messages");
        std::vector<std::pair<std::string, std::string>> msgs;
        for (const auto& m : j["messages"]) {
            if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bad("each message needs a string 'role'", "messages");
            const std::string role = m["role"];
            if (role != "system" && role != "user" && role != "assistant" && role != "developer") bad("unknown message role '" + role + "'", "messages");
            if (!m.contains("content") || !m["content"].is_string()) bad("each message needs a string 'content'", "messages");
            msgs.emplace_back(role == "developer" ? "system" : role, m["content"].get<std::string>());
        }
        c.prompt_text = apply_chat_template(gen.chat_template(), msgs);
    } else {
        if (!j.contains("prompt")) bad("'prompt' is required", "prompt");
        const json& p = j["prompt"];
        if (p.is_string()) c.prompt_text = p.get<std::string>();
        else if (p.is_array() && p.size() == 1 && p[0].is_string()) c.prompt_text = p[0].get<std::string>();
        else bad("'prompt' must be a string (or an array of one string)", "prompt");
    }
    if (j.contains("model") && !j["model"].is_string()) bad("'model' must be a string", "model");
    if (j.contains("n") && !(j["n"].is_number_integer() && j["n"].get<int64_t>() == 1)) bad("only n = 1 is supported", "n");
    const char* mt = j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (j.contains(mt) && !j[mt].is_null()) {
        if (!j[mt].is_number_integer()) bad(std::string("'") + mt + "' must be an integer", mt);
        const int64_t v = j[mt].get<int64_t>();
        if (v < 1 || v > max_limit) bad(std::string("'") + mt + "' must be in [1, " + std::to_string(max_limit) + "], got " + std::to_string(v), mt);
        c.max_tokens = int32_t(v);
    } else {
        c.max_tokens = std::min<int32_t>(chat ? max_limit : 16, max_limit);
    }
    if (j.contains("temperature") && !j["temperature"].is_null()) c.sp.temperature = float(number(j["temperature"], "temperature", 0, 2));
    if (j.contains("top_p") && !j["top_p"].is_null()) c.sp.top_p = float(number(j["top_p"], "top_p", 0, 1));
    if (j.contains("min_p") && !j["min_p"].is_null()) c.sp.min_p = float(number(j["min_p"], "min_p", 0, 1));
    if (j.contains("top_k") && !j["top_k"].is_null()) c.sp.top_k = int32_t(number(j["top_k"], "top_k", 0, 1 << 20));
    if (j.contains("repeat_penalty") && !j["repeat_penalty"].is_null()) c.sp.repeat_penalty = float(number(j["repeat_penalty"], "repeat_penalty", 0, 10));
    for (const char* k : {"presence_penalty", "frequency_penalty"})
        if (j.contains(k) && !j[k].is_null() && number(j[k], k, -2, 2) != 0.0) bad(std::string("'") + k + "' is not supported (use repeat_penalty)", k);
    if (j.contains("seed") && !j["seed"].is_null()) {
        if (!j["seed"].is_number_integer()) bad("'seed' must be an integer", "seed");
        c.sp.seed = uint64_t(j["seed"].get<int64_t>());
    }
    if (j.contains("stream") && !j["stream"].is_null()) {
        if (!j["stream"].is_boolean()) bad("'stream' must be a boolean", "stream");
        c.stream = j["stream"].get<bool>();
    }
    if (j.contains("stop") && !j["stop"].is_null()) {
        const json& s = j["stop"];
        if (s.is_string()) c.stop.push_back(s.get<std::string>());
        else if (s.is_array() && s.size() <= 4) {
            for (const auto& e : s) {
                if (!e.is_string()) bad("'stop' entries must be strings", "stop");
                c.stop.push_back(e.get<std::string>());
            }
        } else bad("'stop' must be a string or an array of up to 4 strings", "stop");
        for (const auto& s2 : c.stop)
            if (s2.empty()) bad("'stop' strings must not be empty", "stop");
    }
    return c;
}

}  // namespace

std::string apply_chat_template(const std::string& jinja, const std::vector<std::pair<std::string, std::string>>& messages) {
    std::string out;
    if (jinja.find("<|start_header_id|>") != std::string::npos) {  // Llama 3
        for (const auto& [role, content] : messages) out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content + "<|eot_id|>";
        return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    }
    if (jinja.find("<|im_start|>") != std::string::npos) {
        for (const auto& [role, content] : messages) out += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
        return out + "<|im_start|>assistant\n";
    }
    if (jinja.find("<|user|>") != std::string::npos) {
        for (const auto& [role, content] : messages) out += "<|" + role + "|>\n" + content + "</s>\n";
        return out + "<|assistant|>\n";
    }
    if (jinja.find("[INST]") != std::string::npos) {
        std::string system;
        for (const auto& [role, content] : messages) {
            if (role == "system") system = "<<SYS>>\n" + content + "\n<</SYS>>\n\n";
            else if (role == "user") out += "[INST] " + system + content + " [/INST]", system.clear();
            else out += " " + content + " ";
        }
        return out;
    }
    for (const auto& [role, content] : messages) {
        const std::string who = role == "system" ? "System" : role == "user" ? "User" : "Assistant";
        out += who + ": " + content + "\n";
    }
    return out + "Assistant:";
}

http_api::http_api(text_generator& gen, const http_config& cfg) : gen_(gen), cfg_(cfg), srv_(std::make_unique<httplib::Server>()) {
    routes();
}

http_api::~http_api() { stop(); }

void http_api::start() {
    const auto colon = cfg_.address.rfind(':');
    if (colon == std::string::npos) throw error(TANDEM_ERR_INVALID_ARGUMENT, "HTTP address must be HOST:PORT, got '" + cfg_.address + "'");
    const std::string host = cfg_.address.substr(0, colon);
    const int port = std::atoi(cfg_.address.c_str() + colon + 1);
    const int threads = std::max(cfg_.threads, 1);
    srv_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    port_ = port == 0 ? srv_->bind_to_any_port(host) : (srv_->bind_to_port(host, port) ? port : -1);
    if (port_ <= 0) throw error(TANDEM_ERR_IO, "cannot listen for HTTP on " + cfg_.address);
    thread_ = std::thread([this] { srv_->listen_after_bind(); });
    for (int i = 0; i < 500 && !srv_->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    log().info("OpenAI-compatible HTTP API on {}:{} ({})", host, port_, cfg_.api_keys.empty() ? "no API key" : "API key required");
}

void http_api::stop() {
    if (thread_.joinable()) {
        srv_->stop();
        thread_.join();
    }
}

void http_api::routes() {
    auto& s = *srv_;
    auto send_error = [this](httplib::Response& res, const api_error& e) {
        errors_.fetch_add(1);
        res.status = e.status;
        res.set_content(error_body(e), "application/json");
    };
    // Authentication for everything but /health.
    s.set_pre_routing_handler([this, send_error](const httplib::Request& req, httplib::Response& res) {
        requests_.fetch_add(1);
        if (cfg_.api_keys.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        const std::string h = req.get_header_value("Authorization");
        for (const auto& k : cfg_.api_keys)
            if (h == "Bearer " + k) return httplib::Server::HandlerResponse::Unhandled;
        send_error(res, {401, h.empty() ? "missing API key: send 'Authorization: Bearer <key>'" : "invalid API key",
                         "invalid_request_error", "", "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
    });
    s.set_exception_handler([send_error](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        try {
            std::rethrow_exception(ep);
        } catch (const api_error& e) {
            send_error(res, e);
        } catch (const std::exception& e) {
            send_error(res, {500, e.what(), "server_error"});
        } catch (...) {
            send_error(res, {500, "unknown error", "server_error"});
        }
    });
    s.set_error_handler([send_error](const httplib::Request& req, httplib::Response& res) {
        if (res.status == 404 && res.body.empty()) send_error(res, {404, "no such endpoint: " + req.method + " " + req.path, "invalid_request_error"});
    });
    s.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content(R"({"status":"ok"})", "application/json"); });
    s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
        json j = {{"object", "list"},
                  {"data", json::array({{{"id", gen_.model_name()}, {"object", "model"}, {"created", unix_time()}, {"owned_by", "tandem"}}})}};
        res.set_content(j.dump(), "application/json");
    });
    s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        std::string m;
        auto counter = [&](const char* name, const char* help, uint64_t v) {
            m += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " + std::to_string(v) + "\n";
        };
        counter("tandem_http_requests_total", "HTTP requests received.", requests_.load());
        counter("tandem_http_errors_total", "HTTP requests answered with an error.", errors_.load());
        counter("tandem_prompt_tokens_total", "Prompt tokens processed.", prompt_tokens_.load());
        counter("tandem_generated_tokens_total", "Tokens generated.", tokens_.load());
        counter("tandem_unverified_tokens_total", "Generated tokens the cloud did not verify.", unverified_.load());
        m += "# HELP tandem_generation_seconds_total Time spent generating.\n# TYPE tandem_generation_seconds_total counter\n";
        m += "tandem_generation_seconds_total " + std::to_string(double(micros_.load()) * 1e-6) + "\n";
        res.set_content(m, "text/plain; version=0.0.4");
    });
    auto completion = [this](bool chat) {
        return [this, chat](const httplib::Request& req, httplib::Response& res) {
            const completion_call c = parse_call(req.body, chat, gen_, cfg_.max_tokens_limit);
            gen_request g;
            g.prompt = gen_.tok().encode(c.prompt_text, true);
            g.sampling = c.sp;
            const int64_t room = gen_.context_length() - int64_t(g.prompt.size()) - 1;
            if (room < 1) bad("the prompt (" + std::to_string(g.prompt.size()) + " tokens) fills the context of " + std::to_string(gen_.context_length()), "prompt");
            g.max_tokens = int32_t(std::min<int64_t>(c.max_tokens, room));
            const std::string id = random_id(chat ? "chatcmpl" : "cmpl");
            const int64_t created = unix_time();
            const std::string object = chat ? "chat.completion" : "text_completion";
            // Runs the generation; emit(text) receives text that can no longer be cut by a stop string.
            auto run = [this, c, g](const std::function<bool(const std::string&)>& emit, std::string& finish, gen_stats& st,
                                    size_t& n_tokens) {
                std::lock_guard lock(gen_mu_);
                const auto t0 = std::chrono::steady_clock::now();
                std::string text;
                size_t sent = 0, hold = 0;
                for (const auto& s2 : c.stop) hold = std::max(hold, s2.size() - 1);
                int32_t prev = g.prompt.back();
                bool stopped = false, client_gone = false;
                const int32_t eos = gen_.tok().eos(), bos = gen_.tok().bos();
                st = gen_.generate(g, [&](int32_t t, bool verified) {
                    ++n_tokens;
                    unverified_.fetch_add(verified ? 0 : 1);
                    if (t == eos || t == bos) {
                        stopped = true;
                        return false;
                    }
                    text += gen_.tok().token_to_piece(prev, t);
                    prev = t;
                    for (const auto& s2 : c.stop) {
                        const size_t at = text.find(s2, sent > s2.size() ? sent - s2.size() : 0);
                        if (at != std::string::npos) {
                            text.resize(at);
                            stopped = true;
                        }
                    }
                    const size_t ready = stopped ? text.size() : (text.size() > hold ? text.size() - hold : 0);
                    if (ready > sent) {
                        if (!emit(text.substr(sent, ready - sent))) client_gone = true;
                        sent = ready;
                    }
                    return !stopped && !client_gone;
                });
                if (!stopped && text.size() > sent) emit(text.substr(sent));
                finish = stopped ? "stop" : "length";
                tokens_.fetch_add(n_tokens);
                prompt_tokens_.fetch_add(g.prompt.size());
                micros_.fetch_add(uint64_t(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count()));
            };
            auto tandem_stats = [](const gen_stats& st, size_t n) {
                return json{{"mode", st.mode},
                            {"tokens_per_target_pass", st.tokens_per_target_pass},
                            {"round_trips", st.round_trips},
                            {"unverified_tokens", st.unverified_tokens},
                            {"retracted_tokens", st.retracted},
                            {"completion_tokens", n}};
            };
            if (!c.stream) {
                std::string all, finish;
                gen_stats st;
                size_t n = 0;
                run([&](const std::string& piece) { all += piece; return true; }, finish, st, n);
                json choice = chat ? json{{"index", 0}, {"message", {{"role", "assistant"}, {"content", all}}}, {"finish_reason", finish}}
                                   : json{{"index", 0}, {"text", all}, {"logprobs", nullptr}, {"finish_reason", finish}};
                json j = {{"id", id}, {"object", object}, {"created", created}, {"model", gen_.model_name()},
                          {"choices", json::array({choice})},
                          {"usage", {{"prompt_tokens", g.prompt.size()}, {"completion_tokens", n}, {"total_tokens", g.prompt.size() + n}}},
                          {"tandem", tandem_stats(st, n)}};
                res.set_content(j.dump(), "application/json");
                return;
            }
            const std::string chunk_object = chat ? "chat.completion.chunk" : "text_completion";
            res.set_header("Cache-Control", "no-cache");
            res.set_chunked_content_provider("text/event-stream", [this, chat, id, created, chunk_object, run, tandem_stats,
                                                                   prompt_n = g.prompt.size()](size_t, httplib::DataSink& sink) {
                auto event = [&](const json& delta_or_text, const json& finish, const json& extra) {
                    json choice = chat ? json{{"index", 0}, {"delta", delta_or_text}, {"finish_reason", finish}}
                                       : json{{"index", 0}, {"text", delta_or_text}, {"logprobs", nullptr}, {"finish_reason", finish}};
                    json j = {{"id", id}, {"object", chunk_object}, {"created", created}, {"model", gen_.model_name()},
                              {"choices", json::array({choice})}};
                    for (const auto& [k, v] : extra.items()) j[k] = v;
                    const std::string line = "data: " + j.dump() + "\n\n";
                    return sink.write(line.data(), line.size());
                };
                if (chat) event(json{{"role", "assistant"}, {"content", ""}}, nullptr, json::object());
                std::string finish;
                gen_stats st;
                size_t n = 0;
                run([&](const std::string& piece) { return event(chat ? json{{"content", piece}} : json(piece), nullptr, json::object()); },
                    finish, st, n);
                event(chat ? json::object() : json(""), finish,
                      json{{"usage", {{"prompt_tokens", prompt_n}, {"completion_tokens", n}, {"total_tokens", prompt_n + n}}},
                           {"tandem", tandem_stats(st, n)}});
                const std::string done = "data: [DONE]\n\n";
                sink.write(done.data(), done.size());
                sink.done();
                return true;
            });
        };
    };
    s.Post("/v1/completions", completion(false));
    s.Post("/v1/chat/completions", completion(true));
}

}  // namespace tandem::collab
