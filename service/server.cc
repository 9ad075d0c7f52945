#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "proto/tls_check.h"
#include "proto/wire.h"
#include "qaqkv/v1/kvcache.grpc.pb.h"
#include "service/auth.h"
#include "service/metrics.h"
#include "service/validate.h"
#include "service/transfer_broker.h"
#include "base/file.h"
#include "base/mutex.h"
#include "base/thread_pool.h"

namespace qaqkv::service {
namespace {

using base::Mutex;
using base::MutexLock;
using storage::BlockKey;

// Pages per GetPages message are packed up to this many bytes: big enough to
// amortize per-message costs for small pages, small enough that the first
// layer reaches the client early.
constexpr size_t kGetPagesMessageBytes = 1 << 20;

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The one boundary where absl::Status becomes grpc::Status (same numbering).
grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Splits "host:port" or "[v6 address]:port"; the port must be 0..65535
// (gRPC would otherwise take it modulo 65536 and bind somewhere else).
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view addr,
                                                          absl::string_view flag) {
  const size_t colon = addr.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? addr : addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  if (colon == absl::string_view::npos || host.empty() ||
      !absl::SimpleAtoi(addr.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": want host:port with a port in 0..65535 (0 picks one), got \"", addr, "\""));
  }
  return std::make_pair(std::string(host), port);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string KeyBytes(const BlockKey& k) {
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

}  // namespace

// The KvCache service. Handlers validate, call the store and finish on the
// thread gRPC calls them on: the store's calls are short (DRAM hits, or a
// RocksDB point read or WAL append), so a hand-off to another pool would
// cost more latency than it saves.
// GetPages is a raw method: its messages are assembled here from the stored
// page buffers themselves (see GetPagesReactor), so serving a page copies it
// only into the socket.
class KvCacheService final
    : public v1::KvCache::WithRawCallbackMethod_GetPages<v1::KvCache::CallbackService> {
 public:
  KvCacheService(storage::TieredStore* store, const TokenMap* tokens, Metrics* metrics,
                 int tenant_max_streams, int max_message_bytes)
      : store_(store),
        tokens_(tokens),
        metrics_(metrics),
        tenant_max_streams_(tenant_max_streams),
        // Room for the format, the page headers and gRPC's framing.
        get_message_bytes_(std::min<size_t>(kGetPagesMessageBytes,
                                            static_cast<size_t>(max_message_bytes) - (16 << 10))) {}

  absl::StatusOr<std::string> Authenticate(grpc::CallbackServerContext* ctx) const {
    if (tokens_ == nullptr) return std::string(kDefaultTenant);
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) return absl::UnauthenticatedError("authorization: missing bearer token");
    return tokens_->TenantFor(std::string_view(it->second.data(), it->second.size()));
  }

