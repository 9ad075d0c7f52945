// Bearer-token tenants and TLS/mTLS through the real server, with
// certificates made by the openssl command line.
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

// ---------------------------------------------------------------------------
// Authentication and tenants.

class AuthTest : public ServiceTest {
 protected:
  void SetUp() override {
    const std::string tokens = server_.dir() + "/tokens";
    WriteFile(tokens, "# qaqkv tokens\ntoken-of-a a\n\ntoken-of-b b\n");
    ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--auth-tokens=", tokens)}));
    a_ = server_.Stub({.bearer_token = "token-of-a"});
    b_ = server_.Stub({.bearer_token = "token-of-b"});
  }
  std::unique_ptr<Stub> a_, b_;
};

// Every RPC of `stub` fails with UNAUTHENTICATED; `what` names the client.
void ExpectEveryRpcUnauthenticated(Stub& stub, const TestBlock& block,
                                   const v1::BlockFormat& format,
                                   const std::string& what) {
  SCOPED_TRACE(what);
  constexpr auto kUnauth = grpc::StatusCode::UNAUTHENTICATED;
  EXPECT_TRUE(IsError(Lookup(stub, {block.key}).status, kUnauth, "authorization"));
  EXPECT_TRUE(IsError(PutBlocks(stub, format, {block}).status, kUnauth, "authorization"));
  EXPECT_TRUE(IsError(GetPages(stub, {block.key}).status, kUnauth, "authorization"));
  v1::Session s;
  s.set_session_id("s");
  *s.mutable_format() = format;
  EXPECT_TRUE(IsError(PutSession(stub, s), kUnauth, "authorization"));
  v1::GetSessionResponse session;
  EXPECT_TRUE(IsError(GetSession(stub, "s", &session), kUnauth, "authorization"));
  v1::ListSessionsResponse list;
  EXPECT_TRUE(IsError(Unary(stub, &Stub::ListSessions, v1::ListSessionsRequest(), &list),
                      kUnauth, "authorization"));
  EXPECT_TRUE(IsError(DeleteSession(stub, "s"), kUnauth, "authorization"));
  EXPECT_TRUE(IsError(TouchSession(stub, "s"), kUnauth, "authorization"));
  v1::GetStatsResponse stats;
  EXPECT_TRUE(IsError(Unary(stub, &Stub::GetStats, v1::GetStatsRequest(), &stats),
                      kUnauth, "authorization"));
}

TEST_F(AuthTest, EveryRpcNeedsAValidToken) {
  const TestBlock block = NewBlock(format_, 71);
  ExpectEveryRpcUnauthenticated(*server_.Stub(), block, format_, "no token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.bearer_token = "token-of-c"}), block,
                                format_, "unknown token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.authorization = "Basic token-of-a"}),
                                block, format_, "not a bearer token");
  ExpectEveryRpcUnauthenticated(*server_.Stub({.authorization = "Bearer"}), block,
                                format_, "empty bearer token");
  // Nothing of the refused calls was stored.
  EXPECT_EQ(Stats(*a_).total_bytes(), 0u);
  EXPECT_EQ(Lookup(*a_, {block.key}).committed_prefix, 0u);
  EXPECT_TRUE(ListSessions(*a_).empty());
  // The scheme is case-insensitive.
  EXPECT_GRPC_OK(
      Lookup(*server_.Stub({.authorization = "bearer token-of-a"}), {block.key}).status);
}

