#include "tests/service/test_util.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/codec.h"
#include "kernels/half.h"

namespace qaqkv::service::testing {

v1::Geometry SmallGeometry() {
  v1::Geometry g;
  g.set_num_layers(4);
  g.set_num_kv_heads(2);
  g.set_num_q_heads(4);
  g.set_head_dim(64);
  g.set_dtype(v1::DTYPE_FP16);
  g.set_block_tokens(16);
  return g;
}

v1::BlockFormat MakeFormat(std::string_view codec, const v1::Geometry& geometry) {
  v1::BlockFormat f;
  *f.mutable_geometry() = geometry;
  f.set_codec(std::string(codec));
  return f;
}

absl::StatusOr<std::string> MakePage(std::string_view codec, const v1::Geometry& geometry,
                                     uint64_t seed, uint32_t tokens) {
  auto config = ParseCodecConfig(codec);
  if (!config.ok()) return config.status();
  PageShape shape;
  shape.tokens = static_cast<int>(tokens == 0 ? geometry.block_tokens() : tokens);
  shape.kv_heads = static_cast<int>(geometry.num_kv_heads());
  shape.head_dim = static_cast<int>(geometry.head_dim());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(shape.values()));
  std::vector<uint16_t> v(static_cast<size_t>(shape.values()));
  for (float& x : k) x = normal(rng);
  for (uint16_t& x : v) x = ::qaqkv::FloatToHalf(0.5f * normal(rng));
  auto page = EncodePage(*config, shape, TensorView{k.data(), DType::kF32, Layout::kNHD},
                         TensorView{v.data(), DType::kF16, Layout::kNHD});
  if (!page.ok()) return page.status();
  return std::string(page->begin(), page->end());
}

std::string MakeBlockKey(uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  std::string key(16, '\0');
  const uint64_t a = rng(), b = rng();
  for (int i = 0; i < 8; ++i) {
    key[i] = static_cast<char>(a >> (8 * i));
    key[8 + i] = static_cast<char>(b >> (8 * i));
  }
  return key;
}

uint64_t TestBlock::bytes() const {
  uint64_t n = 0;
  for (const std::string& p : pages) n += p.size();
  return n;
}

absl::StatusOr<TestBlock> MakeBlock(const v1::BlockFormat& format, uint64_t seed) {
  TestBlock b;
  b.key = MakeBlockKey(seed);
  for (uint32_t layer = 0; layer < format.geometry().num_layers(); ++layer) {
    auto page = MakePage(format.codec(), format.geometry(), seed * 4099 + layer);
    if (!page.ok()) return page.status();
    b.pages.push_back(std::move(*page));
  }
  return b;
}

v1::Page PageOf(const TestBlock& block, uint32_t layer) {
  v1::Page p;
  p.set_block_key(block.key);
  p.set_layer(layer);
  p.set_data(block.pages.at(layer));
  return p;
}

v1::PutPagesRequest PutMessage(const std::vector<TestBlock>& blocks,
                               const v1::BlockFormat* format) {
  v1::PutPagesRequest m;
  if (format != nullptr) *m.mutable_format() = *format;
  for (const TestBlock& b : blocks) {
    for (uint32_t layer = 0; layer < b.pages.size(); ++layer)
      *m.add_pages() = PageOf(b, layer);
  }
  return m;
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

PutResult PutPages(v1::KvCache::Stub& stub,
                   const std::vector<v1::PutPagesRequest>& messages) {
  PutResult r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  std::unique_ptr<grpc::ClientWriter<v1::PutPagesRequest>> writer =
      stub.PutPages(&ctx, &r.response);
  for (const v1::PutPagesRequest& m : messages) {
    if (!writer->Write(m)) break;
  }
  writer->WritesDone();
  r.status = writer->Finish();
  return r;
}

PutResult PutBlocks(v1::KvCache::Stub& stub, const v1::BlockFormat& format,
                    const std::vector<TestBlock>& blocks) {
  return PutPages(stub, {PutMessage(blocks, &format)});
}

GetResult GetPages(v1::KvCache::Stub& stub, const v1::GetPagesRequest& request) {
  GetResult r;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  std::unique_ptr<grpc::ClientReader<v1::GetPagesResponse>> reader =
      stub.GetPages(&ctx, request);
  v1::GetPagesResponse m;
  while (reader->Read(&m)) {
    for (const v1::Page& p : m.pages()) r.pages.push_back(p);
    r.messages.push_back(std::move(m));
    m.Clear();
  }
  r.status = reader->Finish();
  return r;
}

GetResult GetPages(v1::KvCache::Stub& stub, const std::vector<std::string>& keys,
                   uint32_t layer_begin, uint32_t layer_end) {
  v1::GetPagesRequest req;
  for (const std::string& k : keys) req.add_block_keys(k);
  req.set_layer_begin(layer_begin);
  req.set_layer_end(layer_end);
  return GetPages(stub, req);
}

LookupResult Lookup(v1::KvCache::Stub& stub, const std::vector<std::string>& keys,
                    const v1::BlockFormat* format) {
  v1::LookupRequest req;
  for (const std::string& k : keys) req.add_block_keys(k);
  if (format != nullptr) *req.mutable_format() = *format;
  v1::LookupResponse resp;
  LookupResult r;
  r.status = Unary(stub, &v1::KvCache::Stub::Lookup, req, &resp);
  r.committed_prefix = resp.committed_prefix();
  return r;
}

std::string StatusText(const grpc::Status& status) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int code = static_cast<int>(status.error_code());
  const std::string name =
      code >= 0 && code <= 16 ? kNames[code] : absl::StrCat("code ", code);
  return absl::StrCat(name, ": ", status.error_message());
}

std::vector<v1::Page> LayerMajor(const std::vector<TestBlock>& blocks, uint32_t begin,
                                 uint32_t end) {
  std::vector<v1::Page> out;
  for (uint32_t layer = begin; layer < end; ++layer) {
    for (const TestBlock& b : blocks) out.push_back(PageOf(b, layer));
  }
  return out;
}

}  // namespace qaqkv::service::testing