  // A slot for one open stream of `tenant`; kResourceExhausted past the limit.
  absl::Status AcquireStream(const std::string& tenant) {
    MutexLock lock(&streams_mu_);
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
  void ReleaseStream(const std::string& tenant) {
    MutexLock lock(&streams_mu_);
    if (--streams_[tenant] == 0) streams_.erase(tenant);
    metrics_->StreamEnded();
  }

  storage::TieredStore& store() { return *store_; }
  size_t get_message_bytes() const { return get_message_bytes_; }
  // Where PutPages writes run; null: on gRPC's thread (memory-only).
  base::ThreadPool* store_executor() const { return store_executor_; }
  void set_store_executor(base::ThreadPool* e) { store_executor_ = e; }
  Metrics& metrics() { return *metrics_; }

  // Runs a unary handler: authenticate, run `fn(tenant)`, record, finish.
  template <typename Fn>
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, Rpc rpc, Fn fn) {
    const auto start = std::chrono::steady_clock::now();
    uint64_t in = 0, out = 0;
    absl::Status status;
    auto tenant = Authenticate(ctx);
    status = tenant.ok() ? fn(*tenant, in, out) : tenant.status();
    metrics_->Record(rpc, static_cast<int>(status.code()), SecondsSince(start), in, out);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpc(status));
    return reactor;
  }

  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* ctx,
                                   const v1::LookupRequest* req,
                                   v1::LookupResponse* resp) override {
    return Unary(ctx, Rpc::kLookup, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      auto chain = ValidateBlockKeys(req->block_keys(), "block_keys", limits::kMaxLookupKeys);
      if (!chain.ok()) return chain.status();
      std::string descriptor;  // empty: any format
      if (req->has_format()) {
        auto format = ValidateFormat(req->format(), "format");
        if (!format.ok()) return format.status();
        descriptor = std::move(format->descriptor);
      }
      auto n = store_->Lookup(tenant, *chain, descriptor);
      if (!n.ok()) return n.status();
      resp->set_committed_prefix(static_cast<uint32_t>(*n));
      if (req->each_block()) {
        // The prefix already answers its blocks; ask the store about the rest
        // one by one (a chain of one block is that block's own state).
        resp->mutable_committed()->Reserve(static_cast<int>(chain->size()));
        for (size_t i = 0; i < chain->size(); ++i) {
          bool committed = i < *n;
          if (!committed && i > *n) {
            auto one = store_->Lookup(tenant, std::span(*chain).subspan(i, 1), descriptor);
            if (!one.ok()) return one.status();
            committed = *one == 1;
          }
          resp->add_committed(committed);
        }
      }
      return absl::OkStatus();
    });
  }

  grpc::ServerReadReactor<v1::PutPagesRequest>* PutPages(grpc::CallbackServerContext* ctx,
                                                         v1::PutPagesResponse* resp) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetPages(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* req) override;

  // Validates a Session message into a storage record.
  absl::StatusOr<storage::SessionRecord> ValidateSession(const v1::Session& s) {
    if (absl::Status st = storage::ValidateSessionId(s.session_id()); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("session.", st.message()));
    }
    if (!s.has_format()) return absl::InvalidArgumentError("session.format: missing");
    auto format = ValidateFormat(s.format(), "session.format");
    if (!format.ok()) return format.status();
    auto blocks =
        ValidateBlockKeys(s.block_keys(), "session.block_keys", limits::kMaxSessionBlocks);
    if (!blocks.ok()) return blocks.status();
    storage::SessionRecord r;
    r.blocks = std::move(*blocks);
    const uint64_t block_tokens = format->proto.geometry().block_tokens();
    const uint64_t in_blocks = block_tokens * r.blocks.size();
    if (s.token_count() < in_blocks || s.token_count() - in_blocks >= block_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session.token_count: ", s.token_count(), " does not fit ", r.blocks.size(),
          " blocks of ", block_tokens, " tokens plus a tail shorter than a block"));
    }
    const uint64_t tail_tokens = s.token_count() - in_blocks;
    if (tail_tokens == 0 && !s.tail().empty()) {
      return absl::InvalidArgumentError(
          "session.tail: must be empty when token_count ends on a block boundary");
    }
    if (tail_tokens > 0) {
      if (s.tail().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("session.tail: missing for ", tail_tokens, " tail tokens"));
      }
      const uint64_t rows = tail_tokens * format->proto.geometry().num_layers();
      if (rows > limits::kMaxPageTokens) {
        return absl::InvalidArgumentError(absl::StrCat(
            "session.tail: ", tail_tokens, " tail tokens x ", format->proto.geometry().num_layers(),
            " layers is more than a page's ", limits::kMaxPageTokens, " rows"));
      }
      if (absl::Status st = ValidatePageBytes(*format, s.tail(), "session.tail",
                                              static_cast<uint32_t>(rows));
          !st.ok()) {
        return st;
      }
    }
    if (s.ttl_ms() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("session.ttl_ms: ", s.ttl_ms(), " is negative"));
    }
    r.token_count = s.token_count();
    r.ttl_ms = s.ttl_ms();
    r.tail = s.tail();
    r.descriptor = format->descriptor;
    return r;
  }

  grpc::ServerUnaryReactor* PutSession(grpc::CallbackServerContext* ctx,
                                       const v1::PutSessionRequest* req,
                                       v1::PutSessionResponse*) override {
    return Unary(ctx, Rpc::kPutSession, [&](const std::string& tenant, uint64_t& in, uint64_t&) {
      if (!req->has_session()) return absl::InvalidArgumentError("session: missing");
      auto record = ValidateSession(req->session());
      if (!record.ok()) return record.status();
      in = record->tail.size();
      return store_->PutSession(tenant, req->session().session_id(), std::move(*record));
    });
  }

  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* req,
                                       v1::GetSessionResponse* resp) override {
    return Unary(ctx, Rpc::kGetSession, [&](const std::string& tenant, uint64_t&, uint64_t& out) {
      if (absl::Status s = storage::ValidateSessionId(req->session_id()); !s.ok()) return s;
      auto record = store_->GetSession(tenant, req->session_id());
      if (!record.ok()) return record.status();
      auto format = FormatFromDescriptor(record->descriptor);
      if (!format.ok()) return format.status();
      auto prefix = store_->Lookup(tenant, record->blocks);
      if (!prefix.ok()) return prefix.status();
      v1::Session* s = resp->mutable_session();
      s->set_session_id(req->session_id());
      for (const BlockKey& k : record->blocks) s->add_block_keys(KeyBytes(k));
      s->set_token_count(record->token_count);
      s->set_tail(std::move(record->tail));
      *s->mutable_format() = *format;
      s->set_ttl_ms(record->ttl_ms);
      s->set_created_ms(record->created_ms);
      s->set_accessed_ms(record->accessed_ms);
      resp->set_committed_prefix(static_cast<uint32_t>(*prefix));
      out = s->tail().size();
      return absl::OkStatus();
    });
  }

  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* req,
                                         v1::ListSessionsResponse* resp) override {
    return Unary(ctx, Rpc::kListSessions, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      if (req->limit() > limits::kMaxListSessions) {
        return absl::InvalidArgumentError(
            absl::StrCat("limit: ", req->limit(), " is above ", limits::kMaxListSessions));
      }
      auto ids = store_->ListSessions(
          tenant, req->limit() == 0 ? limits::kDefaultListSessions : req->limit());
      if (!ids.ok()) return ids.status();
      for (std::string& id : *ids) resp->add_session_ids(std::move(id));
      return absl::OkStatus();
    });
  }

  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteSessionRequest* req,
                                          v1::DeleteSessionResponse*) override {
    return Unary(ctx, Rpc::kDeleteSession, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      if (absl::Status s = storage::ValidateSessionId(req->session_id()); !s.ok()) return s;
      return store_->DeleteSession(tenant, req->session_id());
    });
  }

  grpc::ServerUnaryReactor* TouchSession(grpc::CallbackServerContext* ctx,
                                         const v1::TouchSessionRequest* req,
                                         v1::TouchSessionResponse*) override {
    return Unary(ctx, Rpc::kTouchSession, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      if (absl::Status s = storage::ValidateSessionId(req->session_id()); !s.ok()) return s;
      return store_->TouchSession(tenant, req->session_id());
    });
  }

  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* ctx,
                                     const v1::GetStatsRequest*,
                                     v1::GetStatsResponse* resp) override {
    return Unary(ctx, Rpc::kGetStats, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      const storage::TenantUsage usage = store_->Usage(tenant);
      resp->set_tenant_bytes(usage.bytes);
      resp->set_tenant_blocks(usage.blocks);
      const storage::DramTierStats dram = store_->DramStats();
      v1::TierStats* d = resp->mutable_dram();
      d->set_hits(dram.hits);
      d->set_misses(dram.misses);
      d->set_evictions(dram.evictions);
      d->set_bytes(dram.charged_bytes);
      d->set_entries(dram.entries);
      v1::TierStats* k = resp->mutable_disk();
      k->set_hits(store_->DiskHits());
      k->set_misses(store_->DiskMisses());
      k->set_evictions(store_->BlocksEvicted());
      k->set_bytes(store_->TotalBytes());
      resp->set_blocks_evicted(store_->BlocksEvicted());
      resp->set_checksum_failures(store_->DiskStats().checksum_failures);
      resp->set_total_bytes(store_->TotalBytes());
      resp->set_version(QAQKV_VERSION);
      return absl::OkStatus();
    });
  }

  grpc::ServerUnaryReactor* OfferTransfer(grpc::CallbackServerContext* ctx,
                                          const v1::OfferTransferRequest* req,
                                          v1::OfferTransferResponse*) override {
    return Unary(ctx, Rpc::kOfferTransfer, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      return transfers_.Offer(tenant, req->offer(), absl::Now());
    });
  }

  grpc::ServerUnaryReactor* AcceptTransfer(grpc::CallbackServerContext* ctx,
                                           const v1::AcceptTransferRequest* req,
                                           v1::AcceptTransferResponse* resp) override {
    return Unary(ctx, Rpc::kAcceptTransfer, [&](const std::string& tenant, uint64_t&, uint64_t&) {
      absl::StatusOr<v1::TransferOffer> offer =
          transfers_.Accept(tenant, req->transfer_id(), absl::Now());
      if (!offer.ok()) return offer.status();
      *resp->mutable_offer() = *std::move(offer);
      return absl::OkStatus();
    });
  }

 private:
  storage::TieredStore* const store_;
  const TokenMap* const tokens_;  // null: single tenant
  Metrics* const metrics_;
  const int tenant_max_streams_;
  const size_t get_message_bytes_;  // page bytes per GetPages message
  base::ThreadPool* store_executor_ = nullptr;
  TransferBroker transfers_;
  Mutex streams_mu_;
  absl::flat_hash_map<std::string, int> streams_ ABSL_GUARDED_BY(streams_mu_);
};

