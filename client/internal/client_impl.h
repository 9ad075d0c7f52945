// Client::Impl: the channels, the retry loop and the one grpc::Status ->
// absl::Status boundary. Private to client/.
#ifndef QAQKV_CLIENT_INTERNAL_CLIENT_IMPL_H_
#define QAQKV_CLIENT_INTERNAL_CLIENT_IMPL_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "client/internal/wire.h"
#include "client/internal/work_pool.h"
#include "qaqkv/client.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::client {

namespace v1 = ::qaqkv::v1;

// Pages are batched into messages of about this size: large enough to
// amortize per-message cost, small enough to keep the pipeline flowing.
inline constexpr size_t kBatchBytes = size_t{1} << 20;

// The only place a grpc::Status becomes an absl::Status: same code number,
// same message.
absl::Status FromGrpc(const grpc::Status& status);

v1::Geometry ToProto(const Geometry& g);
Geometry FromProto(const v1::Geometry& g);
std::string KeyBytes(const BlockKey& key);
// kInternal when the server sent a key of the wrong length.
absl::StatusOr<BlockKey> KeyFromBytes(const std::string& bytes, std::string_view field);
std::string KeyHex(const BlockKey& key);

// A source of pages for one PutPages stream; restartable so a stream can be
// retried as a whole.
class PageSource {
 public:
  virtual ~PageSource() = default;
  // Starts (or restarts) at the first page.
  virtual void Begin() = 0;
  // Fills `page` with the next page; false at the end. A page without an
  // owner must stay valid until the stream's call returns.
  virtual absl::StatusOr<bool> Next(internal::OutPage* page) = 0;
  // Stops producing: called when a stream ends early.
  virtual void Abort() {}
};

class Client::Impl {
 public:
  // One stub per channel, same order.
  Impl(ClientOptions options, std::vector<std::shared_ptr<grpc::Channel>> channels,
       int threads);

  const ClientOptions& options() const { return options_; }
  internal::WorkPool& pool() { return pool_; }

  // One attempt of a call: gets a fresh context (deadline, token) and a stub
  // (round-robin over the channels). Clearing `retryable` makes an
  // UNAVAILABLE final (e.g. a GetPages stream after a page was delivered).
  using Attempt =
      absl::FunctionRef<absl::Status(v1::KvCache::Stub& stub, grpc::ClientContext& context,
                                     bool& retryable)>;
  // Runs `attempt` until it succeeds, fails with a code other than
  // UNAVAILABLE, or RetryPolicy::max_attempts is spent.
  absl::Status Call(Attempt attempt);

  // Runs one PutPages stream (with retries) of `source`'s pages under `format`.
  absl::StatusOr<v1::PutPagesResponse> StreamPut(const v1::BlockFormat& format,
                                                 PageSource& source);

  // Runs one GetPages stream (with retries until a page was delivered),
  // checking that pages arrive layer-major in request order. `on_format`
  // sees the format before any page; `on_page` gets a view of each page
  // that stays valid while a copy of `keep` lives.
  absl::Status StreamGet(std::span<const BlockKey> blocks, int layer_begin, int layer_end,
                         absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
                         absl::FunctionRef<absl::Status(size_t block, int layer,
                                                        std::string_view data,
                                                        const std::shared_ptr<const void>& keep)>
                             on_page);

  // The session record as the server returns it (tail included).
  absl::StatusOr<v1::GetSessionResponse> GetSession(std::string_view session_id);

 private:
  void Prepare(grpc::ClientContext& context) const;
  absl::Duration Jitter(absl::Duration backoff);

  const ClientOptions options_;
  // The channel `stub` was made from (the page streams are raw calls on it).
  grpc::ChannelInterface* ChannelFor(const v1::KvCache::Stub& stub) const;

  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::KvCache::Stub>> stubs_;  // filled once, then read-only
  std::atomic<uint64_t> next_stub_{0};
  std::mutex rng_mu_;  // std::mutex: TSan cannot see into Debian's abseil
  absl::BitGen rng_;   // guarded by rng_mu_
  internal::WorkPool pool_;
};

}  // namespace qaqkv::client

#endif  // QAQKV_CLIENT_INTERNAL_CLIENT_IMPL_H_
