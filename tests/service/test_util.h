// Pages, formats and RPC wrappers shared by the service tests.
//
// Pages are real: random K (fp32) and V (fp16) values encoded by the kernels'
// EncodePage, so the server's validation sees exactly what a worker sends.
// Every RPC wrapper sets a deadline (kRpcTimeout), so a hung server fails the
// test instead of hanging it.
//
// Thread-safety: all functions are safe to call concurrently.
#ifndef QAQKV_TESTS_SERVICE_TEST_UTIL_H_
#define QAQKV_TESTS_SERVICE_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"

namespace qaqkv::service::testing {

// Generous: the suite also runs under ASan and TSan.
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

// The small geometry most tests use: 4 layers, 2 KV heads, 4 query heads,
// head_dim 64, 16 tokens per block, fp16.
v1::Geometry SmallGeometry();
v1::BlockFormat MakeFormat(std::string_view codec,
                           const v1::Geometry& geometry = SmallGeometry());

// One encoded page of `tokens` (0: geometry.block_tokens) x num_kv_heads x
// head_dim values of K and of V, random from `seed`, encoded by `codec`
// (any name ParseCodecConfig takes). Errors as ParseCodecConfig/EncodePage.
absl::StatusOr<std::string> MakePage(std::string_view codec, const v1::Geometry& geometry,
                                     uint64_t seed, uint32_t tokens = 0);

// A 16-byte block key; distinct seeds give distinct keys.
std::string MakeBlockKey(uint64_t seed);

// A block as a worker holds it: its key and one page per layer.
struct TestBlock {
  std::string key;
  std::vector<std::string> pages;  // pages[layer]
  uint64_t bytes() const;
};
// Key and pages from `seed`, under `format` (geometry and codec).
absl::StatusOr<TestBlock> MakeBlock(const v1::BlockFormat& format, uint64_t seed);

v1::Page PageOf(const TestBlock& block, uint32_t layer);
// A PutPages message holding every page of `blocks` (block-major), with
// `format` when given.
v1::PutPagesRequest PutMessage(const std::vector<TestBlock>& blocks,
                               const v1::BlockFormat* format = nullptr);

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout = kRpcTimeout);

struct PutResult {
  grpc::Status status;
  v1::PutPagesResponse response;
};
// One PutPages stream writing `messages` in order. A write the server
// refused (it already ended the stream) stops the writing; the status is
// the server's.
PutResult PutPages(v1::KvCache::Stub& stub,
                   const std::vector<v1::PutPagesRequest>& messages);
// One stream, one message: `format` and every page of `blocks`.
PutResult PutBlocks(v1::KvCache::Stub& stub, const v1::BlockFormat& format,
                    const std::vector<TestBlock>& blocks);

struct GetResult {
  grpc::Status status;
  std::vector<v1::GetPagesResponse> messages;
  std::vector<v1::Page> pages;  // every page of every message, in order
};
GetResult GetPages(v1::KvCache::Stub& stub, const v1::GetPagesRequest& request);
GetResult GetPages(v1::KvCache::Stub& stub, const std::vector<std::string>& keys,
                   uint32_t layer_begin = 0, uint32_t layer_end = 0);

struct LookupResult {
  grpc::Status status;
  uint32_t committed_prefix = 0;
};
LookupResult Lookup(v1::KvCache::Stub& stub, const std::vector<std::string>& keys,
                    const v1::BlockFormat* format = nullptr);

// Any unary method of the stub, with a deadline:
//   Unary(stub, &v1::KvCache::Stub::GetSession, request, &response).
template <typename Request, typename Response>
grpc::Status Unary(v1::KvCache::Stub& stub,
                   grpc::Status (v1::KvCache::Stub::*method)(grpc::ClientContext*,
                                                             const Request&, Response*),
                   const Request& request, Response* response) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  return (stub.*method)(&ctx, request, response);
}

// "CODE: message", for failure messages.
std::string StatusText(const grpc::Status& status);

// The pages of `blocks` in GetPages order for layers [begin, end): layer
// `begin` of every block first.
std::vector<v1::Page> LayerMajor(const std::vector<TestBlock>& blocks, uint32_t begin,
                                 uint32_t end);

}  // namespace qaqkv::service::testing

#endif  // QAQKV_TESTS_SERVICE_TEST_UTIL_H_
