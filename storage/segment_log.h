// Page bytes appended to large segment files outside RocksDB, for the disk
// tier's key-value separation (as in WiscKey and Titan): a put costs one
// sequential write of its bytes plus a small location record in RocksDB,
// instead of RocksDB's WAL write, memtable copy and blob-file flush of every
// byte, each through the software CRC32C of Debian's RocksDB build
// (docs/performance.md, "The disk tier").
//
// A record is a 24-byte header, the key, then the value:
//   u32 magic "QSG1", u32 key length, u64 value length (little-endian),
//   u64 XXH3-64 of those 16 bytes and the key.
// The header hash catches a location that points at the wrong bytes; the
// value's integrity is the caller's (pages carry an XXH3-64 trailer that is
// checked on every read), so no byte is hashed twice on the way in.
//
// Files are <dir>/<id as 8 hex digits>.seg. Appends go to the open files,
// one per lane; every Open starts new ones, so nothing is ever appended
// after a torn tail. An append reserves its range under a lock and writes
// outside it, in a lane no other append is writing to when there is one:
// the kernel serializes writes to one file on its inode lock (ext4 takes it
// for every buffered write, and its waiters spin), so writers in separate
// files copy in parallel. A lane's file is started when a writer first
// needs it, so a single writer fills one file after another.
//
// Durability: Append returns once the bytes are in the OS (they survive a
// SIGKILL of the process); with `sync`, once they are on disk, with one
// fdatasync shared by every writer waiting for it (group commit).
//
// Direct I/O (`direct_io`): appends bypass the page cache (O_DIRECT), each
// record padded with zeros to a multiple of 4 KiB from an aligned staging
// copy. The DRAM tier already caches hot pages; a second copy in the page
// cache costs memory outside the process's budget and, on hosts that
// charge for each newly touched page (docs/performance.md), most of a
// buffered write's time. Without `sync`, a direct append is on the device but
// the file's size and extents are not journalled yet: it survives a SIGKILL,
// as a buffered one does, not a power loss. In direct mode every segment is
// read with O_DIRECT too, through the aligned blocks around the record and
// one copy out (buffered reads beside direct writes are not coherent, and
// segments an earlier buffered run wrote are read the same way); a page
// read again soon is the DRAM tier's to keep
// (storage/internal/read_admission.h).
//
// Space: each segment counts its live bytes. Append counts its record as
// live; the owner calls Release when it drops or replaces a location, and
// AddLive for each location it still holds after a reopen. Reclaimable
// lists the sealed segments worth rewriting.
//
// Thread-safety: every method may be called concurrently.
#ifndef QAQKV_STORAGE_SEGMENT_LOG_H_
#define QAQKV_STORAGE_SEGMENT_LOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/aligned_buffer.h"
#include "base/mutex.h"

namespace qaqkv::storage {

// Where a record lies: its segment, the offset of its header, and its value
// length. Encoded in 20 bytes (u32 magic "QSLC", or "QSLA" for a padded
// record, u32 segment, u64 offset, u32 length), which cannot be mistaken for
// a page (pages start "QAQP").
struct SegmentLocation {
  uint32_t segment = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  // Written with direct I/O: the record takes a multiple of
  // kSegmentDirectAlign bytes. Carried in the location, not the log's
  // options, so that live bytes stay exact after a reopen with other ones.
  bool padded = false;

  std::string Encode() const;
  static std::optional<SegmentLocation> Decode(std::string_view bytes);
  // Header, key and value (and padding): what the record takes in its
  // segment.
  uint64_t RecordBytes(size_t key_size) const;
  bool operator==(const SegmentLocation&) const = default;
};

// One record to append: a key and its value, both borrowed.
struct SegmentRecord {
  std::string_view key;
  std::string_view value;
};

struct SegmentLogOptions {
  std::string dir;                       // created if missing
  uint64_t segment_bytes = 256ull << 20; // a segment is sealed once this full
  bool sync = false;                     // fdatasync before Append returns
  int lanes = 4;                         // files appended to at once (1..64)
  bool direct_io = false;                // appends with O_DIRECT (file comment)
};

// Offset and size alignment of direct appends: the largest logical block
// size of common devices, so one value suits every disk.
inline constexpr uint64_t kSegmentDirectAlign = 4096;

struct SegmentLogStats {
  uint64_t appended_bytes = 0;  // record bytes written since Open
  uint64_t appends = 0;         // records appended
  uint64_t writes = 0;          // writes that wrote them: a batch is one (direct: one per 4 MiB)
  uint64_t syncs = 0;           // fdatasync calls (group commit shares them)
  uint64_t file_bytes = 0;      // all segment files together
  uint64_t live_bytes = 0;      // records still referenced
  uint64_t segments = 0;
};

class SegmentLog {
 public:
  // kInvalidArgument for an empty dir, a segment size under 1 MiB, lanes
  // outside [1, 64], or direct_io on a file system without O_DIRECT;
  // kUnavailable (kResourceExhausted for a full disk) when the directory or
  // the first segment cannot be created.
  static absl::StatusOr<std::unique_ptr<SegmentLog>> Open(const SegmentLogOptions& options);
  ~SegmentLog();
  SegmentLog(const SegmentLog&) = delete;
  SegmentLog& operator=(const SegmentLog&) = delete;

