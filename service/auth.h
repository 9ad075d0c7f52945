// Bearer tokens to tenants. The token file has one `<token> <tenant>` pair
// per line; blank lines and lines starting with '#' are skipped. Kubernetes
// mounts the same file from a Secret.
#ifndef QAQKV_SERVICE_AUTH_H_
#define QAQKV_SERVICE_AUTH_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

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
  size_t size() const { return tenants_.size(); }

 private:
  absl::flat_hash_map<std::string, std::string> tenants_;  // token -> tenant
};

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_AUTH_H_
