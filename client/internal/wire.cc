#include "client/internal/wire.h"

#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "proto/wire.h"

namespace qaqkv::client::internal {
namespace {

using wire::kDataTag;
using wire::kFormatTag;
using wire::kKeyTag;
using wire::kLayerTag;
using wire::kPagesTag;

// gRPC's slice API takes a void* and a destroy function; the owners travel
// as heap objects that the destroy functions reclaim (ownership passes to
// gRPC, hence release()).
grpc::Slice OwnedSlice(const OutPage& page) {
  auto ref = std::make_unique<std::shared_ptr<const std::string>>(page.owner);
  return grpc::Slice(
      const_cast<char*>(page.data.data()), page.data.size(),
      [](void* p) {
        std::unique_ptr<std::shared_ptr<const std::string>> owned(
            static_cast<std::shared_ptr<const std::string>*>(p));
      },
      ref.release());
}

grpc::Slice FencedSlice(const OutPage& page, SliceFence& fence) {
  fence.Add();
  return grpc::Slice(
      const_cast<char*>(page.data.data()), page.data.size(),
      [](void* f) { static_cast<SliceFence*>(f)->Release(); }, &fence);
}

// What a parsed message keeps alive.
struct Held {
  std::vector<grpc::Slice> slices;
  std::deque<std::string> copies;       // small fields that straddled two slices
  std::vector<std::string_view> pieces;  // the pages' pieces, in order
};

// Reads protobuf wire data across a list of slices.
class Cursor {
 public:
  explicit Cursor(Held& held) : held_(held) {
    for (const grpc::Slice& s : held_.slices) total_ += s.size();
    Skip0();
  }
  bool done() const { return slice_ == held_.slices.size(); }
  size_t consumed() const { return consumed_; }

  bool Byte(uint8_t* out) {
    if (done()) return false;
    *out = held_.slices[slice_].begin()[offset_];
    Advance(1);
    return true;
  }
  bool Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!Byte(&b)) return false;
      v |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80) == 0) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  // Appends views of the next n bytes, one per slice they lie in, to
  // `held.pieces`.
  bool Pieces(size_t n) {
    while (n > 0) {
      if (done()) return false;
      const grpc::Slice& s = held_.slices[slice_];
      const size_t take = std::min(n, s.size() - offset_);
      held_.pieces.emplace_back(reinterpret_cast<const char*>(s.begin()) + offset_, take);
      Advance(take);
      n -= take;
    }
    return true;
  }
  // A view of the next n bytes: in place when they lie in one slice, else
  // a copy kept in `held` (for the small fields: keys and the format).
  bool Bytes(size_t n, std::string_view* out) {
    if (n == 0) {
      *out = {};
      return true;
    }
    if (done()) return false;
    const grpc::Slice& s = held_.slices[slice_];
    if (s.size() - offset_ >= n) {
      *out = std::string_view(reinterpret_cast<const char*>(s.begin()) + offset_, n);
      Advance(n);
      return true;
    }
    std::string copy;
    // A length past the message's end is malformed: refuse it before
    // reserving (a bad length would otherwise ask for up to 2^64 bytes).
    if (n > total_ - consumed_) return false;
    copy.reserve(n);
    while (copy.size() < n) {
      if (done()) return false;
      const grpc::Slice& c = held_.slices[slice_];
      const size_t take = std::min(n - copy.size(), c.size() - offset_);
      copy.append(reinterpret_cast<const char*>(c.begin()) + offset_, take);
      Advance(take);
    }
    *out = held_.copies.emplace_back(std::move(copy));
    return true;
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    consumed_ += n;
    if (offset_ == held_.slices[slice_].size()) {
      ++slice_;
      offset_ = 0;
      Skip0();
    }
  }
  void Skip0() {
    while (slice_ < held_.slices.size() && held_.slices[slice_].size() == 0) ++slice_;
  }
  Held& held_;
  size_t slice_ = 0, offset_ = 0, consumed_ = 0, total_ = 0;
};

absl::Status Malformed(std::string_view what) {
  return absl::InternalError(absl::StrCat("server sent a malformed GetPages message: ",
                                          absl::string_view(what.data(), what.size())));
}

