// The rendezvous of GPU-to-GPU transfers (OfferTransfer / AcceptTransfer in
// kvcache.proto): offers held in memory per tenant until one receiver
// accepts them or they expire.
//
// Thread-safe. Offers are few and small (ids, keys and page sizes), so one
// mutex over one map is enough; expired offers are dropped on every call.
#ifndef QAQKV_SERVICE_TRANSFER_BROKER_H_
#define QAQKV_SERVICE_TRANSFER_BROKER_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::service {

class TransferBroker {
 public:
  // Validates `offer` (INVALID_ARGUMENT naming the field under "offer")
  // and holds it. ALREADY_EXISTS while an offer of that id is pending,
  // RESOURCE_EXHAUSTED past limits::kMaxPendingTransfersPerTenant offers or
  // limits::kMaxPendingTransferBytesPerTenant bytes (serialized) pending.
  absl::Status Offer(const std::string& tenant, const v1::TransferOffer& offer, absl::Time now);
  // Hands out the pending offer and forgets it: each offer is matched once.
  // NOT_FOUND when none of that id is pending for `tenant`.
  absl::StatusOr<v1::TransferOffer> Accept(const std::string& tenant, std::string_view id,
                                           absl::Time now);
  size_t pending() const;

 private:
  struct Pending {
    v1::TransferOffer offer;
    absl::Time expires;
    uint64_t bytes = 0;  // its serialized size, counted against the tenant
  };
  struct Held {
    size_t offers = 0;
    uint64_t bytes = 0;
  };
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(const std::string& tenant, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static std::string Key(std::string_view tenant, std::string_view id);

  mutable base::Mutex mu_;
  absl::flat_hash_map<std::string, Pending> offers_ ABSL_GUARDED_BY(mu_);  // by Key()
  absl::flat_hash_map<std::string, Held> per_tenant_ ABSL_GUARDED_BY(mu_);
};

// The checks Offer applies, for the client to apply before sending too.
absl::Status ValidateTransferId(std::string_view id, std::string_view field);

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_TRANSFER_BROKER_H_
