// Chat sessions: a record naming committed blocks plus one tail page.
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"
#include "base/status_macros.h"
#ifdef QAQKV_HAVE_CUDA
#include "client/internal/device_kv.h"
#endif
#include "kernels/codec.h"

namespace qaqkv::client {
namespace {

// internal::ValidateKv of all layers, and host memory: session calls copy
// tail rows on the host (Offload and Load have the device path). Without
// CUDA nothing can tell a device pointer apart (client.h says so).
absl::StatusOr<int64_t> ValidateHostKv(const internal::KvBuffers& kv, const Geometry& g,
                                       int64_t rows, std::string_view field) {
  QAQKV_ASSIGN_OR_RETURN(const int64_t buffer_tokens,
                         internal::ValidateKv(kv, g, rows, 0, g.num_layers, field));
#ifdef QAQKV_HAVE_CUDA
  QAQKV_ASSIGN_OR_RETURN(const internal::KvPlacement where,
                         internal::LocateKv(kv, 0, g.num_layers, field));
  if (where.on_device) {
    return absl::InvalidArgumentError(absl::StrCat(
        absl::string_view(field.data(), field.size()),
        ": session calls take host buffers; move device KV with Offload and Load"));
  }
#endif
  return buffer_tokens;
}

using ::qaqkv::CodecConfig;

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Tokens after the full blocks; kInvalidArgument naming `field` unless in
// [0, block_tokens).
absl::StatusOr<int64_t> TailTokens(uint64_t token_count, size_t blocks, const Geometry& g,
                                   std::string_view field) {
  const uint64_t in_blocks = static_cast<uint64_t>(blocks) * g.block_tokens;
  if (token_count < in_blocks || token_count - in_blocks >= static_cast<uint64_t>(g.block_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ": ", token_count, " is not in [blocks * block_tokens, + block_tokens) = [",
        in_blocks, ", ", in_blocks + g.block_tokens, ")"));
  }
  return static_cast<int64_t>(token_count - in_blocks);
}

absl::StatusOr<SessionInfo> ToInfo(const v1::GetSessionResponse& response) {
  const v1::Session& s = response.session();
  SessionInfo info;
  info.session_id = s.session_id();
  info.geometry = FromProto(s.format().geometry());
  info.codec = s.format().codec();
  info.blocks.reserve(s.block_keys_size());
  for (int i = 0; i < s.block_keys_size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(BlockKey key,
                           KeyFromBytes(s.block_keys(i), absl::StrCat("block_keys[", i, "]")));
    info.blocks.push_back(key);
  }
  info.token_count = s.token_count();
  info.committed_prefix =
      std::min(static_cast<size_t>(response.committed_prefix()), info.blocks.size());
  info.tail_bytes = s.tail().size();
  info.created = absl::FromUnixMillis(s.created_ms());
  info.accessed = absl::FromUnixMillis(s.accessed_ms());
  info.ttl = absl::Milliseconds(s.ttl_ms());
  return info;
}

// The checks SaveSession and OffloadSession share, in this order: id,
// geometry, codec, and the token count against the blocks (the tail).
struct CheckedSpec {
  CodecConfig config;
  int64_t tail = 0;
};
absl::StatusOr<CheckedSpec> CheckSpec(const SessionSpec& spec) {
  QAQKV_RETURN_IF_ERROR(internal::ValidateSessionId(spec.session_id));
  QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(spec.geometry, "geometry"));
  CheckedSpec out;
  QAQKV_ASSIGN_OR_RETURN(out.config, internal::ParseCodec(spec.codec, "codec"));
  QAQKV_ASSIGN_OR_RETURN(out.tail, TailTokens(spec.token_count, spec.blocks.size(),
                                              spec.geometry, "token_count"));
  return out;
}

