// Client::OfferTransfer and AcceptTransfer: the cache service as the
// rendezvous of GPU-to-GPU transfers (kvcache.proto, TransferOffer).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"
#include "base/ids.h"
#include "base/status_macros.h"
#include "qaqkv/limits.h"
#include "kernels/codec.h"

namespace qaqkv::client {
namespace {

absl::Status ValidateTransferId(std::string_view id, std::string_view field) {
  return base::ValidatePrintableId(field, id, limits::kMaxTransferIdBytes);
}

}  // namespace

absl::Status Client::OfferTransfer(const TransferOffer& offer) {
  QAQKV_RETURN_IF_ERROR(ValidateTransferId(offer.transfer_id, "offer.transfer_id"));
  if (offer.nccl_unique_id.size() != limits::kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("offer.nccl_unique_id: ",
                                                   offer.nccl_unique_id.size(),
                                                   " bytes, expected ", limits::kNcclUniqueIdBytes));
  }
  const Geometry& g = offer.format.geometry;
  QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(g, "offer.format.geometry"));
  QAQKV_ASSIGN_OR_RETURN(const ::qaqkv::CodecConfig config,
                         internal::ParseCodec(offer.format.codec, "offer.format.codec"));
  if (offer.blocks.empty() || offer.blocks.size() > limits::kMaxTransferKeys) {
    return absl::InvalidArgumentError(absl::StrCat("offer.blocks: ", offer.blocks.size(),
                                                   " keys, must be 1..", limits::kMaxTransferKeys));
  }
  const int end = offer.layer_end == 0 ? g.num_layers : offer.layer_end;
  if (offer.layer_begin < 0 || end > g.num_layers || offer.layer_begin >= end) {
    return absl::InvalidArgumentError(absl::StrCat("offer.layer_end: layers [", offer.layer_begin,
                                                   ", ", offer.layer_end, ") of a ",
                                                   g.num_layers, "-layer geometry"));
  }
  const size_t want = offer.blocks.size() * static_cast<size_t>(end - offer.layer_begin);
  if (offer.page_bytes.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("offer.page_bytes: ", offer.page_bytes.size(),
                                                   " entries, expected blocks x layers = ", want));
  }
  for (size_t i = 0; i < offer.page_bytes.size(); ++i) {
    if (offer.page_bytes[i] == 0 || offer.page_bytes[i] > limits::kMaxTransferPageBytes) {
      return absl::InvalidArgumentError(absl::StrCat("offer.page_bytes[", i, "]: ",
                                                     offer.page_bytes[i], " not in [1, ",
                                                     limits::kMaxTransferPageBytes, "]"));
    }
  }
  if (offer.ttl < absl::ZeroDuration() ||
      offer.ttl > absl::Milliseconds(limits::kMaxTransferTtlMs)) {
    return absl::InvalidArgumentError(
        absl::StrCat("offer.ttl: not in [0, ", limits::kMaxTransferTtlMs, " ms]"));
  }
  v1::OfferTransferRequest request;
  v1::TransferOffer& o = *request.mutable_offer();
  o.set_transfer_id(offer.transfer_id);
  o.set_nccl_unique_id(offer.nccl_unique_id);
  *o.mutable_format()->mutable_geometry() = ToProto(g);
  o.mutable_format()->set_codec(config.Name());
  for (const BlockKey& key : offer.blocks) o.add_block_keys(KeyBytes(key));
  for (uint64_t bytes : offer.page_bytes) o.add_page_bytes(bytes);
  o.set_layer_begin(static_cast<uint32_t>(offer.layer_begin));
  o.set_layer_end(static_cast<uint32_t>(offer.layer_end));
  o.set_ttl_ms(absl::ToInt64Milliseconds(offer.ttl));
  return impl_->OfferTransfer(request);
}

absl::StatusOr<TransferOffer> Client::AcceptTransfer(std::string_view transfer_id,
                                                     absl::Duration wait) {
  QAQKV_RETURN_IF_ERROR(ValidateTransferId(transfer_id, "transfer_id"));
  const absl::Time end = absl::Now() + wait;
  absl::Duration backoff = absl::Milliseconds(2);
  for (;;) {
    absl::StatusOr<v1::TransferOffer> got = impl_->AcceptTransfer(std::string(transfer_id));
    if (got.ok()) {
      TransferOffer offer;
      offer.transfer_id = got->transfer_id();
      offer.nccl_unique_id = got->nccl_unique_id();
      offer.format = BlockFormat{FromProto(got->format().geometry()), got->format().codec()};
      for (int i = 0; i < got->block_keys_size(); ++i) {
        QAQKV_ASSIGN_OR_RETURN(BlockKey key, KeyFromBytes(got->block_keys(i),
                                                          absl::StrCat("offer.block_keys[", i, "]")));
        offer.blocks.push_back(key);
      }
      offer.layer_begin = static_cast<int>(got->layer_begin());
      offer.layer_end = static_cast<int>(got->layer_end());
      offer.page_bytes.assign(got->page_bytes().begin(), got->page_bytes().end());
      offer.ttl = absl::Milliseconds(got->ttl_ms());
      return offer;
    }
    // Not offered yet (or a server that could not answer): poll.
    if (!absl::IsNotFound(got.status()) && !absl::IsUnavailable(got.status()) &&
        !absl::IsDeadlineExceeded(got.status())) {
      return got.status();
    }
    if (absl::Now() + backoff > end) {
      return absl::DeadlineExceededError(absl::StrCat(
          "transfer_id: no offer '", absl::string_view(transfer_id.data(), transfer_id.size()),
          "' within the wait (last: ", got.status().message(), ")"));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(100));
  }
}

}  // namespace qaqkv::client
