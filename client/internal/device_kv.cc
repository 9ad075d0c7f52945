#include "client/internal/device_kv.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "kernels/cuda/codec_cuda.h"
#include "kernels/cuda/cuda_raii.h"

namespace qaqkv::client::internal {
namespace {

using ::qaqkv::CodecConfig;
using ::qaqkv::PageShape;
using ::qaqkv::cuda::CudaEvent;
using ::qaqkv::cuda::CudaStatus;
using ::qaqkv::cuda::CudaStream;
using ::qaqkv::cuda::DeviceBuffer;
using ::qaqkv::cuda::DevicePage;
using ::qaqkv::cuda::GpuCodec;
using ::qaqkv::cuda::PinnedBuffer;

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Makes `device` current on this thread for the object's lifetime and then
// restores the caller's device, so a call never changes the caller's CUDA
// state.
// Where block `block`'s page sits in the caller's buffers, and its shape.
struct PagePlace {
  PagePlace(const Geometry& g, DType buffer_dtype, int64_t first_token, size_t block)
      : bt(g.block_tokens),
        row0(first_token + static_cast<int64_t>(block) * bt),
        elem(ElementBytes(buffer_dtype)),
        shape{g.block_tokens, g.num_kv_heads, g.head_dim},
        tensor_bytes(static_cast<size_t>(shape.values()) * elem),
        dtype(ToKernel(buffer_dtype)) {}
  const int64_t bt;
  const int64_t row0;  // first row of the block in the buffers
  const size_t elem;
  const PageShape shape;
  const size_t tensor_bytes;  // bytes of one page's K (or V)
  const ::qaqkv::DType dtype;
};

class ScopedDevice {
 public:
  ScopedDevice() = default;
  ~ScopedDevice() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

  absl::Status Set(int device) {
    int current = 0;
    QAQKV_RETURN_IF_CUDA_ERROR(cudaGetDevice(&current));
    if (current == device) return absl::OkStatus();
    QAQKV_RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    previous_ = current;
    return absl::OkStatus();
  }

 private:
  int previous_ = -1;
};

// Where one dense block of `rows` rows of a layer buffer comes from or goes
// to, and whether it needs the contiguous scratch.
struct BlockRows {
  void* base = nullptr;  // the layer buffer
  char* first = nullptr; // NHD: first row of the block; HND dense: the buffer
  bool strided = false;  // HND with more tokens than the block: via scratch
};

BlockRows Locate(void* base, Layout layout, int64_t buffer_tokens, int64_t row0, int64_t rows,
                 int heads, int head_dim, size_t elem) {
  BlockRows b;
  b.base = base;
  if (layout == Layout::kNHD) {
    b.first = static_cast<char*>(NhdRow(base, row0, heads, head_dim, elem));
  } else if (buffer_tokens == rows) {
    b.first = static_cast<char*>(base);  // the block is the whole buffer (row0 is 0)
  } else {
    b.strided = true;
  }
  return b;
}

// The rows [row0, row0 + rows) of every head of an HND buffer with
// `buffer_tokens` rows per head, as one 2D copy to or from a dense HND
// [heads][rows][head_dim] buffer.
absl::Status CopyHndRows(const void* src, void* dst, bool to_dense, int64_t buffer_tokens,
                         int64_t row0, int64_t rows, int heads, int head_dim, size_t elem,
                         cudaMemcpyKind kind, cudaStream_t stream) {
  const size_t row_bytes = static_cast<size_t>(head_dim) * elem;
  const size_t block_bytes = static_cast<size_t>(rows) * row_bytes;
  const size_t pitch = static_cast<size_t>(buffer_tokens) * row_bytes;
  const size_t offset = static_cast<size_t>(row0) * row_bytes;
  if (to_dense) {
    QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpy2DAsync(dst, block_bytes,
                                                 static_cast<const char*>(src) + offset, pitch,
                                                 block_bytes, static_cast<size_t>(heads), kind,
                                                 stream));
  } else {
    QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpy2DAsync(static_cast<char*>(dst) + offset, pitch, src,
                                                 block_bytes, block_bytes,
                                                 static_cast<size_t>(heads), kind, stream));
  }
  return absl::OkStatus();
}

