#include "proto/tls_check.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qaqkv::wire {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

Bio MemoryBio(std::string_view pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL keeps errors in a per-thread queue; take the newest as text and
// leave the queue empty for gRPC, which reads the same queue later.
std::string TakeOpenSslError() {
  unsigned long code = 0, last = 0;
  while ((code = ERR_get_error()) != 0) last = code;
  if (last == 0) return "no PEM block found";
  char buf[256];
  ERR_error_string_n(last, buf, sizeof(buf));
  return buf;
}

}  // namespace

absl::Status CheckCertificates(std::string_view pem, absl::string_view name) {
  Bio bio = MemoryBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": no PEM certificate in it (", TakeOpenSslError(), ")"));
  }
  ERR_clear_error();
  return absl::OkStatus();
}

absl::Status CheckCertAndKey(std::string_view cert_pem, std::string_view key_pem,
                             absl::string_view cert_name, absl::string_view key_name) {
  QAQKV_RETURN_IF_ERROR(CheckCertificates(cert_pem, cert_name));
  Bio cert_bio = MemoryBio(cert_pem);
  Cert leaf(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  Bio key_bio = MemoryBio(key_pem);
  // No passphrase callback: an encrypted key fails here instead of
  // prompting on a terminal a server or worker does not have.
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, const_cast<char*>("")));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_name, ": no unencrypted PEM private key in it (", TakeOpenSslError(), ")"));
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_name, ": does not match the first certificate in ", cert_name));
  }
  return absl::OkStatus();
}

}  // namespace qaqkv::wire
