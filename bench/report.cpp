// Terminal tables and CSV / JSON files for benchmark results, see report.h.
#include "bench/report.h"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "bench/machine.h"
#include "engine/error.h"

namespace tandem::bench {

namespace {

std::string format_cell(const nlohmann::json& v, int precision) {
    char buf[64];
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    std::snprintf(buf, sizeof buf, "%.*f", precision, v.get<double>());
    return buf;
}

std::string csv_field(const nlohmann::json& v) {
    if (v.is_null()) return "";
    if (v.is_string()) {
        std::string s = v.get<std::string>(), out = "\"";
        for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
        return out + "\"";
    }
    return v.dump();  // numbers at full precision
}

}  // namespace

table::table(std::string name, std::string title, std::vector<column> columns)
    : name_(std::move(name)), title_(std::move(title)), columns_(std::move(columns)) {}

void table::print_header() {
    std::printf("\n%s\n", title_.c_str());
    std::string line;
    for (size_t i = 0; i < columns_.size(); ++i) {
        const auto& c = columns_[i];
        char buf[128];
        std::snprintf(buf, sizeof buf, i == 0 ? "%-*s" : " %*s", c.width, c.label.c_str());
        line += buf;
    }
    std::printf("%s\n%s\n", line.c_str(), std::string(line.size(), '-').c_str());
    header_printed_ = true;
}

void table::add(std::vector<nlohmann::json> cells) {
    TANDEM_ASSERT(cells.size() == columns_.size());
    if (!header_printed_) print_header();
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i) {
        const auto& c = columns_[i];
        char buf[256];
        const std::string s = format_cell(cells[i], c.precision);
        std::snprintf(buf, sizeof buf, i == 0 ? "%-*s" : " %*s", c.width, s.c_str());
        line += buf;
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    rows_.push_back(std::move(cells));
}

void table::note(const std::string& text) {
    if (!header_printed_) print_header();
    std::printf("  %s\n", text.c_str());
    std::fflush(stdout);
    notes_.push_back(text);
}

nlohmann::json table::to_json() const {
    nlohmann::json j;
    j["title"] = title_;
    j["columns"] = nlohmann::json::array();
    for (const auto& c : columns_) j["columns"].push_back({{"key", c.key}, {"label", c.label}});
    j["rows"] = nlohmann::json::array();
    for (const auto& r : rows_) {
        nlohmann::json o = nlohmann::json::object();
        for (size_t i = 0; i < r.size(); ++i) o[columns_[i].key] = r[i];
        j["rows"].push_back(std::move(o));
    }
    j["notes"] = notes_;
    return j;
}

std::string table::to_csv() const {
    std::string out;
    auto add = [&](size_t i, const std::string& field) {
        if (i) out += ',';
        out += field;
    };
    for (size_t i = 0; i < columns_.size(); ++i) add(i, columns_[i].key);
    out += '\n';
    for (const auto& r : rows_) {
        for (size_t i = 0; i < r.size(); ++i) add(i, csv_field(r[i]));
        out += '\n';
    }
    return out;
}

report::report(const std::string& command) {
    meta_["command"] = command;
    meta_["version"] = tandem_version();
    meta_["machine"] = machine_info();
    const std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    meta_["time_utc"] = buf;
}

void report::add_backend(const std::string& name, const std::string& description) {
    meta_["backends"][name] = description;
    std::printf("%s\n", description.c_str());
}

table& report::add_table(std::string name, std::string title, std::vector<column> columns) {
    tables_.push_back(std::make_unique<table>(std::move(name), std::move(title), std::move(columns)));
    return *tables_.back();
}

void report::write(const std::string& path) const {
    if (path.empty()) return;
    namespace fs = std::filesystem;
    const fs::path p(path);
    auto save = [](const fs::path& file, const std::string& text) {
        std::ofstream out(file, std::ios::binary);
        out << text;
        out.close();
        if (!out) throw error(TANDEM_ERR_IO, "cannot write " + file.string());
        std::fprintf(stderr, "tandem-bench: wrote %s\n", file.string().c_str());
    };
    if (p.extension() == ".json") {
        nlohmann::json j;
        j["meta"] = meta_;
        j["meta"]["load_average_end"] = load_average();
        j["tables"] = nlohmann::json::object();
        for (const auto& t : tables_) j["tables"][t->name()] = t->to_json();
        save(p, j.dump(2) + "\n");
    } else if (p.extension() == ".csv") {
        for (const auto& t : tables_) {
            fs::path file = p;
            if (tables_.size() > 1) file.replace_filename(p.stem().string() + "." + t->name() + ".csv");
            save(file, t->to_csv());
        }
    } else {
        throw error(TANDEM_ERR_INVALID_ARGUMENT, "--out " + path + ": give a .json or .csv file");
    }
}

void add_out_option(CLI::App* cmd, std::string& path) {
    cmd->add_option("-o,--out", path,
                    "Write the results to FILE: .json (all tables and the run's metadata; bench/plot.py reads it) "
                    "or .csv (one file per table: FILE's stem + .TABLE.csv when there are several)");
}

}  // namespace tandem::bench