// Pinned buffers for encoded pages. A page's buffer travels with its slices
// through gRPC and comes back here when gRPC drops them, possibly after the
// Offload call returned: the leases share ownership of the pool.
class PinnedPool : public std::enable_shared_from_this<PinnedPool> {
 public:
  struct Lease {
    std::shared_ptr<PinnedPool> pool;
    PinnedBuffer buffer;
    ~Lease() { pool->Put(std::move(buffer)); }
  };

  absl::StatusOr<std::shared_ptr<Lease>> Take(size_t bytes) {
    auto lease = std::make_shared<Lease>();
    lease->pool = shared_from_this();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        lease->buffer = std::move(free_.back());
        free_.pop_back();
      }
    }
    QAQKV_RETURN_IF_ERROR(lease->buffer.Grow(bytes));
    return lease;
  }

 private:
  // Beyond this many idle buffers, returned ones are freed: gRPC's flow
  // control bounds how many are out at once.
  static constexpr size_t kMaxIdle = 16;

  void Put(PinnedBuffer buffer) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxIdle) free_.push_back(std::move(buffer));
  }

  std::mutex mu_;
  std::vector<PinnedBuffer> free_;  // guarded by mu_
};

// The owner of a page whose bytes live in a pinned lease. OutPage wants a
// shared_ptr<const std::string>; only its lifetime matters to the wire code,
// so an aliasing pointer carries the lease.
std::shared_ptr<const std::string> LeaseOwner(std::shared_ptr<PinnedPool::Lease> lease) {
  static const std::string kNothing;
  return std::shared_ptr<const std::string>(std::move(lease), &kNothing);
}

class DeviceEncodeSource final : public DevicePageSource {
 public:
  DeviceEncodeSource(const OffloadRequest& request, const CodecConfig& config,
                     int64_t buffer_tokens, size_t max_page, int device)
      : r_(request),
        config_(config),
        buffer_tokens_(buffer_tokens),
        max_page_(max_page),
        device_(device),
        layers_(static_cast<size_t>(request.geometry.num_layers)),
        total_(request.blocks.size() * layers_),
        cpu_encode_(config.key_channel_scale || config.key_channel_center || config.rotate ||
                    config.entropy_coded),
        pool_(std::make_shared<PinnedPool>()),
        slots_(kWindow) {}

  ~DeviceEncodeSource() override { Abort(); }

  // CUDA resources, made on the caller's thread so their errors surface
  // before the stream opens.
  absl::Status Init() {
    QAQKV_ASSIGN_OR_RETURN(stream_, CudaStream::Create());
    QAQKV_ASSIGN_OR_RETURN(codec_, GpuCodec::Create(stream_.get()));
    return absl::OkStatus();
  }

  void Begin() override {
    Abort();
    std::lock_guard<std::mutex> lock(mu_);
    for (Slot& slot : slots_) slot = Slot();
    next_take_ = 0;
    producer_ = std::thread([this] { Produce(); });
  }

