// Routing of the page calls over the servers: straight to the one server of
// an unsharded client, or, with several servers, to the replicas rendezvous
// hashing picks for each block, with write quorum, failover on read, and
// read repair (docs/architecture.md, Scale-out). Sessions, stats and
// transfers are routed in sharded_sessions.cc.
#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"
#include "base/status_macros.h"
#include "base/strings.h"

namespace qaqkv::client {
namespace {

using base::AsAbsl;
using internal::Named;
using internal::ReplicaFailure;
using internal::VectorSource;

// Layers [layer_begin, layer_end) of `format` (layer_end 0: all).
size_t LayersWanted(const v1::BlockFormat& format, int layer_begin, int layer_end) {
  const int end = layer_end == 0 ? static_cast<int>(format.geometry().num_layers()) : layer_end;
  return end > layer_begin ? static_cast<size_t>(end - layer_begin) : 0;
}

// A sharded put buffers this many encoded bytes, then streams them to their
// replicas (one stream per server, in parallel): enough to amortize the
// streams, small enough to bound the memory of one call.
constexpr size_t kRoundBytes = size_t{64} << 20;

}  // namespace

// ---- Placement --------------------------------------------------------------------

size_t Client::Impl::Replicas(const internal::Membership& m) const {
  const size_t r = options_.replicas == 0 ? 2 : static_cast<size_t>(options_.replicas);
  return std::min(r, m.endpoints.size());
}

size_t Client::Impl::WriteQuorum(const internal::Membership& m) const {
  const size_t r = Replicas(m);
  return options_.write_quorum == 0 ? r : std::min(r, static_cast<size_t>(options_.write_quorum));
}

std::vector<size_t> Client::Impl::Candidates(const internal::Membership& m,
                                             std::string_view key) const {
  std::vector<size_t> order = m.Rank(key);
  const absl::Time now = absl::Now();
  std::stable_partition(order.begin(), order.end(),
                        [&](size_t e) { return m.endpoints[e]->Available(now); });
  return order;
}

// Where each block of a request is committed.
absl::StatusOr<Client::Impl::Presence> Client::Impl::FindBlocks(
    const internal::Membership& m, std::span<const BlockKey> blocks,
    const v1::BlockFormat* format) {
  const size_t n = m.endpoints.size(), r = Replicas(m);
  // A block lives on its first R candidates, or a little further down the
  // ranking when writers skipped ejected servers: ask R + 2 of them.
  const size_t k = std::min(n, r + 2);
  const absl::Time now = absl::Now();
  std::vector<v1::LookupRequest> requests(n);
  // Per block: (endpoint, slot in that endpoint's request, among the R).
  struct Asked {
    size_t endpoint;
    int slot;
    bool replica;
  };
  std::vector<std::vector<Asked>> asked(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::vector<size_t> order = Candidates(m, KeyView(blocks[i]));
    size_t available = 0;
    for (size_t j = 0; j < k; ++j) available += m.endpoints[order[j]]->Available(now);
    for (size_t j = 0; j < k; ++j) {
      const size_t e = order[j];
      // Skip ejected servers unless none is left to ask.
      if (available > 0 && !m.endpoints[e]->Available(now)) continue;
      asked[i].push_back({e, requests[e].block_keys_size(), j < r});
      requests[e].add_block_keys(KeyBytes(blocks[i]));
    }
  }
  std::vector<size_t> active;
  for (size_t e = 0; e < n; ++e) {
    if (requests[e].block_keys_size() == 0) continue;
    requests[e].set_each_block(true);
    if (format != nullptr) *requests[e].mutable_format() = *format;
    active.push_back(e);
  }
  std::vector<v1::LookupResponse> responses(n);
  std::vector<absl::Status> errors(n);
  {
    // Every Lookup and GetPages asks these, so they go out together on
    // gRPC's callback API rather than on a thread each, and are waited for
    // together.
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    std::mutex mu;
    std::condition_variable cv;
    size_t pending = active.size();  // guarded by mu
    for (size_t e : active) {
      internal::Endpoint& endpoint = *m.endpoints[e];
      grpc::ClientContext& context = *contexts.emplace_back(std::make_unique<grpc::ClientContext>());
      Prepare(context, options_.replica_deadline);
      endpoint.stub(endpoint.NextChannel())
          .async()
          ->Lookup(&context, &requests[e], &responses[e], [&, e](grpc::Status status) {
            std::lock_guard<std::mutex> lock(mu);
            errors[e] = FromGrpc(status);
            if (--pending == 0) cv.notify_all();
          });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
  }
  const absl::Time done = absl::Now();
  for (size_t e : active) {
    m.endpoints[e]->Observe(errors[e], done);
    if (errors[e].ok() && responses[e].committed_size() != requests[e].block_keys_size()) {
      errors[e] = absl::InternalError(absl::StrCat(
          AsAbsl(m.endpoints[e]->name()), " answered ", responses[e].committed_size(),
          " of ", requests[e].block_keys_size(), " blocks of a per-block Lookup"));
    }
  }
  Presence p;
  p.holders.resize(blocks.size());
  p.missing.resize(blocks.size());
  p.unknown.resize(blocks.size());
  p.answered.resize(blocks.size(), false);
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (const Asked& a : asked[i]) {
      p.answered[i] = p.answered[i] || errors[a.endpoint].ok();
      if (!errors[a.endpoint].ok()) {
        p.unknown[i] = Named(*m.endpoints[a.endpoint], errors[a.endpoint]);
      } else if (responses[a.endpoint].committed(a.slot)) {
        p.holders[i].push_back(a.endpoint);
      } else if (a.replica) {
        p.missing[i].push_back(a.endpoint);
      }
    }
  }
  return p;
}

// ---- Lookup -------------------------------------------------------------------

absl::StatusOr<size_t> Client::Impl::LookupPrefix(std::span<const BlockKey> blocks,
                                                  const v1::BlockFormat* format) {
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    v1::LookupRequest request;
    for (const BlockKey& key : blocks) request.add_block_keys(KeyBytes(key));
    if (format != nullptr) *request.mutable_format() = *format;
    v1::LookupResponse response;
    QAQKV_RETURN_IF_ERROR(Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return FromGrpc(c.stub.Lookup(&context, request, &response));
    }));
    if (response.committed_prefix() > blocks.size()) {
      return absl::InternalError(absl::StrCat("server reported a committed prefix of ",
                                              response.committed_prefix(), " for ",
                                              blocks.size(), " keys"));
    }
    return static_cast<size_t>(response.committed_prefix());
  }
  QAQKV_ASSIGN_OR_RETURN(const Presence p, FindBlocks(*m, blocks, format));
  const size_t prefix = p.Prefix();
  // A block the servers that answered do not hold is a miss; but when none
  // of the first block's servers could answer, the caller should know the
  // cluster is unreachable rather than see a cold cache.
  if (prefix == 0 && !blocks.empty() && !p.answered[0]) return p.unknown[0];
  return prefix;
}

