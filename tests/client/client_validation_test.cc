// Client behavior without a server: bad requests fail with kInvalidArgument
// naming the field before any I/O; valid ones reach the (dead) target and
// end with kUnavailable once the retries are spent.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <stdlib.h>  // mkdtemp

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "qaqkv/limits.h"

namespace qaqkv::client {
namespace {

using ::testing::HasSubstr;

// Nobody listens on port 1: connections are refused at once.
constexpr char kDeadTarget[] = "127.0.0.1:1";

void ExpectInvalid(const absl::Status& s, const std::string& field) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(field)) << s;
}

void ExpectUnavailableAfterRetries(const absl::Status& s) {
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("gave up after 3 attempts")) << s;
}

ClientOptions DeadOptions() {
  ClientOptions o;
  o.target = kDeadTarget;
  o.deadline = absl::Seconds(5);
  o.retry.max_attempts = 3;
  o.retry.initial_backoff = absl::Milliseconds(1);
  o.retry.max_backoff = absl::Milliseconds(5);
  o.encode_threads = 2;
  return o;
}

Geometry SmallGeometry() { return Geometry{2, 2, 4, 8, DType::kF16, 16}; }

// Host K/V of `tokens` rows per layer, fp16 zeros, NHD.
struct Buffers {
  Buffers(const Geometry& g, int64_t tokens)
      : k(g.num_layers, std::vector<uint16_t>(tokens * g.num_kv_heads * g.head_dim)),
        v(k) {}
  HostKv Host() const {
    HostKv kv;
    for (size_t l = 0; l < k.size(); ++l) {
      kv.k.push_back(k[l].data());
      kv.v.push_back(v[l].data());
    }
    return kv;
  }
  MutableHostKv Mutable() {
    MutableHostKv kv;
    for (size_t l = 0; l < k.size(); ++l) {
      kv.k.push_back(k[l].data());
      kv.v.push_back(v[l].data());
    }
    return kv;
  }
  std::vector<std::vector<uint16_t>> k, v;
};

std::vector<BlockKey> Keys(size_t n) {
  std::vector<int32_t> tokens(n * 16, 5);
  return Client::ComputeBlockKeys("test-model", "qaq", tokens, 16);
}

class ClientValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(DeadOptions());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  std::unique_ptr<Client> client_;
};

// ---- Options ---------------------------------------------------------------

TEST(ClientCreateTest, RejectsBadOptionsNamingTheField) {
  auto with = [](auto change) {
    ClientOptions o = DeadOptions();
    change(o);
    return Client::Create(o).status();
  };
  ExpectInvalid(with([](ClientOptions& o) { o.target.clear(); }), "options.target");
  ExpectInvalid(with([](ClientOptions& o) { o.channels = 0; }), "options.channels");
  ExpectInvalid(with([](ClientOptions& o) { o.retry.max_attempts = 0; }),
                "options.retry.max_attempts");
  ExpectInvalid(with([](ClientOptions& o) { o.retry.multiplier = 0.5; }),
                "options.retry.multiplier");
  ExpectInvalid(with([](ClientOptions& o) { o.deadline = absl::ZeroDuration(); }),
                "options.deadline");
  ExpectInvalid(with([](ClientOptions& o) { o.max_message_bytes = 1024; }),
                "options.max_message_bytes");
  ExpectInvalid(with([](ClientOptions& o) { o.tls_server_name = "localhost"; }), "options.tls");
  ExpectInvalid(with([](ClientOptions& o) {
                  o.tls = true;
                  o.tls_client_cert_pem = "cert";
                }),
                "tls_client_key_pem");
  ExpectInvalid(with([](ClientOptions& o) { o.bearer_token = "abc\ndef"; }),
                "options.bearer_token");
  // Not PEM at all (say, the wrong file passed as --tls-ca): an error now,
  // not UNAVAILABLE on every call later.
  ExpectInvalid(with([](ClientOptions& o) {
                  o.tls = true;
                  o.tls_root_certs_pem = "# qaqkv\nKV-cache offload\n";
                }),
                "options.tls_root_certs_pem");
  ExpectInvalid(with([](ClientOptions& o) {
                  o.tls = true;
                  o.tls_client_cert_pem = "-----BEGIN PRIVATE KEY-----\n";
                  o.tls_client_key_pem = "-----BEGIN PRIVATE KEY-----\n";
                }),
                "options.tls_client_cert_pem");
  // A PEM header with nothing behind it is no certificate either.
  ExpectInvalid(with([](ClientOptions& o) {
                  o.tls = true;
                  o.tls_client_cert_pem = "-----BEGIN CERTIFICATE-----\n";
                  o.tls_client_key_pem = "-----BEGIN CERTIFICATE-----\n";
                }),
                "options.tls_client_cert_pem");
}