  void Abort() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancel_ = true;
    }
    cv_.notify_all();
    if (producer_.joinable()) producer_.join();
    std::lock_guard<std::mutex> lock(mu_);
    cancel_ = false;
  }

  absl::StatusOr<bool> Next(OutPage* page) override {
    Slot slot;
    size_t index = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (next_take_ == total_) return false;
      index = next_take_;
      Slot& s = slots_[index % kWindow];
      cv_.wait(lock, [&s] { return s.ready; });
      slot = std::move(s);
      s = Slot();
      ++next_take_;
    }
    cv_.notify_all();  // a slot is free for the producer
    QAQKV_RETURN_IF_ERROR(slot.status);
    page->key = r_.blocks[index / layers_];
    page->layer = static_cast<uint32_t>(index % layers_);
    page->data = slot.data;
    page->owner = std::move(slot.owner);
    return true;
  }

  absl::Duration encode_time() override {
    std::lock_guard<std::mutex> lock(mu_);
    return encode_time_;
  }

 private:
  // Pages encoded ahead of the stream: enough to cover a page's trip
  // through gRPC, few enough to bound the pinned memory.
  static constexpr size_t kWindow = 4;

  struct Slot {
    bool ready = false;
    absl::Status status;
    std::string_view data;
    std::shared_ptr<const std::string> owner;
  };

  void Produce() {
    ScopedDevice device;
    absl::Status set = device.Set(device_);
    for (size_t index = 0; index < total_; ++index) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return cancel_ || index - next_take_ < kWindow; });
        if (cancel_) return;
      }
      Slot out;
      out.ready = true;
      const absl::Time start = absl::Now();
      out.status = set.ok() ? EncodeOne(index, out) : set;
      const absl::Duration spent = absl::Now() - start;
      const bool failed = !out.status.ok();
      {
        std::lock_guard<std::mutex> lock(mu_);
        encode_time_ += spent;
        slots_[index % kWindow] = std::move(out);
      }
      cv_.notify_all();
      if (failed) return;  // Next reports it; the stream then ends
    }
  }

  absl::Status EncodeOne(size_t index, Slot& out) {
    const Geometry& g = r_.geometry;
    const size_t block = index / layers_;
    const int layer = static_cast<int>(index % layers_);
    const PagePlace place(g, r_.kv.dtype, r_.kv.first_token, block);
    const int64_t bt = place.bt, row0 = place.row0;
    const size_t elem = place.elem, tensor_bytes = place.tensor_bytes;
    const PageShape shape = place.shape;
    const ::qaqkv::DType dtype = place.dtype;
    const ::qaqkv::QaqSideInputs side =
        PageSide(r_.side, layer, row0, bt, g.num_kv_heads,
                 r_.kv.first_token + static_cast<int64_t>(r_.blocks.size()) * bt);
    const cudaStream_t stream = stream_.get();
    const void* srcs[2] = {r_.kv.k[layer], r_.kv.v[layer]};

    if (cpu_encode_) {
      // The GPU cannot encode this codec: bring the block to pinned memory
      // (dense, in the buffer's layout) and encode it on the CPU.
      QAQKV_RETURN_IF_ERROR(host_block_.Grow(2 * tensor_bytes));
      for (int which = 0; which < 2; ++which) {
        char* dst = reinterpret_cast<char*>(host_block_.data()) + which * tensor_bytes;
        if (r_.kv.layout == Layout::kNHD) {
          QAQKV_RETURN_IF_ERROR(CudaStatus(
              cudaMemcpyAsync(dst, NhdRow(srcs[which], row0, g.num_kv_heads, g.head_dim, elem),
                              tensor_bytes, cudaMemcpyDeviceToHost, stream),
              "cudaMemcpyAsync(block to host)"));
        } else {
          QAQKV_RETURN_IF_ERROR(CopyHndRows(srcs[which], dst, true, buffer_tokens_, row0, bt,
                                            g.num_kv_heads, g.head_dim, elem,
                                            cudaMemcpyDeviceToHost, stream));
        }
      }
      QAQKV_RETURN_IF_ERROR(stream_.Synchronize());
      const ::qaqkv::Layout layout = ToKernel(r_.kv.layout);
      const char* host = reinterpret_cast<const char*>(host_block_.data());
      absl::StatusOr<std::vector<uint8_t>> bytes = ::qaqkv::EncodePage(
          config_, shape, {host, dtype, layout}, {host + tensor_bytes, dtype, layout}, side);
      if (!bytes.ok()) return PageError(bytes.status(), block, layer, false);
      QAQKV_RETURN_IF_ERROR(CheckPageSize(bytes->size(), max_page_, block, layer));
      auto owned = std::make_shared<const std::string>(
          reinterpret_cast<const char*>(bytes->data()), bytes->size());
      out.data = *owned;
      out.owner = std::move(owned);
      return absl::OkStatus();
    }

    ::qaqkv::TensorView views[2];
    for (int which = 0; which < 2; ++which) {
      const BlockRows rows = Locate(const_cast<void*>(srcs[which]), r_.kv.layout, buffer_tokens_,
                                    row0, bt, g.num_kv_heads, g.head_dim, elem);
      if (!rows.strided) {
        views[which] = {rows.first, dtype, ToKernel(r_.kv.layout)};
        continue;
      }
      QAQKV_RETURN_IF_ERROR(scratch_.Grow(2 * tensor_bytes));
      char* dense = scratch_.as<char>() + which * tensor_bytes;
      QAQKV_RETURN_IF_ERROR(CopyHndRows(srcs[which], dense, true, buffer_tokens_, row0, bt,
                                        g.num_kv_heads, g.head_dim, elem,
                                        cudaMemcpyDeviceToDevice, stream));
      views[which] = {dense, dtype, ::qaqkv::Layout::kHND};
    }
    absl::Status encoded = codec_->EncodeToDevice(config_, shape, views[0], views[1], side, &page_);
    if (!encoded.ok()) return PageError(encoded, block, layer, false);
    const size_t size = page_.page_bytes();
    QAQKV_RETURN_IF_ERROR(CheckPageSize(size, max_page_, block, layer));
    QAQKV_ASSIGN_OR_RETURN(std::shared_ptr<PinnedPool::Lease> lease, pool_->Take(size));
    QAQKV_ASSIGN_OR_RETURN(const size_t written,
                           codec_->DownloadTo(page_, std::span(lease->buffer.data(), size)));
    out.data = std::string_view(reinterpret_cast<const char*>(lease->buffer.data()), written);
    out.owner = LeaseOwner(std::move(lease));
    return absl::OkStatus();
  }

  const OffloadRequest& r_;
  const CodecConfig config_;
  const int64_t buffer_tokens_;
  const size_t max_page_;
  const int device_;
  const size_t layers_;
  const size_t total_;
  const bool cpu_encode_;
  const std::shared_ptr<PinnedPool> pool_;

  // Used only by the producer thread (and Init before it starts).
  CudaStream stream_;
  std::unique_ptr<GpuCodec> codec_;
  DevicePage page_;
  DeviceBuffer scratch_;    // dense HND rows of a strided block
  PinnedBuffer host_block_; // the CPU-encode fallback's copy of a block

  // std::mutex, not absl::Mutex: TSan cannot see into Debian's abseil.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot> slots_;     // guarded by mu_
  size_t next_take_ = 0;        // guarded by mu_
  bool cancel_ = false;         // guarded by mu_
  absl::Duration encode_time_;  // guarded by mu_
  // Last: joined (by Abort in the destructor) before the rest goes.
  std::thread producer_;
};

