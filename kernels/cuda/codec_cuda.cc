#include "kernels/cuda/codec_cuda.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/cuda/internal/launch.h"
#include "kernels/internal/encode_plan.h"
#include "kernels/internal/page_format.h"
#include "kernels/internal/tensor_codec.h"

namespace qaqkv::cuda {

namespace ci = ::qaqkv::cuda_internal;
namespace qi = ::qaqkv::internal;

struct DevicePage::State {
  DeviceBuffer bytes;
  qi::PageHeader header;
  size_t body_bytes = 0;        // header + sections
  bool has_checksum = false;    // uploaded pages carry theirs
  bool valid = false;
  ci::SectionLayout layout[2];
  uint64_t n_exact[2] = {0, 0};
};

DevicePage::DevicePage() : state_(std::make_unique<State>()) {}
DevicePage::~DevicePage() = default;
DevicePage::DevicePage(DevicePage&&) noexcept = default;
DevicePage& DevicePage::operator=(DevicePage&&) noexcept = default;
const uint8_t* DevicePage::data() const { return state_->bytes.as<const uint8_t>(); }
size_t DevicePage::page_bytes() const {
  return state_->valid ? state_->body_bytes + qi::kChecksumBytes : 0;
}
PageShape DevicePage::shape() const {
  const qi::PageHeader& h = state_->header;
  return PageShape{static_cast<int>(h.tokens), h.kv_heads, h.head_dim};
}

namespace {

// Scratch of one tensor (K or V); grown to the largest page seen.
struct TensorWork {
  DeviceBuffer group_e, info, count, scanned, scan_temp;
};

ci::Geo ToGeo(const qi::GroupGeometry& g) {
  ci::Geo o;
  switch (g.kind) {
    case qi::GroupGeometry::Kind::kHead: o.kind = ci::kGeoHead; break;
    case qi::GroupGeometry::Kind::kLayer: o.kind = ci::kGeoLayer; break;
    case qi::GroupGeometry::Kind::kKiviKey: o.kind = ci::kGeoKiviKey; break;
    case qi::GroupGeometry::Kind::kKiviValue: o.kind = ci::kGeoKiviValue; break;
  }
  o.tokens = g.tokens;
  o.kv_heads = g.kv_heads;
  o.head_dim = g.head_dim;
  o.quant_tokens = g.quant_tokens;
  o.kivi_group = g.kivi_group;
  o.groups = g.groups();
  return o;
}

ci::TensorParams ToParams(const qi::TensorTask& t) {
  ci::TensorParams p;
  p.geo = ToGeo(t.geo);
  p.outliers = t.outliers;
  p.index_bytes = qi::OutlierIndexBytes(t.geo.MaxGroupSize());
  p.variable_widths = t.variable_widths ? 1 : 0;
  p.fixed_bits = t.fixed_bits;
  p.b_min = t.b_min;
  p.b_max = t.b_max;
  return p;
}

// What the section's layout depends on besides its totals.
ci::SectionShape ShapeOf(const qi::TensorTask& t) {
  ci::SectionShape s;
  s.groups = t.geo.groups();
  s.outliers = t.outliers;
  s.index_bytes = qi::OutlierIndexBytes(t.geo.MaxGroupSize());
  s.variable_widths = t.variable_widths ? 1 : 0;
  s.residual_values = int64_t{t.geo.kv_heads} * (t.geo.tokens - t.geo.quant_tokens) * t.geo.head_dim;
  return s;
}

// An upper bound on where a section starting at `base` ends, whatever its
// groups turn out to be: each group costs at most the larger of being kept
// exactly and being quantized at 8 bits (ci::LayoutSection's sums).
uint64_t WorstCaseSectionEnd(uint64_t base, const qi::TensorTask& t) {
  const ci::SectionShape s = ShapeOf(t);
  const uint64_t n = t.geo.MaxGroupSize(), per_group = 2 * uint64_t(s.outliers);
  const uint64_t exact = 4 + 2 * n, quantized = 4 + per_group * (2 + s.index_bytes) + n;
  return base + 4 + (s.groups + 1) / 2 + s.groups * std::max(exact, quantized) + 1 +
         2 * uint64_t(s.residual_values);
}

absl::Status CheckView(const void* data, DType dtype, Layout layout, const char* name) {
  if (data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ".data: null"));
  if (dtype != DType::kF16 && dtype != DType::kBF16 && dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".dtype: unknown"));
  }
  if (layout != Layout::kNHD && layout != Layout::kHND) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".layout: unknown"));
  }
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, data) != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::InvalidArgumentError(absl::StrCat(name, ".data: not a CUDA pointer"));
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".data: not device memory"));
  }
  return absl::OkStatus();
}