// The PutSession request of `spec`, its tail encoded (SaveSession, and
// OffloadSession, which also reports the tail's size).
// `tail_q2` (empty, or one value per KV head) is the tail page's Q2.
absl::StatusOr<v1::PutSessionRequest> SessionRequest(const SessionSpec& spec,
                                                     const CheckedSpec& checked,
                                                     size_t max_message_bytes,
                                                     std::span<const float> tail_q2 = {}) {
  const Geometry& g = spec.geometry;
  const CodecConfig& config = checked.config;
  const int64_t tail = checked.tail;
  if (spec.ttl < absl::ZeroDuration()) return absl::InvalidArgumentError("ttl: negative");

  v1::PutSessionRequest request;
  v1::Session& session = *request.mutable_session();
  session.set_session_id(spec.session_id);
  for (const BlockKey& key : spec.blocks) session.add_block_keys(KeyBytes(key));
  session.set_token_count(spec.token_count);
  *session.mutable_format()->mutable_geometry() = ToProto(g);
  session.mutable_format()->set_codec(config.Name());
  // The wire counts whole milliseconds and 0 means "never expires", so a
  // TTL under 1 ms is rounded up rather than down to forever.
  int64_t ttl_ms = absl::ToInt64Milliseconds(spec.ttl);
  if (ttl_ms == 0 && spec.ttl > absl::ZeroDuration()) ttl_ms = 1;
  session.set_ttl_ms(ttl_ms);

  if (tail > 0) {
    const internal::KvBuffers kv = internal::View(spec.tail);
    QAQKV_ASSIGN_OR_RETURN(const int64_t buffer_tokens, ValidateHostKv(kv, g, tail, "tail"));
    // One page for all layers (kvcache.proto, Session.tail): layer l's tail
    // rows are tokens [l * tail, (l + 1) * tail) of an NHD page.
    const size_t elem = internal::ElementBytes(kv.dtype);
    const size_t layer_bytes = static_cast<size_t>(tail) * g.num_kv_heads * g.head_dim * elem;
    std::vector<char> k(layer_bytes * g.num_layers), v(k.size());
    for (int l = 0; l < g.num_layers; ++l) {
      internal::CopyRowsToNhd(kv.k[l], kv.layout, buffer_tokens, kv.first_token, tail,
                              g.num_kv_heads, g.head_dim, elem, k.data() + l * layer_bytes);
      internal::CopyRowsToNhd(kv.v[l], kv.layout, buffer_tokens, kv.first_token, tail,
                              g.num_kv_heads, g.head_dim, elem, v.data() + l * layer_bytes);
    }
    const ::qaqkv::PageShape shape{static_cast<int>(tail * g.num_layers), g.num_kv_heads,
                                   g.head_dim};
    const ::qaqkv::DType dtype = internal::ToKernel(kv.dtype);
    // Default attention (every tail token counts as highly attended): the
    // tail is the most recent context and small. Q2 defaults to 1, which is
    // not conservative for keys when real queries are larger, so
    // OffloadSession passes the largest Q2 of each KV head over the layers
    // the caller gave. The context length is the session's, as for its
    // blocks, not the stacked page's.
    ::qaqkv::QaqSideInputs side;
    side.q2 = tail_q2;
    side.context_tokens = static_cast<int64_t>(spec.token_count);
    absl::StatusOr<std::vector<uint8_t>> page = ::qaqkv::EncodePage(
        config, shape, {k.data(), dtype, ::qaqkv::Layout::kNHD},
        {v.data(), dtype, ::qaqkv::Layout::kNHD}, side);
    if (!page.ok()) {
      return absl::Status(page.status().code(),
                          absl::StrCat("tail: ", page.status().message()));
    }
    session.set_tail(reinterpret_cast<const char*>(page->data()), page->size());
  }
  if (request.ByteSizeLong() > max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session: ", request.ByteSizeLong(), " bytes exceed options.max_message_bytes"));
  }
  return request;
}

}  // namespace

absl::Status Client::SaveSession(const SessionSpec& spec) {
  QAQKV_ASSIGN_OR_RETURN(const CheckedSpec checked, CheckSpec(spec));
  QAQKV_ASSIGN_OR_RETURN(const v1::PutSessionRequest request,
                         SessionRequest(spec, checked, impl_->options().max_message_bytes));
  return impl_->PutSession(request);
}

