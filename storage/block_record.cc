#include "storage/block_record.h"

#include <bit>
#include <cstring>

#include "qaqkv/limits.h"

namespace qaqkv::storage {
namespace {

constexpr uint8_t kVersion = 1;
constexpr size_t kFixedBytes = 1 + 1 + 4 + 8 + 8 + 8 + 4;

template <typename T>
void Append(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

template <typename T>
T Read(std::string_view in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  return v;
}

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
  std::string out;
  out.reserve(kFixedBytes + r.descriptor.size() + r.present.size());
  Append<uint8_t>(out, kVersion);
  Append<uint8_t>(out, r.committed ? 1 : 0);
  Append<uint32_t>(out, r.num_layers);
  Append<uint64_t>(out, r.bytes);
  Append<int64_t>(out, r.created_ms);
  Append<int64_t>(out, r.accessed_ms);
  Append<uint32_t>(out, static_cast<uint32_t>(r.descriptor.size()));
  out += r.descriptor;
  out.append(reinterpret_cast<const char*>(r.present.data()), r.present.size());
  return out;
}

absl::StatusOr<BlockRecord> DecodeBlockRecord(std::string_view in) {
  if (in.size() < kFixedBytes) return absl::DataLossError("block record: truncated");
  if (Read<uint8_t>(in, 0) != kVersion) return absl::DataLossError("block record: bad version");
  const uint8_t flags = Read<uint8_t>(in, 1);
  if ((flags & ~1u) != 0) return absl::DataLossError("block record: bad flags");
  BlockRecord r;
  r.committed = flags & 1;
  r.num_layers = Read<uint32_t>(in, 2);
  r.bytes = Read<uint64_t>(in, 6);
  r.created_ms = Read<int64_t>(in, 14);
  r.accessed_ms = Read<int64_t>(in, 22);
  const uint32_t dlen = Read<uint32_t>(in, 30);
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