ci::InView ToInView(const TensorView& t) {
  return ci::InView{t.data, static_cast<int32_t>(t.dtype), static_cast<int32_t>(t.layout)};
}

constexpr unsigned long long kNoBadIndex = ~0ull;

// Bytes of qaq-cs / qaq-cc per-channel tables at the start of a section.
uint64_t ChannelBytes(const qi::PageHeader& h, bool keys) {
  if (!keys || h.kind != CodecKind::kQaq) return 0;
  const uint64_t per = 2 * uint64_t(h.kv_heads) * h.head_dim;
  return ((h.flags & qi::kFlagKeyChannelScale) ? per : 0) +
         ((h.flags & qi::kFlagKeyChannelCenter) ? per : 0);
}

// Version-2 (rotated) pages have no GPU kernel yet: refused before anything
// is copied, so the caller can decode them on the CPU.
absl::Status CheckGpuDecodes(const qi::PageHeader& h) {
  if ((h.flags & (qi::kFlagRotate | qi::kFlagEntropyCoded)) != 0) {
    return absl::UnimplementedError(
        "cuda: format version 2 pages (-rh, -ec) are decoded on the CPU");
  }
  return absl::OkStatus();
}

absl::Status RangeError(const char* name, unsigned long long idx, const PageShape& s) {
  const int64_t d = idx % s.head_dim, t = idx / s.head_dim % s.tokens,
                h = idx / s.head_dim / s.tokens;
  return absl::InvalidArgumentError(absl::StrCat(name, ": value at token ", t, " head ", h,
                                                 " channel ", d, " is beyond fp16 range"));
}

}  // namespace

struct GpuCodec::Impl {
  cudaStream_t stream = nullptr;
  TensorWork work[2];
  DeviceBuffer bad;           // 2 x u64: first out-of-range canonical index
  DeviceBuffer block_table;
  PinnedBuffer totals;        // ci::EncodeResult, read back at the end of an encode
  DeviceBuffer result;        // ci::EncodeResult, then 4 edge words (ci::PageTarget)
  PinnedBuffer staging;       // page bytes on their way in or out
  CudaEvent done;             // host waits on it
  CudaEvent staging_free;     // the last upload from `staging` has finished
  DevicePage scratch_page;    // for EncodePage / DecodePage
  std::vector<uint8_t> adopt_shadow;  // AdoptDevicePage's host image of the tables
  bool staging_in_flight = false;

  absl::Status Sync() {
    QAQKV_RETURN_IF_ERROR(done.Record(stream));
    return done.Synchronize();
  }

  absl::Status GrowScan(TensorWork& w, int64_t groups) {
    QAQKV_RETURN_IF_ERROR(w.count.Grow(sizeof(ci::GroupCount) * groups));
    QAQKV_RETURN_IF_ERROR(w.scanned.Grow(sizeof(ci::GroupCount) * groups));
    size_t temp = 0;
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchScan(nullptr, nullptr, groups, nullptr, &temp, stream));
    return w.scan_temp.Grow(temp);
  }

  // QAQ's error targets: one value or one per head in the kernel's
  // parameters, a table uploaded only when attention inputs need one.
  absl::Status SetGroupE(const CodecConfig& config, const PageShape& shape,
                         const QaqSideInputs& side, bool keys, qi::TensorTask& task,
                         TensorWork& w, ci::TensorParams& p) {
    const qi::GroupEModel model = qi::ModelGroupE(config, shape, side, keys, task);
    if (model.kind == qi::GroupEModel::Kind::kScalar) {
      p.e_mode = ci::kEScalar;
      p.e_scalar = model.scalar;
      return absl::OkStatus();
    }
    if (model.kind == qi::GroupEModel::Kind::kPerHead &&
        model.per_head.size() <= size_t{ci::kMaxPerHeadE}) {
      p.e_mode = ci::kEPerHead;
      std::copy(model.per_head.begin(), model.per_head.end(), p.e_per_head);
      return absl::OkStatus();
    }
    qi::FillGroupE(config, shape, side, keys, task);
    const int64_t G = task.geo.groups();
    QAQKV_RETURN_IF_ERROR(w.group_e.Grow(sizeof(float) * std::max<int64_t>(G, 1)));
    // Pageable source: the copy has read it by the time the call returns.
    QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(w.group_e.data(), task.group_e.data(),
                                               sizeof(float) * G, cudaMemcpyHostToDevice, stream));
    p.e_mode = ci::kETable;
    p.group_e = w.group_e.as<float>();
    return absl::OkStatus();
  }

  absl::Status Scan(TensorWork& w, int64_t groups) {
    size_t temp = w.scan_temp.size();
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchScan(w.count.as<ci::GroupCount>(),
                                              w.scanned.as<ci::GroupCount>(), groups,
                                              w.scan_temp.data(), &temp, stream));
    return absl::OkStatus();
  }
};