namespace {

// Common bookkeeping of a stream: its tenant slot, status and metrics.
// gRPC owns a reactor from its creation until OnDone, where it deletes
// itself: that is the callback API's ownership contract, so the `new` and
// `delete this` below are the documented idiom, not ownership we manage.
class StreamBase {
 protected:
  StreamBase(KvCacheService* service, Rpc rpc) : service_(service), rpc_(rpc) {}
  ~StreamBase() {
    if (slot_held_) service_->ReleaseStream(tenant_);
    service_->metrics().Record(rpc_, static_cast<int>(final_.code()), SecondsSince(start_),
                               bytes_in_, bytes_out_);
  }
  absl::Status Begin(grpc::CallbackServerContext* ctx) {
    auto tenant = service_->Authenticate(ctx);
    if (!tenant.ok()) return tenant.status();
    tenant_ = std::move(*tenant);
    if (absl::Status s = service_->AcquireStream(tenant_); !s.ok()) return s;
    slot_held_ = true;
    return absl::OkStatus();
  }

  KvCacheService* const service_;
  const Rpc rpc_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::string tenant_;
  bool slot_held_ = false;
  absl::Status final_;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

class PutPagesReactor final : public grpc::ServerReadReactor<v1::PutPagesRequest>,
                              private StreamBase {
 public:
  PutPagesReactor(KvCacheService* service, grpc::CallbackServerContext* ctx,
                  v1::PutPagesResponse* resp)
      : StreamBase(service, Rpc::kPutPages), resp_(resp) {
    if (absl::Status s = Begin(ctx); !s.ok()) {
      End(s);
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or went away): answer what committed
      End(absl::OkStatus());
      return;
    }
    if (base::ThreadPool* executor = service_->store_executor()) {
      // Off gRPC's thread: the write may wait on RocksDB. The task's last
      // act is StartRead or Finish; after it, OnDone may delete `this`.
      executor->Submit([this] { Step(); });
      return;
    }
    Step();
  }

