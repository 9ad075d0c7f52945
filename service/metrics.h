// Prometheus metrics of the server: per-RPC request counts by status code,
// latency histograms, bytes in and out, and whatever the store reports at
// scrape time (tier hits, evictions, usage per tenant).
//
// Counters are lock-free on the request path (fixed arrays of atomics indexed
// by RPC and status code); only rendering walks them.
#ifndef QAQKV_SERVICE_METRICS_H_
#define QAQKV_SERVICE_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace qaqkv::service {

enum class Rpc : int {
  kLookup = 0,
  kPutPages,
  kGetPages,
  kPutSession,
  kGetSession,
  kListSessions,
  kDeleteSession,
  kTouchSession,
  kGetStats,
  kOfferTransfer,
  kAcceptTransfer,
  kCount,
};
std::string_view RpcName(Rpc rpc);

class Metrics {
 public:
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16
  static constexpr std::array<double, 16> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

  void Record(Rpc rpc, int code, double seconds, uint64_t bytes_in, uint64_t bytes_out);
  void AddPagesIn(uint64_t n) { pages_in_.fetch_add(n, std::memory_order_relaxed); }
  void AddPagesOut(uint64_t n) { pages_out_.fetch_add(n, std::memory_order_relaxed); }
  void StreamStarted() { streams_.fetch_add(1, std::memory_order_relaxed); }
  void StreamEnded() { streams_.fetch_sub(1, std::memory_order_relaxed); }
  int64_t InFlightStreams() const { return streams_.load(std::memory_order_relaxed); }
  uint64_t Requests(Rpc rpc, int code) const;

  // Prometheus text exposition (version 0.0.4) of everything above, followed
  // by `extra` (the store's gauges, rendered by the caller).
  std::string Render(const std::function<void(std::string&)>& extra) const;

 private:
  struct PerRpc {
    std::array<std::atomic<uint64_t>, kCodes> by_code{};
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets{};  // last: +Inf
    std::atomic<uint64_t> latency_ns{0};
    std::atomic<uint64_t> bytes_in{0};
    std::atomic<uint64_t> bytes_out{0};
  };
  std::array<PerRpc, static_cast<int>(Rpc::kCount)> rpcs_{};
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