GpuCodec::GpuCodec(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GpuCodec::~GpuCodec() = default;
cudaStream_t GpuCodec::stream() const { return impl_->stream; }

absl::StatusOr<std::unique_ptr<GpuCodec>> GpuCodec::Create(cudaStream_t stream) {
  if (DeviceCount() == 0) return absl::FailedPreconditionError("cuda: no CUDA device");
  auto impl = std::make_unique<Impl>();
  impl->stream = stream;
  QAQKV_RETURN_IF_ERROR(impl->bad.Grow(2 * sizeof(unsigned long long)));
  static_assert(sizeof(ci::EncodeResult) == 2 * sizeof(ci::GroupCount) + 2 * sizeof(unsigned long long));
  QAQKV_RETURN_IF_ERROR(impl->totals.Grow(sizeof(ci::EncodeResult)));
  QAQKV_RETURN_IF_ERROR(impl->result.Grow(sizeof(ci::EncodeResult) + 4 * sizeof(uint32_t)));
  QAQKV_ASSIGN_OR_RETURN(impl->done, CudaEvent::Create(/*timing=*/false));
  QAQKV_ASSIGN_OR_RETURN(impl->staging_free, CudaEvent::Create(/*timing=*/false));
  return std::unique_ptr<GpuCodec>(new GpuCodec(std::move(impl)));
}

absl::Status GpuCodec::EncodeToDevice(const CodecConfig& config, const PageShape& shape,
                                      TensorView k, TensorView v, const QaqSideInputs& side,
                                      DevicePage* page) {
  Impl& m = *impl_;
  // The CPU's checks, in the CPU's order (config and shape, views, side).
  QAQKV_RETURN_IF_ERROR(qi::ValidateEncodeArgs(config, shape, {}));
  QAQKV_RETURN_IF_ERROR(CheckView(k.data, k.dtype, k.layout, "k"));
  QAQKV_RETURN_IF_ERROR(CheckView(v.data, v.dtype, v.layout, "v"));
  QAQKV_RETURN_IF_ERROR(qi::ValidateEncodeArgs(config, shape, side));
  if (page == nullptr) return absl::InvalidArgumentError("page: null");
  if (config.key_channel_scale || config.key_channel_center) {
    return absl::UnimplementedError(
        "cuda: qaq-cs / qaq-cc pages are encoded on the CPU (the GPU decodes them)");
  }
  if (config.rotate || config.entropy_coded) {
    return absl::UnimplementedError(
        "cuda: format version 2 pages (-rh, -ec) are encoded on the CPU");
  }
  DevicePage::State& ps = *page->state_;
  ps.valid = false;
  qi::PageHeader header = qi::MakePageHeader(config, shape);
  const TensorView views[2] = {k, v};
  const char* names[2] = {"k", "v"};
  const cudaStream_t stream = m.stream;
  auto* bad = m.bad.as<unsigned long long>();
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMemsetAsync(bad, 0xff, 2 * sizeof(unsigned long long), stream));
  unsigned long long* bad_host = reinterpret_cast<ci::EncodeResult*>(m.totals.data())->bad;
  auto check_range = [&]() -> absl::Status {
    for (int which = 0; which < 2; ++which) {
      if (bad_host[which] != kNoBadIndex) return RangeError(names[which], bad_host[which], shape);
    }
    return absl::OkStatus();
  };

  if (config.kind == CodecKind::kFp16) {
    const uint64_t section = 2 * uint64_t(shape.values());
    header.k_bytes = header.v_bytes = static_cast<uint32_t>(section);
    ps.body_bytes = qi::kHeaderBytes + 2 * section;
    QAQKV_RETURN_IF_ERROR(ps.bytes.Grow(ps.body_bytes + qi::kChecksumBytes));
    qi::TensorTask task = qi::TaskShape(header, true);
    const ci::Geo geo = ToGeo(task.geo);
    for (int which = 0; which < 2; ++which) {
      QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchStoreFp16(geo, 0, ToInView(views[which]),
                                                     ps.bytes.as<uint8_t>(),
                                                     qi::kHeaderBytes + which * section,
                                                     bad + which, stream));
    }
    QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(bad_host, bad, 2 * sizeof(unsigned long long),
                                               cudaMemcpyDeviceToHost, stream));
    QAQKV_RETURN_IF_ERROR(m.Sync());
    QAQKV_RETURN_IF_ERROR(check_range());
    uint8_t hb[qi::kHeaderBytes];
    qi::WriteHeader(header, hb);
    QAQKV_RETURN_IF_CUDA_ERROR(
        ci::LaunchWriteBytes(ps.bytes.as<uint8_t>(), hb, sizeof(hb), stream));
    ps.header = header;
    ps.has_checksum = false;
    ps.valid = true;
    return absl::OkStatus();
  }

  // Analysis and scans of both tensors, then the pack into a page whose
  // layout the kernels derive from the scans: no round trip to the host
  // until the page is done.
  qi::TensorTask tasks[2];
  ci::TensorParams params[2];
  ci::PageTarget target;
  target.base = qi::kHeaderBytes;
  target.k_bytes_at = qi::kHeaderKBytesOffset;
  target.v_bytes_at = qi::kHeaderVBytesOffset;
  uint64_t capacity = qi::kHeaderBytes;
  for (int which = 0; which < 2; ++which) {
    const bool keys = which == 0;
    qi::TensorTask& task = tasks[which];
    task = qi::TaskShape(header, keys);
    task.b_min = config.b_min;
    task.b_max = config.b_max;
    TensorWork& w = m.work[which];
    const int64_t G = task.geo.groups();
    params[which] = ToParams(task);
    if (config.kind == CodecKind::kQaq) {
      QAQKV_RETURN_IF_ERROR(m.SetGroupE(config, shape, side, keys, task, w, params[which]));
    }
    QAQKV_RETURN_IF_ERROR(w.info.Grow(sizeof(ci::GroupInfo) * std::max<int64_t>(G, 1)));
    QAQKV_RETURN_IF_ERROR(m.GrowScan(w, std::max<int64_t>(G, 1)));
    const ci::InView iv = ToInView(views[which]);
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchAnalyze(params[which], iv, w.info.as<ci::GroupInfo>(),
                                                 w.count.as<ci::GroupCount>(), bad + which,
                                                 stream));
    // kivi2's fp16 residual is in no group: check its range here.
    if (task.geo.quant_tokens < task.geo.tokens) {
      QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchStoreFp16(params[which].geo, task.geo.quant_tokens, iv,
                                                     nullptr, 0, bad + which, stream));
    }
    QAQKV_RETURN_IF_ERROR(m.Scan(w, G));
    target.shape[which] = ShapeOf(task);
    target.scanned[which] = w.scanned.as<ci::GroupCount>();
    capacity = WorstCaseSectionEnd(capacity, task);
  }
  if (capacity - qi::kHeaderBytes > 2 * uint64_t{UINT32_MAX}) {
    return absl::InvalidArgumentError("shape: encoded page would exceed 4 GiB");
  }
  QAQKV_RETURN_IF_ERROR(ps.bytes.Grow(capacity + qi::kChecksumBytes));
  uint8_t* dpage = ps.bytes.as<uint8_t>();
  auto* result = m.result.as<ci::EncodeResult>();
  target.page = dpage;
  target.edges = reinterpret_cast<uint32_t*>(result + 1);
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMemsetAsync(target.edges, 0, 4 * sizeof(uint32_t), stream));
  uint8_t hb[qi::kHeaderBytes];
  qi::WriteHeader(header, hb);  // section sizes patched by FinishPage
  QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchWriteBytes(dpage, hb, sizeof(hb), stream));
  for (int which = 0; which < 2; ++which) {
    TensorWork& w = m.work[which];
    const ci::InView iv = ToInView(views[which]);
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchZeroCodes(target, which, stream));
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchPack(params[which], iv, w.info.as<ci::GroupInfo>(),
                                              w.count.as<ci::GroupCount>(), target, which,
                                              stream));
    if (tasks[which].geo.quant_tokens < tasks[which].geo.tokens) {
      QAQKV_RETURN_IF_CUDA_ERROR(
          ci::LaunchStoreResidual(params[which].geo, iv, target, which, stream));
    }
  }
  QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchFinishPage(target, bad, result, stream));
  auto* host_result = reinterpret_cast<ci::EncodeResult*>(m.totals.data());
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(host_result, result, sizeof(ci::EncodeResult),
                                             cudaMemcpyDeviceToHost, stream));
  QAQKV_RETURN_IF_ERROR(m.Sync());
  QAQKV_RETURN_IF_ERROR(check_range());
  const ci::GroupCount* totals = host_result->totals;
  ci::SectionLayout layout[2];
  layout[0] = ci::LayoutSection(qi::kHeaderBytes, target.shape[0], totals[0]);
  layout[1] = ci::LayoutSection(layout[0].end, target.shape[1], totals[1]);
  const uint64_t k_bytes = layout[0].end - qi::kHeaderBytes, v_bytes = layout[1].end - layout[0].end;
  if (k_bytes > UINT32_MAX || v_bytes > UINT32_MAX) {
    return absl::InvalidArgumentError("shape: encoded page would exceed 4 GiB");
  }
  header.k_bytes = static_cast<uint32_t>(k_bytes);
  header.v_bytes = static_cast<uint32_t>(v_bytes);
  ps.body_bytes = layout[1].end;
  ps.header = header;
  ps.layout[0] = layout[0];
  ps.layout[1] = layout[1];
  ps.n_exact[0] = totals[0].exact;
  ps.n_exact[1] = totals[1].exact;
  ps.has_checksum = false;
  ps.valid = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> GpuCodec::Download(const DevicePage& page) {
  Impl& m = *impl_;
  const DevicePage::State& ps = *page.state_;
  if (!ps.valid) return absl::FailedPreconditionError("page: holds no page");
  const size_t n = ps.has_checksum ? ps.body_bytes + qi::kChecksumBytes : ps.body_bytes;
  if (m.staging_in_flight) {
    QAQKV_RETURN_IF_ERROR(m.staging_free.Synchronize());
    m.staging_in_flight = false;
  }
  QAQKV_RETURN_IF_ERROR(m.staging.Grow(n));
  QAQKV_RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(m.staging.data(), ps.bytes.data(), n, cudaMemcpyDeviceToHost, m.stream));
  QAQKV_RETURN_IF_ERROR(m.Sync());
  std::vector<uint8_t> out(ps.body_bytes + qi::kChecksumBytes);
  std::memcpy(out.data(), m.staging.data(), n);
  if (!ps.has_checksum) {
    const uint64_t sum = qi::PageChecksum(std::span<const uint8_t>(out.data(), ps.body_bytes));
    qi::PutU64(out.data() + ps.body_bytes, sum);
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> GpuCodec::EncodePage(const CodecConfig& config,
                                                          const PageShape& shape, TensorView k,
                                                          TensorView v,
                                                          const QaqSideInputs& side) {
  QAQKV_RETURN_IF_ERROR(EncodeToDevice(config, shape, k, v, side, &impl_->scratch_page));
  return Download(impl_->scratch_page);
}

namespace {

// Parses both sections of a page body whose header passed ReadHeader and
// records where each region lies, relative to `body`'s first byte. Only the
// group tables are read (ParseSection never looks at exact values, codes or
// residuals), which is what lets AdoptDevicePage check a page from a
// partial host copy.
absl::Status LayOutPage(const qi::PageHeader& header, std::span<const uint8_t> body,
                        DevicePage::State& ps) {
  const uint8_t* base = body.data();
  for (int which = 0; which < 2; ++which) {
    const auto section = which == 0 ? body.subspan(qi::kHeaderBytes, header.k_bytes)
                                    : body.subspan(qi::kHeaderBytes + header.k_bytes,
                                                   header.v_bytes);
    QAQKV_ASSIGN_OR_RETURN(const qi::SectionView view,
                           qi::ParseSection(header, which == 0, section));
    ci::SectionLayout& l = ps.layout[which];
    l = ci::SectionLayout{};
    auto at = [&](std::span<const uint8_t> s) { return uint64_t(s.data() - base); };
    if (header.kind == CodecKind::kFp16) {
      l.exact_values = at(view.exact_values);
      l.end = l.exact_values + view.exact_values.size();
      ps.n_exact[which] = 0;
      continue;
    }
    l.has_channel_scale = !view.channel_scale.empty();
    l.has_channel_offset = !view.channel_offset.empty();
    if (l.has_channel_scale) l.channel_scale = at(view.channel_scale);
    if (l.has_channel_offset) l.channel_offset = at(view.channel_offset);
    l.exact_list = at(view.exact_groups);
    l.widths = view.variable_widths ? at(view.widths) : l.exact_list + view.exact_groups.size();
    l.lo = at(view.lo);
    l.step = at(view.step);
    l.outlier_values = at(view.outlier_values);
    l.outlier_index = at(view.outlier_index);
    l.exact_values = at(view.exact_values);
    l.codes = at(view.codes);
    l.residual = at(view.residual);
    l.end = l.residual + view.residual.size();
    ps.n_exact[which] = static_cast<uint64_t>(view.n_exact);
  }
  return absl::OkStatus();
}

// Bytes at the start of a section (from its first byte) that hold its group
// tables, given its exact-group count: everything ParseSection reads. May
// exceed the section (ParseSection then reports it short).
uint64_t SectionTableBytes(const qi::PageHeader& h, bool keys, uint64_t n_exact) {
  const qi::TensorTask t = qi::TaskShape(h, keys);
  const uint64_t G = static_cast<uint64_t>(t.geo.groups());
  uint64_t n = ChannelBytes(h, keys) + 4;
  if (n_exact > G) return n;  // ParseSection rejects the count itself
  const uint64_t quant = G - n_exact;
  const uint64_t n_out = quant * 2 * uint64_t(t.outliers);
  n += 4 * n_exact;
  if (t.variable_widths) n += (G + 1) / 2;
  n += 4 * quant + 2 * n_out + uint64_t(qi::OutlierIndexBytes(t.geo.MaxGroupSize())) * n_out;
  return n;
}

absl::Status CheckDevicePointer(const void* data, const char* name) {
  if (data == nullptr) return absl::InvalidArgumentError(absl::StrCat(name, ": null"));
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, data) != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a CUDA pointer"));
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not device memory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<size_t> GpuCodec::DownloadTo(const DevicePage& page, std::span<uint8_t> out) {
  Impl& m = *impl_;
  const DevicePage::State& ps = *page.state_;
  if (!ps.valid) return absl::FailedPreconditionError("page: holds no page");
  const size_t total = ps.body_bytes + qi::kChecksumBytes;
  if (out.size() < total) {
    return absl::InvalidArgumentError(
        absl::StrCat("out: ", out.size(), " bytes, the page has ", total));
  }
  const size_t n = ps.has_checksum ? total : ps.body_bytes;
  QAQKV_RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(out.data(), ps.bytes.data(), n, cudaMemcpyDeviceToHost, m.stream));
  QAQKV_RETURN_IF_ERROR(m.Sync());
  if (!ps.has_checksum) {
    const uint64_t sum = qi::PageChecksum(out.first(ps.body_bytes));
    qi::PutU64(out.data() + ps.body_bytes, sum);
  }
  return total;
}

absl::Status GpuCodec::Upload(std::span<const uint8_t> bytes, DevicePage* page) {
  Impl& m = *impl_;
  if (page == nullptr) return absl::InvalidArgumentError("page: null");
  DevicePage::State& ps = *page->state_;
  ps.valid = false;
  QAQKV_ASSIGN_OR_RETURN(const std::span<const uint8_t> body, qi::VerifyChecksum(bytes));
  QAQKV_ASSIGN_OR_RETURN(const qi::PageHeader header, qi::ReadHeader(body));
  QAQKV_RETURN_IF_ERROR(CheckGpuDecodes(header));
  QAQKV_RETURN_IF_ERROR(LayOutPage(header, body, ps));
  // Through pinned staging so the copy is asynchronous; the next use of the
  // staging buffer waits for this copy.
  if (m.staging_in_flight) {
    QAQKV_RETURN_IF_ERROR(m.staging_free.Synchronize());
    m.staging_in_flight = false;
  }
  QAQKV_RETURN_IF_ERROR(m.staging.Grow(bytes.size()));
  std::memcpy(m.staging.data(), bytes.data(), bytes.size());
  QAQKV_RETURN_IF_ERROR(ps.bytes.Grow(bytes.size()));
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(ps.bytes.data(), m.staging.data(), bytes.size(),
                                             cudaMemcpyHostToDevice, m.stream));
  QAQKV_RETURN_IF_ERROR(m.staging_free.Record(m.stream));
  m.staging_in_flight = true;
  ps.header = header;
  ps.body_bytes = body.size();
  ps.has_checksum = true;
  ps.valid = true;
  return absl::OkStatus();
}