  void OnDone() override { delete this; }

 private:
  void End(absl::Status s) {
    final_ = s;
    Finish(ToGrpc(s));
  }

  // Stores the message just read, then reads the next one (or ends).
  void Step() {
    if (absl::Status s = Process(); !s.ok()) {
      End(s);
      return;
    }
    req_.Clear();
    StartRead(&req_);
  }

  absl::Status Process() {
    if (req_.has_format()) {
      auto format = ValidateFormat(req_.format(), "format");
      if (!format.ok()) return format.status();
      if (!format_.has_value()) {
        format_ = std::move(*format);
      } else if (format->descriptor != format_->descriptor) {
        return absl::InvalidArgumentError(
            "format: differs from the format of the stream's first message");
      }
    } else if (!format_.has_value()) {
      return absl::InvalidArgumentError("format: missing in the stream's first message");
    }
    // Check every page of the message before storing any of it.
    std::vector<BlockKey> keys;
    keys.reserve(req_.pages_size());
    for (int i = 0; i < req_.pages_size(); ++i) {
      auto key = ValidatePage(*format_, req_.pages(i), absl::StrCat("pages[", index_ + i, "]"));
      if (!key.ok()) return key.status();
      keys.push_back(*key);
    }
    const uint32_t num_layers = format_->proto.geometry().num_layers();
    // A block already stored under another format refuses the page; check
    // that for the whole message first too, so a bad message stores none of
    // its pages. (A quota or budget running out midway, or a concurrent
    // writer creating the block, can still stop it partway: the pages before
    // were acknowledged by nothing, and a retry rewrites them idempotently.)
    absl::flat_hash_set<BlockKey> checked;
    for (int i = 0; i < req_.pages_size(); ++i) {
      if (!checked.insert(keys[i]).second) continue;
      auto record = service_->store().GetBlock(tenant_, keys[i]);
      if (!record.ok()) {
        if (absl::IsNotFound(record.status())) continue;
        return record.status();
      }
      if (record->num_layers != num_layers || record->descriptor != format_->descriptor) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pages[", index_ + i, "].block_key: the block is stored under another format (",
            record->num_layers, " layers); a block keeps the format of its first page"));
      }
    }
    for (int i = 0; i < req_.pages_size(); ++i) {
      v1::Page& page = *req_.mutable_pages(i);
      // The received bytes move into the buffer the DRAM tier keeps: no copy.
      auto owned = std::make_shared<const std::string>(std::move(*page.mutable_data()));
      storage::PutPageRequest put;
      put.tenant = tenant_;
      put.block = keys[i];
      put.layer = page.layer();
      put.num_layers = num_layers;
      put.descriptor = format_->descriptor;
      put.page = *owned;
      put.owned = owned;
      put.checksum_verified = true;  // ValidatePage checked it above
      auto result = service_->store().PutPage(put);
      if (!result.ok()) {
        return absl::Status(result.status().code(),
                            absl::StrCat("pages[", index_ + i, "]: ", result.status().message()));
      }
      bytes_in_ += owned->size();
      resp_->set_pages_stored(resp_->pages_stored() + 1);
      resp_->set_bytes_stored(resp_->bytes_stored() + owned->size());
      if (result->committed && committed_.insert(keys[i]).second) {
        resp_->add_committed_blocks(page.block_key());
      }
    }
    service_->metrics().AddPagesIn(req_.pages_size());
    index_ += req_.pages_size();
    return absl::OkStatus();
  }

  v1::PutPagesResponse* const resp_;
  v1::PutPagesRequest req_;
  std::optional<Format> format_;
  absl::flat_hash_set<BlockKey> committed_;
  int64_t index_ = 0;  // pages seen before this message, for messages
};

