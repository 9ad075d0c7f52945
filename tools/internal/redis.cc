#include "tools/internal/redis.h"

#include <hiredis/hiredis.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qaqkv::tools {

using base::ChildProcess;
using base::FreeLoopbackPort;
using base::WaitForTcp;
namespace {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

absl::StatusOr<Reply> NextReply(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK) {
    return absl::UnavailableError(absl::StrCat("redis: ", c->errstr));
  }
  Reply reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) {
    return absl::InternalError(absl::StrCat("redis: ", reply->str));
  }
  return reply;
}

}  // namespace

void RedisFree::operator()(redisContext* c) const { redisFree(c); }

absl::StatusOr<RedisServer> StartRedis(const std::string& binary, const std::string& log_path,
                                       const std::vector<int>& cpus) {
  QAQKV_ASSIGN_OR_RETURN(const int port, FreeLoopbackPort());
  QAQKV_ASSIGN_OR_RETURN(
      ChildProcess child,
      ChildProcess::Spawn({binary, "--port", absl::StrCat(port), "--bind", "127.0.0.1", "--save",
                           "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"},
                          log_path, cpus));
  if (absl::Status s = WaitForTcp(port, child, absl::Seconds(30)); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("redis-server: ", s.message()));
  }
  return RedisServer{std::move(child), port};
}

absl::StatusOr<RedisConn> RedisConnect(int port) {
  RedisConn c(redisConnect("127.0.0.1", port));
  if (c == nullptr || c->err) {
    return absl::UnavailableError(absl::StrCat("cannot connect to redis-server on port ", port));
  }
  return c;
}

std::string RedisPageKey(std::span<const uint8_t, 16> block, int layer) {
  std::string k(reinterpret_cast<const char*>(block.data()), block.size());
  k.push_back(static_cast<char>(layer));
  return k;
}

absl::Status RedisSet(redisContext* c, std::span<const std::string> keys,
                      std::span<const std::string_view> values) {
  for (size_t i = 0; i < keys.size(); ++i) {
    redisAppendCommand(c, "SET %b %b", keys[i].data(), keys[i].size(), values[i].data(),
                       values[i].size());
  }
  for (size_t i = 0; i < keys.size(); ++i) QAQKV_RETURN_IF_ERROR(NextReply(c).status());
  return absl::OkStatus();
}

absl::Status RedisGet(redisContext* c, std::span<const std::string> keys, size_t expect_len,
                      uint64_t* bytes) {
  for (const std::string& k : keys) redisAppendCommand(c, "GET %b", k.data(), k.size());
  absl::Status first;
  for (size_t i = 0; i < keys.size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(const Reply reply, NextReply(c));
    if (reply->type != REDIS_REPLY_STRING || (expect_len > 0 && reply->len != expect_len)) {
      if (first.ok()) first = absl::DataLossError("redis: GET returned a missing or wrong value");
      continue;
    }
    *bytes += reply->len;
  }
  return first;
}

absl::StatusOr<size_t> RedisExistingPrefix(redisContext* c, std::span<const std::string> keys) {
  for (const std::string& k : keys) redisAppendCommand(c, "EXISTS %b", k.data(), k.size());
  size_t prefix = 0;
  bool gap = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(const Reply reply, NextReply(c));
    const bool exists = reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    if (!exists) gap = true;
    if (!gap) ++prefix;
  }
  return prefix;
}

}  // namespace qaqkv::tools
