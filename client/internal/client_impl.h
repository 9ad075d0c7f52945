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
#include "client/internal/cluster.h"
#include "client/internal/link_pacer.h"
#include "client/internal/wire.h"
#include "base/thread_pool.h"
#include "qaqkv/client.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::client {

namespace v1 = ::qaqkv::v1;

// Pages are batched into messages of about this size: large enough to
// amortize per-message cost, small enough to keep the pipeline flowing
// (the server parses a message once all of it has arrived; 4 MiB cost puts
// at one client a fifth, docs/performance.md). A server with a disk tier
// still writes a block split over two messages in one piece (kvcache.proto).
inline constexpr size_t kBatchBytes = size_t{1} << 20;

// The only place a grpc::Status becomes an absl::Status: same code number,
// same message.
absl::Status FromGrpc(const grpc::Status& status);

v1::Geometry ToProto(const Geometry& g);
Geometry FromProto(const v1::Geometry& g);
std::string KeyBytes(const BlockKey& key);
// The key's bytes in place: what placement ranks.
inline std::string_view KeyView(const BlockKey& key) {
  return std::string_view(reinterpret_cast<const char*>(key.data()), key.size());
}
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

namespace internal {

// Pages already in memory, replayed as a PutPages stream.
class VectorSource final : public PageSource {
 public:
  explicit VectorSource(std::span<const OutPage> pages) : pages_(pages) {}
  void Begin() override { next_ = 0; }
  absl::StatusOr<bool> Next(OutPage* page) override {
    if (next_ == pages_.size()) return false;
    *page = pages_[next_++];
    return true;
  }

 private:
  std::span<const OutPage> pages_;
  size_t next_ = 0;
};

}  // namespace internal

// One connection of an attempt: the generated stub and the channel it was
// made from (the page streams are raw calls on the channel).
struct Conn {
  v1::KvCache::Stub& stub;
  grpc::ChannelInterface* channel;
};

class Client::Impl {
 public:
  Impl(ClientOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials, int threads);
  ~Impl();

  // Builds the first membership (resolving `discovery`) and starts the
  // health checker and the re-resolver when there may be several servers.
  absl::Status Start();

  const ClientOptions& options() const { return options_; }
  base::ThreadPool& pool() { return pool_; }

  // The servers now. Empty only while `discovery` has resolved none.
  std::shared_ptr<const internal::Membership> members() const;
  absl::Status SetServers(std::vector<internal::ServerAddress> servers);
  // Several servers possible: placement, replication and health apply.
  bool sharded() const { return !options_.servers.empty() || !options_.discovery.empty(); }
  // Calls go straight to the one server (or fail with NoServers when there
  // is none yet): no placement, no presence queries.
  bool OneServer(const internal::Membership& m) const {
    return !sharded() || m.endpoints.size() <= 1;
  }
  // The answer of every call while `discovery` has resolved no server.
  absl::Status NoServers() const;

  // One attempt of a call: gets a fresh context (deadline, token) and a
  // connection. Clearing `retryable` makes an UNAVAILABLE final (e.g. a
  // GetPages stream after a page was delivered).
  using Attempt =
      absl::FunctionRef<absl::Status(const Conn& conn, grpc::ClientContext& context,
                                     bool& retryable)>;
  // Runs `attempt` on `endpoint` until it succeeds, fails with a code other
  // than UNAVAILABLE, or `max_attempts` are spent; each attempt has
  // `deadline`. Transport failures eject the endpoint, success readmits it.
  absl::Status CallOn(internal::Endpoint& endpoint, Attempt attempt, absl::Duration deadline,
                      int max_attempts);
  // CallOn the one server of an unsharded client, with the retry policy.
  absl::Status Call(Attempt attempt);

  // Runs one PutPages stream (with retries) of `source`'s pages under
  // `format`: to the one server, or, sharded, to each block's replicas
  // (write quorum; see cluster.cc).
  absl::StatusOr<v1::PutPagesResponse> StreamPut(const v1::BlockFormat& format,
                                                 PageSource& source);

  // Runs GetPages for `blocks` (with retries until a page was delivered;
  // sharded: from each block's first replica that has it, failing over to
  // the next), delivering every page exactly once. One server delivers
  // layer-major in request order; several interleave their streams (each
  // layer-major). `on_format` sees the format before any page (once);
  // `on_page` gets each page where it was received (PageBytes), valid while
  // a copy of `keep` lives. Calls to on_format and on_page never overlap.
  using OnPage = absl::FunctionRef<absl::Status(size_t block, int layer, const PageBytes& data,
                                                const std::shared_ptr<const void>& keep)>;
  absl::Status StreamGet(std::span<const BlockKey> blocks, int layer_begin, int layer_end,
                         absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
                         OnPage on_page);

