// The client library against the real qaqkv-server binary on loopback (with
// a real RocksDB in a temporary directory): offload and load, block keys and
// Lookup, sessions with tails, retries across a server restart, auth, and
// many threads sharing one Client.

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/codec.h"
#include "qaqkv/client.h"
#include "tests/client/one_server_test.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"
#include "tests/service/service_fixture.h"
#include "httplib.h"
#include "tests/service/test_util.h"
#include "base/child_process.h"

namespace qaqkv::client {
namespace {

using service::testing::ServerProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using testing::kBlockTokens;
using testing::kHeadDim;
using testing::kKvHeads;
using testing::kLayers;
using testing::Connect;
using testing::Kv;
using testing::MakeKv;
using testing::Out;
using testing::SmallGeometry;

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 7 + seed * 131) % 32000;
  return t;
}

class ClientServerTest : public testing::OneServerTest {};

TEST_F(ClientServerTest, Fp16OffloadAndLoadAreBitExactLayerByLayer) {
  const Geometry g = SmallGeometry();
  constexpr int kBlocks = 3, kTokens = kBlocks * kBlockTokens;
  const Kv in = MakeKv(kTokens, 1);
  const std::vector<BlockKey> keys = Client::ComputeBlockKeys("m", "fp16", Tokens(kTokens, 1), kBlockTokens);
  ASSERT_EQ(keys.size(), 3u);
  OffloadRequest off;
  off.geometry = g;
  off.codec = "fp16";
  off.blocks = keys;
  off.kv = in.View();
  auto r = client_->Offload(off);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->blocks_committed, 3u);
  EXPECT_EQ(r->pages, 12u);
  EXPECT_EQ(*client_->Lookup(keys), 3u);
  EXPECT_EQ(*client_->Lookup(keys, &g, "fp16"), 3u);
  EXPECT_EQ(*client_->Lookup(keys, &g, "int8"), 0u);  // another codec never hits

  Out out(kTokens);
  std::vector<int> layers;
  LoadRequest load;
  load.geometry = g;
  load.codec = "fp16";
  load.blocks = keys;
  load.kv = out.View();
  load.on_layer = [&](int l) { layers.push_back(l); };
  auto lr = client_->Load(load);
  ASSERT_TRUE(lr.ok()) << lr.status();
  EXPECT_THAT(layers, ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(lr->pages, 12u);
  EXPECT_LE(lr->time_to_first_layer, lr->total_time);
  EXPECT_EQ(out.k, in.k);
  EXPECT_EQ(out.v, in.v);

  // A layer range fills only those layers.
  Out part(kTokens);
  load.kv = part.View();
  load.layer_begin = 2;
  load.layer_end = 3;
  layers.clear();
  ASSERT_TRUE(client_->Load(load).ok());
  EXPECT_THAT(layers, ElementsAre(2));
  EXPECT_EQ(part.k[2], in.k[2]);
  EXPECT_EQ(part.k[0], std::vector<uint16_t>(in.k[0].size(), 0xffff));
}

// Offload streams block-major: each block's layers follow each other, so
// the server stores each block of a message with one segment write (three
// here, not one per page), and blocks commit in order as the stream goes.
TEST(ClientOffloadOrderTest, PagesGoBlockMajorSoEachBlockIsOneWrite) {
  ServerProcess server;
  ASSERT_TRUE(server.Start({"--metrics-listen=127.0.0.1:0"}).ok());
  const std::string log = server.Log();
  const size_t at = log.find("metrics on port ");
  ASSERT_NE(at, std::string::npos) << log;
  const int metrics_port = std::atoi(log.c_str() + at + std::strlen("metrics on port "));
  std::unique_ptr<Client> client = Connect(server.target());
  ASSERT_NE(client, nullptr);

  const Geometry g = SmallGeometry();
  constexpr int kBlocks = 3, kTokens = kBlocks * kBlockTokens;
  const Kv in = MakeKv(kTokens, 9);
  OffloadRequest off;
  off.geometry = g;
  off.codec = "int8";
  const std::vector<BlockKey> keys =
      Client::ComputeBlockKeys("m", "int8", Tokens(kTokens, 9), kBlockTokens);
  off.blocks = keys;  // a span: the keys must outlive the call
  off.kv = in.View();
  auto r = client->Offload(off);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->pages, static_cast<uint64_t>(kBlocks * kLayers));

  httplib::Client http("127.0.0.1", metrics_port);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_EQ(service::testing::Sample(res->body, "qaqkv_segment_writes_total"), double{kBlocks})
      << res->body;
  EXPECT_EQ(service::testing::Sample(res->body, "qaqkv_pages_stored_total"),
            double{kBlocks * kLayers});
}

