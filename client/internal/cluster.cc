#include "client/internal/cluster.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "client/internal/placement.h"

namespace qaqkv::client::internal {

namespace {
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(30);
}  // namespace

Endpoint::Endpoint(std::string name, std::string address,
                   std::vector<std::shared_ptr<grpc::Channel>> channels)
    : name_(std::move(name)),
      address_(std::move(address)),
      hash_(EndpointHash(name_)),
      channels_(std::move(channels)) {
  for (const std::shared_ptr<grpc::Channel>& channel : channels_) {
    stubs_.push_back(::qaqkv::v1::KvCache::NewStub(channel));
  }
}

bool Endpoint::Available(absl::Time) const {
  std::lock_guard<std::mutex> lock(mu_);
  // Only a passing health check (or a call that reached it anyway)
  // readmits a server: its backoff times the probes, not its return.
  return failures_ == 0;
}

void Endpoint::MarkDown(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  failures_ = std::min(failures_ + 1, 30);
  absl::Duration backoff = kFirstBackoff;
  for (int i = 1; i < failures_ && backoff < kMaxBackoff; ++i) backoff *= 2;
  down_until_ = now + std::min(backoff, kMaxBackoff);
}

void Endpoint::MarkUp() {
  std::lock_guard<std::mutex> lock(mu_);
  failures_ = 0;
  down_until_ = absl::InfinitePast();
}

void Endpoint::Observe(const absl::Status& outcome, absl::Time now) {
  if (outcome.ok()) {
    MarkUp();
  } else if (absl::IsUnavailable(outcome) || absl::IsDeadlineExceeded(outcome)) {
    MarkDown(now);
  }
}

int Endpoint::consecutive_failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failures_;
}

bool Endpoint::DueForProbe(absl::Time now, absl::Duration interval) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (failures_ > 0) return now >= down_until_;
  return now - last_probe_ >= interval;
}

void Endpoint::Probed(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  last_probe_ = now;
}

std::vector<size_t> Membership::Rank(std::string_view key) const {
  return RankEndpoints(key, hashes, hashes.size());
}

absl::StatusOr<std::vector<ServerAddress>> ResolveServers(std::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  uint32_t port = 0;
  if (colon == std::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(host_port.data() + colon + 1,
                                          host_port.size() - colon - 1),
                        &port) ||
      port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("discovery: '", absl::string_view(host_port.data(), host_port.size()),
                     "' is not host:port"));
  }
  std::string host(host_port.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    return absl::NotFoundError(
        absl::StrCat("discovery: cannot resolve '", host, "': ", gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(list, &freeaddrinfo);
  std::set<std::string> seen;
  std::vector<ServerAddress> servers;
  for (const addrinfo* a = list; a != nullptr; a = a->ai_next) {
    char ip[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), nullptr, 0, NI_NUMERICHOST) != 0) {
      continue;
    }
    const bool v6 = a->ai_family == AF_INET6;
    std::string address = v6 ? absl::StrCat("[", ip, "]:", port) : absl::StrCat(ip, ":", port);
    if (!seen.insert(address).second) continue;
    char name[NI_MAXHOST];
    std::string identity = address;
    if (getnameinfo(a->ai_addr, a->ai_addrlen, name, sizeof(name), nullptr, 0, NI_NAMEREQD) ==
        0) {
      identity = absl::StrCat(name, ":", port);
    }
    servers.push_back({std::move(identity), std::move(address)});
  }
  if (servers.empty()) {
    return absl::NotFoundError(absl::StrCat("discovery: '", host, "' has no TCP address"));
  }
  // Two addresses with one reverse name (IPv4 and IPv6 of one host) are one
  // server: keep the first.
  std::set<std::string> names;
  std::erase_if(servers, [&](const ServerAddress& s) { return !names.insert(s.name).second; });
  return servers;
}

void RunParallel(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  std::vector<std::thread> threads;
  threads.reserve(n - 1);
  for (size_t i = 1; i < n; ++i) threads.emplace_back(fn, i);
  fn(0);
  for (std::thread& t : threads) t.join();
}

Ticker::Ticker(absl::Duration period, std::function<void()> fn) {
  thread_ = std::thread([this, period, fn = std::move(fn)] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, absl::ToChronoNanoseconds(period), [this] { return stop_; })) {
      lock.unlock();
      fn();
      lock.lock();
    }
  });
}

Ticker::~Ticker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool ReplicaFailure(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
      return true;
    default:
      return false;
  }
}

absl::Status Named(const Endpoint& endpoint, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(base::AsAbsl(endpoint.name()), ": ", s.message()));
}

absl::StatusOr<std::vector<ServerAddress>> ParseServerList(const std::vector<std::string>& servers,
                                                           std::string_view field) {
  std::vector<ServerAddress> list;
  for (size_t i = 0; i < servers.size(); ++i) {
    if (servers[i].empty() || servers[i].find_first_of(" \t\n,") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(base::AsAbsl(field), "[", i, "]: '",
                                                     servers[i], "' is not a host:port"));
    }
    list.push_back({servers[i], servers[i]});
  }
  return list;
}

}  // namespace qaqkv::client::internal
