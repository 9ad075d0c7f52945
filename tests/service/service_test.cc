// Integration tests of qaqkv-server: each test starts the real binary as a
// child process on 127.0.0.1 with a RocksDB in a temporary directory
// (server_process.h) and talks to it with the generated gRPC stub. Nothing
// here is faked: pages are encoded by the kernels, TLS certificates are made
// by the openssl command line, restarts and crashes are real signals.
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/service/server_process.h"
#include "tests/service/test_util.h"
#include "xxhash.h"

namespace qaqkv::service::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Stub = v1::KvCache::Stub;

#define QAQKV_CAT_INNER(a, b) a##b
#define QAQKV_CAT(a, b) QAQKV_CAT_INNER(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(QAQKV_CAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.status();          \
  lhs = std::move(*tmp)
#define EXPECT_GRPC_OK(expr)                                    \
  do {                                                          \
    const grpc::Status grpc_status_ = (expr);                   \
    EXPECT_TRUE(grpc_status_.ok()) << StatusText(grpc_status_); \
  } while (0)
#define ASSERT_GRPC_OK(expr)                                    \
  do {                                                          \
    const grpc::Status grpc_status_ = (expr);                   \
    ASSERT_TRUE(grpc_status_.ok()) << StatusText(grpc_status_); \
  } while (0)

// `status` has exactly `code`, and its message names `field`.
::testing::AssertionResult IsError(const grpc::Status& status, grpc::StatusCode code,
                                   std::string_view field) {
  if (status.error_code() == code &&
      absl::StrContains(status.error_message(),
                        absl::string_view(field.data(), field.size()))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "got " << StatusText(status) << "; want "
         << StatusText(grpc::Status(code, "")) << " naming \"" << field << "\"";
}

TestBlock NewBlock(const v1::BlockFormat& format, uint64_t seed) {
  return MakeBlock(format, seed).value();
}

std::string NewPage(std::string_view codec, const v1::Geometry& g, uint64_t seed,
                    uint32_t tokens = 0) {
  return MakePage(codec, g, seed, tokens).value();
}

// Byte-identical pages in the same order (data compared without printing
// kilobytes of bytes on a mismatch).
void ExpectSamePages(const std::vector<v1::Page>& got,
                     const std::vector<v1::Page>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].block_key(), want[i].block_key()) << "page " << i;
    EXPECT_EQ(got[i].layer(), want[i].layer()) << "page " << i;
    EXPECT_TRUE(got[i].data() == want[i].data())
        << "page " << i << " (layer " << want[i].layer()
        << ") differs: " << got[i].data().size() << " bytes, want "
        << want[i].data().size();
  }
}

std::vector<std::string> Keys(const std::vector<TestBlock>& blocks) {
  std::vector<std::string> keys;
  for (const TestBlock& b : blocks) keys.push_back(b.key);
  return keys;
}

uint64_t Bytes(const std::vector<TestBlock>& blocks) {
  uint64_t n = 0;
  for (const TestBlock& b : blocks) n += b.bytes();
  return n;
}

// Polls `condition` until it holds (true) or `timeout` passes (false).
bool PollUntil(const std::function<bool()>& condition,
               absl::Duration timeout = absl::Seconds(60)) {
  for (const absl::Time deadline = absl::Now() + timeout; absl::Now() < deadline;) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return condition();
}

v1::GetStatsResponse Stats(Stub& stub) {
  v1::GetStatsResponse r;
  EXPECT_GRPC_OK(Unary(stub, &Stub::GetStats, v1::GetStatsRequest(), &r));
  return r;
}

std::vector<std::string> ListSessions(Stub& stub, uint32_t limit = 0) {
  v1::ListSessionsRequest req;
  req.set_limit(limit);
  v1::ListSessionsResponse resp;
  EXPECT_GRPC_OK(Unary(stub, &Stub::ListSessions, req, &resp));
  return {resp.session_ids().begin(), resp.session_ids().end()};
}

grpc::Status GetSession(Stub& stub, const std::string& id, v1::GetSessionResponse* resp) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  return Unary(stub, &Stub::GetSession, req, resp);
}

grpc::Status PutSession(Stub& stub, const v1::Session& session) {
  v1::PutSessionRequest req;
  *req.mutable_session() = session;
  v1::PutSessionResponse resp;
  return Unary(stub, &Stub::PutSession, req, &resp);
}

grpc::Status DeleteSession(Stub& stub, const std::string& id) {
  v1::DeleteSessionRequest req;
  req.set_session_id(id);
  v1::DeleteSessionResponse resp;
  return Unary(stub, &Stub::DeleteSession, req, &resp);
}

grpc::Status TouchSession(Stub& stub, const std::string& id) {
  v1::TouchSessionRequest req;
  req.set_session_id(id);
  v1::TouchSessionResponse resp;
  return Unary(stub, &Stub::TouchSession, req, &resp);
}

bool SameMessage(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

// Status of one GetStats on a fresh channel with `options`.
grpc::Status Probe(const ServerProcess& server, const ClientOptions& options) {
  std::unique_ptr<Stub> stub = server.Stub(options);
  v1::GetStatsResponse r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(30));
  return stub->GetStats(&ctx, v1::GetStatsRequest(), &r);
}

// Four layers of a block split over two messages (layers 0-1 with the
// format, then 2-3), so a stream is acknowledged only after both arrived.
std::vector<v1::PutPagesRequest> TwoMessageStream(const v1::BlockFormat& format,
                                                  const TestBlock& block) {
  v1::PutPagesRequest first, second;
  *first.mutable_format() = format;
  *first.add_pages() = PageOf(block, 0);
  *first.add_pages() = PageOf(block, 1);
  *second.add_pages() = PageOf(block, 2);
  *second.add_pages() = PageOf(block, 3);
  return {first, second};
}

class ServiceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- qaqkv-server log ----\n" << server_.Log() << "----\n";
    }
  }

  // Starts the server and a plaintext, token-less stub on it.
  void StartServer(std::vector<std::string> args = {}) {
    auto port = server_.Start(std::move(args));
    ASSERT_TRUE(port.ok()) << port.status();
    stub_ = server_.Stub();
  }

  ServerProcess server_;
  std::unique_ptr<Stub> stub_;
  const v1::BlockFormat format_ = MakeFormat("int8");
};

// ---------------------------------------------------------------------------
// Put, get, lookup.

TEST_F(ServiceTest, PutGetLookupRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<TestBlock> blocks = {NewBlock(format_, 1), NewBlock(format_, 2),
                                         NewBlock(format_, 3)};
  const std::string& k0 = blocks[0].key;
  const std::string& k1 = blocks[1].key;
  const std::string& k2 = blocks[2].key;

  // Pages out of order and across two messages; a block commits when its
  // last layer arrives: k0 in the first message, then k1, then k2.
  v1::PutPagesRequest m1, m2;
  *m1.mutable_format() = format_;
  for (uint32_t l = 0; l < 4; ++l) *m1.add_pages() = PageOf(blocks[0], l);
  *m1.add_pages() = PageOf(blocks[1], 1);
  *m1.add_pages() = PageOf(blocks[1], 0);
  *m2.add_pages() = PageOf(blocks[2], 3);
  *m2.add_pages() = PageOf(blocks[1], 3);
  *m2.add_pages() = PageOf(blocks[1], 2);
  *m2.add_pages() = PageOf(blocks[2], 0);
  *m2.add_pages() = PageOf(blocks[2], 1);
  *m2.add_pages() = PageOf(blocks[2], 2);
  const PutResult put = PutPages(*stub_, {m1, m2});
  ASSERT_GRPC_OK(put.status);
  EXPECT_THAT(put.response.committed_blocks(), ElementsAre(k0, k1, k2));
  EXPECT_EQ(put.response.pages_stored(), 12u);
  EXPECT_EQ(put.response.bytes_stored(), Bytes(blocks));

  const std::string unknown = MakeBlockKey(999);
  EXPECT_EQ(Lookup(*stub_, {k0, k1, k2}).committed_prefix, 3u);
  EXPECT_EQ(Lookup(*stub_, {k0, unknown, k2}).committed_prefix, 1u);
  EXPECT_EQ(Lookup(*stub_, {unknown, k0}).committed_prefix, 0u);
  EXPECT_EQ(Lookup(*stub_, {k2, k1}).committed_prefix, 2u);
  const LookupResult empty = Lookup(*stub_, {});
  EXPECT_GRPC_OK(empty.status);
  EXPECT_EQ(empty.committed_prefix, 0u);

  // Every layer: layer 0 of every block (in request order) first.
  const GetResult all = GetPages(*stub_, {k0, k1, k2});
  ASSERT_GRPC_OK(all.status);
  ASSERT_FALSE(all.messages.empty());
  EXPECT_EQ(all.messages[0].format().codec(), "int8");
  EXPECT_TRUE(SameMessage(all.messages[0].format().geometry(), format_.geometry()))
      << all.messages[0].format().DebugString();
  for (size_t i = 1; i < all.messages.size(); ++i) {
    EXPECT_FALSE(all.messages[i].has_format()) << "message " << i;
  }
  ExpectSamePages(all.pages, LayerMajor(blocks, 0, 4));

  // Layer ranges, and the request's block order.
  ExpectSamePages(GetPages(*stub_, {k0, k1, k2}, 1, 3).pages, LayerMajor(blocks, 1, 3));
  ExpectSamePages(GetPages(*stub_, {k0, k1, k2}, 2, 0).pages, LayerMajor(blocks, 2, 4));
  ExpectSamePages(GetPages(*stub_, {k1}, 3, 4).pages, LayerMajor({blocks[1]}, 3, 4));
  ExpectSamePages(GetPages(*stub_, {k2, k0}).pages,
                  LayerMajor({blocks[2], blocks[0]}, 0, 4));

  const v1::GetStatsResponse stats = Stats(*stub_);
  EXPECT_EQ(stats.tenant_bytes(), Bytes(blocks));
  EXPECT_EQ(stats.tenant_blocks(), 3u);
  EXPECT_EQ(stats.total_bytes(), Bytes(blocks));
  EXPECT_FALSE(stats.version().empty());

  // Writing a committed block again is an idempotent success.
  const PutResult again = PutBlocks(*stub_, format_, {blocks[1]});
  ASSERT_GRPC_OK(again.status);
  EXPECT_THAT(again.response.committed_blocks(), ElementsAre(k1));
  EXPECT_EQ(again.response.pages_stored(), 4u);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), Bytes(blocks));
  ExpectSamePages(GetPages(*stub_, {k1}).pages, LayerMajor({blocks[1]}, 0, 4));
}

