// The servers a client talks to: one endpoint per cache server, each with
// its channels and its health, and the membership (which may change while
// calls run: discovery, Client::SetServers). Private to client/.
//
// Placement itself is rendezvous hashing (placement.h) over the endpoints'
// names; health only reorders: an ejected server is skipped while another
// replica can serve, never taken out of the ranking, so a server that comes
// back finds its blocks where every client expects them.
#ifndef QAQKV_CLIENT_INTERNAL_CLUSTER_H_
#define QAQKV_CLIENT_INTERNAL_CLUSTER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"

namespace qaqkv::client::internal {

// One cache server.
class Endpoint {
 public:
  // `name` is its identity for placement (stable across restarts: a
  // StatefulSet pod's DNS name, or host:port); `address` is what the
  // channels connect to.
  Endpoint(std::string name, std::string address,
           std::vector<std::shared_ptr<grpc::Channel>> channels);

  const std::string& name() const { return name_; }
  const std::string& address() const { return address_; }
  uint64_t hash() const { return hash_; }

  // Channels are used round-robin, one per call.
  size_t NextChannel() { return next_.fetch_add(1, std::memory_order_relaxed) % stubs_.size(); }
  size_t num_channels() const { return channels_.size(); }
  grpc::Channel& channel(size_t i) const { return *channels_[i]; }
  ::qaqkv::v1::KvCache::Stub& stub(size_t i) const { return *stubs_[i]; }

  // Health. A server is ejected after a transport failure (UNAVAILABLE or
  // DEADLINE_EXCEEDED) or a failed health check, and probed again after a
  // backoff that doubles with each consecutive failure (100 ms up to 30 s);
  // a passing health check or a successful call readmits it.
  bool Available(absl::Time now) const;
  void MarkDown(absl::Time now);
  void MarkUp();
  // What a call's outcome says of the server: a transport failure
  // (UNAVAILABLE, DEADLINE_EXCEEDED) ejects it, success readmits it, any
  // other answer came from a live server and changes nothing.
  void Observe(const absl::Status& outcome, absl::Time now);
  int consecutive_failures() const;
  // True when the health checker should probe it now: healthy ones every
  // interval, ejected ones once their backoff has passed.
  bool DueForProbe(absl::Time now, absl::Duration interval) const;
  void Probed(absl::Time now);

 private:
  const std::string name_;
  const std::string address_;
  const uint64_t hash_;
  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<::qaqkv::v1::KvCache::Stub>> stubs_;  // filled once
  std::atomic<uint64_t> next_{0};

  mutable std::mutex mu_;  // std::mutex: TSan cannot see into Debian's abseil
  absl::Time down_until_ = absl::InfinitePast();  // guarded by mu_
  absl::Time last_probe_ = absl::InfinitePast();  // guarded by mu_
  int failures_ = 0;                              // guarded by mu_
};

// A snapshot of the servers: calls take one and keep it, so a membership
// change never moves a call's endpoints under it.
struct Membership {
  std::vector<std::shared_ptr<Endpoint>> endpoints;
  std::vector<uint64_t> hashes;  // endpoints[i]->hash()

  // Indices of the endpoints for `key` in rendezvous order, all of them.
  std::vector<size_t> Rank(std::string_view key) const;
};

// A server as configuration names it.
struct ServerAddress {
  std::string name;
  std::string address;
  bool operator==(const ServerAddress&) const = default;
};

// Failures of a server rather than of the request: another replica may
// succeed where this one did not.
bool ReplicaFailure(const absl::Status& s);
// `s` with the server that said it in front of its message.
absl::Status Named(const Endpoint& endpoint, const absl::Status& s);

// A server list as the membership takes it (each server named by its
// address), or kInvalidArgument naming `field`[i].
absl::StatusOr<std::vector<ServerAddress>> ParseServerList(const std::vector<std::string>& servers,
                                                           std::string_view field);

// Every address `host:port` resolves to (getaddrinfo, TCP), each named by
// its reverse-DNS name when it has one (a StatefulSet pod behind a headless
// Service has a stable one, while its IP changes on restart), else by the
// address itself. NOT_FOUND when the name does not resolve.
absl::StatusOr<std::vector<ServerAddress>> ResolveServers(std::string_view host_port);

// Runs fn(0..n-1) concurrently (n - 1 new threads plus the caller's) and
// returns when all are done. For per-server calls that block on the network.
void RunParallel(size_t n, const std::function<void(size_t)>& fn);

// Calls `fn` every `period` on its own thread until destroyed.
class Ticker {
 public:
  Ticker(absl::Duration period, std::function<void()> fn);
  ~Ticker();
  Ticker(const Ticker&) = delete;
  Ticker& operator=(const Ticker&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_CLUSTER_H_
