// Ties the hand-built page-stream messages (proto/wire.h) to the contract:
// a field renumbered in kvcache.proto, or a limit that no longer fits the
// generated types, fails the build here instead of corrupting streams.
#include <cstdint>
#include <limits>

#include "proto/wire.h"
#include "qaqkv/limits.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::wire {
namespace {

constexpr uint8_t Tag(int field, int wire_type) {
  return static_cast<uint8_t>((field << 3) | wire_type);
}
constexpr int kVarint = 0;
constexpr int kLengthDelimited = 2;

static_assert(kFormatTag == Tag(v1::PutPagesRequest::kFormatFieldNumber, kLengthDelimited));
static_assert(kFormatTag == Tag(v1::GetPagesResponse::kFormatFieldNumber, kLengthDelimited));
static_assert(kPagesTag == Tag(v1::PutPagesRequest::kPagesFieldNumber, kLengthDelimited));
static_assert(kPagesTag == Tag(v1::GetPagesResponse::kPagesFieldNumber, kLengthDelimited));
static_assert(kKeyTag == Tag(v1::Page::kBlockKeyFieldNumber, kLengthDelimited));
static_assert(kLayerTag == Tag(v1::Page::kLayerFieldNumber, kVarint));
static_assert(kDataTag == Tag(v1::Page::kDataFieldNumber, kLengthDelimited));
// One-byte tags: every field number above must stay below 16.
static_assert(v1::Page::kDataFieldNumber < 16 && v1::PutPagesRequest::kPagesFieldNumber < 16);

// The limits fit the proto's field types (uint32 layers and counts).
static_assert(limits::kMaxLayers <= std::numeric_limits<uint32_t>::max());
static_assert(limits::kMaxLookupKeys <= static_cast<size_t>(std::numeric_limits<int>::max()));

}  // namespace
}  // namespace qaqkv::wire