// Large results are split into several messages; only the first carries
// the format, and together they hold every page in order.
TEST_F(ServiceTest, GetPagesSpreadsLargeResultsOverMessages) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  v1::Geometry big = SmallGeometry();
  big.set_num_kv_heads(8);
  big.set_num_q_heads(32);
  big.set_head_dim(128);
  big.set_block_tokens(64);
  const v1::BlockFormat format = MakeFormat("fp16", big);  // 256 KiB pages
  const std::vector<TestBlock> blocks = {NewBlock(format, 11), NewBlock(format, 12),
                                         NewBlock(format, 13)};
  v1::PutPagesRequest first = PutMessage({blocks[0]}, &format);
  const PutResult put =
      PutPages(*stub_, {first, PutMessage({blocks[1]}), PutMessage({blocks[2]})});
  ASSERT_GRPC_OK(put.status);
  EXPECT_EQ(put.response.committed_blocks_size(), 3);

  const GetResult got = GetPages(*stub_, Keys(blocks));
  ASSERT_GRPC_OK(got.status);
  EXPECT_GE(got.messages.size(), 2u) << "3 MiB of pages in one message";
  ASSERT_FALSE(got.messages.empty());
  EXPECT_TRUE(SameMessage(got.messages[0].format().geometry(), big));
  for (size_t i = 0; i < got.messages.size(); ++i) {
    EXPECT_GT(got.messages[i].pages_size(), 0) << "message " << i;
    if (i > 0) {
      EXPECT_FALSE(got.messages[i].has_format()) << "message " << i;
    }
  }
  ExpectSamePages(got.pages, LayerMajor(blocks, 0, 4));
}

TEST_F(ServiceTest, BlockIsVisibleOnlyWhenEveryLayerIsStored) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const TestBlock b = NewBlock(format_, 5);
  v1::PutPagesRequest three;
  *three.mutable_format() = format_;
  for (uint32_t l : {0u, 3u, 1u}) *three.add_pages() = PageOf(b, l);
  const PutResult first = PutPages(*stub_, {three});
  ASSERT_GRPC_OK(first.status);
  EXPECT_EQ(first.response.committed_blocks_size(), 0);
  EXPECT_EQ(first.response.pages_stored(), 3u);

  EXPECT_EQ(Lookup(*stub_, {b.key}).committed_prefix, 0u);
  EXPECT_EQ(Lookup(*stub_, {b.key}, &format_).committed_prefix, 0u);
  EXPECT_TRUE(IsError(GetPages(*stub_, {b.key}).status, grpc::StatusCode::NOT_FOUND,
                      "block_keys[0]"));
  EXPECT_TRUE(IsError(GetPages(*stub_, {b.key}, 0, 1).status, grpc::StatusCode::NOT_FOUND,
                      "block_keys[0]"));

  // The last layer, in another stream.
  v1::PutPagesRequest last;
  *last.mutable_format() = format_;
  *last.add_pages() = PageOf(b, 2);
  const PutResult second = PutPages(*stub_, {last});
  ASSERT_GRPC_OK(second.status);
  EXPECT_THAT(second.response.committed_blocks(), ElementsAre(b.key));
  EXPECT_EQ(Lookup(*stub_, {b.key}).committed_prefix, 1u);
  const GetResult got = GetPages(*stub_, {b.key});
  ASSERT_GRPC_OK(got.status);
  ExpectSamePages(got.pages, LayerMajor({b}, 0, 4));
}

// A stream that fails keeps the pages of the messages before the bad one
// (the proto's contract) and stores nothing of the bad message.
TEST_F(ServiceTest, FailedStreamKeepsEarlierMessages) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const TestBlock good = NewBlock(format_, 21);
  const TestBlock bad = NewBlock(format_, 22);
  v1::PutPagesRequest second = PutMessage({bad});
  second.mutable_pages(3)->set_layer(7);
  const PutResult put = PutPages(*stub_, {PutMessage({good}, &format_), second});
  EXPECT_TRUE(IsError(put.status, grpc::StatusCode::INVALID_ARGUMENT, "pages[7].layer"));
  EXPECT_EQ(Lookup(*stub_, {good.key}).committed_prefix, 1u);
  ExpectSamePages(GetPages(*stub_, {good.key}).pages, LayerMajor({good}, 0, 4));
  EXPECT_EQ(Lookup(*stub_, {bad.key}).committed_prefix, 0u);
  const v1::GetStatsResponse stats = Stats(*stub_);
  EXPECT_EQ(stats.tenant_bytes(), good.bytes());
  EXPECT_EQ(stats.tenant_blocks(), 1u);
}

TEST_F(ServiceTest, LookupWithFormatCountsOnlyBlocksOfThatFormat) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<TestBlock> int8 = {NewBlock(format_, 31), NewBlock(format_, 32)};
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, int8).status);
  const v1::BlockFormat qaq = MakeFormat("qaq");
  const TestBlock q = NewBlock(qaq, 33);
  ASSERT_GRPC_OK(PutBlocks(*stub_, qaq, {q}).status);

  const std::vector<std::string> chain = Keys(int8);
  EXPECT_EQ(Lookup(*stub_, chain).committed_prefix, 2u);
  EXPECT_EQ(Lookup(*stub_, chain, &format_).committed_prefix, 2u);
  // A chain whose second block is of another codec stops there.
  EXPECT_EQ(Lookup(*stub_, {int8[0].key, q.key}, &format_).committed_prefix, 1u);
  EXPECT_EQ(Lookup(*stub_, {int8[0].key, q.key}).committed_prefix, 2u);

  auto with = [&](std::string_view codec, auto&& change) {
    v1::BlockFormat f = MakeFormat(codec);
    change(*f.mutable_geometry());
    return Lookup(*stub_, chain, &f);
  };
  auto same = [](v1::Geometry&) {};
  for (const char* codec : {"int4", "qaq", "fp16", "int8-layer", "kivi2"}) {
    const LookupResult r = with(codec, same);
    EXPECT_GRPC_OK(r.status);
    EXPECT_EQ(r.committed_prefix, 0u) << codec;
  }
  EXPECT_EQ(with("int8", [](v1::Geometry& g) { g.set_num_layers(8); }).committed_prefix,
            0u);
  EXPECT_EQ(with("int8", [](v1::Geometry& g) { g.set_head_dim(32); }).committed_prefix,
            0u);
  EXPECT_EQ(with("int8", [](v1::Geometry& g) { g.set_num_kv_heads(4); }).committed_prefix,
            0u);
  EXPECT_EQ(with("int8", [](v1::Geometry& g) { g.set_num_q_heads(8); }).committed_prefix,
            0u);
  EXPECT_EQ(
      with("int8", [](v1::Geometry& g) { g.set_block_tokens(32); }).committed_prefix, 0u);
  EXPECT_EQ(
      with("int8", [](v1::Geometry& g) { g.set_dtype(v1::DTYPE_BF16); }).committed_prefix,
      0u);

  // Codecs compare by their canonical name: another spelling of the same
  // config is a hit, different knobs are not.
  v1::BlockFormat spelled = MakeFormat("qaq:s=1e-3,x=0.001");
  EXPECT_EQ(Lookup(*stub_, {q.key}, &spelled).committed_prefix, 1u);
  v1::BlockFormat other = MakeFormat("qaq:s=2e-3");
  EXPECT_EQ(Lookup(*stub_, {q.key}, &other).committed_prefix, 0u);
}

// ---------------------------------------------------------------------------
// Sessions.

