// Offload and Load: the codec pipelines around the two page streams.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"
#include "base/status_macros.h"
#include "qaqkv/limits.h"
#include "kernels/codec.h"
#ifdef QAQKV_HAVE_CUDA
#include "client/internal/device_kv.h"
#endif

namespace qaqkv::client {
namespace {

using ::qaqkv::CodecConfig;
using ::qaqkv::CodecKind;
using ::qaqkv::PageShape;

// Pages in flight per call: enough to keep every pool thread busy while the
// stream drains, few enough that memory stays a small multiple of a page.
size_t Window(const base::ThreadPool& pool) { return 2 * static_cast<size_t>(pool.threads()) + 2; }

// Encodes the pages of an OffloadRequest block-major (every layer of a
// block, then the next block) on the pool, at most Window() ahead of the
// stream, and hands them out in order: the server then stores each block's
// layers of a message in one write, and blocks commit as the stream goes.
class EncodeSource final : public PageSource {
 public:
  EncodeSource(const OffloadRequest& request, const CodecConfig& config, int64_t buffer_tokens,
               size_t max_page, base::ThreadPool& pool)
      : r_(request),
        config_(config),
        buffer_tokens_(buffer_tokens),
        max_page_(max_page),
        layers_(static_cast<size_t>(request.geometry.num_layers)),
        total_(request.blocks.size() * layers_),
        window_(Window(pool)),
        pool_(pool),
        slots_(window_) {}

  // Tasks reference this object and the caller's buffers.
  ~EncodeSource() override { Abort(); }

  void Begin() override {
    Abort();
    std::lock_guard<std::mutex> lock(mu_);
    for (Slot& slot : slots_) slot = Slot();
    next_submit_ = next_take_ = 0;
  }

  void Abort() override {
    cancel_.store(true);
    tasks_.WaitBelow(1);
    cancel_.store(false);
  }

  absl::StatusOr<bool> Next(internal::OutPage* page) override {
    if (next_take_ == total_) return false;
    while (next_submit_ < total_ && next_submit_ - next_take_ < window_) Submit(next_submit_++);
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(mu_);
      Slot& s = slots_[next_take_ % window_];
      ready_.wait(lock, [&s] { return s.ready; });
      slot = std::move(s);
      s = Slot();
    }
    QAQKV_RETURN_IF_ERROR(slot.status);
    const size_t block = next_take_ / layers_;
    const int layer = static_cast<int>(next_take_ % layers_);
    ++next_take_;
    page->key = r_.blocks[block];
    page->layer = static_cast<uint32_t>(layer);
    // The encoded bytes go on the wire without a copy; the slice that
    // carries them owns them until gRPC is done.
    page->owner = std::make_shared<const std::string>(std::move(slot.data));
    page->data = *page->owner;
    return true;
  }

  absl::Duration encode_time() {
    std::lock_guard<std::mutex> lock(mu_);
    return encode_time_;
  }

 private:
  struct Slot {
    bool ready = false;
    absl::Status status;
    std::string data;
  };

  void Submit(size_t index) {
    tasks_.Add();
    pool_.Submit([this, index] {
      Encode(index);
      tasks_.Done();
    });
  }

  void Encode(size_t index) {
    Slot out;
    out.ready = true;
    absl::Duration spent;
    if (cancel_.load()) {
      out.status = absl::CancelledError("encoding abandoned");
    } else {
      const absl::Time start = absl::Now();
      out.status = EncodeOne(index, out.data);
      spent = absl::Now() - start;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      encode_time_ += spent;
      slots_[index % window_] = std::move(out);
    }
    ready_.notify_all();
  }

