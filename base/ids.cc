#include "base/ids.h"

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace qaqkv::base {

absl::Status ValidatePrintableId(std::string_view field, std::string_view value,
                                 size_t max_bytes) {
  if (value.empty() || value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(field), ": ", value.size(),
                                                   " bytes, must be 1..", max_bytes));
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat(AsAbsl(field), ": byte ", i, " (0x", absl::Hex(c, absl::kZeroPad2),
                       ") is not printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

}  // namespace qaqkv::base
