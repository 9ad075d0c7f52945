// `qaqkv rebalance`: Client::Rebalance from the command line, for one
// tenant (--token, or none: "default") or for every tenant of a token file
// (--token-file, the server's --auth-tokens file). The rebalance acts for
// the tenant of the client's bearer token, so a token file means one client
// and one run per tenant, one after the other (docs/operations.md,
// "Rebalance").
//
// Output: one JSON line per tenant on stdout when its run is over, every
// RebalanceReport field plus the tenant and the call's error; progress as
// JSON lines on stderr. No message carries a token: a token file's errors
// name the line, and the server never echoes a token either.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/cli.h"
#include "base/file.h"
#include "base/host_port.h"
#include "base/http_listen.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "qaqkv/client.h"
#include "base/status_macros.h"
#include "service/auth.h"
#include "tools/commands.h"
#include "tools/internal/connect.h"
#include "tools/internal/flag_check.h"

namespace qaqkv::tools {
namespace {

namespace qc = qaqkv::client;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "qaqkv rebalance: %s\n", msg.c_str());
  return code;
}

// A tenant to rebalance for, with its tokens in the file's order: during a
// rotation a tenant has two, and the first one the servers still take is
// used.
struct Tenant {
  std::string name;  // empty: --token's tenant, which only the servers know
  std::vector<std::string> tokens;
};

// The tenants of a token file (the server's --auth-tokens format, parsed
// by the server's own code), each with its tokens. kInvalidArgument naming
// --token-file and the line, never the token.
absl::StatusOr<std::vector<Tenant>> ReadTenants(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadFile(path, "--token-file");
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  QAQKV_ASSIGN_OR_RETURN(const service::TokenMap map,
                         service::TokenMap::Parse(*text, absl::StrCat("--token-file: ", path)));
  std::vector<Tenant> tenants;
  for (auto& [tenant, tokens] : map.TokensByTenant()) {
    tenants.push_back({std::move(tenant), std::move(tokens)});
  }
  return tenants;
}

// kInvalidArgument naming `flag` unless every entry is a host:port (the
// client takes any name; a typo here would be a server that never answers,
// found only after the listing timed out) and none is given twice.
absl::Status CheckServers(std::string_view flag, const std::vector<std::string>& servers,
                          std::set<std::string>* seen) {
  const absl::string_view f(flag.data(), flag.size());
  for (const std::string& s : servers) {
    const absl::StatusOr<base::HostPort> at = base::SplitHostPort(s, flag);
    if (s.find_first_of(" \t\n,") != std::string::npos || !at.ok() || at->port == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ": '", s, "' is not a host:port"));
    }
    if (!seen->insert(s).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ": '", s, "' is given twice (in --servers or --draining)"));
    }
  }
  return absl::OkStatus();
}

// The tenant's label value: --token's tenant is known only to the servers.
std::string MetricsTenant(const Tenant& t) { return t.name.empty() ? "token" : t.name; }

using Report = qc::Client::RebalanceReport;

// The report's counters in its order: the JSON lines and the gauges both
// list them from here.
constexpr std::pair<const char*, uint64_t Report::*> kReportCounts[] = {
    {"blocks", &Report::blocks},
    {"blocks_copied", &Report::blocks_copied},
    {"bytes_copied", &Report::bytes_copied},
    {"blocks_removed", &Report::blocks_removed},
    {"blocks_vanished", &Report::blocks_vanished},
    {"sessions", &Report::sessions},
    {"sessions_copied", &Report::sessions_copied},
    {"sessions_deleted", &Report::sessions_deleted},
    {"sessions_removed", &Report::sessions_removed},
    {"errors", &Report::errors}};

// The report's fields in its order, after the tenant.
nlohmann::ordered_json ToJson(const Tenant& tenant, const Report& r) {
  nlohmann::ordered_json out = {{"tenant", tenant.name.empty()
                                               ? nlohmann::ordered_json()
                                               : nlohmann::ordered_json(tenant.name)}};
  for (const auto& [name, field] : kReportCounts) out[name] = r.*field;
  out["first_error"] = r.first_error;
  return out;
}

// The reports so far, per tenant, as Prometheus gauges on an HTTP port:
// a Job's progress where the cluster's other metrics are.
class ProgressEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<ProgressEndpoint>> Start(const std::string& listen) {
    auto self = std::make_unique<ProgressEndpoint>();
    self->http_.Get("/metrics", [p = self.get()](const httplib::Request&, httplib::Response& res) {
      res.set_content(p->Render(), "text/plain; version=0.0.4");
    });
    QAQKV_ASSIGN_OR_RETURN(const int port, base::BindHttp(self->http_, listen, "--metrics-listen"));
    std::fprintf(stderr, "qaqkv rebalance: metrics on port %d\n", port);
    self->thread_ = std::thread([p = self.get()] { p->http_.listen_after_bind(); });
    return self;
  }
  ~ProgressEndpoint() {
    http_.stop();
    if (thread_.joinable()) thread_.join();
  }
  void Update(const std::string& tenant, const qc::Client::RebalanceReport& r, bool done) {
    std::lock_guard<std::mutex> lock(mu_);
    tenants_[tenant] = {r, done};
  }

 private:
  std::string Render() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [name, field] : kReportCounts) {
      absl::StrAppend(&out, "# TYPE qaqkv_rebalance_", name, " gauge\n");
      for (const auto& [tenant, state] : tenants_) {
        absl::StrAppend(&out, "qaqkv_rebalance_", name, "{tenant=\"", tenant, "\"} ",
                        state.report.*field, "\n");
      }
    }
    absl::StrAppend(&out, "# TYPE qaqkv_rebalance_done gauge\n");
    for (const auto& [tenant, state] : tenants_) {
      absl::StrAppend(&out, "qaqkv_rebalance_done{tenant=\"", tenant, "\"} ", state.done ? 1 : 0,
                      "\n");
    }
    return out;
  }

  struct State {
    qc::Client::RebalanceReport report;
    bool done = false;
  };
  httplib::Server http_;
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, State> tenants_;  // guarded by mu_
};

}  // namespace