  absl::Status EncodeOne(size_t index, std::string& data) const {
    const Geometry& g = r_.geometry;
    const size_t block = index / layers_;
    const int layer = static_cast<int>(index % layers_);
    const int64_t bt = g.block_tokens;
    const int64_t row0 = r_.kv.first_token + static_cast<int64_t>(block) * bt;
    const size_t elem = internal::ElementBytes(r_.kv.dtype);
    const PageShape shape{g.block_tokens, g.num_kv_heads, g.head_dim};

    // NHD rows of a block are contiguous and go to the codec in place; HND
    // rows are strided per head (kernels' views are dense), so they are
    // gathered into NHD scratch first.
    std::vector<char> k_scratch, v_scratch;
    const void* k = nullptr;
    const void* v = nullptr;
    if (r_.kv.layout == Layout::kNHD) {
      k = internal::NhdRow(r_.kv.k[layer], row0, g.num_kv_heads, g.head_dim, elem);
      v = internal::NhdRow(r_.kv.v[layer], row0, g.num_kv_heads, g.head_dim, elem);
    } else {
      k_scratch.resize(static_cast<size_t>(shape.values()) * elem);
      v_scratch.resize(k_scratch.size());
      internal::CopyRowsToNhd(r_.kv.k[layer], Layout::kHND, buffer_tokens_, row0, bt,
                              g.num_kv_heads, g.head_dim, elem, k_scratch.data());
      internal::CopyRowsToNhd(r_.kv.v[layer], Layout::kHND, buffer_tokens_, row0, bt,
                              g.num_kv_heads, g.head_dim, elem, v_scratch.data());
      k = k_scratch.data();
      v = v_scratch.data();
    }
    const ::qaqkv::QaqSideInputs side = internal::PageSide(
        r_.side, layer, row0, bt, g.num_kv_heads,
        r_.kv.first_token + static_cast<int64_t>(r_.blocks.size()) * bt);
    const ::qaqkv::DType dtype = internal::ToKernel(r_.kv.dtype);
    absl::StatusOr<std::vector<uint8_t>> bytes =
        ::qaqkv::EncodePage(config_, shape, {k, dtype, ::qaqkv::Layout::kNHD},
                            {v, dtype, ::qaqkv::Layout::kNHD}, side);
    if (!bytes.ok()) return internal::PageError(bytes.status(), block, layer, false);
    QAQKV_RETURN_IF_ERROR(internal::CheckPageSize(bytes->size(), max_page_, block, layer));
    data.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    return absl::OkStatus();
  }

  const OffloadRequest& r_;
  const CodecConfig config_;
  const int64_t buffer_tokens_;
  const size_t max_page_;
  const size_t layers_;
  const size_t total_;
  const size_t window_;
  base::ThreadPool& pool_;
  std::atomic<bool> cancel_{false};
  // Only the stream thread touches these.
  size_t next_submit_ = 0;
  size_t next_take_ = 0;

  // std::mutex, not absl::Mutex: TSan cannot see into Debian's abseil.
  std::mutex mu_;
  std::condition_variable ready_;
  std::vector<Slot> slots_;      // guarded by mu_
  absl::Duration encode_time_;   // guarded by mu_
  // Last member: destroyed first, so it waits for tasks while the rest lives.
  base::TaskCounter tasks_;
};

// Shared by the stream thread and the decode tasks of one Load.
class LoadState {
 public:
  LoadState(const LoadRequest& r, int layer_end, int64_t buffer_tokens, absl::Time start)
      : r_(r),
        buffer_tokens_(buffer_tokens),
        start_(start),
        remaining_(static_cast<size_t>(layer_end - r.layer_begin), r.blocks.size()) {}

  absl::Status error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  absl::Duration time_to_first_layer() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_layer_;
  }
  base::TaskCounter& tasks() { return tasks_; }

  void Decode(size_t block, int layer, std::string_view data) {
    absl::Status status = DecodeOne(block, layer, data);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!status.ok()) {
        if (error_.ok()) error_ = internal::PageError(status, block, layer, true);
        return;
      }
      --remaining_[layer - r_.layer_begin];
    }
    FireReadyLayers();
  }

  // Reports complete layers in order. Whoever finds `firing_` clear becomes
  // the only caller of on_layer until no complete layer is left; a layer
  // completed meanwhile is seen when it re-checks under the lock, so none is
  // lost and calls never overlap.
  void FireReadyLayers() {
    std::unique_lock<std::mutex> lock(mu_);
    if (firing_) return;
    firing_ = true;
    while (error_.ok() && next_fire_ < remaining_.size() && remaining_[next_fire_] == 0) {
      const int layer = r_.layer_begin + static_cast<int>(next_fire_++);
      if (layer == r_.layer_begin) first_layer_ = absl::Now() - start_;
      if (r_.on_layer) {
        lock.unlock();
        r_.on_layer(layer);
        lock.lock();
      }
    }
    firing_ = false;
  }

 private:
  absl::Status DecodeOne(size_t block, int layer, std::string_view data) const {
    const Geometry& g = r_.geometry;
    const int64_t row0 = r_.kv.first_token + static_cast<int64_t>(block) * g.block_tokens;
    const size_t elem = internal::ElementBytes(r_.kv.dtype);
    const PageShape shape{g.block_tokens, g.num_kv_heads, g.head_dim};
    const ::qaqkv::DType dtype = internal::ToKernel(r_.kv.dtype);
    const std::span<const uint8_t> page(reinterpret_cast<const uint8_t*>(data.data()),
                                        data.size());
    if (r_.kv.layout == Layout::kNHD) {
      // Contiguous rows: decode straight into the caller's buffers.
      auto row = [&](void* base) {
        return internal::NhdRow(base, row0, g.num_kv_heads, g.head_dim, elem);
      };
      return ::qaqkv::DecodePage(page, {row(r_.kv.k[layer]), dtype, ::qaqkv::Layout::kNHD},
                                 {row(r_.kv.v[layer]), dtype, ::qaqkv::Layout::kNHD}, &shape);
    }
    std::vector<char> k(static_cast<size_t>(shape.values()) * elem), v(k.size());
    QAQKV_RETURN_IF_ERROR(::qaqkv::DecodePage(page, {k.data(), dtype, ::qaqkv::Layout::kNHD},
                                              {v.data(), dtype, ::qaqkv::Layout::kNHD}, &shape));
    internal::CopyRowsFromNhd(k.data(), r_.kv.k[layer], Layout::kHND, buffer_tokens_, row0,
                              g.block_tokens, g.num_kv_heads, g.head_dim, elem);
    internal::CopyRowsFromNhd(v.data(), r_.kv.v[layer], Layout::kHND, buffer_tokens_, row0,
                              g.block_tokens, g.num_kv_heads, g.head_dim, elem);
    return absl::OkStatus();
  }

  const LoadRequest& r_;
  const int64_t buffer_tokens_;
  const absl::Time start_;

  std::mutex mu_;
  absl::Status error_;              // guarded by mu_
  std::vector<size_t> remaining_;   // guarded by mu_; per layer in range
  size_t next_fire_ = 0;            // guarded by mu_
  bool firing_ = false;             // guarded by mu_
  absl::Duration first_layer_;      // guarded by mu_
  // Last member: destroyed first, so it waits for tasks while the rest lives.
  base::TaskCounter tasks_;
};

