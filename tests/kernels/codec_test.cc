#include "kernels/codec.h"

#include <random>

#include "gtest/gtest.h"
#include "kernels/internal/half.h"

namespace qaqkv {
namespace {

TEST(CodecSmoke, RoundTripAllCodecs) {
  const PageShape shape{67, 2, 64};
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0, 1);
  std::vector<uint16_t> k(shape.values()), v(shape.values());
  for (auto& x : k) x = internal::FloatToHalf(n(rng));
  for (auto& x : v) x = internal::FloatToHalf(n(rng));
  for (const char* name : {"fp16", "int8", "int4", "kivi2", "kivi2:r=32", "qaq", "qaq-layer", "qaq-cs"}) {
    auto cfg = ParseCodecConfig(name);
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto page = EncodePage(*cfg, shape, {k.data()}, {v.data()});
    ASSERT_TRUE(page.ok()) << name << page.status();
    std::vector<float> kd(shape.values()), vd(shape.values());
    ASSERT_TRUE(DecodePage(*page, {kd.data(), DType::kF32}, {vd.data(), DType::kF32}).ok());
    double err = 0, ref = 0;
    for (size_t i = 0; i < kd.size(); ++i) {
      const double a = internal::HalfToFloat(k[i]);
      err += (kd[i] - a) * (kd[i] - a);
      ref += a * a;
    }
    auto st = ComputePageStats(*page);
    ASSERT_TRUE(st.ok());
    printf("%-12s bytes=%zu ratio=%.3f relerr=%.4f\n", name, page->size(), st->ratio(),
           std::sqrt(err / ref));
  }
}

}  // namespace
}  // namespace qaqkv
