// Key layout of the page store (docs/design.md: pages keyed by tenant, block key
// and layer). Keys are byte strings whose order groups what is read
// together: every key of a tenant shares a prefix, and every page of a block
// shares a longer one, so a tenant's data and a block's pages are contiguous
// ranges in an ordered store (RocksDB) and cheap prefix scans.
//
//   page:    'P' tenant_len(u8) tenant block_key(16) layer(u32 big-endian)
//   block:   'B' tenant_len(u8) tenant block_key(16)
//   session: 'S' tenant_len(u8) tenant session_id
//
// Thread-safety: pure functions.
#ifndef QAQKV_STORAGE_KEYS_H_
#define QAQKV_STORAGE_KEYS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qaqkv/limits.h"

namespace qaqkv::storage {

// 16-byte content hash of a block and its prefix (docs/design.md: block key).
using BlockKey = std::array<uint8_t, 16>;

// A tenant name is 1..limits::kMaxTenantBytes bytes of printable ASCII
// without spaces.
absl::Status ValidateTenant(std::string_view tenant);

std::string PageKey(std::string_view tenant, const BlockKey& block, uint32_t layer);
std::string BlockRecordKey(std::string_view tenant, const BlockKey& block);
std::string SessionKey(std::string_view tenant, std::string_view session_id);

// The prefix every key of one kind of one tenant starts with ('P', 'B' or 'S').
std::string TenantPrefix(char kind, std::string_view tenant);
// The prefix of every page key of one block: PageKey() minus the layer.
std::string BlockPagesPrefix(std::string_view tenant, const BlockKey& block);

struct ParsedPageKey {
  std::string tenant;
  BlockKey block{};
  uint32_t layer = 0;
};
// kInvalidArgument when `key` is not a page key.
absl::StatusOr<ParsedPageKey> ParsePageKey(std::string_view key);

struct ParsedBlockRecordKey {
  std::string tenant;
  BlockKey block{};
};
// kInvalidArgument when `key` is not a block record key.
absl::StatusOr<ParsedBlockRecordKey> ParseBlockRecordKey(std::string_view key);

// The tenant of a page, block-record or session key (a view into `key`);
// empty when `key` is too short to hold one.
std::string_view KeyTenant(std::string_view key);

// Lower-case hex of a block key, for logs and messages.
std::string BlockKeyHex(const BlockKey& block);

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_KEYS_H_
