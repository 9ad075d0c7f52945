// Client creation, the channels, retries, the two page streams and the small
// unary calls.
#include <algorithm>
#include <climits>
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

int64_t Ms(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

// A server list as the membership takes it (each server named by its
// address), or kInvalidArgument naming `field`[i].
absl::StatusOr<std::vector<internal::ServerAddress>> ServerList(
    const std::vector<std::string>& servers, std::string_view field) {
  std::vector<internal::ServerAddress> list;
  for (size_t i = 0; i < servers.size(); ++i) {
    if (servers[i].empty() || servers[i].find_first_of(" \t\n,") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(Sv(field), "[", i, "]: '", servers[i], "' is not a host:port"));
    }
    list.push_back({servers[i], servers[i]});
  }
  return list;
}

absl::Status ValidateOptions(const ClientOptions& o) {
  const int named = !o.target.empty() + !o.servers.empty() + !o.discovery.empty();
  if (named != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "options.target: exactly one of target, servers and discovery must be set (", named,
        " are)"));
  }
  QAQKV_RETURN_IF_ERROR(ServerList(o.servers, "options.servers").status());
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

// ---- Impl -----------------------------------------------------------------------

Client::Impl::Impl(ClientOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials,
                   int threads)
    : options_(std::move(options)),
      credentials_(std::move(credentials)),
      members_(std::make_shared<internal::Membership>()),
      pool_(threads),
      repair_(1) {}

Client::Impl::~Impl() = default;

std::vector<std::shared_ptr<grpc::Channel>> Client::Impl::MakeChannels(
    const std::string& address) const {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < options_.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
    args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    if (options_.keepalive_time > absl::ZeroDuration()) {
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(Ms(options_.keepalive_time)));
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    }
    // While a channel waits to reconnect, every call on it fails fast with
    // UNAVAILABLE. gRPC's reconnect backoff starts at 1 s and grows to
    // 120 s, longer than our whole retry schedule, so a restarted server
    // would not be found within a call's retries; follow our schedule.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                static_cast<int>(std::max<int64_t>(20, Ms(options_.retry.initial_backoff))));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                static_cast<int>(std::max<int64_t>(100, Ms(options_.retry.max_backoff))));
    for (const wire::ChannelArg& arg : wire::kPageStreamChannelArgs) {
      args.SetInt(arg.name, arg.value);
    }
    // Distinct args (and a local pool) keep gRPC from sharing one
    // subchannel, i.e. one TCP connection, between our channels.
    args.SetInt("qaqkv.channel_index", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!options_.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options_.tls_server_name);
    }
    channels.push_back(grpc::CreateCustomChannel(address, credentials_, args));
  }
  return channels;
}