TEST_F(AuthTest, TenantsCannotSeeEachOthersData) {
  const TestBlock block = NewBlock(format_, 81);
  ASSERT_GRPC_OK(PutBlocks(*a_, format_, {block}).status);
  v1::Session s;
  s.set_session_id("a-session");
  s.add_block_keys(block.key);
  s.set_token_count(format_.geometry().block_tokens());
  *s.mutable_format() = format_;
  ASSERT_GRPC_OK(PutSession(*a_, s));

  // Tenant b sees a miss, the same answer as for a key nobody wrote.
  EXPECT_EQ(Lookup(*b_, {block.key}).committed_prefix, 0u);
  EXPECT_EQ(Lookup(*b_, {block.key}, &format_).committed_prefix, 0u);
  const GetResult theirs = GetPages(*b_, {block.key});
  const GetResult nobodys = GetPages(*b_, {MakeBlockKey(12345)});
  EXPECT_TRUE(IsError(theirs.status, grpc::StatusCode::NOT_FOUND, "block_keys[0]"));
  EXPECT_EQ(theirs.status.error_message(), nobodys.status.error_message());
  EXPECT_TRUE(theirs.pages.empty());
  v1::GetSessionResponse session;
  EXPECT_TRUE(IsError(GetSession(*b_, "a-session", &session), grpc::StatusCode::NOT_FOUND,
                      "session"));
  EXPECT_TRUE(ListSessions(*b_).empty());
  EXPECT_TRUE(
      IsError(DeleteSession(*b_, "a-session"), grpc::StatusCode::NOT_FOUND, "session"));
  EXPECT_TRUE(
      IsError(TouchSession(*b_, "a-session"), grpc::StatusCode::NOT_FOUND, "session"));
  EXPECT_EQ(Stats(*b_).tenant_bytes(), 0u);

  // b may use the same key under another format: its keys are its own.
  const v1::BlockFormat int4 = MakeFormat("int4");
  TestBlock b_block = NewBlock(int4, 82);
  b_block.key = block.key;
  const PutResult put = PutBlocks(*b_, int4, {b_block});
  ASSERT_GRPC_OK(put.status);
  EXPECT_THAT(put.response.committed_blocks(), ElementsAre(block.key));
  ExpectSamePages(GetPages(*b_, {block.key}).pages, LayerMajor({b_block}, 0, 4));

  // a's data is intact.
  EXPECT_EQ(Lookup(*a_, {block.key}, &format_).committed_prefix, 1u);
  ExpectSamePages(GetPages(*a_, {block.key}).pages, LayerMajor({block}, 0, 4));
  ASSERT_GRPC_OK(GetSession(*a_, "a-session", &session));
  EXPECT_EQ(session.committed_prefix(), 1u);
  EXPECT_THAT(ListSessions(*a_), ElementsAre("a-session"));

  const v1::GetStatsResponse sa = Stats(*a_);
  const v1::GetStatsResponse sb = Stats(*b_);
  EXPECT_EQ(sa.tenant_bytes(), block.bytes());
  EXPECT_EQ(sb.tenant_bytes(), b_block.bytes());
  EXPECT_NE(sa.tenant_bytes(), sb.tenant_bytes());
  EXPECT_EQ(sa.tenant_blocks(), 1u);
  EXPECT_EQ(sb.tenant_blocks(), 1u);
  EXPECT_EQ(sa.total_bytes(), block.bytes() + b_block.bytes());
}

