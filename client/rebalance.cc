// Client::Rebalance: every block and session of the tenant back on its R
// rendezvous owners, copies elsewhere removed (docs/operations.md,
// "Rebalance"). Listing first, everywhere, before anything changes; then
// copies; then removals, each only once the owners are known to hold what
// is removed.
#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "client/internal/client_impl.h"
#include "qaqkv/limits.h"

namespace qaqkv::client {
namespace {

using base::AsAbsl;
using internal::Endpoint;
using internal::Named;

// Listing pages: large enough that a million blocks take 100 calls.
constexpr uint32_t kListPage = 10000;
// Page bytes one copy stream holds in memory at most (a block more when a
// single block is larger).
constexpr uint64_t kCopyBatchBytes = uint64_t{64} << 20;
// Keys per DeleteBlocks call.
constexpr size_t kDeleteBatch = 4096;

struct BlockCopies {
  uint64_t bytes = 0;
  std::vector<size_t> holders;  // servers (indices into `all`) that have it committed
};

struct SessionCopy {
  size_t server = 0;
  int64_t updated_ms = 0;
  int64_t deleted_ms = 0;
  int64_t version() const { return std::max(updated_ms, deleted_ms); }
};

bool Contains(const std::vector<size_t>& v, size_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

absl::StatusOr<Client::RebalanceReport> Client::Impl::Rebalance(
    const Client::RebalanceOptions& options,
    const std::function<void(const Client::RebalanceReport&)>& progress) {
  if (!sharded()) {
    return absl::FailedPreconditionError(
        "rebalance: needs a client of several servers (options.servers or options.discovery)");
  }
  if (options.batch_blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("options.batch_blocks: ", options.batch_blocks, " is below 1"));
  }
  if (!(options.max_bytes_per_second >= 0)) {
    return absl::InvalidArgumentError("options.max_bytes_per_second: must be >= 0");
  }
  std::shared_ptr<const internal::Membership> m = members();
  if (m->endpoints.empty()) return NoServers();
  QAQKV_ASSIGN_OR_RETURN(const std::vector<internal::ServerAddress> draining,
                         internal::ParseServerList(options.draining, "options.draining"));
  // Owners are ranked among the client's servers; draining ones follow them
  // in `all`, so an owner's index is the same in both.
  std::vector<std::shared_ptr<Endpoint>> all = m->endpoints;
  for (size_t i = 0; i < draining.size(); ++i) {
    for (const std::shared_ptr<Endpoint>& e : all) {
      if (e->name() == draining[i].name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "options.draining[", i, "]: '", draining[i].name, "' is listed twice or is a server"));
      }
    }
    all.push_back(std::make_shared<Endpoint>(draining[i].name, draining[i].address,
                                             MakeChannels(draining[i].address)));
  }
  const size_t r = Replicas(*m);
  auto owners_of = [&](std::string_view key) {
    std::vector<size_t> o = m->Rank(key);
    o.resize(std::min(o.size(), r));
    return o;
  };
  auto call = [&](Endpoint& e, auto rpc) {
    absl::Status s = CallOn(
        e, [&](const Conn& c, grpc::ClientContext& context, bool&) { return rpc(c, context); },
        options_.deadline, options_.retry.max_attempts);
    return s.ok() ? s : Named(e, s);
  };

  RebalanceReport report;
  auto failed = [&](const absl::Status& s) {
    if (report.errors++ == 0) report.first_error = s.ToString();
  };

  // ---- List everything, everywhere, before changing anything.
  std::map<BlockKey, BlockCopies> blocks;
  std::map<std::string, std::vector<SessionCopy>> sessions;
  for (size_t e = 0; e < all.size(); ++e) {
    std::string after;
    for (;;) {
      v1::ListBlocksRequest request;
      request.set_start_after(after);
      request.set_limit(kListPage);
      v1::ListBlocksResponse response;
      QAQKV_RETURN_IF_ERROR(call(*all[e], [&](const Conn& c, grpc::ClientContext& context) {
        return FromGrpc(c.stub.ListBlocks(&context, request, &response));
      }));
      for (const v1::BlockInfo& b : response.blocks()) {
        if (!b.committed()) continue;  // being written: its writer places it
        QAQKV_ASSIGN_OR_RETURN(const BlockKey key, KeyFromBytes(b.block_key(), "block_key"));
        BlockCopies& copies = blocks[key];
        copies.bytes = std::max(copies.bytes, b.bytes());
        copies.holders.push_back(e);
      }
      if (response.blocks_size() < static_cast<int>(kListPage)) break;
      after = response.blocks(response.blocks_size() - 1).block_key();
    }
    after.clear();
    for (;;) {
      v1::ListSessionsRequest request;
      request.set_start_after(after);
      request.set_limit(kListPage);
      request.set_versions(true);
      v1::ListSessionsResponse response;
      QAQKV_RETURN_IF_ERROR(call(*all[e], [&](const Conn& c, grpc::ClientContext& context) {
        return FromGrpc(c.stub.ListSessions(&context, request, &response));
      }));
      for (const v1::SessionVersion& v : response.versions()) {
        sessions[v.session_id()].push_back({e, v.updated_ms(), v.deleted_ms()});
      }
      if (response.versions_size() < static_cast<int>(kListPage)) break;
      after = response.versions(response.versions_size() - 1).session_id();
    }
  }
  report.blocks = blocks.size();
  report.sessions = sessions.size();
  if (progress) progress(report);

