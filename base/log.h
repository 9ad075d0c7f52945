// The structured logger of every qaqkv binary and library: one logfmt line
// per event on stderr (or a sink the application installs),
//
//   ts=2026-12-06T13:39:43.123Z level=warn msg="maintenance pass failed" component=storage error="..."
//
// so log collectors parse it without a pattern. A line is written with one
// call, so lines of concurrent threads never interleave.
//
// Thread-safety: every function may be called from any thread.
#ifndef QAQKV_BASE_LOG_H_
#define QAQKV_BASE_LOG_H_

#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace qaqkv::base {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// One key=value pair of a line. Values are anything absl::StrCat takes.
struct LogField {
  LogField(std::string_view k, const absl::AlphaNum& v) : key(k), value(v.Piece()) {}
  std::string_view key;
  std::string value;
};

// Writes a line unless `level` is below the minimum level.
void Log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {});
inline void LogInfo(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarning(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarning, msg, fields);
}
inline void LogError(std::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

// Lines below `level` are dropped. Default: kInfo, or the QAQKV_LOG_LEVEL
// environment variable (debug, info, warn, error) read at the first line.
void SetMinLogLevel(LogLevel level);
bool LogLevelEnabled(LogLevel level);

// Where whole lines (newline included) go; an empty function restores
// stderr. An application embedding the client routes qaqkv's lines into
// its own logs this way. The sink may be called from several threads at
// once.
using LogSink = std::function<void(std::string_view line)>;
void SetLogSink(LogSink sink);

// The line Log writes, for tests and sinks that reformat: values with a
// space, '=', a quote or a control byte are quoted and escaped.
std::string FormatLogLine(absl::Time time, LogLevel level, std::string_view msg,
                          std::initializer_list<LogField> fields);

// "debug", "info", "warn", "error".
std::string_view LogLevelName(LogLevel level);

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_LOG_H_