  // Longest committed prefix of `request.block_keys` (under its format, if
  // set), across the servers.
  absl::StatusOr<size_t> LookupPrefix(std::span<const BlockKey> blocks,
                                      const v1::BlockFormat* format);

  // The session record as the server returns it (tail included); sharded,
  // from the first replica that has it, with committed_prefix counted over
  // the cluster.
  absl::StatusOr<v1::GetSessionResponse> GetSession(std::string_view session_id);
  absl::Status PutSession(const v1::PutSessionRequest& request);
  // Touch (replicas) and Delete (every server: a copy may sit outside the
  // replicas after the membership changed).
  absl::Status TouchSession(std::string_view session_id);
  absl::Status DeleteSession(std::string_view session_id);
  absl::StatusOr<std::vector<std::string>> ListSessions(uint32_t limit);
  absl::StatusOr<v1::GetStatsResponse> GetStats();
  // The transfer rendezvous: an offer lives on the first server in
  // rendezvous order of its id that answers; Accept asks the first two.
  absl::Status OfferTransfer(const v1::OfferTransferRequest& request);
  absl::StatusOr<v1::TransferOffer> AcceptTransfer(const std::string& transfer_id);
  // rebalance.cc.
  absl::StatusOr<Client::RebalanceReport> Rebalance(
      const Client::RebalanceOptions& options,
      const std::function<void(const Client::RebalanceReport&)>& progress);

 private:
  void Prepare(grpc::ClientContext& context, absl::Duration deadline) const;
  absl::Duration Jitter(absl::Duration backoff);
  std::vector<std::shared_ptr<grpc::Channel>> MakeChannels(const std::string& address) const;
  void CheckHealth();
  void Rediscover();

  // The single-server page streams (one endpoint, retries per `attempts`).
  absl::StatusOr<v1::PutPagesResponse> StreamPutTo(internal::Endpoint& endpoint,
                                                   const v1::BlockFormat& format,
                                                   PageSource& source, int attempts);
  absl::Status StreamGetFrom(internal::Endpoint& endpoint, std::span<const BlockKey> blocks,
                             int layer_begin, int layer_end,
                             absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
                             OnPage on_page, int attempts);

  // Sharded forms (cluster.cc).
  struct Presence {
    // Per block: endpoints that have it committed, in candidate order.
    std::vector<std::vector<size_t>> holders;
    // Per block: endpoints among its R replicas that answered "not committed"
    // (read repair targets).
    std::vector<std::vector<size_t>> missing;
    // Per block: the failure of an endpoint that could not answer, if any.
    std::vector<absl::Status> unknown;
    // Per block: whether any endpoint asked about it answered.
    std::vector<bool> answered;

    // Leading blocks some server holds.
    size_t Prefix() const {
      size_t n = 0;
      while (n < holders.size() && !holders[n].empty()) ++n;
      return n;
    }
  };
  absl::StatusOr<Presence> FindBlocks(const internal::Membership& m,
                                      std::span<const BlockKey> blocks,
                                      const v1::BlockFormat* format);
  absl::StatusOr<v1::PutPagesResponse> ShardedPut(const internal::Membership& m,
                                                  const v1::BlockFormat& format,
                                                  PageSource& source);
  absl::Status ShardedGet(const std::shared_ptr<const internal::Membership>& members,
                          std::span<const BlockKey> blocks,
                          int layer_begin, int layer_end,
                          absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
                          OnPage on_page);
  // Runs `rpc` on each of `endpoints` at once (one attempt each, with
  // replica_deadline); a failure comes back with the server's name in front.
  std::vector<absl::Status> AskEach(
      const internal::Membership& m, std::span<const size_t> endpoints,
      absl::FunctionRef<absl::Status(size_t e, const Conn& c, grpc::ClientContext& context)> rpc);
  // Replica placement of `key`: every endpoint in rendezvous order, those
  // available now first (order kept within each group).
  std::vector<size_t> Candidates(const internal::Membership& m, std::string_view key) const;
  size_t Replicas(const internal::Membership& m) const;
  size_t WriteQuorum(const internal::Membership& m) const;

  const ClientOptions options_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  internal::LinkPacer link_;
  mutable std::mutex members_mu_;  // std::mutex: TSan cannot see into Debian's abseil
  std::shared_ptr<const internal::Membership> members_;  // guarded by members_mu_
  std::mutex rng_mu_;
  absl::BitGen rng_;  // guarded by rng_mu_
  base::ThreadPool pool_;
  // Read repair runs here, off the caller's path; declared after what its
  // tasks use so it drains first.
  base::ThreadPool repair_;
  // Last: stopped (joined) before anything they use goes away.
  std::unique_ptr<internal::Ticker> health_;
  std::unique_ptr<internal::Ticker> discovery_;
};

}  // namespace qaqkv::client

#endif  // QAQKV_CLIENT_INTERNAL_CLIENT_IMPL_H_
