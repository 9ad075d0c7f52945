// GPU-to-GPU transfer of encoded pages over NCCL (disaggregated serving: a
// prefill worker hands a request's KV to a decode worker), with the cache
// service as the rendezvous (Client::OfferTransfer / AcceptTransfer) and,
// when asked, as the durable copy (Client::PutPages).
//
// Built only with CUDA and NCCL (QAQKV_ENABLE_CUDA, library
// qaqkv::client_nccl). Pages travel as opaque byte ranges in device memory,
// in the offer's order (layer-major over its blocks); the receiver decodes
// them with the GPU codec (kernels/cuda/codec_cuda.h). Each transfer uses a
// fresh two-rank communicator (sender rank 0, receiver rank 1), created
// non-blocking so that a peer that never comes is a timeout, not a hang.
//
// Thread-safety: one NcclTransport per thread and stream.
#ifndef QAQKV_CLIENT_NCCL_TRANSPORT_H_
#define QAQKV_CLIENT_NCCL_TRANSPORT_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/cuda/cuda_raii.h"
#include "qaqkv/client.h"

namespace qaqkv::client {

// A page in device memory.
struct DevicePageRef {
  const void* data = nullptr;
  size_t bytes = 0;
};

struct NcclSendRequest {
  std::string transfer_id;  // both workers know it (e.g. the request id)
  BlockFormat format;
  std::vector<BlockKey> blocks;
  int layer_begin = 0;
  int layer_end = 0;  // 0: all layers
  // blocks x layers pages, layer-major: every block's layer_begin first.
  std::vector<DevicePageRef> pages;
  // Also store these (the same pages on the host, checksum included, e.g.
  // from GpuCodec::Download) in the cache service, while the NCCL transfer
  // runs. Empty: nothing is stored.
  std::vector<EncodedPage> store;
  // For the receiver to join and the pages to arrive.
  absl::Duration timeout = absl::Seconds(30);
};

// Received pages, in one device buffer.
class NcclReceived {
 public:
  NcclReceived(NcclReceived&&) noexcept = default;
  NcclReceived& operator=(NcclReceived&&) noexcept = default;

  const TransferOffer& offer() const { return offer_; }
  size_t pages() const { return offsets_.size(); }
  // Device pointer to page i; offer().page_bytes[i] bytes.
  const void* page(size_t i) const;

 private:
  friend class NcclTransport;
  NcclReceived() = default;
  TransferOffer offer_;
  cuda::DeviceBuffer device_;
  std::vector<size_t> offsets_;
};

class NcclTransport {
 public:
  // `client` (not owned, outlives the transport) is the rendezvous; the
  // transfers run on `stream` of the current device.
  static absl::StatusOr<std::unique_ptr<NcclTransport>> Create(Client* client,
                                                               cudaStream_t stream);
  ~NcclTransport();
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  // Offers the transfer and sends the pages once the receiver joined.
  // kDeadlineExceeded when it did not join (or the pages did not arrive)
  // within request.timeout; the communicator is then aborted.
  absl::Status Send(const NcclSendRequest& request);
  // Accepts the transfer (waiting up to `wait` for the offer) and receives
  // its pages; the stream is synchronized when it returns.
  absl::StatusOr<NcclReceived> Receive(std::string_view transfer_id, absl::Duration wait);

  // The data path with one rank sending to itself: copies `pages` into
  // `device_out` (their sizes summed) through NCCL send/recv on `stream`.
  // What a single GPU can test of the transport.
  static absl::Status Loopback(std::span<const DevicePageRef> pages, void* device_out,
                               cudaStream_t stream, absl::Duration timeout = absl::Seconds(30));

 private:
  struct PassKey {};

 public:
  // Use Create.
  NcclTransport(PassKey, Client* client, cudaStream_t stream)
      : client_(client), stream_(stream) {}

 private:
  Client* const client_;
  const cudaStream_t stream_;
};

}  // namespace qaqkv::client

#endif  // QAQKV_CLIENT_NCCL_TRANSPORT_H_
