#include "service/transfer_broker.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/ids.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "qaqkv/limits.h"
#include "service/validate.h"

namespace qaqkv::service {

using base::AsAbsl;
using base::MutexLock;

namespace {

absl::Status ValidateOffer(const v1::TransferOffer& o) {
  QAQKV_RETURN_IF_ERROR(ValidateTransferId(o.transfer_id(), "offer.transfer_id"));
  if (o.nccl_unique_id().size() != limits::kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("offer.nccl_unique_id: ",
                                                   o.nccl_unique_id().size(),
                                                   " bytes, expected ", limits::kNcclUniqueIdBytes));
  }
  if (!o.has_format()) return absl::InvalidArgumentError("offer.format: missing");
  QAQKV_RETURN_IF_ERROR(ValidateFormat(o.format(), "offer.format").status());
  if (o.block_keys_size() == 0) return absl::InvalidArgumentError("offer.block_keys: empty");
  QAQKV_RETURN_IF_ERROR(
      ValidateBlockKeys(o.block_keys(), "offer.block_keys", limits::kMaxTransferKeys).status());
  const uint32_t layers = o.format().geometry().num_layers();
  const uint32_t end = o.layer_end() == 0 ? layers : o.layer_end();
  if (end > layers || o.layer_begin() >= end) {
    return absl::InvalidArgumentError(absl::StrCat(
        end > layers ? "offer.layer_end" : "offer.layer_begin", ": layers [", o.layer_begin(), ", ",
        o.layer_end(), ") of a ", layers, "-layer format"));
  }
  const uint64_t want = uint64_t(o.block_keys_size()) * (end - o.layer_begin());
  if (uint64_t(o.page_bytes_size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat("offer.page_bytes: ", o.page_bytes_size(),
                                                   " entries, expected block_keys x layers = ",
                                                   want));
  }
  for (int i = 0; i < o.page_bytes_size(); ++i) {
    if (o.page_bytes(i) == 0 || o.page_bytes(i) > limits::kMaxTransferPageBytes) {
      return absl::InvalidArgumentError(absl::StrCat("offer.page_bytes[", i, "]: ",
                                                     o.page_bytes(i), " not in [1, ",
                                                     limits::kMaxTransferPageBytes, "]"));
    }
  }
  if (o.ttl_ms() < 0 || o.ttl_ms() > limits::kMaxTransferTtlMs) {
    return absl::InvalidArgumentError(absl::StrCat("offer.ttl_ms: ", o.ttl_ms(), " not in [0, ",
                                                   limits::kMaxTransferTtlMs, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTransferId(std::string_view id, std::string_view field) {
  return base::ValidatePrintableId(field, id, limits::kMaxTransferIdBytes);
}

std::string TransferBroker::Key(std::string_view tenant, std::string_view id) {
  // Tenant names hold no NUL, so the pair maps to one key and back.
  return absl::StrCat(AsAbsl(tenant), absl::string_view("\0", 1), AsAbsl(id));
}

void TransferBroker::ExpireLocked(absl::Time now) {
  for (auto it = offers_.begin(); it != offers_.end();) {
    if (it->second.expires > now) {
      ++it;
      continue;
    }
    Release(it->first.substr(0, it->first.find('\0')), it->second.bytes);
    offers_.erase(it++);
  }
}

absl::Status TransferBroker::Offer(const std::string& tenant, const v1::TransferOffer& offer,
                                   absl::Time now) {
  QAQKV_RETURN_IF_ERROR(ValidateOffer(offer));
  const absl::Duration ttl = absl::Milliseconds(
      offer.ttl_ms() == 0 ? limits::kDefaultTransferTtlMs : offer.ttl_ms());
  MutexLock lock(&mu_);
  ExpireLocked(now);
  std::string key = Key(tenant, offer.transfer_id());
  if (offers_.contains(key)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "offer.transfer_id: '", offer.transfer_id(), "' is already offered and not yet accepted"));
  }
  // Offers are held in memory: both their number and their size are capped
  // per tenant, so one tenant cannot fill the server with offers nobody
  // accepts.
  const uint64_t bytes = offer.ByteSizeLong();
  Held& held = per_tenant_[tenant];
  if (held.offers >= limits::kMaxPendingTransfersPerTenant) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "offer: ", held.offers, " transfers already pending for this tenant (at most ",
        limits::kMaxPendingTransfersPerTenant, ")"));
  }
  if (held.bytes + bytes > limits::kMaxPendingTransferBytesPerTenant) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "offer: ", bytes, " bytes on top of the ", held.bytes,
        " pending for this tenant pass the limit of ", limits::kMaxPendingTransferBytesPerTenant));
  }
  ++held.offers;
  held.bytes += bytes;
  offers_.emplace(std::move(key), Pending{offer, now + ttl, bytes});
  return absl::OkStatus();
}

absl::StatusOr<v1::TransferOffer> TransferBroker::Accept(const std::string& tenant,
                                                        std::string_view id, absl::Time now) {
  QAQKV_RETURN_IF_ERROR(ValidateTransferId(id, "transfer_id"));
  MutexLock lock(&mu_);
  ExpireLocked(now);
  auto it = offers_.find(Key(tenant, id));
  if (it == offers_.end()) {
    return absl::NotFoundError(absl::StrCat("transfer_id: no pending offer '", AsAbsl(id), "'"));
  }
  v1::TransferOffer offer = std::move(it->second.offer);
  Release(tenant, it->second.bytes);
  offers_.erase(it);
  return offer;
}

void TransferBroker::Release(const std::string& tenant, uint64_t bytes) {
  auto it = per_tenant_.find(tenant);
  if (it == per_tenant_.end()) return;
  it->second.bytes -= bytes;
  if (--it->second.offers == 0) per_tenant_.erase(it);
}

size_t TransferBroker::pending() const {
  MutexLock lock(&mu_);
  return offers_.size();
}

}  // namespace qaqkv::service
