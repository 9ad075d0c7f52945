// The client's connections: channels per server, membership (a list or DNS
// discovery), health checks and ejection, and the retry loop every call
// goes through.
#include <algorithm>
#include <thread>
#include <utility>

#include <grpcpp/impl/client_unary_call.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "client/internal/client_impl.h"
#include "proto/wire.h"

namespace qaqkv::client {
namespace {

using base::AsAbsl;

int64_t Ms(absl::Duration d) { return absl::ToInt64Milliseconds(d); }

}  // namespace

Client::Impl::Impl(ClientOptions options, std::shared_ptr<grpc::ChannelCredentials> credentials,
                   int threads)
    : options_(std::move(options)),
      credentials_(std::move(credentials)),
      link_(options_.link_bytes_per_second),
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
    QAQKV_ASSIGN_OR_RETURN(servers, internal::ParseServerList(options_.servers, "options.servers"));
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
      return absl::Status(code, absl::StrCat(status.message(), " (", AsAbsl(endpoint.name()),
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


}  // namespace qaqkv::client