// ---- PutPages -----------------------------------------------------------------

absl::StatusOr<v1::PutPagesResponse> Client::Impl::StreamPut(const v1::BlockFormat& format,
                                                             PageSource& source) {
  std::shared_ptr<const internal::Membership> m = members();
  if (m->endpoints.empty()) return NoServers();
  if (OneServer(*m)) {
    return StreamPutTo(*m->endpoints[0], format, source, options_.retry.max_attempts);
  }
  return ShardedPut(*m, format, source);
}

absl::StatusOr<v1::PutPagesResponse> Client::Impl::ShardedPut(const internal::Membership& m,
                                                              const v1::BlockFormat& format,
                                                              PageSource& source) {
  const size_t n = m.endpoints.size(), r = Replicas(m), w = WriteQuorum(m);
  struct BlockState {
    std::vector<size_t> targets;  // its R replicas for this call
    std::vector<size_t> acked;    // those that reported it committed
    std::string lost;             // why a replica of it failed, if one did
  };
  std::map<BlockKey, BlockState> blocks;
  std::vector<BlockKey> committed_order;  // blocks in the order they reached the quorum
  std::vector<absl::Status> failed(n);    // a server that failed stays failed for the call
  v1::PutPagesResponse out;

  // Streams each server's queue (in parallel) and counts the commits.
  // Returns the servers that failed in this pass.
  auto pass = [&](std::vector<std::vector<internal::OutPage>>& queues)
      -> absl::StatusOr<std::vector<size_t>> {
    std::vector<size_t> active, newly_failed;
    for (size_t e = 0; e < n; ++e) {
      if (!queues[e].empty() && failed[e].ok()) active.push_back(e);
    }
    std::vector<absl::StatusOr<v1::PutPagesResponse>> results(active.size());
    internal::RunParallel(active.size(), [&](size_t j) {
      VectorSource pages(queues[active[j]]);
      results[j] = StreamPutTo(*m.endpoints[active[j]], format, pages, /*attempts=*/2);
    });
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t e = active[j];
      if (!results[j].ok()) {
        // Bad input fails on every replica alike: report it as it is.
        if (!ReplicaFailure(results[j].status())) return results[j].status();
        failed[e] = results[j].status();
        newly_failed.push_back(e);
        continue;
      }
      out.set_pages_stored(out.pages_stored() + results[j]->pages_stored());
      out.set_bytes_stored(out.bytes_stored() + results[j]->bytes_stored());
      for (int c = 0; c < results[j]->committed_blocks_size(); ++c) {
        QAQKV_ASSIGN_OR_RETURN(const BlockKey key,
                               KeyFromBytes(results[j]->committed_blocks(c),
                                            absl::StrCat("committed_blocks[", c, "]")));
        auto it = blocks.find(key);
        if (it == blocks.end()) continue;  // a server bug; nothing of ours to count
        std::vector<size_t>& acked = it->second.acked;
        if (std::find(acked.begin(), acked.end(), e) != acked.end()) continue;
        acked.push_back(e);
        if (acked.size() == w) committed_order.push_back(key);
      }
    }
    return newly_failed;
  };

  source.Begin();
  for (bool more = true; more;) {
    // One round: pages up to kRoundBytes, each copied (by reference) to the
    // queue of every replica of its block.
    std::vector<std::vector<internal::OutPage>> queues(n);
    size_t bytes = 0;
    while (bytes < kRoundBytes) {
      internal::OutPage page;
      absl::StatusOr<bool> next = source.Next(&page);
      if (!next.ok()) {
        source.Abort();
        return next.status();
      }
      if (!*next) {
        more = false;
        break;
      }
      BlockState& b = blocks[page.key];
      if (b.targets.empty()) {
        b.targets = Candidates(m, KeyView(page.key));
        b.targets.resize(r);
      }
      bytes += page.data.size();
      for (size_t e : b.targets) queues[e].push_back(page);
    }
    // A server that fails mid-call hands its share of the round to each
    // block's next candidate (as writers do for an ejected server), so a
    // block whose pages are all in this round still meets its quorum. A
    // block with pages in earlier rounds cannot: the new replica lacks
    // them, and the block reports the failure below.
    for (int reroutes = 0;; ++reroutes) {
      QAQKV_ASSIGN_OR_RETURN(const std::vector<size_t> lost, pass(queues));
      if (lost.empty()) break;
      std::vector<std::vector<internal::OutPage>> again(n);
      std::map<BlockKey, size_t> moved;  // block -> its new replica
      for (size_t e : lost) {
        for (const internal::OutPage& page : queues[e]) {
          BlockState& b = blocks[page.key];
          if (b.lost.empty()) {
            b.lost = absl::StrCat(AsAbsl(m.endpoints[e]->name()), ": ", failed[e].message());
          }
          auto it = moved.find(page.key);
          if (it == moved.end()) {
            size_t to = n;
            for (size_t c : Candidates(m, KeyView(page.key))) {
              if (failed[c].ok() &&
                  std::find(b.targets.begin(), b.targets.end(), c) == b.targets.end()) {
                to = c;
                break;
              }
            }
            if (to < n) {
              std::replace(b.targets.begin(), b.targets.end(), e, to);
            } else {
              std::erase(b.targets, e);  // no server left to take its place
            }
            it = moved.emplace(page.key, to).first;
          }
          if (it->second < n) again[it->second].push_back(page);
        }
      }
      if (reroutes == 2) break;  // servers keep failing: give up on the round
      queues = std::move(again);
    }
  }
  // A block that lost a replica needs its quorum from the others; blocks
  // left incomplete on purpose (pages of other layers still to come) are
  // not errors, as with one server.
  size_t short_blocks = 0;
  std::string first;
  for (const auto& [key, b] : blocks) {
    if (b.acked.size() >= w || b.lost.empty()) continue;
    if (short_blocks++ == 0) {
      first = absl::StrCat("block ", KeyHex(key), ": ", b.acked.size(), " of ", r,
                           " replicas acknowledged, write quorum ", w, "; ", b.lost);
    }
  }
  if (short_blocks > 0) {
    return absl::UnavailableError(
        absl::StrCat(short_blocks, " blocks missed their write quorum (", first,
                     "); blocks that met it stay stored, and a retry is idempotent"));
  }
  for (const BlockKey& key : committed_order) out.add_committed_blocks(KeyBytes(key));
  return out;
}