  // ---- Blocks: copy what owners lack, from a server that has it.
  std::map<std::pair<size_t, size_t>, std::vector<BlockKey>> plan;  // (from, to) -> blocks
  for (const auto& [key, copies] : blocks) {
    for (size_t owner : owners_of(KeyView(key))) {
      if (Contains(copies.holders, owner)) continue;
      // Prefer a source among the client's servers over a draining one.
      plan[{copies.holders.front(), owner}].push_back(key);
    }
  }
  const absl::Time start = absl::Now();
  auto pace = [&] {
    if (options.max_bytes_per_second <= 0) return;
    const absl::Time due =
        start + absl::Seconds(static_cast<double>(report.bytes_copied) / options.max_bytes_per_second);
    const absl::Duration wait = due - absl::Now();
    if (wait > absl::ZeroDuration()) std::this_thread::sleep_for(absl::ToChronoNanoseconds(wait));
  };
  std::map<BlockKey, std::vector<size_t>> landed;  // owners that now hold a copy made here
  // Copies `keys` from `from` to `to` in one GetPages and one PutPages.
  // Blocks in a batch may differ in format or vanish (evicted): such a
  // batch is copied again block by block.
  std::function<void(Endpoint&, Endpoint&, size_t, std::span<const BlockKey>)> copy =
      [&](Endpoint& from, Endpoint& to, size_t to_index, std::span<const BlockKey> keys) {
        std::vector<internal::OutPage> pages;
        v1::BlockFormat format;
        absl::Status got = StreamGetFrom(
            from, keys, 0, 0,
            [&](const v1::BlockFormat& f) {
              format = f;
              return absl::OkStatus();
            },
            [&](size_t i, int layer, const PageBytes& data, const std::shared_ptr<const void>&) {
              auto owned = std::make_shared<std::string>(data.size(), '\0');
              data.CopyTo(owned->data());
              pages.push_back({keys[i], static_cast<uint32_t>(layer), *owned, owned});
              return absl::OkStatus();
            },
            options_.retry.max_attempts);
        if (!got.ok()) {
          const bool per_block = absl::IsNotFound(got) || absl::IsFailedPrecondition(got);
          if (per_block && keys.size() > 1) {
            for (size_t i = 0; i < keys.size(); ++i) copy(from, to, to_index, keys.subspan(i, 1));
          } else if (absl::IsNotFound(got)) {
            ++report.blocks_vanished;
          } else {
            failed(Named(from, got));
          }
          return;
        }
        uint64_t bytes = 0;
        for (const internal::OutPage& p : pages) bytes += p.data.size();
        internal::VectorSource source(pages);
        absl::StatusOr<v1::PutPagesResponse> put =
            StreamPutTo(to, format, source, options_.retry.max_attempts);
        if (!put.ok()) {
          failed(Named(to, put.status()));
          return;
        }
        for (const std::string& k : put->committed_blocks()) {
          absl::StatusOr<BlockKey> key = KeyFromBytes(k, "committed_blocks");
          if (!key.ok()) continue;
          landed[*key].push_back(to_index);
          ++report.blocks_copied;
        }
        report.bytes_copied += bytes;
      };
  for (const auto& [route, keys] : plan) {
    Endpoint& from = *all[route.first];
    Endpoint& to = *all[route.second];
    for (size_t begin = 0; begin < keys.size();) {
      size_t end = begin;
      uint64_t bytes = 0;
      while (end < keys.size() && end - begin < static_cast<size_t>(options.batch_blocks) &&
             (end == begin || bytes + blocks[keys[end]].bytes <= kCopyBatchBytes)) {
        bytes += blocks[keys[end]].bytes;
        ++end;
      }
      copy(from, to, route.second, std::span(keys).subspan(begin, end - begin));
      begin = end;
      if (progress) progress(report);
      pace();
    }
  }

