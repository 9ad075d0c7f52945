#include "service/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/strings.h"
#include "qaqkv/v1/kvcache.pb.h"

namespace qaqkv::service {
namespace {

constexpr std::array<std::string_view, Metrics::kCodes> kCodeNames = {
    "OK",        "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",      "UNAVAILABLE",       "DATA_LOSS",
    "UNAUTHENTICATED"};

using base::AsAbsl;

// The interceptor of one call: starts the clock when the call arrives and
// records the status gRPC sends (or CANCELLED for a call torn down without
// one, e.g. by shutdown).
class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CallInterceptor(Metrics::PerMethod* method) : method_(method) {}
  ~CallInterceptor() override {
    if (!recorded_) Record(static_cast<int>(grpc::StatusCode::CANCELLED));
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  void Record(int code) {
    recorded_ = true;
    Metrics::RecordCall(
        method_, code,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

  Metrics::PerMethod* const method_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  bool recorded_ = false;
};

class InterceptorFactoryImpl final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit InterceptorFactoryImpl(Metrics* metrics) : metrics_(metrics) {}
  // gRPC owns the interceptor from here and deletes it when the call is
  // done: the interceptor API's ownership contract, hence the `new`.
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(metrics_->Method(info->method()));
  }

 private:
  Metrics* const metrics_;
};

}  // namespace

Metrics::Metrics() {
  const google::protobuf::ServiceDescriptor* service =
      v1::LookupRequest::descriptor()->file()->FindServiceByName("KvCache");
  for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
    Method(service->method(i)->name());
  }
}

std::string Metrics::Label(std::string_view path_or_label) {
  std::string_view s = path_or_label;
  if (!s.empty() && s.front() == '/') s.remove_prefix(1);
  constexpr std::string_view kOwn = "qaqkv.v1.KvCache/";
  if (s.substr(0, kOwn.size()) == kOwn) s.remove_prefix(kOwn.size());
  return std::string(s);
}

Metrics::PerMethod* Metrics::Method(std::string_view path_or_label) {
  const std::string label = Label(path_or_label);
  base::MutexLock lock(&mu_);
  std::unique_ptr<PerMethod>& m = methods_[label];
  if (m == nullptr) m = std::make_unique<PerMethod>();
  return m.get();
}

void Metrics::RecordCall(PerMethod* m, int code, double seconds) {
  if (code < 0 || code >= kCodes) code = 2;  // UNKNOWN
  m->by_code[code].fetch_add(1, std::memory_order_relaxed);
  size_t b = 0;
  while (b < kBuckets.size() && seconds > kBuckets[b]) ++b;
  m->buckets[b].fetch_add(1, std::memory_order_relaxed);
  m->latency_ns.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9),
                          std::memory_order_relaxed);
}

void Metrics::AddBytes(std::string_view method, uint64_t bytes_in, uint64_t bytes_out) {
  PerMethod* m = Method(method);
  m->bytes_in.fetch_add(bytes_in, std::memory_order_relaxed);
  m->bytes_out.fetch_add(bytes_out, std::memory_order_relaxed);
}

uint64_t Metrics::Requests(std::string_view method, int code) {
  return Method(method)->by_code[code].load(std::memory_order_relaxed);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::InterceptorFactory(Metrics* metrics) {
  return std::make_unique<InterceptorFactoryImpl>(metrics);
}

void AppendSample(std::string& out, std::string_view name, std::string_view labels,
                  double value) {
  absl::StrAppend(&out, AsAbsl(name));
  if (!labels.empty()) absl::StrAppend(&out, "{", AsAbsl(labels), "}");
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15) {
    absl::StrAppend(&out, " ", static_cast<int64_t>(value), "\n");
  } else {
    absl::StrAppend(&out, " ", absl::StrFormat("%.9g", value), "\n");
  }
}

void AppendFamily(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  absl::StrAppend(&out, "# HELP ", AsAbsl(name), " ", AsAbsl(help), "\n# TYPE ", AsAbsl(name), " ", AsAbsl(type),
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

std::string Metrics::Render(const std::function<void(std::string&)>& extra) {
  std::string out;
  std::vector<std::pair<std::string, const PerMethod*>> methods;
  {
    base::MutexLock lock(&mu_);
    for (const auto& [label, m] : methods_) {
      methods.emplace_back(absl::StrCat("rpc=\"", EscapeLabel(label), "\""), m.get());
    }
  }
  auto for_rpcs = [&](auto fn) {
    for (const auto& [labels, m] : methods) fn(labels, *m);
  };
  AppendFamily(out, "qaqkv_requests_total", "counter", "Finished RPCs by method and status code.");
  for_rpcs([&](const std::string& l, const PerMethod& r) {
    for (int c = 0; c < kCodes; ++c) {
      const uint64_t n = r.by_code[c].load(std::memory_order_relaxed);
      if (n == 0 && c != 0) continue;
      AppendSample(out, "qaqkv_requests_total", absl::StrCat(l, ",code=\"", AsAbsl(kCodeNames[c]), "\""),
                   static_cast<double>(n));
    }
  });
  AppendFamily(out, "qaqkv_request_duration_seconds", "histogram",
               "RPC latency from start to finish (streams: the whole stream).");
  for_rpcs([&](const std::string& l, const PerMethod& r) {
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
  for_rpcs([&](const std::string& l, const PerMethod& r) {
    AppendSample(out, "qaqkv_received_bytes_total", l,
                 static_cast<double>(r.bytes_in.load(std::memory_order_relaxed)));
  });
  AppendFamily(out, "qaqkv_sent_bytes_total", "counter", "Page and session bytes sent.");
  for_rpcs([&](const std::string& l, const PerMethod& r) {
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
