// The contract where a client written only from the proto found the server
// and its docs apart: pages whose sections contradict themselves, session
// TTLs renewed by every access, a failed stream's partial pages, rewrites of
// stored pages, empty requests, and health during shutdown. Each test runs
// the real server (service_fixture.h).
#include <cstring>

#include "qaqkv/limits.h"
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

// Header fields of a page (docs/page-format.md): little-endian u32 section
// sizes at bytes 24 and 28, and the XXH3-64 trailer over everything before.
constexpr size_t kKBytesAt = 24, kVBytesAt = 28, kHeaderBytes = 32;

uint32_t GetU32(const std::string& page, size_t at) {
  uint32_t v;
  std::memcpy(&v, page.data() + at, 4);
  return v;
}
void SetU32(std::string& page, size_t at, uint32_t v) { std::memcpy(page.data() + at, &v, 4); }

// The page with its trailer recomputed, so only its inside is wrong.
std::string Resealed(std::string page) {
  const uint64_t sum = XXH3_64bits(page.data(), page.size() - 8);
  std::memcpy(page.data() + page.size() - 8, &sum, 8);
  return page;
}

// A page whose K section claims `delta` more bytes and V as many fewer.
std::string ShiftSections(std::string page, int32_t delta) {
  SetU32(page, kKBytesAt, GetU32(page, kKBytesAt) + delta);
  SetU32(page, kVBytesAt, GetU32(page, kVBytesAt) - delta);
  return Resealed(std::move(page));
}

v1::Session SessionWithTtl(const std::string& id, const v1::BlockFormat& format, int64_t ttl_ms) {
  v1::Session s;
  s.set_session_id(id);
  *s.mutable_format() = format;
  s.set_ttl_ms(ttl_ms);
  return s;
}

class ContractTest : public ServiceTest {};

TEST_F(ContractTest, PagesWhoseSectionsContradictThemselvesAreNeverStored) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const v1::Geometry g = SmallGeometry();
  struct Case {
    std::string name;
    v1::BlockFormat format;
    std::string page;
    grpc::StatusCode code;
    std::string message;
  };
  std::string many_exact = NewPage("qaq", g, 3);
  SetU32(many_exact, kHeaderBytes, (1u << 31) - 1);  // the K section's exact-group count
  const std::vector<Case> cases = {
      {"K section 64 bytes longer, V 64 shorter", MakeFormat("int8"),
       ShiftSections(NewPage("int8", g, 1), 64), grpc::StatusCode::DATA_LOSS,
       "pages[0].data: page: K section has 64 unexplained bytes"},
      {"K section claims 2^31-1 exact groups", MakeFormat("qaq"), Resealed(many_exact),
       grpc::StatusCode::DATA_LOSS, "pages[0].data: page: K section lists 2147483647 exact groups"},
      {"fp16 sections differ from the shape", MakeFormat("fp16"),
       ShiftSections(NewPage("fp16", g, 2), 2), grpc::StatusCode::DATA_LOSS,
       "pages[0].data: page: K section has 2 unexplained bytes"},
      {"a qaq-cs page under format qaq", MakeFormat("qaq"), NewPage("qaq-cs", g, 4),
       grpc::StatusCode::INVALID_ARGUMENT, "pages[0].data: page: written as flags"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::PutPagesRequest msg;
    *msg.mutable_format() = c.format;
    v1::Page* page = msg.add_pages();
    page->set_block_key(MakeBlockKey(7));
    page->set_layer(0);
    page->set_data(c.page);
    const PutResult put = PutPages(*stub_, {msg});
    EXPECT_EQ(put.status.error_code(), c.code) << StatusText(put.status);
    EXPECT_THAT(put.status.error_message(), HasSubstr(c.message));
    EXPECT_EQ(Stats(*stub_).total_bytes(), 0u);
  }
}

