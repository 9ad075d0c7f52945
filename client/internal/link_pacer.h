// An emulated network link for benchmarks (ClientOptions::
// link_bytes_per_second): bytes go through one after another at a fixed
// rate, shared by every stream of a client, as they would through one NIC.
//
// Thread-safety: Wait may be called from any number of threads.
#ifndef QAQKV_CLIENT_INTERNAL_LINK_PACER_H_
#define QAQKV_CLIENT_INTERNAL_LINK_PACER_H_

#include <chrono>
#include <cstddef>
#include <mutex>

namespace qaqkv::client::internal {

class LinkPacer {
 public:
  // 0: no link to emulate; Wait returns at once.
  explicit LinkPacer(double bytes_per_second) : rate_(bytes_per_second) {}

  // Blocks until a link of the configured rate, busy with what earlier calls
  // sent, has carried `bytes` more. Bytes that arrive while the link is idle
  // start at once; a burst queues behind what is already on it.
  void Wait(size_t bytes);

 private:
  using Clock = std::chrono::steady_clock;
  const double rate_;
  std::mutex mu_;  // std::mutex: TSan cannot see into Debian's abseil
  Clock::time_point free_at_{};  // guarded by mu_: when the link is next idle
};

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_LINK_PACER_H_
