#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>

#include "absl/time/clock.h"
#include "base/mutex.h"
#include "base/strings.h"

namespace qaqkv::base {
namespace {

// -1 until the first line reads QAQKV_LOG_LEVEL (or SetMinLogLevel runs).
std::atomic<int> g_min_level{-1};

struct SinkSlot {
  Mutex mu;
  std::shared_ptr<const LogSink> sink ABSL_GUARDED_BY(mu);
};
SinkSlot& Sink() {
  static SinkSlot slot;
  return slot;
}

int LevelFromEnvironment() {
  const char* env = std::getenv("QAQKV_LOG_LEVEL");
  const std::string_view v = env == nullptr ? "" : env;
  if (v == "debug") return static_cast<int>(LogLevel::kDebug);
  if (v == "warn" || v == "warning") return static_cast<int>(LogLevel::kWarning);
  if (v == "error") return static_cast<int>(LogLevel::kError);
  return static_cast<int>(LogLevel::kInfo);
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '=' || c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 ||
        c == 0x7f) {
      return true;
    }
  }
  return false;
}

void AppendValue(std::string& out, std::string_view v) {
  if (!NeedsQuotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, "\\x", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n <= 0) return;  // nowhere to report a failure to log
    s.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

void SetMinLogLevel(LogLevel level) {
  g_min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

bool LogLevelEnabled(LogLevel level) {
  int min = g_min_level.load(std::memory_order_relaxed);
  if (min < 0) {
    int expected = -1;
    g_min_level.compare_exchange_strong(expected, LevelFromEnvironment());
    min = g_min_level.load(std::memory_order_relaxed);
  }
  return static_cast<int>(level) >= min;
}

void SetLogSink(LogSink sink) {
  SinkSlot& slot = Sink();
  MutexLock lock(&slot.mu);
  slot.sink = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
}

std::string FormatLogLine(absl::Time time, LogLevel level, std::string_view msg,
                          std::initializer_list<LogField> fields) {
  std::string line = absl::StrCat(
      "ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", time, absl::UTCTimeZone()),
      " level=", AsAbsl(LogLevelName(level)), " msg=");
  AppendValue(line, msg);
  for (const LogField& f : fields) {
    line.push_back(' ');
    line.append(f.key);
    line.push_back('=');
    AppendValue(line, f.value);
  }
  line.push_back('\n');
  return line;
}

void Log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) {
  if (!LogLevelEnabled(level)) return;
  const std::string line = FormatLogLine(absl::Now(), level, msg, fields);
  std::shared_ptr<const LogSink> sink;
  {
    SinkSlot& slot = Sink();
    MutexLock lock(&slot.mu);
    sink = slot.sink;
  }
  if (sink != nullptr) {
    (*sink)(line);
  } else {
    WriteAll(STDERR_FILENO, line);  // one write per line: lines never interleave
  }
}

}  // namespace qaqkv::base
