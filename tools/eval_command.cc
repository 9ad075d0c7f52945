#include <cstdio>

#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "kernels/codec.h"
#include "tools/commands.h"
#include "tools/eval/evaluator.h"
#include "tools/eval/kv_source.h"
#include "tools/internal/flag_check.h"
#include "tools/internal/report.h"

namespace qaqkv::tools {

std::vector<std::string> DefaultCodecs() {
  return {
      "fp16",
      "int8",
      "int4",
      "kivi2",
      "kivi2:r=32",
      "qaq:s=1e-3,x=1e-3,o=0.01",      // plain QAQ, docs/qaq.md defaults (1% outliers)
      "qaq:s=1e-3,x=1e-3,o=0.01,w=1",  // ablation: window n = 1
      "qaq:s=1e-3,x=1e-3,o=0",         // ablation: no outliers
      "qaq:s=5e-4,x=2e-4,o=0",
      "qaq-layer:s=5e-4,x=2e-4,o=0",
      "qaq-cs:s=5e-4,x=2e-4,o=0",
      "qaq-cc:s=5e-4,x=2e-4,o=0",
      "qaq-cc:s=3e-4,x=2e-2,o=0",
      "qaq-cc:s=5e-4,x=2e-2,o=0",
  };
}

namespace {

std::vector<std::string> SweepCodecs() {
  std::vector<std::string> out = {"fp16", "int8", "int4", "int4-rh", "kivi2", "kivi2:r=32"};
  const char* key_sigmas[] = {"1e-4", "3e-4", "5e-4", "1e-3", "2e-3", "5e-3"};
  const char* value_sigmas[] = {"2e-4", "5e-4", "1e-3", "2e-3", "5e-3", "1e-2", "2e-2", "5e-2"};
  const std::pair<const char*, const char*> variants[] = {
      {"qaq", "0.01"}, {"qaq", "0"},    {"qaq-layer", "0.01"},
      {"qaq-layer", "0"}, {"qaq-cs", "0"}, {"qaq-cc", "0"},
      // Issue 19: widths of at least 3 bits (what the end-task evaluator
      // chose), and the rotated rows of format version 2.
      {"qaq", "0,b=3-8"}, {"qaq-rh", "0"}, {"qaq-cc-rh", "0"},
      // The entropy-coded quantizer, plain and rotated.
      {"qaq-ec", "0"}, {"qaq-ec-rh", "0"}};
  for (const auto& [base, o] : variants)
    for (const char* s : key_sigmas)
      for (const char* x : value_sigmas) out.push_back(absl::StrCat(base, ":s=", s, ",x=", x, ",o=", o));
  return out;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "qaqkv eval: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int RunEval(const EvalArgs& args) {
  Format format;
  if (!ParseFormat(args.format, &format)) return Fail("--format: expected table, csv or json");
  // Before any KV is generated or loaded. A negative count used to mean
  // "all" (or a thread pool of one) without a word.
  if (absl::Status st = FirstError({CheckRange("--tokens", args.tokens, 1, 1 << 20),
                                    CheckRange("--layers", args.layers, 0, 1 << 16),
                                    CheckRange("--max-queries", args.max_queries, 0, 1 << 20),
                                    CheckRange("--page-tokens", args.page_tokens, 0, 1 << 20),
                                    CheckRange("--threads", args.threads, 1, 1024)});
      !st.ok()) {
    return Fail(std::string(st.message()));
  }
  std::vector<std::string> names = args.sweep ? SweepCodecs() : DefaultCodecs();
  if (!args.codecs.empty()) {
    names.clear();
    for (const std::string& arg : args.codecs)
      for (absl::string_view n : absl::StrSplit(arg, absl::ByAnyChar("; "), absl::SkipEmpty()))
        names.emplace_back(n);
  }
  std::vector<CodecConfig> configs;
  for (const std::string& n : names) {
    auto c = ParseCodecConfig(n);
    if (!c.ok()) return Fail(std::string(c.status().message()));
    configs.push_back(*c);
  }
  std::vector<eval::KvSample> samples;
  if (!args.synthetic.empty()) {
    if (!args.paths.empty()) return Fail("give input paths or --synthetic, not both");
    eval::SyntheticOptions so;
    so.geometry = args.synthetic;
    so.tokens = args.tokens;
    so.seed = args.seed;
    so.max_layers = args.layers;
    // The generator clamps max_layers to the geometry: a --layers beyond it
    // would silently evaluate every layer.
    if (auto g = eval::FindGeometry(args.synthetic); g.ok() && args.layers > g->num_layers) {
      return Fail(absl::StrCat("--layers: ", args.synthetic, " has ", g->num_layers,
                               " layers, got ", args.layers));
    }
    auto s = eval::GenerateSynthetic(so);
    if (!s.ok()) return Fail(std::string(s.status().message()));
    samples.push_back(std::move(*s));
  } else {
    if (args.paths.empty()) return Fail("no input: give safetensors files or directories, or --synthetic GEOMETRY");
    for (const std::string& p : args.paths) {
      auto loaded = eval::LoadSafetensorsPath(p);
      if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
      for (auto& s : *loaded) {
        if (args.layers > s.num_layers) {
          return Fail(absl::StrCat("--layers: ", s.name, " has ", s.num_layers, " layers, got ",
                                   args.layers));
        }
        if (args.layers > 0 && s.num_layers > args.layers) {
          s.layers.resize(args.layers);
          s.num_layers = args.layers;
        }
        samples.push_back(std::move(s));
      }
    }
  }
  eval::EvalOptions opt;
  opt.max_queries = args.max_queries;
  opt.page_tokens = args.page_tokens;
  opt.threads = args.threads;
  Progress progress("eval");
  opt.progress = [&](int64_t d, int64_t t) { progress.Update(d, t); };
  auto results = eval::Evaluate(samples, configs, opt);
  if (!results.ok()) return Fail(std::string(results.status().message()));

  std::vector<std::string> cols = {"codec",       "config",       "bits_per_value", "ratio",
                                   "ratio_paper", "out_rel_err",  "attn_kl",        "top8"};
  if (args.per_layer) cols.insert(cols.begin() + 2, "layer");
  Report report(cols);
  for (const auto& r : *results) {
    auto row = [&](const std::string& layer, const eval::Metrics& m) {
      std::vector<Cell> cells = {{r.codec}, {r.config}, {r.bits_per_value, 3}, {r.ratio, 3},
                                 {r.ratio_paper, 3}, {m.out_rel_err, 5}, {m.attn_kl, 6},
                                 {m.top8, 4}};
      if (args.per_layer) cells.insert(cells.begin() + 2, Cell{layer});
      report.Add(std::move(cells));
    };
    row("all", r.metrics);
    if (args.per_layer) {
      for (size_t l = 0; l < r.per_layer.size(); ++l) row(std::to_string(l), r.per_layer[l]);
    }
  }
  if (format == Format::kTable) {
    std::printf("# %zu sample(s), first 75%% of tokens cached; errors on held-out queries\n",
                samples.size());
  }
  report.Print(format);
  return 0;
}

}  // namespace qaqkv::tools
