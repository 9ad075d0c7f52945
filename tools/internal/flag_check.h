// Range checks of numeric command-line flags, so that every subcommand
// rejects bad numbers up front (before it generates data, connects or
// allocates) with one wording: "--flag: must be ..., got X".
//
// The checks take doubles so that NaN fails them: every comparison with NaN
// is false, so each check is written as "not inside" rather than "outside".
#ifndef QAQKV_TOOLS_INTERNAL_FLAG_CHECK_H_
#define QAQKV_TOOLS_INTERNAL_FLAG_CHECK_H_

#include <initializer_list>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace qaqkv::tools {

// A flag's number as the user would write it: 1048576, not 1.04858e+06.
inline std::string FlagNumber(double v) { return absl::StrFormat("%.15g", v); }

// kInvalidArgument naming `flag` unless lo <= value <= hi.
inline absl::Status CheckRange(absl::string_view flag, double value, double lo,
                               double hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(flag, ": must be in ", FlagNumber(lo),
                                                 "..", FlagNumber(hi), ", got ",
                                                 FlagNumber(value)));
}

// kInvalidArgument naming `flag` unless value >= lo (and finite).
inline absl::Status CheckAtLeast(absl::string_view flag, double value, double lo) {
  if (value >= lo && value <= std::numeric_limits<double>::max()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": must be >= ", FlagNumber(lo), ", got ", FlagNumber(value)));
}

// kInvalidArgument naming `flag` unless value > 0 (and finite).
inline absl::Status CheckPositive(absl::string_view flag, double value) {
  if (value > 0 && value <= std::numeric_limits<double>::max()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": must be > 0, got ", FlagNumber(value)));
}

// The first failed check of several, or OK.
inline absl::Status FirstError(std::initializer_list<absl::Status> checks) {
  for (const absl::Status& s : checks) QAQKV_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_INTERNAL_FLAG_CHECK_H_
