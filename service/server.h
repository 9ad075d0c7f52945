// qaqkv-server as a library: the KvCache gRPC service on a TieredStore, with
// auth, TLS, limits, health, reflection and a Prometheus endpoint. main.cc
// turns flags into ServerOptions; tests and the demo start the real binary.
#ifndef QAQKV_SERVICE_SERVER_H_
#define QAQKV_SERVICE_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qaqkv/limits.h"
#include "storage/tiered_store.h"

namespace qaqkv::service {

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // port 0 picks a free one
  storage::TieredStoreOptions store;
  std::string auth_tokens_file;  // empty: single tenant "default"
  std::string tls_cert_file;     // PEM; with tls_key_file turns TLS on
  std::string tls_key_file;
  std::string tls_client_ca_file;  // PEM; requires and verifies client certs (mTLS)
  std::string metrics_listen;      // "host:port" for /metrics; empty: off
  // Serve /metrics, /healthz and /readyz over HTTPS with the TLS
  // certificate and key (reloaded as they change, as for gRPC).
  bool metrics_tls = false;
  int max_message_bytes = static_cast<int>(limits::kDefaultMaxMessageBytes);
  int tenant_max_streams = 64;     // open PutPages/GetPages streams per tenant; 0: no limit
  // Threads that run PutPages' store writes off gRPC's threads (not used
  // memory-only).
  int store_threads = 4;
  // How often the token file and the TLS files are checked for changes; a
  // changed file takes effect without a restart (new TLS handshakes get the
  // new certificate).
  absl::Duration reload_interval = absl::Seconds(10);
};

class Server {
 public:
  // Opens the store, binds the ports and starts serving. kInvalidArgument
  // for inconsistent options (naming the flag), kUnavailable when a port
  // cannot be bound, and whatever opening the store returns.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options);
  ~Server();

  int port() const;          // the bound gRPC port
  int metrics_port() const;  // the bound metrics port, 0 when off
  bool single_tenant() const;

  // Stops accepting calls, marks health NOT_SERVING, lets in-flight calls
  // and streams finish for up to `drain`, cancels what is left, stops the
  // metrics endpoint and flushes the store. Idempotent.
  absl::Status Shutdown(absl::Duration drain);

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_SERVER_H_
