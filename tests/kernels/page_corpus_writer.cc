// Writes the frozen corpus of version-1 pages (tests/data/pages-v1): pages
// of every codec and variant, with exact groups, outliers and side inputs,
// and MANIFEST.tsv with the XXH3-64 of what each decodes to. It was run once,
// when version 1 was the current format; page_v1_corpus_test decodes the
// committed files on every CI run, so a later format version cannot stop
// pages already stored from decoding to the same values. Rerunning it under
// a newer encoder would write newer pages: do not regenerate the corpus.
//
// Usage: page_corpus_writer <dir>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/checksum.h"
#include "kernels/codec.h"

namespace {

struct Entry {
  const char* codec;
  qaqkv::PageShape shape;
  bool side;       // QAQ side inputs (attention with unobserved tokens, q2)
  bool nonfinite;  // a NaN and an Inf: exact groups
};

// K and V of the decoded page as fp32 in canonical order [kv_heads][tokens][head_dim].
uint64_t DecodedHash(const std::vector<uint8_t>& page, const qaqkv::PageShape& s, bool keys) {
  std::vector<float> k(s.values()), v(s.values());
  const absl::Status st =
      qaqkv::DecodePage(page, {k.data(), qaqkv::DType::kF32, qaqkv::Layout::kHND},
                        {v.data(), qaqkv::DType::kF32, qaqkv::Layout::kHND}, &s,
                        qaqkv::Backend::kReference);
  if (!st.ok()) {
    std::fprintf(stderr, "decode: %s\n", std::string(st.message()).c_str());
    std::exit(1);
  }
  const std::vector<float>& x = keys ? k : v;
  return qaqkv::PageChecksum(x.data(), x.size() * sizeof(float));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <dir>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const Entry entries[] = {
      {"fp16", {7, 3, 40}, false, true},
      {"int8", {33, 2, 64}, false, false},
      {"int4", {33, 2, 64}, false, true},
      {"int8-layer", {9, 4, 32}, false, false},
      {"int4-layer", {9, 4, 32}, false, true},
      {"kivi2", {160, 2, 64}, false, false},
      {"kivi2:r=16,g=8", {40, 1, 24}, false, true},
      {"qaq", {64, 2, 64}, true, false},
      {"qaq", {64, 2, 64}, false, true},
      {"qaq:o=0", {48, 2, 128}, true, false},
      {"qaq:o=0.1,b=2-6", {20, 1, 72}, true, true},
      {"qaq-layer", {16, 4, 64}, true, false},
      {"qaq-layer:o=0.05", {16, 8, 40}, true, true},
      {"qaq-cs:s=5e-4,x=2e-4,o=0", {256, 2, 64}, true, false},
      {"qaq-cc:s=1e-4,x=1e-2,o=0", {256, 2, 128}, true, false},
      {"qaq-cs-cc", {32, 2, 64}, true, true},
      {"qaq-layer-cs", {12, 2, 256}, true, false},
      {"qaq:s=1e-3,x=1e-3,o=0,b=0-8", {1, 1, 1}, false, false},
      {"int4", {1, 1, 300}, false, false},
  };
  std::mt19937 rng(20261206);
  std::normal_distribution<float> n(0, 1);
  std::ofstream manifest(dir + "/MANIFEST.tsv");
  manifest << "# file\tcodec\ttokens\tkv_heads\thead_dim\tbytes\tk_xxh3\tv_xxh3\n";
  int index = 0;
  for (const Entry& e : entries) {
    auto cfg = qaqkv::ParseCodecConfig(e.codec);
    if (!cfg.ok()) return 1;
    const qaqkv::PageShape& s = e.shape;
    // Keys with two constant-offset channels (what -cc and -cs are for),
    // values with a few heavy tails.
    std::vector<float> k(s.values()), v(s.values());
    for (int t = 0; t < s.tokens; ++t)
      for (int h = 0; h < s.kv_heads; ++h)
        for (int d = 0; d < s.head_dim; ++d) {
          const size_t i = (size_t(t) * s.kv_heads + h) * s.head_dim + d;
          k[i] = n(rng) + (d % 17 == 3 ? 6.0f : 0.0f);
          v[i] = n(rng) * (rng() % 50 == 0 ? 8.0f : 1.0f);
        }
    if (e.nonfinite) {
      k[k.size() / 2] = std::numeric_limits<float>::quiet_NaN();
      v[v.size() - 1] = -std::numeric_limits<float>::infinity();
    }
    std::vector<float> att(size_t(s.tokens) * s.kv_heads), q2(s.kv_heads);
    for (size_t i = 0; i < att.size(); ++i) {
      att[i] = i % 7 == 0 ? -1.0f : std::pow(10.0f, -4.0f * std::uniform_real_distribution<float>(0, 1)(rng));
    }
    for (float& q : q2) q = 0.5f + std::uniform_real_distribution<float>(0, 20)(rng);
    qaqkv::QaqSideInputs side;
    if (e.side) {
      side.attention = att;
      side.q2 = q2;
      side.context_tokens = 4 * s.tokens;
    }
    auto page = qaqkv::EncodePage(*cfg, s, {k.data(), qaqkv::DType::kF32, qaqkv::Layout::kNHD},
                                  {v.data(), qaqkv::DType::kF32, qaqkv::Layout::kNHD}, side,
                                  qaqkv::Backend::kReference);
    if (!page.ok()) {
      std::fprintf(stderr, "%s: %s\n", e.codec, std::string(page.status().message()).c_str());
      return 1;
    }
    char name[32];
    std::snprintf(name, sizeof(name), "%02d.page", index++);
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(page->data()), static_cast<std::streamsize>(page->size()));
    char line[256];
    std::snprintf(line, sizeof(line), "%s\t%s\t%d\t%d\t%d\t%zu\t%016llx\t%016llx\n", name,
                  cfg->Name().c_str(), s.tokens, s.kv_heads, s.head_dim, page->size(),
                  static_cast<unsigned long long>(DecodedHash(*page, s, true)),
                  static_cast<unsigned long long>(DecodedHash(*page, s, false)));
    manifest << line;
    if (!out || !manifest) {
      std::fprintf(stderr, "cannot write %s\n", name);
      return 1;
    }
  }
  std::printf("wrote %d version-1 pages to %s\n", index, dir.c_str());
  return 0;
}
