// Printing figures as an aligned table, CSV or JSON: every `qaqkv`
// subcommand that prints figures takes `--format table|csv|json`.
#ifndef QAQKV_TOOLS_INTERNAL_REPORT_H_
#define QAQKV_TOOLS_INTERNAL_REPORT_H_

#include <cstdio>
#include <string>
#include <variant>
#include <vector>

namespace qaqkv::tools {

enum class Format { kTable, kCsv, kJson };
bool ParseFormat(const std::string& text, Format* out);

// One cell: text, or a number printed with `digits` significant decimals.
struct Cell {
  std::variant<std::string, double, int64_t> value;
  int digits = 4;
};

class Report {
 public:
  explicit Report(std::vector<std::string> columns) : columns_(std::move(columns)) {}
  void Add(std::vector<Cell> row) { rows_.push_back(std::move(row)); }
  // JSON is a list of objects keyed by column name.
  void Print(Format format, FILE* out = stdout) const;

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<Cell>> rows_;
};

// The p-quantile (0..1) of `values`, nearest rank; 0 for none.
double Percentile(std::vector<double> values, double p);

// A progress bar on stderr, drawn only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string label);
  ~Progress();
  void Update(int64_t done, int64_t total);

 private:
  std::string label_;
  bool tty_;
  bool drawn_ = false;
};

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_INTERNAL_REPORT_H_
