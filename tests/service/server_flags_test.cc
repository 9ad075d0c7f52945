// The server's command line: ports in use, bad flags and config files exit
// with code 2 and a message naming the flag.
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

TEST_F(ServiceTest, SecondServerCannotShareTheListenOrMetricsPort) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  const TestBlock block = NewBlock(format_, 93);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {block}).status);
  base::TempDir dir = MakeTempDir();
  for (const std::string& flag :
       {absl::StrCat("--listen=127.0.0.1:", server_.port()),
        absl::StrCat("--metrics-listen=127.0.0.1:", server_.port())}) {
    auto run = RunToExit({ServerBinary(), "--listen=127.0.0.1:0", "--memory-only", flag,
                          "--data-dir=" + dir.path() + "/db"},
                         absl::Seconds(60));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 2) << run->output;
    EXPECT_THAT(run->output, HasSubstr(flag.substr(0, flag.find('=')) + ": cannot bind"));
  }
  // Every new connection still reaches the first server's store.
  for (int i = 0; i < 8; ++i) {
    std::unique_ptr<Stub> stub = server_.Stub();
    ExpectSamePages(GetPages(*stub, {block.key}).pages, LayerMajor({block}, 0, 4));
  }
}

// ---------------------------------------------------------------------------
// Flags.

TEST(ServerFlagsHelpTest, HelpListsTheFlagsAndVersionPrintsIt) {
  auto help = RunToExit({ServerBinary(), "--help"}, absl::Seconds(60));
  ASSERT_TRUE(help.ok()) << help.status();
  EXPECT_EQ(help->exit_code, 0) << help->output;
  for (const char* flag : {"--listen", "--data-dir", "--memory-bytes", "--config", "--sync",
                           "--tenant-quota-bytes", "--drain-timeout", "--port-file"}) {
    EXPECT_THAT(help->output, HasSubstr(flag));
  }
  auto version = RunToExit({ServerBinary(), "--version"}, absl::Seconds(60));
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(version->exit_code, 0);
  EXPECT_THAT(version->output, HasSubstr("qaqkv-server "));
}

// Flags after --config override the file's; underscores spell flags too.
TEST(ServerFlagsHelpTest, CommandLineAfterConfigWins) {
  base::TempDir dir = MakeTempDir();
  WriteFile(dir.path() + "/server.conf",
            "# a ConfigMap\n--listen=127.0.0.1:1\n--data_dir=" + dir.path() + "/db\n");
  auto run = RunToExit({ServerBinary(), "--config=" + dir.path() + "/server.conf",
                        "--listen=127.0.0.1:99999"},
                       absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output, HasSubstr("127.0.0.1:99999"));  // the later --listen was used
}

struct BadFlag {
  std::string name;
  std::vector<std::string> args;
  std::string flag;  // stderr must name it
};

void PrintTo(const BadFlag& f, std::ostream* os) { *os << f.name; }

class ServerFlagsTest : public ::testing::TestWithParam<BadFlag> {};

