#include "service/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qaqkv::service {
namespace {

constexpr std::array<std::string_view, Metrics::kCodes> kCodeNames = {
    "OK",        "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",       "DATA_LOSS",
    "UNAUTHENTICATED"};

absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

std::string_view RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kLookup: return "Lookup";
    case Rpc::kPutPages: return "PutPages";
    case Rpc::kGetPages: return "GetPages";
    case Rpc::kPutSession: return "PutSession";
    case Rpc::kGetSession: return "GetSession";
    case Rpc::kListSessions: return "ListSessions";
    case Rpc::kDeleteSession: return "DeleteSession";
    case Rpc::kTouchSession: return "TouchSession";
    case Rpc::kGetStats: return "GetStats";
    case Rpc::kOfferTransfer: return "OfferTransfer";
    case Rpc::kAcceptTransfer: return "AcceptTransfer";
    case Rpc::kCount: break;
  }
  return "unknown";
}

void Metrics::Record(Rpc rpc, int code, double seconds, uint64_t bytes_in, uint64_t bytes_out) {
  PerRpc& r = rpcs_[static_cast<int>(rpc)];
  if (code < 0 || code >= kCodes) code = 2;  // UNKNOWN
  r.by_code[code].fetch_add(1, std::memory_order_relaxed);
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  r.buckets[b].fetch_add(1, std::memory_order_relaxed);
  r.latency_ns.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9),
                         std::memory_order_relaxed);
  r.bytes_in.fetch_add(bytes_in, std::memory_order_relaxed);
  r.bytes_out.fetch_add(bytes_out, std::memory_order_relaxed);
}

uint64_t Metrics::Requests(Rpc rpc, int code) const {
  return rpcs_[static_cast<int>(rpc)].by_code[code].load(std::memory_order_relaxed);
}

void AppendSample(std::string& out, std::string_view name, std::string_view labels,
                  double value) {
  absl::StrAppend(&out, A(name));
  if (!labels.empty()) absl::StrAppend(&out, "{", A(labels), "}");
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15) {
    absl::StrAppend(&out, " ", static_cast<int64_t>(value), "\n");
  } else {
    absl::StrAppend(&out, " ", absl::StrFormat("%.9g", value), "\n");
  }
}

void AppendFamily(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  absl::StrAppend(&out, "# HELP ", A(name), " ", A(help), "\n# TYPE ", A(name), " ", A(type),
                  "\n");
}

std::string EscapeLabel(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string Metrics::Render(const std::function<void(std::string&)>& extra) const {
  std::string out;
  auto for_rpcs = [&](auto fn) {
    for (int i = 0; i < static_cast<int>(Rpc::kCount); ++i) {
      fn(absl::StrCat("rpc=\"", A(RpcName(static_cast<Rpc>(i))), "\""), rpcs_[i]);
    }
  };
  AppendFamily(out, "qaqkv_requests_total", "counter", "Finished RPCs by method and status code.");
  for_rpcs([&](const std::string& l, const PerRpc& r) {
    for (int c = 0; c < kCodes; ++c) {
      const uint64_t n = r.by_code[c].load(std::memory_order_relaxed);
      if (n == 0 && c != 0) continue;
      AppendSample(out, "qaqkv_requests_total", absl::StrCat(l, ",code=\"", A(kCodeNames[c]), "\""),
                   static_cast<double>(n));
    }
  });
  AppendFamily(out, "qaqkv_request_duration_seconds", "histogram",
               "RPC latency from start to finish (streams: the whole stream).");
  for_rpcs([&](const std::string& l, const PerRpc& r) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kBuckets.size(); ++b) {
      cumulative += r.buckets[b].load(std::memory_order_relaxed);
      const std::string le =
          b < kBuckets.size() ? absl::StrFormat("%g", kBuckets[b]) : std::string("+Inf");
      AppendSample(out, "qaqkv_request_duration_seconds_bucket",
                   absl::StrCat(l, ",le=\"", le, "\""), static_cast<double>(cumulative));
    }
    AppendSample(out, "qaqkv_request_duration_seconds_sum", l,
                 r.latency_ns.load(std::memory_order_relaxed) * 1e-9);
    AppendSample(out, "qaqkv_request_duration_seconds_count", l, static_cast<double>(cumulative));
  });
  AppendFamily(out, "qaqkv_received_bytes_total", "counter", "Page and session bytes received.");
  for_rpcs([&](const std::string& l, const PerRpc& r) {
    AppendSample(out, "qaqkv_received_bytes_total", l,
                 static_cast<double>(r.bytes_in.load(std::memory_order_relaxed)));
  });
  AppendFamily(out, "qaqkv_sent_bytes_total", "counter", "Page and session bytes sent.");
  for_rpcs([&](const std::string& l, const PerRpc& r) {
    AppendSample(out, "qaqkv_sent_bytes_total", l,
                 static_cast<double>(r.bytes_out.load(std::memory_order_relaxed)));
  });
  AppendFamily(out, "qaqkv_pages_stored_total", "counter", "Pages written by PutPages.");
  AppendSample(out, "qaqkv_pages_stored_total", "",
               static_cast<double>(pages_in_.load(std::memory_order_relaxed)));
  AppendFamily(out, "qaqkv_pages_served_total", "counter", "Pages sent by GetPages.");
  AppendSample(out, "qaqkv_pages_served_total", "",
               static_cast<double>(pages_out_.load(std::memory_order_relaxed)));
  AppendFamily(out, "qaqkv_streams_in_flight", "gauge", "PutPages and GetPages streams open now.");
  AppendSample(out, "qaqkv_streams_in_flight", "",
               static_cast<double>(streams_.load(std::memory_order_relaxed)));
  if (extra) extra(out);
  return out;
}

}  // namespace qaqkv::service
