// Debian's abseil (20220623) is built with its own absl::string_view, not an
// alias of std::string_view; these convert between the two at no cost.
#ifndef QAQKV_BASE_STRINGS_H_
#define QAQKV_BASE_STRINGS_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace qaqkv::base {

inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view AsStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_STRINGS_H_
