// The page streams of KvCache: PutPages (client streaming, protobuf) and
// GetPages (server streaming, raw: messages assembled from the stored page
// buffers themselves).
//
// gRPC owns a reactor from its creation until OnDone, where it deletes
// itself: that is the callback API's ownership contract, so the `new` and
// `delete this` below are the documented idiom, not ownership we manage.
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/wire.h"
#include "qaqkv/limits.h"
#include "service/internal/kv_cache_service.h"
#include "service/validate.h"

namespace qaqkv::service::internal {
namespace {

using storage::BlockKey;

// What every stream does: admission (token, draining), the tenant's stream
// slot, and its page bytes for /metrics.
class StreamBase {
 protected:
  StreamBase(KvCacheService* service, std::string_view method)
      : service_(service), method_(method) {}
  ~StreamBase() {
    if (slot_held_) service_->ReleaseStream(tenant_);
    service_->metrics().AddBytes(method_, bytes_in_, bytes_out_);
  }
  absl::Status Begin(grpc::CallbackServerContext* ctx) {
    QAQKV_ASSIGN_OR_RETURN(tenant_, service_->Admit(ctx));
    QAQKV_RETURN_IF_ERROR(service_->AcquireStream(tenant_));
    slot_held_ = true;
    return absl::OkStatus();
  }

