// Routing of the session, stats and transfer calls over the servers: to the
// one server of an unsharded client, or, with several servers, to the
// replicas rendezvous hashing picks for a session id or transfer id (every
// server for listing, deleting and stats).
#include <algorithm>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "client/internal/client_impl.h"
#include "client/internal/host_kv.h"

namespace qaqkv::client {
namespace {

using base::AsAbsl;
using internal::Named;
using internal::ReplicaFailure;

}  // namespace

absl::StatusOr<v1::GetSessionResponse> Client::Impl::GetSession(std::string_view session_id) {
  QAQKV_RETURN_IF_ERROR(internal::ValidateSessionId(session_id));
  v1::GetSessionRequest request;
  request.set_session_id(std::string(session_id));
  v1::GetSessionResponse response;
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    QAQKV_RETURN_IF_ERROR(Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return FromGrpc(c.stub.GetSession(&context, request, &response));
    }));
    return response;
  }
  // The R replicas at once: the first for the session, the others for its
  // version only, so a copy that missed a later put or a delete (a server
  // that was away) is neither served nor spread by repair.
  const std::vector<size_t> order = Candidates(*m, session_id);
  const size_t r = Replicas(*m), k = std::min(order.size(), r + 2);
  struct Answer {
    absl::Status status;
    v1::GetSessionResponse response;
    int64_t deleted_ms = 0;  // the server's tombstone, if it said so
    bool full = false;
  };
  std::vector<Answer> answers(k);
  auto ask = [&](size_t j, bool full) {
    v1::GetSessionRequest one = request;
    one.set_version_only(!full);
    answers[j].full = full;
    answers[j].status = CallOn(
        *m->endpoints[order[j]],
        [&](const Conn& c, grpc::ClientContext& context, bool&) {
          absl::Status s = FromGrpc(c.stub.GetSession(&context, one, &answers[j].response));
          if (absl::IsNotFound(s)) {
            const auto& trailers = context.GetServerTrailingMetadata();
            if (auto it = trailers.find("qaqkv-deleted-ms"); it != trailers.end()) {
              int64_t ms = 0;
              if (absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &ms)) {
                answers[j].deleted_ms = ms;
              }
            }
          }
          return s;
        },
        options_.replica_deadline, 1);
  };
  internal::RunParallel(std::min(r, k), [&](size_t j) { ask(j, j == 0); });
  // Beyond the replicas (a copy written while one was ejected) only when
  // no replica knows the session.
  auto known = [&](size_t upto) {
    for (size_t j = 0; j < upto; ++j) {
      if (answers[j].status.ok() || answers[j].deleted_ms != 0) return true;
    }
    return false;
  };
  for (size_t j = std::min(r, k); j < k && !known(j); ++j) ask(j, true);
  int64_t newest_put = 0, newest_delete = 0;
  size_t best = k;
  absl::Status failure;  // a replica that could not answer
  for (size_t j = 0; j < k; ++j) {
    const absl::Status& s = answers[j].status;
    newest_delete = std::max(newest_delete, answers[j].deleted_ms);
    if (s.ok()) {
      const int64_t v = answers[j].response.session().updated_ms();
      if (best == k || v > newest_put || (v == newest_put && answers[j].full && !answers[best].full)) {
        newest_put = v;
        best = j;
      }
    } else if (ReplicaFailure(s)) {
      failure = Named(*m->endpoints[order[j]], s);
    } else if (!absl::IsNotFound(s)) {
      return s;
    }
  }
  if (best < k && newest_delete != 0 && newest_delete >= newest_put) {
    // Deleted after the newest copy was put: delete the stale copies too.
    for (size_t j = 0; j < k; ++j) {
      if (!answers[j].status.ok()) continue;
      repair_.Submit([this, m, e = order[j], id = std::string(session_id)] {
        v1::DeleteSessionRequest erase;
        erase.set_session_id(id);
        v1::DeleteSessionResponse ignored;
        static_cast<void>(CallOn(
            *m->endpoints[e],
            [&](const Conn& c, grpc::ClientContext& context, bool&) {
              return FromGrpc(c.stub.DeleteSession(&context, erase, &ignored));
            },
            options_.deadline, 1));
      });
    }
    best = k;
  }
  if (best == k) {
    if (newest_delete == 0) QAQKV_RETURN_IF_ERROR(failure);
    return absl::NotFoundError(absl::StrCat("session '", AsAbsl(session_id), "' not found",
                                            newest_delete != 0 ? " (deleted)" : ""));
  }
  if (!answers[best].full) {
    ask(best, true);
    if (!answers[best].status.ok()) return Named(*m->endpoints[order[best]], answers[best].status);
  }
  response = std::move(answers[best].response);
  // Replicas to repair: those that lack the newest version and hold no
  // deletion (a repair is refused where a newer event is stored anyway).
  std::vector<size_t> missing;
  for (size_t j = 0; j < std::min(r, k); ++j) {
    if (j == best || answers[j].deleted_ms != 0) continue;
    const absl::Status& s = answers[j].status;
    if (absl::IsNotFound(s) ||
        (s.ok() && answers[j].response.session().updated_ms() < newest_put)) {
      missing.push_back(order[j]);
    }
  }
  // The server counted the blocks it holds itself; they are spread over
  // the cluster, so count them there.
  std::vector<BlockKey> keys;
  for (int i = 0; i < response.session().block_keys_size(); ++i) {
    QAQKV_ASSIGN_OR_RETURN(BlockKey key, KeyFromBytes(response.session().block_keys(i),
                                                      absl::StrCat("session.block_keys[", i, "]")));
    keys.push_back(key);
  }
  size_t prefix = 0;
  if (!keys.empty()) {
    QAQKV_ASSIGN_OR_RETURN(const Presence p, FindBlocks(*m, keys, &response.session().format()));
    prefix = p.Prefix();
  }
  response.set_committed_prefix(static_cast<uint32_t>(prefix));
  if (!missing.empty()) {
    auto put = std::make_shared<v1::PutSessionRequest>();
    *put->mutable_session() = response.session();
    put->set_repair(true);
    for (size_t e : missing) {
      repair_.Submit([this, m, e, put] {
        v1::PutSessionResponse ignored;
        static_cast<void>(CallOn(
            *m->endpoints[e],
            [&](const Conn& c, grpc::ClientContext& context, bool&) {
              return FromGrpc(c.stub.PutSession(&context, *put, &ignored));
            },
            options_.deadline, 1));
      });
    }
  }
  return response;
}

