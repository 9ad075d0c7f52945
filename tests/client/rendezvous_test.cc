// The GPU-transfer rendezvous (OfferTransfer / AcceptTransfer) through the
// client library against the real qaqkv-server binary: round trip, a
// receiver waiting for a later offer, one match per offer, expiry, tenant
// isolation, and bad offers refused (client side and, through a raw stub,
// server side) with the field named and nothing left pending.
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/one_server_test.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"

namespace qaqkv::client {
namespace {

using service::testing::ServerProcess;
using ::testing::HasSubstr;

TransferOffer MakeOffer(const std::string& id) {
  TransferOffer o;
  o.transfer_id = id;
  o.nccl_unique_id = std::string(128, '\x07');
  o.format.geometry.num_layers = 2;
  o.format.geometry.num_kv_heads = 2;
  o.format.geometry.num_q_heads = 4;
  o.format.geometry.head_dim = 64;
  o.format.geometry.block_tokens = 16;
  o.format.codec = "int8";
  o.blocks = {BlockKey{1}, BlockKey{2}, BlockKey{3}};
  o.page_bytes = {100, 101, 102, 200, 201, 202};  // 3 blocks x 2 layers
  return o;
}

using testing::Connect;

class RendezvousTest : public testing::OneServerTest {};

TEST_F(RendezvousTest, AnOfferIsAcceptedOnceWithEveryField) {
  const TransferOffer sent = MakeOffer("req-1");
  ASSERT_TRUE(client_->OfferTransfer(sent).ok());
  EXPECT_EQ(client_->OfferTransfer(sent).code(), absl::StatusCode::kAlreadyExists);
  auto got = client_->AcceptTransfer("req-1", absl::Seconds(1));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->transfer_id, "req-1");
  EXPECT_EQ(got->nccl_unique_id, sent.nccl_unique_id);
  EXPECT_EQ(got->format.codec, "int8");
  EXPECT_EQ(got->format.geometry.num_layers, 2);
  EXPECT_EQ(got->format.geometry.head_dim, 64);
  EXPECT_EQ(got->blocks, sent.blocks);
  EXPECT_EQ(got->page_bytes, sent.page_bytes);
  // Matched once: a second receiver finds nothing.
  EXPECT_EQ(client_->AcceptTransfer("req-1", absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // Once accepted, the id may be offered again.
  EXPECT_TRUE(client_->OfferTransfer(sent).ok());
}

TEST_F(RendezvousTest, AReceiverWaitsForALaterOffer) {
  std::thread sender([&] {
    absl::SleepFor(absl::Milliseconds(300));
    EXPECT_TRUE(client_->OfferTransfer(MakeOffer("late")).ok());
  });
  const absl::Time start = absl::Now();
  auto got = client_->AcceptTransfer("late", absl::Seconds(10));
  sender.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
}

TEST_F(RendezvousTest, AnOfferExpiresAfterItsTtl) {
  TransferOffer o = MakeOffer("short");
  o.ttl = absl::Milliseconds(100);
  ASSERT_TRUE(client_->OfferTransfer(o).ok());
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(client_->AcceptTransfer("short", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(RendezvousTest, BadOffersNameTheirFieldAndLeaveNothingPending) {
  struct Case {
    const char* field;
    void (*mutate)(TransferOffer&);
  };
  const Case cases[] = {
      {"offer.transfer_id", [](TransferOffer& o) { o.transfer_id = "has space"; }},
      {"offer.nccl_unique_id", [](TransferOffer& o) { o.nccl_unique_id.resize(127); }},
      {"offer.format.codec", [](TransferOffer& o) { o.format.codec = "nope"; }},
      {"offer.blocks", [](TransferOffer& o) { o.blocks.clear(); }},
      {"offer.page_bytes", [](TransferOffer& o) { o.page_bytes.pop_back(); }},
      {"offer.layer_end", [](TransferOffer& o) { o.layer_end = 3; }},
      {"offer.ttl", [](TransferOffer& o) { o.ttl = absl::Hours(1); }},
  };
  for (const Case& c : cases) {
    TransferOffer o = MakeOffer("bad");
    c.mutate(o);
    const absl::Status s = client_->OfferTransfer(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.field));
  }
  // The server applies the same checks to what a raw client sends.
  auto stub = server_.Stub();
  auto raw = [&](auto mutate, const char* field) {
    v1::OfferTransferRequest request;
    v1::TransferOffer& o = *request.mutable_offer();
    o.set_transfer_id("raw");
    o.set_nccl_unique_id(std::string(128, 'x'));
    v1::Geometry& g = *o.mutable_format()->mutable_geometry();
    g.set_num_layers(2);
    g.set_num_kv_heads(2);
    g.set_num_q_heads(4);
    g.set_head_dim(64);
    g.set_block_tokens(16);
    g.set_dtype(v1::DTYPE_FP16);
    o.mutable_format()->set_codec("int8");
    o.add_block_keys(std::string(16, 'k'));
    o.add_page_bytes(10);
    o.add_page_bytes(10);
    mutate(o);
    grpc::ClientContext context;
    v1::OfferTransferResponse response;
    const grpc::Status s = stub->OfferTransfer(&context, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  };
  raw([](v1::TransferOffer& o) { o.set_nccl_unique_id("short"); }, "offer.nccl_unique_id");
  raw([](v1::TransferOffer& o) { o.set_transfer_id(""); }, "offer.transfer_id");
  raw([](v1::TransferOffer& o) { o.clear_format(); }, "offer.format");
  raw([](v1::TransferOffer& o) { o.add_block_keys("short-key"); }, "offer.block_keys[1]");
  raw([](v1::TransferOffer& o) { o.add_page_bytes(1); }, "offer.page_bytes");
  raw([](v1::TransferOffer& o) { o.set_page_bytes(0, 0); }, "offer.page_bytes[0]");
  raw([](v1::TransferOffer& o) { o.set_ttl_ms(-1); }, "offer.ttl_ms");
  raw([](v1::TransferOffer& o) { o.set_layer_begin(2); }, "offer.layer_begin");
  raw([](v1::TransferOffer& o) { o.set_layer_end(3); }, "offer.layer_end");
  for (const char* id : {"bad", "raw"}) {
    EXPECT_EQ(client_->AcceptTransfer(id, absl::ZeroDuration()).status().code(),
              absl::StatusCode::kDeadlineExceeded);
  }
  EXPECT_EQ(client_->AcceptTransfer("a b", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RendezvousAuthTest, AnotherTenantNeverSeesTheOffer) {
  ServerProcess server;
  const std::string tokens = absl::StrCat(server.dir(), "/tokens");
  {
    std::ofstream f(tokens);
    f << "token-a alice\ntoken-b bob\n";
  }
  ASSERT_TRUE(server.Start({absl::StrCat("--auth-tokens=", tokens)}).ok());
  auto alice = Connect(server.target(), "token-a");
  auto bob = Connect(server.target(), "token-b");
  ASSERT_TRUE(alice->OfferTransfer(MakeOffer("t")).ok());
  EXPECT_EQ(bob->AcceptTransfer("t", absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // Bob may use the same id for his own transfer.
  EXPECT_TRUE(bob->OfferTransfer(MakeOffer("t")).ok());
  EXPECT_TRUE(alice->AcceptTransfer("t", absl::Seconds(1)).ok());
  EXPECT_TRUE(bob->AcceptTransfer("t", absl::Seconds(1)).ok());
}

}  // namespace
}  // namespace qaqkv::client