  // ---- Blocks: remove copies off non-owners once every owner has one.
  if (options.remove_misplaced) {
    std::map<size_t, std::vector<BlockKey>> removals;  // server -> blocks
    for (const auto& [key, copies] : blocks) {
      const std::vector<size_t> owners = owners_of(KeyView(key));
      const auto it = landed.find(key);
      const bool placed = std::all_of(owners.begin(), owners.end(), [&](size_t o) {
        return Contains(copies.holders, o) || (it != landed.end() && Contains(it->second, o));
      });
      if (!placed) continue;
      for (size_t h : copies.holders) {
        if (!Contains(owners, h)) removals[h].push_back(key);
      }
    }
    for (const auto& [server, keys] : removals) {
      for (size_t begin = 0; begin < keys.size(); begin += kDeleteBatch) {
        v1::DeleteBlocksRequest request;
        for (size_t i = begin; i < std::min(keys.size(), begin + kDeleteBatch); ++i) {
          request.add_block_keys(KeyBytes(keys[i]));
        }
        v1::DeleteBlocksResponse response;
        absl::Status s = call(*all[server], [&](const Conn& c, grpc::ClientContext& context) {
          return FromGrpc(c.stub.DeleteBlocks(&context, request, &response));
        });
        if (s.ok()) {
          report.blocks_removed += response.blocks_deleted();
        } else {
          failed(s);
        }
      }
      if (progress) progress(report);
    }
  }

  // ---- Sessions: the newest event wins. A deletion newer than every live
  // copy deletes them (each server then keeps its own tombstone); else the
  // newest version goes to owners that lack it, and copies off the owners
  // are removed (tombstones stay until they age out).
  for (const auto& [id, copies] : sessions) {
    int64_t newest_put = 0, newest_delete = 0;
    size_t winner = 0;
    for (const SessionCopy& c : copies) {
      if (c.deleted_ms != 0) {
        newest_delete = std::max(newest_delete, c.deleted_ms);
      } else if (c.updated_ms > newest_put) {
        newest_put = c.updated_ms;
        winner = c.server;
      }
    }
    if (newest_put == 0) continue;  // only tombstones
    // Deletes the session's copy on `server` (with a tombstone, or forgotten
    // without one); true when there was one.
    auto erase = [&](size_t server, bool forget) {
      v1::DeleteSessionRequest request;
      request.set_session_id(id);
      request.set_forget(forget);
      v1::DeleteSessionResponse ignored;
      absl::Status s = call(*all[server], [&](const Conn& conn, grpc::ClientContext& context) {
        return FromGrpc(conn.stub.DeleteSession(&context, request, &ignored));
      });
      if (!s.ok() && !absl::IsNotFound(s)) failed(s);
      return s.ok();
    };
    if (newest_delete >= newest_put) {
      for (const SessionCopy& c : copies) {
        if (c.deleted_ms == 0 && erase(c.server, /*forget=*/false)) ++report.sessions_deleted;
      }
      continue;
    }
    const std::vector<size_t> owners = owners_of(id);
    std::vector<size_t> have;  // owners holding the newest version (or newer)
    std::vector<size_t> need;
    for (size_t o : owners) {
      const bool current = std::any_of(copies.begin(), copies.end(), [&](const SessionCopy& c) {
        return c.server == o && c.version() >= newest_put;
      });
      (current ? have : need).push_back(o);
    }
    if (!need.empty()) {
      v1::GetSessionRequest get;
      get.set_session_id(id);
      v1::GetSessionResponse got;
      absl::Status s = call(*all[winner], [&](const Conn& c, grpc::ClientContext& context) {
        return FromGrpc(c.stub.GetSession(&context, get, &got));
      });
      if (!s.ok()) {
        if (!absl::IsNotFound(s)) failed(s);  // expired or deleted since: nothing to place
        continue;
      }
      v1::PutSessionRequest put;
      *put.mutable_session() = std::move(*got.mutable_session());
      put.set_repair(true);
      for (size_t o : need) {
        v1::PutSessionResponse ignored;
        absl::Status p = call(*all[o], [&](const Conn& c, grpc::ClientContext& context) {
          return FromGrpc(c.stub.PutSession(&context, put, &ignored));
        });
        if (p.ok()) {
          ++report.sessions_copied;
          have.push_back(o);
        } else if (absl::IsAlreadyExists(p)) {
          have.push_back(o);  // it has this version or a newer event
        } else {
          failed(p);
        }
      }
    }
    if (!options.remove_misplaced || have.size() < owners.size()) continue;
    for (const SessionCopy& c : copies) {
      if (c.deleted_ms != 0 || Contains(owners, c.server)) continue;
      if (erase(c.server, /*forget=*/true)) ++report.sessions_removed;
    }
  }
  if (progress) progress(report);
  return report;
}

absl::StatusOr<Client::RebalanceReport> Client::Rebalance(
    const RebalanceOptions& options, std::function<void(const RebalanceReport&)> progress) {
  return impl_->Rebalance(options, progress);
}

}  // namespace qaqkv::client
