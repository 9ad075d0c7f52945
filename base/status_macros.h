// The project's one set of early-return helpers for absl::Status (Debian's
// abseil has none). Every folder uses these; no other spelling.
//
//   QAQKV_RETURN_IF_ERROR(store.Put(...));
//   QAQKV_ASSIGN_OR_RETURN(auto record, store.GetBlock(...));
//   QAQKV_ASSIGN_OR_RETURN(existing_variable, Parse(...));
//
// Both return the error unchanged. To add context, write the check out and
// return a status that keeps the code (see base::Annotate).
#ifndef QAQKV_BASE_STATUS_MACROS_H_
#define QAQKV_BASE_STATUS_MACROS_H_

#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define QAQKV_STATUS_CONCAT_INNER_(a, b) a##b
#define QAQKV_STATUS_CONCAT_(a, b) QAQKV_STATUS_CONCAT_INNER_(a, b)

#define QAQKV_RETURN_IF_ERROR(expr)                                 \
  do {                                                              \
    if (::absl::Status qaqkv_status_ = (expr); !qaqkv_status_.ok()) \
      return qaqkv_status_;                                         \
  } while (0)

// `lhs` may be a declaration (`auto x`, `const Foo x`) or an existing
// variable. Expands to more than one statement: not for an unbraced `if`.
#define QAQKV_ASSIGN_OR_RETURN(lhs, expr) \
  QAQKV_ASSIGN_OR_RETURN_IMPL_(QAQKV_STATUS_CONCAT_(qaqkv_statusor_, __LINE__), lhs, expr)
#define QAQKV_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)          \
  auto tmp = (expr);                                          \
  if (!tmp.ok()) return std::move(tmp).status();              \
  lhs = std::move(tmp).value()

namespace qaqkv::base {

// `s` with `context: ` in front of its message and the same code; OK stays
// OK. For errors that should name where they happened ("pages[3]: ...").
inline absl::Status Annotate(const absl::Status& s, std::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(absl::string_view(context.data(), context.size()),
                                             ": ", s.message()));
}

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_STATUS_MACROS_H_
