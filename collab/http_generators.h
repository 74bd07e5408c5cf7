// The two text generators behind the HTTP API: the edge's collaboration modes (edge_generator) and the
// cloud's target-only decoding, interleaved with the verification service's batched passes (target_generator).
#pragma once

#include "collab/edge.h"
#include "collab/http_api.h"
#include "collab/server.h"
#include "engine/model.h"

namespace tandem::collab {

// Streams verified tokens at once and holds unverified ones (outage fallback, routing) until the cloud
// confirms them or the generation ends, so that a streamed response never has to take text back.
class edge_generator final : public text_generator {
   public:
    edge_generator(const model& m, const edge_config& cfg, std::string name);
    const tokenizer& tok() const override { return m_.tokenizer(); }
    std::string model_name() const override { return name_; }
    int64_t context_length() const override;
    std::string chat_template() const override;
    gen_stats generate(const gen_request& r, const std::function<bool(int32_t, bool)>& on_token) override;

   private:
    const model& m_;
    edge_config cfg_;
    std::string name_;
};

class target_generator final : public text_generator {
   public:
    // server may be null (no verification service in this process).
    target_generator(const model& m, collab_server* server, std::string name, int64_t ctx);
    const tokenizer& tok() const override { return m_.tokenizer(); }
    std::string model_name() const override { return name_; }
    int64_t context_length() const override { return ctx_; }
    std::string chat_template() const override;
    gen_stats generate(const gen_request& r, const std::function<bool(int32_t, bool)>& on_token) override;

   private:
    const model& m_;
    collab_server* server_;
    std::string name_;
    int64_t ctx_;
};

// tokenizer.chat_template from the model's GGUF metadata, or "".
std::string gguf_chat_template(const model& m);

}  // namespace tandem::collab
