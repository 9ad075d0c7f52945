#include "kernels/internal/rans.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/internal/page_format.h"

namespace qaqkv::internal {
namespace {

// States live in [kLow, kLow << 16): the decoder reads a 16-bit word
// whenever its state drops below kLow, at most once per symbol (a state of
// at least kLow keeps at least kLow >> kRansProbBits after a symbol), so a
// vector of lanes knows its reads from one compare. Both ends start and
// finish a lane at kLow.
constexpr uint32_t kLow = kRansLow;

absl::Status CheckSymbolCount(size_t n) {
  if (n == 0 || n > kRansProbScale) {
    return absl::InvalidArgumentError(
        absl::StrCat("rans: ", n, " symbols, expected 1..", kRansProbScale));
  }
  return absl::OkStatus();
}

absl::Status CheckLanes(int lanes) {
  if (lanes < 1 || lanes > kRansMaxLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rans: ", lanes, " lanes, expected 1..", kRansMaxLanes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RansTable> RansTable::FromCounts(std::span<const uint32_t> counts) {
  QAQKV_RETURN_IF_ERROR(CheckSymbolCount(counts.size()));
  uint64_t total = 0;
  for (uint32_t c : counts) total += c;
  if (total == 0) return absl::InvalidArgumentError("rans: no symbol was counted");
  const size_t n = counts.size();
  std::vector<uint16_t> freq(n, 0);
  // Proportional shares rounded down, at least 1 for every counted symbol;
  // then the remainder (or the excess) goes to (comes from) the largest
  // frequencies, one at a time, lowest symbol first on ties.
  int64_t sum = 0;
  for (size_t s = 0; s < n; ++s) {
    if (counts[s] == 0) continue;
    const uint64_t share = uint64_t{counts[s]} * kRansProbScale / total;
    freq[s] = static_cast<uint16_t>(std::max<uint64_t>(1, share));
    sum += freq[s];
  }
  std::vector<uint32_t> order;
  for (size_t s = 0; s < n; ++s)
    if (counts[s] > 0) order.push_back(static_cast<uint32_t>(s));
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return counts[a] > counts[b]; });
  for (size_t i = 0; sum < int64_t{kRansProbScale}; i = (i + 1) % order.size()) {
    ++freq[order[i]];
    ++sum;
  }
  // Taking back: never below 1 (present <= 4096 symbols, so this ends).
  for (size_t i = 0; sum > int64_t{kRansProbScale}; i = (i + 1) % order.size()) {
    if (freq[order[i]] > 1) {
      --freq[order[i]];
      --sum;
    }
  }
  return FromFrequencies(freq);
}

absl::StatusOr<RansTable> RansTable::FromFrequencies(std::span<const uint16_t> freq) {
  QAQKV_RETURN_IF_ERROR(CheckSymbolCount(freq.size()));
  uint32_t sum = 0;
  for (uint16_t f : freq) sum += f;
  if (sum != kRansProbScale) {
    return absl::InvalidArgumentError(
        absl::StrCat("rans: frequencies sum to ", sum, ", expected ", kRansProbScale));
  }
  RansTable t;
  t.freq_.assign(freq.begin(), freq.end());
  t.start_.resize(freq.size());
  t.slot_symbol_.resize(kRansProbScale);
  uint32_t at = 0;
  for (size_t s = 0; s < freq.size(); ++s) {
    t.start_[s] = at;
    for (uint32_t j = 0; j < freq[s]; ++j) t.slot_symbol_[at + j] = static_cast<uint16_t>(s);
    at += freq[s];
  }
  return t;
}

namespace {

absl::Status CheckArgs(size_t symbols, std::span<const uint8_t> context,
                       std::span<const RansTable> tables, int lanes) {
  QAQKV_RETURN_IF_ERROR(CheckLanes(lanes));
  if (tables.empty()) return absl::InvalidArgumentError("rans: no table");
  if (!context.empty() && context.size() != symbols) {
    return absl::InvalidArgumentError(absl::StrCat("rans: ", context.size(), " contexts for ",
                                                   symbols, " symbols"));
  }
  for (uint8_t c : context) {
    if (c >= tables.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rans: context ", c, " of ", tables.size(), " tables"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> RansEncode(std::span<const uint16_t> symbols,
                                                std::span<const uint8_t> context,
                                                std::span<const RansTable> tables, int lanes) {
  QAQKV_RETURN_IF_ERROR(CheckLanes(lanes));
  if (tables.empty()) return absl::InvalidArgumentError("rans: no table");
  if (!context.empty() && context.size() != symbols.size()) {
    return absl::InvalidArgumentError(absl::StrCat("rans: ", context.size(), " contexts for ",
                                                   symbols.size(), " symbols"));
  }
  // Every (table, symbol) once, with x / freq as a multiply: m = ceil(2^44 /
  // freq) gives floor(x m / 2^44) = floor(x / freq) for every x < 2^32, as
  // m freq - 2^44 < freq <= 2^12 = 2^(44 - 32) (Granlund and Montgomery).
  struct Entry {
    uint64_t rcp = 0;
    uint32_t freq = 0, start = 0;
  };
  int width = 0;
  for (const RansTable& t : tables) width = std::max(width, t.symbols());
  std::vector<Entry> entries(tables.size() * size_t(width));
  for (size_t k = 0; k < tables.size(); ++k)
    for (int sym = 0; sym < tables[k].symbols(); ++sym) {
      Entry& e = entries[k * width + sym];
      e.freq = tables[k].freq(sym);
      e.start = tables[k].start(sym);
      if (e.freq > 0) e.rcp = ((uint64_t{1} << 44) + e.freq - 1) / e.freq;
    }
  uint32_t state[kRansMaxLanes];
  std::fill(state, state + lanes, kLow);
  // rANS is last in, first out: encode from the last symbol back, writing
  // words back to front, so the decoder reads forward in symbol order. The
  // renormalization is branch-free (it is taken at random, about once per
  // 16 bits of output): every symbol stores a word at `w`, and only a
  // renormalizing one moves `w` on, so words[w + 1, n] are the output.
  const size_t n = symbols.size();
  std::vector<uint16_t> words(n + 1);
  size_t w = n;
  int lane = n == 0 ? 0 : static_cast<int>((n - 1) % lanes);
  for (size_t i = n; i-- > 0;) {
    const uint32_t k = context.empty() ? 0 : context[i];
    if (k >= tables.size()) {
      return absl::InvalidArgumentError(absl::StrCat("rans: context ", k, " of ", tables.size(), " tables"));
    }
    const uint16_t s = symbols[i];
    const Entry e = s < width ? entries[k * width + s] : Entry{};
    if (e.freq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rans: symbol ", s, " at ", i, " has no frequency in its table"));
    }
    uint32_t x = state[lane];
    // Once is enough: x < 2^32 and the bound is at least 2^20.
    const uint32_t renorm = x >= ((kLow >> kRansProbBits) << 16) * e.freq;
    words[w] = static_cast<uint16_t>(x);
    w -= renorm;
    x >>= renorm * 16;
    const uint32_t q = static_cast<uint32_t>((static_cast<unsigned __int128>(x) * e.rcp) >> 44);
    state[lane] = (q << kRansProbBits) + (x - q * e.freq) + e.start;
    lane = lane == 0 ? lanes - 1 : lane - 1;
  }
  // The states go first (lane 0 first, little-endian), then the words
  // (little-endian) in the order the decoder wants them.
  std::vector<uint8_t> out(size_t(lanes) * 4 + (n - w) * 2);
  for (int l = 0; l < lanes; ++l) PutU32(out.data() + l * 4, state[l]);
  uint8_t* o = out.data() + size_t(lanes) * 4;
  for (size_t i = w + 1; i <= n; ++i, o += 2) PutU16(o, words[i]);
  return out;
}

absl::Status RansDecoder::Start(std::span<const uint8_t> stream, int lanes) {
  QAQKV_RETURN_IF_ERROR(CheckLanes(lanes));
  if (stream.size() < size_t(lanes) * 4) {
    return absl::DataLossError(absl::StrCat("rans: stream of ", stream.size(),
                                            " bytes is shorter than its ", lanes, " states"));
  }
  stream_ = stream;
  lanes_ = lanes;
  lane_ = 0;
  for (int l = 0; l < lanes; ++l) {
    state_[l] = GetU32(stream.data() + l * 4);
    if (state_[l] < kLow) return absl::DataLossError("rans: a lane starts below its range");
  }
  at_ = size_t(lanes) * 4;
  return absl::OkStatus();
}

bool RansDecoder::Next(const RansTable& t, uint16_t* symbol) {
  uint32_t& x = state_[lane_];
  lane_ = lane_ + 1 == lanes_ ? 0 : lane_ + 1;
  const uint32_t slot = x & (kRansProbScale - 1);
  // Every slot maps to a symbol of nonzero frequency (FromFrequencies).
  const int s = t.SymbolAt(slot);
  *symbol = static_cast<uint16_t>(s);
  x = t.freq(s) * (x >> kRansProbBits) + slot - t.start(s);
  if (x < kLow) {
    if (at_ + 2 > stream_.size()) return false;
    x = (x << 16) | GetU16(stream_.data() + at_);
    at_ += 2;
  }
  return true;
}

absl::Status RansDecoder::Finish() const {
  if (at_ != stream_.size()) {
    return absl::DataLossError(
        absl::StrCat("rans: ", stream_.size() - at_, " bytes left after the last symbol"));
  }
  for (int l = 0; l < lanes_; ++l) {
    if (state_[l] != kLow) return absl::DataLossError("rans: a lane does not end where it began");
  }
  return absl::OkStatus();
}

absl::Status RansDecode(std::span<const uint8_t> stream, std::span<const uint8_t> context,
                        std::span<const RansTable> tables, int lanes, std::span<uint16_t> out) {
  if (absl::Status st = CheckArgs(out.size(), context, tables, lanes); !st.ok()) return st;
  RansDecoder d;
  QAQKV_RETURN_IF_ERROR(d.Start(stream, lanes));
  for (size_t i = 0; i < out.size(); ++i) {
    if (!d.Next(tables[context.empty() ? 0 : context[i]], &out[i])) {
      return absl::DataLossError("rans: stream ends early");
    }
  }
  return d.Finish();
}

}  // namespace qaqkv::internal