// A slice that references a stored page instead of copying it; the slice
// owns one reference to the buffer and drops it when gRPC is done with it.
grpc::Slice PageSlice(const storage::PageBuffer& page) {
  // gRPC's C slice API takes a void* and a destroy function, so the
  // reference travels as a heap-allocated PageBuffer that the destroy
  // function reclaims (ownership passes to gRPC, hence release()).
  auto ref = std::make_unique<storage::PageBuffer>(page);
  void* data = const_cast<char*>(page->data());  // gRPC only reads it
  return grpc::Slice(
      data, page->size(),
      [](void* p) { std::unique_ptr<storage::PageBuffer> owned(static_cast<storage::PageBuffer*>(p)); },
      ref.release());
}

class GetPagesReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                              private StreamBase {
 public:
  GetPagesReactor(KvCacheService* service, grpc::CallbackServerContext* ctx,
                  const grpc::ByteBuffer* raw)
      : StreamBase(service, Rpc::kGetPages) {
    absl::Status s = Begin(ctx);
    v1::GetPagesRequest req;
    if (s.ok()) s = ParseRequest(*raw, &req);
    if (s.ok()) s = Prepare(req);
    if (!s.ok()) {
      End(s);
      return;
    }
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {  // the client went away; nothing more can be sent
      End(absl::CancelledError("client cancelled the stream"));
      return;
    }
    Next();
  }

  void OnDone() override { delete this; }

 private:
  void End(absl::Status s) {
    final_ = s;
    Finish(ToGrpc(s));
  }

