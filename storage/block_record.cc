#include "storage/block_record.h"

#include <bit>

#include "base/endian.h"
#include "qaqkv/limits.h"

namespace qaqkv::storage {
namespace {

constexpr uint8_t kVersion = 1;
// The fixed part: version and flags bytes, then little-endian fields at these
// offsets; the descriptor and the layer bitmap follow it.
constexpr size_t kLayersAt = 2;          // u32
constexpr size_t kBytesAt = 6;           // u64
constexpr size_t kCreatedAt = 14;        // i64
constexpr size_t kAccessedAt = 22;       // i64
constexpr size_t kDescriptorLenAt = 30;  // u32
constexpr size_t kFixedBytes = kDescriptorLenAt + 4;

}  // namespace

uint32_t BlockRecord::LayersPresent() const {
  uint32_t n = 0;
  for (uint8_t b : present) n += static_cast<uint32_t>(std::popcount(b));
  return n;
}

BlockRecord NewBlockRecord(uint32_t num_layers, std::string_view descriptor, int64_t now_ms) {
  BlockRecord r;
  r.num_layers = num_layers;
  r.descriptor = std::string(descriptor);
  r.present.assign((num_layers + 7) / 8, 0);
  r.created_ms = r.accessed_ms = now_ms;
  return r;
}

std::string EncodeBlockRecord(const BlockRecord& r) {
  std::string out(kFixedBytes, '\0');
  out.reserve(kFixedBytes + r.descriptor.size() + r.present.size());
  out[0] = static_cast<char>(kVersion);
  out[1] = r.committed ? 1 : 0;
  base::StoreLe32(out.data() + kLayersAt, r.num_layers);
  base::StoreLe64(out.data() + kBytesAt, r.bytes);
  base::StoreLe64(out.data() + kCreatedAt, static_cast<uint64_t>(r.created_ms));
  base::StoreLe64(out.data() + kAccessedAt, static_cast<uint64_t>(r.accessed_ms));
  base::StoreLe32(out.data() + kDescriptorLenAt,
                  static_cast<uint32_t>(r.descriptor.size()));
  out += r.descriptor;
  out.append(reinterpret_cast<const char*>(r.present.data()), r.present.size());
  return out;
}

absl::StatusOr<BlockRecord> DecodeBlockRecord(std::string_view in) {
  if (in.size() < kFixedBytes) return absl::DataLossError("block record: truncated");
  if (static_cast<uint8_t>(in[0]) != kVersion) {
    return absl::DataLossError("block record: bad version");
  }
  const uint8_t flags = static_cast<uint8_t>(in[1]);
  if ((flags & ~1u) != 0) return absl::DataLossError("block record: bad flags");
  BlockRecord r;
  r.committed = flags & 1;
  r.num_layers = base::LoadLe32(in.data() + kLayersAt);
  r.bytes = base::LoadLe64(in.data() + kBytesAt);
  r.created_ms = static_cast<int64_t>(base::LoadLe64(in.data() + kCreatedAt));
  r.accessed_ms = static_cast<int64_t>(base::LoadLe64(in.data() + kAccessedAt));
  const uint32_t dlen = base::LoadLe32(in.data() + kDescriptorLenAt);
  if (r.num_layers == 0 || r.num_layers > limits::kMaxLayers) {
    return absl::DataLossError("block record: bad layer count");
  }
  const size_t bitmap = (r.num_layers + 7) / 8;
  if (in.size() != kFixedBytes + size_t{dlen} + bitmap) {
    return absl::DataLossError("block record: size does not match its fields");
  }
  r.descriptor = std::string(in.substr(kFixedBytes, dlen));
  const std::string_view bits = in.substr(kFixedBytes + dlen);
  r.present.assign(bits.begin(), bits.end());
  if (r.num_layers % 8 != 0 && (r.present.back() >> (r.num_layers % 8)) != 0) {
    return absl::DataLossError("block record: layer bitmap has bits past the last layer");
  }
  if (r.committed != (r.LayersPresent() == r.num_layers)) {
    return absl::DataLossError("block record: committed flag disagrees with its layers");
  }
  return r;
}

}  // namespace qaqkv::storage
