// `tandem info` report of a GGUF file; reads metadata and tensor infos only (no weights are touched).
#include "engine/gguf_report.h"

#include <cstdio>
#include <iomanip>
#include <sstream>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace tandem {

std::string gguf_report(const std::string& path) {
    const gguf_file f = gguf_file::open(path);
    std::ostringstream s;
    s << "file: " << path << "\n";
    s << "GGUF version " << f.version() << ", " << f.file_size() << " bytes, alignment " << f.alignment() << ", "
      << f.metadata().size() << " metadata keys, " << f.tensors().size() << " tensors\n\nmetadata:\n";
    for (const auto& [key, v] : f.metadata()) {
        s << "  " << std::left << std::setw(44) << key << " " << std::setw(7) << gguf_type_name(v.type) << " "
          << v.to_string() << "\n";
    }
    s << "\ntensors:\n";
    size_t total = 0;
    for (const auto& t : f.tensors()) {
        std::ostringstream shape;
        shape << "{";
        for (size_t i = 0; i < t.ne.size(); ++i) shape << (i ? ", " : "") << t.ne[i];
        shape << "}";
        s << "  " << std::left << std::setw(32) << t.name << " " << std::setw(6) << dtype_name(t.type) << " "
          << std::setw(16) << shape.str() << " " << std::right << std::setw(12) << t.nbytes << " bytes\n";
        total += t.nbytes;
    }
    s << "  total " << total << " bytes of tensor data\n";
    try {
        const tokenizer tok = tokenizer::from_gguf(f);
        char hex[32];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(tok.fingerprint()));
        s << "\nvocabulary: " << tok.n_vocab() << " tokens, bos " << tok.bos() << ", eos " << tok.eos()
          << ", fingerprint " << hex << "\n";
    } catch (const error& e) {
        s << "\nvocabulary: not loadable: " << e.what() << "\n";
    }
    return s.str();
}

}  // namespace tandem
