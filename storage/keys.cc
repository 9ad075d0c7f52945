#include "storage/keys.h"

#include "absl/strings/str_cat.h"
#include "base/ids.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "qaqkv/limits.h"

namespace qaqkv::storage {
namespace {

void AppendTenant(std::string& out, char kind, std::string_view tenant) {
  out.push_back(kind);
  out.push_back(static_cast<char>(static_cast<uint8_t>(tenant.size())));
  out.append(tenant.data(), tenant.size());
}

void AppendBlock(std::string& out, const BlockKey& block) {
  out.append(reinterpret_cast<const char*>(block.data()), block.size());
}

// The parts every kind of block key shares: `kind` tenant_len tenant
// block(16), then exactly `rest_len` more bytes (views into the key).
struct TenantBlock {
  std::string_view tenant;
  BlockKey block{};
  std::string_view rest;
};
absl::StatusOr<TenantBlock> ParseTenantBlock(std::string_view key, char kind, size_t rest_len,
                                             std::string_view what) {
  if (key.size() < 2 || key[0] != kind) {
    return absl::InvalidArgumentError(absl::StrCat("not a ", base::AsAbsl(what)));
  }
  const size_t tenant_len = static_cast<uint8_t>(key[1]);
  if (key.size() != 2 + tenant_len + 16 + rest_len || tenant_len == 0) {
    return absl::InvalidArgumentError(absl::StrCat(base::AsAbsl(what), ": bad length"));
  }
  TenantBlock out;
  out.tenant = key.substr(2, tenant_len);
  for (size_t i = 0; i < 16; ++i) out.block[i] = static_cast<uint8_t>(key[2 + tenant_len + i]);
  out.rest = key.substr(2 + tenant_len + 16);
  return out;
}

}  // namespace

absl::Status ValidateTenant(std::string_view tenant) {
  return base::ValidatePrintableId("tenant", tenant, limits::kMaxTenantBytes);
}

std::string TenantPrefix(char kind, std::string_view tenant) {
  std::string out;
  AppendTenant(out, kind, tenant);
  return out;
}

std::string BlockPagesPrefix(std::string_view tenant, const BlockKey& block) {
  std::string out = TenantPrefix('P', tenant);
  AppendBlock(out, block);
  return out;
}

std::string PageKey(std::string_view tenant, const BlockKey& block, uint32_t layer) {
  std::string out = BlockPagesPrefix(tenant, block);
  // Big-endian so that the layers of a block sort in numeric order.
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(layer >> shift));
  return out;
}

std::string BlockRecordKey(std::string_view tenant, const BlockKey& block) {
  std::string out = TenantPrefix('B', tenant);
  AppendBlock(out, block);
  return out;
}

std::string SessionKey(std::string_view tenant, std::string_view session_id) {
  std::string out = TenantPrefix('S', tenant);
  out.append(session_id.data(), session_id.size());
  return out;
}

absl::StatusOr<ParsedPageKey> ParsePageKey(std::string_view key) {
  QAQKV_ASSIGN_OR_RETURN(const TenantBlock tb, ParseTenantBlock(key, 'P', 4, "page key"));
  ParsedPageKey out{std::string(tb.tenant), tb.block, 0};
  for (size_t i = 0; i < 4; ++i) out.layer = (out.layer << 8) | static_cast<uint8_t>(tb.rest[i]);
  return out;
}

absl::StatusOr<ParsedBlockRecordKey> ParseBlockRecordKey(std::string_view key) {
  QAQKV_ASSIGN_OR_RETURN(const TenantBlock tb,
                         ParseTenantBlock(key, 'B', 0, "block record key"));
  return ParsedBlockRecordKey{std::string(tb.tenant), tb.block};
}

std::string_view KeyTenant(std::string_view key) {
  if (key.size() < 2) return {};
  const size_t tenant_len = static_cast<uint8_t>(key[1]);
  if (key.size() < 2 + tenant_len) return {};
  return key.substr(2, tenant_len);
}

std::string BlockKeyHex(const BlockKey& block) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (uint8_t b : block) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

}  // namespace qaqkv::storage
