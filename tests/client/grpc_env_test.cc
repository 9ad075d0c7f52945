// UseRecommendedGrpcEnvironment: which variables it sets and which it
// leaves, and that pages round-trip byte for byte through the real
// qaqkv-server with the client on the settings it recommends (the poll
// engine) while the server keeps its own, as `qaqkv bench service` runs.
// One test, in its own binary: gRPC reads the variables once per process,
// at its first use, so nothing may use gRPC before the call.
#include <signal.h>
#include <stdlib.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"
#include "tests/service/test_util.h"
#include "base/child_process.h"

namespace qaqkv::client {
namespace {

TEST(GrpcEnvironmentTest, SetsWhatIsMissingKeepsWhatIsSetAndPagesStillRoundTrip) {
  // Nothing set: both are. (Setting variables uses no gRPC, so this may
  // run before the case below.)
  ASSERT_EQ(unsetenv("GRPC_POLL_STRATEGY"), 0);
  ASSERT_EQ(unsetenv("GRPC_EXPERIMENTS"), 0);
  EXPECT_EQ(UseRecommendedGrpcEnvironment(),
            (std::vector<std::string>{"GRPC_POLL_STRATEGY", "GRPC_EXPERIMENTS"}));
  ASSERT_NE(getenv("GRPC_EXPERIMENTS"), nullptr);
  // The client's experiments leave out the server's tcp_rcv_lowat.
  EXPECT_STREQ(getenv("GRPC_EXPERIMENTS"), "tcp_frame_size_tuning");

  ASSERT_EQ(unsetenv("GRPC_POLL_STRATEGY"), 0);
  ASSERT_EQ(setenv("GRPC_EXPERIMENTS", "", 1), 0);  // an operator's "none": kept
  const base::TempDir tmp = service::testing::MakeTempDir();
  const std::string& dir = tmp.path();
  // The server starts with the environment as it was before the call.
  base::SnapshotEnvironmentForChildren();

  EXPECT_EQ(UseRecommendedGrpcEnvironment(), std::vector<std::string>{"GRPC_POLL_STRATEGY"});
  ASSERT_NE(getenv("GRPC_POLL_STRATEGY"), nullptr);
  EXPECT_STREQ(getenv("GRPC_POLL_STRATEGY"), "poll");
  ASSERT_NE(getenv("GRPC_EXPERIMENTS"), nullptr);
  EXPECT_STREQ(getenv("GRPC_EXPERIMENTS"), "");
  EXPECT_TRUE(UseRecommendedGrpcEnvironment().empty()) << "a second call changes nothing";

  auto server = base::ChildProcess::Spawn(
      {service::testing::ServerBinary(), "--listen=127.0.0.1:0", "--memory-only",
       "--memory-bytes=64MiB", "--port-file=" + dir + "/port"},
      dir + "/server.log");
  ASSERT_TRUE(server.ok()) << server.status();
  auto port = base::WaitForPortFile(dir + "/port", *server, absl::Seconds(30));
  ASSERT_TRUE(port.ok()) << port.status();
  {
    std::ifstream env("/proc/" + std::to_string(server->pid()) + "/environ");
    std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    EXPECT_EQ(all.find("GRPC_POLL_STRATEGY"), std::string::npos)
        << "the server inherited the client's poll engine";
  }

  ClientOptions options;
  options.target = "127.0.0.1:" + std::to_string(*port);
  auto client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();

  const Geometry geometry = testing::LargePageGeometry();
  const v1::Geometry wire_geometry = testing::ToWire(geometry);
  std::vector<EncodedPage> pages;
  for (int layer = 0; layer < geometry.num_layers; ++layer) {
    auto page = service::testing::MakePage("fp16", wire_geometry, /*seed=*/layer + 1);
    ASSERT_TRUE(page.ok()) << page.status();
    pages.push_back({BlockKey{9}, layer, std::move(*page)});
  }
  auto put = (*client)->PutPages(geometry, "fp16", pages);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->committed_blocks.size(), 1u);

  const std::vector<BlockKey> blocks = {BlockKey{9}};
  int seen = 0;
  absl::Status got = (*client)->GetPages(
      blocks, 0, 0, [&](const BlockKey& block, int layer, std::string_view data) {
        EXPECT_EQ(block, BlockKey{9});
        EXPECT_EQ(layer, seen);
        EXPECT_TRUE(data == pages[layer].data) << "layer " << layer << " differs";
        ++seen;
        return absl::OkStatus();
      });
  ASSERT_TRUE(got.ok()) << got;
  EXPECT_EQ(seen, geometry.num_layers);

  client->reset();
  auto rc = server->Stop(SIGTERM, absl::Seconds(30));
  ASSERT_TRUE(rc.ok()) << rc.status();
  EXPECT_EQ(*rc, 0);
}

}  // namespace
}  // namespace qaqkv::client