absl::Status GpuCodec::AdoptDevicePage(const void* device_bytes, size_t bytes, DevicePage* page) {
  Impl& m = *impl_;
  if (page == nullptr) return absl::InvalidArgumentError("page: null");
  DevicePage::State& ps = *page->state_;
  ps.valid = false;
  QAQKV_RETURN_IF_ERROR(CheckDevicePointer(device_bytes, "device_bytes"));
  if (bytes < qi::kHeaderBytes + qi::kChecksumBytes) {
    return absl::DataLossError(absl::StrCat("page: ", bytes, " bytes is shorter than a header"));
  }
  const size_t body_bytes = bytes - qi::kChecksumBytes;
  const auto* src = static_cast<const uint8_t*>(device_bytes);
  // A host image of the body in which only the parts ParseSection reads are
  // filled in; the rest (values, codes) is never read on the host. It only
  // grows, so steady state costs no allocation.
  std::vector<uint8_t>& shadow = m.adopt_shadow;
  if (shadow.size() < body_bytes) shadow.resize(body_bytes);
  const std::span<const uint8_t> body(shadow.data(), body_bytes);
  auto fetch = [&](uint64_t offset, uint64_t n) -> absl::Status {
    n = std::min<uint64_t>(n, body_bytes - std::min<uint64_t>(offset, body_bytes));
    if (n == 0) return absl::OkStatus();
    QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(shadow.data() + offset, src + offset, n,
                                               cudaMemcpyDeviceToHost, m.stream));
    return absl::OkStatus();
  };
  QAQKV_RETURN_IF_ERROR(fetch(0, qi::kHeaderBytes));
  QAQKV_RETURN_IF_ERROR(m.Sync());
  QAQKV_ASSIGN_OR_RETURN(const qi::PageHeader header, qi::ReadHeader(body));
  QAQKV_RETURN_IF_ERROR(CheckGpuDecodes(header));
  if (header.kind != CodecKind::kFp16) {
    const uint64_t starts[2] = {qi::kHeaderBytes, qi::kHeaderBytes + uint64_t(header.k_bytes)};
    const uint64_t sizes[2] = {header.k_bytes, header.v_bytes};
    // Round 1: each section's exact-group count, which sizes its tables.
    for (int which = 0; which < 2; ++which) {
      const uint64_t at = ChannelBytes(header, which == 0);
      if (at + 4 <= sizes[which]) QAQKV_RETURN_IF_ERROR(fetch(starts[which], at + 4));
    }
    QAQKV_RETURN_IF_ERROR(m.Sync());
    // Round 2: the tables themselves.
    for (int which = 0; which < 2; ++which) {
      const uint64_t at = ChannelBytes(header, which == 0);
      if (at + 4 > sizes[which]) continue;  // ParseSection reports it short
      const uint64_t n_exact = qi::GetU32(shadow.data() + starts[which] + at);
      const uint64_t table = std::min(SectionTableBytes(header, which == 0, n_exact),
                                      sizes[which]);
      if (table > at + 4) {
        QAQKV_RETURN_IF_ERROR(fetch(starts[which] + at + 4, table - at - 4));
      }
    }
    QAQKV_RETURN_IF_ERROR(m.Sync());
  }
  QAQKV_RETURN_IF_ERROR(LayOutPage(header, body, ps));
  QAQKV_RETURN_IF_ERROR(ps.bytes.Grow(bytes));
  QAQKV_RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(ps.bytes.data(), src, bytes, cudaMemcpyDeviceToDevice, m.stream));
  ps.header = header;
  ps.body_bytes = body_bytes;
  ps.has_checksum = true;
  ps.valid = true;
  return absl::OkStatus();
}