TEST_F(ServiceTest, SessionLifecycle) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<TestBlock> blocks = {NewBlock(format_, 41), NewBlock(format_, 42)};
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, blocks).status);
  const v1::Geometry g = format_.geometry();

  // Two full blocks and a 5-token tail: the tail page stacks the layers
  // along the token axis, so it has 5 * num_layers rows.
  v1::Session s;
  s.set_session_id("chat-1");
  for (const TestBlock& b : blocks) s.add_block_keys(b.key);
  s.set_token_count(2 * g.block_tokens() + 5);
  s.set_tail(NewPage("int8", g, 43, 5 * g.num_layers()));
  *s.mutable_format() = format_;
  s.set_ttl_ms(3600 * 1000);
  ASSERT_GRPC_OK(PutSession(*stub_, s));

  v1::GetSessionResponse got;
  ASSERT_GRPC_OK(GetSession(*stub_, "chat-1", &got));
  EXPECT_EQ(got.committed_prefix(), 2u);
  EXPECT_EQ(got.session().session_id(), "chat-1");
  EXPECT_THAT(got.session().block_keys(), ElementsAre(blocks[0].key, blocks[1].key));
  EXPECT_EQ(got.session().token_count(), 2 * g.block_tokens() + 5);
  EXPECT_TRUE(got.session().tail() == s.tail()) << "tail bytes differ";
  EXPECT_EQ(got.session().format().codec(), "int8");
  EXPECT_TRUE(SameMessage(got.session().format().geometry(), g));
  EXPECT_EQ(got.session().ttl_ms(), 3600 * 1000);
  EXPECT_GT(got.session().created_ms(), 0);
  EXPECT_GE(got.session().accessed_ms(), got.session().created_ms());

  // A session on a block boundary has no tail; one whose second block is
  // unknown has a committed prefix of 1.
  v1::Session s2;
  s2.set_session_id("chat-2");
  s2.add_block_keys(blocks[0].key);
  s2.add_block_keys(MakeBlockKey(4242));
  s2.set_token_count(2 * g.block_tokens());
  *s2.mutable_format() = format_;
  ASSERT_GRPC_OK(PutSession(*stub_, s2));
  v1::GetSessionResponse got2;
  ASSERT_GRPC_OK(GetSession(*stub_, "chat-2", &got2));
  EXPECT_EQ(got2.committed_prefix(), 1u);
  EXPECT_TRUE(got2.session().tail().empty());
  EXPECT_EQ(got2.session().ttl_ms(), 0);

  EXPECT_THAT(ListSessions(*stub_), ElementsAre("chat-1", "chat-2"));
  EXPECT_EQ(ListSessions(*stub_, 1).size(), 1u);

  // Touch renews the access time; a rewrite keeps the creation time.
  EXPECT_GRPC_OK(TouchSession(*stub_, "chat-1"));
  v1::GetSessionResponse touched;
  ASSERT_GRPC_OK(GetSession(*stub_, "chat-1", &touched));
  EXPECT_GE(touched.session().accessed_ms(), got.session().accessed_ms());
  EXPECT_EQ(touched.session().created_ms(), got.session().created_ms());
  v1::Session longer = s;
  longer.set_token_count(2 * g.block_tokens() + 7);
  longer.set_tail(NewPage("int8", g, 44, 7 * g.num_layers()));
  ASSERT_GRPC_OK(PutSession(*stub_, longer));
  v1::GetSessionResponse rewritten;
  ASSERT_GRPC_OK(GetSession(*stub_, "chat-1", &rewritten));
  EXPECT_EQ(rewritten.session().token_count(), 2 * g.block_tokens() + 7);
  EXPECT_TRUE(rewritten.session().tail() == longer.tail());
  EXPECT_EQ(rewritten.session().created_ms(), got.session().created_ms());

  EXPECT_GRPC_OK(DeleteSession(*stub_, "chat-1"));
  v1::GetSessionResponse gone;
  EXPECT_TRUE(IsError(GetSession(*stub_, "chat-1", &gone), grpc::StatusCode::NOT_FOUND,
                      "session"));
  EXPECT_EQ(DeleteSession(*stub_, "chat-1").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(TouchSession(*stub_, "chat-1").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(ListSessions(*stub_), ElementsAre("chat-2"));
  // Deleting a session leaves its blocks alone.
  EXPECT_EQ(Lookup(*stub_, Keys(blocks)).committed_prefix, 2u);
}

// ---------------------------------------------------------------------------
// Durability across restarts.

TEST_F(ServiceTest, RestartAfterSigtermKeepsEveryPage) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::vector<TestBlock> blocks = {NewBlock(format_, 51), NewBlock(format_, 52),
                                         NewBlock(format_, 53)};
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {blocks[0], blocks[1]}).status);
  ASSERT_GRPC_OK(PutPages(*stub_, TwoMessageStream(format_, blocks[2])).status);
  // And an incomplete block, which must stay incomplete.
  const TestBlock partial = NewBlock(format_, 54);
  v1::PutPagesRequest half;
  *half.mutable_format() = format_;
  *half.add_pages() = PageOf(partial, 0);
  ASSERT_GRPC_OK(PutPages(*stub_, {half}).status);
  v1::Session s;
  s.set_session_id("resume-me");
  s.add_block_keys(blocks[0].key);
  s.set_token_count(format_.geometry().block_tokens() + 3);
  s.set_tail(
      NewPage("int8", format_.geometry(), 55, 3 * format_.geometry().num_layers()));
  *s.mutable_format() = format_;
  ASSERT_GRPC_OK(PutSession(*stub_, s));
  const v1::GetStatsResponse before = Stats(*stub_);

  // An idle channel would hold the graceful shutdown until its backup
  // poller answers the GOAWAY (up to 5 s); close it first.
  stub_.reset();
  auto exit_code = server_.Terminate();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  ASSERT_TRUE(server_.Restart().ok());
  stub_ = server_.Stub();

  EXPECT_EQ(Lookup(*stub_, Keys(blocks)).committed_prefix, 3u);
  const GetResult got = GetPages(*stub_, Keys(blocks));
  ASSERT_GRPC_OK(got.status);
  ExpectSamePages(got.pages, LayerMajor(blocks, 0, 4));
  EXPECT_EQ(Lookup(*stub_, {partial.key}).committed_prefix, 0u);
  const v1::GetStatsResponse after = Stats(*stub_);
  EXPECT_EQ(after.tenant_bytes(), before.tenant_bytes());
  EXPECT_EQ(after.tenant_blocks(), before.tenant_blocks());
  v1::GetSessionResponse session;
  ASSERT_GRPC_OK(GetSession(*stub_, "resume-me", &session));
  EXPECT_TRUE(session.session().tail() == s.tail());
  EXPECT_EQ(session.committed_prefix(), 1u);

  // The restarted server completes the partial block.
  v1::PutPagesRequest rest;
  *rest.mutable_format() = format_;
  for (uint32_t l = 1; l < 4; ++l) *rest.add_pages() = PageOf(partial, l);
  const PutResult completed = PutPages(*stub_, {rest});
  ASSERT_GRPC_OK(completed.status);
  EXPECT_THAT(completed.response.committed_blocks(), ElementsAre(partial.key));
  ExpectSamePages(GetPages(*stub_, {partial.key}).pages, LayerMajor({partial}, 0, 4));
}

// Writers streaming blocks from several threads (one channel each), one
// block per stream in two messages, recording every block whose stream was
// acknowledged with OK. A writer stops at its first failed stream.
class StreamingWriters {
 public:
  StreamingWriters(const std::string& target, const v1::BlockFormat& format, int threads,
                   uint64_t seed_base)
      : target_(target), format_(format), seed_base_(seed_base) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  ~StreamingWriters() { StopAndJoin(); }

  // Polls until `n` streams are acknowledged; false if the writers all
  // stopped first or `timeout` passed.
  bool WaitForAcks(size_t n, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (acked_.size() >= n) return true;
        if (stopped_ == threads_.size()) return false;
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  }

  void StopAndJoin() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  // Call after StopAndJoin.
  const std::vector<TestBlock>& acked() const { return acked_; }
  int bad_acks() const { return bad_acks_; }
  const std::vector<std::string>& failures() const { return failures_; }
  const std::vector<absl::Time>& failure_times() const { return failure_times_; }

 private:
  void Run(int t) {
    std::unique_ptr<Stub> stub = v1::KvCache::NewStub(MakeChannel(target_));
    for (uint64_t i = 0; !stop_; ++i) {
      const TestBlock block = NewBlock(format_, seed_base_ + uint64_t(t) * 1000000 + i);
      const PutResult put = PutPages(*stub, TwoMessageStream(format_, block));
      std::lock_guard<std::mutex> lock(mu_);
      if (!put.status.ok()) {
        failures_.push_back(StatusText(put.status));
        failure_times_.push_back(absl::Now());
        break;
      }
      if (put.response.committed_blocks_size() != 1 ||
          put.response.committed_blocks(0) != block.key) {
        ++bad_acks_;
      }
      acked_.push_back(block);
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stopped_;
  }

  const std::string target_;
  const v1::BlockFormat format_;
  const uint64_t seed_base_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<TestBlock> acked_;
  std::vector<std::string> failures_;
  std::vector<absl::Time> failure_times_;
  int bad_acks_ = 0;
  size_t stopped_ = 0;
  std::vector<std::thread> threads_;
};

// Every block in `blocks` is committed and reads back byte-identical.
void ExpectAllReadBack(Stub& stub, const std::vector<TestBlock>& blocks) {
  if (blocks.empty()) return;
  EXPECT_EQ(Lookup(stub, Keys(blocks)).committed_prefix, blocks.size());
  const GetResult got = GetPages(stub, Keys(blocks));
  ASSERT_GRPC_OK(got.status);
  ExpectSamePages(got.pages, LayerMajor(blocks, 0, 4));
}

TEST_F(ServiceTest, RestartAfterSigkillKeepsEveryAcknowledgedStream) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::vector<TestBlock> acked;
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    StreamingWriters writers(server_.target(), format_, 4, 100000 * (round + 1));
    ASSERT_TRUE(writers.WaitForAcks(8, absl::Seconds(60)));
    server_.Kill();  // SIGKILL with streams in flight
    writers.StopAndJoin();
    EXPECT_EQ(writers.bad_acks(), 0);
    acked.insert(acked.end(), writers.acked().begin(), writers.acked().end());
    ASSERT_TRUE(server_.Restart().ok()) << server_.Log();
    stub_ = server_.Stub();
    ExpectAllReadBack(*stub_, acked);
  }
}