absl::Status Client::Impl::PutSession(const v1::PutSessionRequest& request) {
  std::shared_ptr<const internal::Membership> m = members();
  auto put = [&](internal::Endpoint& e, int attempts) {
    v1::PutSessionResponse response;
    return CallOn(
        e,
        [&](const Conn& c, grpc::ClientContext& context, bool&) {
          return FromGrpc(c.stub.PutSession(&context, request, &response));
        },
        options_.deadline, attempts);
  };
  if (OneServer(*m)) {
    if (m->endpoints.empty()) return NoServers();
    return put(*m->endpoints[0], options_.retry.max_attempts);
  }
  std::vector<size_t> targets = Candidates(*m, request.session().session_id());
  targets.resize(Replicas(*m));
  std::vector<absl::Status> results(targets.size());
  internal::RunParallel(targets.size(),
                        [&](size_t j) { results[j] = put(*m->endpoints[targets[j]], 2); });
  size_t acked = 0;
  absl::Status failure;
  for (size_t j = 0; j < targets.size(); ++j) {
    if (results[j].ok()) {
      ++acked;
    } else if (!ReplicaFailure(results[j])) {
      return results[j];
    } else if (failure.ok()) {
      failure = results[j];
    }
  }
  if (acked >= WriteQuorum(*m)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("session: ", acked, " of ", targets.size(),
                                             " replicas acknowledged, write quorum ",
                                             WriteQuorum(*m), "; ", failure.message()));
}

std::vector<absl::Status> Client::Impl::AskEach(
    const internal::Membership& m, std::span<const size_t> endpoints,
    absl::FunctionRef<absl::Status(size_t e, const Conn& c, grpc::ClientContext& context)> rpc) {
  std::vector<absl::Status> results(endpoints.size());
  internal::RunParallel(endpoints.size(), [&](size_t j) {
    const size_t e = endpoints[j];
    results[j] = CallOn(
        *m.endpoints[e],
        [&](const Conn& c, grpc::ClientContext& context, bool&) { return rpc(e, c, context); },
        options_.replica_deadline, 1);
    if (!results[j].ok()) results[j] = Named(*m.endpoints[e], results[j]);
  });
  return results;
}