namespace {

// Decode kernels for one tensor into `out`.
absl::Status DecodeTensor(GpuCodec::Impl& m, const DevicePage::State& ps, int which,
                          const ci::OutView& out);

}  // namespace

absl::Status GpuCodec::Decode(const DevicePage& page, MutableTensorView k, MutableTensorView v,
                              const PageShape* expected) {
  QAQKV_RETURN_IF_ERROR(CheckView(k.data, k.dtype, k.layout, "k"));
  QAQKV_RETURN_IF_ERROR(CheckView(v.data, v.dtype, v.layout, "v"));
  const DevicePage::State& ps = *page.state_;
  if (!ps.valid) return absl::FailedPreconditionError("page: holds no page");
  const PageShape shape = page.shape();
  QAQKV_RETURN_IF_ERROR(::qaqkv::internal::CheckExpectedShape(shape, expected));
  const MutableTensorView outs[2] = {k, v};
  for (int which = 0; which < 2; ++which) {
    ci::OutView o;
    o.data = outs[which].data;
    o.dtype = static_cast<int32_t>(outs[which].dtype);
    o.layout = static_cast<int32_t>(outs[which].layout);
    QAQKV_RETURN_IF_ERROR(DecodeTensor(*impl_, ps, which, o));
  }
  return absl::OkStatus();
}

