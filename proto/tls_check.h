// Checks of TLS material before gRPC sees it, for the server's files and
// the client's options alike. gRPC reports a certificate and key that do
// not belong together, or a CA bundle with no certificate in it, only as a
// failed bind or as UNAVAILABLE on every call later; these checks name the
// flag or field and say what is wrong.
#ifndef QAQKV_PROTO_TLS_CHECK_H_
#define QAQKV_PROTO_TLS_CHECK_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qaqkv::wire {

// `pem` must hold at least one certificate. Errors are INVALID_ARGUMENT and
// start with `name` (a flag such as "--tls-client-ca", or an option field).
absl::Status CheckCertificates(std::string_view pem, absl::string_view name);

// `cert_pem` must hold at least one certificate, `key_pem` an unencrypted
// private key that matches the first (leaf) certificate. Errors are
// INVALID_ARGUMENT and start with `cert_name` or `key_name`.
absl::Status CheckCertAndKey(std::string_view cert_pem, std::string_view key_pem,
                             absl::string_view cert_name, absl::string_view key_name);

}  // namespace qaqkv::wire

#endif  // QAQKV_PROTO_TLS_CHECK_H_
