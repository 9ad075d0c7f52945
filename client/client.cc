// The Client's public calls that are not sessions, transfers or Offload and
// Load: creation and options, lookups, raw pages, stats and servers; and the
// conversions between the public types and the wire's. The channels and
// retries are in channels.cc, the page streams in streams.cc.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>
#include <utility>

#include <grpcpp/impl/client_unary_call.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "client/internal/client_impl.h"
#include "proto/tls_check.h"
#include "proto/wire.h"
#include "client/internal/host_kv.h"
#include "base/status_macros.h"
#include "qaqkv/limits.h"
#include "kernels/codec.h"

namespace qaqkv::client {
namespace {

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }


absl::Status ValidateOptions(const ClientOptions& o) {
  const int named = !o.target.empty() + !o.servers.empty() + !o.discovery.empty();
  if (named != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.target: exactly one of target, servers and discovery must be set (", named,
        " are)"));
  }
  QAQKV_RETURN_IF_ERROR(internal::ParseServerList(o.servers, "options.servers").status());
  if (o.replicas < 0 || o.replicas > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.replicas: ", o.replicas, " not in [0, 16]"));
  }
  if (o.write_quorum < 0 || o.write_quorum > (o.replicas == 0 ? 2 : o.replicas)) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.write_quorum: ", o.write_quorum, " not in [0, replicas ",
                     o.replicas == 0 ? 2 : o.replicas, "]"));
  }
  if (o.replica_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("options.replica_deadline: must be > 0");
  }
  if (o.health_check_interval < absl::Milliseconds(10)) {
    return absl::InvalidArgumentError("options.health_check_interval: below 10 ms");
  }
  if (o.discovery_interval < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("options.discovery_interval: below 100 ms");
  }
  if (!o.tls && (!o.tls_root_certs_pem.empty() || !o.tls_client_cert_pem.empty() ||
                 !o.tls_client_key_pem.empty() || !o.tls_server_name.empty())) {
    return absl::InvalidArgumentError(
        "options.tls: tls_* fields are set but tls is false (they would be ignored)");
  }
  if (o.tls_client_cert_pem.empty() != o.tls_client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "options.tls_client_cert_pem: mTLS needs both tls_client_cert_pem and "
        "tls_client_key_pem");
  }
  // gRPC takes bad PEM, or a client key that does not match its
  // certificate, only to fail every connection later as UNAVAILABLE: parse
  // them here (OpenSSL, as the server does with its files).
  if (!o.tls_root_certs_pem.empty()) {
    if (absl::Status s = wire::CheckCertificates(o.tls_root_certs_pem,
                                                 "options.tls_root_certs_pem");
        !s.ok()) {
      return s;
    }
  }
  if (!o.tls_client_cert_pem.empty()) {
    if (absl::Status s = wire::CheckCertAndKey(o.tls_client_cert_pem, o.tls_client_key_pem,
                                               "options.tls_client_cert_pem",
                                               "options.tls_client_key_pem");
        !s.ok()) {
      return s;
    }
  }
  for (char c : o.bearer_token) {
    // Metadata values must be printable ASCII; a newline would end the header.
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError("options.bearer_token: not printable ASCII");
    }
  }
  if (o.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("options.deadline: must be > 0");
  }
  const RetryPolicy& r = o.retry;
  if (r.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.retry.max_attempts: ", r.max_attempts, " is below 1"));
  }
  if (r.initial_backoff < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("options.retry.initial_backoff: negative");
  }
  if (r.max_backoff < r.initial_backoff) {
    return absl::InvalidArgumentError("options.retry.max_backoff: below initial_backoff");
  }
  if (!(r.multiplier >= 1.0) || r.multiplier > 100.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.retry.multiplier: ", r.multiplier, " not in [1, 100]"));
  }
  static_assert(limits::kMinClientMaxMessageBytes >= 2 * kBatchBytes,
                "a message holds a batch of pages and one more page");
  if (o.max_message_bytes < limits::kMinClientMaxMessageBytes ||
      o.max_message_bytes > size_t{INT_MAX}) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.max_message_bytes: ", o.max_message_bytes, " not in [2 MiB, 2 GiB)"));
  }
  if (o.encode_threads < 0 || o.encode_threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.encode_threads: ", o.encode_threads, " not in [0, 1024]"));
  }
  if (o.channels < 1 || o.channels > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.channels: ", o.channels, " not in [1, 64]"));
  }
  if (o.keepalive_time < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("options.keepalive_time: negative");
  }
  if (!(o.link_bytes_per_second >= 0) || std::isinf(o.link_bytes_per_second)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.link_bytes_per_second: ", o.link_bytes_per_second, " is not >= 0 and finite"));
  }
  return absl::OkStatus();
}