absl::Status Client::Impl::Start() {
  std::vector<internal::ServerAddress> servers;
  if (!options_.target.empty()) {
    servers.push_back({options_.target, options_.target});
  } else if (!options_.servers.empty()) {
    QAQKV_ASSIGN_OR_RETURN(servers, ServerList(options_.servers, "options.servers"));
  } else {
    // A client may start before its servers' DNS records exist (a worker
    // scheduled before the cache): calls fail UNAVAILABLE until the
    // re-resolver finds them.
    absl::StatusOr<std::vector<internal::ServerAddress>> found =
        internal::ResolveServers(options_.discovery);
    if (found.ok()) {
      servers = *std::move(found);
    } else if (found.status().code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(absl::StrCat("options.", found.status().message()));
    }
  }
  QAQKV_RETURN_IF_ERROR(SetServers(std::move(servers)));
  if (sharded()) {
    const absl::Duration tick = std::min(options_.health_check_interval, absl::Milliseconds(250));
    health_ = std::make_unique<internal::Ticker>(tick, [this] { CheckHealth(); });
    if (!options_.discovery.empty()) {
      discovery_ = std::make_unique<internal::Ticker>(options_.discovery_interval,
                                                      [this] { Rediscover(); });
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<const internal::Membership> Client::Impl::members() const {
  std::lock_guard<std::mutex> lock(members_mu_);
  return members_;
}

absl::Status Client::Impl::SetServers(std::vector<internal::ServerAddress> servers) {
  std::shared_ptr<const internal::Membership> old = members();
  auto next = std::make_shared<internal::Membership>();
  std::set<std::string> names;
  for (internal::ServerAddress& s : servers) {
    if (!names.insert(s.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("servers: '", s.name, "' is listed twice"));
    }
    // Keep an endpoint that stays: its connections and health carry over.
    std::shared_ptr<internal::Endpoint> endpoint;
    for (const std::shared_ptr<internal::Endpoint>& e : old->endpoints) {
      if (e->name() == s.name && e->address() == s.address) endpoint = e;
    }
    if (endpoint == nullptr) {
      endpoint = std::make_shared<internal::Endpoint>(s.name, s.address, MakeChannels(s.address));
    }
    next->hashes.push_back(endpoint->hash());
    next->endpoints.push_back(std::move(endpoint));
  }
  std::lock_guard<std::mutex> lock(members_mu_);
  members_ = std::move(next);
  return absl::OkStatus();
}

void Client::Impl::Rediscover() {
  absl::StatusOr<std::vector<internal::ServerAddress>> found =
      internal::ResolveServers(options_.discovery);
  // A failed lookup keeps the servers we know: DNS hiccups are common, and
  // an empty membership would fail every call.
  if (!found.ok() || found->empty()) return;
  std::shared_ptr<const internal::Membership> now = members();
  bool same = found->size() == now->endpoints.size();
  for (size_t i = 0; same && i < found->size(); ++i) {
    same = (*found)[i].name == now->endpoints[i]->name() &&
           (*found)[i].address == now->endpoints[i]->address();
  }
  if (!same) static_cast<void>(SetServers(*std::move(found)));
}

void Client::Impl::CheckHealth() {
  std::shared_ptr<const internal::Membership> m = members();
  for (const std::shared_ptr<internal::Endpoint>& e : m->endpoints) {
    const absl::Time now = absl::Now();
    if (!e->DueForProbe(now, options_.health_check_interval)) continue;
    e->Probed(now);
    // grpc.health.v1.Health/Check for the whole server (empty request); a
    // raw call keeps the health proto out of the build. The reply SERVING
    // is field 1 = 1: the two bytes 08 01.
    grpc::ClientContext context;
    Prepare(context, std::min(options_.replica_deadline, absl::Seconds(1)));
    const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check",
                                           grpc::internal::RpcMethod::NORMAL_RPC);
    // An empty but valid message (a default ByteBuffer is "no message").
    grpc::Slice empty;
    grpc::ByteBuffer request(&empty, 1), response;
    const grpc::Status status =
        grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
            &e->channel(e->NextChannel()), method, &context, request, &response);
    bool serving = false;
    std::vector<grpc::Slice> slices;
    if (status.ok() && response.Dump(&slices).ok()) {
      std::string bytes;
      for (const grpc::Slice& slice : slices) {
        bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
      }
      serving = bytes == std::string("\x08\x01", 2);
    }
    if (serving) {
      e->MarkUp();
    } else {
      e->MarkDown(absl::Now());
    }
  }
}

void Client::Impl::Prepare(grpc::ClientContext& context, absl::Duration deadline) const {
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  // Per-call metadata rather than call credentials: gRPC refuses to send
  // call credentials over an insecure channel, and plaintext on loopback is
  // a supported setup.
  if (!options_.bearer_token.empty()) {
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
  }
}

absl::Duration Client::Impl::Jitter(absl::Duration backoff) {
  std::lock_guard<std::mutex> lock(rng_mu_);
  return backoff * absl::Uniform(rng_, 0.5, 1.0);
}

absl::Status Client::Impl::CallOn(internal::Endpoint& endpoint, Attempt attempt,
                                  absl::Duration deadline, int max_attempts) {
  const RetryPolicy& policy = options_.retry;
  absl::Duration backoff = policy.initial_backoff;
  // Each attempt takes the next channel, so a retry avoids a broken one.
  size_t index = endpoint.NextChannel();
  for (int n = 1;; ++n) {
    grpc::ClientContext context;
    Prepare(context, deadline);
    bool retryable = true;
    absl::Status status =
        attempt(Conn{endpoint.stub(index), &endpoint.channel(index)}, context, retryable);
    const absl::StatusCode code = status.code();
    endpoint.Observe(status, absl::Now());
    if (code != absl::StatusCode::kUnavailable || !retryable) return status;
    if (n >= max_attempts) {
      return absl::Status(code, absl::StrCat(status.message(), " (", Sv(endpoint.name()),
                                             ": gave up after ", n,
                                             n == 1 ? " attempt)" : " attempts)"));
    }
    index = endpoint.NextChannel();
    grpc::Channel& channel = endpoint.channel(index);
    // A channel whose connection failed fails every call fast and, in gRPC
    // 1.51, does not reconnect on its own once its reconnect backoff ends
    // (pick_first leaves the subchannel IDLE). Ask it to connect, and end
    // the backoff early once it is connected.
    channel.GetState(/*try_to_connect=*/true);
    channel.WaitForConnected(absl::ToChronoTime(absl::Now() + Jitter(backoff)));
    backoff = std::min(policy.max_backoff, backoff * policy.multiplier);
  }
}

absl::Status Client::Impl::NoServers() const {
  return absl::UnavailableError(
      absl::StrCat("no servers: discovery '", options_.discovery, "' has resolved none yet"));
}

absl::Status Client::Impl::Call(Attempt attempt) {
  std::shared_ptr<const internal::Membership> m = members();
  if (m->endpoints.empty()) return NoServers();
  return CallOn(*m->endpoints[0], attempt, options_.deadline, options_.retry.max_attempts);
}

absl::StatusOr<v1::PutPagesResponse> Client::Impl::StreamPutTo(internal::Endpoint& endpoint,
                                                               const v1::BlockFormat& format,
                                                               PageSource& source, int attempts) {
  v1::PutPagesResponse response;
  const std::string format_bytes = format.SerializeAsString();
  // Declared before the calls, so it waits (at return, after every call and
  // its context are gone) until gRPC has dropped the slices that point into
  // the caller's pages.
  internal::SliceFence fence;
  absl::Status status = CallOn(endpoint, [&](const Conn& conn, grpc::ClientContext& context,
                                             bool&) -> absl::Status {
    source.Begin();
    response.Clear();
    // A raw call: messages are slices over the page bytes (internal/wire.h),
    // which the server's generated code parses as PutPagesRequest.
    const grpc::internal::RpcMethod method("/qaqkv.v1.KvCache/PutPages",
                                           grpc::internal::RpcMethod::CLIENT_STREAMING);
    // The headers go out with the first message: otherwise creating the
    // writer blocks on a round of the completion queue of its own.
    context.set_initial_metadata_corked(true);
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(conn.channel, method,
                                                                      &context, &response));
    std::vector<internal::OutPage> batch;
    size_t batch_bytes = 0;
    bool first = true;    // the first message must carry the format
    bool broken = false;  // a Write failed: the stream is dead, Finish says why
    auto flush = [&] {
      grpc::ByteBuffer message =
          internal::EncodePutMessage(first ? format_bytes : std::string(), batch, fence);
      first = false;
      broken = !writer->Write(message);
      batch.clear();
      batch_bytes = 0;
    };
    absl::Status local;
    while (!broken) {
      internal::OutPage page;
      absl::StatusOr<bool> more = source.Next(&page);
      if (!more.ok()) {
        local = more.status();
        break;
      }
      if (!*more) break;
      // Key, layer and field tags: small, but thousands of tiny pages add up.
      const size_t size = page.data.size() + 32;
      if (!batch.empty() && batch_bytes + size > kBatchBytes) flush();
      if (broken) break;
      batch.push_back(std::move(page));
      batch_bytes += size;
      if (batch_bytes >= kBatchBytes) flush();
    }
    if (!local.ok()) {
      // Our own failure (e.g. encoding): end the stream without committing
      // anything more, and report ours rather than CANCELLED.
      source.Abort();
      context.TryCancel();
      static_cast<void>(writer->Finish());  // CANCELLED, by us: nothing to add
      return local;
    }
    if (!broken && !batch.empty()) {
      // The last message carries the end of the stream: one write, not two.
      grpc::ByteBuffer message =
          internal::EncodePutMessage(first ? format_bytes : std::string(), batch, fence);
      broken = !writer->Write(message, grpc::WriteOptions().set_last_message());
    } else if (!broken) {
      writer->WritesDone();
    }
    if (broken) source.Abort();
    return FromGrpc(writer->Finish());
  }, options_.deadline, attempts);
  QAQKV_RETURN_IF_ERROR(status);
  return response;
}

