#include "storage/session_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/ids.h"
#include "qaqkv/limits.h"

namespace qaqkv::storage {
namespace {

// Version 2 added the descriptor; version 1 records (no descriptor) still read.
constexpr uint8_t kVersion = 2;

template <typename T>
void Append(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

// Bounds-checked little-endian reader.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Read(T* v) {
    if (in_.size() - at_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
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
  Append<uint8_t>(out, kVersion);
  Append<uint64_t>(out, r.token_count);
  Append<int64_t>(out, r.created_ms);
  Append<int64_t>(out, r.accessed_ms);
  Append<int64_t>(out, r.ttl_ms);
  Append<uint32_t>(out, static_cast<uint32_t>(r.blocks.size()));
  for (const BlockKey& b : r.blocks) out.append(reinterpret_cast<const char*>(b.data()), b.size());
  Append<uint32_t>(out, static_cast<uint32_t>(r.tail.size()));
  out += r.tail;
  Append<uint32_t>(out, static_cast<uint32_t>(r.descriptor.size()));
  out += r.descriptor;
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
  if (!in.done()) return absl::DataLossError("session record: trailing bytes");
  return r;
}

}  // namespace qaqkv::storage
