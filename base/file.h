// Whole-file reads and writes with errors that name the file and the
// setting it came from.
#ifndef QAQKV_BASE_FILE_H_
#define QAQKV_BASE_FILE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace qaqkv::base {

// The bytes of `path`. `field` names where the path came from ("--tls-cert")
// and prefixes the message. kNotFound when the file does not exist,
// kPermissionDenied when it cannot be opened for reading, kInvalidArgument
// when it is a directory, kUnavailable for a read error.
absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view field);

// What tells one version of a file from the next: its modification time,
// size and inode (a Kubernetes Secret volume swaps a symlink, an editor
// renames a new file in). All zero when the file cannot be stat'ed.
struct FileVersion {
  int64_t mtime_ns = 0, size = 0;
  uint64_t inode = 0;
  bool operator==(const FileVersion&) const = default;
};
FileVersion FileVersionOf(const std::string& path);

// Writes `contents` to `path` so that a reader sees the old file or the new
// one, never a part: written to `path`.tmp, then renamed over `path`.
// kUnavailable (kPermissionDenied when not allowed) naming `field`, the path
// and the reason; nothing is left behind on failure.
absl::Status WriteFileAtomically(const std::string& path, std::string_view contents,
                                 std::string_view field);

// Whether files in `dir` (created if missing) can be opened with O_DIRECT:
// false when the file system refuses it (tmpfs, some FUSE and network file
// systems); kUnavailable naming `field` when `dir` cannot be created or
// written at all. Probes with a file it removes again.
absl::StatusOr<bool> DirectIoSupported(const std::string& dir, std::string_view field);

// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes (on every return path of its
// owner), unless Keep() was called, for example to leave a failed run's logs.
// Directories inside that were left without write permission are removed
// too: the destructor gives it back first.
class TempDir {
 public:
  // `prefix` starts the directory's name ("qaqkv-bench"). kUnavailable
  // (kPermissionDenied when not allowed) naming the parent on failure.
  static absl::StatusOr<TempDir> Create(std::string_view prefix);
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  void Keep() { keep_ = true; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;  // empty once moved from
  bool keep_ = false;
};

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_FILE_H_