class DeviceLoaderImpl final : public DeviceLoader {
 public:
  DeviceLoaderImpl(const LoadRequest& r, int layer_end, int64_t buffer_tokens, int device,
                   absl::Time start)
      : r_(r),
        buffer_tokens_(buffer_tokens),
        device_(device),
        start_(start),
        layers_(static_cast<size_t>(layer_end - r.layer_begin)),
        remaining_(layers_, r.blocks.size()),
        complete_(layers_, false) {}

  ~DeviceLoaderImpl() override {
    StopNotifier(/*abandon=*/true);
    // Nothing may still read our page buffers or write the caller's.
    (void)decode_stream_.Synchronize();
    (void)copy_stream_.Synchronize();
  }

  absl::Status Init() {
    QAQKV_ASSIGN_OR_RETURN(copy_stream_, CudaStream::Create());
    QAQKV_ASSIGN_OR_RETURN(decode_stream_, CudaStream::Create());
    QAQKV_ASSIGN_OR_RETURN(copy_codec_, GpuCodec::Create(copy_stream_.get()));
    QAQKV_ASSIGN_OR_RETURN(decode_codec_, GpuCodec::Create(decode_stream_.get()));
    for (int slot = 0; slot < 2; ++slot) {
      QAQKV_ASSIGN_OR_RETURN(copied_[slot], CudaEvent::Create(/*timing=*/false));
      QAQKV_ASSIGN_OR_RETURN(decoded_[slot], CudaEvent::Create(/*timing=*/false));
    }
    layer_done_.reserve(layers_);
    for (size_t l = 0; l < layers_; ++l) {
      QAQKV_ASSIGN_OR_RETURN(CudaEvent e, CudaEvent::Create(/*timing=*/false));
      layer_done_.push_back(std::move(e));
    }
    notifier_ = std::thread([this] { Notify(); });
    return absl::OkStatus();
  }