  static absl::Status ParseRequest(const grpc::ByteBuffer& raw, v1::GetPagesRequest* req) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (raw.Dump(&slices).ok()) {
      for (const grpc::Slice& sl : slices) {
        bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
      }
      if (req->ParseFromString(bytes)) return absl::OkStatus();
    }
    return absl::InvalidArgumentError("request: not a GetPagesRequest");
  }

  // Checks the request and that every block is committed under one format,
  // before anything is sent: a stream either starts whole or not at all.
  absl::Status Prepare(const v1::GetPagesRequest& req) {
    if (req.block_keys_size() == 0) return absl::InvalidArgumentError("block_keys: empty");
    auto keys = ValidateBlockKeys(req.block_keys(), "block_keys", limits::kMaxGetPagesKeys);
    if (!keys.ok()) return keys.status();
    keys_ = std::move(*keys);
    std::string descriptor;
    uint32_t num_layers = 0;
    for (size_t i = 0; i < keys_.size(); ++i) {
      auto record = service_->store().GetBlock(tenant_, keys_[i]);
      if (record.ok() && !record->committed) record = absl::NotFoundError("not found");
      if (!record.ok()) {
        return absl::Status(record.status().code(),
                            absl::StrCat("block_keys[", i, "]: ", record.status().message()));
      }
      if (i == 0) {
        descriptor = record->descriptor;
        num_layers = record->num_layers;
      } else if (record->descriptor != descriptor) {
        return absl::FailedPreconditionError(absl::StrCat(
            "block_keys[", i, "]: stored under a different format than block_keys[0]"));
      }
    }
    layer_ = req.layer_begin();
    layer_end_ = req.layer_end() == 0 ? num_layers : req.layer_end();
    if (layer_end_ > num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer_end: ", req.layer_end(),
                                                     " is above the blocks' ", num_layers,
                                                     " layers"));
    }
    if (layer_ >= layer_end_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer_begin: ", req.layer_begin(), " is not below layer_end ", layer_end_));
    }
    auto format = FormatFromDescriptor(descriptor);
    if (!format.ok()) return format.status();
    format_bytes_ = format->SerializeAsString();
    return absl::OkStatus();
  }

  // Packs the next message (the first carries the format) and starts
  // writing it, or finishes. A message is a sequence of slices: small
  // encoded headers, each followed by the stored page bytes themselves.
  void Next() {
    std::vector<grpc::Slice> slices;
    std::string header;
    if (!sent_first_) wire::AppendFormat(header, format_bytes_);
    size_t bytes = 0, pages = 0;
    const size_t budget = service_->get_message_bytes();
    while (layer_ < layer_end_) {
      storage::PageBuffer page = std::move(pending_);
      if (page == nullptr) {
        // Prepare checked every block is committed with these layers.
        auto got = service_->store().ReadPage(tenant_, keys_[block_], layer_);
        if (!got.ok()) {
          End(absl::Status(got.status().code(),
                           absl::StrCat("block_keys[", block_, "] layer ", layer_, ": ",
                                        got.status().message())));
          return;
        }
        page = std::move(*got);
      }
      const size_t n = page->size();
      // Never past the message limit: a page that does not fit goes first
      // in the next message (a page alone always fits, it came in under
      // the same limit).
      if (pages > 0 && bytes + n > budget) {
        pending_ = std::move(page);
        break;
      }
      wire::AppendPageHeader(header, keys_[block_].data(), keys_[block_].size(), layer_, n);
      slices.emplace_back(header.data(), header.size());  // copies the few header bytes
      header.clear();
      slices.push_back(PageSlice(page));
      bytes += n;
      ++pages;
      if (++block_ == keys_.size()) {
        block_ = 0;
        ++layer_;
      }
    }
    if (pages == 0) {
      End(absl::OkStatus());
      return;
    }
    bytes_out_ += bytes;
    service_->metrics().AddPagesOut(pages);
    sent_first_ = true;
    message_ = grpc::ByteBuffer(slices.data(), slices.size());
    if (layer_ == layer_end_ && pending_ == nullptr) {
      // The last message: the status goes with it, which saves the client a
      // wait for a separate trailer and us a round through OnWriteDone.
      final_ = absl::OkStatus();
      StartWriteAndFinish(&message_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    StartWrite(&message_);
  }

  std::vector<BlockKey> keys_;
  std::string format_bytes_;
  storage::PageBuffer pending_;  // read, did not fit the last message
  grpc::ByteBuffer message_;
  uint32_t layer_ = 0, layer_end_ = 0;
  size_t block_ = 0;
  bool sent_first_ = false;
};

}  // namespace