TEST_F(ServiceTest, SigtermDrainsStreamsAndKeepsAcknowledgedPages) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--drain-timeout=5s"}));
  // A client that opens a stream and never half-closes it: the drain must
  // not wait for it past --drain-timeout.
  const TestBlock stuck_block = NewBlock(format_, 6999999);
  std::unique_ptr<Stub> stuck_stub = server_.Stub();
  grpc::ClientContext stuck_ctx;
  SetDeadline(&stuck_ctx);
  v1::PutPagesResponse stuck_resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stuck =
      stuck_stub->PutPages(&stuck_ctx, &stuck_resp);
  ASSERT_TRUE(stuck->Write(TwoMessageStream(format_, stuck_block)[0]));
  // Its first message is stored, so the stream is in flight on the server.
  ASSERT_TRUE(PollUntil([&] {
    return Stats(*stub_).tenant_bytes() ==
           stuck_block.pages[0].size() + stuck_block.pages[1].size();
  }));
  std::promise<grpc::Status> stuck_status;
  std::thread stuck_thread([&] { stuck_status.set_value(stuck->Finish()); });

  StreamingWriters writers(server_.target(), format_, 4, 7000000);
  const bool acked = writers.WaitForAcks(8, absl::Seconds(60));
  stub_.reset();  // no idle channel (see RestartAfterSigtermKeepsEveryPage)
  const absl::Time start = absl::Now();
  // The bound is a liveness check with room for sanitizer builds, but below
  // the 20 s default drain, so a server ignoring --drain-timeout fails.
  auto exit_code = server_.Terminate(absl::Seconds(5 + 12));
  const absl::Duration took = absl::Now() - start;
  writers.StopAndJoin();
  stuck_thread.join();
  ASSERT_TRUE(acked);
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  EXPECT_EQ(writers.bad_acks(), 0);
  const grpc::Status stuck_final = stuck_status.get_future().get();
  EXPECT_FALSE(stuck_final.ok()) << "a stream cut by the drain deadline was acknowledged";
  std::cerr << "drained and exited in " << absl::FormatDuration(took) << "; "
            << writers.acked().size()
            << " streams acknowledged; the stuck stream ended with "
            << StatusText(stuck_final) << "; first failures:";
  for (size_t i = 0; i < writers.failures().size() && i < 4; ++i) {
    std::cerr << "\n  " << writers.failures()[i] << " after "
              << absl::FormatDuration(writers.failure_times()[i] - start);
  }
  std::cerr << "\n";
  // Streams that started after SIGTERM are refused, not half-done.
  for (const std::string& f : writers.failures()) {
    EXPECT_TRUE(absl::StartsWith(f, "UNAVAILABLE") || absl::StartsWith(f, "CANCELLED"))
        << f;
  }
  ASSERT_TRUE(server_.Restart().ok());
  stub_ = server_.Stub();
  ExpectAllReadBack(*stub_, writers.acked());
}

// A stream open when SIGTERM arrives may finish during the drain: its
// later messages are still read and stored, and it is acknowledged.
TEST_F(ServiceTest, SigtermLetsAnOpenStreamFinish) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--drain-timeout=60s"}));
  const TestBlock block = NewBlock(format_, 131);
  const std::vector<v1::PutPagesRequest> messages = TwoMessageStream(format_, block);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::PutPagesResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stream =
      stub_->PutPages(&ctx, &resp);
  ASSERT_TRUE(stream->Write(messages[0]));
  // Wait until the server stored the first message's pages.
  ASSERT_TRUE(PollUntil([&] {
    return Stats(*stub_).tenant_bytes() == block.pages[0].size() + block.pages[1].size();
  }));

  ASSERT_TRUE(server_.Signal(SIGTERM).ok());
  // The drain has begun once the listener is closed: a new connection is
  // refused.
  ASSERT_TRUE(PollUntil(
      [&] { return Probe(server_, {}).error_code() == grpc::StatusCode::UNAVAILABLE; }));

  EXPECT_TRUE(stream->Write(messages[1]));
  EXPECT_TRUE(stream->WritesDone());
  const grpc::Status status = stream->Finish();
  EXPECT_GRPC_OK(status);
  EXPECT_THAT(resp.committed_blocks(), ElementsAre(block.key));
  stub_.reset();
  auto exit_code = server_.Wait();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);

  ASSERT_TRUE(server_.Restart().ok());
  stub_ = server_.Stub();
  if (status.ok()) ExpectAllReadBack(*stub_, {block});
}

// ---------------------------------------------------------------------------
// Concurrency.

TEST_F(ServiceTest, SixteenConcurrentClients) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  constexpr int kClients = 16;
  const std::vector<TestBlock> shared = {NewBlock(format_, 61), NewBlock(format_, 62)};
  std::vector<std::vector<TestBlock>> own(kClients);
  for (int t = 0; t < kClients; ++t) {
    own[t] = {NewBlock(format_, 1000 + 10 * t), NewBlock(format_, 1001 + 10 * t)};
  }
  std::barrier sync(kClients);
  std::atomic<int> errors{0};
  auto check = [&](bool ok) {
    if (!ok) errors.fetch_add(1);
    return ok;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      // No early return before the barrier: the others would wait forever.
      std::unique_ptr<Stub> stub = server_.Stub();
      v1::PutPagesRequest m1 = PutMessage({own[t][0], shared[0]}, &format_);
      v1::PutPagesRequest m2 = PutMessage({shared[1], own[t][1]});
      const PutResult put = PutPages(*stub, {m1, m2});
      EXPECT_TRUE(check(put.status.ok())) << StatusText(put.status);
      EXPECT_TRUE(
          check(absl::c_linear_search(put.response.committed_blocks(), own[t][0].key)));
      EXPECT_TRUE(
          check(absl::c_linear_search(put.response.committed_blocks(), own[t][1].key)));
      for (int round = 0; round < 3; ++round) {
        EXPECT_TRUE(check(Lookup(*stub, Keys(own[t])).committed_prefix == 2));
        const GetResult got = GetPages(*stub, Keys(own[t]));
        EXPECT_TRUE(check(got.status.ok())) << StatusText(got.status);
        ExpectSamePages(got.pages, LayerMajor(own[t], 0, 4));
      }
      sync.arrive_and_wait();
      // Every client wrote the shared blocks; all of them see them whole.
      EXPECT_TRUE(check(
          Lookup(*stub, {shared[0].key, shared[1].key, own[t][0].key}).committed_prefix ==
          3));
      const GetResult got =
          GetPages(*stub, {shared[0].key, own[t][1].key, shared[1].key}, 1, 0);
      EXPECT_TRUE(check(got.status.ok())) << StatusText(got.status);
      ExpectSamePages(got.pages, LayerMajor({shared[0], own[t][1], shared[1]}, 1, 4));
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  uint64_t bytes = Bytes(shared);
  for (const auto& o : own) bytes += Bytes(o);
  const v1::GetStatsResponse stats = Stats(*stub_);
  EXPECT_EQ(stats.tenant_blocks(), 2u + 2u * kClients);
  EXPECT_EQ(stats.tenant_bytes(), bytes);
}

// ---------------------------------------------------------------------------
// Authentication and tenants.

class AuthTest : public ServiceTest {
 protected:
  void SetUp() override {
    const std::string tokens = server_.dir() + "/tokens";
    WriteFile(tokens, "# qaqkv tokens\ntoken-of-a a\n\ntoken-of-b b\n");
    ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--auth-tokens=", tokens)}));
    a_ = server_.Stub({.bearer_token = "token-of-a"});
    b_ = server_.Stub({.bearer_token = "token-of-b"});
  }
  std::unique_ptr<Stub> a_, b_;
};

// Every RPC of `stub` fails with UNAUTHENTICATED; `what` names the client.
void ExpectEveryRpcUnauthenticated(Stub& stub, const TestBlock& block,
                                   const v1::BlockFormat& format,
                                   const std::string& what) {
  SCOPED_TRACE(what);
  constexpr auto kUnauth = grpc::StatusCode::UNAUTHENTICATED;
  EXPECT_TRUE(IsError(Lookup(stub, {block.key}).status, kUnauth, "authorization"));
  EXPECT_TRUE(IsError(PutBlocks(stub, format, {block}).status, kUnauth, "authorization"));
  EXPECT_TRUE(IsError(GetPages(stub, {block.key}).status, kUnauth, "authorization"));
  v1::Session s;
  s.set_session_id("s");
  *s.mutable_format() = format;
  EXPECT_TRUE(IsError(PutSession(stub, s), kUnauth, "authorization"));
  v1::GetSessionResponse session;
  EXPECT_TRUE(IsError(GetSession(stub, "s", &session), kUnauth, "authorization"));
  v1::ListSessionsResponse list;
  EXPECT_TRUE(IsError(Unary(stub, &Stub::ListSessions, v1::ListSessionsRequest(), &list),
                      kUnauth, "authorization"));
  EXPECT_TRUE(IsError(DeleteSession(stub, "s"), kUnauth, "authorization"));
  EXPECT_TRUE(IsError(TouchSession(stub, "s"), kUnauth, "authorization"));
  v1::GetStatsResponse stats;
  EXPECT_TRUE(IsError(Unary(stub, &Stub::GetStats, v1::GetStatsRequest(), &stats),
                      kUnauth, "authorization"));
}

