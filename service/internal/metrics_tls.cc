#include "service/internal/metrics_tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "proto/tls_check.h"

namespace qaqkv::service::internal {

struct ReloadingCertificate::Pair {
  X509* leaf = nullptr;
  STACK_OF(X509)* chain = nullptr;  // the certificates after the leaf
  EVP_PKEY* key = nullptr;
  Pair() = default;
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;
  ~Pair() {
    X509_free(leaf);
    if (chain != nullptr) sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

Bio MemoryBio(const std::string& bytes) {
  return Bio(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

}  // namespace

ReloadingCertificate::ReloadingCertificate(Token, absl::Duration reload_interval)
    : reload_interval_(reload_interval) {}

ReloadingCertificate::~ReloadingCertificate() = default;

absl::StatusOr<std::shared_ptr<const ReloadingCertificate::Pair>> ReloadingCertificate::Load(
    const std::string& cert_file, const std::string& key_file) {
  QAQKV_ASSIGN_OR_RETURN(const std::string cert_pem, base::ReadFile(cert_file, "--tls-cert"));
  QAQKV_ASSIGN_OR_RETURN(const std::string key_pem, base::ReadFile(key_file, "--tls-key"));
  // The checks (and messages) the server's start runs on the same files.
  QAQKV_RETURN_IF_ERROR(wire::CheckCertAndKey(cert_pem, key_pem, "--tls-cert", "--tls-key"));
  auto pair = std::make_shared<Pair>();
  Bio certs = MemoryBio(cert_pem);
  pair->leaf = PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr);
  pair->chain = sk_X509_new_null();
  while (X509* next = PEM_read_bio_X509(certs.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(pair->chain, next);
  }
  Bio key = MemoryBio(key_pem);
  pair->key = PEM_read_bio_PrivateKey(key.get(), nullptr, nullptr, nullptr);
  ERR_clear_error();  // the end of the certificates reads as an error
  if (pair->leaf == nullptr || pair->key == nullptr) {
    return absl::InternalError(absl::StrCat("--tls-cert: ", cert_file, " passed its checks but did not parse"));
  }
  return std::shared_ptr<const Pair>(std::move(pair));
}

absl::StatusOr<std::unique_ptr<ReloadingCertificate>> ReloadingCertificate::Open(
    std::string cert_file, std::string key_file, absl::Duration reload_interval) {
  auto self = std::make_unique<ReloadingCertificate>(Token(), reload_interval);
  QAQKV_ASSIGN_OR_RETURN(self->pair_,
                         base::ReloadingFiles<Pair>::Open(
                             {cert_file, key_file}, [cert_file, key_file] { return Load(cert_file, key_file); }));
  base::MutexLock lock(&self->mu_);
  self->checked_ = absl::Now();
  return self;
}

std::shared_ptr<const ReloadingCertificate::Pair> ReloadingCertificate::Current() {
  {
    base::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - checked_ < reload_interval_) return pair_->Get();
    checked_ = now;
  }
  const absl::StatusOr<bool> reloaded = pair_->Reload();
  if (!reloaded.ok()) {
    base::LogWarning("metrics TLS certificate not reloaded; the one before stays",
                     {{"component", "service"}, {"error", reloaded.status().ToString()}});
  } else if (*reloaded) {
    base::LogInfo("metrics TLS certificate reloaded", {{"component", "service"}});
  }
  return pair_->Get();
}

int ReloadingCertificate::OnHandshake(SSL* ssl, void* self) {
  const std::shared_ptr<const Pair> pair = static_cast<ReloadingCertificate*>(self)->Current();
  // Each call takes its own reference: the pair may be replaced mid-handshake.
  if (SSL_use_certificate(ssl, pair->leaf) != 1 || SSL_use_PrivateKey(ssl, pair->key) != 1 ||
      SSL_set1_chain(ssl, pair->chain) != 1) {
    return 0;
  }
  return 1;
}

bool ReloadingCertificate::Install(SSL_CTX& ctx) {
  if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) return false;
  SSL_CTX_set_cert_cb(&ctx, &ReloadingCertificate::OnHandshake, this);
  return true;
}

}  // namespace qaqkv::service::internal
