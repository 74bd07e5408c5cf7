// Benchmark output: tables printed to the terminal row by row as they are measured (the progress display of a
// long run), kept for --out FILE: JSON (every table plus the run's metadata, what bench/plot.py reads) or CSV
// (one file per table: FILE itself for a single table, else FILE's stem + "." + table name + ".csv").
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tandem::bench {

struct column {
    std::string key;    // JSON / CSV name, e.g. "gbps_median"
    std::string label;  // terminal header, e.g. "GB/s med"
    int width = 10;     // terminal width
    int precision = 2;  // digits after the point for floating-point cells
};

// Cells are JSON values: numbers, strings, or null (printed "-").
class table {
 public:
    table(std::string name, std::string title, std::vector<column> columns);
    // Appends a row (one cell per column) and prints it, after the title and header on the first row.
    void add(std::vector<nlohmann::json> cells);
    // Prints a note under the table (kept in the JSON as "notes").
    void note(const std::string& text);

    const std::string& name() const { return name_; }
    nlohmann::json to_json() const;
    std::string to_csv() const;

 private:
    void print_header();
    std::string name_, title_;
    std::vector<column> columns_;
    std::vector<std::vector<nlohmann::json>> rows_;
    std::vector<std::string> notes_;
    bool header_printed_ = false;
};

class report {
 public:
    // meta starts with the command, the version, the machine (machine.h) and the time of the run.
    explicit report(const std::string& command);
    nlohmann::json& meta() { return meta_; }
    // Records backend::describe() (device, driver, kernel variants) under meta "backends" and prints it.
    void add_backend(const std::string& name, const std::string& description);
    // The table stays valid for the report's life.
    table& add_table(std::string name, std::string title, std::vector<column> columns);
    // Writes JSON (path ends in .json) or CSV (.csv) and says so on stderr; "" writes nothing. Throws
    // tandem::error (TANDEM_ERR_IO / INVALID_ARGUMENT) when the file cannot be written or has another extension.
    void write(const std::string& path) const;

 private:
    nlohmann::json meta_;
    std::vector<std::unique_ptr<table>> tables_;
};

// Adds -o,--out FILE to a subcommand.
void add_out_option(CLI::App* cmd, std::string& path);

}  // namespace tandem::bench