// A rotated token file takes effect without a restart; one that does not
// parse is refused and the tokens in force stay.
TEST_F(ServiceTest, TokenFileChangesTakeEffectWithoutARestart) {
  const std::string tokens = server_.dir() + "/tokens";
  WriteFile(tokens, "old-token a\n");
  ASSERT_NO_FATAL_FAILURE(
      StartServer({absl::StrCat("--auth-tokens=", tokens), "--reload-interval=1s"}));
  const TestBlock block = NewBlock(format_, 77);
  ASSERT_GRPC_OK(PutBlocks(*server_.Stub({.bearer_token = "old-token"}), format_, {block}).status);
  // As a Secret volume does it: a new file renamed over the old one.
  WriteFile(tokens + ".new", "new-token a\n");
  ASSERT_EQ(std::rename((tokens + ".new").c_str(), tokens.c_str()), 0);
  auto lookup_with = [&](const std::string& token) {
    return Lookup(*server_.Stub({.bearer_token = token}), {block.key}).status;
  };
  EXPECT_TRUE(PollUntil([&] { return lookup_with("new-token").ok(); }))
      << "the new token was never accepted";
  EXPECT_EQ(lookup_with("old-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Tenant a's data is where it was.
  EXPECT_EQ(Lookup(*server_.Stub({.bearer_token = "new-token"}), {block.key}).committed_prefix,
            1u);
  // A broken file: refused, logged, the tokens in force stay.
  WriteFile(tokens + ".new", "only-a-token\n");
  ASSERT_EQ(std::rename((tokens + ".new").c_str(), tokens.c_str()), 0);
  EXPECT_TRUE(PollUntil([&] {
    return server_.Log().find("token file changed but cannot be used") != std::string::npos;
  })) << server_.Log();
  EXPECT_GRPC_OK(lookup_with("new-token"));
}

// ---------------------------------------------------------------------------
// TLS.

// A CA, a server certificate for localhost / 127.0.0.1 and a client
// certificate, made with the openssl command line; plus a second CA that
// signed nothing.
struct Pki {
  std::string ca, other_ca, server_cert, server_key, client_cert, client_key;
  std::string dir;
};

absl::StatusOr<Pki> MakePki(const std::string& dir) {
  const std::string script = absl::StrCat(R"(set -e
cd ')",
                                          dir, R"('
EC='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
for ca in ca other-ca; do
  openssl req -x509 $EC -keyout $ca.key -out $ca.pem -days 2 -subj "/CN=qaqkv test $ca" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
done
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl req -new $EC -keyout $who.key -out $who.csr -subj "/CN=qaqkv-$who"
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out $who.pem -extfile $who.ext
done
)");
  auto run = RunToExit({"/bin/sh", "-c", script}, absl::Seconds(60));
  if (!run.ok()) return run.status();
  if (run->exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl failed:\n", run->output));
  }
  Pki p;
  p.dir = dir;
  p.ca = ReadFile(dir + "/ca.pem");
  p.other_ca = ReadFile(dir + "/other-ca.pem");
  p.server_cert = ReadFile(dir + "/server.pem");
  p.server_key = ReadFile(dir + "/server.key");
  p.client_cert = ReadFile(dir + "/client.pem");
  p.client_key = ReadFile(dir + "/client.key");
  return p;
}

TEST_F(ServiceTest, TlsServerServesOnlyTlsClientsThatTrustIt) {
  base::TempDir pki_dir = MakeTempDir();
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_NO_FATAL_FAILURE(
      StartServer({absl::StrCat("--tls-cert=", pki.dir, "/server.pem"),
                   absl::StrCat("--tls-key=", pki.dir, "/server.key")}));
  // By name and by IP address (both are in subjectAltName).
  EXPECT_GRPC_OK(Probe(server_, {.tls_root_pem = pki.ca}));
  EXPECT_GRPC_OK(Probe(server_, {.tls_root_pem = pki.ca, .tls_server_name = ""}));
  std::unique_ptr<Stub> tls = server_.Stub({.tls_root_pem = pki.ca});
  const TestBlock block = NewBlock(format_, 91);
  ASSERT_GRPC_OK(PutBlocks(*tls, format_, {block}).status);
  ExpectSamePages(GetPages(*tls, {block.key}).pages, LayerMajor({block}, 0, 4));

  EXPECT_EQ(Probe(server_, {}).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext";
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.other_ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "untrusted server certificate";
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca, .tls_server_name = "qaqkv.example"})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "wrong server name";
}

// A renewed server certificate signed by the other CA (so a client can
// tell which it got), and live/tls.{crt,key}: copies of the first pair for
// a server to watch.
absl::Status MakeRenewal(const Pki& pki) {
  const std::string script = absl::StrCat("set -e\ncd '", pki.dir, R"('
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout renewed.key \
  -out renewed.csr -subj "/CN=qaqkv-server-renewed"
openssl x509 -req -in renewed.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -days 2 \
  -out renewed.pem -extfile server.ext
mkdir live
cp server.pem live/tls.crt
cp server.key live/tls.key
)");
  auto made = RunToExit({"/bin/sh", "-c", script}, absl::Seconds(60));
  if (!made.ok()) return made.status();
  if (made->exit_code != 0) return absl::InternalError(made->output);
  return absl::OkStatus();
}

// Swaps live/ to the renewed pair as a renewal does: key first, then
// certificate, each renamed in whole.
void Renew(const Pki& pki) {
  WriteFile(pki.dir + "/live/tls.key.new", ReadFile(pki.dir + "/renewed.key"));
  WriteFile(pki.dir + "/live/tls.crt.new", ReadFile(pki.dir + "/renewed.pem"));
  ASSERT_EQ(std::rename((pki.dir + "/live/tls.key.new").c_str(),
                        (pki.dir + "/live/tls.key").c_str()), 0);
  ASSERT_EQ(std::rename((pki.dir + "/live/tls.crt.new").c_str(),
                        (pki.dir + "/live/tls.crt").c_str()), 0);
}

// A renewed certificate serves new handshakes without a restart.
TEST_F(ServiceTest, ARenewedCertificateServesWithoutARestart) {
  base::TempDir pki_dir = MakeTempDir();
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_TRUE(MakeRenewal(pki).ok());
  ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--tls-cert=", pki.dir, "/live/tls.crt"),
                                       absl::StrCat("--tls-key=", pki.dir, "/live/tls.key"),
                                       "--reload-interval=1s"}));
  EXPECT_GRPC_OK(Probe(server_, {.tls_root_pem = pki.ca}));
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.other_ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ASSERT_NO_FATAL_FAILURE(Renew(pki));
  EXPECT_TRUE(PollUntil([&] { return Probe(server_, {.tls_root_pem = pki.other_ca}).ok(); }))
      << "the renewed certificate was never served";
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "the old certificate is still served";
}