  absl::Status Page(size_t block, int layer, std::string_view data) override {
    const Geometry& g = r_.geometry;
    const PagePlace place(g, r_.kv.dtype, r_.kv.first_token, block);
    const int64_t bt = place.bt, row0 = place.row0;
    const size_t elem = place.elem, tensor_bytes = place.tensor_bytes;
    const PageShape shape = place.shape;
    const ::qaqkv::DType dtype = place.dtype;
    // The stream thread need not have the buffers' GPU current.
    ScopedDevice scoped;
    QAQKV_RETURN_IF_ERROR(scoped.Set(device_));
    const int slot = static_cast<int>(pages_ % 2);
    ++pages_;

    // Double buffering: page N+1 is copied on the copy stream into the page
    // buffer page N-1 used, once the decode of N-1 is done, while page N
    // decodes on the decode stream.
    if (slot_used_[slot]) {
      QAQKV_RETURN_IF_ERROR(CudaStatus(
          cudaStreamWaitEvent(copy_stream_.get(), decoded_[slot].get(), 0),
          "cudaStreamWaitEvent(decoded)"));
    }
    absl::Status uploaded = copy_codec_->Upload(
        std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()), &pages_buf_[slot]);
    if (!uploaded.ok()) return PageError(uploaded, block, layer, true);
    QAQKV_RETURN_IF_ERROR(copied_[slot].Record(copy_stream_.get()));
    const cudaStream_t stream = decode_stream_.get();
    QAQKV_RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(stream, copied_[slot].get(), 0),
                                     "cudaStreamWaitEvent(copied)"));

    void* dsts[2] = {r_.kv.k[layer], r_.kv.v[layer]};
    BlockRows rows[2];
    ::qaqkv::MutableTensorView views[2];
    for (int which = 0; which < 2; ++which) {
      rows[which] = Locate(dsts[which], r_.kv.layout, buffer_tokens_, row0, bt, g.num_kv_heads,
                           g.head_dim, elem);
      if (!rows[which].strided) {
        views[which] = {rows[which].first, dtype, ToKernel(r_.kv.layout)};
        continue;
      }
      // Stream order makes one scratch enough: the next page decodes into it
      // only after this page's rows were copied out.
      QAQKV_RETURN_IF_ERROR(scratch_.Grow(2 * tensor_bytes));
      views[which] = {scratch_.as<char>() + which * tensor_bytes, dtype, ::qaqkv::Layout::kHND};
    }
    absl::Status decoded = decode_codec_->Decode(pages_buf_[slot], views[0], views[1], &shape);
    if (!decoded.ok()) return PageError(decoded, block, layer, true);
    for (int which = 0; which < 2; ++which) {
      if (!rows[which].strided) continue;
      QAQKV_RETURN_IF_ERROR(CopyHndRows(views[which].data, dsts[which], false, buffer_tokens_,
                                        row0, bt, g.num_kv_heads, g.head_dim, elem,
                                        cudaMemcpyDeviceToDevice, stream));
    }
    QAQKV_RETURN_IF_ERROR(decoded_[slot].Record(stream));
    slot_used_[slot] = true;

    const size_t l = static_cast<size_t>(layer - r_.layer_begin);
    if (--remaining_[l] == 0) {
      QAQKV_RETURN_IF_ERROR(layer_done_[l].Record(stream));
      {
        std::lock_guard<std::mutex> lock(mu_);
        complete_[l] = true;
      }
      cv_.notify_all();
    }
    return absl::OkStatus();
  }

  absl::Status Finish(bool stream_ok) override {
    absl::Status status = decode_stream_.Synchronize();
    status.Update(copy_stream_.Synchronize());
    StopNotifier(/*abandon=*/!stream_ok || !status.ok());
    std::lock_guard<std::mutex> lock(mu_);
    status.Update(error_);
    return status;
  }

  absl::Duration time_to_first_layer() override {
    std::lock_guard<std::mutex> lock(mu_);
    return first_layer_;
  }

 private:
  // Reports layers in increasing order from its own thread, each once the
  // decode stream has passed that layer's last page, so on_layer may use
  // the layer at once (on any stream).
  void Notify() {
    ScopedDevice device;
    absl::Status set = device.Set(device_);
    std::unique_lock<std::mutex> lock(mu_);
    if (!set.ok()) {
      error_ = set;
      return;
    }
    while (next_fire_ < layers_) {
      cv_.wait(lock, [&] { return abandon_ || stop_ || complete_[next_fire_]; });
      if (abandon_ || !complete_[next_fire_]) return;
      const size_t l = next_fire_;
      lock.unlock();
      absl::Status synced = layer_done_[l].Synchronize();
      lock.lock();
      if (!synced.ok()) {
        if (error_.ok()) error_ = synced;
        return;
      }
      if (abandon_) return;
      const int layer = r_.layer_begin + static_cast<int>(l);
      if (l == 0) first_layer_ = absl::Now() - start_;
      ++next_fire_;
      if (r_.on_layer) {
        lock.unlock();
        r_.on_layer(layer);
        lock.lock();
      }
    }
  }

  void StopNotifier(bool abandon) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      if (abandon) abandon_ = true;
    }
    cv_.notify_all();
    if (notifier_.joinable()) notifier_.join();
  }

  const LoadRequest& r_;
  const int64_t buffer_tokens_;
  const int device_;
  const absl::Time start_;
  const size_t layers_;

  // Used by the stream thread only.
  CudaStream copy_stream_, decode_stream_;
  std::unique_ptr<GpuCodec> copy_codec_, decode_codec_;
  DevicePage pages_buf_[2];
  CudaEvent copied_[2], decoded_[2];
  bool slot_used_[2] = {false, false};
  DeviceBuffer scratch_;
  size_t pages_ = 0;
  std::vector<size_t> remaining_;     // per layer in range
  std::vector<CudaEvent> layer_done_; // recorded once per layer, then read by the notifier

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> complete_;   // guarded by mu_
  size_t next_fire_ = 0;         // guarded by mu_
  bool stop_ = false;            // guarded by mu_
  bool abandon_ = false;         // guarded by mu_
  absl::Status error_;           // guarded by mu_
  absl::Duration first_layer_;   // guarded by mu_
  // Last: joined (StopNotifier in the destructor) while the rest lives.
  std::thread notifier_;
};

}  // namespace

