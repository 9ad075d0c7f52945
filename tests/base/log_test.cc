#include "base/log.h"

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "base/mutex.h"
#include "gtest/gtest.h"

namespace qaqkv::base {
namespace {

const absl::Time kTime = absl::FromUnixMillis(1796564383123);  // 2026-12-06T13:39:43.123Z

TEST(LogTest, FormatsOneLogfmtLine) {
  EXPECT_EQ(FormatLogLine(kTime, LogLevel::kInfo, "serving", {{"port", 7070}, {"tls", "off"}}),
            "ts=2026-12-06T13:39:43.123Z level=info msg=serving port=7070 tls=off\n");
}

TEST(LogTest, QuotesAndEscapesValuesThatNeedIt) {
  EXPECT_EQ(FormatLogLine(kTime, LogLevel::kWarning, "pass failed",
                          {{"error", "rocksdb: \"IO\" a=b\nnext"}, {"empty", ""}}),
            "ts=2026-12-06T13:39:43.123Z level=warn msg=\"pass failed\" "
            "error=\"rocksdb: \\\"IO\\\" a=b\\nnext\" empty=\"\"\n");
  EXPECT_EQ(FormatLogLine(kTime, LogLevel::kError, std::string("nul\0byte", 8), {}),
            "ts=2026-12-06T13:39:43.123Z level=error msg=\"nul\\x00byte\"\n");
}

// Collects lines; several threads may log at once.
class Collector {
 public:
  void Install() {
    SetLogSink([this](std::string_view line) {
      MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  std::vector<std::string> lines() {
    MutexLock lock(&mu_);
    return lines_;
  }

 private:
  Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

TEST(LogTest, SinkGetsWholeLinesAtOrAboveTheMinimumLevel) {
  Collector c;
  c.Install();
  SetMinLogLevel(LogLevel::kWarning);
  LogInfo("dropped");
  LogWarning("kept", {{"n", 3}});
  LogError("also kept");
  SetMinLogLevel(LogLevel::kInfo);
  SetLogSink(nullptr);
  const std::vector<std::string> lines = c.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find(" level=warn msg=kept n=3\n"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find(" level=error msg=\"also kept\"\n"), std::string::npos) << lines[1];
  EXPECT_FALSE(LogLevelEnabled(LogLevel::kDebug));
  EXPECT_TRUE(LogLevelEnabled(LogLevel::kInfo));
}

}  // namespace
}  // namespace qaqkv::base