// Two self-signed EC certificates and their keys, made by the openssl
// command line in a temporary directory (removed with the object).
class TwoIdentities {
 public:
  TwoIdentities() {
    char tmpl[] = "/tmp/qaqkv-client-tls-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return;
    dir_ = tmpl;
    const std::string script = "cd '" + dir_ + "' && for who in a b; do "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout $who.key -out $who.pem -days 2 -subj /CN=qaqkv-$who 2>/dev/null || exit 1; done";
    ok_ = std::system(script.c_str()) == 0;
  }
  ~TwoIdentities() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  std::string Read(const std::string& name) const {
    std::ifstream in(dir_ + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string dir_;
  bool ok_ = false;
};

// Create parses the TLS material: a key that does not match its
// certificate, or a key where a certificate belongs, is an error naming the
// field now, not UNAVAILABLE on every call later.
TEST(ClientCreateTest, TlsMaterialIsParsedAndKeysMustMatchTheirCertificate) {
  TwoIdentities pki;
  ASSERT_TRUE(pki.ok()) << "openssl could not make test certificates";
  const std::string cert_a = pki.Read("a.pem"), key_a = pki.Read("a.key");
  const std::string cert_b = pki.Read("b.pem"), key_b = pki.Read("b.key");
  ASSERT_FALSE(cert_a.empty() || key_a.empty() || cert_b.empty() || key_b.empty());
  auto create = [](std::string roots, std::string cert, std::string key) {
    ClientOptions o = DeadOptions();
    o.tls = true;
    o.tls_root_certs_pem = std::move(roots);
    o.tls_client_cert_pem = std::move(cert);
    o.tls_client_key_pem = std::move(key);
    return Client::Create(o).status();
  };
  EXPECT_TRUE(create(cert_b, cert_a, key_a).ok());
  EXPECT_TRUE(create(cert_a + cert_b, "", "").ok()) << "a bundle of two roots";

  absl::Status s = create(cert_b, cert_a, key_b);
  ExpectInvalid(s, "options.tls_client_key_pem");
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not match")) << s;
  ExpectInvalid(create(cert_b, cert_a, cert_a), "options.tls_client_key_pem");
  ExpectInvalid(create(cert_b, key_a, key_a), "options.tls_client_cert_pem");
  ExpectInvalid(create(key_b, cert_a, key_a), "options.tls_root_certs_pem");
}

TEST(ClientCreateTest, ConnectsLazily) {
  ClientOptions o = DeadOptions();
  o.channels = 3;
  EXPECT_TRUE(Client::Create(o).ok());
}

TEST(ClientCreateTest, CanonicalCodec) {
  absl::StatusOr<std::string> qaq = Client::CanonicalCodec("qaq");
  ASSERT_TRUE(qaq.ok()) << qaq.status();
  EXPECT_EQ(*Client::CanonicalCodec(*qaq), *qaq);
  EXPECT_EQ(*Client::CanonicalCodec("qaq:b=0-8"), *qaq);
  ExpectInvalid(Client::CanonicalCodec("zip").status(), "codec");
}

// ---- Validation before I/O -----------------------------------------------------

TEST_F(ClientValidationTest, OffloadNamesTheBadField) {
  const Geometry g = SmallGeometry();
  const std::vector<BlockKey> keys = Keys(2);
  Buffers buffers(g, 32);
  auto request = [&] {
    OffloadRequest r;
    r.geometry = g;
    r.blocks = keys;
    r.kv = buffers.Host();
    return r;
  };
  {
    OffloadRequest r = request();
    r.geometry.num_layers = 0;
    ExpectInvalid(client_->Offload(r).status(), "geometry.num_layers");
  }
  {
    OffloadRequest r = request();
    r.geometry.num_q_heads = 3;
    ExpectInvalid(client_->Offload(r).status(), "geometry.num_q_heads");
  }
  {
    OffloadRequest r = request();
    r.geometry.dtype = DType::kF32;
    ExpectInvalid(client_->Offload(r).status(), "geometry.dtype");
  }
  {
    OffloadRequest r = request();
    r.codec = "qaq-bogus";
    ExpectInvalid(client_->Offload(r).status(), "codec");
  }
  {
    OffloadRequest r = request();
    r.kv.k.pop_back();
    const absl::Status s = client_->Offload(r).status();
    ExpectInvalid(s, "kv.k: 1 layers given, geometry.num_layers is 2");
  }
  {
    OffloadRequest r = request();
    r.kv.v[1] = nullptr;
    ExpectInvalid(client_->Offload(r).status(), "kv.v[1]: null");
  }
  {
    OffloadRequest r = request();
    r.kv.tokens = 31;  // two blocks of 16 need 32 rows
    ExpectInvalid(client_->Offload(r).status(), "kv.tokens");
  }
  {
    OffloadRequest r = request();
    r.kv.first_token = -1;
    ExpectInvalid(client_->Offload(r).status(), "kv.first_token");
  }
  {
    OffloadRequest r = request();
    r.kv.dtype = static_cast<DType>(9);
    ExpectInvalid(client_->Offload(r).status(), "kv.dtype");
  }
  std::vector<float> attention(32 * 2, 0.5f);
  std::vector<float> short_attention(31 * 2, 0.5f);
  std::vector<float> q2(2, 1.0f);
  {
    OffloadRequest r = request();
    r.side.attention = {attention};
    ExpectInvalid(client_->Offload(r).status(), "side.attention: 1 layers given");
  }
  {
    OffloadRequest r = request();
    r.side.attention = {attention, short_attention};
    ExpectInvalid(client_->Offload(r).status(), "side.attention[1]");
  }
  {
    OffloadRequest r = request();
    std::vector<float> bad = attention;
    bad[7] = 1.5f;
    r.side.attention = {attention, bad};
    ExpectInvalid(client_->Offload(r).status(), "side.attention[1][7]");
  }
  {
    OffloadRequest r = request();
    std::vector<float> one(1, 1.0f);
    r.side.q2 = {q2, one};
    ExpectInvalid(client_->Offload(r).status(), "side.q2[1]");
  }
  {
    OffloadRequest r = request();
    std::vector<float> zero(2, 0.0f);
    r.side.q2 = {zero, q2};
    ExpectInvalid(client_->Offload(r).status(), "side.q2[0][0]");
  }
  {
    OffloadRequest r = request();
    r.side.context_tokens = -5;
    ExpectInvalid(client_->Offload(r).status(), "side.context_tokens");
  }
}

TEST_F(ClientValidationTest, OffloadOfNothingSendsNothing) {
  OffloadRequest r;
  r.geometry = SmallGeometry();
  Buffers buffers(r.geometry, 1);
  r.kv = buffers.Host();
  absl::StatusOr<OffloadResult> result = client_->Offload(r);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->pages, 0u);
}

TEST_F(ClientValidationTest, ValueBeyondFp16RangeFailsWhileEncoding) {
  OffloadRequest r;
  r.geometry = SmallGeometry();
  const std::vector<BlockKey> keys = Keys(1);
  r.blocks = keys;
  std::vector<std::vector<float>> k(2, std::vector<float>(16 * 2 * 8)), v = k;
  k[0][3] = 1e6f;  // the first page: it fails before anything is written
  r.kv.dtype = DType::kF32;
  r.kv.k = {k[0].data(), k[1].data()};
  r.kv.v = {v[0].data(), v[1].data()};
  const absl::Status s = client_->Offload(r).status();
  ExpectInvalid(s, "page (block 0, layer 0)");
  EXPECT_THAT(std::string(s.message()), HasSubstr("fp16 range"));
}

TEST_F(ClientValidationTest, LoadNamesTheBadField) {
  const Geometry g = SmallGeometry();
  const std::vector<BlockKey> keys = Keys(2);
  Buffers buffers(g, 32);
  auto request = [&] {
    LoadRequest r;
    r.geometry = g;
    r.blocks = keys;
    r.kv = buffers.Mutable();
    return r;
  };
  {
    LoadRequest r = request();
    r.layer_end = 3;
    ExpectInvalid(client_->Load(r).status(), "layer_end");
  }
  {
    LoadRequest r = request();
    r.layer_begin = 2;
    ExpectInvalid(client_->Load(r).status(), "layer_begin");
  }
  {
    LoadRequest r = request();
    r.layer_begin = 1;
    r.layer_end = 1;
    ExpectInvalid(client_->Load(r).status(), "layer_end");
  }
  {
    LoadRequest r = request();
    r.codec = "int3";
    ExpectInvalid(client_->Load(r).status(), "codec");
  }
  {
    LoadRequest r = request();
    r.kv.k[0] = nullptr;
    ExpectInvalid(client_->Load(r).status(), "kv.k[0]: null");
  }
  {
    LoadRequest r = request();
    r.kv.layout = static_cast<Layout>(7);
    ExpectInvalid(client_->Load(r).status(), "kv.layout");
  }
  {
    std::vector<BlockKey> many(65537);
    LoadRequest r = request();
    r.blocks = many;
    ExpectInvalid(client_->Load(r).status(), "blocks: 65537 keys");
  }
}

TEST_F(ClientValidationTest, LoadOfNoBlocksReportsEveryLayerInOrder) {
  LoadRequest r;
  r.geometry = SmallGeometry();
  r.geometry.num_layers = 2;
  Buffers buffers(r.geometry, 1);
  r.kv = buffers.Mutable();
  std::vector<int> layers;
  r.on_layer = [&layers](int l) { layers.push_back(l); };
  ASSERT_TRUE(client_->Load(r).ok());
  EXPECT_EQ(layers, (std::vector<int>{0, 1}));
}

TEST_F(ClientValidationTest, LookupAndPagesNameTheBadField) {
  const std::vector<BlockKey> keys = Keys(1);
  ExpectInvalid(client_->Lookup(keys, nullptr, "qaq").status(), "codec");
  Geometry g = SmallGeometry();
  ExpectInvalid(client_->Lookup(keys, &g, "").status(), "codec");
  g.head_dim = 2000;
  ExpectInvalid(client_->Lookup(keys, &g, "qaq").status(), "geometry.head_dim");
  std::vector<BlockKey> too_many((size_t{1} << 20) + 1);
  ExpectInvalid(client_->Lookup(too_many).status(), "blocks");
  EXPECT_EQ(*client_->Lookup({}), 0u);

  std::vector<EncodedPage> pages(2);
  pages[0].data = "x";
  pages[1].layer = 2;
  pages[1].data = "x";
  ExpectInvalid(client_->PutPages(SmallGeometry(), "qaq", pages).status(), "pages[1].layer");
  pages[1].layer = 1;
  pages[1].data.clear();
  ExpectInvalid(client_->PutPages(SmallGeometry(), "qaq", pages).status(), "pages[1].data");

  auto ignore = [](const BlockKey&, int, std::string_view) { return absl::OkStatus(); };
  ExpectInvalid(client_->GetPages(keys, -1, 0, ignore), "layer_begin");
  ExpectInvalid(client_->GetPages(keys, 2, 2, ignore), "layer_end");
}

TEST_F(ClientValidationTest, SessionsNameTheBadField) {
  const Geometry g = SmallGeometry();
  SessionSpec spec;
  spec.session_id = "chat 1";
  spec.geometry = g;
  spec.blocks = Keys(2);
  spec.token_count = 40;
  ExpectInvalid(client_->SaveSession(spec), "session_id");
  spec.session_id = "chat-1";
  spec.token_count = 48;  // 2 blocks of 16 + 16: a full third block, not a tail
  ExpectInvalid(client_->SaveSession(spec), "token_count");
  spec.token_count = 31;
  ExpectInvalid(client_->SaveSession(spec), "token_count");
  spec.token_count = 40;  // tail of 8 tokens, but no tail buffers
  ExpectInvalid(client_->SaveSession(spec), "tail.k: 0 layers given");
  spec.ttl = absl::Seconds(-1);
  spec.token_count = 32;
  ExpectInvalid(client_->SaveSession(spec), "ttl");

  Buffers buffers(g, 40);
  spec.ttl = absl::ZeroDuration();
  spec.token_count = 40;
  spec.tail = buffers.Host();
  ExpectInvalid(client_->OffloadSession(spec, buffers.Host()).status(), "tail: must be empty");

  ExpectInvalid(client_->GetSession("").status(), "session_id");
  ExpectInvalid(client_->ResumeSession("a\nb", buffers.Mutable()).status(), "session_id");
  ExpectInvalid(client_->DeleteSession(std::string(limits::kMaxSessionIdBytes + 1, 'x')), "session_id");
  ExpectInvalid(client_->TouchSession(" "), "session_id");
  ExpectInvalid(client_->ListSessions(200000).status(), "limit");
}

// ---- A valid call against the dead target ---------------------------------------

TEST_F(ClientValidationTest, ValidCallsAreUnavailableAfterTheRetries) {
  const Geometry g = SmallGeometry();
  const std::vector<BlockKey> keys = Keys(2);
  Buffers buffers(g, 40);
  const absl::Time start = absl::Now();

  ExpectUnavailableAfterRetries(client_->Lookup(keys).status());
  ExpectUnavailableAfterRetries(client_->Lookup(keys, &g, "int8").status());
  ExpectUnavailableAfterRetries(client_->GetStats().status());

  OffloadRequest offload;
  offload.geometry = g;
  offload.blocks = keys;
  offload.kv = buffers.Host();
  ExpectUnavailableAfterRetries(client_->Offload(offload).status());

  LoadRequest load;
  load.geometry = g;
  load.blocks = keys;
  load.kv = buffers.Mutable();
  std::atomic<int> layers{0};
  load.on_layer = [&layers](int) { ++layers; };
  ExpectUnavailableAfterRetries(client_->Load(load).status());
  EXPECT_EQ(layers.load(), 0);

  std::vector<EncodedPage> pages(1);
  pages[0].block = keys[0];
  pages[0].data = "not a page, but the server is never reached";
  ExpectUnavailableAfterRetries(client_->PutPages(g, "qaq", pages).status());
  int seen = 0;
  ExpectUnavailableAfterRetries(client_->GetPages(keys, 0, 0, [&](const BlockKey&, int,
                                                                  std::string_view) {
    ++seen;
    return absl::OkStatus();
  }));
  EXPECT_EQ(seen, 0);

  SessionSpec spec;
  spec.session_id = "chat-1";
  spec.geometry = g;
  spec.blocks = keys;
  spec.token_count = 40;
  HostKv tail = buffers.Host();  // rows [32, 40) of the buffers are the tail
  tail.first_token = 32;
  spec.tail = tail;
  ExpectUnavailableAfterRetries(client_->SaveSession(spec));
  spec.tail = HostKv();
  ExpectUnavailableAfterRetries(client_->OffloadSession(spec, buffers.Host()).status());
  ExpectUnavailableAfterRetries(client_->GetSession("chat-1").status());
  ExpectUnavailableAfterRetries(client_->ResumeSession("chat-1", buffers.Mutable()).status());
  ExpectUnavailableAfterRetries(client_->DeleteSession("chat-1"));
  ExpectUnavailableAfterRetries(client_->TouchSession("chat-1"));
  ExpectUnavailableAfterRetries(client_->ListSessions().status());

  // Refused connections fail fast: the retries, not the 5 s deadline, bound it.
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(ClientRetryTest, OneAttemptMeansNoRetry) {
  ClientOptions o = DeadOptions();
  o.retry.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  const absl::Status s = (*c)->GetStats().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("gave up after 1 attempt)"));
}

TEST(ClientRetryTest, BackoffSpacesTheAttempts) {
  ClientOptions o = DeadOptions();
  o.retry.max_attempts = 3;
  o.retry.initial_backoff = absl::Milliseconds(100);
  o.retry.max_backoff = absl::Milliseconds(100);
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  const absl::Time start = absl::Now();
  EXPECT_EQ((*c)->GetStats().status().code(), absl::StatusCode::kUnavailable);
  // Two waits of at least half the backoff each (jitter in [0.5, 1]).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
}

}  // namespace
}  // namespace qaqkv::client
