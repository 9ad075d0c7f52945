#include "storage/segment_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/endian.h"
#include "base/status_macros.h"
#include "kernels/checksum.h"

namespace qaqkv::storage {
namespace {

constexpr uint32_t kRecordMagic = 0x31475351u;    // "QSG1" little-endian
constexpr uint32_t kLocationMagic = 0x434c5351u;  // "QSLC" little-endian
constexpr uint32_t kPaddedMagic = 0x414c5351u;    // "QSLA" little-endian
constexpr size_t kHeaderBytes = 24;
constexpr size_t kLocationBytes = 20;
// The largest staging buffer kept for reuse: a direct write of more goes
// through one in several writes; a direct read of more takes a buffer of its
// own, freed after use.
constexpr size_t kMaxPooledStaging = 4u << 20;

uint64_t AlignUp(uint64_t n) { return (n + kSegmentDirectAlign - 1) & ~(kSegmentDirectAlign - 1); }

// XXH3-64 of the header's first 16 bytes followed by the key.
uint64_t HeaderHash(const uint8_t* head16, std::string_view key) {
  std::string bytes(reinterpret_cast<const char*>(head16), 16);
  bytes.append(key);
  return PageChecksum(bytes.data(), bytes.size());
}

absl::Status ErrnoStatus(int err, std::string_view what) {
  const std::string msg = absl::StrCat("segment log: ", std::string(what), ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::UnavailableError(msg);
}

// Runs a vectored read or write (`io` is preadv or pwritev) until every
// buffer is done, the file ends (a read's short count) or it fails (-errno).
template <typename Io>
int64_t WholeIo(Io io, int fd, iovec* iov, int count, uint64_t offset) {
  int at = 0;
  uint64_t done = 0;
  while (at < count) {
    const ssize_t n = io(fd, iov + at, std::min(count - at, IOV_MAX),
                         static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    done += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (at < count && left >= iov[at].iov_len) left -= iov[at++].iov_len;
    if (at < count) {
      iov[at].iov_base = static_cast<char*>(iov[at].iov_base) + left;
      iov[at].iov_len -= left;
    }
  }
  return static_cast<int64_t>(done);
}

// Writes `records` (headers in `heads`, ranges in `locs`, padded) from
// `base_offset` on through `staging`, in as many aligned writes as its size
// needs, counted in `*writes`. 0, or the errno of the write that failed.
int WriteStaged(int fd, const base::AlignedBuffer& staging, std::span<const SegmentRecord> records,
                std::span<const std::array<uint8_t, kHeaderBytes>> heads,
                std::span<const SegmentLocation> locs, uint64_t base_offset, uint64_t* writes) {
  const uint64_t chunk = staging.size();  // a multiple of kSegmentDirectAlign
  uint64_t fill = 0, flushed = 0;
  int err = 0;
  const auto flush = [&] {
    iovec iov = {staging.data(), fill};
    const int64_t n = WholeIo(::pwritev, fd, &iov, 1, base_offset + flushed);
    ++*writes;
    err = n < 0 ? static_cast<int>(-n) : (uint64_t(n) < fill ? EIO : 0);
    flushed += fill;
    fill = 0;
    return err == 0;
  };
  // Appends `size` bytes (zeros when `from` is null), writing each full chunk.
  const auto put = [&](const char* from, uint64_t size) {
    while (size > 0) {
      const uint64_t n = std::min(size, chunk - fill);
      if (from != nullptr) {
        std::memcpy(staging.data() + fill, from, n);
        from += n;
      } else {
        std::memset(staging.data() + fill, 0, n);
      }
      fill += n;
      size -= n;
      if (fill == chunk && !flush()) return false;
    }
    return true;
  };
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string_view key = records[i].key, value = records[i].value;
    const uint64_t used = kHeaderBytes + key.size() + value.size();
    if (!put(reinterpret_cast<const char*>(heads[i].data()), kHeaderBytes) ||
        !put(key.data(), key.size()) || !put(value.data(), value.size()) ||
        !put(nullptr, locs[i].RecordBytes(key.size()) - used)) {
      return err;
    }
  }
  if (fill > 0) flush();
  return err;
}

}  // namespace

// An open segment file, closed when the last reader or writer lets go (a
// removed segment's file stays readable by a read already under way).
struct SegmentLog::File {
  int fd = -1;
  // Opened with O_DIRECT (every segment of a log in direct mode): appends
  // and reads both bypass the page cache. Buffered reads beside direct
  // writes would not be coherent: a readahead can cache a range just
  // before a direct write lands there, and keep it.
  bool direct = false;
  explicit File(int f, bool d = false) : fd(f), direct(d) {}
  ~File() {
    if (fd >= 0) ::close(fd);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
};

std::string SegmentLocation::Encode() const {
  std::string out(kLocationBytes, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  base::StoreLe32(p, padded ? kPaddedMagic : kLocationMagic);
  base::StoreLe32(p + 4, segment);
  base::StoreLe64(p + 8, offset);
  base::StoreLe32(p + 16, length);
  return out;
}

std::optional<SegmentLocation> SegmentLocation::Decode(std::string_view bytes) {
  if (bytes.size() != kLocationBytes) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint32_t magic = base::LoadLe32(p);
  if (magic != kLocationMagic && magic != kPaddedMagic) return std::nullopt;
  return SegmentLocation{base::LoadLe32(p + 4), base::LoadLe64(p + 8), base::LoadLe32(p + 16),
                         magic == kPaddedMagic};
}

uint64_t SegmentLocation::RecordBytes(size_t key_size) const {
  const uint64_t bytes = kHeaderBytes + key_size + length;
  return padded ? AlignUp(bytes) : bytes;
}

SegmentLog::SegmentLog(Token, SegmentLogOptions options) : options_(std::move(options)) {}

SegmentLog::~SegmentLog() = default;

std::string SegmentLog::PathOf(uint32_t segment) const {
  return absl::StrCat(options_.dir, "/", absl::Hex(segment, absl::kZeroPad8), ".seg");
}

absl::StatusOr<std::unique_ptr<SegmentLog>> SegmentLog::Open(const SegmentLogOptions& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("segment_log.dir: empty");
  if (options.segment_bytes < (1u << 20)) {
    return absl::InvalidArgumentError("segment_log.segment_bytes: must be at least 1 MiB");
  }
  if (options.lanes < 1 || options.lanes > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment_log.lanes: ", options.lanes, " not in [1, 64]"));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("segment_log.dir: cannot create ", options.dir, ": ", ec.message()));
  }
  auto log = std::make_unique<SegmentLog>(Token(), options);
  // Every segment already there is sealed and readable; appends start a new
  // one after the highest id.
  uint32_t highest = 0;
  bool any = false;
  for (const auto& entry : std::filesystem::directory_iterator(options.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 12 || name.substr(8) != ".seg") continue;
    uint32_t id = 0;
    if (!absl::SimpleHexAtoi(name.substr(0, 8), &id)) continue;
    // In direct mode sealed segments are read with O_DIRECT too, so that
    // the disk tier's reads never fill the page cache.
    const int direct = options.direct_io ? O_DIRECT : 0;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC | direct);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", entry.path().string()));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("stat ", entry.path().string()));
    }
    if (st.st_size == 0) {
      // Started and never written (each open starts one): nothing to keep.
      ::close(fd);
      ::unlink(entry.path().c_str());
      continue;
    }
    base::MutexLock lock(&log->mu_);
    Segment& s = log->segments_[id];
    s.file = std::make_shared<File>(fd, direct != 0);
    s.size = static_cast<uint64_t>(st.st_size);
    log->stats_.file_bytes += s.size;
    ++log->stats_.segments;
    highest = std::max(highest, id);
    any = true;
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("segment_log.dir: cannot list ", options.dir, ": ", ec.message()));
  }
  {
    base::MutexLock lock(&log->mu_);
    if (any && highest >= kNoSegment - 1) {
      return absl::ResourceExhaustedError("segment log: segment ids exhausted");
    }
    log->next_id_ = any ? highest + 1 : 0;
    log->open_.assign(static_cast<size_t>(options.lanes), kNoSegment);
    QAQKV_RETURN_IF_ERROR(log->StartSegmentLocked(0));
  }
  return log;
}

absl::Status SegmentLog::StartSegmentLocked(size_t lane) {
  if (next_id_ == kNoSegment) {
    return absl::ResourceExhaustedError("segment log: segment ids exhausted");
  }
  const uint32_t id = next_id_;
  const std::string path = PathOf(id);
  const int direct = options_.direct_io ? O_DIRECT : 0;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | direct, 0644);
  if (fd < 0) {
    const int err = errno;
    if (direct != 0 && err == EINVAL) {
      ::unlink(path.c_str());  // created before the flag was refused, on some kernels
      return absl::InvalidArgumentError(absl::StrCat(
          "segment_log.direct_io: the file system of ", options_.dir, " has no O_DIRECT"));
    }
    return ErrnoStatus(err, absl::StrCat("create ", path));
  }
  if (options_.sync) {
    // The new name must survive a power loss too, before anything in it
    // is acknowledged.
    const int dfd = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  Segment& s = segments_[id];
  s.file = std::make_shared<File>(fd, direct != 0);
  open_[lane] = id;
  ++next_id_;
  ++stats_.segments;
  return absl::OkStatus();
}

size_t SegmentLog::PickLaneLocked() const {
  size_t best = 0;
  int best_in_flight = INT32_MAX;
  for (size_t lane = 0; lane < open_.size(); ++lane) {
    const int in_flight =
        open_[lane] == kNoSegment ? 0 : segments_.find(open_[lane])->second.in_flight;
    if (in_flight == 0) return lane;
    if (in_flight < best_in_flight) {
      best = lane;
      best_in_flight = in_flight;
    }
  }
  return best;
}

bool SegmentLog::IsOpenLocked(uint32_t segment) const {
  return std::find(open_.begin(), open_.end(), segment) != open_.end();
}

absl::StatusOr<SegmentLocation> SegmentLog::Append(std::string_view key, std::string_view value) {
  absl::StatusOr<SegmentLocation> loc = AppendUnsettled(key, value);
  if (loc.ok()) Settle(*loc);
  return loc;
}

void SegmentLog::Settle(const SegmentLocation& loc) {
  base::MutexLock lock(&mu_);
  auto it = segments_.find(loc.segment);
  if (it != segments_.end() && it->second.unsettled > 0) --it->second.unsettled;
}

absl::StatusOr<SegmentLocation> SegmentLog::AppendUnsettled(std::string_view key,
                                                            std::string_view value) {
  const SegmentRecord record{key, value};
  QAQKV_ASSIGN_OR_RETURN(std::vector<SegmentLocation> locs,
                         AppendUnsettled(std::span<const SegmentRecord>(&record, 1)));
  return locs.front();
}

absl::StatusOr<std::vector<SegmentLocation>> SegmentLog::AppendUnsettled(
    std::span<const SegmentRecord> records) {
  if (records.empty()) return std::vector<SegmentLocation>{};
  // Headers first: nothing is reserved until every record is known good.
  std::vector<std::array<uint8_t, kHeaderBytes>> heads(records.size());
  std::vector<SegmentLocation> locs(records.size());
  uint64_t total = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string_view key = records[i].key, value = records[i].value;
    if (key.empty()) return absl::InvalidArgumentError("segment log: empty key");
    if (key.size() > UINT32_MAX || value.size() > UINT32_MAX) {
      return absl::InvalidArgumentError("segment log: key or value over 4 GiB");
    }
    uint8_t* head = heads[i].data();
    base::StoreLe32(head, kRecordMagic);
    base::StoreLe32(head + 4, static_cast<uint32_t>(key.size()));
    base::StoreLe64(head + 8, value.size());
    base::StoreLe64(head + 16, HeaderHash(head, key));
    locs[i].length = static_cast<uint32_t>(value.size());
    locs[i].padded = options_.direct_io;
    locs[i].offset = total;  // relative to the batch until the range is known
    total += locs[i].RecordBytes(key.size());
  }
  uint32_t segment = kNoSegment;
  uint64_t base_offset = 0;
  std::shared_ptr<File> file;
  {
    base::MutexLock lock(&mu_);
    const size_t lane = PickLaneLocked();
    if (open_[lane] == kNoSegment) QAQKV_RETURN_IF_ERROR(StartSegmentLocked(lane));
    Segment* s = &segments_[open_[lane]];
    if (s->size > 0 && s->size + total > options_.segment_bytes) {
      QAQKV_RETURN_IF_ERROR(StartSegmentLocked(lane));
      s = &segments_[open_[lane]];
    }
    segment = open_[lane];
    base_offset = s->size;
    s->size += total;
    s->live += total;
    ++s->in_flight;
    s->unsettled += static_cast<int>(records.size());
    stats_.file_bytes += total;
    stats_.live_bytes += total;
    file = s->file;
  }
  for (SegmentLocation& loc : locs) {
    loc.segment = segment;
    loc.offset += base_offset;
  }
  int err = 0;
  uint64_t writes = 1;  // the buffered path's one pwritev; direct counts its own
  if (options_.direct_io) {
    // Every record, its padding zeroed, through an aligned buffer: O_DIRECT
    // needs the memory, the offset and the length aligned. A range larger
    // than one pooled buffer goes in several writes of it, so a message of
    // any size stages through a bounded, reused buffer (its locations are
    // published only once every write is done, so it is still all or none).
    base::AlignedBuffer staging = TakeStaging(std::min<uint64_t>(total, kMaxPooledStaging));
    if (staging.empty()) {
      err = ENOMEM;
    } else {
      writes = 0;
      err = WriteStaged(file->fd, staging, records, heads, locs, base_offset, &writes);
    }
    ReturnStaging(std::move(staging));
  } else {
    // Headers, keys and values in one call, straight from the caller's
    // buffers.
    std::vector<iovec> iov;
    iov.reserve(3 * records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      iov.push_back({heads[i].data(), kHeaderBytes});
      iov.push_back({const_cast<char*>(records[i].key.data()), records[i].key.size()});
      iov.push_back({const_cast<char*>(records[i].value.data()), records[i].value.size()});
    }
    const int64_t n = WholeIo(::pwritev, file->fd, iov.data(), static_cast<int>(iov.size()),
                              base_offset);
    err = n < 0 ? static_cast<int>(-n) : (uint64_t(n) < total ? EIO : 0);
  }
  uint64_t mine = 0;
  {
    base::MutexLock lock(&mu_);
    Segment& s = segments_[segment];
    --s.in_flight;
    if (err != 0) {
      // The range stays (a hole no location names), not live.
      s.unsettled -= static_cast<int>(records.size());
      s.live -= total;
      stats_.live_bytes -= total;
    } else {
      stats_.appends += records.size();
      stats_.writes += writes;
      stats_.appended_bytes += total;
      dirty_.insert(segment);
      mine = ++completed_;
    }
  }
  if (err != 0) {
    return ErrnoStatus(err, absl::StrCat("write ", PathOf(segment)));
  }
  if (options_.sync) {
    if (absl::Status st = SyncThrough(mine); !st.ok()) {
      for (size_t i = 0; i < records.size(); ++i) {
        Release(locs[i], records[i].key.size());
        Settle(locs[i]);
      }
      return st;
    }
  }
  return locs;
}

