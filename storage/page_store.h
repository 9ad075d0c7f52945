// The page store: what the service calls. Pages are keyed by (tenant, block
// key, layer). A block becomes visible (Lookup, GetPage) only once every one
// of its layers is stored; pages may arrive in any order and from several
// streams, and writing a layer of a committed block again is an idempotent
// success. A write returns once the page is durable (RocksDB's WAL) unless
// the store runs memory-only by choice.
//
// Thread-safety: implementations are safe to call from any number of
// threads.
#ifndef QAQKV_STORAGE_PAGE_STORE_H_
#define QAQKV_STORAGE_PAGE_STORE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/block_record.h"
#include "storage/dram_tier.h"
#include "storage/keys.h"
#include "storage/session_record.h"

namespace qaqkv::storage {

struct PutPageRequest {
  std::string_view tenant;
  BlockKey block{};
  uint32_t layer = 0;
  uint32_t num_layers = 0;       // layers the block has (1..limits::kMaxLayers)
  std::string_view descriptor;   // geometry + codec of the block; must agree across its pages
  std::string_view page;         // encoded page bytes with their XXH3-64 trailer
  // Optional: a buffer holding exactly `page`'s bytes that the caller hands
  // over, so the DRAM tier keeps it instead of copying the page.
  PageBuffer owned;
  // The caller has just verified the page's XXH3-64 trailer (the service
  // does, while validating it), so the store need not hash it again.
  bool checksum_verified = false;
};

struct PutPageResult {
  bool committed = false;          // the block is complete (now or before)
  bool already_committed = false;  // it was complete before this write
  // This call wrote the page. False when the block already had the layer (a
  // retry, or another writer's copy): the stored bytes stay.
  bool stored = false;
};

// One block as a listing shows it (the rebalancer compares servers by it).
struct BlockInfo {
  BlockKey block{};
  bool committed = false;
  uint64_t bytes = 0;
  int64_t accessed_ms = 0;
};

// One session id as a listing that includes tombstones shows it.
struct SessionVersion {
  std::string session_id;
  int64_t updated_ms = 0;
  int64_t deleted_ms = 0;  // nonzero: a tombstone
};

struct TenantUsage {
  uint64_t bytes = 0;   // page bytes of the tenant's blocks, committed or not
  uint64_t blocks = 0;
};

class PageStore {
 public:
  virtual ~PageStore() = default;

  // Errors: kInvalidArgument (bad tenant, layer >= num_layers, num_layers out
  // of range, page checksum wrong; the message names the field),
  // kFailedPrecondition (num_layers or descriptor differ from the block's
  // earlier pages), kResourceExhausted (tenant quota); nothing is stored.
  virtual absl::StatusOr<PutPageResult> PutPage(const PutPageRequest& request) = 0;

  // PutPage of each request in order, stopping at the first error, which
  // it returns. `results` gets one result per page stored before it. An
  // implementation may store a run of one block's pages together, all or
  // none: a failure then leaves no page of that run stored.
  virtual absl::Status PutPages(std::span<const PutPageRequest> requests,
                                std::vector<PutPageResult>* results) {
    for (const PutPageRequest& request : requests) {
      absl::StatusOr<PutPageResult> result = PutPage(request);
      if (!result.ok()) return result.status();
      results->push_back(*result);
    }
    return absl::OkStatus();
  }
  // Whether PutPages stores a run of one block's pages together (so that an
  // error names the run, not one page of it).
  virtual bool StoresRunsTogether() const { return false; }

  // The page of a committed block. kNotFound when the block is unknown or
  // not committed (the same answer as for another tenant's block),
  // kDataLoss when the stored copy fails its checksum (it is then dropped).
  virtual absl::StatusOr<PageBuffer> GetPage(std::string_view tenant, const BlockKey& block,
                                             uint32_t layer) = 0;

  // How many leading blocks of `chain` are committed for `tenant` (and,
  // when `descriptor` is not empty, were written under exactly that
  // descriptor, so another model's or codec's pages are never a hit).
  virtual absl::StatusOr<size_t> Lookup(std::string_view tenant, std::span<const BlockKey> chain,
                                        std::string_view descriptor = {}) = 0;