TEST_F(ContractTest, GetSessionRenewsTheTtlAsTouchSessionDoes) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  constexpr int64_t kTtlMs = 1500;
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl("renewed", format_, kTtlMs)));
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl("left", format_, kTtlMs)));
  v1::GetSessionResponse first;
  ASSERT_GRPC_OK(GetSession(*stub_, "renewed", &first));
  // Four reads 600 ms apart span 2.4 s, well past the TTL: each renews it.
  int64_t last_access = first.session().accessed_ms();
  for (int i = 0; i < 4; ++i) {
    absl::SleepFor(absl::Milliseconds(600));
    v1::GetSessionResponse r;
    SCOPED_TRACE(absl::StrCat("read ", i));
    ASSERT_GRPC_OK(GetSession(*stub_, "renewed", &r));
    EXPECT_GT(r.session().accessed_ms(), last_access);
    last_access = r.session().accessed_ms();
  }
  // The session nobody read expired meanwhile; unread, the other expires too.
  v1::GetSessionResponse gone;
  EXPECT_EQ(GetSession(*stub_, "left", &gone).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(ListSessions(*stub_), ElementsAre("renewed"));
  absl::SleepFor(absl::Milliseconds(kTtlMs + 500));
  EXPECT_EQ(GetSession(*stub_, "renewed", &gone).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ContractTest, SessionRenewalSurvivesARestart) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  constexpr absl::Duration kTtl = absl::Seconds(5);
  const absl::Time put = absl::Now();
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl("kept", format_, absl::ToInt64Milliseconds(kTtl))));
  absl::SleepFor(absl::Seconds(3));
  v1::GetSessionResponse r;
  ASSERT_GRPC_OK(GetSession(*stub_, "kept", &r));  // renewed: now valid until put + 8 s
  const int64_t renewed = r.session().accessed_ms();
  // Maintenance writes renewals back within a second; then a clean restart.
  absl::SleepFor(absl::Milliseconds(1200));
  stub_.reset();
  ASSERT_TRUE(server_.Terminate().ok());
  ASSERT_TRUE(server_.Restart().ok());
  stub_ = server_.Stub();
  // Past the TTL counted from the put: only the renewal keeps it alive.
  const absl::Time past_first_ttl = put + kTtl + absl::Milliseconds(300);
  if (absl::Now() < past_first_ttl) absl::SleepFor(past_first_ttl - absl::Now());
  ASSERT_GRPC_OK(GetSession(*stub_, "kept", &r));
  EXPECT_GE(r.session().accessed_ms(), renewed);
}