absl::StatusOr<OffloadResult> Client::OffloadSession(const SessionSpec& spec, const HostKv& kv,
                                                     const QaqInputs& side) {
  const absl::Time start = absl::Now();
  QAQKV_ASSIGN_OR_RETURN(const CheckedSpec checked, CheckSpec(spec));
  const Geometry& g = spec.geometry;
  const CodecConfig& config = checked.config;
  const int64_t tail = checked.tail;
  if (!spec.tail.k.empty() || !spec.tail.v.empty()) {
    return absl::InvalidArgumentError("tail: must be empty; OffloadSession takes the tail from kv");
  }
  QAQKV_ASSIGN_OR_RETURN(
      const int64_t buffer_tokens,
      ValidateHostKv(internal::View(kv), g, static_cast<int64_t>(spec.token_count), "kv"));
  const int64_t block_rows = static_cast<int64_t>(spec.blocks.size()) * g.block_tokens;
  QAQKV_RETURN_IF_ERROR(internal::ValidateSide(side, g, kv.first_token + block_rows,
                                               config.kind == ::qaqkv::CodecKind::kQaq));
  if (spec.ttl < absl::ZeroDuration()) return absl::InvalidArgumentError("ttl: negative");

  const std::string codec = config.Name();
  QAQKV_ASSIGN_OR_RETURN(const size_t committed, Lookup(spec.blocks, &g, codec));
  OffloadResult result;
  if (committed < spec.blocks.size()) {
    OffloadRequest offload;
    offload.geometry = g;
    offload.codec = codec;
    offload.blocks = std::span<const BlockKey>(spec.blocks).subspan(committed);
    offload.kv = kv;
    offload.kv.tokens = buffer_tokens;
    offload.kv.first_token = kv.first_token + static_cast<int64_t>(committed) * g.block_tokens;
    offload.side = side;
    QAQKV_ASSIGN_OR_RETURN(result, Offload(offload));
  }
  result.blocks_committed = spec.blocks.size();
  SessionSpec save;
  save.session_id = spec.session_id;
  save.geometry = g;
  save.codec = codec;
  save.blocks = spec.blocks;
  save.token_count = spec.token_count;
  save.ttl = spec.ttl;
  if (tail > 0) {
    save.tail = kv;
    save.tail.tokens = buffer_tokens;
    save.tail.first_token = kv.first_token + block_rows;
  }
  // The tail page is all layers stacked, so it takes one Q2 per KV head:
  // the largest over the layers (the finest key step any layer needs).
  std::vector<float> tail_q2;
  const bool qaq = config.kind == ::qaqkv::CodecKind::kQaq;  // others ignore Q2
  for (std::span<const float> q2 : qaq ? side.q2 : std::vector<std::span<const float>>{}) {
    if (q2.empty()) continue;
    if (tail_q2.empty()) tail_q2.assign(q2.begin(), q2.end());
    for (size_t h = 0; h < tail_q2.size() && h < q2.size(); ++h) {
      tail_q2[h] = std::max(tail_q2[h], q2[h]);
    }
  }
  // `save` differs from `spec` only in the canonical codec name and the tail
  // buffers, so the checks made on `spec` hold for it.
  QAQKV_ASSIGN_OR_RETURN(const v1::PutSessionRequest request,
                         SessionRequest(save, checked, impl_->options().max_message_bytes,
                                        tail_q2));
  QAQKV_RETURN_IF_ERROR(impl_->PutSession(request));
  if (tail > 0) {
    // The tail counts as one more stored page, as the blocks' pages do.
    result.pages += 1;
    result.raw_bytes += static_cast<uint64_t>(tail) * g.num_layers * g.num_kv_heads *
                        g.head_dim * 2 * 2;
    result.stored_bytes += request.session().tail().size();
  }
  result.total_time = absl::Now() - start;
  return result;
}

absl::StatusOr<SessionInfo> Client::GetSession(std::string_view session_id) {
  QAQKV_ASSIGN_OR_RETURN(const v1::GetSessionResponse response, impl_->GetSession(session_id));
  return ToInfo(response);
}