absl::StatusOr<KvPlacement> LocateKv(const KvBuffers& kv, int layer_begin, int layer_end,
                                     std::string_view field) {
  // Counting devices makes no context; with none, every pointer is host
  // memory and the host path runs exactly as in a build without CUDA.
  static const bool has_device = ::qaqkv::cuda::DeviceCount() > 0;
  KvPlacement where;
  if (!has_device) return where;
  bool first = true;
  std::string first_name;
  for (int l = layer_begin; l < layer_end; ++l) {
    for (int which = 0; which < 2; ++which) {
      const void* p = which == 0 ? kv.k[l] : kv.v[l];
      cudaPointerAttributes attr{};
      bool on_device = false;
      int device = -1;
      if (cudaPointerGetAttributes(&attr, p) == cudaSuccess) {
        on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
        device = attr.device;
      } else {
        (void)cudaGetLastError();  // memory CUDA does not know: host
      }
      const std::string name = absl::StrCat(Sv(field), which == 0 ? ".k[" : ".v[", l, "]");
      if (first) {
        where.on_device = on_device;
        where.device = on_device ? device : -1;
        first_name = name;
        first = false;
        continue;
      }
      if (on_device != where.on_device) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": ", on_device ? "device" : "host", " memory, but ", first_name, " is ",
            where.on_device ? "device" : "host", " memory (all buffers must be one or the other)"));
      }
      if (on_device && device != where.device) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": on GPU ", device, ", but ",
                                                       first_name, " is on GPU ", where.device));
      }
    }
  }
  return where;
}

absl::StatusOr<std::unique_ptr<DevicePageSource>> MakeDeviceEncodeSource(
    const OffloadRequest& request, const CodecConfig& config, int64_t buffer_tokens,
    size_t max_page, int device) {
  ScopedDevice scoped;
  QAQKV_RETURN_IF_ERROR(scoped.Set(device));
  auto source =
      std::make_unique<DeviceEncodeSource>(request, config, buffer_tokens, max_page, device);
  QAQKV_RETURN_IF_ERROR(source->Init());
  return source;
}

absl::StatusOr<std::unique_ptr<DeviceLoader>> MakeDeviceLoader(const LoadRequest& request,
                                                               int layer_end,
                                                               int64_t buffer_tokens, int device,
                                                               absl::Time start) {
  ScopedDevice scoped;
  QAQKV_RETURN_IF_ERROR(scoped.Set(device));
  auto loader =
      std::make_unique<DeviceLoaderImpl>(request, layer_end, buffer_tokens, device, start);
  QAQKV_RETURN_IF_ERROR(loader->Init());
  return loader;
}

}  // namespace qaqkv::client::internal