// A delete leaves a tombstone the wire reports (qaqkv-deleted-ms, listing
// versions), which refuses an older copy put as a repair, survives a
// restart, and gives way to a new put.
TEST_F(ContractTest, DeletedSessionsKeepATombstoneThatRefusesOlderCopies) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl("chat", format_, 0)));
  v1::GetSessionResponse live;
  ASSERT_GRPC_OK(GetSession(*stub_, "chat", &live));
  EXPECT_GT(live.session().updated_ms(), 0);
  v1::GetSessionRequest version_only;
  version_only.set_session_id("chat");
  version_only.set_version_only(true);
  v1::GetSessionResponse version;
  ASSERT_GRPC_OK(Unary(*stub_, &Stub::GetSession, version_only, &version));
  EXPECT_EQ(version.session().updated_ms(), live.session().updated_ms());
  EXPECT_TRUE(version.session().tail().empty());
  EXPECT_FALSE(version.session().has_format());

  v1::DeleteSessionRequest erase;
  erase.set_session_id("chat");
  v1::DeleteSessionResponse erased;
  ASSERT_GRPC_OK(Unary(*stub_, &Stub::DeleteSession, erase, &erased));
  stub_.reset();
  ASSERT_TRUE(server_.Terminate().ok());
  ASSERT_TRUE(server_.Restart().ok());
  stub_ = server_.Stub();

  grpc::ClientContext ctx;
  v1::GetSessionRequest get;
  get.set_session_id("chat");
  v1::GetSessionResponse gone;
  EXPECT_EQ(stub_->GetSession(&ctx, get, &gone).error_code(), grpc::StatusCode::NOT_FOUND);
  const auto& trailers = ctx.GetServerTrailingMetadata();
  const auto it = trailers.find("qaqkv-deleted-ms");
  ASSERT_NE(it, trailers.end());
  const int64_t deleted_ms = std::stoll(std::string(it->second.data(), it->second.size()));
  EXPECT_GT(deleted_ms, live.session().updated_ms());
  EXPECT_THAT(ListSessions(*stub_), ::testing::IsEmpty());
  v1::ListSessionsRequest list;
  list.set_versions(true);
  v1::ListSessionsResponse listed;
  ASSERT_GRPC_OK(Unary(*stub_, &Stub::ListSessions, list, &listed));
  ASSERT_EQ(listed.versions_size(), 1);
  EXPECT_EQ(listed.versions(0).deleted_ms(), deleted_ms);

  v1::PutSessionRequest repair;
  *repair.mutable_session() = live.session();
  repair.set_repair(true);
  v1::PutSessionResponse put;
  EXPECT_EQ(Unary(*stub_, &Stub::PutSession, repair, &put).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GetSession(*stub_, "chat", &gone).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl("chat", format_, 0)));
  ASSERT_GRPC_OK(GetSession(*stub_, "chat", &live));
  EXPECT_GT(live.session().updated_ms(), deleted_ms);
}

// ListBlocks and DeleteBlocks act for the caller's tenant only.
TEST_F(ContractTest, BlockListingAndDeletingStayWithinTheTenant) {
  const std::string tokens = server_.dir() + "/tokens";
  WriteFile(tokens, "secret-a tenant-a\nsecret-b tenant-b\n");
  ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-tokens=" + tokens}));
  auto a = server_.Stub({.bearer_token = "secret-a"});
  auto b = server_.Stub({.bearer_token = "secret-b"});
  const TestBlock x = NewBlock(format_, 71), y = NewBlock(format_, 72);
  ASSERT_GRPC_OK(PutBlocks(*a, format_, {x, y}).status);
  v1::ListBlocksRequest list;
  v1::ListBlocksResponse listed;
  ASSERT_GRPC_OK(Unary(*b, &Stub::ListBlocks, list, &listed));
  EXPECT_EQ(listed.blocks_size(), 0);
  ASSERT_GRPC_OK(Unary(*a, &Stub::ListBlocks, list, &listed));
  ASSERT_EQ(listed.blocks_size(), 2);
  EXPECT_LT(listed.blocks(0).block_key(), listed.blocks(1).block_key());
  EXPECT_TRUE(listed.blocks(0).committed());
  EXPECT_EQ(listed.blocks(0).bytes() + listed.blocks(1).bytes(), x.bytes() + y.bytes());
  list.set_start_after(listed.blocks(0).block_key());
  v1::ListBlocksResponse rest;
  ASSERT_GRPC_OK(Unary(*a, &Stub::ListBlocks, list, &rest));
  ASSERT_EQ(rest.blocks_size(), 1);
  EXPECT_EQ(rest.blocks(0).block_key(), listed.blocks(1).block_key());

  v1::DeleteBlocksRequest erase;
  erase.add_block_keys(x.key);
  v1::DeleteBlocksResponse erased;
  ASSERT_GRPC_OK(Unary(*b, &Stub::DeleteBlocks, erase, &erased));
  EXPECT_EQ(erased.blocks_deleted(), 0u);  // another tenant's block is unknown
  EXPECT_EQ(Lookup(*a, {x.key}).committed_prefix, 1u);
  ASSERT_GRPC_OK(Unary(*a, &Stub::DeleteBlocks, erase, &erased));
  EXPECT_EQ(erased.blocks_deleted(), 1u);
  EXPECT_EQ(Lookup(*a, {x.key}).committed_prefix, 0u);
  EXPECT_EQ(Lookup(*a, {y.key}).committed_prefix, 1u);
}

