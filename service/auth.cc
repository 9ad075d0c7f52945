#include "service/auth.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "storage/keys.h"

namespace qaqkv::service {

absl::StatusOr<TokenMap> TokenMap::Load(const std::string& path) {
  QAQKV_ASSIGN_OR_RETURN(const std::string text, base::ReadFile(path, "--auth-tokens"));
  return Parse(text, path);
}

absl::StatusOr<TokenMap> TokenMap::Parse(std::string_view text, std::string_view origin) {
  TokenMap map;
  int line_no = 0;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string where =
        absl::StrCat(absl::string_view(origin.data(), origin.size()), ":", line_no);
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": want `<token> <tenant>`, found ", parts.size(), " fields"));
    }
    const std::string tenant(parts[1]);
    if (absl::Status s = storage::ValidateTenant(tenant); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
    }
    if (!map.tenants_.emplace(std::string(parts[0]), tenant).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": token given twice"));
    }
  }
  if (map.tenants_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(absl::string_view(origin.data(), origin.size()), ": no tokens"));
  }
  return map;
}

absl::StatusOr<std::string> TokenMap::TenantFor(std::string_view authorization) const {
  absl::string_view value(authorization.data(), authorization.size());
  if (value.empty()) return absl::UnauthenticatedError("authorization: missing bearer token");
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError("authorization: not a bearer token");
  }
  value = absl::StripAsciiWhitespace(value.substr(7));
  auto it = tenants_.find(value);
  if (it == tenants_.end()) return absl::UnauthenticatedError("authorization: unknown token");
  return it->second;
}

std::vector<std::string> TokenMap::Tenants() const {
  std::vector<std::string> out;
  for (const auto& [token, tenant] : tenants_) out.push_back(tenant);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::pair<std::string, std::vector<std::string>>> TokenMap::TokensByTenant() const {
  std::vector<std::pair<std::string, std::string>> pairs;  // (tenant, token)
  for (const auto& [token, tenant] : tenants_) pairs.emplace_back(tenant, token);
  std::sort(pairs.begin(), pairs.end());
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (auto& [tenant, token] : pairs) {
    if (out.empty() || out.back().first != tenant) out.emplace_back(tenant, std::vector<std::string>{});
    out.back().second.push_back(std::move(token));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(std::string path) {
  auto load = [path]() -> absl::StatusOr<std::shared_ptr<const TokenMap>> {
    QAQKV_ASSIGN_OR_RETURN(TokenMap map, TokenMap::Load(path));
    return std::make_shared<const TokenMap>(std::move(map));
  };
  QAQKV_ASSIGN_OR_RETURN(auto files, base::ReloadingFiles<TokenMap>::Open({path}, std::move(load)));
  return std::make_unique<TokenFile>(Token(), std::move(files));
}

absl::StatusOr<std::string> TokenFile::TenantFor(std::string_view authorization) const {
  return files_->Get()->TenantFor(authorization);
}

std::vector<std::string> TokenFile::Tenants() const { return files_->Get()->Tenants(); }

absl::StatusOr<bool> TokenFile::Reload() { return files_->Reload(); }

}  // namespace qaqkv::service
