// The one boundary where rocksdb::Status becomes absl::Status.
#ifndef QAQKV_STORAGE_INTERNAL_ROCKSDB_STATUS_H_
#define QAQKV_STORAGE_INTERNAL_ROCKSDB_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/status.h"

namespace qaqkv::storage::internal {

// `what` names the operation, for the message.
inline absl::Status FromRocksDb(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg =
      absl::StrCat("rocksdb ", absl::string_view(what.data(), what.size()), ": ", s.ToString());
  switch (s.code()) {
    case rocksdb::Status::kNotFound: return absl::NotFoundError(msg);
    case rocksdb::Status::kCorruption: return absl::DataLossError(msg);
    case rocksdb::Status::kInvalidArgument: return absl::InvalidArgumentError(msg);
    case rocksdb::Status::kNotSupported: return absl::UnimplementedError(msg);
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTryAgain: return absl::UnavailableError(msg);
    case rocksdb::Status::kTimedOut: return absl::DeadlineExceededError(msg);
    case rocksdb::Status::kAborted: return absl::AbortedError(msg);
    case rocksdb::Status::kShutdownInProgress: return absl::UnavailableError(msg);
    case rocksdb::Status::kIOError:
      // A full disk is a resource problem the caller can act on.
      if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
      return absl::UnavailableError(msg);
    default: return absl::InternalError(msg);
  }
}

}  // namespace qaqkv::storage::internal

#endif  // QAQKV_STORAGE_INTERNAL_ROCKSDB_STATUS_H_
