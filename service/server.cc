// Startup, TLS, the metrics endpoint and shutdown of qaqkv-server. The
// KvCache service itself is in kv_cache_service.cc and page_streams.cc.
#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file.h"
#include "base/log.h"
#include "base/mutex.h"
#include "base/status_macros.h"
#include "base/thread_pool.h"
#include "base/host_port.h"
#include "base/http_listen.h"
#include "httplib.h"
#include "service/internal/metrics_tls.h"
#include "proto/tls_check.h"
#include "proto/wire.h"
#include "qaqkv/limits.h"
#include "service/auth.h"
#include "service/internal/kv_cache_service.h"
#include "service/metrics.h"
#include "service/stats.h"

namespace qaqkv::service {
namespace {

// The name health checks may ask about besides "" (kvcache.proto).
constexpr char kHealthServiceName[] = "qaqkv.v1.KvCache";

absl::Status CheckOptions(const ServerOptions& options) {
  if (options.max_message_bytes < static_cast<int>(limits::kMinServerMaxMessageBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("--max-message-bytes: ",
                                                   options.max_message_bytes, " is below 1 MiB (",
                                                   limits::kMinServerMaxMessageBytes, ")"));
  }
  if (absl::StartsWith(options.listen, "unix:")) {
    if (options.listen.size() == 5) return absl::InvalidArgumentError("--listen: empty unix path");
  } else {
    QAQKV_RETURN_IF_ERROR(base::SplitHostPort(options.listen, "--listen").status());
  }
  if (options.store_threads < 1 || options.store_threads > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store-threads: ", options.store_threads, " is outside 1..256"));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key: give both or neither");
  }
  if (options.metrics_tls && (options.tls_cert_file.empty() || options.metrics_listen.empty())) {
    return absl::InvalidArgumentError(
        "--metrics-tls: needs --tls-cert, --tls-key and --metrics-listen");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca: needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

// The server's credentials: plaintext, TLS, or mTLS. The files are read and
// checked here so a mistake is a clear error at start, not a handshake
// failure on every call. gRPC then watches them (every reload_interval), so
// a renewed certificate (cert-manager rewrites the Secret's files) serves
// new handshakes without a restart; a pair that does not load keeps the
// last good one.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const ServerOptions& options) {
  if (options.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  QAQKV_ASSIGN_OR_RETURN(const std::string cert, base::ReadFile(options.tls_cert_file, "--tls-cert"));
  QAQKV_ASSIGN_OR_RETURN(const std::string key, base::ReadFile(options.tls_key_file, "--tls-key"));
  QAQKV_RETURN_IF_ERROR(wire::CheckCertAndKey(cert, key, "--tls-cert", "--tls-key"));
  if (!options.tls_client_ca_file.empty()) {
    QAQKV_ASSIGN_OR_RETURN(const std::string ca,
                           base::ReadFile(options.tls_client_ca_file, "--tls-client-ca"));
    QAQKV_RETURN_IF_ERROR(wire::CheckCertificates(ca, "--tls-client-ca"));
  }
  const auto refresh_s = static_cast<unsigned>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options.reload_interval)));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.tls_key_file, options.tls_cert_file, options.tls_client_ca_file, refresh_s);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (!options.tls_client_ca_file.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace

class Server::Impl {
 public:
  ServerOptions options;
  std::unique_ptr<storage::TieredStore> store;
  // Declared after the store: destroyed (drained) before it.
  std::unique_ptr<base::ThreadPool> store_writers;
  std::unique_ptr<TokenFile> tokens;
  Metrics metrics;
  std::unique_ptr<internal::KvCacheService> service;
  std::unique_ptr<grpc::Server> grpc_server;
  int port = 0;
  // Before `http`, whose handshakes use it.
  std::unique_ptr<internal::ReloadingCertificate> metrics_cert;
  std::unique_ptr<httplib::Server> http;
  std::thread http_thread;
  int metrics_port = 0;
  std::atomic<bool> shut_down{false};

  // Readiness: serving, and the disk takes writes (TieredStore::DiskHealth),
  // checked every 2 s by `ready_thread`. Liveness is only "not draining":
  // a full disk must take the server out of rotation, not restart it.
  base::Mutex ready_mu;
  base::CondVar ready_cv;
  bool ready_stop ABSL_GUARDED_BY(ready_mu) = false;
  absl::Status not_ready ABSL_GUARDED_BY(ready_mu);
  std::thread ready_thread;

  absl::Status NotReady() {
    if (shut_down.load()) return absl::UnavailableError("draining");
    base::MutexLock lock(&ready_mu);
    return not_ready;
  }

  void CheckReadiness() {
    const absl::Status disk = store->DiskHealth();
    bool changed = false;
    {
      base::MutexLock lock(&ready_mu);
      changed = disk.ok() != not_ready.ok();
      not_ready = disk;
    }
    if (shut_down.load()) return;
    grpc_server->GetHealthCheckService()->SetServingStatus(kHealthServiceName, disk.ok());
    if (!changed) return;
    if (disk.ok()) {
      base::LogInfo("ready again: the disk takes writes", {{"component", "server"}});
    } else {
      base::LogWarning("not ready: the disk does not take writes",
                       {{"component", "server"}, {"error", disk.ToString()}});
    }
  }

  // A changed token file takes effect; a broken one is logged once and the
  // tokens in force stay.
  void ReloadTokens() {
    if (tokens == nullptr) return;
    absl::StatusOr<bool> reloaded = tokens->Reload();
    if (!reloaded.ok()) {
      base::LogWarning("token file changed but cannot be used; the previous tokens stay",
                       {{"component", "server"}, {"error", reloaded.status().ToString()}});
    } else if (*reloaded) {
      base::LogInfo("token file reloaded",
                    {{"component", "server"},
                     {"tenants", absl::StrCat(tokens->Tenants().size())}});
    }
  }

  // Readiness every 2 s, the token file every reload_interval.
  void ReadinessLoop() {
    const absl::Duration tick = std::min(absl::Seconds(2), options.reload_interval);
    absl::Time next_reload = absl::Now() + options.reload_interval;
    for (;;) {
      {
        base::MutexLock lock(&ready_mu);
        if (ready_cv.WaitFor(&ready_mu, absl::ToChronoMilliseconds(tick), [this] {
              ready_mu.AssertHeld();
              return ready_stop;
            })) {
          return;
        }
      }
      CheckReadiness();
      if (absl::Now() >= next_reload) {
        ReloadTokens();
        next_reload = absl::Now() + options.reload_interval;
      }
    }
  }

  std::string RenderMetrics() {
    return metrics.Render([this](std::string& out) {
      std::vector<std::pair<std::string, storage::TenantUsage>> tenants;
      for (const std::string& t : tokens ? tokens->Tenants()
                                         : std::vector<std::string>{std::string(kDefaultTenant)}) {
        tenants.emplace_back(t, store->Usage(t));
      }
      RenderStoreMetrics(store->Stats(), tenants, out);
      RenderReadiness(NotReady().ok(), out);
    });
  }

  absl::Status StartMetrics() {
    if (options.metrics_listen.empty()) return absl::OkStatus();
    if (options.metrics_tls) {
      QAQKV_ASSIGN_OR_RETURN(metrics_cert, internal::ReloadingCertificate::Open(
                                               options.tls_cert_file, options.tls_key_file,
                                               options.reload_interval));
      auto https = std::make_unique<httplib::SSLServer>(
          [this](SSL_CTX& ctx) { return metrics_cert->Install(ctx); });
      if (!https->is_valid()) {
        return absl::InternalError("--metrics-tls: cannot set up the TLS context");
      }
      http = std::move(https);
    } else {
      http = std::make_unique<httplib::Server>();
    }
    http->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderMetrics(), "text/plain; version=0.0.4");
    });
    http->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      res.status = shut_down.load() ? 503 : 200;
      res.set_content(shut_down.load() ? "draining\n" : "ok\n", "text/plain");
    });
    // Readiness: /healthz's, and the disk takes writes.
    http->Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      const absl::Status why = NotReady();
      res.status = why.ok() ? 200 : 503;
      res.set_content(why.ok() ? "ok\n" : absl::StrCat(why.message(), "\n"), "text/plain");
    });
    QAQKV_ASSIGN_OR_RETURN(metrics_port,
                           base::BindHttp(*http, options.metrics_listen, "--metrics-listen"));
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
  QAQKV_RETURN_IF_ERROR(CheckOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!options.auth_tokens_file.empty()) {
    QAQKV_ASSIGN_OR_RETURN(impl->tokens, TokenFile::Open(options.auth_tokens_file));
  }
  QAQKV_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> creds, Credentials(options));

  absl::StatusOr<std::unique_ptr<storage::TieredStore>> store =
      storage::TieredStore::Open(options.store);
  if (!store.ok()) {
    return options.store.memory_only
               ? store.status()
               : base::Annotate(store.status(), absl::StrCat("--data-dir ", options.store.data_dir));
  }
  impl->store = std::move(*store);
  if (!options.store.memory_only) {
    impl->store_writers = std::make_unique<base::ThreadPool>(options.store_threads);
  }
  internal::KvCacheService::Options service;
  service.store = impl->store.get();
  service.tokens = impl->tokens.get();
  service.metrics = &impl->metrics;
  service.store_writers = impl->store_writers.get();
  service.tenant_max_streams = options.tenant_max_streams;
  service.max_message_bytes = static_cast<size_t>(options.max_message_bytes);
  impl->service = std::make_unique<internal::KvCacheService>(service);

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
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(Metrics::InterceptorFactory(&impl->metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(impl->service.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen: cannot bind ", options.listen, " (in use, or not a local address)"));
  }
  grpc::HealthCheckServiceInterface* health = impl->grpc_server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus(kHealthServiceName, true);
  impl->CheckReadiness();  // before the first probe can come
  if (absl::Status s = impl->StartMetrics(); !s.ok()) {
    impl->grpc_server->Shutdown();
    return s;
  }
  Impl* raw = impl.get();
  impl->ready_thread = std::thread([raw] { raw->ReadinessLoop(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Shutdown(absl::Duration drain) {
  if (impl_ == nullptr || impl_->shut_down.exchange(true)) return absl::OkStatus();
  if (impl_->ready_thread.joinable()) {
    {
      base::MutexLock lock(&impl_->ready_mu);
      impl_->ready_stop = true;
    }
    impl_->ready_cv.SignalAll();
    impl_->ready_thread.join();
  }
  if (impl_->grpc_server) {
    // Health answers NOT_SERVING and new calls UNAVAILABLE while the streams
    // in flight finish (for up to `drain`), so load balancers and clients
    // see the server going and move on; then gRPC stops, cancelling what is
    // left. Every page a client saw acknowledged is already in the WAL, so a
    // cancelled stream loses nothing acknowledged.
    impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
    impl_->service->StartDraining();
    const absl::Time deadline = absl::Now() + drain;
    while (impl_->metrics.InFlightStreams() > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    impl_->grpc_server->Shutdown(std::chrono::system_clock::now() +
                                 absl::ToChronoMilliseconds(
                                     std::max(absl::ZeroDuration(), deadline - absl::Now())));
    impl_->grpc_server->Wait();
  }
  if (impl_->http) {
    impl_->http->stop();
    if (impl_->http_thread.joinable()) impl_->http_thread.join();
  }
  // Every stream has finished (or was cancelled), so no write is queued.
  impl_->store_writers.reset();
  absl::Status flushed = impl_->store->Flush();  // write-back's pages too
  impl_->grpc_server.reset();
  impl_->service.reset();
  impl_->store.reset();
  return flushed;
}

}  // namespace qaqkv::service
