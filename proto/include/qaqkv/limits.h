// Every limit of the qaqkv wire contract (proto/qaqkv/v1/kvcache.proto),
// defined once. The client checks requests against these before sending,
// the server validates against them, storage sizes its records by them, and
// docs/limits.md lists them (tests/proto/limits_doc_test.py fails when the
// table, or a "(kName)" annotation in the proto, disagrees with this file).
//
// Installed with the client library: `#include "qaqkv/limits.h"`. Plain
// constants, no dependencies.
#ifndef QAQKV_LIMITS_H_
#define QAQKV_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace qaqkv::limits {

// A block key: XXH3-128 of the block chained over its prefix.
inline constexpr size_t kBlockKeyBytes = 16;

// Geometry (every value is at least 1).
inline constexpr uint32_t kMaxLayers = 4096;
inline constexpr uint32_t kMaxKvHeads = 1024;
inline constexpr uint32_t kMaxQHeads = 65536;  // and a multiple of num_kv_heads
inline constexpr uint32_t kMaxHeadDim = 1024;
inline constexpr uint32_t kMaxBlockTokens = 65536;

// Block keys per request.
inline constexpr size_t kMaxLookupKeys = size_t{1} << 20;    // LookupRequest.block_keys
inline constexpr size_t kMaxGetPagesKeys = size_t{1} << 16;  // GetPagesRequest.block_keys
inline constexpr size_t kMaxTransferKeys = size_t{1} << 16;  // TransferOffer.block_keys

// Names: 1..max bytes of printable ASCII without spaces (0x21..0x7e).
inline constexpr size_t kMaxSessionIdBytes = 1024;
inline constexpr size_t kMaxTransferIdBytes = 256;
inline constexpr size_t kMaxTenantBytes = 255;  // tenant names of the token file

// Sessions.
inline constexpr size_t kMaxSessionBlocks = size_t{1} << 20;  // Session.block_keys
inline constexpr uint32_t kDefaultListSessions = 1000;          // ListSessionsRequest.limit 0
inline constexpr uint32_t kMaxListSessions = 100000;            // ListSessionsRequest.limit
inline constexpr uint32_t kDefaultListBlocks = 1000;            // ListBlocksRequest.limit 0
inline constexpr uint32_t kMaxListBlocks = 100000;              // ListBlocksRequest.limit

// GPU-to-GPU transfer offers.
inline constexpr size_t kNcclUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
inline constexpr uint64_t kMaxTransferPageBytes = uint64_t{64} << 20;
inline constexpr int64_t kDefaultTransferTtlMs = 30000;   // TransferOffer.ttl_ms 0
inline constexpr int64_t kMaxTransferTtlMs = 600000;      // TransferOffer.ttl_ms
inline constexpr size_t kMaxPendingTransfersPerTenant = 1024;
// Serialized bytes of one tenant's pending offers together.
inline constexpr uint64_t kMaxPendingTransferBytesPerTenant = uint64_t{64} << 20;

// Rows (tokens) of one page, a limit of the page format. A session's tail
// page stacks its layers, tail_tokens * num_layers rows, so this also bounds
// a tail.
inline constexpr uint32_t kMaxPageTokens = uint32_t{1} << 20;
// K (or V) values of one page: tokens x kv_heads x head_dim. A geometry
// whose block_tokens x num_kv_heads x head_dim passes it can hold no page.
inline constexpr uint64_t kMaxPageValues = uint64_t{1} << 30;

// Messages. The server's --max-message-bytes (default) and its floor; a
// page never exceeds the message limit it was sent under.
inline constexpr size_t kDefaultMaxMessageBytes = size_t{64} << 20;
inline constexpr size_t kMinServerMaxMessageBytes = size_t{1} << 20;
inline constexpr size_t kMinClientMaxMessageBytes = size_t{2} << 20;

// Consistency the rest of the contract relies on.
static_assert(kMaxGetPagesKeys <= kMaxLookupKeys);
static_assert(kMaxTransferKeys <= kMaxGetPagesKeys);
static_assert(kMaxBlockTokens <= kMaxPageTokens);
static_assert(kMaxSessionIdBytes >= kMaxTransferIdBytes);

}  // namespace qaqkv::limits

#endif  // QAQKV_LIMITS_H_
