// The CUDA codec against the CPU reference, byte for byte, on random inputs
// drawn fresh each run (reproduce a failure with QAQKV_TEST_SEED=<seed>).
// Every test skips when there is no CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/codec.h"
#include "kernels/cuda/codec_cuda.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/half.h"

namespace qaqkv {
namespace {

using cuda::DeviceBuffer;

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("QAQKV_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 0));
    std::random_device rd;
    return (uint64_t{rd()} << 32) | rd();
  }();
  return seed;
}

size_t ElemBytes(DType t) { return t == DType::kF32 ? 4 : 2; }
const char* DTypeName(DType t) { return t == DType::kF16 ? "f16" : t == DType::kBF16 ? "bf16" : "f32"; }

enum class Fill { kNormal, kTies, kNonFinite };

// `values` logical values, stored as `dtype`. kNonFinite scatters NaN and
// +-Inf over a few positions.
std::vector<uint8_t> RandomTensor(std::mt19937_64& rng, int64_t values, DType dtype, Fill fill) {
  std::normal_distribution<float> n(0, 1);
  const float scale = std::exp2(static_cast<float>(static_cast<int>(rng() % 13) - 6));
  std::vector<float> x(values);
  if (fill == Fill::kTies) {
    const float set[] = {-1.0f, -0.5f, -0.0f, 0.0f, 0.5f, 1.0f, 2.0f};
    for (auto& v : x) v = set[rng() % 7] * scale;
  } else {
    for (auto& v : x) v = n(rng) * scale;
  }
  if (fill == Fill::kNonFinite) {
    const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity()};
    const int64_t count = 1 + static_cast<int64_t>(rng() % 5);
    for (int64_t i = 0; i < count; ++i) x[rng() % values] = specials[rng() % 3];
  }
  std::vector<uint8_t> out(values * ElemBytes(dtype));
  for (int64_t i = 0; i < values; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &x[i], 4);
    } else {
      const uint16_t h = dtype == DType::kF16 ? FloatToHalf(x[i]) : FloatToBf16(x[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

DeviceBuffer ToDevice(const std::vector<uint8_t>& host) {
  auto b = DeviceBuffer::Allocate(host.size());
  EXPECT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(cudaMemcpy(b->data(), host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
  return std::move(*b);
}

std::vector<uint8_t> ToHost(const DeviceBuffer& dev, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  EXPECT_EQ(cudaMemcpy(out.data(), dev.data(), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

// Index of the first differing byte, or -1.
int64_t FirstDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return static_cast<int64_t>(std::min(a.size(), b.size()));
  for (size_t i = 0; i < a.size(); ++i) if (a[i] != b[i]) return static_cast<int64_t>(i);
  return -1;
}

class GpuCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto s = cuda::CudaStream::Create();
    ASSERT_TRUE(s.ok()) << s.status();
    stream_ = std::move(*s);
    auto c = cuda::GpuCodec::Create(stream_.get());
    ASSERT_TRUE(c.ok()) << c.status();
    codec_ = std::move(*c);
    rng_.seed(TestSeed());
    RecordProperty("seed", std::to_string(TestSeed()));
  }

  // Encodes fresh random tensors of case `c` on the CPU reference and on the
  // GPU, and expects the same page bytes.
  void ExpectSamePageAsCpu(const struct Case& c, const QaqSideInputs& side = {});
  // Fresh random K and V of case `c`, in its dtypes.
  std::pair<std::vector<uint8_t>, std::vector<uint8_t>> RandomKv(const Case& c);
  // The CPU's page of fresh random K and V of case `c`.
  absl::StatusOr<std::vector<uint8_t>> RandomCpuPage(const Case& c);

  cuda::CudaStream stream_;
  std::unique_ptr<cuda::GpuCodec> codec_;
  std::mt19937_64 rng_;
};

const int kTokens[] = {1, 7, 67, 255, 256, 257, 5137};
const int kHeadDims[] = {64, 128, 256};
const char* kConfigs[] = {"qaq",  "qaq-layer", "int8", "int4", "kivi2", "kivi2:r=32,g=16",
                          "fp16", "qaq:s=7e-4,x=2e-4,o=0.05,b=2-8"};

struct Case {
  CodecConfig config;
  PageShape shape;
  DType k_dtype, v_dtype;
  Layout k_layout, v_layout;
  Fill fill;
  std::string Name() const {
    return config.Name() + " " + std::to_string(shape.tokens) + "x" +
           std::to_string(shape.kv_heads) + "x" + std::to_string(shape.head_dim) + " k:" +
           DTypeName(k_dtype) + (k_layout == Layout::kNHD ? "/nhd" : "/hnd") + " v:" +
           DTypeName(v_dtype) + (v_layout == Layout::kNHD ? "/nhd" : "/hnd") +
           (fill == Fill::kNonFinite ? " nan-inf" : fill == Fill::kTies ? " ties" : "") +
           " seed=" + std::to_string(TestSeed());
  }
};

Case RandomCase(std::mt19937_64& rng, const char* config, int tokens, int head_dim, Fill fill) {
  Case c;
  c.config = *ParseCodecConfig(config);
  c.shape = PageShape{tokens, 1 + static_cast<int>(rng() % 3), head_dim};
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  c.k_dtype = dtypes[rng() % 3];
  c.v_dtype = dtypes[rng() % 3];
  c.k_layout = (rng() & 1) ? Layout::kNHD : Layout::kHND;
  c.v_layout = (rng() & 1) ? Layout::kNHD : Layout::kHND;
  c.fill = fill;
  return c;
}

std::pair<std::vector<uint8_t>, std::vector<uint8_t>> GpuCodecTest::RandomKv(const Case& c) {
  auto k = RandomTensor(rng_, c.shape.values(), c.k_dtype, c.fill);
  auto v = RandomTensor(rng_, c.shape.values(), c.v_dtype, c.fill);
  return {std::move(k), std::move(v)};
}

absl::StatusOr<std::vector<uint8_t>> GpuCodecTest::RandomCpuPage(const Case& c) {
  const auto [k, v] = RandomKv(c);
  return EncodePage(c.config, c.shape, {k.data(), c.k_dtype, c.k_layout},
                    {v.data(), c.v_dtype, c.v_layout});
}

void GpuCodecTest::ExpectSamePageAsCpu(const Case& c, const QaqSideInputs& side) {
  SCOPED_TRACE(c.Name());
  const auto [k, v] = RandomKv(c);
  auto cpu = EncodePage(c.config, c.shape, {k.data(), c.k_dtype, c.k_layout},
                        {v.data(), c.v_dtype, c.v_layout}, side, Backend::kReference);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  const DeviceBuffer dk = ToDevice(k), dv = ToDevice(v);
  auto gpu = codec_->EncodePage(c.config, c.shape, {dk.data(), c.k_dtype, c.k_layout},
                                {dv.data(), c.v_dtype, c.v_layout}, side);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_EQ(FirstDiff(*cpu, *gpu), -1) << "pages of " << cpu->size() << " and " << gpu->size()
                                       << " bytes";
}

TEST_F(GpuCodecTest, EncodeMatchesCpuReferenceByteForByte) {
  for (const char* config : kConfigs) {
    for (int tokens : kTokens) {
      for (int head_dim : kHeadDims) {
        const Fill fill = (rng_() % 4 == 0) ? Fill::kTies : Fill::kNormal;
        const Case c = RandomCase(rng_, config, tokens, head_dim, fill);
        ASSERT_NO_FATAL_FAILURE(ExpectSamePageAsCpu(c));
      }
    }
  }
}

TEST_F(GpuCodecTest, NanAndInfGroupsAreStoredExactlyAsOnTheCpu) {
  for (const char* config : kConfigs) {
    for (int tokens : {1, 67, 257}) {
      const Case c = RandomCase(rng_, config, tokens, kHeadDims[rng_() % 3], Fill::kNonFinite);
      ASSERT_NO_FATAL_FAILURE(ExpectSamePageAsCpu(c));
    }
  }
}

TEST_F(GpuCodecTest, QaqSideInputsGiveTheCpuWidths) {
  for (const char* config : {"qaq", "qaq-layer", "qaq:b=1-6,o=0.02"}) {
    for (int tokens : {7, 257}) {
      const Case c = RandomCase(rng_, config, tokens, 128, Fill::kNormal);
      std::vector<float> attention(size_t(tokens) * c.shape.kv_heads);
      std::uniform_real_distribution<float> u(-0.2f, 1.0f);
      for (float& a : attention) a = u(rng_);
      std::vector<float> q2(c.shape.kv_heads);
      for (float& q : q2) q = 0.1f + 10.0f * std::uniform_real_distribution<float>(0, 1)(rng_);
      QaqSideInputs side;
      side.attention = attention;
      side.q2 = q2;
      side.context_tokens = tokens * 4;
      ASSERT_NO_FATAL_FAILURE(ExpectSamePageAsCpu(c, side));
    }
  }
}

// Layer-level groups larger than the kernel's shared-memory cache (32 heads x
// 256 = 8192 values) take the uncached path; many outliers per side too.
TEST_F(GpuCodecTest, LargeLayerGroupsMatchTheCpu) {
  for (const char* config : {"qaq-layer", "qaq-layer:o=0.1"}) {
    Case c = RandomCase(rng_, config, 67, 256, Fill::kNormal);
    c.shape.kv_heads = 32;
    ASSERT_NO_FATAL_FAILURE(ExpectSamePageAsCpu(c));
  }
}

// CPU-encoded pages (qaq-cs / qaq-cc included) decoded on the GPU give the
// CPU decoder's output bytes, in every output dtype and layout.
TEST_F(GpuCodecTest, CpuEncodeGpuDecodeMatchesCpuDecode) {
  const char* configs[] = {"qaq", "qaq-layer", "qaq-cs", "qaq-cc", "int8", "int4", "kivi2", "fp16"};
  for (const char* config : configs) {
    for (int tokens : kTokens) {
      const Fill fill = (rng_() % 5 == 0) ? Fill::kNonFinite : Fill::kNormal;
      const Case c = RandomCase(rng_, config, tokens, kHeadDims[rng_() % 3], fill);
      SCOPED_TRACE(c.Name());
      auto page = RandomCpuPage(c);
      ASSERT_TRUE(page.ok()) << page.status();
      const DType out_types[] = {DType::kF16, DType::kBF16, DType::kF32};
      const DType odt = out_types[rng_() % 3];
      const Layout olay = (rng_() & 1) ? Layout::kNHD : Layout::kHND;
      const size_t bytes = c.shape.values() * ElemBytes(odt);
      std::vector<uint8_t> ck(bytes), cv(bytes);
      ASSERT_TRUE(DecodePage(*page, {ck.data(), odt, olay}, {cv.data(), odt, olay}, &c.shape,
                             Backend::kReference).ok());
      auto gk = DeviceBuffer::Allocate(bytes);
      auto gv = DeviceBuffer::Allocate(bytes);
      ASSERT_TRUE(gk.ok() && gv.ok());
      const absl::Status s = codec_->DecodePage(*page, {gk->data(), odt, olay},
                                                {gv->data(), odt, olay}, &c.shape);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(stream_.Synchronize().ok());
      EXPECT_EQ(FirstDiff(ck, ToHost(*gk, bytes)), -1) << DTypeName(odt);
      EXPECT_EQ(FirstDiff(cv, ToHost(*gv, bytes)), -1) << DTypeName(odt);
    }
  }
}

// GPU-encoded pages are ordinary pages: the CPU decodes them to what it
// decodes from its own encoding, and the GPU decodes them back the same way.
TEST_F(GpuCodecTest, GpuEncodeCpuDecodeRoundTrip) {
  for (const char* config : {"qaq", "qaq-layer", "int4", "kivi2"}) {
    const Case c = RandomCase(rng_, config, kTokens[rng_() % 7], 128, Fill::kNormal);
    SCOPED_TRACE(c.Name());
    const auto [k, v] = RandomKv(c);
    const DeviceBuffer dk = ToDevice(k), dv = ToDevice(v);
    auto gpu = codec_->EncodePage(c.config, c.shape, {dk.data(), c.k_dtype, c.k_layout},
                                  {dv.data(), c.v_dtype, c.v_layout});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const size_t bytes = c.shape.values() * 4;
    std::vector<uint8_t> ck(bytes), cv(bytes);
    ASSERT_TRUE(DecodePage(*gpu, {ck.data(), DType::kF32, Layout::kHND},
                           {cv.data(), DType::kF32, Layout::kHND}).ok());
    auto gk = DeviceBuffer::Allocate(bytes);
    auto gv = DeviceBuffer::Allocate(bytes);
    ASSERT_TRUE(gk.ok() && gv.ok());
    ASSERT_TRUE(codec_->DecodePage(*gpu, {gk->data(), DType::kF32, Layout::kHND},
                                   {gv->data(), DType::kF32, Layout::kHND}).ok());
    ASSERT_TRUE(stream_.Synchronize().ok());
    EXPECT_EQ(FirstDiff(ck, ToHost(*gk, bytes)), -1);
    EXPECT_EQ(FirstDiff(cv, ToHost(*gv, bytes)), -1);
  }
}

// A page already in device memory (as NCCL delivers it) is adopted without
// a host copy: decoding it gives the CPU decoder's bytes, Download gives the
// page back unchanged, and a bad header or short section is still refused.
TEST_F(GpuCodecTest, AdoptedDevicePagesDecodeLikeTheCpu) {
  const char* configs[] = {"qaq", "qaq-layer", "qaq-cs", "qaq-cc", "int8", "int4", "kivi2",
                           "kivi2:r=32,g=16", "fp16"};
  for (const char* config : configs) {
    for (int tokens : kTokens) {
      const Fill fill = (rng_() % 5 == 0) ? Fill::kNonFinite : Fill::kNormal;
      const Case c = RandomCase(rng_, config, tokens, kHeadDims[rng_() % 3], fill);
      SCOPED_TRACE(c.Name());
      auto page = RandomCpuPage(c);
      ASSERT_TRUE(page.ok()) << page.status();
      const DType odt = (rng_() & 1) ? DType::kF16 : DType::kF32;
      const Layout olay = (rng_() & 1) ? Layout::kNHD : Layout::kHND;
      const size_t bytes = c.shape.values() * ElemBytes(odt);
      std::vector<uint8_t> ck(bytes), cv(bytes);
      ASSERT_TRUE(DecodePage(*page, {ck.data(), odt, olay}, {cv.data(), odt, olay}, &c.shape,
                             Backend::kReference).ok());
      const DeviceBuffer received = ToDevice(*page);
      cuda::DevicePage dpage;
      const absl::Status adopted = codec_->AdoptDevicePage(received.data(), page->size(), &dpage);
      ASSERT_TRUE(adopted.ok()) << adopted;
      EXPECT_EQ(dpage.page_bytes(), page->size());
      auto gk = DeviceBuffer::Allocate(bytes);
      auto gv = DeviceBuffer::Allocate(bytes);
      ASSERT_TRUE(gk.ok() && gv.ok());
      const absl::Status s =
          codec_->Decode(dpage, {gk->data(), odt, olay}, {gv->data(), odt, olay}, &c.shape);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(stream_.Synchronize().ok());
      EXPECT_EQ(FirstDiff(ck, ToHost(*gk, bytes)), -1) << DTypeName(odt);
      EXPECT_EQ(FirstDiff(cv, ToHost(*gv, bytes)), -1) << DTypeName(odt);
      auto back = codec_->Download(dpage);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(FirstDiff(*page, *back), -1);
    }
  }
  // Errors: a header from no known format, a page cut short, host memory.
  const PageShape shape{67, 2, 64};
  const auto k = RandomTensor(rng_, shape.values(), DType::kF16, Fill::kNormal);
  auto page = EncodePage(*ParseCodecConfig("qaq"), shape, {k.data(), DType::kF16, Layout::kNHD},
                         {k.data(), DType::kF16, Layout::kNHD});
  ASSERT_TRUE(page.ok());
  cuda::DevicePage dpage;
  std::vector<uint8_t> bad = *page;
  bad[0] ^= 0xff;  // magic
  EXPECT_EQ(codec_->AdoptDevicePage(ToDevice(bad).data(), bad.size(), &dpage).code(),
            absl::StatusCode::kInvalidArgument);
  const DeviceBuffer good = ToDevice(*page);
  EXPECT_EQ(codec_->AdoptDevicePage(good.data(), page->size() - 5, &dpage).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(codec_->AdoptDevicePage(good.data(), 16, &dpage).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(codec_->AdoptDevicePage(page->data(), page->size(), &dpage).code(),
            absl::StatusCode::kInvalidArgument);
  // DownloadTo: into caller memory, and refuses a buffer that is too small.
  ASSERT_TRUE(codec_->AdoptDevicePage(good.data(), page->size(), &dpage).ok());
  std::vector<uint8_t> out(page->size());
  auto n = codec_->DownloadTo(dpage, out);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, page->size());
  EXPECT_EQ(FirstDiff(*page, out), -1);
  EXPECT_EQ(codec_->DownloadTo(dpage, std::span(out).first(out.size() - 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuCodecTest, PagedDecodeWritesTheBlocksOfTheTable) {
  for (const char* config : {"qaq", "kivi2", "int8"}) {
    const int block_size = 16, num_blocks = 64;
    const Case c = RandomCase(rng_, config, 67, 64, Fill::kNormal);
    SCOPED_TRACE(c.Name());
    const auto [k, v] = RandomKv(c);
    auto page = EncodePage(c.config, c.shape, {k.data(), c.k_dtype, c.k_layout},
                           {v.data(), c.v_dtype, c.v_layout});
    ASSERT_TRUE(page.ok());
    std::vector<uint16_t> ck(c.shape.values()), cv(c.shape.values());
    ASSERT_TRUE(DecodePage(*page, {ck.data(), DType::kF16, Layout::kNHD},
                           {cv.data(), DType::kF16, Layout::kNHD}).ok());
    // A shuffled table; the page starts 5 tokens into the sequence.
    std::vector<int32_t> table(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng_);
    const int first = 5;
    const size_t row = size_t(c.shape.kv_heads) * c.shape.head_dim;
    const size_t cache_bytes = size_t(num_blocks) * block_size * row * 2;
    auto dk = DeviceBuffer::Allocate(cache_bytes);
    auto dv = DeviceBuffer::Allocate(cache_bytes);
    ASSERT_TRUE(dk.ok() && dv.ok());
    ASSERT_EQ(cudaMemset(dk->data(), 0, cache_bytes), cudaSuccess);
    ASSERT_EQ(cudaMemset(dv->data(), 0, cache_bytes), cudaSuccess);
    cuda::DevicePage dpage;
    ASSERT_TRUE(codec_->Upload(*page, &dpage).ok());
    const cuda::PagedKvCache kc{dk->data(), DType::kF16, num_blocks, block_size,
                                c.shape.kv_heads, c.shape.head_dim};
    cuda::PagedKvCache vc = kc;
    vc.data = dv->data();
    const absl::Status s = codec_->DecodePaged(dpage, kc, vc, table, first);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(stream_.Synchronize().ok());
    const auto hk = ToHost(*dk, cache_bytes), hv = ToHost(*dv, cache_bytes);
    for (int t = 0; t < c.shape.tokens; ++t) {
      const int pos = first + t;
      const size_t slot = size_t(table[pos / block_size]) * block_size + pos % block_size;
      ASSERT_EQ(std::memcmp(hk.data() + slot * row * 2, ck.data() + t * row, row * 2), 0) << t;
      ASSERT_EQ(std::memcmp(hv.data() + slot * row * 2, cv.data() + t * row, row * 2), 0) << t;
    }
    // A table that does not reach the page's last token, and a bad block id.
    EXPECT_EQ(codec_->DecodePaged(dpage, kc, vc, std::span(table).first(2), first).code(),
              absl::StatusCode::kInvalidArgument);
    std::vector<int32_t> bad = table;
    bad[first / block_size] = num_blocks;
    EXPECT_EQ(codec_->DecodePaged(dpage, kc, vc, bad, first).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(GpuCodecTest, ErrorsMatchTheCpu) {
  const PageShape shape{7, 2, 64};
  const CodecConfig config = *ParseCodecConfig("qaq");
  std::vector<uint8_t> k = RandomTensor(rng_, shape.values(), DType::kBF16, Fill::kNormal);
  const std::vector<uint8_t> v = k;
  // A finite bf16 value beyond fp16's range.
  const uint16_t big = FloatToBf16(1.0e6f);
  std::memcpy(k.data() + 2 * 37, &big, 2);
  const DeviceBuffer dk = ToDevice(k), dv = ToDevice(v);
  auto cpu = EncodePage(config, shape, {k.data(), DType::kBF16, Layout::kNHD},
                        {v.data(), DType::kBF16, Layout::kNHD});
  auto gpu = codec_->EncodePage(config, shape, {dk.data(), DType::kBF16, Layout::kNHD},
                                {dv.data(), DType::kBF16, Layout::kNHD});
  EXPECT_EQ(cpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu.status().code(), absl::StatusCode::kInvalidArgument);
  // Host memory is not accepted as a device tensor.
  EXPECT_EQ(codec_->EncodePage(config, shape, {v.data(), DType::kBF16, Layout::kNHD},
                               {dv.data(), DType::kBF16, Layout::kNHD})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Key channel variants are encoded on the CPU.
  EXPECT_EQ(codec_->EncodePage(*ParseCodecConfig("qaq-cs"), shape,
                               {dv.data(), DType::kBF16, Layout::kNHD},
                               {dv.data(), DType::kBF16, Layout::kNHD})
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  // A corrupt page never reaches the device.
  auto page = EncodePage(config, shape, {v.data(), DType::kBF16, Layout::kNHD},
                         {v.data(), DType::kBF16, Layout::kNHD});
  ASSERT_TRUE(page.ok());
  (*page)[40] ^= 1;
  cuda::DevicePage dpage;
  EXPECT_EQ(codec_->Upload(*page, &dpage).code(), absl::StatusCode::kDataLoss);
  const PageShape other{8, 2, 64};
  (*page)[40] ^= 1;
  ASSERT_TRUE(codec_->Upload(*page, &dpage).ok());
  auto out = DeviceBuffer::Allocate(other.values() * 2);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(codec_->Decode(dpage, {out->data(), DType::kF16, Layout::kNHD},
                           {out->data(), DType::kF16, Layout::kNHD}, &other)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Without a device every test above skips; this one says so once.
TEST(GpuCodecAvailability, CreateFailsCleanlyWithoutADevice) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(cuda::GpuCodec::Create(nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace qaqkv