// Skips a field of wire type `type` (we only expect length-delimited and
// varint fields; others are skipped for forward compatibility).
bool SkipField(Cursor& in, uint64_t type) {
  uint64_t v;
  std::string_view ignored;
  switch (type) {
    case 0: return in.Varint(&v);
    case 1: return in.Bytes(8, &ignored);
    case 2: return in.Varint(&v) && in.Bytes(v, &ignored);
    case 5: return in.Bytes(4, &ignored);
    default: return false;
  }
}

}  // namespace

void SliceFence::Add() {
  std::lock_guard<std::mutex> lock(mu_);
  ++live_;
}

void SliceFence::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--live_ == 0) cv_.notify_all();
}

void SliceFence::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return live_ == 0; });
}

grpc::ByteBuffer EncodePutMessage(const std::string& format_bytes, std::span<const OutPage> pages,
                                  SliceFence& fence) {
  std::vector<grpc::Slice> slices;
  slices.reserve(2 * pages.size() + 1);
  std::string header;
  if (!format_bytes.empty()) wire::AppendFormat(header, format_bytes);
  for (const OutPage& p : pages) {
    wire::AppendPageHeader(header, p.key.data(), p.key.size(), p.layer, p.data.size());
    slices.emplace_back(header.data(), header.size());  // copies the few header bytes
    header.clear();
    slices.push_back(p.owner ? OwnedSlice(p) : FencedSlice(p, fence));
  }
  if (!header.empty()) slices.emplace_back(header.data(), header.size());
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::StatusOr<InMessage> ParseGetMessage(const grpc::ByteBuffer& buffer) {
  auto held = std::make_shared<Held>();
  if (!buffer.Dump(&held->slices).ok()) return Malformed("unreadable buffer");
  InMessage out;
  // Where each page's pieces lie in held->pieces.
  struct Spread {
    size_t first = 0, count = 0;
  };
  std::vector<Spread> spreads;
  Cursor in(*held);
  while (!in.done()) {
    uint64_t tag;
    if (!in.Varint(&tag)) return Malformed("truncated tag");
    if (tag == kFormatTag || tag == kPagesTag) {
      uint64_t len;
      if (!in.Varint(&len)) return Malformed("truncated length");
      if (tag == kFormatTag) {
        std::string_view bytes;
        if (!in.Bytes(len, &bytes) ||
            !out.format.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          return Malformed("format");
        }
        out.has_format = true;
        continue;
      }
      const size_t end = in.consumed() + len;
      InPage page;
      Spread spread;
      while (in.consumed() < end) {
        uint64_t field;
        if (!in.Varint(&field)) return Malformed("truncated page");
        if (field == kKeyTag) {
          uint64_t n;
          if (!in.Varint(&n) || !in.Bytes(n, &page.key)) return Malformed("truncated page field");
        } else if (field == kDataTag) {
          // Protobuf's last-one-wins for a repeated singular field.
          uint64_t n;
          spread.first = held->pieces.size();
          if (!in.Varint(&n) || !in.Pieces(n)) return Malformed("truncated page field");
          spread.count = held->pieces.size() - spread.first;
        } else if (field == kLayerTag) {
          uint64_t layer;
          if (!in.Varint(&layer) || layer > UINT32_MAX) return Malformed("layer");
          page.layer = static_cast<uint32_t>(layer);
        } else if (!SkipField(in, field & 7)) {
          return Malformed("unknown page field");
        }
      }
      if (in.consumed() != end) return Malformed("page length");
      out.pages.push_back(page);
      spreads.push_back(spread);
    } else if (!SkipField(in, tag & 7)) {
      return Malformed("unknown field");
    }
  }
  // Only now, with held->pieces complete (no more reallocation), can the
  // pages point into it.
  const std::span<const std::string_view> all(held->pieces);
  for (size_t i = 0; i < out.pages.size(); ++i) {
    out.pages[i].data = PageBytes(all.subspan(spreads[i].first, spreads[i].count));
  }
  out.keep = std::move(held);
  return out;
}

}  // namespace qaqkv::client::internal