absl::Status Client::Impl::StreamGetFrom(
    internal::Endpoint& endpoint, std::span<const BlockKey> blocks, int layer_begin,
    int layer_end, absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
    OnPage on_page, int attempts) {
  v1::GetPagesRequest request;
  for (const BlockKey& key : blocks) request.add_block_keys(KeyBytes(key));
  request.set_layer_begin(static_cast<uint32_t>(layer_begin));
  request.set_layer_end(static_cast<uint32_t>(layer_end));
  const size_t num_blocks = blocks.size();

  return CallOn(endpoint, [&](const Conn& conn, grpc::ClientContext& context,
                              bool& retryable) -> absl::Status {
    // A raw call: each message is parsed in place (internal/wire.h), so the
    // page bytes are not copied out of what gRPC received.
    const grpc::internal::RpcMethod method("/qaqkv.v1.KvCache/GetPages",
                                           grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(conn.channel, method,
                                                                      &context, request));
    // Ends the stream early with our own error instead of the server's.
    auto abandon = [&](absl::Status why) {
      context.TryCancel();
      static_cast<void>(reader->Finish());  // CANCELLED, by us: nothing to add
      return why;
    };
    grpc::ByteBuffer buffer;
    bool have_format = false;
    size_t received = 0, total = 0;
    while (reader->Read(&buffer)) {
      absl::StatusOr<internal::InMessage> message = internal::ParseGetMessage(buffer);
      buffer.Clear();
      if (!message.ok()) return abandon(message.status());
      if (!have_format) {
        if (!message->has_format) {
          return abandon(absl::InternalError("server's first GetPages message has no format"));
        }
        const uint32_t layers = message->format.geometry().num_layers();
        const uint32_t end = layer_end == 0 ? layers : static_cast<uint32_t>(layer_end);
        if (end > layers || end <= static_cast<uint32_t>(layer_begin)) {
          return abandon(absl::InternalError(absl::StrCat(
              "server sent layers of a ", layers, "-layer format for layers [", layer_begin,
              ", ", layer_end, ")")));
        }
        if (absl::Status s = on_format(message->format); !s.ok()) return abandon(s);
        have_format = true;
        total = num_blocks * (end - layer_begin);
      }
      for (const internal::InPage& page : message->pages) {
        // The contract fixes the order (layer-major, blocks in request
        // order), so every page's place is known; anything else is a server
        // bug we must not write into the caller's buffers.
        const size_t block = received % num_blocks;
        const int layer = layer_begin + static_cast<int>(received / num_blocks);
        const BlockKey& want = blocks[block];
        if (received >= total || page.layer != static_cast<uint32_t>(layer) ||
            page.key != std::string_view(reinterpret_cast<const char*>(want.data()),
                                         want.size())) {
          return abandon(absl::InternalError(absl::StrCat(
              "server sent page ", received, " out of order: got layer ", page.layer,
              ", expected block ", block, " layer ", layer, " of ", total, " pages")));
        }
        ++received;
        retryable = false;  // the caller has data now; a retry would repeat it
        if (absl::Status s = on_page(block, layer, page.data, message->keep); !s.ok()) {
          return abandon(s);
        }
      }
    }
    QAQKV_RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    if (!have_format || received != total) {
      return absl::InternalError(absl::StrCat("server ended GetPages after ", received, " of ",
                                              total, " pages"));
    }
    return absl::OkStatus();
  }, options_.deadline, attempts);
}

// ---- PageBytes ------------------------------------------------------------------

void PageBytes::CopyTo(char* out) const {
  for (std::string_view piece : pieces_) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  }
}

std::string_view PageBytes::Flat(std::string* scratch) const {
  if (pieces_.size() == 1) return pieces_[0];
  // resize, not assign: a scratch buffer reused page after page keeps its
  // memory, so gathering writes into pages the process already has.
  scratch->resize(size_);
  CopyTo(scratch->data());
  return *scratch;
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
    return TierStats{t.hits(), t.misses(), t.evictions(), t.bytes(), t.entries()};
  };
  ServerStats stats;
  stats.tenant_bytes = response.tenant_bytes();
  stats.tenant_blocks = response.tenant_blocks();
  stats.dram = tier(response.dram());
  stats.disk = tier(response.disk());
  stats.blocks_evicted = response.blocks_evicted();
  stats.checksum_failures = response.checksum_failures();
  stats.total_bytes = response.total_bytes();
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
                         ServerList(servers, "servers"));
  return impl_->SetServers(std::move(list));
}

}  // namespace qaqkv::client
