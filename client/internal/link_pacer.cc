#include "client/internal/link_pacer.h"

#include <algorithm>
#include <thread>

namespace qaqkv::client::internal {

void LinkPacer::Wait(size_t bytes) {
  if (rate_ <= 0 || bytes == 0) return;
  const auto cost = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(static_cast<double>(bytes) / rate_));
  Clock::time_point done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_at_ = std::max(free_at_, Clock::now()) + cost;
    done = free_at_;
  }
  std::this_thread::sleep_until(done);
}

}  // namespace qaqkv::client::internal