// ---- GetPages -----------------------------------------------------------------

absl::Status Client::Impl::StreamGet(
    std::span<const BlockKey> blocks, int layer_begin, int layer_end,
    absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format, OnPage on_page) {
  std::shared_ptr<const internal::Membership> m = members();
  if (m->endpoints.empty()) return NoServers();
  if (OneServer(*m)) {
    return StreamGetFrom(*m->endpoints[0], blocks, layer_begin, layer_end, on_format, on_page,
                         options_.retry.max_attempts);
  }
  return ShardedGet(m, blocks, layer_begin, layer_end, on_format, on_page);
}

absl::Status Client::Impl::ShardedGet(
    const std::shared_ptr<const internal::Membership>& members, std::span<const BlockKey> blocks,
    int layer_begin, int layer_end,
    absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format, OnPage on_page) {
  const internal::Membership& m = *members;
  QAQKV_ASSIGN_OR_RETURN(const Presence p, FindBlocks(m, blocks, nullptr));
  const size_t nb = blocks.size();
  std::vector<size_t> next(nb, 0);  // index into p.holders[i] of the server to try
  std::vector<bool> done(nb, false);
  std::vector<absl::Status> last_error(nb);

  // Guards everything below and serializes the caller's callbacks.
  std::mutex mu;
  bool have_format = false;
  std::string format_bytes;
  v1::BlockFormat format;
  absl::Status callback_error;  // the caller's (or a format clash): final
  std::set<std::pair<size_t, int>> delivered;
  std::vector<size_t> pages_of(nb, 0);  // distinct layers delivered per block
  struct Stashed {
    int layer;
    std::shared_ptr<const std::string> data;
  };
  // Pages of blocks a replica lacks, kept for read repair.
  std::vector<std::vector<Stashed>> stash(nb);

  for (;;) {
    std::map<size_t, std::vector<size_t>> groups;  // endpoint -> block indices, request order
    for (size_t i = 0; i < nb; ++i) {
      if (done[i]) continue;
      if (next[i] >= p.holders[i].size()) {
        QAQKV_RETURN_IF_ERROR(last_error[i]);
        if (!p.unknown[i].ok()) {
          return absl::UnavailableError(absl::StrCat(
              "blocks[", i, "] (", KeyHex(blocks[i]),
              "): not found on the servers that answered, and ", p.unknown[i].message()));
        }
        return absl::NotFoundError(absl::StrCat("blocks[", i, "] (", KeyHex(blocks[i]),
                                                "): not committed on any of its servers"));
      }
      groups[p.holders[i][next[i]]].push_back(i);
    }
    if (groups.empty()) break;
    std::vector<std::pair<size_t, std::vector<size_t>>> work(groups.begin(), groups.end());
    std::vector<absl::Status> results(work.size());
    internal::RunParallel(work.size(), [&](size_t j) {
      const size_t e = work[j].first;
      const std::vector<size_t>& idx = work[j].second;
      std::vector<BlockKey> keys;
      bool last_holder = false;
      for (size_t i : idx) {
        keys.push_back(blocks[i]);
        last_holder = last_holder || next[i] + 1 == p.holders[i].size();
      }
      results[j] = StreamGetFrom(
          *m.endpoints[e], keys, layer_begin, layer_end,
          [&](const v1::BlockFormat& f) -> absl::Status {
            std::lock_guard<std::mutex> lock(mu);
            if (!callback_error.ok()) return absl::CancelledError("another stream failed");
            std::string bytes = f.SerializeAsString();
            if (!have_format) {
              have_format = true;
              format_bytes = std::move(bytes);
              format = f;
              callback_error = on_format(f);
            } else if (bytes != format_bytes) {
              callback_error = absl::FailedPreconditionError(absl::StrCat(
                  "the requested blocks are stored under different formats (",
                  AsAbsl(m.endpoints[e]->name()), " sent codec '", f.codec(), "', another '",
                  format.codec(), "')"));
            }
            return callback_error;
          },
          [&](size_t local, int layer, const PageBytes& data,
              const std::shared_ptr<const void>& keep) -> absl::Status {
            const size_t i = idx[local];
            std::lock_guard<std::mutex> lock(mu);
            if (!callback_error.ok()) return absl::CancelledError("another stream failed");
            // After a failover the next replica resends the whole block.
            if (!delivered.insert({i, layer}).second) return absl::OkStatus();
            ++pages_of[i];
            if (!p.missing[i].empty()) {
              // A copy of its own: a repair is rare, and the put needs the
              // page in one piece.
              auto copy = std::make_shared<std::string>(data.size(), '\0');
              data.CopyTo(copy->data());
              stash[i].push_back({layer, std::move(copy)});
            }
            callback_error = on_page(i, layer, data, keep);
            return callback_error;
          },
          last_holder ? options_.retry.max_attempts : 1);
    });
    QAQKV_RETURN_IF_ERROR(callback_error);
    for (size_t j = 0; j < work.size(); ++j) {
      for (size_t i : work[j].second) {
        // A block whose every layer arrived is done even if its stream
        // failed afterwards (on another block's page, or at the end).
        if (results[j].ok() || (have_format && pages_of[i] == LayersWanted(format, layer_begin,
                                                                           layer_end))) {
          done[i] = true;
        } else {
          last_error[i] = Named(*m.endpoints[work[j].first], results[j]);
          ++next[i];
        }
      }
    }
  }

  // Read repair, off the caller's path: write each block a replica lacks to
  // it, from the pages just read. Best effort: a failed repair is tried
  // again by the next read that finds the gap.
  std::map<size_t, std::vector<internal::OutPage>> repairs;  // endpoint -> pages
  for (size_t i = 0; i < nb; ++i) {
    for (const Stashed& s : stash[i]) {
      for (size_t e : p.missing[i]) {
        repairs[e].push_back({blocks[i], static_cast<uint32_t>(s.layer), *s.data, s.data});
      }
    }
  }
  for (auto& [endpoint, endpoint_pages] : repairs) {
    // (A structured binding cannot be captured by name before clang 16.)
    repair_.Submit([this, members, e = endpoint, pages = std::move(endpoint_pages), format] {
      VectorSource source(pages);
      static_cast<void>(StreamPutTo(*members->endpoints[e], format, source, 1));
    });
  }
  return absl::OkStatus();
}


}  // namespace qaqkv::client
