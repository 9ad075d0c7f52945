// The KvCache gRPC service: kv_cache_service.cc holds the unary handlers,
// page_streams.cc the PutPages and GetPages streams. Private to service/.
//
// Handlers validate, call the store and finish on the thread gRPC calls
// them on: the store's calls are short (DRAM hits, or a RocksDB point read or
// WAL append), so a hand-off to another pool would cost more latency than it
// saves. PutPages' store writes are the exception when the store is on disk
// (they may wait on a WAL append or a write stall): they run on
// `store_writers`.
#ifndef QAQKV_SERVICE_INTERNAL_KV_CACHE_SERVICE_H_
#define QAQKV_SERVICE_INTERNAL_KV_CACHE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstddef>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "base/thread_pool.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"
#include "service/auth.h"
#include "service/metrics.h"
#include "service/transfer_broker.h"
#include "storage/tiered_store.h"

namespace qaqkv::service::internal {

// The one boundary where absl::Status becomes grpc::Status (same numbering).
grpc::Status ToGrpc(const absl::Status& s);

// GetPages is a raw method: its messages are assembled from the stored page
// buffers themselves (page_streams.cc), so serving a page copies it only
// into the socket.
class KvCacheService final
    : public v1::KvCache::WithRawCallbackMethod_GetPages<v1::KvCache::CallbackService> {
 public:
  struct Options {
    storage::TieredStore* store = nullptr;
    const TokenFile* tokens = nullptr;  // null: single tenant
    Metrics* metrics = nullptr;
    base::ThreadPool* store_writers = nullptr;  // null: writes on gRPC's threads
    int tenant_max_streams = 64;                // 0: no limit
    size_t max_message_bytes = 64 << 20;
  };
  explicit KvCacheService(const Options& options);

  // From now on every new call is refused with UNAVAILABLE (so clients move
  // to another replica) while calls in flight go on. Idempotent.
  void StartDraining() { draining_.store(true); }

  // The caller's tenant, or kUnauthenticated; kUnavailable once draining.
  absl::StatusOr<std::string> Admit(grpc::CallbackServerContext* ctx) const;
  // A slot for one open stream of `tenant`; kResourceExhausted past the limit.
  absl::Status AcquireStream(const std::string& tenant);
  void ReleaseStream(const std::string& tenant);

  storage::TieredStore& store() { return *store_; }
  Metrics& metrics() { return *metrics_; }
  base::ThreadPool* store_writers() const { return store_writers_; }
  // Page bytes per GetPages message.
  size_t get_message_bytes() const { return get_message_bytes_; }

  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* ctx, const v1::LookupRequest* req,
                                   v1::LookupResponse* resp) override;
  grpc::ServerReadReactor<v1::PutPagesRequest>* PutPages(grpc::CallbackServerContext* ctx,
                                                         v1::PutPagesResponse* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetPages(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* PutSession(grpc::CallbackServerContext* ctx,
                                       const v1::PutSessionRequest* req,
                                       v1::PutSessionResponse* resp) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* req,
                                       v1::GetSessionResponse* resp) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteSessionRequest* req,
                                          v1::DeleteSessionResponse* resp) override;
  grpc::ServerUnaryReactor* TouchSession(grpc::CallbackServerContext* ctx,
                                         const v1::TouchSessionRequest* req,
                                         v1::TouchSessionResponse* resp) override;
  grpc::ServerUnaryReactor* ListBlocks(grpc::CallbackServerContext* ctx,
                                       const v1::ListBlocksRequest* req,
                                       v1::ListBlocksResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteBlocks(grpc::CallbackServerContext* ctx,
                                         const v1::DeleteBlocksRequest* req,
                                         v1::DeleteBlocksResponse* resp) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest* req,
                                     v1::GetStatsResponse* resp) override;
  grpc::ServerUnaryReactor* OfferTransfer(grpc::CallbackServerContext* ctx,
                                          const v1::OfferTransferRequest* req,
                                          v1::OfferTransferResponse* resp) override;
  grpc::ServerUnaryReactor* AcceptTransfer(grpc::CallbackServerContext* ctx,
                                           const v1::AcceptTransferRequest* req,
                                           v1::AcceptTransferResponse* resp) override;

 private:
  // Runs a unary handler: admit the call, run `fn(tenant)`, finish.
  template <typename Fn>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, Fn fn);

  storage::TieredStore* const store_;
  const TokenFile* const tokens_;
  Metrics* const metrics_;
  base::ThreadPool* const store_writers_;
  const int tenant_max_streams_;
  const size_t get_message_bytes_;
  std::atomic<bool> draining_{false};
  TransferBroker transfers_;
  base::Mutex streams_mu_;
  absl::flat_hash_map<std::string, int> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace qaqkv::service::internal

#endif  // QAQKV_SERVICE_INTERNAL_KV_CACHE_SERVICE_H_