TEST_F(AuthTest, EveryRpcNeedsAValidToken) {
  const TestBlock block = NewBlock(format_, 71);
  ExpectEveryRpcUnauthenticated(*server_.Stub(), block, format_, "no token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.bearer_token = "token-of-c"}), block,
                                format_, "unknown token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.authorization = "Basic token-of-a"}),
                                block, format_, "not a bearer token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.authorization = "Bearer"}), block,
                                format_, "empty bearer token");
  // Nothing of the refused calls was stored.
  EXPECT_EQ(Stats(*a_).total_bytes(), 0u);
  EXPECT_EQ(Lookup(*a_, {block.key}).committed_prefix, 0u);
  EXPECT_TRUE(ListSessions(*a_).empty());
  // The scheme is case-insensitive.
  EXPECT_GRPC_OK(
      Lookup(*server_.Stub({.authorization = "bearer token-of-a"}), {block.key}).status);
}

TEST_F(AuthTest, TenantsCannotSeeEachOthersData) {
  const TestBlock block = NewBlock(format_, 81);
  ASSERT_GRPC_OK(PutBlocks(*a_, format_, {block}).status);
  v1::Session s;
  s.set_session_id("a-session");
  s.add_block_keys(block.key);
  s.set_token_count(format_.geometry().block_tokens());
  *s.mutable_format() = format_;
  ASSERT_GRPC_OK(PutSession(*a_, s));

  // Tenant b sees a miss, the same answer as for a key nobody wrote.
  EXPECT_EQ(Lookup(*b_, {block.key}).committed_prefix, 0u);
  EXPECT_EQ(Lookup(*b_, {block.key}, &format_).committed_prefix, 0u);
  const GetResult theirs = GetPages(*b_, {block.key});
  const GetResult nobodys = GetPages(*b_, {MakeBlockKey(12345)});
  EXPECT_TRUE(IsError(theirs.status, grpc::StatusCode::NOT_FOUND, "block_keys[0]"));
  EXPECT_EQ(theirs.status.error_message(), nobodys.status.error_message());
  EXPECT_TRUE(theirs.pages.empty());
  v1::GetSessionResponse session;
  EXPECT_TRUE(IsError(GetSession(*b_, "a-session", &session), grpc::StatusCode::NOT_FOUND,
                      "session"));
  EXPECT_TRUE(ListSessions(*b_).empty());
  EXPECT_TRUE(
      IsError(DeleteSession(*b_, "a-session"), grpc::StatusCode::NOT_FOUND, "session"));
  EXPECT_TRUE(
      IsError(TouchSession(*b_, "a-session"), grpc::StatusCode::NOT_FOUND, "session"));
  EXPECT_EQ(Stats(*b_).tenant_bytes(), 0u);

  // b may use the same key under another format: its keys are its own.
  const v1::BlockFormat int4 = MakeFormat("int4");
  TestBlock b_block = NewBlock(int4, 82);
  b_block.key = block.key;
  const PutResult put = PutBlocks(*b_, int4, {b_block});
  ASSERT_GRPC_OK(put.status);
  EXPECT_THAT(put.response.committed_blocks(), ElementsAre(block.key));
  ExpectSamePages(GetPages(*b_, {block.key}).pages, LayerMajor({b_block}, 0, 4));

  // a's data is intact.
  EXPECT_EQ(Lookup(*a_, {block.key}, &format_).committed_prefix, 1u);
  ExpectSamePages(GetPages(*a_, {block.key}).pages, LayerMajor({block}, 0, 4));
  ASSERT_GRPC_OK(GetSession(*a_, "a-session", &session));
  EXPECT_EQ(session.committed_prefix(), 1u);
  EXPECT_THAT(ListSessions(*a_), ElementsAre("a-session"));

  const v1::GetStatsResponse sa = Stats(*a_);
  const v1::GetStatsResponse sb = Stats(*b_);
  EXPECT_EQ(sa.tenant_bytes(), block.bytes());
  EXPECT_EQ(sb.tenant_bytes(), b_block.bytes());
  EXPECT_NE(sa.tenant_bytes(), sb.tenant_bytes());
  EXPECT_EQ(sa.tenant_blocks(), 1u);
  EXPECT_EQ(sb.tenant_blocks(), 1u);
  EXPECT_EQ(sa.total_bytes(), block.bytes() + b_block.bytes());
}

// ---------------------------------------------------------------------------
// TLS.

// A CA, a server certificate for localhost / 127.0.0.1 and a client
// certificate, made with the openssl command line; plus a second CA that
// signed nothing.
struct Pki {
  std::string ca, other_ca, server_cert, server_key, client_cert, client_key;
  std::string dir;
};

absl::StatusOr<Pki> MakePki(const std::string& dir) {
  const std::string script = absl::StrCat(R"(set -e
cd ')",
                                          dir, R"('
EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
for ca in ca other-ca; do
  openssl req -x509 $EC -keyout $ca.key -out $ca.pem -days 2 -subj "/CN=qaqkv test $ca" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
done
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl req -new $EC -keyout $who.key -out $who.csr -subj "/CN=qaqkv-$who"
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out $who.pem -extfile $who.ext
done
)");
  auto run = RunToExit({"/bin/sh", "-c", script}, absl::Seconds(60));
  if (!run.ok()) return run.status();
  if (run->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl failed:\n", run->output));
  }
  Pki p;
  p.dir = dir;
  p.ca = ReadFile(dir + "/ca.pem");
  p.other_ca = ReadFile(dir + "/other-ca.pem");
  p.server_cert = ReadFile(dir + "/server.pem");
  p.server_key = ReadFile(dir + "/server.key");
  p.client_cert = ReadFile(dir + "/client.pem");
  p.client_key = ReadFile(dir + "/client.key");
  return p;
}

TEST_F(ServiceTest, TlsServerServesOnlyTlsClientsThatTrustIt) {
  TempDir pki_dir;
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_NO_FATAL_FAILURE(
      StartServer({absl::StrCat("--tls-cert=", pki.dir, "/server.pem"),
                   absl::StrCat("--tls-key=", pki.dir, "/server.key")}));
  // By name and by IP address (both are in subjectAltName).
  EXPECT_GRPC_OK(Probe(server_, {.tls_root_pem = pki.ca}));
  EXPECT_GRPC_OK(Probe(server_, {.tls_root_pem = pki.ca, .tls_server_name = ""}));
  std::unique_ptr<Stub> tls = server_.Stub({.tls_root_pem = pki.ca});
  const TestBlock block = NewBlock(format_, 91);
  ASSERT_GRPC_OK(PutBlocks(*tls, format_, {block}).status);
  ExpectSamePages(GetPages(*tls, {block.key}).pages, LayerMajor({block}, 0, 4));

  EXPECT_EQ(Probe(server_, {}).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext";
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.other_ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "untrusted server certificate";
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca, .tls_server_name = "qaqkv.example"})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "wrong server name";
}

TEST_F(ServiceTest, MutualTlsRequiresATrustedClientCertificate) {
  TempDir pki_dir;
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_NO_FATAL_FAILURE(
      StartServer({absl::StrCat("--tls-cert=", pki.dir, "/server.pem"),
                   absl::StrCat("--tls-key=", pki.dir, "/server.key"),
                   absl::StrCat("--tls-client-ca=", pki.dir, "/ca.pem")}));
  const ClientOptions with_cert = {.tls_root_pem = pki.ca,
                                   .tls_client_cert_pem = pki.client_cert,
                                   .tls_client_key_pem = pki.client_key};
  EXPECT_GRPC_OK(Probe(server_, with_cert));
  std::unique_ptr<Stub> mtls = server_.Stub(with_cert);
  const TestBlock block = NewBlock(format_, 92);
  ASSERT_GRPC_OK(PutBlocks(*mtls, format_, {block}).status);
  ExpectSamePages(GetPages(*mtls, {block.key}).pages, LayerMajor({block}, 0, 4));

  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  // The server's own certificate is signed by the CA but is not for clients
  // (extendedKeyUsage serverAuth).
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca,
                            .tls_client_cert_pem = pki.server_cert,
                            .tls_client_key_pem = pki.server_key})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "certificate without clientAuth";
  EXPECT_EQ(Probe(server_, {}).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext";
}

// ---------------------------------------------------------------------------
// Message size limits.

v1::Geometry BigGeometry() {  // fp16 pages of 256 KiB
  v1::Geometry g = SmallGeometry();
  g.set_num_kv_heads(8);
  g.set_num_q_heads(32);
  g.set_head_dim(128);
  g.set_block_tokens(64);
  return g;
}

TEST_F(ServiceTest, MessageOverMaxMessageBytesIsResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-message-bytes=1MiB"}));
  const v1::BlockFormat format = MakeFormat("fp16", BigGeometry());
  const std::vector<TestBlock> blocks = {NewBlock(format, 101), NewBlock(format, 102)};
  // 8 pages, 2 MiB, in one message.
  const PutResult put = PutBlocks(*stub_, format, blocks);
  EXPECT_EQ(put.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(put.status);
  EXPECT_EQ(Lookup(*stub_, Keys(blocks)).committed_prefix, 0u);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), 0u);

  // Under the limit, one page per message, it goes through.
  std::vector<v1::PutPagesRequest> messages;
  for (const TestBlock& b : blocks) {
    for (uint32_t l = 0; l < 4; ++l) {
      v1::PutPagesRequest m;
      if (messages.empty()) *m.mutable_format() = format;
      *m.add_pages() = PageOf(b, l);
      messages.push_back(std::move(m));
    }
  }
  const PutResult small = PutPages(*stub_, messages);
  ASSERT_GRPC_OK(small.status);
  EXPECT_EQ(small.response.committed_blocks_size(), 2);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), Bytes(blocks));
}

