// A chat session: a named chain of block keys plus a partial tail page, for
// resume (docs/design.md). Stored in the `sessions` column, little-endian,
// versioned:
//
//   u8 version (2) | u64 token_count | i64 created_ms | i64 accessed_ms |
//   i64 ttl_ms (0: none) | u32 n_blocks | n_blocks x 16-byte block keys |
//   u32 tail_len | tail page bytes (empty, or a page with its checksum) |
//   u32 descriptor_len | descriptor (version 2; absent in version 1)
#ifndef QAQKV_STORAGE_SESSION_RECORD_H_
#define QAQKV_STORAGE_SESSION_RECORD_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/keys.h"

namespace qaqkv::storage {

struct SessionRecord {
  uint64_t token_count = 0;
  int64_t created_ms = 0;
  int64_t accessed_ms = 0;
  int64_t ttl_ms = 0;  // 0: never expires
  // When this version was put (a put by a worker; a repair copies it), so
  // copies on several servers order by it.
  int64_t updated_ms = 0;
  // Nonzero: a tombstone, the session deleted at that time. It holds no
  // blocks and keeps a server that missed the delete, or a repair from one,
  // from bringing an older version back.
  int64_t deleted_ms = 0;
  std::vector<BlockKey> blocks;
  std::string tail;  // partial last page, may be empty
  // Opaque to storage: the caller's geometry and codec of the session's
  // blocks and tail (the service's BlockFormat).
  std::string descriptor;

  bool ExpiredAt(int64_t now_ms) const { return ttl_ms > 0 && accessed_ms + ttl_ms <= now_ms; }
  bool deleted() const { return deleted_ms != 0; }
  // The newest event this copy knows of: its put or its delete.
  int64_t version_ms() const { return std::max(updated_ms, deleted_ms); }
};

// 1..limits::kMaxSessionIdBytes bytes of printable ASCII without spaces.
absl::Status ValidateSessionId(std::string_view id);

std::string EncodeSessionRecord(const SessionRecord& r);
// kDataLoss when the bytes are not a well-formed record.
absl::StatusOr<SessionRecord> DecodeSessionRecord(std::string_view bytes);

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_SESSION_RECORD_H_