grpc::ServerReadReactor<v1::PutPagesRequest>* KvCacheService::PutPages(
    grpc::CallbackServerContext* ctx, v1::PutPagesResponse* resp) {
  return new PutPagesReactor(this, ctx, resp);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvCacheService::GetPages(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req) {
  return new GetPagesReactor(this, ctx, req);
}

class Server::Impl {
 public:
  ServerOptions options;
  std::unique_ptr<storage::TieredStore> store;
  // Declared after the store: destroyed (drained) before it.
  std::unique_ptr<base::ThreadPool> store_executor;
  std::unique_ptr<TokenMap> tokens;
  Metrics metrics;
  std::unique_ptr<KvCacheService> service;
  std::unique_ptr<grpc::Server> grpc_server;
  int port = 0;
  std::unique_ptr<httplib::Server> http;
  std::thread http_thread;
  int metrics_port = 0;
  std::atomic<bool> shut_down{false};

  std::string RenderMetrics() {
    return metrics.Render([this](std::string& out) {
      const storage::DramTierStats d = store->DramStats();
      AppendFamily(out, "qaqkv_tier_hits_total", "counter", "Page reads served by a tier.");
      AppendSample(out, "qaqkv_tier_hits_total", "tier=\"dram\"", static_cast<double>(d.hits));
      AppendSample(out, "qaqkv_tier_hits_total", "tier=\"disk\"",
                   static_cast<double>(store->DiskHits()));
      AppendFamily(out, "qaqkv_tier_misses_total", "counter", "Page reads a tier did not have.");
      AppendSample(out, "qaqkv_tier_misses_total", "tier=\"dram\"", static_cast<double>(d.misses));
      AppendSample(out, "qaqkv_tier_misses_total", "tier=\"disk\"",
                   static_cast<double>(store->DiskMisses()));
      AppendFamily(out, "qaqkv_evictions_total", "counter",
                   "DRAM entries and disk blocks evicted under their budgets.");
      AppendSample(out, "qaqkv_evictions_total", "tier=\"dram\"", static_cast<double>(d.evictions));
      AppendSample(out, "qaqkv_evictions_total", "tier=\"disk\"",
                   static_cast<double>(store->BlocksEvicted()));
      AppendFamily(out, "qaqkv_tier_bytes", "gauge", "Bytes a tier holds.");
      AppendSample(out, "qaqkv_tier_bytes", "tier=\"dram\"", static_cast<double>(d.charged_bytes));
      AppendSample(out, "qaqkv_tier_bytes", "tier=\"disk\"",
                   static_cast<double>(store->TotalBytes()));
      AppendFamily(out, "qaqkv_tier_budget_bytes", "gauge", "Byte budget of a tier (0: none).");
      AppendSample(out, "qaqkv_tier_budget_bytes", "tier=\"dram\"",
                   static_cast<double>(store->DramBudget()));
      AppendSample(out, "qaqkv_tier_budget_bytes", "tier=\"disk\"",
                   static_cast<double>(options.store.disk_bytes));
      AppendFamily(out, "qaqkv_checksum_failures_total", "counter",
                   "Stored pages that failed their checksum (never served).");
      AppendSample(out, "qaqkv_checksum_failures_total", "",
                   static_cast<double>(store->DiskStats().checksum_failures));
      AppendFamily(out, "qaqkv_tenant_bytes", "gauge", "Page bytes per tenant.");
      AppendFamily(out, "qaqkv_tenant_blocks", "gauge", "Blocks per tenant.");
      const std::vector<std::string> tenants =
          tokens ? tokens->Tenants() : std::vector<std::string>{std::string(kDefaultTenant)};
      for (const std::string& t : tenants) {
        const storage::TenantUsage u = store->Usage(t);
        const std::string label = absl::StrCat("tenant=\"", EscapeLabel(t), "\"");
        AppendSample(out, "qaqkv_tenant_bytes", label, static_cast<double>(u.bytes));
        AppendSample(out, "qaqkv_tenant_blocks", label, static_cast<double>(u.blocks));
      }
    });
  }

  absl::Status StartMetrics() {
    if (options.metrics_listen.empty()) return absl::OkStatus();
    auto hp = SplitHostPort(options.metrics_listen, "--metrics-listen");
    if (!hp.ok()) return hp.status();
    const auto& [host, port] = *hp;
    http = std::make_unique<httplib::Server>();
    // cpp-httplib sets SO_REUSEPORT by default, which would let this
    // endpoint share a port with another listener; SO_REUSEADDR only lets
    // a restart bind while old connections sit in TIME_WAIT.
    http->set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    http->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderMetrics(), "text/plain; version=0.0.4");
    });
    http->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      res.status = shut_down.load() ? 503 : 200;
      res.set_content(shut_down.load() ? "draining\n" : "ok\n", "text/plain");
    });
    metrics_port = port == 0 ? http->bind_to_any_port(host) : (http->bind_to_port(host, port) ? port : -1);
    if (metrics_port <= 0) {
      return absl::UnavailableError(
          absl::StrCat("--metrics-listen: cannot bind ", options.metrics_listen));
    }
    http_thread = std::thread([this] { http->listen_after_bind(); });
    return absl::OkStatus();
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { (void)Shutdown(absl::ZeroDuration()); }

