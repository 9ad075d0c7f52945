// Checks of the server's TLS files before gRPC sees them. gRPC reports a
// certificate and key that do not belong together, or a client CA file
// with no certificate in it, only as a failed bind or a failed handshake
// later; these checks name the flag and say what is wrong.
#ifndef QAQKV_SERVICE_TLS_CHECK_H_
#define QAQKV_SERVICE_TLS_CHECK_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qaqkv::service {

// `cert_pem` must hold at least one certificate, `key_pem` a private key
// that matches the first (leaf) certificate. Errors are INVALID_ARGUMENT
// and name --tls-cert or --tls-key.
absl::Status CheckCertAndKey(std::string_view cert_pem, std::string_view key_pem);

// `pem` must hold at least one certificate (flag names the flag in errors).
absl::Status CheckCertificates(std::string_view pem, absl::string_view flag);

}  // namespace qaqkv::service

#endif  // QAQKV_SERVICE_TLS_CHECK_H_