namespace {

std::vector<size_t> AllOf(const internal::Membership& m) {
  std::vector<size_t> all(m.endpoints.size());
  std::iota(all.begin(), all.end(), size_t{0});
  return all;
}

// What several servers answered to one session call.
struct FanOut {
  explicit FanOut(const std::vector<absl::Status>& results) {
    for (const absl::Status& s : results) {
      if (s.ok()) {
        ++ok;
      } else if (s.code() != absl::StatusCode::kNotFound && failure.ok()) {
        failure = s;
      }
    }
  }
  size_t ok = 0;
  absl::Status failure;  // the first failure other than NOT_FOUND
};

}  // namespace

absl::Status Client::Impl::TouchSession(std::string_view session_id) {
  v1::TouchSessionRequest request;
  request.set_session_id(std::string(session_id));
  auto touch = [&](const Conn& c, grpc::ClientContext& context) {
    v1::TouchSessionResponse response;
    return FromGrpc(c.stub.TouchSession(&context, request, &response));
  };
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    return Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return touch(c, context);
    });
  }
  std::vector<size_t> targets = Candidates(*m, session_id);
  targets.resize(std::min(targets.size(), Replicas(*m) + 2));
  const FanOut f(AskEach(*m, targets, [&](size_t, const Conn& c, grpc::ClientContext& context) {
    return touch(c, context);
  }));
  if (f.ok > 0) return absl::OkStatus();
  QAQKV_RETURN_IF_ERROR(f.failure);
  return absl::NotFoundError(absl::StrCat("session '", AsAbsl(session_id), "' not found"));
}

absl::Status Client::Impl::DeleteSession(std::string_view session_id) {
  v1::DeleteSessionRequest request;
  request.set_session_id(std::string(session_id));
  auto erase = [&](const Conn& c, grpc::ClientContext& context) {
    v1::DeleteSessionResponse response;
    return FromGrpc(c.stub.DeleteSession(&context, request, &response));
  };
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    return Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return erase(c, context);
    });
  }
  // Every server: after a membership change a copy may sit anywhere.
  const FanOut f(AskEach(*m, AllOf(*m), [&](size_t, const Conn& c,
                                            grpc::ClientContext& context) {
    return erase(c, context);
  }));
  // A server that could not be asked may still hold a copy: say so rather
  // than report a delete that a later read could undo.
  if (!f.failure.ok()) {
    return absl::Status(f.failure.code(),
                        absl::StrCat("session deleted on ", f.ok, " of ", m->endpoints.size(),
                                     " servers; ", f.failure.message(), " (retry the delete)"));
  }
  if (f.ok > 0) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("session '", AsAbsl(session_id), "' not found"));
}

absl::StatusOr<std::vector<std::string>> Client::Impl::ListSessions(uint32_t limit) {
  v1::ListSessionsRequest request;
  request.set_limit(limit);
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    v1::ListSessionsResponse response;
    QAQKV_RETURN_IF_ERROR(Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return FromGrpc(c.stub.ListSessions(&context, request, &response));
    }));
    return std::vector<std::string>(response.session_ids().begin(),
                                    response.session_ids().end());
  }
  std::vector<v1::ListSessionsResponse> responses(m->endpoints.size());
  const std::vector<absl::Status> results =
      AskEach(*m, AllOf(*m), [&](size_t e, const Conn& c, grpc::ClientContext& context) {
        return FromGrpc(c.stub.ListSessions(&context, request, &responses[e]));
      });
  // Each server lists its first `limit` ids in key order, so the first
  // `limit` of the union are exact as long as every server answered.
  std::set<std::string> ids;
  for (size_t e = 0; e < results.size(); ++e) {
    QAQKV_RETURN_IF_ERROR(results[e]);
    ids.insert(responses[e].session_ids().begin(), responses[e].session_ids().end());
  }
  std::vector<std::string> out(ids.begin(), ids.end());
  out.resize(std::min<size_t>(out.size(), limit == 0 ? 1000 : limit));
  return out;
}