  KvCacheService* const service_;
  const std::string_view method_;
  std::string tenant_;
  bool slot_held_ = false;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

// A message of at least this many page bytes is a batching client's: the
// block run it ends with is held for the next message (PutPagesReactor::Prepare).
// The C++ client fills messages of about 1 MiB.
constexpr uint64_t kHoldFromMessageBytes = 512u << 10;
// The most page bytes a stream holds back between messages.
constexpr uint64_t kMaxHeldBytes = 16u << 20;

class PutPagesReactor final : public grpc::ServerReadReactor<v1::PutPagesRequest>,
                              private StreamBase {
 public:
  PutPagesReactor(KvCacheService* service, grpc::CallbackServerContext* ctx,
                  v1::PutPagesResponse* resp)
      : StreamBase(service, "PutPages"), ctx_(ctx), resp_(resp) {
    if (absl::Status s = Begin(ctx); !s.ok()) {
      End(s);
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client went away (cancelled, or past its deadline): take back
      // what it left partial; held pages were never stored.
      if (ctx_->IsCancelled()) {
        End(absl::CancelledError("client cancelled the stream"));
        return;
      }
      // The client half-closed: store the pages still held, then answer
      // what committed.
      if (held_.empty()) {
        End(absl::OkStatus());
      } else if (base::ThreadPool* writers = service_->store_writers()) {
        writers->Submit([this] { End(StoreHeld()); });
      } else {
        End(StoreHeld());
      }
      return;
    }
    // Checking the message is CPU work on gRPC's thread; a message whose
    // pages are all held back reads the next one from here.
    if (absl::Status s = Prepare(); !s.ok()) {
      End(s);
      return;
    }
    if (to_store_.empty()) {
      ReadNext();
      return;
    }
    if (base::ThreadPool* writers = service_->store_writers()) {
      // Off gRPC's thread: the write may wait on RocksDB. The task's last
      // act is StartRead or Finish; after it, OnDone may delete `this`.
      writers->Submit([this] { StoreThenReadNext(); });
      return;
    }
    StoreThenReadNext();
  }

  void OnDone() override { delete this; }

 private:
  // A page this stream wrote, so a failed stream can take it back.
  struct Written {
    BlockKey block;
    uint32_t layer;
    uint64_t bytes;
  };
  // A received, validated page on its way to the store: `put` points into
  // `owned`, the stream's tenant and its format.
  struct Pending {
    storage::PutPageRequest put;
    std::shared_ptr<const std::string> owned;
    std::string block_key;  // as the client sent it, for committed_blocks
    int64_t index = 0;      // in the stream, for errors
  };

  void End(absl::Status s) {
    if (!s.ok()) Revert();
    Finish(ToGrpc(s));
  }

  // Takes back the pages this stream stored into blocks that are still not
  // committed (kvcache.proto, PutPages), so a retry starts clean and they
  // hold none of the tenant's quota. Blocks it completed stay.
  void Revert() {
    for (const Written& w : written_) {
      if (committed_.contains(w.block)) continue;
      // The store keeps committed blocks and checks again under the block's
      // lock; a failure leaves an incomplete block for the abandoned-block
      // reclaim, and the stream's error stands.
      (void)service_->store().RevertPage(tenant_, w.block, w.layer, w.bytes);
    }
    written_.clear();
  }

  void ReadNext() {
    req_.Clear();
    StartRead(&req_);
  }

  // Stores what Prepare set aside, then reads the next message (or ends).
  void StoreThenReadNext() {
    const absl::Status s = Store(to_store_);
    to_store_.clear();
    if (!s.ok()) {
      End(s);
      return;
    }
    ReadNext();
  }

  // Checks the message just read and sets `to_store_` to the pages to store
  // now (with any held from the message before); holds the rest.
  absl::Status Prepare() {
    if (req_.has_format()) {
      QAQKV_ASSIGN_OR_RETURN(Format format, ValidateFormat(req_.format(), "format"));
      if (!format_.has_value()) {
        format_ = std::move(format);
      } else if (format.descriptor != format_->descriptor) {
        return absl::InvalidArgumentError(
            "format: differs from the format of the stream's first message");
      }
    } else if (!format_.has_value()) {
      return absl::InvalidArgumentError("format: missing in the stream's first message");
    }
    // Check every page of the message before storing any of it.
    std::vector<BlockKey> keys;
    keys.reserve(req_.pages_size());
    absl::flat_hash_set<std::pair<BlockKey, uint32_t>> seen;
    for (int i = 0; i < req_.pages_size(); ++i) {
      const std::string field = absl::StrCat("pages[", index_ + i, "]");
      QAQKV_ASSIGN_OR_RETURN(const BlockKey key, ValidatePage(*format_, req_.pages(i), field));
      // Two pages for one block and layer in one message is a client bug:
      // which one it meant to store cannot be told.
      if (!seen.insert({key, req_.pages(i).layer()}).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ": block and layer ", req_.pages(i).layer(),
            " already appear earlier in this message"));
      }
      keys.push_back(key);
    }
    const uint32_t num_layers = format_->proto.geometry().num_layers();
    // A block already stored under another format refuses the page; check
    // that for the whole message first too, so a bad message stores none of
    // its pages. (A quota or budget running out midway, or a concurrent
    // writer creating the block, can still stop it partway: End takes back
    // what the stream stored.)
    absl::flat_hash_set<BlockKey> checked;
    for (int i = 0; i < req_.pages_size(); ++i) {
      if (!checked.insert(keys[i]).second) continue;
      absl::StatusOr<storage::BlockRecord> record = service_->store().GetBlock(tenant_, keys[i]);
      if (absl::IsNotFound(record.status())) continue;
      QAQKV_RETURN_IF_ERROR(record.status());
      if (record->num_layers != num_layers || record->descriptor != format_->descriptor) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pages[", index_ + i, "].block_key: the block is stored under another format (",
            record->num_layers, " layers); a block keeps the format of its first page"));
      }
    }
    // The received bytes move into the buffers the DRAM tier keeps: no copy.
    std::vector<Pending> batch = std::move(held_);
    held_.clear();
    held_bytes_ = 0;
    uint64_t message_bytes = 0;
    for (int i = 0; i < req_.pages_size(); ++i) {
      v1::Page& page = *req_.mutable_pages(i);
      Pending& p = batch.emplace_back();
      p.owned = std::make_shared<const std::string>(std::move(*page.mutable_data()));
      p.block_key = std::move(*page.mutable_block_key());
      p.index = index_ + i;
      storage::PutPageRequest& put = p.put;
      put.tenant = tenant_;
      put.block = keys[i];
      put.layer = page.layer();
      put.num_layers = num_layers;
      put.descriptor = format_->descriptor;
      put.page = *p.owned;
      put.owned = p.owned;
      put.checksum_verified = true;  // ValidatePage checked it above
      message_bytes += p.owned->size();
    }
    index_ += req_.pages_size();
    // A store that writes a block's run of pages together (one segment write,
    // one RocksDB batch) would split a block whose pages straddle two
    // messages into two writes: the client fills messages of about 1 MiB
    // whatever the block size. So the run at the end of a full message is
    // held until the next message (or the stream's end) completes it.
    // Nothing is acknowledged before the stream ends, so holding changes no
    // promise; small messages (a client sending as it goes) store at once.
    size_t keep = batch.size();
    if (service_->store().StoresRunsTogether() && message_bytes >= kHoldFromMessageBytes) {
      size_t tail = batch.size();
      uint64_t tail_bytes = 0;
      while (tail > 0 && batch[tail - 1].put.block == batch.back().put.block) {
        --tail;
        tail_bytes += batch[tail].put.page.size();
      }
      // A run that completes its block (with the layers stored before, by
      // this stream or another) is stored now: no later page can join it,
      // and the block commits with this message as it would unheld.
      absl::flat_hash_set<uint32_t> layers;
      for (size_t i = tail; i < batch.size(); ++i) layers.insert(batch[i].put.layer);
      absl::StatusOr<storage::BlockRecord> record =
          service_->store().GetBlock(tenant_, batch.back().put.block);
      if (record.ok()) {
        for (uint32_t l = 0; l < num_layers; ++l) {
          if (record->HasLayer(l)) layers.insert(l);
        }
      }
      const bool complete = layers.size() >= num_layers || (record.ok() && record->committed);
      if (!complete && tail_bytes <= kMaxHeldBytes) keep = tail;
    }
    for (size_t i = keep; i < batch.size(); ++i) {
      held_bytes_ += batch[i].put.page.size();
      held_.push_back(std::move(batch[i]));
    }
    batch.resize(keep);
    to_store_ = std::move(batch);
    return absl::OkStatus();
  }

  // The pages held back from the last message, now that the stream ended.
  absl::Status StoreHeld() {
    std::vector<Pending> batch = std::move(held_);
    held_.clear();
    held_bytes_ = 0;
    return Store(batch);
  }

  // One call for the pages: the store writes a block's run of them together.
  absl::Status Store(std::span<const Pending> batch) {
    if (batch.empty()) return absl::OkStatus();
    std::vector<storage::PutPageRequest> puts;
    puts.reserve(batch.size());
    for (const Pending& p : batch) puts.push_back(p.put);
    std::vector<storage::PutPageResult> results;
    const absl::Status stored = service_->store().PutPages(puts, &results);
    for (size_t i = 0; i < results.size(); ++i) {
      const storage::PutPageResult& result = results[i];
      const Pending& p = batch[i];
      if (result.stored) {
        written_.push_back({p.put.block, p.put.layer, p.owned->size()});
      } else {
        resp_->set_pages_existing(resp_->pages_existing() + 1);
      }
      bytes_in_ += p.owned->size();
      resp_->set_pages_stored(resp_->pages_stored() + 1);
      resp_->set_bytes_stored(resp_->bytes_stored() + p.owned->size());
      if (result.committed && committed_.insert(p.put.block).second) {
        resp_->add_committed_blocks(p.block_key);
      }
    }
    service_->metrics().AddPagesIn(results.size());
    if (!stored.ok()) {
      // A store that takes a run of one block's pages all or none failed the
      // whole run: name it. Otherwise the page it stopped at.
      const size_t first = results.size();
      size_t last = first;
      while (service_->store().StoresRunsTogether() && last + 1 < batch.size() &&
             batch[last + 1].put.block == batch[first].put.block) {
        ++last;
      }
      return base::Annotate(
          stored, last == first
                      ? absl::StrCat("pages[", batch[first].index, "]")
                      : absl::StrCat("pages[", batch[first].index, "] to pages[",
                                     batch[last].index, "] (one block's pages, stored together)"));
    }
    return absl::OkStatus();
  }

  grpc::CallbackServerContext* const ctx_;
  v1::PutPagesResponse* const resp_;
  v1::PutPagesRequest req_;
  std::optional<Format> format_;
  absl::flat_hash_set<BlockKey> committed_;  // blocks committed during the stream
  std::vector<Written> written_;
  std::vector<Pending> held_;  // the run a full message ended with (Prepare)
  std::vector<Pending> to_store_;  // Prepare's pages to store now
  uint64_t held_bytes_ = 0;
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
      : StreamBase(service, "GetPages") {
    absl::Status s = Begin(ctx);
    v1::GetPagesRequest req;
    if (s.ok()) s = ParseRequest(*raw, &req);
    if (s.ok()) s = Prepare(req);
    if (!s.ok()) {
      Finish(ToGrpc(s));
      return;
    }
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {  // the client went away; nothing more can be sent
      Finish(ToGrpc(absl::CancelledError("client cancelled the stream")));
      return;
    }
    Next();
  }

  void OnDone() override { delete this; }

 private:
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
    QAQKV_ASSIGN_OR_RETURN(
        keys_, ValidateBlockKeys(req.block_keys(), "block_keys", limits::kMaxGetPagesKeys));
    if (req.layer_end() != 0 && req.layer_begin() >= req.layer_end()) {
      return absl::InvalidArgumentError(absl::StrCat("layer_begin: ", req.layer_begin(),
                                                     " is not below layer_end ",
                                                     req.layer_end()));
    }
    if (keys_.empty()) return absl::OkStatus();  // nothing to send: an empty stream
    std::string descriptor;
    uint32_t num_layers = 0;
    for (size_t i = 0; i < keys_.size(); ++i) {
      absl::StatusOr<storage::BlockRecord> record = service_->store().GetBlock(tenant_, keys_[i]);
      if (record.ok() && !record->committed) record = absl::NotFoundError("not found");
      QAQKV_RETURN_IF_ERROR(base::Annotate(record.status(), absl::StrCat("block_keys[", i, "]")));
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
    QAQKV_ASSIGN_OR_RETURN(const v1::BlockFormat format, FormatFromDescriptor(descriptor));
    format_bytes_ = format.SerializeAsString();
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
        absl::StatusOr<storage::PageBuffer> got =
            service_->store().ReadPage(tenant_, keys_[block_], layer_);
        if (!got.ok()) {
          Finish(ToGrpc(base::Annotate(
              got.status(), absl::StrCat("block_keys[", block_, "] layer ", layer_))));
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
      Finish(grpc::Status::OK);
      return;
    }
    bytes_out_ += bytes;
    service_->metrics().AddPagesOut(pages);
    sent_first_ = true;
    message_ = grpc::ByteBuffer(slices.data(), slices.size());
    if (layer_ == layer_end_ && pending_ == nullptr) {
      // The last message: the status goes with it, which saves the client a
      // wait for a separate trailer and us a round through OnWriteDone.
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

}  // namespace qaqkv::service::internal