absl::Status GpuCodec::DecodePaged(const DevicePage& page, const PagedKvCache& k_cache,
                                   const PagedKvCache& v_cache,
                                   std::span<const int32_t> block_table, int first_token) {
  const DevicePage::State& ps = *page.state_;
  if (!ps.valid) return absl::FailedPreconditionError("page: holds no page");
  const PageShape shape = page.shape();
  const PagedKvCache* caches[2] = {&k_cache, &v_cache};
  const char* names[2] = {"k_cache", "v_cache"};
  for (int which = 0; which < 2; ++which) {
    const PagedKvCache& c = *caches[which];
    QAQKV_RETURN_IF_ERROR(CheckView(c.data, c.dtype, Layout::kNHD, names[which]));
    if (c.kv_heads != shape.kv_heads || c.head_dim != shape.head_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          names[which], ": ", c.kv_heads, " heads x ", c.head_dim, " does not match the page's ",
          shape.kv_heads, " x ", shape.head_dim));
    }
    if (c.block_size < 1 || c.num_blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat(names[which], ": empty cache"));
    }
  }
  if (k_cache.block_size != v_cache.block_size) {
    return absl::InvalidArgumentError("v_cache.block_size: differs from k_cache's");
  }
  if (first_token < 0) return absl::InvalidArgumentError("first_token: must be >= 0");
  const int64_t bs = k_cache.block_size;
  const int64_t last_block = (int64_t{first_token} + shape.tokens - 1) / bs;
  if (last_block >= static_cast<int64_t>(block_table.size())) {
    return absl::InvalidArgumentError(absl::StrCat("block_table: ", block_table.size(),
                                                   " blocks, the page needs ", last_block + 1));
  }
  const int num_blocks = std::min(k_cache.num_blocks, v_cache.num_blocks);
  for (int64_t b = first_token / bs; b <= last_block; ++b) {
    if (block_table[b] < 0 || block_table[b] >= num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("block_table[", b, "]: block ", block_table[b],
                                                     " not in [0, ", num_blocks, ")"));
    }
  }
  Impl& m = *impl_;
  QAQKV_RETURN_IF_ERROR(m.block_table.Grow(sizeof(int32_t) * (last_block + 1)));
  // Pageable source: read before the call returns; stream order keeps the
  // previous decode's table alive until it is done.
  QAQKV_RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(m.block_table.data(), block_table.data(),
                                             sizeof(int32_t) * (last_block + 1),
                                             cudaMemcpyHostToDevice, m.stream));
  for (int which = 0; which < 2; ++which) {
    ci::OutView o;
    o.data = caches[which]->data;
    o.dtype = static_cast<int32_t>(caches[which]->dtype);
    o.block_table = m.block_table.as<const int32_t>();
    o.block_size = static_cast<int32_t>(bs);
    o.first_token = first_token;
    QAQKV_RETURN_IF_ERROR(DecodeTensor(m, ps, which, o));
  }
  return absl::OkStatus();
}