TEST_P(ServerFlagsTest, BadFlagExitsWithCode2NamingTheFlag) {
  base::TempDir dir = MakeTempDir();
  std::vector<std::string> argv = {ServerBinary(), "--listen=127.0.0.1:0",
                                   absl::StrCat("--data-dir=", dir.path(), "/db")};
  for (std::string a : GetParam().args) {
    absl::StrReplaceAll({{"$DIR", dir.path()}}, &a);
    argv.push_back(a);
  }
  WriteFile(dir.path() + "/empty", "");
  WriteFile(dir.path() + "/bad-tokens", "only-a-token\n");
  // A line without its dashes would otherwise be dropped without a word.
  WriteFile(dir.path() + "/not-a-flag.conf", "# budget\nmemory-bytes=64MiB\n");
  WriteFile(dir.path() + "/nested.conf", "--config=/etc/other.conf\n");
  auto run = RunToExit(argv, absl::Seconds(60));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->exit_code, 2) << run->output;
  EXPECT_THAT(run->output, HasSubstr(GetParam().flag));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, ServerFlagsTest,
    ::testing::ValuesIn(std::vector<BadFlag>{
        {"MemoryBytesNotASize", {"--memory-bytes=abc"}, "--memory-bytes"},
        {"MemoryBytesZero", {"--memory-bytes=0"}, "--memory-bytes"},
        {"DiskBytesNotASize", {"--disk-bytes=lots"}, "--disk-bytes"},
        {"WriteBackBytesNotASize", {"--write-back-bytes=lots"}, "--write-back-bytes"},
        {"WriteBackBytesOverAQuarterOfMemory",
         {"--memory-bytes=64MiB", "--write-back-bytes=17MiB"},
         "--write-back-bytes: at most a quarter"},
        {"WriteBackWithoutADisk",
         {"--memory-only", "--write-back-bytes=1MiB"},
         "--write-back-bytes: needs a disk"},
        {"MaxMessageBytesBelow1MiB", {"--max-message-bytes=1000"}, "--max-message-bytes"},
        {"MaxMessageBytesAbove2GiB", {"--max-message-bytes=3GiB"}, "--max-message-bytes"},
        {"TenantQuotaNegative", {"--tenant-quota-bytes=-1"}, "--tenant-quota-bytes"},
        {"TenantMaxStreamsNegative", {"--tenant-max-streams=-1"}, "--tenant-max-streams"},
        {"DrainTimeoutNegative", {"--drain-timeout=-1s"}, "--drain-timeout"},
        {"ReloadIntervalUnderASecond", {"--reload-interval=100ms"}, "--reload-interval"},
        {"TlsCertWithoutKey", {"--tls-cert=$DIR/empty"}, "--tls-cert"},
        {"TlsKeyWithoutCert", {"--tls-key=$DIR/empty"}, "--tls-key"},
        {"TlsClientCaWithoutCert", {"--tls-client-ca=$DIR/empty"}, "--tls-client-ca"},
        {"MetricsTlsWithoutCert", {"--metrics-tls", "--metrics-listen=127.0.0.1:0"}, "--metrics-tls"},
        {"TlsCertUnreadable",
         {"--tls-cert=/nonexistent/c.pem", "--tls-key=$DIR/empty"},
         "--tls-cert"},
        {"AuthTokensMissing", {"--auth-tokens=/nonexistent"}, "--auth-tokens"},
        {"AuthTokensEmpty", {"--auth-tokens=$DIR/empty"}, "no tokens"},
        {"AuthTokensMalformed", {"--auth-tokens=$DIR/bad-tokens"}, "bad-tokens:1"},
        {"MetricsListenNotHostPort", {"--metrics-listen=nope"}, "--metrics-listen"},
        {"ConfigUnreadable", {"--config=/nonexistent.conf"}, "--config"},
        {"DataDirIsAFile", {"--data-dir=$DIR/empty"}, "--data-dir"},
        // Flags that absl parses itself (numbers, durations) must follow the
        // same convention.
        {"DrainTimeoutNotADuration", {"--drain-timeout=soon"}, "drain"},
        {"SegmentLanesZero", {"--segment-lanes=0"}, "--segment-lanes"},
        {"SegmentLanesOver64", {"--segment-lanes=65"}, "--segment-lanes"},
        {"SegmentLanesNotANumber", {"--segment-lanes=many"}, "--segment-lanes"},
        {"PromoteOnFirstReadNotABool", {"--promote-on-first-read=often"},
         "--promote-on-first-read"},
        {"SegmentDirectIoNotABool", {"--segment-direct-io=maybe"}, "--segment-direct-io"},
        {"SegmentDirectIoMemoryOnly", {"--segment-direct-io", "--memory-only"},
         "--segment-direct-io: needs segment files"},
        {"SegmentDirectIoPagesInRocksDb", {"--segment-direct-io", "--separate-pages=false"},
         "--segment-direct-io: needs segment files"},
        {"TenantMaxStreamsNotANumber", {"--tenant-max-streams=many"}, "tenant"},
        // The log line is logfmt: the quotes around the value are escaped.
        {"StoreThreadsNotANumber",
         {"--store-threads=abc"},
         R"(--store-threads: \"abc\" is not valid: want a whole number)"},
        {"SyncNotABool", {"--sync=maybe"}, R"(--sync: \"maybe\" is not valid: want true or false)"},
        {"ListenWithoutValue", {"--config=$DIR/empty", "--listen"}, "--listen"},
        {"BlockTtlNegative", {"--block-ttl-ms=-1"}, "--block-ttl-ms"},
        {"SessionTombstoneZero", {"--session-tombstone-ms=0"}, "--session-tombstone-ms"},
        {"AbandonedBlockMsZero", {"--abandoned-block-ms=0"}, "--abandoned-block-ms"},
        {"UnknownFlag", {"--memory-byte=1GiB"}, "--memory-byte: unknown flag"},
        // gRPC would take the port modulo 65536 and serve somewhere else.
        {"ListenPortAbove65535", {"--listen=127.0.0.1:99999"}, "--listen"},
        {"ListenNoPort", {"--listen=127.0.0.1"}, "--listen"},
        {"MetricsListenPortAbove65535", {"--metrics-listen=127.0.0.1:70000"}, "--metrics-listen"},
        {"ConfigIsADirectory", {"--config=$DIR"}, "is not a file"},
        {"ConfigWithoutPath", {"--config"}, "--config: missing"},
        {"ConfigLineNotAFlag", {"--config=$DIR/not-a-flag.conf"}, "not-a-flag.conf:2"},
        {"ConfigIncludesConfig", {"--config=$DIR/nested.conf"}, "cannot include another"},
        {"PortFileUnwritable", {"--port-file=/nonexistent/port"}, "--port-file: cannot write /nonexistent/port"},
    }),
    [](const ::testing::TestParamInfo<BadFlag>& info) { return info.param.name; });

}  // namespace
}  // namespace qaqkv::service::testing
