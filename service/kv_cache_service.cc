// The unary methods of KvCache (the streams are in page_streams.cc).
#include <optional>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "qaqkv/limits.h"
#include "service/internal/kv_cache_service.h"
#include "service/stats.h"
#include "service/validate.h"

namespace qaqkv::service::internal {
namespace {

// Pages per GetPages message are packed up to this many bytes: big enough to
// amortize per-message costs for small pages, small enough that the first
// layer reaches the client early.
constexpr size_t kGetPagesMessageBytes = 1 << 20;

std::string KeyBytes(const storage::BlockKey& k) {
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

KvCacheService::KvCacheService(const Options& o)
    : store_(o.store),
      tokens_(o.tokens),
      metrics_(o.metrics),
      store_writers_(o.store_writers),
      tenant_max_streams_(o.tenant_max_streams),
      // Room for the format, the page headers and gRPC's framing.
      get_message_bytes_(std::min<size_t>(kGetPagesMessageBytes, o.max_message_bytes - (16 << 10))) {}

absl::StatusOr<std::string> KvCacheService::Admit(grpc::CallbackServerContext* ctx) const {
  if (draining_.load(std::memory_order_relaxed)) {
    return absl::UnavailableError("server: shutting down (health is NOT_SERVING); use another");
  }
  if (tokens_ == nullptr) return std::string(kDefaultTenant);
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return absl::UnauthenticatedError("authorization: missing bearer token");
  return tokens_->TenantFor(std::string_view(it->second.data(), it->second.size()));
}

absl::Status KvCacheService::AcquireStream(const std::string& tenant) {
  base::MutexLock lock(&streams_mu_);
  int& n = streams_[tenant];
  if (tenant_max_streams_ > 0 && n >= tenant_max_streams_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant has ", n, " open streams, the limit (--tenant-max-streams) is ",
        tenant_max_streams_));
  }
  ++n;
  metrics_->StreamStarted();
  return absl::OkStatus();
}

void KvCacheService::ReleaseStream(const std::string& tenant) {
  base::MutexLock lock(&streams_mu_);
  if (--streams_[tenant] == 0) streams_.erase(tenant);
  metrics_->StreamEnded();
}

template <typename Fn>
grpc::ServerUnaryReactor* KvCacheService::Unary(grpc::CallbackServerContext* ctx, Fn fn) {
  absl::StatusOr<std::string> tenant = Admit(ctx);
  const absl::Status status = tenant.ok() ? fn(*tenant) : tenant.status();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

grpc::ServerUnaryReactor* KvCacheService::Lookup(grpc::CallbackServerContext* ctx,
                                                 const v1::LookupRequest* req,
                                                 v1::LookupResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    QAQKV_ASSIGN_OR_RETURN(
        const std::vector<storage::BlockKey> chain,
        ValidateBlockKeys(req->block_keys(), "block_keys", limits::kMaxLookupKeys));
    std::string descriptor;  // empty: any format
    if (req->has_format()) {
      QAQKV_ASSIGN_OR_RETURN(Format format, ValidateFormat(req->format(), "format"));
      descriptor = std::move(format.descriptor);
    }
    QAQKV_ASSIGN_OR_RETURN(const size_t n, store_->Lookup(tenant, chain, descriptor));
    resp->set_committed_prefix(static_cast<uint32_t>(n));
    if (req->each_block()) {
      // The prefix already answers its blocks; ask the store about the rest
      // one by one (a chain of one block is that block's own state).
      resp->mutable_committed()->Reserve(static_cast<int>(chain.size()));
      for (size_t i = 0; i < chain.size(); ++i) {
        bool committed = i < n;
        if (!committed && i > n) {
          QAQKV_ASSIGN_OR_RETURN(
              const size_t one,
              store_->Lookup(tenant, std::span(chain).subspan(i, 1), descriptor));
          committed = one == 1;
        }
        resp->add_committed(committed);
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::PutSession(grpc::CallbackServerContext* ctx,
                                                     const v1::PutSessionRequest* req,
                                                     v1::PutSessionResponse*) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    if (!req->has_session()) return absl::InvalidArgumentError("session: missing");
    QAQKV_ASSIGN_OR_RETURN(storage::SessionRecord record, ValidateSession(req->session()));
    metrics_->AddBytes("PutSession", record.tail.size(), 0);
    if (req->repair()) {
      if (req->session().updated_ms() <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("session.updated_ms: ", req->session().updated_ms(),
                         "; a repair carries the copy's version (> 0)"));
      }
      record.created_ms = req->session().created_ms();
      record.updated_ms = req->session().updated_ms();
      record.accessed_ms = req->session().accessed_ms();
      return store_->RepairSession(tenant, req->session().session_id(), std::move(record));
    }
    return store_->PutSession(tenant, req->session().session_id(), std::move(record));
  });
}

grpc::ServerUnaryReactor* KvCacheService::GetSession(grpc::CallbackServerContext* ctx,
                                                     const v1::GetSessionRequest* req,
                                                     v1::GetSessionResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    QAQKV_RETURN_IF_ERROR(storage::ValidateSessionId(req->session_id()));
    // An access: the store renews the session's TTL.
    absl::StatusOr<storage::SessionRecord> got = store_->GetSession(tenant, req->session_id());
    if (absl::IsNotFound(got.status())) {
      // Tell a sharded client that this is a deletion, not a gap to repair.
      if (absl::StatusOr<int64_t> deleted = store_->SessionDeletedAt(tenant, req->session_id());
          deleted.ok()) {
        ctx->AddTrailingMetadata("qaqkv-deleted-ms", absl::StrCat(*deleted));
      }
    }
    QAQKV_ASSIGN_OR_RETURN(storage::SessionRecord record, std::move(got));
    if (req->version_only()) {
      v1::Session* s = resp->mutable_session();
      s->set_session_id(req->session_id());
      s->set_ttl_ms(record.ttl_ms);
      s->set_created_ms(record.created_ms);
      s->set_accessed_ms(record.accessed_ms);
      s->set_updated_ms(record.updated_ms);
      return absl::OkStatus();
    }
    QAQKV_ASSIGN_OR_RETURN(v1::BlockFormat format, FormatFromDescriptor(record.descriptor));
    QAQKV_ASSIGN_OR_RETURN(const size_t prefix, store_->Lookup(tenant, record.blocks));
    v1::Session* s = resp->mutable_session();
    s->set_session_id(req->session_id());
    for (const storage::BlockKey& k : record.blocks) s->add_block_keys(KeyBytes(k));
    s->set_token_count(record.token_count);
    s->set_tail(std::move(record.tail));
    *s->mutable_format() = std::move(format);
    s->set_ttl_ms(record.ttl_ms);
    s->set_created_ms(record.created_ms);
    s->set_accessed_ms(record.accessed_ms);
    s->set_updated_ms(record.updated_ms);
    resp->set_committed_prefix(static_cast<uint32_t>(prefix));
    metrics_->AddBytes("GetSession", 0, s->tail().size());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::ListSessions(grpc::CallbackServerContext* ctx,
                                                       const v1::ListSessionsRequest* req,
                                                       v1::ListSessionsResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    if (req->limit() > limits::kMaxListSessions) {
      return absl::InvalidArgumentError(
          absl::StrCat("limit: ", req->limit(), " is above ", limits::kMaxListSessions));
    }
    if (!req->start_after().empty()) {
      if (absl::Status id = storage::ValidateSessionId(req->start_after()); !id.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "start_after: ", id.message().substr(id.message().find(':') + 1)));
      }
    }
    const size_t limit = req->limit() == 0 ? limits::kDefaultListSessions : req->limit();
    QAQKV_ASSIGN_OR_RETURN(std::vector<storage::SessionVersion> versions,
                           store_->ListSessionVersions(tenant, req->start_after(), limit));
    for (storage::SessionVersion& v : versions) {
      if (req->versions()) {
        v1::SessionVersion* out = resp->add_versions();
        out->set_session_id(std::move(v.session_id));
        out->set_updated_ms(v.updated_ms);
        out->set_deleted_ms(v.deleted_ms);
      } else if (v.deleted_ms == 0) {
        resp->add_session_ids(std::move(v.session_id));
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteSessionRequest* req,
                                                        v1::DeleteSessionResponse*) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    QAQKV_RETURN_IF_ERROR(storage::ValidateSessionId(req->session_id()));
    if (req->forget()) return store_->ForgetSession(tenant, req->session_id());
    return store_->DeleteSession(tenant, req->session_id());
  });
}