// --metrics-tls: /metrics and the probes over HTTPS with the server's
// certificate, never in plaintext, and a renewal served without a restart.
TEST_F(ServiceTest, MetricsOverTlsServeTheRenewedCertificate) {
  base::TempDir pki_dir = MakeTempDir();
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_TRUE(MakeRenewal(pki).ok());
  ASSERT_NO_FATAL_FAILURE(StartServer({absl::StrCat("--tls-cert=", pki.dir, "/live/tls.crt"),
                                       absl::StrCat("--tls-key=", pki.dir, "/live/tls.key"),
                                       "--metrics-listen=127.0.0.1:0", "--metrics-tls",
                                       "--reload-interval=1s"}));
  const int port = MetricsPort(server_.Log());
  ASSERT_GT(port, 0) << server_.Log();
  // An HTTPS GET of `path` trusting `ca`: the status, or -1 when no
  // response came (a failed handshake).
  auto get = [&](const std::string& ca, const std::string& path) {
    httplib::SSLClient https("127.0.0.1", port);
    https.set_ca_cert_path(ca.c_str());
    https.enable_server_certificate_verification(true);
    https.set_connection_timeout(10);
    const httplib::Result r = https.Get(path.c_str());
    return r ? r->status : -1;
  };
  const std::string ca = pki.dir + "/ca.pem", other = pki.dir + "/other-ca.pem";
  EXPECT_EQ(get(ca, "/metrics"), 200);
  EXPECT_EQ(get(ca, "/healthz"), 200);
  EXPECT_EQ(get(ca, "/readyz"), 200);
  EXPECT_EQ(get(other, "/metrics"), -1) << "untrusted certificate accepted";
  httplib::Client plain("127.0.0.1", port);
  plain.set_connection_timeout(10);
  const httplib::Result cleartext = plain.Get("/metrics");
  EXPECT_TRUE(!cleartext || cleartext->status != 200) << "served in plaintext";

  ASSERT_NO_FATAL_FAILURE(Renew(pki));
  EXPECT_TRUE(PollUntil([&] { return get(other, "/metrics") == 200; }))
      << "the renewed certificate was never served";
  EXPECT_EQ(get(ca, "/metrics"), -1) << "the old certificate is still served";
}

TEST_F(ServiceTest, MutualTlsRequiresATrustedClientCertificate) {
  base::TempDir pki_dir = MakeTempDir();
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  ASSERT_NO_FATAL_FAILURE(
      StartServer({absl::StrCat("--tls-cert=", pki.dir, "/server.pem"),
                   absl::StrCat("--tls-key=", pki.dir, "/server.key"),
                   absl::StrCat("--tls-client-ca=", pki.dir, "/ca.pem")}));
  const ClientOptions with_cert = {.tls_root_pem = pki.ca,
                                   .tls_client_cert_pem = pki.client_cert,
                                   .tls_client_key_pem = pki.client_key};
  EXPECT_GRPC_OK(Probe(server_, with_cert));
  std::unique_ptr<Stub> mtls = server_.Stub(with_cert);
  const TestBlock block = NewBlock(format_, 92);
  ASSERT_GRPC_OK(PutBlocks(*mtls, format_, {block}).status);
  ExpectSamePages(GetPages(*mtls, {block.key}).pages, LayerMajor({block}, 0, 4));

  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca}).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  // The server's own certificate is signed by the CA but is not for clients
  // (extendedKeyUsage serverAuth).
  EXPECT_EQ(Probe(server_, {.tls_root_pem = pki.ca,
                            .tls_client_cert_pem = pki.server_cert,
                            .tls_client_key_pem = pki.server_key})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "certificate without clientAuth";
  EXPECT_EQ(Probe(server_, {}).error_code(), grpc::StatusCode::UNAVAILABLE)
      << "plaintext";
}


TEST_F(ServiceTest, TlsFilesThatDoNotFitAreRefusedAtStart) {
  base::TempDir pki_dir = MakeTempDir();
  ASSERT_OK_AND_ASSIGN(const Pki pki, MakePki(pki_dir.path()));
  base::TempDir dir = MakeTempDir();
  const std::string d = pki.dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/client.key"},
       "--tls-key: does not match the first certificate in --tls-cert"},
      {{"--tls-cert=" + d + "/server.key", "--tls-key=" + d + "/server.key"},
       "--tls-cert: no PEM certificate"},
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.pem"},
       "--tls-key: no unencrypted PEM private key"},
      // A client CA file without a certificate would refuse every client
      // at the handshake instead.
      {{"--tls-cert=" + d + "/server.pem", "--tls-key=" + d + "/server.key",
        "--tls-client-ca=" + d + "/ca.key"},
       "--tls-client-ca: no PEM certificate"},
  };
  for (const auto& [flags, want] : cases) {
    std::vector<std::string> argv = {ServerBinary(), "--listen=127.0.0.1:0",
                                     "--data-dir=" + dir.path() + "/db"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto run = RunToExit(argv, absl::Seconds(60));
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->exit_code, 2) << run->output;
    EXPECT_THAT(run->output, HasSubstr(want));
  }
}

// gRPC and cpp-httplib both set SO_REUSEPORT by default, which let a second
// server bind a port in use and take half of its connections.

}  // namespace
}  // namespace qaqkv::service::testing