  // Appends one record. kInvalidArgument for an empty key or a value over
  // 4 GiB; kUnavailable or kResourceExhausted when the write fails (the
  // range then holds no record that any location names).
  absl::StatusOr<SegmentLocation> Append(std::string_view key, std::string_view value);
  // Append for an owner that records the location elsewhere afterwards
  // (RocksDB, for the disk tier): until Settle(loc), the record's segment
  // is neither offered by Reclaimable nor removed. Without that, a
  // collector that scanned the owner's index between the append and its
  // publication would not move the record, and delete its segment. Call
  // Settle once the location is recorded or dropped, whatever the outcome.
  absl::StatusOr<SegmentLocation> AppendUnsettled(std::string_view key, std::string_view value);
  // Several records in one contiguous range of one segment, with one write
  // (direct: one per 4 MiB of staging buffer) and, with `sync`, one shared
  // fdatasync: the pages of one message cost one system call instead of one
  // each. All or nothing: on an error no
  // location is returned and none is live. Each location is settled on its
  // own.
  absl::StatusOr<std::vector<SegmentLocation>> AppendUnsettled(
      std::span<const SegmentRecord> records);
  void Settle(const SegmentLocation& loc);

  // The value of the record at `loc`, whose key must be `key`. kNotFound when
  // its segment is gone; kDataLoss when the bytes there are not that record
  // (short file, wrong header, other key).
  absl::StatusOr<std::string> Read(const SegmentLocation& loc, std::string_view key) const;

  // Live-byte accounting (see the file comment); `key_size` is the size of
  // the record's key.
  void AddLive(const SegmentLocation& loc, size_t key_size);
  void Release(const SegmentLocation& loc, size_t key_size);

  // Sealed segments with no write in flight and none unsettled whose live
  // bytes are below `max_live_fraction` of their file, fewest live bytes
  // first. A lane other than the first whose file qualifies and has nothing
  // in flight or unsettled is sealed here (its next append starts a new
  // file): a lane only bursts of concurrent writers use would otherwise
  // keep its dead bytes for good.
  std::vector<uint32_t> Reclaimable(double max_live_fraction);
  // Deletes a sealed segment's file: its locations then read kNotFound.
  // kFailedPrecondition for the segment being appended to or one with a
  // write in flight or unsettled; kNotFound for an unknown segment.
  absl::Status RemoveSegment(uint32_t segment);

  // fdatasync of every segment written since the last one, whatever
  // `sync` says: before the collector deletes what it copied elsewhere.
  absl::Status SyncAll();

  SegmentLogStats Stats() const;
  // The failed fdatasync that stopped every later write, or OK.
  absl::Status SyncError() const;

 private:
  struct File;
  struct Segment {
    std::shared_ptr<File> file;
    uint64_t size = 0;      // bytes reserved, written or in flight
    uint64_t live = 0;
    int in_flight = 0;
    // Appended records whose owner has not yet published or dropped their
    // location (AppendUnsettled): the segment is not collected meanwhile.
    int unsettled = 0;
  };
  struct Token {};

 public:
  SegmentLog(Token, SegmentLogOptions options);

 private:
  // Starts a new file for `lane` (sealing the one it had).
  absl::Status StartSegmentLocked(size_t lane) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lane an append goes to: the first with nothing in flight, else the
  // one with the fewest writes in flight.
  size_t PickLaneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsOpenLocked(uint32_t segment) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SyncThrough(uint64_t done) ABSL_LOCKS_EXCLUDED(mu_);
  // A read of a segment opened with O_DIRECT (every one in direct mode),
  // through the aligned blocks around the record.
  absl::StatusOr<std::string> ReadDirect(const File& file, const SegmentLocation& loc,
                                         std::string_view key, const std::string& where) const;
  // kDataLoss unless the record header at `h` (followed by its key) is the
  // record of `key` that `loc` names.
  static absl::Status CheckHeader(const uint8_t* h, const SegmentLocation& loc,
                                  std::string_view key, const std::string& where);
  // An aligned buffer of at least `bytes` (a pooled one when it is large
  // enough); its `bytes` is null when memory ran out.
  base::AlignedBuffer TakeStaging(uint64_t bytes) const ABSL_LOCKS_EXCLUDED(mu_);
  void ReturnStaging(base::AlignedBuffer staging) const ABSL_LOCKS_EXCLUDED(mu_);
  std::string PathOf(uint32_t segment) const;

  const SegmentLogOptions options_;
  mutable base::Mutex mu_;
  std::map<uint32_t, Segment> segments_ ABSL_GUARDED_BY(mu_);
  static constexpr uint32_t kNoSegment = UINT32_MAX;
  // Per lane, the segment appended to (kNoSegment: not started yet).
  std::vector<uint32_t> open_ ABSL_GUARDED_BY(mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(mu_) = 0;  // the id the next new segment gets
  SegmentLogStats stats_ ABSL_GUARDED_BY(mu_);
  // Group commit: writes completed and synced so far, and the segments
  // written since the last fdatasync.
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t synced_ ABSL_GUARDED_BY(mu_) = 0;
  bool syncing_ ABSL_GUARDED_BY(mu_) = false;
  std::set<uint32_t> dirty_ ABSL_GUARDED_BY(mu_);
  // Direct I/O's staging buffers, reused so that a steady load touches no
  // new memory (at most 2 per lane, each at most 4 MiB, are kept).
  mutable std::vector<base::AlignedBuffer> staging_ ABSL_GUARDED_BY(mu_);
  absl::Status sync_error_ ABSL_GUARDED_BY(mu_);  // sticky
  base::CondVar synced_cv_;
};

}  // namespace qaqkv::storage

#endif  // QAQKV_STORAGE_SEGMENT_LOG_H_