grpc::ServerUnaryReactor* KvCacheService::TouchSession(grpc::CallbackServerContext* ctx,
                                                       const v1::TouchSessionRequest* req,
                                                       v1::TouchSessionResponse*) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    QAQKV_RETURN_IF_ERROR(storage::ValidateSessionId(req->session_id()));
    return store_->TouchSession(tenant, req->session_id());
  });
}

grpc::ServerUnaryReactor* KvCacheService::ListBlocks(grpc::CallbackServerContext* ctx,
                                                     const v1::ListBlocksRequest* req,
                                                     v1::ListBlocksResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    if (req->limit() > limits::kMaxListBlocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("limit: ", req->limit(), " is above ", limits::kMaxListBlocks));
    }
    std::optional<storage::BlockKey> after;
    if (!req->start_after().empty()) {
      QAQKV_ASSIGN_OR_RETURN(after, ValidateBlockKey(req->start_after(), "start_after"));
    }
    QAQKV_ASSIGN_OR_RETURN(
        const std::vector<storage::BlockInfo> blocks,
        store_->ListBlocks(tenant, after ? &*after : nullptr,
                           req->limit() == 0 ? limits::kDefaultListBlocks : req->limit()));
    resp->mutable_blocks()->Reserve(static_cast<int>(blocks.size()));
    for (const storage::BlockInfo& b : blocks) {
      v1::BlockInfo* out = resp->add_blocks();
      out->set_block_key(KeyBytes(b.block));
      out->set_committed(b.committed);
      out->set_bytes(b.bytes);
      out->set_accessed_ms(b.accessed_ms);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::DeleteBlocks(grpc::CallbackServerContext* ctx,
                                                       const v1::DeleteBlocksRequest* req,
                                                       v1::DeleteBlocksResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    if (req->block_keys().empty()) {
      return absl::InvalidArgumentError("block_keys: empty, name 1 or more blocks");
    }
    QAQKV_ASSIGN_OR_RETURN(
        const std::vector<storage::BlockKey> keys,
        ValidateBlockKeys(req->block_keys(), "block_keys", limits::kMaxGetPagesKeys));
    uint32_t deleted = 0;
    for (const storage::BlockKey& k : keys) {
      absl::Status s = store_->DeleteBlock(tenant, k);
      if (s.ok()) {
        ++deleted;
      } else if (!absl::IsNotFound(s)) {
        return absl::Status(s.code(), absl::StrCat("block_keys: ", deleted,
                                                   " deleted before: ", s.message()));
      }
    }
    resp->set_blocks_deleted(deleted);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::GetStats(grpc::CallbackServerContext* ctx,
                                                   const v1::GetStatsRequest*,
                                                   v1::GetStatsResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    const storage::TenantUsage usage = store_->Usage(tenant);
    resp->set_tenant_bytes(usage.bytes);
    resp->set_tenant_blocks(usage.blocks);
    FillStats(store_->Stats(), resp);
    resp->set_version(QAQKV_VERSION);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* KvCacheService::OfferTransfer(grpc::CallbackServerContext* ctx,
                                                        const v1::OfferTransferRequest* req,
                                                        v1::OfferTransferResponse*) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    return transfers_.Offer(tenant, req->offer(), absl::Now());
  });
}

grpc::ServerUnaryReactor* KvCacheService::AcceptTransfer(grpc::CallbackServerContext* ctx,
                                                         const v1::AcceptTransferRequest* req,
                                                         v1::AcceptTransferResponse* resp) {
  return Unary(ctx, [&](const std::string& tenant) -> absl::Status {
    QAQKV_ASSIGN_OR_RETURN(*resp->mutable_offer(),
                           transfers_.Accept(tenant, req->transfer_id(), absl::Now()));
    return absl::OkStatus();
  });
}

}  // namespace qaqkv::service::internal
