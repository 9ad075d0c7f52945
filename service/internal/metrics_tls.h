// HTTPS for the metrics endpoint: the server's own certificate and key,
// read again when the files change (a cert-manager renewal, a rotated
// Secret), so the endpoint never serves an expired certificate while the
// gRPC port has the new one. Private to service/.
#ifndef QAQKV_SERVICE_INTERNAL_METRICS_TLS_H_
#define QAQKV_SERVICE_INTERNAL_METRICS_TLS_H_

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/mutex.h"
#include "base/reloading_files.h"

namespace qaqkv::service::internal {

// Thread-safety: the handshake callback runs on the HTTP server's threads;
// every method may be called concurrently.
class ReloadingCertificate {
 public:
  // Reads both PEM files: kInvalidArgument naming the flag for a file
  // without a certificate or key, or a key that does not match.
  static absl::StatusOr<std::unique_ptr<ReloadingCertificate>> Open(
      std::string cert_file, std::string key_file, absl::Duration reload_interval);
  ~ReloadingCertificate();

  // Makes every handshake on `ctx` present the current pair, checking the
  // files for a change at most once per reload interval. A changed file
  // that does not load is logged and the pair before stays.
  bool Install(SSL_CTX& ctx);

  struct Token {};
  explicit ReloadingCertificate(Token, absl::Duration reload_interval);

 private:
  struct Pair;  // a leaf, its chain and its key
  static absl::StatusOr<std::shared_ptr<const Pair>> Load(const std::string& cert_file,
                                                          const std::string& key_file);
  static int OnHandshake(SSL* ssl, void* self);
  std::shared_ptr<const Pair> Current();

  const absl::Duration reload_interval_;
  // A renewal that writes the certificate and the key one after the other
  // may be caught in between: that pair is refused, and the next check
  // reads the finished one.
  std::unique_ptr<base::ReloadingFiles<Pair>> pair_;
  base::Mutex mu_;
  absl::Time checked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qaqkv::service::internal

#endif  // QAQKV_SERVICE_INTERNAL_METRICS_TLS_H_
