// The KvCache service through the real server: put, get and lookup,
// sessions, concurrent clients and message size limits. Each test starts
// qaqkv-server as a child process on loopback with RocksDB in a temporary
// directory (service_fixture.h); pages are encoded by the kernels.
#include <cstdlib>
#include <cstring>

#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

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

// A block whose pages straddle two full messages (the C++ client fills
// messages of about 1 MiB whatever the block size) is still one segment
// write: the server holds the run a full message ends with until the next
// message or the stream's end. Held pages are stored before the stream is
// acknowledged, and a cancelled stream never stores them.
TEST_F(ServiceTest, BlockRunsAcrossFullMessagesAreWrittenOnce) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  const std::string log = server_.Log();
  const size_t at = log.find("metrics on port ");
  ASSERT_NE(at, std::string::npos) << log;
  httplib::Client http("127.0.0.1", std::atoi(log.c_str() + at + std::strlen("metrics on port ")));
  auto segment_writes = [&]() -> double {
    auto res = http.Get("/metrics");
    return res && res->status == 200
               ? Sample(res->body, "qaqkv_segment_writes_total").value_or(-1)
               : -1;
  };
  const v1::BlockFormat format = MakeFormat("fp16", BigGeometry());  // 4 layers of 256 KiB
  const TestBlock a = NewBlock(format, 141), b = NewBlock(format, 142), c = NewBlock(format, 143);
  ASSERT_GE(b.pages[0].size(), 256u << 10);

  // a's four layers and b's first two (1.5 MiB), then b's last two and c's
  // four (1.5 MiB): three blocks, three segment writes (b's halves stored as
  // they came would be four).
  v1::PutPagesRequest m1, m2;
  *m1.mutable_format() = format;
  for (uint32_t l = 0; l < 4; ++l) *m1.add_pages() = PageOf(a, l);
  for (uint32_t l = 0; l < 2; ++l) *m1.add_pages() = PageOf(b, l);
  for (uint32_t l = 2; l < 4; ++l) *m2.add_pages() = PageOf(b, l);
  for (uint32_t l = 0; l < 4; ++l) *m2.add_pages() = PageOf(c, l);
  const PutResult put = PutPages(*stub_, {m1, m2});
  ASSERT_GRPC_OK(put.status);
  EXPECT_THAT(put.response.committed_blocks(), ElementsAre(a.key, b.key, c.key));
  EXPECT_EQ(put.response.pages_stored(), 12u);
  EXPECT_EQ(segment_writes(), 3.0);
  ExpectSamePages(GetPages(*stub_, {a.key, b.key, c.key}).pages, LayerMajor({a, b, c}, 0, 4));

  // A stream that ends with a held run stores it before it is acknowledged
  // (the block stays incomplete: two of its four layers).
  const TestBlock d = NewBlock(format, 144), e = NewBlock(format, 145);
  v1::PutPagesRequest m3;
  *m3.mutable_format() = format;
  for (uint32_t l = 0; l < 4; ++l) *m3.add_pages() = PageOf(d, l);
  for (uint32_t l = 0; l < 2; ++l) *m3.add_pages() = PageOf(e, l);
  const PutResult tail = PutPages(*stub_, {m3});
  ASSERT_GRPC_OK(tail.status);
  EXPECT_THAT(tail.response.committed_blocks(), ElementsAre(d.key));
  EXPECT_EQ(tail.response.pages_stored(), 6u);
  EXPECT_EQ(segment_writes(), 5.0);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(),
            Bytes({a, b, c, d}) + e.pages[0].size() + e.pages[1].size());

  // Cancelled after a full message: the complete block before the held run
  // is stored and stays; the held run never reaches the store.
  const TestBlock f = NewBlock(format, 146), g = NewBlock(format, 147);
  v1::PutPagesRequest m4;
  *m4.mutable_format() = format;
  for (uint32_t l = 0; l < 4; ++l) *m4.add_pages() = PageOf(f, l);
  for (uint32_t l = 0; l < 2; ++l) *m4.add_pages() = PageOf(g, l);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::PutPagesResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stream = stub_->PutPages(&ctx, &resp);
  ASSERT_TRUE(stream->Write(m4));
  ASSERT_TRUE(PollUntil([&] { return Lookup(*stub_, {f.key}).committed_prefix == 1; }));
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  const uint64_t before = Bytes({a, b, c, d, f}) + e.pages[0].size() + e.pages[1].size();
  ASSERT_TRUE(PollUntil([&] { return Stats(*stub_).tenant_bytes() == before; }))
      << Stats(*stub_).tenant_bytes();
  EXPECT_EQ(segment_writes(), 6.0);
  EXPECT_EQ(Lookup(*stub_, {g.key}).committed_prefix, 0u);

  // A run that completes a block stored in part before (e's first two
  // layers, above) is not held: e commits with the message, and stays after
  // the stream is cancelled.
  const TestBlock h = NewBlock(format, 148);
  v1::PutPagesRequest m5;
  *m5.mutable_format() = format;
  for (uint32_t l = 0; l < 4; ++l) *m5.add_pages() = PageOf(h, l);
  for (uint32_t l = 2; l < 4; ++l) *m5.add_pages() = PageOf(e, l);
  grpc::ClientContext ctx2;
  SetDeadline(&ctx2);
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stream2 =
      stub_->PutPages(&ctx2, &resp);
  ASSERT_TRUE(stream2->Write(m5));
  ASSERT_TRUE(PollUntil([&] { return Lookup(*stub_, {e.key}).committed_prefix == 1; }));
  ctx2.TryCancel();
  EXPECT_EQ(stream2->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(Lookup(*stub_, {h.key, e.key}).committed_prefix, 2u);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), Bytes({a, b, c, d, e, f, h}));
  EXPECT_EQ(segment_writes(), 8.0);
}

}  // namespace
}  // namespace qaqkv::service::testing