base::AlignedBuffer SegmentLog::TakeStaging(uint64_t bytes) const {
  base::AlignedBuffer staging;
  {
    base::MutexLock lock(&mu_);
    if (!staging_.empty()) {
      staging = std::move(staging_.back());
      staging_.pop_back();
    }
  }
  if (staging.size() < bytes) staging = base::AlignedBuffer::Allocate(bytes, kSegmentDirectAlign);
  return staging;
}

void SegmentLog::ReturnStaging(base::AlignedBuffer staging) const {
  if (staging.empty() || staging.size() > kMaxPooledStaging) return;
  base::MutexLock lock(&mu_);
  if (staging_.size() < 2 * open_.size()) staging_.push_back(std::move(staging));
}

absl::Status SegmentLog::SyncAll() {
  uint64_t mine;
  {
    base::MutexLock lock(&mu_);
    mine = completed_;
  }
  return SyncThrough(mine);
}

absl::Status SegmentLog::SyncThrough(uint64_t mine) {
  base::MutexLock lock(&mu_);
  while (synced_ < mine) {
    if (!sync_error_.ok()) return sync_error_;
    if (syncing_) {
      synced_cv_.Wait(&mu_, [&] {
        mu_.AssertHeld();
        return !syncing_ || synced_ >= mine;
      });
      continue;
    }
    // Lead: one fdatasync per dirty segment covers every write completed
    // so far, the followers' included.
    syncing_ = true;
    const uint64_t upto = completed_;
    std::vector<std::shared_ptr<File>> files;
    for (uint32_t id : dirty_) {
      auto it = segments_.find(id);
      if (it != segments_.end()) files.push_back(it->second.file);
    }
    dirty_.clear();
    mu_.Unlock();
    int err = 0;
    for (const auto& f : files) {
      if (::fdatasync(f->fd) != 0 && err == 0) err = errno;
    }
    mu_.Lock();
    syncing_ = false;
    stats_.syncs += files.size();
    if (err == 0) synced_ = std::max(synced_, upto);
    // After a failed fdatasync the kernel may have dropped the dirty pages
    // and will not report it again: no later write can be promised durable.
    if (err != 0) sync_error_ = ErrnoStatus(err, "fdatasync");
    synced_cv_.SignalAll();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SegmentLog::Read(const SegmentLocation& loc, std::string_view key) const {
  std::shared_ptr<File> file;
  {
    base::MutexLock lock(&mu_);
    auto it = segments_.find(loc.segment);
    if (it == segments_.end()) {
      return absl::NotFoundError(absl::StrCat("segment log: segment ", loc.segment, " is gone"));
    }
    file = it->second.file;
  }
  const std::string where = absl::StrCat("segment ", loc.segment, " offset ", loc.offset);
  if (file->direct) return ReadDirect(*file, loc, key, where);
  // Header and key into a small buffer, the value straight into the result.
  std::string head(kHeaderBytes + key.size(), '\0');
  std::string value(loc.length, '\0');
  iovec iov[2] = {{head.data(), head.size()}, {value.data(), value.size()}};
  const uint64_t want = head.size() + value.size();
  const int64_t got = WholeIo(::preadv, file->fd, iov, 2, loc.offset);
  if (got < 0) {
    return ErrnoStatus(static_cast<int>(-got), absl::StrCat("read ", PathOf(loc.segment)));
  }
  if (uint64_t(got) != want) {
    return absl::DataLossError(absl::StrCat("segment log: ", where, ": record cut short"));
  }
  QAQKV_RETURN_IF_ERROR(CheckHeader(reinterpret_cast<const uint8_t*>(head.data()), loc, key, where));
  return value;
}

absl::StatusOr<std::string> SegmentLog::ReadDirect(const File& file, const SegmentLocation& loc,
                                                   std::string_view key,
                                                   const std::string& where) const {
  // The aligned blocks that hold the record: all of a padded record's,
  // or around one a buffered run wrote (a segment reopened in direct mode).
  const uint64_t record = kHeaderBytes + key.size() + loc.length;
  const uint64_t from = loc.offset / kSegmentDirectAlign * kSegmentDirectAlign;
  const uint64_t skip = loc.offset - from;
  const uint64_t bytes = AlignUp(skip + record);
  base::AlignedBuffer staging = TakeStaging(bytes);
  if (staging.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("segment log: ", where, ": no memory for a read of ", bytes, " bytes"));
  }
  // A short count is the end of the file (unaligned in a buffered run's
  // segments), after which an unaligned offset would be refused.
  int64_t got = 0;
  while (uint64_t(got) < bytes) {
    const ssize_t n = ::pread(file.fd, staging.data() + got, bytes - uint64_t(got),
                              static_cast<off_t>(from + uint64_t(got)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      got = -errno;
      break;
    }
    got += n;
    if (n == 0 || n % static_cast<ssize_t>(kSegmentDirectAlign) != 0) break;
  }
  absl::StatusOr<std::string> value;
  if (got < 0) {
    value = ErrnoStatus(static_cast<int>(-got), absl::StrCat("read ", PathOf(loc.segment)));
  } else if (uint64_t(got) < skip + record) {
    value = absl::DataLossError(absl::StrCat("segment log: ", where, ": record cut short"));
  } else {
    const char* at = staging.data() + skip;
    if (absl::Status st = CheckHeader(reinterpret_cast<const uint8_t*>(at), loc, key, where);
        !st.ok()) {
      value = st;
    } else {
      value = std::string(at + kHeaderBytes + key.size(), loc.length);
    }
  }
  ReturnStaging(std::move(staging));
  return value;
}

absl::Status SegmentLog::CheckHeader(const uint8_t* h, const SegmentLocation& loc,
                                     std::string_view key, const std::string& where) {
  if (base::LoadLe32(h) != kRecordMagic || base::LoadLe32(h + 4) != key.size() ||
      base::LoadLe64(h + 8) != loc.length || base::LoadLe64(h + 16) != HeaderHash(h, key) ||
      std::memcmp(h + kHeaderBytes, key.data(), key.size()) != 0) {
    return absl::DataLossError(absl::StrCat("segment log: ", where, ": not the record of this key"));
  }
  return absl::OkStatus();
}

void SegmentLog::AddLive(const SegmentLocation& loc, size_t key_size) {
  base::MutexLock lock(&mu_);
  auto it = segments_.find(loc.segment);
  if (it == segments_.end()) return;
  const uint64_t bytes = loc.RecordBytes(key_size);
  it->second.live += bytes;
  stats_.live_bytes += bytes;
}

void SegmentLog::Release(const SegmentLocation& loc, size_t key_size) {
  base::MutexLock lock(&mu_);
  auto it = segments_.find(loc.segment);
  if (it == segments_.end()) return;
  const uint64_t bytes = std::min(loc.RecordBytes(key_size), it->second.live);
  it->second.live -= bytes;
  stats_.live_bytes -= bytes;
}

std::vector<uint32_t> SegmentLog::Reclaimable(double max_live_fraction) {
  std::vector<std::pair<uint64_t, uint32_t>> found;
  auto worth = [&](const Segment& s) {
    return static_cast<double>(s.live) < max_live_fraction * static_cast<double>(s.size);
  };
  {
    base::MutexLock lock(&mu_);
    for (size_t lane = 1; lane < open_.size(); ++lane) {
      if (open_[lane] == kNoSegment) continue;
      const Segment& s = segments_.find(open_[lane])->second;
      if (s.in_flight == 0 && s.unsettled == 0 && s.size > 0 && worth(s)) {
        open_[lane] = kNoSegment;
      }
    }
    for (const auto& [id, s] : segments_) {
      if (IsOpenLocked(id) || s.in_flight > 0 || s.unsettled > 0 || s.size == 0) continue;
      if (worth(s)) found.emplace_back(s.live, id);
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<uint32_t> out;
  for (const auto& f : found) out.push_back(f.second);
  return out;
}

absl::Status SegmentLog::RemoveSegment(uint32_t segment) {
  base::MutexLock lock(&mu_);
  auto it = segments_.find(segment);
  if (it == segments_.end()) {
    return absl::NotFoundError(absl::StrCat("segment log: no segment ", segment));
  }
  if (IsOpenLocked(segment) || it->second.in_flight > 0 || it->second.unsettled > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("segment log: segment ", segment, " is being written"));
  }
  const std::string path = PathOf(segment);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("remove ", path));
  }
  stats_.file_bytes -= it->second.size;
  stats_.live_bytes -= it->second.live;
  --stats_.segments;
  segments_.erase(it);
  return absl::OkStatus();
}

SegmentLogStats SegmentLog::Stats() const {
  base::MutexLock lock(&mu_);
  return stats_;
}

absl::Status SegmentLog::SyncError() const {
  base::MutexLock lock(&mu_);
  return sync_error_;
}

}  // namespace qaqkv::storage