absl::Status ValidateKeyCount(size_t n, size_t max, std::string_view field) {
  if (n > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ": ", n, " keys, at most ", max, " per call"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- Conversions --------------------------------------------------------------

absl::Status FromGrpc(const grpc::Status& status) {
  // absl::StatusCode mirrors grpc::StatusCode number for number.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      Sv(status.error_message()));
}

v1::Geometry ToProto(const Geometry& g) {
  v1::Geometry p;
  p.set_num_layers(static_cast<uint32_t>(g.num_layers));
  p.set_num_kv_heads(static_cast<uint32_t>(g.num_kv_heads));
  p.set_num_q_heads(static_cast<uint32_t>(g.num_q_heads));
  p.set_head_dim(static_cast<uint32_t>(g.head_dim));
  p.set_dtype(g.dtype == DType::kBF16 ? v1::DTYPE_BF16 : v1::DTYPE_FP16);
  p.set_block_tokens(static_cast<uint32_t>(g.block_tokens));
  return p;
}

Geometry FromProto(const v1::Geometry& p) {
  Geometry g;
  // The server bounds every field far below INT_MAX; clamping keeps a
  // broken reply from turning into a negative count.
  auto to_int = [](uint32_t v) { return static_cast<int>(std::min<uint32_t>(v, INT_MAX)); };
  g.num_layers = to_int(p.num_layers());
  g.num_kv_heads = to_int(p.num_kv_heads());
  g.num_q_heads = to_int(p.num_q_heads());
  g.head_dim = to_int(p.head_dim());
  // An unspecified dtype is reported as kF32, which no geometry may carry,
  // so a comparison with any valid request geometry fails.
  g.dtype = p.dtype() == v1::DTYPE_FP16   ? DType::kF16
            : p.dtype() == v1::DTYPE_BF16 ? DType::kBF16
                                          : DType::kF32;
  g.block_tokens = to_int(p.block_tokens());
  return g;
}

std::string KeyBytes(const BlockKey& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

absl::StatusOr<BlockKey> KeyFromBytes(const std::string& bytes, std::string_view field) {
  BlockKey key;
  if (bytes.size() != key.size()) {
    return absl::InternalError(absl::StrCat("server reply ", Sv(field), ": block key of ",
                                            bytes.size(), " bytes, expected 16"));
  }
  std::copy(bytes.begin(), bytes.end(), key.begin());
  return key;
}

std::string KeyHex(const BlockKey& key) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(key.data()), key.size()));
}

// ---- Client ---------------------------------------------------------------------

Client::Client(PassKey, std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

std::vector<std::string> UseRecommendedGrpcEnvironment() {
  std::vector<std::string> set;
  if (wire::SetEnvUnlessSet("GRPC_POLL_STRATEGY", "poll")) set.emplace_back("GRPC_POLL_STRATEGY");
  if (wire::SetEnvUnlessSet("GRPC_EXPERIMENTS", wire::kClientExperiments)) {
    set.emplace_back("GRPC_EXPERIMENTS");
  }
  return set;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  QAQKV_RETURN_IF_ERROR(ValidateOptions(options));
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_private_key = options.tls_client_key_pem;
    ssl.pem_cert_chain = options.tls_client_cert_pem;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  int threads = options.encode_threads;
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(credentials), threads);
  QAQKV_RETURN_IF_ERROR(impl->Start());
  return std::make_unique<Client>(PassKey(), std::move(impl));
}

