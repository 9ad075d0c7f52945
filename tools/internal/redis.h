// Redis 7 as the baseline the service is measured against (`qaqkv bench
// service`, `qaqkv replay`): a redis-server started on loopback with no
// persistence, and pipelined commands over hiredis connections.
#ifndef QAQKV_TOOLS_INTERNAL_REDIS_H_
#define QAQKV_TOOLS_INTERNAL_REDIS_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/child_process.h"

struct redisContext;

namespace qaqkv::tools {

struct RedisFree {
  void operator()(redisContext* c) const;
};
using RedisConn = std::unique_ptr<redisContext, RedisFree>;

struct RedisServer {
  base::ChildProcess process;
  int port = 0;
};

// Starts `binary` on a free loopback port with `--save '' --appendonly no`
// and waits until it accepts connections. Its output goes to `log_path`;
// with `cpus` it runs only on those CPUs (ChildProcess::Spawn).
absl::StatusOr<RedisServer> StartRedis(const std::string& binary, const std::string& log_path,
                                       const std::vector<int>& cpus = {});

absl::StatusOr<RedisConn> RedisConnect(int port);

// The Redis key of one page: the 16-byte block key, then the layer byte.
std::string RedisPageKey(std::span<const uint8_t, 16> block, int layer);

// Pipelined SET of keys[i] = values[i].
absl::Status RedisSet(redisContext* c, std::span<const std::string> keys,
                      std::span<const std::string_view> values);
// Pipelined GET of every key; each must exist and, when expect_len > 0,
// hold that many bytes. Adds the bytes read to *bytes.
absl::Status RedisGet(redisContext* c, std::span<const std::string> keys, size_t expect_len,
                      uint64_t* bytes);
// Pipelined EXISTS: how many leading keys exist.
absl::StatusOr<size_t> RedisExistingPrefix(redisContext* c, std::span<const std::string> keys);

}  // namespace qaqkv::tools

#endif  // QAQKV_TOOLS_INTERNAL_REDIS_H_
