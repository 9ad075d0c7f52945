// The per-block record of the two-phase write (docs/design.md: a block is visible
// only once all of its layers are stored). Stored in the `blocks` column,
// little-endian, versioned:
//
//   u8 version (1) | u8 flags (bit 0: committed) | u32 num_layers |
//   u64 bytes | i64 created_ms | i64 accessed_ms | u32 descriptor_len |
//   descriptor | ceil(num_layers / 8) bytes: bitmap of the layers present
//
// `descriptor` is opaque to storage: the caller's geometry and codec config,
// which every page of a block must agree on.
#ifndef QAQKV_STORAGE_BLOCK_RECORD_H_
#define QAQKV_STORAGE_BLOCK_RECORD_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qaqkv::storage {

struct BlockRecord {
  uint32_t num_layers = 0;
  bool committed = false;
  uint64_t bytes = 0;  // sum of the stored pages' sizes
  int64_t created_ms = 0;
  int64_t accessed_ms = 0;
  std::string descriptor;
  std::vector<uint8_t> present;  // bitmap, ceil(num_layers / 8) bytes

  bool HasLayer(uint32_t layer) const { return (present[layer >> 3] >> (layer & 7)) & 1; }
  void SetLayer(uint32_t layer) { present[layer >> 3] |= uint8_t(1u << (layer & 7)); }
  void ClearLayer(uint32_t layer) { present[layer >> 3] &= uint8_t(~(1u << (layer & 7))); }
  uint32_t LayersPresent() const;
};

// A new, empty record for `num_layers` (1..limits::kMaxLayers) layers.
BlockRecord NewBlockRecord(uint32_t num_layers, std::string_view descriptor, int64_t now_ms);

std::string EncodeBlockRecord(const BlockRecord& r);
// kDataLoss when the bytes are not a well-formed record.
absl::StatusOr<BlockRecord> DecodeBlockRecord(std::string_view bytes);

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_BLOCK_RECORD_H_