TEST_F(ContractTest, StreamThatHitsTheQuotaTakesBackItsPartialBlocks) {
  const TestBlock a = NewBlock(format_, 31);
  const TestBlock b = NewBlock(format_, 32);
  // Room for A and two layers of B: the stream fails at B's pages, which
  // the store takes together (all four layers in one message).
  const uint64_t quota = a.bytes() + b.pages[0].size() + b.pages[1].size() + 16;
  ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--tenant-quota-bytes=", quota)}));
  const PutResult put = PutPages(*stub_, {PutMessage({a}, &format_), PutMessage({b})});
  EXPECT_TRUE(IsError(put.status, grpc::StatusCode::RESOURCE_EXHAUSTED,
                      "pages[4] to pages[7] (one block's pages, stored together)"))
      << StatusText(put.status);
  // A committed and stays; B's two stored layers were taken back.
  v1::GetStatsResponse stats = Stats(*stub_);
  EXPECT_EQ(stats.tenant_bytes(), a.bytes());
  EXPECT_EQ(stats.tenant_blocks(), 1u);
  EXPECT_EQ(Lookup(*stub_, {a.key, b.key}).committed_prefix, 1u);
  // The quota they held is free: those two layers fit again.
  v1::PutPagesRequest retry;
  *retry.mutable_format() = format_;
  *retry.add_pages() = PageOf(b, 0);
  *retry.add_pages() = PageOf(b, 1);
  const PutResult again = PutPages(*stub_, {retry});
  EXPECT_GRPC_OK(again.status);
  EXPECT_EQ(again.response.pages_existing(), 0u);
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), quota - 16);
}

// Memory-only, the store takes a message's pages one by one: the error names
// the page it stopped at, not a run, and the stream still takes back the
// partial block.
TEST_F(ContractTest, MemoryOnlyQuotaErrorNamesThePageItStoppedAt) {
  const TestBlock a = NewBlock(format_, 33);
  const TestBlock b = NewBlock(format_, 34);
  const uint64_t quota = a.bytes() + b.pages[0].size() + b.pages[1].size() + 16;
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--memory-only", absl::StrCat("--tenant-quota-bytes=", quota)}));
  const PutResult put = PutPages(*stub_, {PutMessage({a}, &format_), PutMessage({b})});
  ASSERT_EQ(put.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(put.status);
  EXPECT_THAT(put.status.error_message(), HasSubstr("pages[6]: tenant quota"));
  EXPECT_THAT(put.status.error_message(), ::testing::Not(HasSubstr("stored together")));
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), a.bytes());
  EXPECT_EQ(Lookup(*stub_, {a.key, b.key}).committed_prefix, 1u);
}

TEST_F(ContractTest, CancelledStreamTakesBackItsPartialBlocks) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const TestBlock done = NewBlock(format_, 41);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {done}).status);
  const TestBlock partial = NewBlock(format_, 42);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::PutPagesResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stream = stub_->PutPages(&ctx, &resp);
  ASSERT_TRUE(stream->Write(TwoMessageStream(format_, partial)[0]));
  const uint64_t with_partial = done.bytes() + partial.pages[0].size() + partial.pages[1].size();
  ASSERT_TRUE(PollUntil([&] { return Stats(*stub_).tenant_bytes() == with_partial; }));
  ctx.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(PollUntil([&] { return Stats(*stub_).tenant_bytes() == done.bytes(); }))
      << Stats(*stub_).tenant_bytes();
  EXPECT_EQ(Stats(*stub_).tenant_blocks(), 1u);
}