  // The block's record, committed or not; kNotFound when unknown.
  virtual absl::StatusOr<BlockRecord> GetBlock(std::string_view tenant, const BlockKey& block) = 0;

  // Removes the block and all its pages; kNotFound when unknown.
  virtual absl::Status DeleteBlock(std::string_view tenant, const BlockKey& block) = 0;

  // Takes back a page that a PutPage stored (`bytes` its size) while its
  // block is still not committed: a PutPages stream that fails removes what
  // it added, so a retry starts clean and nothing holds the tenant's quota.
  // OK, and nothing changes, when the block is committed or unknown, or
  // lacks the layer. A block left with no layer is removed.
  virtual absl::Status RevertPage(std::string_view tenant, const BlockKey& block,
                                  uint32_t layer, uint64_t bytes) = 0;

  virtual TenantUsage Usage(std::string_view tenant) const = 0;

  // The tenant's blocks with keys after `start_after` (all when empty), in
  // key order, at most `limit`: a cursor over every block, committed or not.
  virtual absl::StatusOr<std::vector<BlockInfo>> ListBlocks(std::string_view tenant,
                                                            const BlockKey* start_after,
                                                            size_t limit) = 0;

  // Sessions. PutSession creates or replaces, over a tombstone too
  // (created_ms is kept on replacing a live session; updated_ms and
  // accessed_ms are set to now). Errors: kInvalidArgument (bad tenant or
  // session id, too many blocks, a non-empty tail whose checksum is wrong,
  // a negative ttl_ms).
  virtual absl::Status PutSession(std::string_view tenant, std::string_view session_id,
                                  SessionRecord record) = 0;
  // Stores a copy of another server's version as it is (its times kept),
  // unless this store has that version or a newer one, or a tombstone at
  // or after it: then kAlreadyExists and nothing changes. Errors as
  // PutSession, and kInvalidArgument for a tombstone or a version of 0.
  virtual absl::Status RepairSession(std::string_view tenant, std::string_view session_id,
                                     SessionRecord record) = 0;
  // kNotFound when missing, deleted or expired (expired sessions are
  // removed). An access: it renews the TTL, as TouchSession does.
  virtual absl::StatusOr<SessionRecord> GetSession(std::string_view tenant,
                                                   std::string_view session_id) = 0;
  // When the session was deleted here, if this store holds its tombstone;
  // kNotFound otherwise.
  virtual absl::StatusOr<int64_t> SessionDeletedAt(std::string_view tenant,
                                                   std::string_view session_id) = 0;
  // Session ids of the tenant in order, at most `limit`, skipping expired
  // and deleted ones.
  virtual absl::StatusOr<std::vector<std::string>> ListSessions(std::string_view tenant,
                                                                size_t limit) = 0;
  // Every session id after `start_after` in order with its version,
  // tombstones included, at most `limit`.
  virtual absl::StatusOr<std::vector<SessionVersion>> ListSessionVersions(
      std::string_view tenant, std::string_view start_after, size_t limit) = 0;
  // Leaves a tombstone (kept for TieredStoreOptions::session_tombstone_ms),
  // so a copy that missed the delete cannot come back over it; kNotFound
  // when there is no live session.
  virtual absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) = 0;
  // Removes this store's copy, live or tombstone, leaving nothing: for a
  // copy that belongs on other servers. kNotFound when there is none.
  virtual absl::Status ForgetSession(std::string_view tenant, std::string_view session_id) = 0;
  // Marks the session used now (extends its TTL); kNotFound as GetSession.
  virtual absl::Status TouchSession(std::string_view tenant, std::string_view session_id) = 0;
  // Removes every session whose TTL ran out before `now_ms`, and every
  // tombstone older than its keeping time; returns how many.
  virtual absl::StatusOr<size_t> ExpireSessions(int64_t now_ms) = 0;
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_PAGE_STORE_H_