// Load's check of the stored format against the request (`codec`:
// canonical, or empty to accept any).
absl::Status CheckStoredFormat(const v1::BlockFormat& format, const Geometry& g,
                               const std::string& codec) {
  const Geometry stored = FromProto(format.geometry());
  if (!internal::SameGeometry(stored, g)) {
    return absl::FailedPreconditionError(
        absl::StrCat("stored geometry (", internal::DescribeGeometry(stored),
                     ") differs from request geometry (", internal::DescribeGeometry(g), ")"));
  }
  if (!codec.empty()) {
    // Compare canonical names, so any spelling of the same config matches.
    absl::StatusOr<CodecConfig> parsed = ::qaqkv::ParseCodecConfig(format.codec());
    if (!parsed.ok() || parsed->Name() != codec) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stored codec '", format.codec(), "' differs from request codec '", codec, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OffloadResult> Client::Offload(const OffloadRequest& request) {
  const absl::Time start = absl::Now();
  const Geometry& g = request.geometry;
  QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(g, "geometry"));
  QAQKV_ASSIGN_OR_RETURN(const CodecConfig config, internal::ParseCodec(request.codec, "codec"));
  const int64_t rows = static_cast<int64_t>(request.blocks.size()) * g.block_tokens;
  QAQKV_ASSIGN_OR_RETURN(const int64_t buffer_tokens,
                         internal::ValidateKv(internal::View(request.kv), g, rows, 0,
                                              g.num_layers, "kv"));
  QAQKV_RETURN_IF_ERROR(internal::ValidateSide(request.side, g, request.kv.first_token + rows,
                                               config.kind == CodecKind::kQaq));
  OffloadResult result;
  if (request.blocks.empty()) {
    result.total_time = absl::Now() - start;
    return result;
  }

  v1::BlockFormat format;
  *format.mutable_geometry() = ToProto(g);
  format.set_codec(config.Name());
  const size_t max_page = impl_->options().max_message_bytes - 4096;
  v1::PutPagesResponse response;
#ifdef QAQKV_HAVE_CUDA
  QAQKV_ASSIGN_OR_RETURN(const internal::KvPlacement where,
                         internal::LocateKv(internal::View(request.kv), 0, g.num_layers, "kv"));
  if (where.on_device) {
    QAQKV_ASSIGN_OR_RETURN(std::unique_ptr<internal::DevicePageSource> source,
                           internal::MakeDeviceEncodeSource(request, config, buffer_tokens,
                                                            max_page, where.device));
    QAQKV_ASSIGN_OR_RETURN(response, impl_->StreamPut(format, *source));
    result.encode_time = source->encode_time();
  } else  // NOLINT(readability/braces): the host path below
#endif
  {
    EncodeSource source(request, config, buffer_tokens, max_page, impl_->pool());
    QAQKV_ASSIGN_OR_RETURN(response, impl_->StreamPut(format, source));
    result.encode_time = source.encode_time();
  }
  result.blocks_committed = static_cast<size_t>(response.committed_blocks_size());
  result.pages = response.pages_stored();
  result.raw_bytes = result.pages * 2 * static_cast<uint64_t>(g.block_tokens) *
                     static_cast<uint64_t>(g.num_kv_heads) * static_cast<uint64_t>(g.head_dim) * 2;
  result.stored_bytes = response.bytes_stored();
  result.total_time = absl::Now() - start;
  return result;
}