int Server::port() const { return impl_->port; }
int Server::metrics_port() const { return impl_->metrics_port; }
bool Server::single_tenant() const { return impl_->tokens == nullptr; }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (options.max_message_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-message-bytes: ",
                                                   options.max_message_bytes,
                                                   " is below 1 MiB (1048576)"));
  }
  if (absl::StartsWith(options.listen, "unix:")) {
    if (options.listen.size() == 5) return absl::InvalidArgumentError("--listen: empty unix path");
  } else if (auto hp = SplitHostPort(options.listen, "--listen"); !hp.ok()) {
    return hp.status();
  }
  if (options.store_threads < 1 || options.store_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store-threads: ", options.store_threads, " is outside 1..256"));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key: give both or neither");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca: needs --tls-cert and --tls-key");
  }
  if (!options.auth_tokens_file.empty()) {
    auto tokens = TokenMap::Load(options.auth_tokens_file);
    if (!tokens.ok()) return tokens.status();
    impl->tokens = std::make_unique<TokenMap>(std::move(*tokens));
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    auto cert = base::ReadFile(options.tls_cert_file, "--tls-cert");
    if (!cert.ok()) return cert.status();
    auto key = base::ReadFile(options.tls_key_file, "--tls-key");
    if (!key.ok()) return key.status();
    if (absl::Status s = wire::CheckCertAndKey(*cert, *key, "--tls-cert", "--tls-key");
        !s.ok()) {
      return s;
    }
    grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (!options.tls_client_ca_file.empty()) {
      auto ca = base::ReadFile(options.tls_client_ca_file, "--tls-client-ca");
      if (!ca.ok()) return ca.status();
      if (absl::Status s = wire::CheckCertificates(*ca, "--tls-client-ca"); !s.ok()) return s;
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  }

  auto store = storage::TieredStore::Open(options.store);
  if (!store.ok()) {
    return absl::Status(store.status().code(),
                        options.store.memory_only
                            ? std::string(store.status().message())
                            : absl::StrCat("--data-dir ", options.store.data_dir, ": ",
                                           store.status().message()));
  }
  impl->store = std::move(*store);
  impl->service = std::make_unique<KvCacheService>(impl->store.get(), impl->tokens.get(),
                                                   &impl->metrics, options.tenant_max_streams,
                                                   options.max_message_bytes);

  if (!options.store.memory_only) {
    impl->store_executor = std::make_unique<base::ThreadPool>(options.store_threads);
    impl->service->set_store_executor(impl->store_executor.get());
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, creds, &impl->port);
  // gRPC sets SO_REUSEPORT by default, so a second server on the same port
  // would bind too and the kernel would split connections between two
  // stores. A port in use must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // Pages are incompressible; skip gRPC's compression negotiation costs.
  builder.SetDefaultCompressionAlgorithm(GRPC_COMPRESS_NONE);
  for (const wire::ChannelArg& arg : wire::kPageStreamChannelArgs) {
    builder.AddChannelArgument(arg.name, arg.value);
  }
  builder.RegisterService(impl->service.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen: cannot bind ", options.listen, " (in use, or not a local address)"));
  }
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  if (absl::Status s = impl->StartMetrics(); !s.ok()) {
    impl->grpc_server->Shutdown();
    return s;
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Shutdown(absl::Duration drain) {
  if (impl_ == nullptr || impl_->shut_down.exchange(true)) return absl::OkStatus();
  if (impl_->grpc_server) {
    impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
    // Stops accepting at once; calls in flight get until the deadline, then
    // are cancelled. Every page a client saw acknowledged is already in the
    // WAL, so a cancelled stream loses nothing acknowledged.
    impl_->grpc_server->Shutdown(std::chrono::system_clock::now() +
                                 absl::ToChronoMilliseconds(drain));
    impl_->grpc_server->Wait();
  }
  if (impl_->http) {
    impl_->http->stop();
    if (impl_->http_thread.joinable()) impl_->http_thread.join();
  }
  // Every stream has finished (or was cancelled), so no write is queued.
  impl_->store_executor.reset();
  absl::Status flushed = impl_->store->disk().Flush();
  impl_->grpc_server.reset();
  impl_->service.reset();
  impl_->store.reset();
  return flushed;
}

}  // namespace qaqkv::service
