// Early-return helpers for absl::Status, which Debian's abseil lacks.
#ifndef QAQKV_CLIENT_INTERNAL_STATUS_MACROS_H_
#define QAQKV_CLIENT_INTERNAL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QAQKV_STATUS_CONCAT_INNER_(a, b) a##b
#define QAQKV_STATUS_CONCAT_(a, b) QAQKV_STATUS_CONCAT_INNER_(a, b)

#define QAQKV_RETURN_IF_ERROR(expr)                      \
  do {                                                   \
    if (absl::Status qaqkv_status_ = (expr); !qaqkv_status_.ok()) { \
      return qaqkv_status_;                              \
    }                                                    \
  } while (0)

// `lhs` may be a declaration (`auto x`) or an existing variable.
#define QAQKV_ASSIGN_OR_RETURN(lhs, expr) \
  QAQKV_ASSIGN_OR_RETURN_IMPL_(QAQKV_STATUS_CONCAT_(qaqkv_statusor_, __LINE__), lhs, expr)
#define QAQKV_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#endif  // QAQKV_CLIENT_INTERNAL_STATUS_MACROS_H_