// GetPages packs pages into messages the server itself is allowed to send:
// with --max-message-bytes at its minimum (1 MiB), pages stored one per
// message must still come back.
TEST_F(ServiceTest, GetPagesMessagesFitMaxMessageBytes) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--max-message-bytes=1MiB"}));
  const v1::BlockFormat format = MakeFormat("fp16", BigGeometry());
  const std::vector<TestBlock> blocks = {NewBlock(format, 111), NewBlock(format, 112)};
  std::vector<v1::PutPagesRequest> messages;
  for (const TestBlock& b : blocks) {
    for (uint32_t l = 0; l < 4; ++l) {
      v1::PutPagesRequest m;
      if (messages.empty()) *m.mutable_format() = format;
      *m.add_pages() = PageOf(b, l);
      messages.push_back(std::move(m));
    }
  }
  ASSERT_GRPC_OK(PutPages(*stub_, messages).status);
  const GetResult got = GetPages(*stub_, Keys(blocks));
  ASSERT_GRPC_OK(got.status);
  ExpectSamePages(got.pages, LayerMajor(blocks, 0, 4));
}

// ---------------------------------------------------------------------------
// Bad input: exact code, the field named, nothing stored.

struct BadInput {
  std::string name;
  grpc::StatusCode code;
  std::string field;  // the status message must contain this
  // Stores what the case needs beforehand; may be empty.
  std::function<void(Stub&)> setup;
  std::function<grpc::Status(Stub&)> call;
  // Blocks and sessions that must not exist afterwards.
  std::vector<std::string> absent_blocks;
  std::vector<std::string> absent_sessions;
};

const v1::BlockFormat& Int8() {
  static const v1::BlockFormat f = MakeFormat("int8");
  return f;
}
// Blocks are deterministic in their seed; each is encoded once.
const TestBlock& Block(uint64_t seed) {
  static std::mutex mu;
  static std::map<uint64_t, TestBlock> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(seed);
  if (it == cache.end()) it = cache.emplace(seed, NewBlock(Int8(), seed)).first;
  return it->second;
}

// One message under `format` holding `pages`.
grpc::Status PutPagesWith(Stub& stub, const v1::BlockFormat& format,
                          std::vector<v1::Page> pages) {
  v1::PutPagesRequest m;
  *m.mutable_format() = format;
  for (v1::Page& p : pages) *m.add_pages() = std::move(p);
  return PutPages(stub, {m}).status;
}

v1::Page WithData(v1::Page page, std::string data) {
  page.set_data(std::move(data));
  return page;
}

v1::BlockFormat Int8With(const std::function<void(v1::Geometry&)>& change) {
  v1::BlockFormat f = Int8();
  change(*f.mutable_geometry());
  return f;
}

std::string Resigned(std::string page) {
  const uint64_t h = XXH3_64bits(page.data(), page.size() - 8);
  std::memcpy(page.data() + page.size() - 8, &h, 8);
  return page;
}

// A session of two (unstored) blocks under int8 with a tail of
// `tail_tokens` tokens (a valid tail page unless the case changes it).
v1::Session SessionOf(const std::string& id, uint32_t tail_tokens) {
  v1::Session s;
  s.set_session_id(id);
  s.add_block_keys(MakeBlockKey(501));
  s.add_block_keys(MakeBlockKey(502));
  const v1::Geometry& g = Int8().geometry();
  s.set_token_count(2 * g.block_tokens() + tail_tokens);
  if (tail_tokens > 0) s.set_tail(NewPage("int8", g, 503, tail_tokens * g.num_layers()));
  *s.mutable_format() = Int8();
  return s;
}

grpc::Status PutSessionWith(Stub& stub, const std::function<void(v1::Session&)>& change) {
  v1::Session s = SessionOf("sess", 5);
  change(s);
  return PutSession(stub, s);
}

void PutCommitted(Stub& stub, uint64_t seed) {
  ASSERT_GRPC_OK(PutBlocks(stub, Int8(), {Block(seed)}).status);
}
void PutFirstTwoLayers(Stub& stub, uint64_t seed) {
  ASSERT_GRPC_OK(
      PutPagesWith(stub, Int8(), {PageOf(Block(seed), 0), PageOf(Block(seed), 1)}));
}

