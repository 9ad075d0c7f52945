// Bearer tokens to tenants. The token file has one `<token> <tenant>` pair
// per line; blank lines and lines starting with '#' are skipped. Kubernetes
// mounts the same file from a Secret.
#ifndef QAQKV_SERVICE_AUTH_H_
#define QAQKV_SERVICE_AUTH_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/reloading_files.h"

namespace qaqkv::service {

// The tenant of a server that runs without a token file.
inline constexpr std::string_view kDefaultTenant = "default";

class TokenMap {
 public:
  // kInvalidArgument naming the line for a malformed line, an invalid
  // tenant, or a token given twice; as base::ReadFile when the file cannot
  // be read (kNotFound, kPermissionDenied, kInvalidArgument for a
  // directory), the message naming the path.
  static absl::StatusOr<TokenMap> Load(const std::string& path);
  static absl::StatusOr<TokenMap> Parse(std::string_view text, std::string_view origin);

  // The tenant of the value of an `authorization` header ("Bearer <token>",
  // scheme case-insensitive); kUnauthenticated otherwise. The message never
  // echoes the token.
  absl::StatusOr<std::string> TenantFor(std::string_view authorization) const;

  // Every tenant that has a token, sorted, without duplicates.
  std::vector<std::string> Tenants() const;
  // Every tenant with its tokens (two during a rotation), sorted by tenant
  // then token: what a tool acting for each tenant in turn needs.
  std::vector<std::pair<std::string, std::vector<std::string>>> TokensByTenant() const;
  size_t size() const { return tenants_.size(); }

 private:
  absl::flat_hash_map<std::string, std::string> tenants_;  // token -> tenant
};

// The token file as the server serves it: loaded at start, and loaded again
// by Reload when it changed (its modification time, size or inode: a
// Kubernetes Secret volume swaps a symlink, an editor renames a new file in),
// so a rotated token takes effect without a restart. A file that no longer
// parses is refused and the tokens loaded before stay in force.
//
// Thread-safety: every method may be called concurrently.
class TokenFile {
 public:
  // As TokenMap::Load.
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(std::string path);

  absl::StatusOr<std::string> TenantFor(std::string_view authorization) const;
  std::vector<std::string> Tenants() const;
  // True when the file changed and its new tokens are in force; false when
  // it did not change; the parse or read error when it changed into
  // something unusable (the old tokens stay).
  absl::StatusOr<bool> Reload();

  struct Token {};
  TokenFile(Token, std::unique_ptr<base::ReloadingFiles<TokenMap>> files)
      : files_(std::move(files)) {}

 private:
  const std::unique_ptr<base::ReloadingFiles<TokenMap>> files_;
};

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_AUTH_H_
