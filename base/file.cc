#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/strings.h"

namespace qaqkv::base {
namespace {

absl::Status ErrnoError(int err, std::string_view field, const std::string& path,
                        std::string_view what) {
  const std::string msg =
      absl::StrCat(AsAbsl(field), ": cannot ", AsAbsl(what), " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR: return absl::NotFoundError(msg);
    case EACCES:
    case EPERM: return absl::PermissionDeniedError(msg);
    case EISDIR: return absl::InvalidArgumentError(msg);
    case ENOSPC:
    case EDQUOT: return absl::ResourceExhaustedError(msg);
    default: return absl::UnavailableError(msg);
  }
}

// Closes the descriptor on every path out.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close's error (a delayed write error shows here).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Gives the owner write and search permission on `dir` and on every
// directory under it, so that everything in them can be unlinked. Symlinks
// are not followed: only what is inside `dir` changes.
void MakeRemovable(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::add, ec);
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code type_ec;
    if (it->symlink_status(type_ec).type() == std::filesystem::file_type::directory) {
      MakeRemovable(it->path());
    }
  }
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view field) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, field, path, "read");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, field, path, "read");
  if (S_ISDIR(st.st_mode)) return ErrnoError(EISDIR, field, path, "read");
  std::string out;
  if (S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, field, path, "read");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<bool> DirectIoSupported(const std::string& dir, std::string_view field) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoError(ec.value(), field, dir, "create");
  const std::string probe = absl::StrCat(dir, "/.direct-io-probe-", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(probe.c_str());
    return true;
  }
  const int err = errno;
  // Linux answers EINVAL for a file system without O_DIRECT, having
  // created the file first.
  if (err == EINVAL) {
    ::unlink(probe.c_str());
    return false;
  }
  return ErrnoError(err, field, probe, "create");
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view contents,
                                 std::string_view field) {
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError(errno, field, path, "write");
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoError(err, field, path, "write");
    }
    done += static_cast<size_t>(n);
  }
  if (fd.Close() != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, field, path, "write");
  }
  return absl::OkStatus();
}

absl::StatusOr<TempDir> TempDir::Create(std::string_view prefix) {
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::temp_directory_path(ec);
  if (ec) return absl::UnavailableError(absl::StrCat("temporary directory: ", ec.message()));
  std::string tmpl = (parent / absl::StrCat(AsAbsl(prefix), "-XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoError(errno, "temporary directory", parent.string(), "create a directory in");
  }
  return TempDir(std::move(tmpl));
}

TempDir::TempDir(TempDir&& other) noexcept
    : path_(std::exchange(other.path_, std::string())), keep_(other.keep_) {}

TempDir::~TempDir() {
  if (path_.empty() || keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (!ec) return;
  // Tests take write permission from a directory in here to provoke errors;
  // its entries cannot be unlinked until it is given back.
  MakeRemovable(path_);
  std::filesystem::remove_all(path_, ec);
}

FileVersion FileVersionOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return FileVersion{};
  return FileVersion{int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                     int64_t(st.st_size), uint64_t(st.st_ino)};
}

}  // namespace qaqkv::base