absl::StatusOr<v1::GetStatsResponse> Client::Impl::GetStats() {
  v1::GetStatsRequest request;
  std::shared_ptr<const internal::Membership> m = members();
  if (OneServer(*m)) {
    v1::GetStatsResponse response;
    QAQKV_RETURN_IF_ERROR(Call([&](const Conn& c, grpc::ClientContext& context, bool&) {
      return FromGrpc(c.stub.GetStats(&context, request, &response));
    }));
    return response;
  }
  std::vector<v1::GetStatsResponse> responses(m->endpoints.size());
  const std::vector<absl::Status> results =
      AskEach(*m, AllOf(*m), [&](size_t e, const Conn& c, grpc::ClientContext& context) {
        return FromGrpc(c.stub.GetStats(&context, request, &responses[e]));
      });
  v1::GetStatsResponse sum;
  auto add_tier = [](v1::TierStats* to, const v1::TierStats& from) {
    to->set_name(from.name());
    to->set_hits(to->hits() + from.hits());
    to->set_misses(to->misses() + from.misses());
    to->set_evictions(to->evictions() + from.evictions());
    to->set_bytes(to->bytes() + from.bytes());
    to->set_entries(to->entries() + from.entries());
    to->set_budget_bytes(to->budget_bytes() + from.budget_bytes());
  };
  for (size_t e = 0; e < results.size(); ++e) {
    QAQKV_RETURN_IF_ERROR(results[e]);
    const v1::GetStatsResponse& s = responses[e];
    sum.set_tenant_bytes(sum.tenant_bytes() + s.tenant_bytes());
    sum.set_tenant_blocks(sum.tenant_blocks() + s.tenant_blocks());
    add_tier(sum.mutable_dram(), s.dram());
    add_tier(sum.mutable_disk(), s.disk());
    // Tiers by name, in the order the first server that has each lists them.
    for (const v1::TierStats& t : s.tiers()) {
      v1::TierStats* into = nullptr;
      for (v1::TierStats& have : *sum.mutable_tiers()) {
        if (have.name() == t.name()) into = &have;
      }
      add_tier(into != nullptr ? into : sum.add_tiers(), t);
    }
    sum.set_blocks(sum.blocks() + s.blocks());
    sum.set_background_errors(sum.background_errors() + s.background_errors());
    sum.set_blocks_evicted(sum.blocks_evicted() + s.blocks_evicted());
    sum.set_checksum_failures(sum.checksum_failures() + s.checksum_failures());
    sum.set_total_bytes(sum.total_bytes() + s.total_bytes());
    if (e == 0) sum.set_version(s.version());
  }
  return sum;
}

// ---- Transfer rendezvous ---------------------------------------------------------

absl::Status Client::Impl::OfferTransfer(const v1::OfferTransferRequest& request) {
  std::shared_ptr<const internal::Membership> m = members();
  auto offer = [&](internal::Endpoint& e, int attempts) {
    return CallOn(
        e,
        [&](const Conn& c, grpc::ClientContext& context, bool&) {
          v1::OfferTransferResponse response;
          return FromGrpc(c.stub.OfferTransfer(&context, request, &response));
        },
        sharded() ? options_.replica_deadline : options_.deadline, attempts);
  };
  if (m->endpoints.empty()) return NoServers();
  if (OneServer(*m)) {
    return offer(*m->endpoints[0], options_.retry.max_attempts);
  }
  // Pure rendezvous order (not health order): the receiver must find it
  // without knowing which servers the sender thought healthy.
  const std::vector<size_t> order = m->Rank(request.offer().transfer_id());
  absl::Status status;
  for (size_t j = 0; j < std::min<size_t>(order.size(), 2); ++j) {
    status = offer(*m->endpoints[order[j]], 1);
    if (!ReplicaFailure(status)) return status;
  }
  return status;
}

absl::StatusOr<v1::TransferOffer> Client::Impl::AcceptTransfer(const std::string& transfer_id) {
  v1::AcceptTransferRequest request;
  request.set_transfer_id(transfer_id);
  std::shared_ptr<const internal::Membership> m = members();
  if (m->endpoints.empty()) return NoServers();
  std::vector<size_t> order = {0};
  if (!OneServer(*m)) {
    order = m->Rank(transfer_id);
    order.resize(2);
  }
  absl::Status status;
  for (size_t e : order) {
    v1::AcceptTransferResponse response;
    status = CallOn(
        *m->endpoints[e],
        [&](const Conn& c, grpc::ClientContext& context, bool&) {
          return FromGrpc(c.stub.AcceptTransfer(&context, request, &response));
        },
        sharded() ? options_.replica_deadline : options_.deadline, 1);
    if (status.ok()) return std::move(*response.mutable_offer());
  }
  return status;
}

}  // namespace qaqkv::client
