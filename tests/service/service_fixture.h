// What the service tests share: the fixture that starts the real
// qaqkv-server (server_process.h), assertion macros, and wrappers of the RPCs
// with a deadline. Every test file of tests/service includes this; each test
// starts its own server on a free loopback port with a fresh RocksDB.
#ifndef QAQKV_TESTS_SERVICE_SERVICE_FIXTURE_H_
#define QAQKV_TESTS_SERVICE_SERVICE_FIXTURE_H_

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
inline ::testing::AssertionResult IsError(const grpc::Status& status, grpc::StatusCode code,
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

inline TestBlock NewBlock(const v1::BlockFormat& format, uint64_t seed) {
  return MakeBlock(format, seed).value();
}

inline std::string NewPage(std::string_view codec, const v1::Geometry& g, uint64_t seed,
                    uint32_t tokens = 0) {
  return MakePage(codec, g, seed, tokens).value();
}

// Byte-identical pages in the same order (data compared without printing
// kilobytes of bytes on a mismatch).
inline void ExpectSamePages(const std::vector<v1::Page>& got,
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

inline std::vector<std::string> Keys(const std::vector<TestBlock>& blocks) {
  std::vector<std::string> keys;
  for (const TestBlock& b : blocks) keys.push_back(b.key);
  return keys;
}

inline uint64_t Bytes(const std::vector<TestBlock>& blocks) {
  uint64_t n = 0;
  for (const TestBlock& b : blocks) n += b.bytes();
  return n;
}

// The bound metrics port, from the startup line (written before the port
// file, so it is there once the server is up).
inline int MetricsPort(const std::string& log) {
  const std::string marker = "metrics on port ";
  size_t at = log.find(marker);
  if (at == std::string::npos) return 0;
  at += marker.size();
  int port = 0;
  const size_t end = log.find_first_not_of("0123456789", at);
  return absl::SimpleAtoi(log.substr(at, end - at), &port) ? port : 0;
}

// Polls `condition` until it holds (true) or `timeout` passes (false).
inline bool PollUntil(const std::function<bool()>& condition,
               absl::Duration timeout = absl::Seconds(60)) {
  for (const absl::Time deadline = absl::Now() + timeout; absl::Now() < deadline;) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return condition();
}

inline v1::GetStatsResponse Stats(Stub& stub) {
  v1::GetStatsResponse r;
  EXPECT_GRPC_OK(Unary(stub, &Stub::GetStats, v1::GetStatsRequest(), &r));
  return r;
}

inline std::vector<std::string> ListSessions(Stub& stub, uint32_t limit = 0) {
  v1::ListSessionsRequest req;
  req.set_limit(limit);
  v1::ListSessionsResponse resp;
  EXPECT_GRPC_OK(Unary(stub, &Stub::ListSessions, req, &resp));
  return {resp.session_ids().begin(), resp.session_ids().end()};
}

inline grpc::Status GetSession(Stub& stub, const std::string& id, v1::GetSessionResponse* resp) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  return Unary(stub, &Stub::GetSession, req, resp);
}

inline grpc::Status PutSession(Stub& stub, const v1::Session& session) {
  v1::PutSessionRequest req;
  *req.mutable_session() = session;
  v1::PutSessionResponse resp;
  return Unary(stub, &Stub::PutSession, req, &resp);
}

inline grpc::Status DeleteSession(Stub& stub, const std::string& id) {
  v1::DeleteSessionRequest req;
  req.set_session_id(id);
  v1::DeleteSessionResponse resp;
  return Unary(stub, &Stub::DeleteSession, req, &resp);
}

inline grpc::Status TouchSession(Stub& stub, const std::string& id) {
  v1::TouchSessionRequest req;
  req.set_session_id(id);
  v1::TouchSessionResponse resp;
  return Unary(stub, &Stub::TouchSession, req, &resp);
}

inline bool SameMessage(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

// Status of one GetStats on a fresh channel with `options`.
inline grpc::Status Probe(const ServerProcess& server, const ClientOptions& options) {
  std::unique_ptr<Stub> stub = server.Stub(options);
  v1::GetStatsResponse r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(30));
  return stub->GetStats(&ctx, v1::GetStatsRequest(), &r);
}

// Four layers of a block split over two messages (layers 0-1 with the
// format, then 2-3), so a stream is acknowledged only after both arrived.
inline std::vector<v1::PutPagesRequest> TwoMessageStream(const v1::BlockFormat& format,
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


inline std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

inline grpc::ByteBuffer FromBytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// grpc.health.v1.Health/Check for `service` over a generic stub (the health
// proto is not installed); returns the raw HealthCheckResponse.
inline grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
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

// The value of the sample `series` (name and labels exactly as exposed).
inline std::optional<double> Sample(const std::string& text, const std::string& series) {
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

}  // namespace qaqkv::service::testing

#endif  // QAQKV_TESTS_SERVICE_SERVICE_FIXTURE_H_