absl::StatusOr<std::string> Client::CanonicalCodec(std::string_view codec) {
  QAQKV_ASSIGN_OR_RETURN(const ::qaqkv::CodecConfig config, internal::ParseCodec(codec, "codec"));
  return config.Name();
}

absl::StatusOr<size_t> Client::Lookup(std::span<const BlockKey> blocks, const Geometry* geometry,
                                      std::string_view codec) {
  QAQKV_RETURN_IF_ERROR(ValidateKeyCount(blocks.size(), limits::kMaxLookupKeys, "blocks"));
  v1::LookupRequest request;
  if (geometry != nullptr) {
    QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(*geometry, "geometry"));
    QAQKV_ASSIGN_OR_RETURN(const ::qaqkv::CodecConfig config, internal::ParseCodec(codec, "codec"));
    *request.mutable_format()->mutable_geometry() = ToProto(*geometry);
    request.mutable_format()->set_codec(config.Name());
  } else if (!codec.empty()) {
    return absl::InvalidArgumentError("codec: given without geometry (the format needs both)");
  }
  if (blocks.empty()) return size_t{0};
  return impl_->LookupPrefix(blocks, request.has_format() ? &request.format() : nullptr);
}

absl::StatusOr<PutResult> Client::PutPages(const Geometry& geometry, std::string_view codec,
                                           std::span<const EncodedPage> pages) {
  QAQKV_RETURN_IF_ERROR(internal::ValidateGeometry(geometry, "geometry"));
  QAQKV_ASSIGN_OR_RETURN(const ::qaqkv::CodecConfig config, internal::ParseCodec(codec, "codec"));
  // A message also carries the format and per-page framing; keep room for it.
  const size_t max_page = impl_->options().max_message_bytes - 4096;
  for (size_t i = 0; i < pages.size(); ++i) {
    if (pages[i].layer < 0 || pages[i].layer >= geometry.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("pages[", i, "].layer: ", pages[i].layer,
                                                     " is not in [0, geometry.num_layers ",
                                                     geometry.num_layers, ")"));
    }
    if (pages[i].data.empty() || pages[i].data.size() > max_page) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pages[", i, "].data: ", pages[i].data.size(), " bytes, must be in [1, ", max_page,
          "] (options.max_message_bytes less framing)"));
    }
  }
  PutResult result;
  if (pages.empty()) return result;

  class SpanSource final : public PageSource {
   public:
    explicit SpanSource(std::span<const EncodedPage> pages) : pages_(pages) {}
    void Begin() override { next_ = 0; }
    // The caller's bytes go on the wire as they are (no copy): they outlive
    // the call, which waits for gRPC to let go of them.
    absl::StatusOr<bool> Next(internal::OutPage* page) override {
      if (next_ == pages_.size()) return false;
      const EncodedPage& p = pages_[next_++];
      page->key = p.block;
      page->layer = static_cast<uint32_t>(p.layer);
      page->data = p.data;
      return true;
    }

   private:
    std::span<const EncodedPage> pages_;
    size_t next_ = 0;
  } source(pages);

  v1::BlockFormat format;
  *format.mutable_geometry() = ToProto(geometry);
  format.set_codec(config.Name());
  QAQKV_ASSIGN_OR_RETURN(const v1::PutPagesResponse response, impl_->StreamPut(format, source));
  for (int i = 0; i < response.committed_blocks_size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(BlockKey key, KeyFromBytes(response.committed_blocks(i),
                                                      absl::StrCat("committed_blocks[", i, "]")));
    result.committed_blocks.push_back(key);
  }
  result.pages = response.pages_stored();
  result.bytes = response.bytes_stored();
  return result;
}