std::vector<BadInput> BadInputs() {
  using C = grpc::StatusCode;
  constexpr C kInvalid = C::INVALID_ARGUMENT;
  const std::string k1 = MakeBlockKey(1), k2 = MakeBlockKey(2), k3 = MakeBlockKey(3);
  auto page = [](uint64_t seed, uint32_t layer) { return PageOf(Block(seed), layer); };
  auto put_page = [](v1::Page p, v1::BlockFormat f = Int8()) {
    return [p, f](Stub& s) { return PutPagesWith(s, f, {p}); };
  };
  auto put_data = [=](std::string data) { return put_page(WithData(page(1, 0), data)); };
  auto put_format = [=](v1::BlockFormat f) { return put_page(page(1, 0), f); };
  auto geometry = [=](std::function<void(v1::Geometry&)> change) {
    return put_format(Int8With(change));
  };
  const std::string good = Block(1).pages[0];
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  std::string bad_sum = good;
  bad_sum.back() ^= 0x01;
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  bad_magic = Resigned(bad_magic);
  const v1::Geometry g = Int8().geometry();
  v1::Geometry g32 = g;
  g32.set_head_dim(32);

  std::vector<BadInput> cases;
  // Page bytes.
  cases.push_back({.name = "TruncatedPage",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(good.substr(0, good.size() - 100)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageShorterThanHeader",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(good.substr(0, 20)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithFlippedByte",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(flipped),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithWrongChecksum",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(bad_sum),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "EmptyPage",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(""),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithBadMagicAndValidChecksum",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(bad_magic),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithFewerTokensThanBlock",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8", g, 7, 8)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithOtherHeadDim",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8", g32, 7)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageOfOtherCodec",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int4", g, 7)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithLayerGroupsUnderHeadGroupCodec",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8-layer", g, 7)),
                   .absent_blocks = {k1}});
  // Block keys and layers.
  cases.push_back({.name = "BlockKeyEmpty",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key("");
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockKey15Bytes",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key(k1.substr(0, 15));
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockKey17Bytes",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key(k1 + "x");
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "LayerNotBelowNumLayers",
                   .code = kInvalid,
                   .field = "pages[0].layer",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_layer(4);
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  // Formats.
  cases.push_back({.name = "UnknownCodec",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("zstd")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "UnknownCodecVariant",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("int8-fancy")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingCodec",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingGeometry",
                   .code = kInvalid,
                   .field = "format.geometry",
                   .call = put_format([] {
                     v1::BlockFormat f;
                     f.set_codec("int8");
                     return f;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingFormatInFirstMessage",
                   .code = kInvalid,
                   .field = "format: missing",
                   .call =
                       [=](Stub& s) {
                         v1::PutPagesRequest m;
                         *m.add_pages() = page(1, 0);
                         return PutPages(s, {m}).status;
                       },
                   .absent_blocks = {k1}});
  cases.push_back({.name = "FormatChangesMidStream",
                   .code = kInvalid,
                   .field = "format: differs",
                   .call =
                       [=](Stub& s) {
                         v1::PutPagesRequest m1, m2;
                         *m1.mutable_format() = Int8();  // a first message without pages
                         *m2.mutable_format() = MakeFormat("int4");
                         *m2.add_pages() = WithData(page(1, 0), NewPage("int4", g, 8));
                         return PutPages(s, {m1, m2}).status;
                       },
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumLayersZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = geometry([](v1::Geometry& x) { x.set_num_layers(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumLayers5000",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = geometry([](v1::Geometry& x) { x.set_num_layers(5000); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumKvHeadsZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_kv_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_kv_heads(0); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "NumKvHeadsHuge",
       .code = kInvalid,
       .field = "format.geometry.num_kv_heads",
       .call = geometry([](v1::Geometry& x) { x.set_num_kv_heads(0xFFFFFFFFu); }),
       .absent_blocks = {k1}});
  cases.push_back({.name = "NumQHeadsZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_q_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_q_heads(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumQHeadsNotAMultipleOfKvHeads",
                   .code = kInvalid,
                   .field = "format.geometry.num_q_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_q_heads(3); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "HeadDimZero",
                   .code = kInvalid,
                   .field = "format.geometry.head_dim",
                   .call = geometry([](v1::Geometry& x) { x.set_head_dim(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "HeadDim2048",
                   .code = kInvalid,
                   .field = "format.geometry.head_dim",
                   .call = geometry([](v1::Geometry& x) { x.set_head_dim(2048); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "DtypeUnspecified",
       .code = kInvalid,
       .field = "format.geometry.dtype",
       .call = geometry([](v1::Geometry& x) { x.set_dtype(v1::DTYPE_UNSPECIFIED); }),
       .absent_blocks = {k1}});
  cases.push_back(
      {.name = "DtypeUnknownValue",
       .code = kInvalid,
       .field = "format.geometry.dtype",
       .call = geometry([](v1::Geometry& x) { x.set_dtype(static_cast<v1::DType>(77)); }),
       .absent_blocks = {k1}});
  cases.push_back({.name = "BlockTokensZero",
                   .code = kInvalid,
                   .field = "format.geometry.block_tokens",
                   .call = geometry([](v1::Geometry& x) { x.set_block_tokens(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockTokens100000",
                   .code = kInvalid,
                   .field = "format.geometry.block_tokens",
                   .call = geometry([](v1::Geometry& x) { x.set_block_tokens(100000); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "BlockTokensUint32Max",
       .code = kInvalid,
       .field = "format.geometry.block_tokens",
       .call = geometry([](v1::Geometry& x) { x.set_block_tokens(0xFFFFFFFFu); }),
       .absent_blocks = {k1}});
  // Every size at its maximum is a legal format; the small page does not fit it.
  cases.push_back({.name = "EverySizeAtItsMaximum",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = geometry([](v1::Geometry& x) {
                     x.set_num_layers(4096);
                     x.set_num_kv_heads(1024);
                     x.set_num_q_heads(65536);
                     x.set_head_dim(1024);
                     x.set_block_tokens(65536);
                   }),
                   .absent_blocks = {k1}});
  // A bad page after good ones stores none of its message.
  cases.push_back({.name = "BadLayerAfterGoodPagesInOneMessage",
                   .code = kInvalid,
                   .field = "pages[4].layer",
                   .call =
                       [=](Stub& s) {
                         v1::Page bad = page(2, 0);
                         bad.set_layer(9);
                         return PutPagesWith(
                             s, Int8(),
                             {page(1, 0), page(1, 1), page(1, 2), page(1, 3), bad});
                       },
                   .absent_blocks = {k1, k2}});
  cases.push_back({.name = "CorruptPageAfterGoodPagesInOneMessage",
                   .code = C::DATA_LOSS,
                   .field = "pages[5].data",
                   .call =
                       [=](Stub& s) {
                         return PutPagesWith(
                             s, Int8(),
                             {page(1, 0), page(1, 1), page(1, 2), page(1, 3), page(2, 0),
                              WithData(page(2, 1), flipped)});
                       },
                   .absent_blocks = {k1, k2}});
  // Pages for a block that exists under another format.
  cases.push_back({.name = "OtherNumLayersForExistingBlock",
                   .code = C::FAILED_PRECONDITION,
                   .field = "pages[0]",
                   .setup = [](Stub& s) { PutFirstTwoLayers(s, 1); },
                   .call = put_page(page(1, 2), Int8With([](v1::Geometry& x) {
                                      x.set_num_layers(8);
                                    })),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "OtherCodecForCommittedBlock",
       .code = C::FAILED_PRECONDITION,
       .field = "pages[0]",
       .setup = [](Stub& s) { PutCommitted(s, 1); },
       .call = put_page(WithData(page(1, 0), NewPage("int4", g, 9)), MakeFormat("int4")),
       .absent_blocks = {}});
  cases.push_back(
      {.name = "OtherCodecForExistingBlockAfterAGoodPageInOneMessage",
       .code = C::FAILED_PRECONDITION,
       .field = "pages[1]",
       .setup = [](Stub& s) { PutCommitted(s, 1); },
       .call =
           [=](Stub& s) {
             const TestBlock b3 = NewBlock(MakeFormat("int4"), 3);
             return PutPagesWith(
                 s, MakeFormat("int4"),
                 {PageOf(b3, 0), WithData(page(1, 0), NewPage("int4", g, 9))});
           },
       .absent_blocks = {k3}});
  // Lookup.
  cases.push_back({.name = "LookupKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "block_keys[1]",
                   .call = [=](Stub& s) {
                     return Lookup(s, {k1, k2.substr(0, 15)}).status;
                   }});
  cases.push_back({.name = "LookupWithInvalidFormat",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = [=](Stub& s) {
                     v1::BlockFormat f =
                         Int8With([](v1::Geometry& x) { x.set_num_layers(0); });
                     return Lookup(s, {k1}, &f).status;
                   }});
  // GetPages.
  cases.push_back(
      {.name = "GetPagesWithoutKeys",
       .code = kInvalid,
       .field = "block_keys",
       .call = [](Stub& s) { return GetPages(s, std::vector<std::string>{}).status; }});
  cases.push_back({.name = "GetPagesKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "block_keys[0]",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1 + "x"}).status; }});
  cases.push_back({.name = "GetPagesLayerBeginNotBelowLayerEnd",
                   .code = kInvalid,
                   .field = "layer_begin",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 2, 2).status; }});
  cases.push_back({.name = "GetPagesLayerBeginPastLastLayer",
                   .code = kInvalid,
                   .field = "layer_begin",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 4, 0).status; }});
  cases.push_back({.name = "GetPagesLayerEndPastLastLayer",
                   .code = kInvalid,
                   .field = "layer_end",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 0, 5).status; }});
  cases.push_back({.name = "GetPagesUnknownBlock",
                   .code = C::NOT_FOUND,
                   .field = "block_keys[1]",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call =
                       [=](Stub& s) {
                         return GetPages(s, {k1, k2}).status;
                       },
                   .absent_blocks = {k2}});
  cases.push_back({.name = "GetPagesBlocksOfDifferentFormats",
                   .code = C::FAILED_PRECONDITION,
                   .field = "block_keys[1]",
                   .setup =
                       [](Stub& s) {
                         PutCommitted(s, 1);
                         ASSERT_GRPC_OK(PutBlocks(s, MakeFormat("int4"),
                                                  {NewBlock(MakeFormat("int4"), 3)})
                                            .status);
                       },
                   .call =
                       [=](Stub& s) {
                         return GetPages(s, {k1, k3}).status;
                       }});
  cases.push_back({.name = "GetPagesIncompleteBlock",
                   .code = C::NOT_FOUND,
                   .field = "block_keys[0]",
                   .setup = [](Stub& s) { PutFirstTwoLayers(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}).status; },
                   .absent_blocks = {k1}});
  // Sessions.
  cases.push_back({.name = "SessionMissing",
                   .code = kInvalid,
                   .field = "session",
                   .call = [](Stub& s) {
                     v1::PutSessionResponse r;
                     return Unary(s, &Stub::PutSession, v1::PutSessionRequest(), &r);
                   }});
  cases.push_back({.name = "SessionIdEmpty",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(s,
                                           [](v1::Session& x) { x.set_session_id(""); });
                   }});
  cases.push_back({.name = "SessionIdWithSpace",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(
                         s, [](v1::Session& x) { x.set_session_id("chat 1"); });
                   }});
  cases.push_back({.name = "SessionIdWithControlByte",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(
                         s, [](v1::Session& x) { x.set_session_id("chat\n1"); });
                   }});
  cases.push_back({.name = "SessionIdTooLong",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(s, [](v1::Session& x) {
                       x.set_session_id(std::string(1025, 'a'));
                     });
                   }});
  cases.push_back({.name = "SessionFormatMissing",
                   .code = kInvalid,
                   .field = "session.format",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s,
                                               [](v1::Session& x) { x.clear_format(); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionFormatInvalid",
                   .code = kInvalid,
                   .field = "session.format.codec",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s, [](v1::Session& x) {
                           x.mutable_format()->set_codec("nope");
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionBlockKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "session.block_keys[1]",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_block_keys(1, "short"); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTokenCountBelowItsBlocks",
                   .code = kInvalid,
                   .field = "session.token_count",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(20); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTokenCountAFullBlockPastItsBlocks",
                   .code = kInvalid,
                   .field = "session.token_count",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(48); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailMissing",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s, [](v1::Session& x) { x.clear_tail(); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailWithOneLayersRows",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [=](Stub& s) {
                         return PutSessionWith(s, [=](v1::Session& x) {
                           x.set_tail(NewPage("int8", g, 504, 5));
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailOnBlockBoundary",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(32); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailCorrupt",
                   .code = C::DATA_LOSS,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { (*x.mutable_tail())[100] ^= 0x10; });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailOfOtherCodec",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [=](Stub& s) {
                         return PutSessionWith(s, [=](v1::Session& x) {
                           x.set_tail(NewPage("int4", g, 505, 20));
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionNegativeTtl",
                   .code = kInvalid,
                   .field = "session.ttl_ms",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s,
                                               [](v1::Session& x) { x.set_ttl_ms(-1); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "ListSessionsLimitTooBig",
                   .code = kInvalid,
                   .field = "limit",
                   .call = [](Stub& s) {
                     v1::ListSessionsRequest r;
                     r.set_limit(100001);
                     v1::ListSessionsResponse out;
                     return Unary(s, &Stub::ListSessions, r, &out);
                   }});
  cases.push_back({.name = "GetSessionBadId",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     v1::GetSessionResponse r;
                     return GetSession(s, "a b", &r);
                   }});
  cases.push_back({.name = "DeleteSessionBadId",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) { return DeleteSession(s, ""); }});
  cases.push_back(
      {.name = "TouchSessionBadId",
       .code = kInvalid,
       .field = "session_id",
       .call = [](Stub& s) { return TouchSession(s, std::string(2000, 'x')); }});
  cases.push_back({.name = "DeleteUnknownSession",
                   .code = C::NOT_FOUND,
                   .field = "session",
                   .call = [](Stub& s) { return DeleteSession(s, "nobody"); }});
  return cases;
}

void PrintTo(const BadInput& c, std::ostream* os) { *os << c.name; }

class BadInputTest : public ServiceTest,
                     public ::testing::WithParamInterface<BadInput> {};

TEST_P(BadInputTest, IsRejectedAndStoresNothing) {
  const BadInput& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  if (c.setup) {
    ASSERT_NO_FATAL_FAILURE(c.setup(*stub_));
  }
  const v1::GetStatsResponse before = Stats(*stub_);
  const std::vector<std::string> sessions_before = ListSessions(*stub_);

  EXPECT_TRUE(IsError(c.call(*stub_), c.code, c.field));

  const v1::GetStatsResponse after = Stats(*stub_);
  EXPECT_EQ(after.tenant_bytes(), before.tenant_bytes()) << "page bytes were stored";
  EXPECT_EQ(after.tenant_blocks(), before.tenant_blocks()) << "blocks were created";
  EXPECT_EQ(after.total_bytes(), before.total_bytes());
  EXPECT_EQ(ListSessions(*stub_), sessions_before);
  for (const std::string& key : c.absent_blocks) {
    EXPECT_EQ(Lookup(*stub_, {key}).committed_prefix, 0u);
    EXPECT_EQ(GetPages(*stub_, {key}).status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  for (const std::string& id : c.absent_sessions) {
    v1::GetSessionResponse r;
    EXPECT_EQ(GetSession(*stub_, id, &r).error_code(), grpc::StatusCode::NOT_FOUND) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInputTest, ::testing::ValuesIn(BadInputs()),
                         [](const ::testing::TestParamInfo<BadInput>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------
// Health, reflection, metrics.

std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

grpc::ByteBuffer FromBytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// grpc.health.v1.Health/Check for `service` over a generic stub (the health
// proto is not installed); returns the raw HealthCheckResponse.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service, std::string* response) {
  grpc::GenericStub stub(channel);
  // HealthCheckRequest { string service = 1; }
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  const grpc::ByteBuffer req = FromBytes(request);
  grpc::ByteBuffer resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  grpc::Status status;
  // absl::Notification may be destroyed as soon as the waiter wakes.
  absl::Notification done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &req, &resp,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  *response = ToBytes(resp);
  return status;
}

TEST_F(ServiceTest, HealthServiceReportsServing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "", &response));
  // HealthCheckResponse { status: SERVING (1) }
  EXPECT_EQ(response, std::string("\x08\x01", 2));
  EXPECT_EQ(HealthCheck(server_.Channel(), "no.such.Service", &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// One ServerReflectionInfo exchange: a single request, every response.
class ReflectionCall final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectionCall(const std::shared_ptr<grpc::Channel>& channel,
                 const std::string& request)
      : stub_(channel), request_(FromBytes(request)) {
    SetDeadline(&ctx_);
    stub_.PrepareBidiStreamingCall(
        &ctx_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    responses_.push_back(ToBytes(response_));
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.Notify();
  }

  // Waits for the call to end; the responses are complete then.
  grpc::Status Await() {
    done_.WaitForNotification();
    return status_;
  }
  const std::vector<std::string>& responses() const { return responses_; }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::ByteBuffer request_, response_;
  std::vector<std::string> responses_;
  grpc::Status status_;
  absl::Notification done_;
};

// Length-delimited fields number `field` of a serialized message.
std::vector<std::string> Fields(const std::string& message, int field) {
  google::protobuf::UnknownFieldSet set;
  std::vector<std::string> out;
  if (!set.ParseFromString(message)) return out;
  for (int i = 0; i < set.field_count(); ++i) {
    const google::protobuf::UnknownField& f = set.field(i);
    if (f.number() == field &&
        f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

TEST_F(ServiceTest, ReflectionListsTheKvCacheService) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  // ServerReflectionRequest { list_services (7): "*" }
  ReflectionCall call(server_.Channel(), std::string("\x3a\x01*", 3));
  ASSERT_GRPC_OK(call.Await());
  ASSERT_EQ(call.responses().size(), 1u);
  // ServerReflectionResponse.list_services_response (6) .service (1) .name (1)
  std::vector<std::string> names;
  for (const std::string& list : Fields(call.responses()[0], 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (const std::string& name : Fields(service, 1)) names.push_back(name);
    }
  }
  EXPECT_THAT(names, ::testing::Contains("qaqkv.v1.KvCache"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
}

// The value of the sample `series` (name and labels exactly as exposed).
std::optional<double> Sample(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') {
      const size_t begin = at + series.size() + 1;
      const size_t end = text.find('\n', begin);
      double v = 0;
      if (absl::SimpleAtod(text.substr(begin, end - begin), &v)) return v;
      return std::nullopt;
    }
    at += series.size();
  }
  return std::nullopt;
}

TEST_F(ServiceTest, MetricsCountRequestsAndTenantBytes) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  // The bound metrics port is in the startup line, written before the port
  // file, so it is there now.
  const std::string log = server_.Log();
  const std::string marker = "metrics on port ";
  size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  at += marker.size();
  const size_t end = log.find_first_not_of("0123456789", at);
  int metrics_port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(log.substr(at, end - at), &metrics_port)) << log;
  httplib::Client http("127.0.0.1", metrics_port);
  http.set_connection_timeout(30);
  http.set_read_timeout(30);
  auto scrape = [&]() -> std::string {
    auto res = http.Get("/metrics");
    if (!res || res->status != 200) return "";
    return res->body;
  };

  const TestBlock block = NewBlock(format_, 121);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {block}).status);
  for (int i = 0; i < 3; ++i) ASSERT_GRPC_OK(Lookup(*stub_, {block.key}).status);
  ASSERT_GRPC_OK(GetPages(*stub_, {block.key}).status);
  EXPECT_EQ(GetPages(*stub_, {MakeBlockKey(122)}).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Lookup(*stub_, {"short"}).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Unary calls are counted before they finish; streams when their reactor
  // is torn down, just after the client saw the status: poll for those.
  const std::vector<std::pair<std::string, double>> want = {
      {R"(qaqkv_requests_total{rpc="Lookup",code="OK"})", 3},
      {R"(qaqkv_requests_total{rpc="Lookup",code="INVALID_ARGUMENT"})", 1},
      {R"(qaqkv_requests_total{rpc="PutPages",code="OK"})", 1},
      {R"(qaqkv_requests_total{rpc="GetPages",code="OK"})", 1},
      {R"(qaqkv_requests_total{rpc="GetPages",code="NOT_FOUND"})", 1},
      {R"(qaqkv_requests_total{rpc="GetStats",code="OK"})", 0},
      {R"(qaqkv_pages_stored_total)", 4},
      {R"(qaqkv_pages_served_total)", 4},
      {R"(qaqkv_tenant_bytes{tenant="default"})", static_cast<double>(block.bytes())},
      {R"(qaqkv_tenant_blocks{tenant="default"})", 1},
  };
  std::string text;
  PollUntil([&] {
    text = scrape();
    for (const auto& [series, value] : want) {
      if (Sample(text, series) != value) return false;
    }
    return true;
  });
  for (const auto& [series, value] : want) {
    EXPECT_EQ(Sample(text, series), value) << series;
  }
  EXPECT_THAT(text, HasSubstr("# TYPE qaqkv_requests_total counter"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket"));
  // The gauge agrees with what the tenant sees.
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), block.bytes());
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(ServiceTest, TlsFilesThatDoNotFitAreRefusedAtStart) {
  TempDir pki_dir;
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  TempDir dir;
  const std::string d = pki.dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/client.key"},
       "--tls-key: does not match the first certificate in --tls-cert"},
      {{"--tls-cert=" + d + "/server.key", "--tls-key=" + d + "/server.key"},
       "--tls-cert: no PEM certificate"},
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.pem"},
       "--tls-key: no unencrypted PEM private key"},
      // A client CA file without a certificate would refuse every client
      // at the handshake instead.
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key",
        "--tls-client-ca=" + d + "/ca.key"},
       "--tls-client-ca: no PEM certificate"},
  };
  for (const auto& [flags, want] : cases) {
    std::vector<std::string> argv = {ServerBinary(), "--listen=127.0.0.1:0",
                                     "--data-dir=" + dir.path() + "/db"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto run = RunToExit(argv, absl::Seconds(60));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 2) << run->output;
    EXPECT_THAT(run->output, HasSubstr(want));
  }
}

// gRPC and cpp-httplib both set SO_REUSEPORT by default, which let a second
// server bind a port in use and take half of its connections.
TEST_F(ServiceTest, SecondServerCannotShareTheListenOrMetricsPort) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  const TestBlock block = NewBlock(format_, 93);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {block}).status);
  TempDir dir;
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

struct BadFlag {
  std::string name;
  std::vector<std::string> args;
  std::string flag;  // stderr must name it
};

void PrintTo(const BadFlag& f, std::ostream* os) { *os << f.name; }

class ServerFlagsTest : public ::testing::TestWithParam<BadFlag> {};

TEST_P(ServerFlagsTest, BadFlagExitsWithCode2NamingTheFlag) {
  TempDir dir;
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
        {"MaxMessageBytesBelow1MiB", {"--max-message-bytes=1000"}, "--max-message-bytes"},
        {"MaxMessageBytesAbove2GiB", {"--max-message-bytes=3GiB"}, "--max-message-bytes"},
        {"TenantQuotaNegative", {"--tenant-quota-bytes=-1"}, "--tenant-quota-bytes"},
        {"TenantMaxStreamsNegative", {"--tenant-max-streams=-1"}, "--tenant-max-streams"},
        {"DrainTimeoutNegative", {"--drain-timeout=-1s"}, "--drain-timeout"},
        {"TlsCertWithoutKey", {"--tls-cert=$DIR/empty"}, "--tls-cert"},
        {"TlsKeyWithoutCert", {"--tls-key=$DIR/empty"}, "--tls-key"},
        {"TlsClientCaWithoutCert", {"--tls-client-ca=$DIR/empty"}, "--tls-client-ca"},
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
        {"TenantMaxStreamsNotANumber", {"--tenant-max-streams=many"}, "tenant"},
        {"StoreThreadsNotANumber", {"--store-threads=abc"}, "--store-threads: \"abc\" is not valid: want a whole number"},
        {"SyncNotABool", {"--sync=maybe"}, "--sync: \"maybe\" is not valid: want true or false"},
        {"BlockTtlNegative", {"--block-ttl-ms=-1"}, "--block-ttl-ms"},
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
