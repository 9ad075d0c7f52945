// Names a client chooses (session ids, transfer ids) and tenant names: the
// one check both ends apply, so a name one client may store, every client
// may read back.
#ifndef QAQKV_BASE_IDS_H_
#define QAQKV_BASE_IDS_H_

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace qaqkv::base {

// OK when `value` is 1..max_bytes bytes of printable ASCII (0x21..0x7e, no
// spaces); kInvalidArgument naming `field` and the first bad byte otherwise.
absl::Status ValidatePrintableId(std::string_view field, std::string_view value,
                                 size_t max_bytes);

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_IDS_H_