absl::StatusOr<LoadResult> Client::Load(const LoadRequest& request) {
  const absl::Time start = absl::Now();
  const Geometry& g = request.geometry;
  QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(g, "geometry"));
  std::string codec;
  if (!request.codec.empty()) {
    QAQKV_ASSIGN_OR_RETURN(const CodecConfig config, internal::ParseCodec(request.codec, "codec"));
    codec = config.Name();
  }
  if (request.blocks.size() > limits::kMaxGetPagesKeys) {
    return absl::InvalidArgumentError(absl::StrCat("blocks: ", request.blocks.size(),
                                                   " keys, at most ", limits::kMaxGetPagesKeys,
                                                   " per call"));
  }
  const int layer_end = request.layer_end == 0 ? g.num_layers : request.layer_end;
  if (request.layer_begin < 0 || request.layer_begin >= g.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer_begin: ", request.layer_begin,
                                                   " not in [0, geometry.num_layers ",
                                                   g.num_layers, ")"));
  }
  if (layer_end <= request.layer_begin || layer_end > g.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer_end: ", request.layer_end, " is neither 0 (all) nor in (layer_begin ",
        request.layer_begin, ", geometry.num_layers ", g.num_layers, "]"));
  }
  const int64_t rows = static_cast<int64_t>(request.blocks.size()) * g.block_tokens;
  QAQKV_ASSIGN_OR_RETURN(const int64_t buffer_tokens,
                         internal::ValidateKv(internal::View(request.kv), g, rows,
                                              request.layer_begin, layer_end, "kv"));

  LoadState state(request, layer_end, buffer_tokens, start);
  LoadResult result;
  if (request.blocks.empty()) {
    // Nothing to fetch: every requested layer is trivially complete.
    state.FireReadyLayers();
    result.time_to_first_layer = state.time_to_first_layer();
    result.total_time = absl::Now() - start;
    return result;
  }

#ifdef QAQKV_HAVE_CUDA
  QAQKV_ASSIGN_OR_RETURN(const internal::KvPlacement where,
                         internal::LocateKv(internal::View(request.kv), request.layer_begin,
                                            layer_end, "kv"));
  if (where.on_device) {
    QAQKV_ASSIGN_OR_RETURN(std::unique_ptr<internal::DeviceLoader> loader,
                           internal::MakeDeviceLoader(request, layer_end, buffer_tokens,
                                                      where.device, start));
    std::string scratch;  // a page in several pieces, gathered for the upload
    const absl::Status stream = impl_->StreamGet(
        request.blocks, request.layer_begin, layer_end,
        [&](const v1::BlockFormat& format) { return CheckStoredFormat(format, g, codec); },
        [&](size_t block, int layer, const PageBytes& data,
            const std::shared_ptr<const void>&) -> absl::Status {
          ++result.pages;
          result.stored_bytes += data.size();
          return loader->Page(block, layer, data.Flat(&scratch));
        });
    QAQKV_RETURN_IF_ERROR(loader->Finish(stream.ok()));
    QAQKV_RETURN_IF_ERROR(stream);
    result.time_to_first_layer = loader->time_to_first_layer();
    result.total_time = absl::Now() - start;
    return result;
  }
#endif

  const size_t window = Window(impl_->pool());
  absl::Status stream = impl_->StreamGet(
      request.blocks, request.layer_begin, layer_end,
      [&](const v1::BlockFormat& format) { return CheckStoredFormat(format, g, codec); },
      [&](size_t block, int layer, const PageBytes& data,
          const std::shared_ptr<const void>& keep) -> absl::Status {
        QAQKV_RETURN_IF_ERROR(state.error());
        ++result.pages;
        result.stored_bytes += data.size();
        // Bounded decode backlog: receiving waits for decoding, so memory
        // stays at a few pages however long the stream.
        state.tasks().WaitBelow(static_cast<int>(window));
        state.tasks().Add();
        // The task decodes from the received bytes (`keep` holds them until
        // it is done): in place when the page is one piece, else gathered
        // by the decoding thread, so the stream thread never copies a page.
        impl_->pool().Submit([&state, block, layer, data, keep] {
          thread_local std::string scratch;  // reused: a pool thread's own
          state.Decode(block, layer, data.Flat(&scratch));
          state.tasks().Done();
        });
        return absl::OkStatus();
      });
  state.tasks().WaitBelow(1);
  // A decode error makes the stream stop early; report the cause.
  QAQKV_RETURN_IF_ERROR(state.error());
  QAQKV_RETURN_IF_ERROR(stream);
  state.FireReadyLayers();  // normally a no-op: the last decode fired them
  result.time_to_first_layer = state.time_to_first_layer();
  result.total_time = absl::Now() - start;
  return result;
}

}  // namespace qaqkv::client
