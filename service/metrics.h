// Prometheus metrics of the server: requests by method and status code and
// their latency (from a server interceptor, so every method, health checks
// included, is counted without the handlers knowing), page and session bytes
// by method (from the handlers that move them), and whatever the store
// reports at scrape time (service/stats.h).
//
// Thread-safety: every method may be called from any thread. Counters are
// atomics; a method's entry is found once per call, under a mutex only for a
// method not seen before.
#ifndef QAQKV_SERVICE_METRICS_H_
#define QAQKV_SERVICE_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "base/mutex.h"

namespace qaqkv::service {

class Metrics {
 public:
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16
  static constexpr std::array<double, 16> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

  struct PerMethod {
    std::array<std::atomic<uint64_t>, kCodes> by_code{};
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets{};  // last: +Inf
    std::atomic<uint64_t> latency_ns{0};
    std::atomic<uint64_t> bytes_in{0};
    std::atomic<uint64_t> bytes_out{0};
  };

  // Every method of qaqkv.v1.KvCache is listed from the start (read from the
  // proto's descriptor), so a scrape shows all of them at zero.
  Metrics();

  // The entry of a method, by its gRPC path ("/qaqkv.v1.KvCache/Lookup") or
  // its label ("Lookup"). KvCache methods are labelled by their name alone,
  // others by their full name ("grpc.health.v1.Health/Check"). Never null;
  // the pointer stays valid for the life of this object.
  PerMethod* Method(std::string_view path_or_label);

  // A finished call: its status code and how long it took.
  static void RecordCall(PerMethod* m, int code, double seconds);
  // Page and session bytes a handler received or sent (label as Method).
  void AddBytes(std::string_view method, uint64_t bytes_in, uint64_t bytes_out);
  void AddPagesIn(uint64_t n) { pages_in_.fetch_add(n, std::memory_order_relaxed); }
  void AddPagesOut(uint64_t n) { pages_out_.fetch_add(n, std::memory_order_relaxed); }
  void StreamStarted() { streams_.fetch_add(1, std::memory_order_relaxed); }
  void StreamEnded() { streams_.fetch_sub(1, std::memory_order_relaxed); }
  int64_t InFlightStreams() const { return streams_.load(std::memory_order_relaxed); }
  uint64_t Requests(std::string_view method, int code);

  // Prometheus text exposition (version 0.0.4) of everything above, followed
  // by `extra` (the store's figures, service/stats.h).
  std::string Render(const std::function<void(std::string&)>& extra);

  // Counts every call of the server it is installed on (ServerBuilder::
  // experimental().SetInterceptorCreators). `metrics` must outlive it.
  static std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  InterceptorFactory(Metrics* metrics);

 private:
  static std::string Label(std::string_view path_or_label);

  base::Mutex mu_;
  // Ordered by label, so a scrape lists methods in a stable order.
  std::map<std::string, std::unique_ptr<PerMethod>, std::less<>> methods_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> pages_in_{0};
  std::atomic<uint64_t> pages_out_{0};
  std::atomic<int64_t> streams_{0};
};

// Appends one sample line: `name{labels} value`.
void AppendSample(std::string& out, std::string_view name, std::string_view labels, double value);
// Appends the HELP and TYPE lines of a metric family.
void AppendFamily(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help);
// Escapes a label value (backslash, quote, newline).
std::string EscapeLabel(std::string_view value);

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_METRICS_H_