absl::Status Client::GetPages(
    std::span<const BlockKey> blocks, int layer_begin, int layer_end,
    absl::FunctionRef<absl::Status(const BlockKey& block, int layer, std::string_view data)>
        on_page,
    BlockFormat* format) {
  std::string scratch;  // one buffer for every page that spans pieces
  return GetPagesInPlace(
      blocks, layer_begin, layer_end,
      [&](const BlockKey& block, int layer, const PageBytes& data) {
        return on_page(block, layer, data.Flat(&scratch));
      },
      format);
}

absl::Status Client::GetPagesInPlace(
    std::span<const BlockKey> blocks, int layer_begin, int layer_end,
    absl::FunctionRef<absl::Status(const BlockKey& block, int layer, const PageBytes& data)>
        on_page,
    BlockFormat* format) {
  QAQKV_RETURN_IF_ERROR(ValidateKeyCount(blocks.size(), limits::kMaxGetPagesKeys, "blocks"));
  constexpr int kMaxLayers = static_cast<int>(limits::kMaxLayers);
  if (layer_begin < 0 || layer_begin >= kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer_begin: ", layer_begin, " not in [0, ", kMaxLayers, ")"));
  }
  if (layer_end != 0 && (layer_end <= layer_begin || layer_end > kMaxLayers)) {
    return absl::InvalidArgumentError(absl::StrCat("layer_end: ", layer_end,
                                                   " is neither 0 (all) nor in (layer_begin ",
                                                   layer_begin, ", ", kMaxLayers, "]"));
  }
  if (blocks.empty()) return absl::OkStatus();
  return impl_->StreamGet(
      blocks, layer_begin, layer_end,
      [&](const v1::BlockFormat& f) {
        if (format != nullptr) *format = BlockFormat{FromProto(f.geometry()), f.codec()};
        return absl::OkStatus();
      },
      [&](size_t block, int layer, const PageBytes& data, const std::shared_ptr<const void>&) {
        return on_page(blocks[block], layer, data);
      });
}

absl::StatusOr<ServerStats> Client::GetStats() {
  QAQKV_ASSIGN_OR_RETURN(const v1::GetStatsResponse response, impl_->GetStats());
  auto tier = [](const v1::TierStats& t) {
    return TierStats{t.name(),  t.hits(),    t.misses(),      t.evictions(),
                     t.bytes(), t.entries(), t.budget_bytes()};
  };
  ServerStats stats;
  for (const v1::TierStats& t : response.tiers()) stats.tiers.push_back(tier(t));
  stats.tenant_bytes = response.tenant_bytes();
  stats.tenant_blocks = response.tenant_blocks();
  stats.dram = tier(response.dram());
  stats.disk = tier(response.disk());
  stats.blocks_evicted = response.blocks_evicted();
  stats.checksum_failures = response.checksum_failures();
  stats.total_bytes = response.total_bytes();
  stats.blocks = response.blocks();
  stats.background_errors = response.background_errors();
  stats.version = response.version();
  return stats;
}

std::vector<Client::ServerState> Client::Servers() const {
  std::vector<ServerState> out;
  const absl::Time now = absl::Now();
  for (const std::shared_ptr<internal::Endpoint>& e : impl_->members()->endpoints) {
    out.push_back({e->name(), e->address(), e->Available(now), e->consecutive_failures()});
  }
  return out;
}

absl::Status Client::SetServers(std::vector<std::string> servers) {
  if (impl_->options().servers.empty()) {
    return absl::FailedPreconditionError(
        "servers: this client was created with options.target or options.discovery");
  }
  if (servers.empty()) return absl::InvalidArgumentError("servers: empty");
  QAQKV_ASSIGN_OR_RETURN(std::vector<internal::ServerAddress> list,
                         internal::ParseServerList(servers, "servers"));
  return impl_->SetServers(std::move(list));
}

}  // namespace qaqkv::client