// QAQ through the service returns exactly what the codec decodes locally.
TEST_F(ClientServerTest, QaqRoundTripEqualsLocalDecode) {
  const Geometry g = SmallGeometry();
  constexpr int kTokens = 2 * kBlockTokens;
  const Kv in = MakeKv(kTokens, 2);
  const std::vector<BlockKey> keys = Client::ComputeBlockKeys("m", "qaq", Tokens(kTokens, 2), kBlockTokens);
  OffloadRequest off;
  off.geometry = g;
  off.blocks = keys;
  off.kv = in.View();
  ASSERT_TRUE(client_->Offload(off).ok());
  Out out(kTokens);
  LoadRequest load;
  load.geometry = g;
  load.blocks = keys;
  load.kv = out.View();
  ASSERT_TRUE(client_->Load(load).ok());
  auto cfg = ParseCodecConfig("qaq");
  ASSERT_TRUE(cfg.ok());
  for (int l = 0; l < kLayers; ++l) {
    for (int b = 0; b < 2; ++b) {
      const size_t off_rows = size_t(b) * kBlockTokens * kKvHeads * kHeadDim;
      const PageShape shape{kBlockTokens, kKvHeads, kHeadDim};
      QaqSideInputs side;
      side.context_tokens = kTokens;
      auto page = EncodePage(*cfg, shape, {in.k[l].data() + off_rows, ::qaqkv::DType::kF16, ::qaqkv::Layout::kNHD},
                             {in.v[l].data() + off_rows, ::qaqkv::DType::kF16, ::qaqkv::Layout::kNHD}, side);
      ASSERT_TRUE(page.ok()) << page.status();
      std::vector<uint16_t> kd(shape.values()), vd(shape.values());
      ASSERT_TRUE(DecodePage(*page, {kd.data(), ::qaqkv::DType::kF16, ::qaqkv::Layout::kNHD},
                             {vd.data(), ::qaqkv::DType::kF16, ::qaqkv::Layout::kNHD})
                      .ok());
      EXPECT_TRUE(std::equal(kd.begin(), kd.end(), out.k[l].begin() + off_rows)) << l << " " << b;
      EXPECT_TRUE(std::equal(vd.begin(), vd.end(), out.v[l].begin() + off_rows)) << l << " " << b;
    }
  }
}

TEST_F(ClientServerTest, SessionWithTailResumesExactly) {
  const Geometry g = SmallGeometry();
  constexpr int kTokens = 2 * kBlockTokens + 5;  // two blocks and a 5-token tail
  const Kv in = MakeKv(kTokens, 3);
  SessionSpec spec;
  spec.session_id = "chat-42";
  spec.geometry = g;
  spec.codec = "fp16";
  spec.blocks = Client::ComputeBlockKeys("m", "fp16", Tokens(kTokens, 3), kBlockTokens);
  ASSERT_EQ(spec.blocks.size(), 2u);
  spec.token_count = kTokens;
  spec.ttl = absl::Hours(1);
  absl::StatusOr<OffloadResult> first = client_->OffloadSession(spec, in.View());
  ASSERT_TRUE(first.ok()) << first.status();
  // Two blocks of 4 layers, plus the tail as one page; fp16 stores a little
  // more than the raw bytes (headers and checksums).
  EXPECT_EQ(first->blocks_committed, 2u);
  EXPECT_EQ(first->pages, 2u * 4 + 1);
  EXPECT_EQ(first->raw_bytes, uint64_t{kTokens} * 4 * g.num_kv_heads * g.head_dim * 2 * 2);
  EXPECT_GT(first->stored_bytes, first->raw_bytes);
  auto ids = client_->ListSessions();
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre("chat-42"));
  auto info = client_->GetSession("chat-42");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->token_count, uint64_t{kTokens});
  EXPECT_EQ(info->committed_prefix, 2u);
  EXPECT_GT(info->tail_bytes, 0u);
  EXPECT_EQ(info->ttl, absl::Hours(1));

  Out out(kTokens);
  std::vector<int> layers;
  auto resumed = client_->ResumeSession("chat-42", out.View(), [&](int l) { layers.push_back(l); });
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_THAT(layers, ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(out.k, in.k);
  EXPECT_EQ(out.v, in.v);

  // Saving again offloads nothing new (the blocks are cached) and replaces:
  // only the tail is stored again.
  absl::StatusOr<OffloadResult> again = client_->OffloadSession(spec, in.View());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->pages, 1u);
  EXPECT_EQ(again->stored_bytes, info->tail_bytes);
  ASSERT_TRUE(client_->TouchSession("chat-42").ok());
  ASSERT_TRUE(client_->DeleteSession("chat-42").ok());
  EXPECT_EQ(client_->ResumeSession("chat-42", out.View()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->DeleteSession("chat-42").code(), absl::StatusCode::kNotFound);

  // A TTL under a millisecond is sent as 1 ms: rounded down, it would be
  // 0 on the wire, which means "never expires".
  spec.ttl = absl::Microseconds(900);
  ASSERT_TRUE(client_->OffloadSession(spec, in.View()).ok());
  auto short_lived = client_->GetSession("chat-42");
  // It may have expired already; if not, its TTL is the 1 ms sent.
  if (short_lived.ok()) {
    EXPECT_EQ(short_lived->ttl, absl::Milliseconds(1));
  }
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(client_->GetSession("chat-42").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientServerTest, ServerErrorsArriveWithTheirCode) {
  const Geometry g = SmallGeometry();
  std::vector<BlockKey> missing = {BlockKey{1, 2, 3}};
  Out out(kBlockTokens);
  LoadRequest load;
  load.geometry = g;
  load.blocks = missing;
  load.kv = out.View();
  const absl::Status s = client_->Load(load).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("block_keys[0]"));
  // A page whose shape does not match the geometry is refused by the server.
  auto cfg = ParseCodecConfig("fp16");
  std::vector<float> k(8 * kKvHeads * kHeadDim), v(k.size());
  auto page = EncodePage(*cfg, {8, kKvHeads, kHeadDim}, {k.data(), ::qaqkv::DType::kF32, ::qaqkv::Layout::kNHD},
                         {v.data(), ::qaqkv::DType::kF32, ::qaqkv::Layout::kNHD});
  ASSERT_TRUE(page.ok());
  std::vector<EncodedPage> pages = {{BlockKey{9}, 0, std::string(page->begin(), page->end())}};
  const absl::Status put = client_->PutPages(g, "fp16", pages).status();
  EXPECT_EQ(put.code(), absl::StatusCode::kInvalidArgument) << put;
  EXPECT_THAT(std::string(put.message()), HasSubstr("pages[0].data"));
  EXPECT_EQ(*client_->Lookup(std::vector<BlockKey>{BlockKey{9}}), 0u);
}

