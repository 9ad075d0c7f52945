// Request validation: every field a client sends is checked here before the
// store sees it. Messages name the field ("pages[3].layer: ...") so a client
// can tell what to fix; nothing is stored when a check fails.
#ifndef QAQKV_SERVICE_VALIDATE_H_
#define QAQKV_SERVICE_VALIDATE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "qaqkv/limits.h"
#include "qaqkv/v1/kvcache.pb.h"
#include "storage/keys.h"
#include "storage/session_record.h"

namespace qaqkv::service {

// A validated BlockFormat, with the canonical form the store keeps as the
// block's descriptor (the same bytes for every spelling of the same codec).
struct Format {
  v1::BlockFormat proto;  // canonical: codec is CodecConfig::Name()
  CodecConfig codec;
  std::string descriptor;
};

// `field` prefixes messages, e.g. "format".
absl::StatusOr<Format> ValidateFormat(const v1::BlockFormat& format, std::string_view field);
// The format a stored descriptor stands for; kDataLoss if it does not parse.
absl::StatusOr<v1::BlockFormat> FormatFromDescriptor(std::string_view descriptor);

absl::StatusOr<storage::BlockKey> ValidateBlockKey(const std::string& bytes,
                                                   std::string_view field);
// Every key of a repeated block-key field (at most `max`), named
// `field[i]` in messages.
absl::StatusOr<std::vector<storage::BlockKey>> ValidateBlockKeys(
    const google::protobuf::RepeatedPtrField<std::string>& keys, std::string_view field,
    size_t max);

// Header, checksum, shape against the geometry (tokens = block_tokens *
// `stacked_layers`) and codec kind and group against the format.
// kInvalidArgument or kDataLoss (checksum, truncation), naming `field`.
absl::Status ValidatePageBytes(const Format& format, std::string_view data, std::string_view field,
                               uint32_t tokens);

// A Session message as the storage record PutSession stores: id, format,
// block keys, token count against the blocks, tail page (one page of
// tail_tokens * num_layers rows, as ValidatePageBytes) and TTL.
absl::StatusOr<storage::SessionRecord> ValidateSession(const v1::Session& s);

// A Page message: key, layer below num_layers, data as ValidatePageBytes.
absl::StatusOr<storage::BlockKey> ValidatePage(const Format& format, const v1::Page& page,
                                               std::string_view field);

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_VALIDATE_H_
