#include "qaqkv/nccl_transport.h"

#include <nccl.h>

#include <cstring>
#include <future>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"

namespace qaqkv::client {
namespace {

absl::Status NcclError(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(r)));
}

// A communicator that is aborted unless it finished cleanly: a peer that
// died or never came must not leave NCCL's threads spinning.
class Comm {
 public:
  Comm() = default;
  ~Comm() {
    if (comm_ != nullptr) ncclCommAbort(comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // Non-blocking init of rank `rank` of `nranks`, waiting up to `deadline`.
  absl::Status Init(int nranks, const ncclUniqueId& id, int rank, absl::Time deadline) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, nranks, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      comm_ = nullptr;
      return NcclError(r, "ncclCommInitRankConfig");
    }
    return Wait(deadline, "the peer to join");
  }

  // Polls the communicator's asynchronous state until it is idle.
  absl::Status Wait(absl::Time deadline, const char* what) {
    for (;;) {
      ncclResult_t state = ncclSuccess;
      QAQKV_RETURN_IF_ERROR(
          NcclError(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError"));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return NcclError(state, "NCCL communicator");
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("NCCL: timed out waiting for ", what));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // Waits for the stream's NCCL work, watching the communicator for errors.
  absl::Status Drain(cudaStream_t stream, absl::Time deadline) {
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) return cuda::CudaStatus(q, "cudaStreamQuery");
      ncclResult_t state = ncclSuccess;
      QAQKV_RETURN_IF_ERROR(
          NcclError(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError"));
      if (state != ncclSuccess && state != ncclInProgress) {
        return NcclError(state, "NCCL transfer");
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError("NCCL: timed out waiting for the pages");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  // A clean end: finalize (flushes) then destroy.
  absl::Status Close(absl::Time deadline) {
    ncclResult_t r = ncclCommFinalize(comm_);
    if (r != ncclSuccess && r != ncclInProgress) return NcclError(r, "ncclCommFinalize");
    QAQKV_RETURN_IF_ERROR(Wait(deadline, "finalize"));
    r = ncclCommDestroy(comm_);
    comm_ = nullptr;
    return NcclError(r, "ncclCommDestroy");
  }

  ncclComm_t get() const { return comm_; }

 private:
  ncclComm_t comm_ = nullptr;
};

// One group of point-to-point calls; in non-blocking mode ncclGroupEnd may
// return ncclInProgress, which Comm::Wait then resolves.
absl::Status GroupEnd(Comm& comm, absl::Time deadline) {
  const ncclResult_t r = ncclGroupEnd();
  if (r == ncclInProgress) return comm.Wait(deadline, "the group to be enqueued");
  return NcclError(r, "ncclGroupEnd");
}

}  // namespace

const void* NcclReceived::page(size_t i) const {
  return device_.as<const char>() + offsets_[i];
}

absl::StatusOr<std::unique_ptr<NcclTransport>> NcclTransport::Create(Client* client,
                                                                     cudaStream_t stream) {
  if (client == nullptr) return absl::InvalidArgumentError("client: null");
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError("NCCL transport: no CUDA device");
  }
  return std::make_unique<NcclTransport>(PassKey(), client, stream);
}

NcclTransport::~NcclTransport() = default;

absl::Status NcclTransport::Send(const NcclSendRequest& request) {
  const Geometry& g = request.format.geometry;
  const int end = request.layer_end == 0 ? g.num_layers : request.layer_end;
  const size_t want =
      request.blocks.size() * static_cast<size_t>(std::max(0, end - request.layer_begin));
  if (request.pages.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("pages: ", request.pages.size(),
                                                   " pages, expected blocks x layers = ", want));
  }
  TransferOffer offer;
  offer.transfer_id = request.transfer_id;
  offer.format = request.format;
  offer.blocks = request.blocks;
  offer.layer_begin = request.layer_begin;
  offer.layer_end = request.layer_end;
  offer.ttl = request.timeout;
  for (size_t i = 0; i < request.pages.size(); ++i) {
    cudaPointerAttributes attr{};
    if (request.pages[i].bytes == 0 ||
        cudaPointerGetAttributes(&attr, request.pages[i].data) != cudaSuccess ||
        attr.type != cudaMemoryTypeDevice) {
      cudaGetLastError();  // clear the sticky-free error of a host pointer
      return absl::InvalidArgumentError(
          absl::StrCat("pages[", i, "]: empty or not device memory"));
    }
    offer.page_bytes.push_back(request.pages[i].bytes);
  }
  ncclUniqueId id;
  QAQKV_RETURN_IF_ERROR(NcclError(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  offer.nccl_unique_id.assign(reinterpret_cast<const char*>(&id), sizeof(id));
  QAQKV_RETURN_IF_ERROR(client_->OfferTransfer(offer));

  // The durable copy goes to the cache service while NCCL moves the pages.
  std::future<absl::Status> stored;
  if (!request.store.empty()) {
    stored = std::async(std::launch::async, [&] {
      return client_->PutPages(g, request.format.codec, request.store).status();
    });
  }
  const absl::Time deadline = absl::Now() + request.timeout;
  absl::Status sent = [&]() -> absl::Status {
    Comm comm;
    QAQKV_RETURN_IF_ERROR(comm.Init(2, id, /*rank=*/0, deadline));
    QAQKV_RETURN_IF_ERROR(NcclError(ncclGroupStart(), "ncclGroupStart"));
    for (const DevicePageRef& p : request.pages) {
      const ncclResult_t r = ncclSend(p.data, p.bytes, ncclUint8, /*peer=*/1, comm.get(), stream_);
      if (r != ncclSuccess && r != ncclInProgress) {
        ncclGroupEnd();
        return NcclError(r, "ncclSend");
      }
    }
    QAQKV_RETURN_IF_ERROR(GroupEnd(comm, deadline));
    QAQKV_RETURN_IF_ERROR(comm.Drain(stream_, deadline));
    return comm.Close(deadline);
  }();
  if (stored.valid()) {
    absl::Status s = stored.get();
    if (sent.ok() && !s.ok()) return s;
  }
  return sent;
}

absl::StatusOr<NcclReceived> NcclTransport::Receive(std::string_view transfer_id,
                                                    absl::Duration wait) {
  QAQKV_ASSIGN_OR_RETURN(TransferOffer offer, client_->AcceptTransfer(transfer_id, wait));
  if (offer.nccl_unique_id.size() != sizeof(ncclUniqueId)) {
    return absl::InternalError("offer.nccl_unique_id: wrong size from the server");
  }
  ncclUniqueId id;
  std::memcpy(&id, offer.nccl_unique_id.data(), sizeof(id));
  NcclReceived out;
  size_t total = 0;
  for (uint64_t bytes : offer.page_bytes) {
    out.offsets_.push_back(total);
    total += bytes;
  }
  QAQKV_ASSIGN_OR_RETURN(out.device_, cuda::DeviceBuffer::Allocate(total));
  const absl::Time deadline = absl::Now() + std::max(offer.ttl, absl::Seconds(30));
  Comm comm;
  QAQKV_RETURN_IF_ERROR(comm.Init(2, id, /*rank=*/1, deadline));
  QAQKV_RETURN_IF_ERROR(NcclError(ncclGroupStart(), "ncclGroupStart"));
  for (size_t i = 0; i < offer.page_bytes.size(); ++i) {
    const ncclResult_t r = ncclRecv(out.device_.as<char>() + out.offsets_[i],
                                    offer.page_bytes[i], ncclUint8, /*peer=*/0, comm.get(),
                                    stream_);
    if (r != ncclSuccess && r != ncclInProgress) {
      ncclGroupEnd();
      return NcclError(r, "ncclRecv");
    }
  }
  QAQKV_RETURN_IF_ERROR(GroupEnd(comm, deadline));
  QAQKV_RETURN_IF_ERROR(comm.Drain(stream_, deadline));
  QAQKV_RETURN_IF_ERROR(comm.Close(deadline));
  out.offer_ = std::move(offer);
  return out;
}

absl::Status NcclTransport::Loopback(std::span<const DevicePageRef> pages, void* device_out,
                                     cudaStream_t stream, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  ncclUniqueId id;
  QAQKV_RETURN_IF_ERROR(NcclError(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  Comm comm;
  QAQKV_RETURN_IF_ERROR(comm.Init(1, id, 0, deadline));
  QAQKV_RETURN_IF_ERROR(NcclError(ncclGroupStart(), "ncclGroupStart"));
  size_t offset = 0;
  for (const DevicePageRef& p : pages) {
    ncclResult_t r = ncclSend(p.data, p.bytes, ncclUint8, 0, comm.get(), stream);
    if (r == ncclSuccess || r == ncclInProgress) {
      r = ncclRecv(static_cast<char*>(device_out) + offset, p.bytes, ncclUint8, 0, comm.get(),
                   stream);
    }
    if (r != ncclSuccess && r != ncclInProgress) {
      ncclGroupEnd();
      return NcclError(r, "ncclSend/ncclRecv");
    }
    offset += p.bytes;
  }
  QAQKV_RETURN_IF_ERROR(GroupEnd(comm, deadline));
  QAQKV_RETURN_IF_ERROR(comm.Drain(stream, deadline));
  return comm.Close(deadline);
}

}  // namespace qaqkv::client
