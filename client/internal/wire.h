// The page streams' messages on the wire, built and parsed here instead of
// by protobuf so page bytes are never copied in user space: a PutPages
// message is a list of gRPC slices that reference the pages themselves, and
// a GetPages message is parsed in place, each page the pieces of the
// received slices it lies in (PageBytes), never copied here. The layout is the
// proto's (proto/qaqkv/v1/kvcache.proto), so the server's generated code and
// grpcurl read the same bytes.
#ifndef QAQKV_CLIENT_INTERNAL_WIRE_H_
#define QAQKV_CLIENT_INTERNAL_WIRE_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "qaqkv/client.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::client::internal {

// Counts the slices that reference memory the caller owns, so a stream can
// wait until gRPC has dropped every one before the caller's memory may go.
class SliceFence {
 public:
  SliceFence() = default;
  ~SliceFence() { Wait(); }
  SliceFence(const SliceFence&) = delete;
  SliceFence& operator=(const SliceFence&) = delete;
  void Add();
  void Release();
  void Wait();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t live_ = 0;  // guarded by mu_
};

// One page to send. `data` stays valid while `owner` lives; with no owner,
// the memory belongs to the caller and the slice is counted by a fence.
struct OutPage {
  BlockKey key{};
  uint32_t layer = 0;
  std::string_view data;
  std::shared_ptr<const std::string> owner;
};

// A PutPagesRequest (the format when `format_bytes` is non-empty, then the
// pages) as slices referencing the page bytes.
grpc::ByteBuffer EncodePutMessage(const std::string& format_bytes, std::span<const OutPage> pages,
                                  SliceFence& fence);

// One page of a received GetPagesResponse.
struct InPage {
  std::string_view key;
  uint32_t layer = 0;
  PageBytes data;
};

// A parsed GetPagesResponse. `keep` holds the received slices and the list
// of pieces the pages' PageBytes point into (and a copy of any key or
// format that straddled two slices): every view stays valid while a copy of
// `keep` lives.
struct InMessage {
  bool has_format = false;
  v1::BlockFormat format;
  std::vector<InPage> pages;
  std::shared_ptr<const void> keep;
};

// kInternal when the bytes are not a well-formed GetPagesResponse.
absl::StatusOr<InMessage> ParseGetMessage(const grpc::ByteBuffer& buffer);

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_WIRE_H_
