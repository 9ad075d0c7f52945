// Pages stored under format version 1 must decode to the same values under
// every later build. tests/data/pages-v1 holds such pages, written once by
// page_corpus_writer, with the XXH3-64 of their decoded values; this test
// decodes each with both CPU backends and compares.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/checksum.h"
#include "kernels/codec.h"

namespace qaqkv {
namespace {

const std::string kDir = std::string(QAQKV_SOURCE_DIR) + "/tests/data/pages-v1";

struct Expected {
  std::string file, codec;
  PageShape shape;
  size_t bytes = 0;
  uint64_t k_hash = 0, v_hash = 0;
};

std::vector<Expected> ReadManifest() {
  std::ifstream in(kDir + "/MANIFEST.tsv");
  std::vector<Expected> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    Expected e;
    std::string kh, vh;
    f >> e.file >> e.codec >> e.shape.tokens >> e.shape.kv_heads >> e.shape.head_dim >> e.bytes >>
        kh >> vh;
    e.k_hash = std::stoull(kh, nullptr, 16);
    e.v_hash = std::stoull(vh, nullptr, 16);
    out.push_back(e);
  }
  return out;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(PageV1Corpus, EveryStoredPageDecodesToItsRecordedValues) {
  const std::vector<Expected> corpus = ReadManifest();
  ASSERT_GE(corpus.size(), 19u) << "manifest missing or short: " << kDir;
  for (const Expected& e : corpus) {
    SCOPED_TRACE(e.file + " " + e.codec);
    const std::vector<uint8_t> page = ReadFile(kDir + "/" + e.file);
    ASSERT_EQ(page.size(), e.bytes);
    auto info = InspectPage(page);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->version, 1);
    auto cfg = ParseCodecConfig(e.codec);
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    EXPECT_EQ(info->kind, cfg->kind);
    EXPECT_TRUE(VerifyPage(page, &*cfg, &e.shape).ok());
    for (Backend b : {Backend::kReference, Backend::kFast}) {
      std::vector<float> k(e.shape.values(), -7.0f), v(e.shape.values(), -7.0f);
      ASSERT_EQ(DecodePage(page, {k.data(), DType::kF32, Layout::kHND},
                           {v.data(), DType::kF32, Layout::kHND}, &e.shape, b),
                absl::OkStatus());
      EXPECT_EQ(PageChecksum(k.data(), k.size() * 4), e.k_hash) << "K, backend " << int(b);
      EXPECT_EQ(PageChecksum(v.data(), v.size() * 4), e.v_hash) << "V, backend " << int(b);
    }
    auto stats = ComputePageStats(page);
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->encoded_bytes, static_cast<int64_t>(e.bytes));
  }
}

}  // namespace
}  // namespace qaqkv
