#include "tools/internal/report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace qaqkv::tools {

bool ParseFormat(const std::string& text, Format* out) {
  if (text == "table") *out = Format::kTable;
  else if (text == "csv") *out = Format::kCsv;
  else if (text == "json") *out = Format::kJson;
  else return false;
  return true;
}

namespace {

std::string Text(const Cell& c) {
  if (const auto* s = std::get_if<std::string>(&c.value)) return *s;
  if (const auto* i = std::get_if<int64_t>(&c.value)) return absl::StrFormat("%d", *i);
  const double d = std::get<double>(c.value);
  if (!std::isfinite(d)) return "nan";
  return absl::StrFormat("%.*f", c.digits, d);
}

std::string CsvEscape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

}  // namespace

void Report::Print(Format format, FILE* out) const {
  if (format == Format::kJson) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& row : rows_) {
      nlohmann::json obj = nlohmann::json::object();
      for (size_t i = 0; i < columns_.size() && i < row.size(); ++i) {
        const Cell& c = row[i];
        if (const auto* s = std::get_if<std::string>(&c.value)) obj[columns_[i]] = *s;
        else if (const auto* n = std::get_if<int64_t>(&c.value)) obj[columns_[i]] = *n;
        else {
          const double d = std::get<double>(c.value);
          if (std::isfinite(d)) obj[columns_[i]] = d;
          else obj[columns_[i]] = nullptr;
        }
      }
      list.push_back(std::move(obj));
    }
    std::fprintf(out, "%s\n", list.dump(2).c_str());
    return;
  }
  if (format == Format::kCsv) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      std::fprintf(out, "%s%s", i ? "," : "", columns_[i].c_str());
    }
    std::fprintf(out, "\n");
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) {
        std::fprintf(out, "%s%s", i ? "," : "", CsvEscape(Text(row[i])).c_str());
      }
      std::fprintf(out, "\n");
    }
    return;
  }
  std::vector<size_t> width(columns_.size());
  for (size_t i = 0; i < columns_.size(); ++i) width[i] = columns_[i].size();
  for (const auto& row : rows_)
    for (size_t i = 0; i < row.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], Text(row[i]).size());
  auto line = [&](auto cell_text) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      const std::string t = cell_text(i);
      // Text left-aligned in the first column, numbers right-aligned.
      if (i == 0) std::fprintf(out, "%-*s", static_cast<int>(width[i]), t.c_str());
      else std::fprintf(out, "  %*s", static_cast<int>(width[i]), t.c_str());
    }
    std::fprintf(out, "\n");
  };
  line([&](size_t i) { return columns_[i]; });
  line([&](size_t i) { return std::string(width[i], '-'); });
  for (const auto& row : rows_) line([&](size_t i) { return i < row.size() ? Text(row[i]) : ""; });
}

Progress::Progress(std::string label) : label_(std::move(label)), tty_(isatty(STDERR_FILENO)) {}

Progress::~Progress() {
  if (drawn_) std::fprintf(stderr, "\n");
}

void Progress::Update(int64_t done, int64_t total) {
  if (!tty_ || total <= 0) return;
  constexpr int kWidth = 40;
  const int filled = static_cast<int>(kWidth * done / total);
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total));
  std::fflush(stderr);
  drawn_ = true;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * (values.size() - 1) + 0.5))];
}

}  // namespace qaqkv::tools
