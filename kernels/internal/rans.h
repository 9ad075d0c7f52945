// rANS (range asymmetric numeral systems) entropy coding of small symbols:
// the coder of page format v2's entropy-coded quantizer (entropy_codec.h,
// docs/page-format.md).
//
// - Probabilities are frequencies out of 2^kRansProbBits (4096); every
//   symbol that can occur needs a frequency of at least 1.
// - Each symbol may use its own table (a context), chosen by the caller
//   from what the decoder also knows.
// - `lanes` independent coder states take the symbols in turn (symbol i goes
//   to state i % lanes) and share one byte stream, so a decoder can work on
//   several symbols at once (lanes of a vector, threads of a warp); the
//   encoder and the decoder must use the same count.
// - 32-bit states in [kRansLow, 2^32), renormalized by one 16-bit word at
//   most per symbol: the output is the lanes' final states (4 bytes each,
//   little-endian) followed by the words (little-endian) in the order the
//   decoder reads them. A vector decoder takes consecutive lanes' words from
//   consecutive positions, in lane order.
//
// Decoding never reads outside the given bytes: a stream that ends early, or
// that does not end exactly where its states come back to their start, is
// kDataLoss, so a corrupt page is caught, not decoded into garbage.
//
// Thread-safety: pure functions and immutable tables.
#ifndef QAQKV_KERNELS_INTERNAL_RANS_H_
#define QAQKV_KERNELS_INTERNAL_RANS_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qaqkv::internal {

inline constexpr int kRansProbBits = 12;
inline constexpr uint32_t kRansProbScale = 1u << kRansProbBits;
inline constexpr int kRansMaxLanes = 64;
inline constexpr uint32_t kRansLow = 1u << 16;

// The frequencies of one context: freq[s] out of kRansProbScale, summing to
// it exactly, with the cumulative starts and a slot -> symbol map for decode.
class RansTable {
 public:
  // From counts of each symbol (at most 4096 symbols): frequencies
  // proportional to the counts, every counted symbol at least 1, uncounted
  // symbols 0. Deterministic integer arithmetic: every build of every
  // backend makes the same table from the same counts. kInvalidArgument when
  // nothing was counted or there are more than 4096 symbols.
  static absl::StatusOr<RansTable> FromCounts(std::span<const uint32_t> counts);
  // From frequencies that already sum to kRansProbScale (as read from a
  // page). kInvalidArgument when they do not.
  static absl::StatusOr<RansTable> FromFrequencies(std::span<const uint16_t> freq);

  int symbols() const { return static_cast<int>(freq_.size()); }
  uint32_t freq(int s) const { return freq_[s]; }
  uint32_t start(int s) const { return start_[s]; }
  // The symbol whose range holds `slot` (< kRansProbScale).
  int SymbolAt(uint32_t slot) const { return slot_symbol_[slot]; }

 private:
  std::vector<uint16_t> freq_;
  std::vector<uint32_t> start_;
  std::vector<uint16_t> slot_symbol_;
};

// Encodes symbols[i] under tables[context[i]] (context empty: table 0 for
// every symbol). kInvalidArgument when a symbol has frequency 0 in its table
// or is out of its table's range, a context is out of range, or lanes is not
// in [1, kRansMaxLanes].
absl::StatusOr<std::vector<uint8_t>> RansEncode(std::span<const uint16_t> symbols,
                                                std::span<const uint8_t> context,
                                                std::span<const RansTable> tables, int lanes);

// Decodes a RansEncode stream one symbol at a time, so a caller can choose
// each symbol's table from what it decoded before, and need not hold every
// symbol at once.
class RansDecoder {
 public:
  // Reads the lanes' states. kDataLoss when the stream is shorter than them or
  // a state is out of range; kInvalidArgument for a bad lane count.
  absl::Status Start(std::span<const uint8_t> stream, int lanes);
  // The next symbol under `table` (the one the encoder used for it); false
  // when the stream ends early (the caller reports kDataLoss).
  bool Next(const RansTable& table, uint16_t* symbol);
  // kDataLoss unless the stream was consumed exactly and every lane is back
  // where the encoder started it.
  absl::Status Finish() const;

 private:
  std::span<const uint8_t> stream_;
  size_t at_ = 0;
  int lanes_ = 1;
  int lane_ = 0;
  uint32_t state_[kRansMaxLanes] = {};
};

// Decodes `out.size()` symbols written by RansEncode with the same contexts,
// tables and lanes. kDataLoss when the stream is short, too long, or its
// states do not return to where the encoder started them.
absl::Status RansDecode(std::span<const uint8_t> stream, std::span<const uint8_t> context,
                        std::span<const RansTable> tables, int lanes, std::span<uint16_t> out);

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_RANS_H_