// Raw pages of 256 KiB (several of gRPC's receive buffers each) come back
// the same through GetPages (contiguous) and GetPagesInPlace (pieces), in
// layer-major order; a callback's error ends the stream with that error.
TEST_F(ClientServerTest, RawPagesComeBackWholeAndInPlace) {
  const Geometry g = testing::LargePageGeometry();
  const v1::Geometry wire = testing::ToWire(g);
  const std::vector<BlockKey> blocks = {BlockKey{21}, BlockKey{22}, BlockKey{23}};
  std::vector<EncodedPage> pages;  // block-major here; the stream is layer-major
  for (size_t b = 0; b < blocks.size(); ++b) {
    for (int layer = 0; layer < g.num_layers; ++layer) {
      auto page = service::testing::MakePage("fp16", wire, static_cast<int>(10 * b) + layer);
      ASSERT_TRUE(page.ok()) << page.status();
      pages.push_back({blocks[b], layer, std::move(*page)});
    }
  }
  ASSERT_TRUE(client_->PutPages(g, "fp16", pages).ok());
  auto stored = [&](const BlockKey& block, int layer) -> const std::string& {
    const size_t b = static_cast<size_t>(block[0] - 21);
    return pages[b * g.num_layers + layer].data;
  };

  std::vector<std::pair<BlockKey, int>> order;
  BlockFormat format;
  absl::Status s = client_->GetPages(
      blocks, 1, 3,
      [&](const BlockKey& block, int layer, std::string_view data) {
        EXPECT_TRUE(data == stored(block, layer)) << "layer " << layer;
        order.emplace_back(block, layer);
        return absl::OkStatus();
      },
      &format);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(format.codec, "fp16");
  EXPECT_EQ(format.geometry.block_tokens, 256);
  const std::vector<std::pair<BlockKey, int>> layer_major = {
      {blocks[0], 1}, {blocks[1], 1}, {blocks[2], 1},
      {blocks[0], 2}, {blocks[1], 2}, {blocks[2], 2}};
  EXPECT_EQ(order, layer_major);

  order.clear();
  s = client_->GetPagesInPlace(
      blocks, 1, 3, [&](const BlockKey& block, int layer, const PageBytes& data) {
        const std::string& want = stored(block, layer);
        size_t total = 0;
        for (std::string_view piece : data.pieces()) total += piece.size();
        EXPECT_EQ(total, data.size());
        std::string got(data.size(), '\0');
        data.CopyTo(got.data());
        EXPECT_TRUE(got == want) << "layer " << layer;
        order.emplace_back(block, layer);
        return absl::OkStatus();
      });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(order, layer_major);

  int calls = 0;
  s = client_->GetPagesInPlace(blocks, 0, 0, [&](const BlockKey&, int, const PageBytes&) {
    return ++calls == 2 ? absl::AbortedError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s, absl::AbortedError("enough"));
  EXPECT_EQ(calls, 2);
}

// Many threads share one Client; each offloads and loads its own blocks and
// some shared ones. No errors, every byte back.
TEST_F(ClientServerTest, SixteenThreadsShareOneClient) {
  const Geometry g = SmallGeometry();
  constexpr int kThreads = 16, kTokens = 2 * kBlockTokens;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int seed = t % 4 == 0 ? 1000 : t;  // every fourth thread shares a prefix
      const Kv in = MakeKv(kTokens, seed);
      const auto keys = Client::ComputeBlockKeys("m", "fp16", Tokens(kTokens, seed), kBlockTokens);
      OffloadRequest off;
      off.geometry = g;
      off.codec = "fp16";
      off.blocks = keys;
      off.kv = in.View();
      if (!client_->Offload(off).ok()) ++failures;
      Out out(kTokens);
      LoadRequest load;
      load.geometry = g;
      load.codec = "fp16";
      load.blocks = keys;
      load.kv = out.View();
      if (!client_->Load(load).ok() || out.k != in.k || out.v != in.v) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto stats = client_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->tenant_blocks, uint64_t{2 * 13});  // 13 distinct sequences of 2 blocks
  // Every tier by name, in read order; the old dram/disk fields agree.
  ASSERT_EQ(stats->tiers.size(), 2u);
  EXPECT_EQ(stats->tiers[0].name, "dram");
  EXPECT_EQ(stats->tiers[1].name, "disk");
  EXPECT_EQ(stats->tiers[1].bytes, stats->disk.bytes);
  EXPECT_EQ(stats->tiers[1].entries, stats->blocks);
  EXPECT_EQ(stats->tiers[0].hits, stats->dram.hits);
  EXPECT_GT(stats->tiers[0].budget_bytes, 0u);
}