absl::StatusOr<SessionInfo> Client::ResumeSession(std::string_view session_id, MutableHostKv kv,
                                                  std::function<void(int layer)> on_layer) {
  QAQKV_ASSIGN_OR_RETURN(const v1::GetSessionResponse response, impl_->GetSession(session_id));
  QAQKV_ASSIGN_OR_RETURN(SessionInfo info, ToInfo(response));
  const Geometry& g = info.geometry;
  if (absl::Status s = internal::ValidateGeometry(g, "session.format.geometry"); !s.ok()) {
    return absl::InternalError(absl::StrCat("server's session record: ", s.message()));
  }
  if (info.committed_prefix < info.blocks.size()) {
    return absl::NotFoundError(absl::StrCat(
        "session ", Sv(session_id), ": ", info.blocks.size() - info.committed_prefix, " of ",
        info.blocks.size(), " blocks are no longer stored (committed prefix ",
        info.committed_prefix, "); recompute them and save the session again"));
  }
  absl::StatusOr<int64_t> tail =
      TailTokens(info.token_count, info.blocks.size(), g, "session.token_count");
  if (!tail.ok()) {
    return absl::InternalError(absl::StrCat("server's session record: ", tail.status().message()));
  }
  QAQKV_ASSIGN_OR_RETURN(
      const int64_t buffer_tokens,
      ValidateHostKv(internal::View(kv), g, static_cast<int64_t>(info.token_count), "kv"));
  const int64_t block_rows = static_cast<int64_t>(info.blocks.size()) * g.block_tokens;

  // The tail first: then on_layer(l) from Load means layer l is complete.
  if (*tail > 0) {
    const std::string& bytes = response.session().tail();
    const size_t elem = internal::ElementBytes(kv.dtype);
    const size_t layer_bytes = static_cast<size_t>(*tail) * g.num_kv_heads * g.head_dim * elem;
    std::vector<char> k(layer_bytes * g.num_layers), v(k.size());
    const ::qaqkv::PageShape shape{static_cast<int>(*tail * g.num_layers), g.num_kv_heads,
                                   g.head_dim};
    const ::qaqkv::DType dtype = internal::ToKernel(kv.dtype);
    absl::Status decoded = ::qaqkv::DecodePage(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
        {k.data(), dtype, ::qaqkv::Layout::kNHD}, {v.data(), dtype, ::qaqkv::Layout::kNHD},
        &shape);
    if (!decoded.ok()) {
      return absl::DataLossError(absl::StrCat("session ", Sv(session_id),
                                              ": tail page: ", decoded.message()));
    }
    for (int l = 0; l < g.num_layers; ++l) {
      internal::CopyRowsFromNhd(k.data() + l * layer_bytes, kv.k[l], kv.layout, buffer_tokens,
                                kv.first_token + block_rows, *tail, g.num_kv_heads, g.head_dim,
                                elem);
      internal::CopyRowsFromNhd(v.data() + l * layer_bytes, kv.v[l], kv.layout, buffer_tokens,
                                kv.first_token + block_rows, *tail, g.num_kv_heads, g.head_dim,
                                elem);
    }
  }

  LoadRequest load;
  load.geometry = g;
  load.codec = info.codec;
  load.blocks = info.blocks;
  load.kv = std::move(kv);
  load.kv.tokens = buffer_tokens;  // the buffers' extent covers the tail too
  load.on_layer = std::move(on_layer);
  QAQKV_RETURN_IF_ERROR(Load(load).status());
  return info;
}

absl::Status Client::DeleteSession(std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(internal::ValidateSessionId(session_id));
  return impl_->DeleteSession(session_id);
}

absl::Status Client::TouchSession(std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(internal::ValidateSessionId(session_id));
  return impl_->TouchSession(session_id);
}

absl::StatusOr<std::vector<std::string>> Client::ListSessions(size_t limit) {
  if (limit > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: ", limit, " is above the server's maximum 100000"));
  }
  return impl_->ListSessions(static_cast<uint32_t>(limit));
}

}  // namespace qaqkv::client