TEST_F(ContractTest, FirstStoredBytesOfAPageStayAndRewritesAreCounted) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const TestBlock first = NewBlock(format_, 51);
  TestBlock other = NewBlock(format_, 52);  // other bytes under the same key
  other.key = first.key;
  ASSERT_NE(other.pages[0], first.pages[0]);
  const PutResult a = PutBlocks(*stub_, format_, {first});
  ASSERT_GRPC_OK(a.status);
  EXPECT_EQ(a.response.pages_existing(), 0u);
  const PutResult b = PutBlocks(*stub_, format_, {other});
  ASSERT_GRPC_OK(b.status);
  EXPECT_EQ(b.response.pages_stored(), 4u);
  EXPECT_EQ(b.response.pages_existing(), 4u);
  EXPECT_THAT(b.response.committed_blocks(), ElementsAre(first.key));
  ExpectSamePages(GetPages(*stub_, {first.key}).pages, LayerMajor({first}, 0, 4));
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), first.bytes());
}

TEST_F(ContractTest, TwoPagesForOneLayerInOneMessageAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const TestBlock block = NewBlock(format_, 61);
  const TestBlock twin = NewBlock(format_, 62);
  v1::PutPagesRequest msg;
  *msg.mutable_format() = format_;
  *msg.add_pages() = PageOf(block, 0);
  *msg.add_pages() = PageOf(block, 1);
  v1::Page again = PageOf(twin, 0);
  again.set_block_key(block.key);
  *msg.add_pages() = again;
  const PutResult put = PutPages(*stub_, {msg});
  EXPECT_TRUE(IsError(put.status, grpc::StatusCode::INVALID_ARGUMENT,
                      "pages[2]: block and layer 0 already appear earlier in this message"));
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), 0u);
}

TEST_F(ContractTest, EmptyRequestsAnswerEmpty) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const LookupResult lookup = Lookup(*stub_, {});
  EXPECT_GRPC_OK(lookup.status);
  EXPECT_EQ(lookup.committed_prefix, 0u);
  const GetResult get = GetPages(*stub_, std::vector<std::string>{});
  EXPECT_GRPC_OK(get.status);
  EXPECT_TRUE(get.messages.empty());
}