// The client retries UNAVAILABLE with backoff: a call made while the server
// is down succeeds once it is back, and the data survived the restart.
TEST(ClientRetryTest, CallSpanningARestartSucceeds) {
  ServerProcess server;
  const absl::StatusOr<int> port = base::FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  auto started = server.Start({absl::StrCat("--listen=127.0.0.1:", *port)});
  ASSERT_TRUE(started.ok()) << started.status();
  ClientOptions o;
  o.target = server.target();
  o.deadline = absl::Seconds(30);
  o.retry.max_attempts = 30;
  o.retry.initial_backoff = absl::Milliseconds(50);
  o.retry.max_backoff = absl::Milliseconds(200);
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  const Geometry g = SmallGeometry();
  const Kv in = MakeKv(kBlockTokens, 5);
  const auto keys = Client::ComputeBlockKeys("m", "fp16", Tokens(kBlockTokens, 5), kBlockTokens);
  OffloadRequest off;
  off.geometry = g;
  off.codec = "fp16";
  off.blocks = keys;
  off.kv = in.View();
  ASSERT_TRUE((*client)->Offload(off).ok());

  server.Kill();
  absl::StatusOr<size_t> during = absl::UnknownError("not run");
  std::thread caller([&] { during = (*client)->Lookup(keys); });
  absl::SleepFor(absl::Milliseconds(300));  // let the first attempts fail
  auto restarted = server.Restart();
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  caller.join();
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(*during, 1u);
  Out out(kBlockTokens);
  LoadRequest load;
  load.geometry = g;
  load.blocks = keys;
  load.kv = out.View();
  ASSERT_TRUE((*client)->Load(load).ok());
  EXPECT_EQ(out.k, in.k);
}

TEST(ClientAuthTest, TokensSelectTenantsAndBadTokensAreRefused) {
  ServerProcess server;
  const std::string tokens = absl::StrCat(server.dir(), "/tokens");
  {
    std::ofstream f(tokens);
    f << "# test tokens\ntoken-a alice\ntoken-b bob\n";
  }
  auto started = server.Start({absl::StrCat("--auth-tokens=", tokens)});
  ASSERT_TRUE(started.ok()) << started.status();
  auto alice = Connect(server.target(), "token-a");
  auto bob = Connect(server.target(), "token-b");
  auto nobody = Connect(server.target(), "wrong");
  const Geometry g = SmallGeometry();
  const Kv in = MakeKv(kBlockTokens, 6);
  const auto keys = Client::ComputeBlockKeys("m", "fp16", Tokens(kBlockTokens, 6), kBlockTokens);
  OffloadRequest off;
  off.geometry = g;
  off.codec = "fp16";
  off.blocks = keys;
  off.kv = in.View();
  ASSERT_TRUE(alice->Offload(off).ok());
  EXPECT_EQ(*alice->Lookup(keys), 1u);
  EXPECT_EQ(*bob->Lookup(keys), 0u);  // never a hit across tenants
  EXPECT_EQ(nobody->Lookup(keys).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(nobody->Offload(off).status().code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace qaqkv::client