int RunRebalance(const RebalanceArgs& a) {
  // Every flag is checked before the first tenant's run: a bad one found
  // half-way through the tenants would leave the others undone.
  std::set<std::string> seen;
  if (a.conn.servers.empty()) return Fail("--servers: give at least one host:port", 2);
  if (absl::Status st =
          FirstError({CheckServers("--servers", a.conn.servers, &seen),
                      CheckServers("--draining", a.draining, &seen),
                      CheckRange("--batch-blocks", a.batch_blocks, 1, 1 << 20)});
      !st.ok()) {
    return Fail(std::string(st.message()), 2);
  }
  const std::optional<uint64_t> rate = base::ParseByteSize(a.max_bytes_per_second);
  if (!rate) {
    return Fail(absl::StrCat("--max-bytes-per-second: \"", a.max_bytes_per_second,
                             "\" is not valid: want a size like 100MiB (0: no limit)"),
                2);
  }
  absl::Duration interval;
  if (!absl::ParseDuration(a.progress_interval, &interval) ||
      interval < absl::ZeroDuration()) {
    return Fail(
        absl::StrCat("--progress-interval: \"", a.progress_interval,
                     "\" is not valid: want a duration like 10s (0: every batch)"),
        2);
  }
  if (!a.token_file.empty() && !a.conn.token.empty()) {
    return Fail("--token-file and --token (or $QAQKV_TOKEN): give one or the other", 2);
  }
  std::vector<Tenant> tenants;
  if (a.token_file.empty()) {
    // Without a token the servers act for "default" (they run without
    // --auth-tokens); a token's tenant is known only to them (null in the
    // report).
    tenants.push_back({a.conn.token.empty() ? "default" : "", {a.conn.token}});
  } else {
    absl::StatusOr<std::vector<Tenant>> read = ReadTenants(a.token_file);
    if (!read.ok()) return Fail(std::string(read.status().message()), 2);
    tenants = *std::move(read);
  }
  absl::Duration linger;
  if (!absl::ParseDuration(a.metrics_linger, &linger) || linger < absl::ZeroDuration()) {
    return Fail(absl::StrCat("--metrics-linger: \"", a.metrics_linger,
                             "\" is not valid: want a duration like 30s"),
                2);
  }
  std::unique_ptr<ProgressEndpoint> endpoint;
  if (!a.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<ProgressEndpoint>> started =
        ProgressEndpoint::Start(a.metrics_listen);
    if (!started.ok()) {
      return Fail(std::string(started.status().message()),
                  absl::IsInvalidArgument(started.status()) ? 2 : 1);
    }
    endpoint = std::move(*started);
  }
  qc::Client::RebalanceOptions options;
  options.draining = a.draining;
  options.max_bytes_per_second = static_cast<double>(*rate);
  options.batch_blocks = a.batch_blocks;
  options.remove_misplaced = !a.keep_misplaced;

  int rc = 0;
  for (const Tenant& tenant : tenants) {
    qc::Client::RebalanceReport last;
    absl::Status status;
    // A tenant's later token is tried only when the servers refuse the one
    // before (a rotation under way); the listing fails before anything
    // changes, so trying again is safe.
    for (size_t t = 0; t < tenant.tokens.size(); ++t) {
      ConnectArgs conn = a.conn;
      conn.token = tenant.tokens[t];
      absl::StatusOr<std::unique_ptr<qc::Client>> client = Connect(conn);
      if (!client.ok()) return Fail(client.status().ToString(), 2);
      const Clock::time_point start = Clock::now();
      Clock::time_point printed = start;
      auto progress = [&](const qc::Client::RebalanceReport& r) {
        last = r;
        if (endpoint != nullptr) endpoint->Update(MetricsTenant(tenant), r, false);
        const Clock::time_point now = Clock::now();
        if (now - printed < absl::ToChronoNanoseconds(interval)) return;
        printed = now;
        nlohmann::ordered_json j = ToJson(tenant, r);
        j["progress"] = true;
        j["elapsed_s"] = std::chrono::duration<double>(now - start).count();
        std::fprintf(stderr, "%s\n", j.dump().c_str());
        std::fflush(stderr);
      };
      absl::StatusOr<qc::Client::RebalanceReport> report =
          (*client)->Rebalance(options, progress);
      if (report.ok()) {
        last = *report;
        status = absl::OkStatus();
        break;
      }
      status = report.status();
      if (!absl::IsUnauthenticated(status)) break;
    }
    const std::string who = tenant.name.empty() ? "the --token's tenant"
                                                : absl::StrCat("tenant ", tenant.name);
    if (endpoint != nullptr) endpoint->Update(MetricsTenant(tenant), last, true);
    nlohmann::ordered_json j = ToJson(tenant, last);
    j["error"] = status.ok() ? "" : status.ToString();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    if (!status.ok()) {
      Fail(absl::StrCat(who, ": ", status.ToString()));
      rc = 1;
    } else if (last.errors > 0) {
      Fail(absl::StrCat(who, ": ", last.errors, " copies or removals failed, the first: ",
                        last.first_error, " (run it again once the cause is fixed)"));
      rc = 1;
    }
  }
  if (endpoint != nullptr && linger > absl::ZeroDuration()) absl::SleepFor(linger);
  return rc;
}

}  // namespace qaqkv::tools