TEST_F(ContractTest, LongestSessionIdOfTheContractRoundTrips) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string id(limits::kMaxSessionIdBytes, 's');
  ASSERT_GRPC_OK(PutSession(*stub_, SessionWithTtl(id, format_, 0)));
  v1::GetSessionResponse r;
  ASSERT_GRPC_OK(GetSession(*stub_, id, &r));
  EXPECT_EQ(r.session().session_id(), id);
  EXPECT_EQ(PutSession(*stub_, SessionWithTtl(id + "s", format_, 0)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

constexpr char kServing[] = "\x08\x01";
constexpr char kNotServing[] = "\x08\x02";

TEST_F(ContractTest, HealthNeedsNoTokenAndAnswersForTheServiceName) {
  const std::string tokens = server_.dir() + "/tokens";
  WriteFile(tokens, "secret-a tenant-a\n");
  ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-tokens=" + tokens}));
  for (const std::string& name : {std::string(), std::string("qaqkv.v1.KvCache")}) {
    std::string response;
    SCOPED_TRACE(name);
    ASSERT_GRPC_OK(HealthCheck(server_.Channel(), name, &response));
    EXPECT_EQ(response, std::string(kServing, 2)) << name;
  }
  // The service itself still wants a token.
  EXPECT_EQ(Lookup(*stub_, {}).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ContractTest, HealthAnswersNotServingWhileTheServerDrains) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--drain-timeout=60s"}));
  const TestBlock block = NewBlock(format_, 71);
  const std::vector<v1::PutPagesRequest> messages = TwoMessageStream(format_, block);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::PutPagesResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> stream = stub_->PutPages(&ctx, &resp);
  ASSERT_TRUE(stream->Write(messages[0]));
  ASSERT_TRUE(PollUntil([&] { return Stats(*stub_).tenant_bytes() > 0; }));
  const std::shared_ptr<grpc::Channel> channel = server_.Channel();
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(channel, "", &response));

  ASSERT_TRUE(server_.Signal(SIGTERM).ok());
  ASSERT_TRUE(PollUntil([&] {
    return HealthCheck(channel, "", &response).ok() && response == std::string(kNotServing, 2);
  })) << StatusText(HealthCheck(channel, "", &response));
  ASSERT_GRPC_OK(HealthCheck(channel, "qaqkv.v1.KvCache", &response));
  EXPECT_EQ(response, std::string(kNotServing, 2));
  // New calls are turned away so clients use another replica...
  EXPECT_TRUE(IsError(Lookup(*stub_, {block.key}).status, grpc::StatusCode::UNAVAILABLE,
                      "shutting down"));
  // ...while the stream in flight finishes and is acknowledged.
  EXPECT_TRUE(stream->Write(messages[1]));
  EXPECT_TRUE(stream->WritesDone());
  EXPECT_GRPC_OK(stream->Finish());
  EXPECT_THAT(resp.committed_blocks(), ElementsAre(block.key));
  stub_.reset();
  auto exit_code = server_.Wait();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
}

TEST_F(ContractTest, MetricsCountEveryMethodFromTheInterceptor) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  const std::string log = server_.Log();
  const size_t at = log.find("metrics on port ");
  ASSERT_NE(at, std::string::npos) << log;
  const int metrics_port = std::atoi(log.c_str() + at + std::strlen("metrics on port "));
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "", &response));
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "", &response));
  httplib::Client http("127.0.0.1", metrics_port);
  std::string text;
  ASSERT_TRUE(PollUntil([&] {
    auto res = http.Get("/metrics");
    text = res && res->status == 200 ? res->body : "";
    return Sample(text, R"(qaqkv_requests_total{rpc="grpc.health.v1.Health/Check",code="OK"})") ==
           2.0;
  })) << text;
  // Every KvCache method is listed from the start, and the store's figures
  // come per tier.
  EXPECT_EQ(Sample(text, R"(qaqkv_requests_total{rpc="AcceptTransfer",code="OK"})"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_background_errors_total"), 0.0);
  EXPECT_EQ(Sample(text, R"(qaqkv_tier_entries{tier="disk"})"), 0.0);
  EXPECT_TRUE(Sample(text, R"(qaqkv_tier_budget_bytes{tier="dram"})").has_value());
  // The disk tier's files: RocksDB's, and segments with nothing live yet.
  EXPECT_GT(Sample(text, "qaqkv_disk_file_bytes").value_or(-1), -1.0);
  EXPECT_EQ(Sample(text, "qaqkv_segment_live_bytes"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_segments_collected_total"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_pages_promoted_total"), 0.0);
  // Write-back is off by default: no limit, nothing waiting.
  EXPECT_EQ(Sample(text, "qaqkv_write_back_limit_bytes"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_write_back_dirty_bytes"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_segment_writes_total"), 0.0);
  EXPECT_EQ(Sample(text, "qaqkv_segment_syncs_total"), 0.0);

  // One message with two blocks' layers in a row: one segment write per
  // block, however many layers it has.
  const TestBlock a = NewBlock(format_, 61), b = NewBlock(format_, 62);
  ASSERT_GT(a.pages.size(), 1u);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {a, b}).status);
  ASSERT_TRUE(PollUntil([&] {
    auto res = http.Get("/metrics");
    text = res && res->status == 200 ? res->body : "";
    return Sample(text, "qaqkv_segment_writes_total").has_value();
  }));
  EXPECT_EQ(Sample(text, "qaqkv_segment_writes_total"), 2.0);
  EXPECT_EQ(Sample(text, "qaqkv_pages_stored_total"),
            static_cast<double>(a.pages.size() + b.pages.size()));
}

}  // namespace
}  // namespace qaqkv::service::testing
