// Durability through the real server: restarts after SIGTERM and SIGKILL
// keep every acknowledged page, and SIGTERM drains streams in flight.
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

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

}  // namespace
}  // namespace qaqkv::service::testing