absl::Status GpuCodec::DecodePage(std::span<const uint8_t> bytes, MutableTensorView k,
                                  MutableTensorView v, const PageShape* expected) {
  QAQKV_RETURN_IF_ERROR(CheckView(k.data, k.dtype, k.layout, "k"));
  QAQKV_RETURN_IF_ERROR(CheckView(v.data, v.dtype, v.layout, "v"));
  QAQKV_RETURN_IF_ERROR(Upload(bytes, &impl_->scratch_page));
  return Decode(impl_->scratch_page, k, v, expected);
}

namespace {

absl::Status DecodeTensor(GpuCodec::Impl& m, const DevicePage::State& ps, int which,
                          const ci::OutView& out) {
  const qi::PageHeader& h = ps.header;
  const bool keys = which == 0;
  const ci::SectionLayout& l = ps.layout[which];
  const uint8_t* dpage = ps.bytes.as<const uint8_t>();
  qi::TensorTask task = qi::TaskShape(h, keys);
  const ci::TensorParams p = ToParams(task);
  if (h.kind == CodecKind::kFp16) {
    const uint64_t offset = keys ? qi::kHeaderBytes : qi::kHeaderBytes + h.k_bytes;
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchLoadFp16(p.geo, 0, dpage, offset, out, m.stream));
    return absl::OkStatus();
  }
  TensorWork& w = m.work[which];
  const int64_t G = p.geo.groups;
  // int8/int4 pages without exact groups need no scan: every group has the
  // same size and width, so its offsets follow from its index.
  const bool uniform = (p.geo.kind == ci::kGeoHead || p.geo.kind == ci::kGeoLayer) &&
                       !p.variable_widths && ps.n_exact[which] == 0;
  const ci::GroupCount* count = nullptr;
  const ci::GroupCount* scanned = nullptr;
  if (!uniform) {
    QAQKV_RETURN_IF_ERROR(m.GrowScan(w, std::max<int64_t>(G, 1)));
    QAQKV_RETURN_IF_CUDA_ERROR(ci::LaunchDecodeCount(p, dpage, l, ps.n_exact[which],
                                                     w.count.as<ci::GroupCount>(), m.stream));
    QAQKV_RETURN_IF_ERROR(m.Scan(w, G));
    count = w.count.as<ci::GroupCount>();
    scanned = w.scanned.as<ci::GroupCount>();
  }
  QAQKV_RETURN_IF_CUDA_ERROR(
      ci::LaunchDecode(p, dpage, l, ps.n_exact[which], count, scanned, out, m.stream));
  if (p.geo.quant_tokens < p.geo.tokens) {
    QAQKV_RETURN_IF_CUDA_ERROR(
        ci::LaunchLoadFp16(p.geo, p.geo.quant_tokens, dpage, l.residual, out, m.stream));
  }
  return absl::OkStatus();
}

}  // namespace

}  // namespace qaqkv::cuda
