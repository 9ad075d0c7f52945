#include "storage/session_record.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "base/endian.h"
#include "base/ids.h"
#include "qaqkv/limits.h"

namespace qaqkv::storage {
namespace {

// Version 2 added the descriptor, version 3 the put and delete times;
// older records still read (put at their creation, not deleted).
constexpr uint8_t kVersion = 3;

void AppendLe32(std::string& out, uint32_t v) {
  char buf[4];
  base::StoreLe32(buf, v);
  out.append(buf, sizeof(buf));
}
void AppendLe64(std::string& out, uint64_t v) {
  char buf[8];
  base::StoreLe64(buf, v);
  out.append(buf, sizeof(buf));
}

// Bounds-checked little-endian reader.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  // T is one of the record's field types: uint8_t, uint32_t, (u)int64_t.
  template <typename T>
  bool Read(T* v) {
    static_assert(std::is_integral_v<T> &&
                  (sizeof(T) == 1 || sizeof(T) == 4 || sizeof(T) == 8));
    std::string_view b;
    if (!Bytes(sizeof(T), &b)) return false;
    if constexpr (sizeof(T) == 1) {
      *v = static_cast<T>(b[0]);
    } else if constexpr (sizeof(T) == 4) {
      *v = static_cast<T>(base::LoadLe32(b.data()));
    } else {
      *v = static_cast<T>(base::LoadLe64(b.data()));
    }
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (in_.size() - at_ < n) return false;
    *out = in_.substr(at_, n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == in_.size(); }

 private:
  std::string_view in_;
  size_t at_ = 0;
};

}  // namespace

absl::Status ValidateSessionId(std::string_view id) {
  return base::ValidatePrintableId("session_id", id, limits::kMaxSessionIdBytes);
}

std::string EncodeSessionRecord(const SessionRecord& r) {
  std::string out;
  out.push_back(static_cast<char>(kVersion));
  AppendLe64(out, r.token_count);
  AppendLe64(out, static_cast<uint64_t>(r.created_ms));
  AppendLe64(out, static_cast<uint64_t>(r.accessed_ms));
  AppendLe64(out, static_cast<uint64_t>(r.ttl_ms));
  AppendLe32(out, static_cast<uint32_t>(r.blocks.size()));
  for (const BlockKey& b : r.blocks) out.append(reinterpret_cast<const char*>(b.data()), b.size());
  AppendLe32(out, static_cast<uint32_t>(r.tail.size()));
  out += r.tail;
  AppendLe32(out, static_cast<uint32_t>(r.descriptor.size()));
  out += r.descriptor;
  AppendLe64(out, static_cast<uint64_t>(r.updated_ms));
  AppendLe64(out, static_cast<uint64_t>(r.deleted_ms));
  return out;
}

absl::StatusOr<SessionRecord> DecodeSessionRecord(std::string_view bytes) {
  Reader in(bytes);
  SessionRecord r;
  uint8_t version = 0;
  uint32_t n_blocks = 0, tail_len = 0;
  if (!in.Read(&version) || version < 1 || version > kVersion) {
    return absl::DataLossError("session record: bad version");
  }
  if (!in.Read(&r.token_count) || !in.Read(&r.created_ms) || !in.Read(&r.accessed_ms) ||
      !in.Read(&r.ttl_ms) || !in.Read(&n_blocks) || n_blocks > limits::kMaxSessionBlocks) {
    return absl::DataLossError("session record: truncated header");
  }
  r.blocks.resize(n_blocks);
  for (BlockKey& b : r.blocks) {
    std::string_view raw;
    if (!in.Bytes(b.size(), &raw)) return absl::DataLossError("session record: truncated blocks");
    std::memcpy(b.data(), raw.data(), b.size());
  }
  std::string_view tail;
  if (!in.Read(&tail_len) || !in.Bytes(tail_len, &tail)) {
    return absl::DataLossError("session record: bad tail");
  }
  r.tail = std::string(tail);
  if (version >= 2) {
    uint32_t descriptor_len = 0;
    std::string_view descriptor;
    if (!in.Read(&descriptor_len) || !in.Bytes(descriptor_len, &descriptor)) {
      return absl::DataLossError("session record: bad descriptor");
    }
    r.descriptor = std::string(descriptor);
  }
  if (version >= 3) {
    if (!in.Read(&r.updated_ms) || !in.Read(&r.deleted_ms)) {
      return absl::DataLossError("session record: truncated times");
    }
  } else {
    r.updated_ms = r.created_ms;
  }
  if (!in.done()) return absl::DataLossError("session record: trailing bytes");
  return r;
}

}  // namespace qaqkv::storage
