// Writes valid pages of every codec (several shapes, dtypes, side inputs and
// non-finite values) into a directory, as the seed corpus of
// page_decode_fuzzer. Usage: page_seed_writer <dir>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/codec.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const char* const codecs[] = {"fp16",      "int8",         "int4",        "int8-layer",
                                "int4-layer", "kivi2",       "kivi2:r=2,g=4", "qaq",
                                "qaq:o=0",   "qaq:o=0.1,b=2-6", "qaq-layer", "qaq-cs", "qaq-cc",
                                "qaq-layer-cs", "qaq-rh", "qaq-layer-cc-rh:o=0.1", "int4-rh", "qaq-ec:o=0",
                                "qaq-ec-rh:s=1e-2,x=1e-2,o=0"};
  const qaqkv::PageShape shapes[] = {{1, 1, 1}, {3, 1, 8}, {6, 2, 16}, {9, 1, 32}, {2, 2, 160}};
  std::mt19937 rng(20240304);
  std::normal_distribution<float> n(0, 1);
  int written = 0;
  for (const char* codec : codecs) {
    auto cfg = qaqkv::ParseCodecConfig(codec);
    if (!cfg.ok()) {
      std::fprintf(stderr, "%s: %s\n", codec, std::string(cfg.status().message()).c_str());
      return 1;
    }
    int variant = 0;
    for (const qaqkv::PageShape& s : shapes) {
      std::vector<float> k(s.values()), v(s.values());
      for (auto& x : k) x = n(rng);
      for (auto& x : v) x = n(rng) * 3;
      if (variant % 2 == 1) {  // exact groups
        k[0] = std::numeric_limits<float>::quiet_NaN();
        v[v.size() - 1] = -std::numeric_limits<float>::infinity();
      }
      std::vector<float> att(size_t(s.tokens) * s.kv_heads), q2(s.kv_heads, 0.5f);
      for (size_t i = 0; i < att.size(); ++i) att[i] = i % 3 == 0 ? -1.0f : 1.0f / (1 + i);
      qaqkv::QaqSideInputs side;
      if (cfg->kind == qaqkv::CodecKind::kQaq && variant % 2 == 0) {
        side.attention = att;
        side.q2 = q2;
      }
      auto page = qaqkv::EncodePage(*cfg, s, {k.data(), qaqkv::DType::kF32},
                                    {v.data(), qaqkv::DType::kF32}, side);
      if (!page.ok()) {
        std::fprintf(stderr, "%s: %s\n", codec, std::string(page.status().message()).c_str());
        return 1;
      }
      std::string name = codec;
      for (char& c : name) {
        if (c == ':' || c == ',' || c == '=') c = '_';
      }
      const std::string path = dir + "/" + name + "-" + std::to_string(variant++) + ".page";
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(page->data()), static_cast<std::streamsize>(page->size()));
      if (!out) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return 1;
      }
      ++written;
    }
  }
  std::printf("wrote %d seed pages to %s\n", written, dir.c_str());
  return 0;
}
