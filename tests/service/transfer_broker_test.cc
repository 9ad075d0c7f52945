// Unit tests of service/transfer_broker.h: the in-memory rendezvous of GPU
// transfer offers. Time is passed in explicitly (absl::Time now), so expiry
// is checked to the millisecond without sleeping, and every validation rule
// of TransferOffer (kvcache.proto) is checked for its code and for naming the
// `offer.` field. No server, no network; the concurrency test also runs
// under ThreadSanitizer.
#include "service/transfer_broker.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qaqkv/limits.h"

namespace qaqkv::service {
namespace {

using ::testing::HasSubstr;

constexpr absl::StatusCode kOk = absl::StatusCode::kOk;
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kNotFound = absl::StatusCode::kNotFound;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

absl::Time At(int64_t ms) { return kT0 + absl::Milliseconds(ms); }

constexpr uint32_t kLayers = 4;

// A valid offer: 2 blocks of a 4-layer qaq format, every layer, default TTL.
// `tag` goes into the page sizes so offers of one id can be told apart.
v1::TransferOffer MakeOffer(const std::string& id, uint64_t tag = 1000) {
  v1::TransferOffer o;
  o.set_transfer_id(id);
  o.set_nccl_unique_id(std::string(limits::kNcclUniqueIdBytes, '\x5a'));
  v1::BlockFormat* f = o.mutable_format();
  v1::Geometry* g = f->mutable_geometry();
  g->set_num_layers(kLayers);
  g->set_num_kv_heads(2);
  g->set_num_q_heads(4);
  g->set_head_dim(64);
  g->set_dtype(v1::DTYPE_FP16);
  g->set_block_tokens(16);
  f->set_codec("qaq");
  o.add_block_keys(std::string(limits::kBlockKeyBytes, '\x01'));
  o.add_block_keys(std::string(limits::kBlockKeyBytes, '\x02'));
  for (uint32_t i = 0; i < 2 * kLayers; ++i) o.add_page_bytes(tag + i);
  return o;
}

// Keys and page sizes for `n` blocks over `layers` layers.
void SetBlocks(v1::TransferOffer& o, size_t n, uint32_t layers) {
  o.clear_block_keys();
  o.clear_page_bytes();
  for (size_t i = 0; i < n; ++i) o.add_block_keys(std::string(limits::kBlockKeyBytes, 'k'));
  for (size_t i = 0; i < n * layers; ++i) o.add_page_bytes(1);
}

struct OfferCase {
  std::string name;
  std::function<void(v1::TransferOffer&)> mutate;
  absl::StatusCode code;
  std::string message;
};

TEST(TransferBrokerTest, OfferValidation) {
  constexpr uint64_t kMaxPage = limits::kMaxTransferPageBytes;
  const std::vector<OfferCase> cases = {
      {"valid", [](v1::TransferOffer&) {}, kOk, ""},

      {"transfer_id empty", [](v1::TransferOffer& o) { o.clear_transfer_id(); }, kInvalid,
       "offer.transfer_id: 0 bytes, must be 1..256"},
      {"transfer_id of the maximum length",
       [](v1::TransferOffer& o) { o.set_transfer_id(std::string(limits::kMaxTransferIdBytes, 'i')); },
       kOk, ""},
      {"transfer_id too long",
       [](v1::TransferOffer& o) {
         o.set_transfer_id(std::string(limits::kMaxTransferIdBytes + 1, 'i'));
       },
       kInvalid, "offer.transfer_id: 257 bytes, must be 1..256"},
      {"transfer_id with a space", [](v1::TransferOffer& o) { o.set_transfer_id("a b"); },
       kInvalid, "offer.transfer_id: byte 1 (0x20)"},
      {"transfer_id with a NUL",
       [](v1::TransferOffer& o) { o.set_transfer_id(std::string("ab\0c", 4)); }, kInvalid,
       "offer.transfer_id: byte 2 (0x00)"},

      {"nccl_unique_id missing", [](v1::TransferOffer& o) { o.clear_nccl_unique_id(); },
       kInvalid, "offer.nccl_unique_id: 0 bytes, expected 128"},
      {"nccl_unique_id 127 bytes",
       [](v1::TransferOffer& o) { o.mutable_nccl_unique_id()->pop_back(); }, kInvalid,
       "offer.nccl_unique_id: 127 bytes, expected 128"},
      {"nccl_unique_id 129 bytes",
       [](v1::TransferOffer& o) { o.mutable_nccl_unique_id()->push_back('x'); }, kInvalid,
       "offer.nccl_unique_id: 129 bytes, expected 128"},

      {"format missing", [](v1::TransferOffer& o) { o.clear_format(); }, kInvalid,
       "offer.format: missing"},
      {"format geometry missing",
       [](v1::TransferOffer& o) { o.mutable_format()->clear_geometry(); }, kInvalid,
       "offer.format.geometry: missing"},
      {"format num_layers 0",
       [](v1::TransferOffer& o) { o.mutable_format()->mutable_geometry()->set_num_layers(0); },
       kInvalid, "offer.format.geometry.num_layers: 0"},
      {"format codec unknown",
       [](v1::TransferOffer& o) { o.mutable_format()->set_codec("zstd"); }, kInvalid,
       "offer.format.codec: "},

      {"block_keys empty",
       [](v1::TransferOffer& o) {
         o.clear_block_keys();
         o.clear_page_bytes();
       },
       kInvalid, "offer.block_keys: empty"},
      {"block_keys at the maximum",
       [](v1::TransferOffer& o) {
         o.set_layer_end(1);
         SetBlocks(o, limits::kMaxTransferKeys, 1);
       },
       kOk, ""},
      {"block_keys one too many",
       [](v1::TransferOffer& o) {
         o.set_layer_end(1);
         SetBlocks(o, limits::kMaxTransferKeys + 1, 1);
       },
       kInvalid, "offer.block_keys: 65537 keys, at most 65536"},
      {"block_keys[1] short",
       [](v1::TransferOffer& o) { o.mutable_block_keys(1)->pop_back(); }, kInvalid,
       "offer.block_keys[1]: 15 bytes"},
      {"block_keys[0] long",
       [](v1::TransferOffer& o) { o.mutable_block_keys(0)->push_back('x'); }, kInvalid,
       "offer.block_keys[0]: 17 bytes"},

      {"layers [1, 3)",
       [](v1::TransferOffer& o) {
         o.set_layer_begin(1);
         o.set_layer_end(3);
         SetBlocks(o, 2, 2);
       },
       kOk, ""},
      {"layers [3, 0) = [3, 4)",
       [](v1::TransferOffer& o) {
         o.set_layer_begin(3);
         SetBlocks(o, 2, 1);
       },
       kOk, ""},
      {"layer_end = num_layers", [](v1::TransferOffer& o) { o.set_layer_end(kLayers); }, kOk,
       ""},
      {"layer_end past num_layers",
       [](v1::TransferOffer& o) {
         o.set_layer_end(kLayers + 1);
         SetBlocks(o, 2, kLayers + 1);
       },
       kInvalid, "offer.layer_end: layers [0, 5) of a 4-layer format"},
      {"layer_begin = layer_end",
       [](v1::TransferOffer& o) {
         o.set_layer_begin(2);
         o.set_layer_end(2);
       },
       kInvalid, "offer.layer_begin: layers [2, 2) of a 4-layer format"},
      {"layer_begin > layer_end",
       [](v1::TransferOffer& o) {
         o.set_layer_begin(3);
         o.set_layer_end(1);
       },
       kInvalid, "offer.layer_begin: layers [3, 1)"},
      {"layer_begin = num_layers, layer_end 0",
       [](v1::TransferOffer& o) { o.set_layer_begin(kLayers); }, kInvalid,
       "offer.layer_begin: layers [4, 0) of a 4-layer format"},
      {"layer_begin u32 max",
       [](v1::TransferOffer& o) { o.set_layer_begin(std::numeric_limits<uint32_t>::max()); },
       kInvalid, "offer.layer_"},

      {"page_bytes one short", [](v1::TransferOffer& o) { o.mutable_page_bytes()->RemoveLast(); },
       kInvalid, "offer.page_bytes: 7 entries, expected block_keys x layers = 8"},
      {"page_bytes one extra", [](v1::TransferOffer& o) { o.add_page_bytes(1); }, kInvalid,
       "offer.page_bytes: 9 entries, expected block_keys x layers = 8"},
      {"page_bytes none", [](v1::TransferOffer& o) { o.clear_page_bytes(); }, kInvalid,
       "offer.page_bytes: 0 entries"},
      {"page_bytes counted over the layer range",
       [](v1::TransferOffer& o) { o.set_layer_begin(1); }, kInvalid,
       "offer.page_bytes: 8 entries, expected block_keys x layers = 6"},
      {"page_bytes[5] 0", [](v1::TransferOffer& o) { o.set_page_bytes(5, 0); }, kInvalid,
       "offer.page_bytes[5]: 0 not in [1, 67108864]"},
      {"page_bytes[7] 64 MiB + 1",
       [](v1::TransferOffer& o) { o.set_page_bytes(7, kMaxPage + 1); }, kInvalid,
       "offer.page_bytes[7]: 67108865 not in [1, 67108864]"},
      {"page_bytes[0] u64 max",
       [](v1::TransferOffer& o) { o.set_page_bytes(0, std::numeric_limits<uint64_t>::max()); },
       kInvalid, "offer.page_bytes[0]: "},
      {"page_bytes 1 and 64 MiB",
       [](v1::TransferOffer& o) {
         o.set_page_bytes(0, 1);
         o.set_page_bytes(7, kMaxPage);
       },
       kOk, ""},

      {"ttl_ms -1", [](v1::TransferOffer& o) { o.set_ttl_ms(-1); }, kInvalid,
       "offer.ttl_ms: -1 not in [0, 600000]"},
      {"ttl_ms int64 min",
       [](v1::TransferOffer& o) { o.set_ttl_ms(std::numeric_limits<int64_t>::min()); },
       kInvalid, "offer.ttl_ms: "},
      {"ttl_ms 1", [](v1::TransferOffer& o) { o.set_ttl_ms(1); }, kOk, ""},
      {"ttl_ms maximum",
       [](v1::TransferOffer& o) { o.set_ttl_ms(limits::kMaxTransferTtlMs); }, kOk, ""},
      {"ttl_ms maximum + 1",
       [](v1::TransferOffer& o) { o.set_ttl_ms(limits::kMaxTransferTtlMs + 1); }, kInvalid,
       "offer.ttl_ms: 600001 not in [0, 600000]"},
  };
  for (const OfferCase& c : cases) {
    SCOPED_TRACE(c.name);
    TransferBroker broker;
    v1::TransferOffer offer = MakeOffer("xfer-1");
    c.mutate(offer);
    const absl::Status got = broker.Offer("alice", offer, kT0);
    EXPECT_EQ(got.code(), c.code) << got;
    if (c.code == kOk) {
      EXPECT_EQ(broker.pending(), 1u);
    } else {
      EXPECT_THAT(Msg(got), HasSubstr(c.message));
      EXPECT_THAT(Msg(got), HasSubstr("offer."));
      EXPECT_EQ(broker.pending(), 0u) << "a refused offer is not held";
    }
  }
}

TEST(TransferBrokerTest, AcceptMatchesOnceAndHandsOutTheOffer) {
  TransferBroker broker;
  v1::TransferOffer offer = MakeOffer("xfer-1");
  offer.set_layer_begin(1);
  offer.set_layer_end(3);
  SetBlocks(offer, 2, 2);
  offer.set_page_bytes(3, 4242);
  offer.set_ttl_ms(5000);
  ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok());
  EXPECT_EQ(broker.pending(), 1u);

  const auto got = broker.Accept("alice", "xfer-1", At(10));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->SerializeAsString(), offer.SerializeAsString()) << "handed out as offered";
  EXPECT_EQ(broker.pending(), 0u);

  const auto again = broker.Accept("alice", "xfer-1", At(11));
  EXPECT_EQ(again.status().code(), kNotFound) << again.status();
  EXPECT_THAT(Msg(again.status()), HasSubstr("transfer_id: no pending offer 'xfer-1'"));

  // Once accepted, the id may be offered again.
  EXPECT_TRUE(broker.Offer("alice", MakeOffer("xfer-1"), At(12)).ok());
}

TEST(TransferBrokerTest, AcceptOfAnIdNeverOffered) {
  TransferBroker broker;
  ASSERT_TRUE(broker.Offer("alice", MakeOffer("a"), kT0).ok());
  const auto got = broker.Accept("alice", "b", kT0);
  EXPECT_EQ(got.status().code(), kNotFound) << got.status();
  EXPECT_EQ(broker.pending(), 1u);
}

TEST(TransferBrokerTest, AcceptValidatesTheId) {
  TransferBroker broker;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "transfer_id: 0 bytes"},
      {std::string(limits::kMaxTransferIdBytes + 1, 'i'), "transfer_id: 257 bytes"},
      {"has space", "transfer_id: byte 3 (0x20)"},
      {"tab\t", "transfer_id: byte 3 (0x09)"},
  };
  for (const auto& [id, message] : bad) {
    const auto got = broker.Accept("alice", id, kT0);
    EXPECT_EQ(got.status().code(), kInvalid) << id << ": " << got.status();
    EXPECT_THAT(Msg(got.status()), HasSubstr(message));
  }
}

TEST(TransferBrokerTest, ExpiresAfterItsTtl) {
  struct Case {
    std::string name;
    int64_t ttl_ms;        // as offered
    int64_t lifetime_ms;   // what it must live
  };
  const std::vector<Case> cases = {
      {"ttl 1 ms", 1, 1},
      {"ttl 1 s", 1000, 1000},
      {"default ttl", 0, limits::kDefaultTransferTtlMs},
      {"maximum ttl", limits::kMaxTransferTtlMs, limits::kMaxTransferTtlMs},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TransferBroker broker;
    v1::TransferOffer offer = MakeOffer("live");
    offer.set_ttl_ms(c.ttl_ms);
    ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok());
    offer.set_transfer_id("dead");
    ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok());
    // Alive until the last moment before kT0 + lifetime ...
    const auto live = broker.Accept("alice", "live", At(c.lifetime_ms) - absl::Nanoseconds(1));
    EXPECT_TRUE(live.ok()) << live.status();
    // ... and gone from kT0 + lifetime on.
    const auto dead = broker.Accept("alice", "dead", At(c.lifetime_ms));
    EXPECT_EQ(dead.status().code(), kNotFound) << dead.status();
    EXPECT_EQ(broker.pending(), 0u);
  }
}

TEST(TransferBrokerTest, ExpiredOffersAreDroppedOnEveryCall) {
  TransferBroker broker;
  v1::TransferOffer offer = MakeOffer("a");
  offer.set_ttl_ms(100);
  ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok());
  ASSERT_TRUE(broker.Offer("bob", offer, At(50)).ok());
  EXPECT_EQ(broker.pending(), 2u);
  // An Accept of another tenant's unrelated id drops alice's expired offer.
  EXPECT_EQ(broker.Accept("carol", "zzz", At(100)).status().code(), kNotFound);
  EXPECT_EQ(broker.pending(), 1u);
  // So does an Offer.
  ASSERT_TRUE(broker.Offer("carol", MakeOffer("c"), At(150)).ok());
  EXPECT_EQ(broker.pending(), 1u);
  EXPECT_EQ(broker.Accept("bob", "a", At(150)).status().code(), kNotFound);
  EXPECT_TRUE(broker.Accept("carol", "c", At(150)).ok());
}

TEST(TransferBrokerTest, DuplicatePendingIdIsAlreadyExists) {
  TransferBroker broker;
  v1::TransferOffer first = MakeOffer("dup", 1000);
  first.set_ttl_ms(1000);
  ASSERT_TRUE(broker.Offer("alice", first, kT0).ok());

  const absl::Status again = broker.Offer("alice", MakeOffer("dup", 2000), At(999));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_THAT(Msg(again), HasSubstr("offer.transfer_id: 'dup'"));
  EXPECT_EQ(broker.pending(), 1u);

  // The first offer is the one held.
  auto got = broker.Accept("alice", "dup", At(999));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->page_bytes(0), 1000u);

  // After it expired, the id may be offered again.
  ASSERT_TRUE(broker.Offer("alice", first, At(1000)).ok());
  EXPECT_TRUE(broker.Offer("alice", MakeOffer("dup", 3000), At(2000)).ok());
  got = broker.Accept("alice", "dup", At(2000));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->page_bytes(0), 3000u);
}

TEST(TransferBrokerTest, TenantsAreIsolated) {
  TransferBroker broker;
  ASSERT_TRUE(broker.Offer("alice", MakeOffer("x", 1000), kT0).ok());
  // Another tenant neither sees nor collides with alice's offer.
  EXPECT_EQ(broker.Accept("bob", "x", kT0).status().code(), kNotFound);
  ASSERT_TRUE(broker.Offer("bob", MakeOffer("x", 2000), kT0).ok());
  EXPECT_EQ(broker.pending(), 2u);
  // Tenant and id do not run together: ("a", "bc") is not ("ab", "c").
  ASSERT_TRUE(broker.Offer("a", MakeOffer("bc", 3000), kT0).ok());
  ASSERT_TRUE(broker.Offer("ab", MakeOffer("c", 4000), kT0).ok());
  EXPECT_EQ(broker.Accept("ab", "bc", kT0).status().code(), kNotFound);
  EXPECT_EQ(broker.Accept("a", "c", kT0).status().code(), kNotFound);

  const std::vector<std::tuple<std::string, std::string, uint64_t>> owners = {
      {"bob", "x", 2000}, {"alice", "x", 1000}, {"ab", "c", 4000}, {"a", "bc", 3000}};
  for (const auto& [tenant, id, tag] : owners) {
    const auto got = broker.Accept(tenant, id, kT0);
    ASSERT_TRUE(got.ok()) << tenant << "/" << id << ": " << got.status();
    EXPECT_EQ(got->page_bytes(0), tag) << tenant << "/" << id;
  }
  EXPECT_EQ(broker.pending(), 0u);
}

TEST(TransferBrokerTest, PendingOfferBytesPerTenantAreCapped) {
  TransferBroker broker;
  v1::TransferOffer offer = MakeOffer("");
  SetBlocks(offer, limits::kMaxTransferKeys, 4);  // about 1.5 MB serialized
  const uint64_t each = offer.ByteSizeLong();
  const size_t fit = limits::kMaxPendingTransferBytesPerTenant / each;
  ASSERT_LT(fit, limits::kMaxPendingTransfersPerTenant);  // bytes bind first
  for (size_t i = 0; i < fit; ++i) {
    offer.set_transfer_id(absl::StrCat("big", i));
    ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok()) << i;
  }
  offer.set_transfer_id("over");
  const absl::Status full = broker.Offer("alice", offer, kT0);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(Msg(full), HasSubstr("pending for this tenant pass the limit of 67108864"));
  EXPECT_TRUE(broker.Offer("bob", offer, kT0).ok());  // per tenant
  ASSERT_TRUE(broker.Accept("alice", "big0", kT0).ok());
  EXPECT_TRUE(broker.Offer("alice", offer, kT0).ok());  // accepting frees its bytes
}

TEST(TransferBrokerTest, PendingOffersPerTenantAreCapped) {
  constexpr size_t kCap = limits::kMaxPendingTransfersPerTenant;
  TransferBroker broker;
  v1::TransferOffer offer = MakeOffer("");
  offer.set_ttl_ms(1000);
  for (size_t i = 0; i < kCap; ++i) {
    offer.set_transfer_id(absl::StrCat("t", i));
    ASSERT_TRUE(broker.Offer("alice", offer, kT0).ok()) << i;
  }
  offer.set_transfer_id("one-too-many");
  const absl::Status full = broker.Offer("alice", offer, kT0);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(Msg(full), HasSubstr("offer: 1024 transfers already pending"));
  EXPECT_EQ(broker.pending(), kCap);

  // A pending id is still ALREADY_EXISTS, not RESOURCE_EXHAUSTED.
  offer.set_transfer_id("t7");
  EXPECT_EQ(broker.Offer("alice", offer, kT0).code(), absl::StatusCode::kAlreadyExists);

  // The cap is per tenant.
  offer.set_transfer_id("one-too-many");
  EXPECT_TRUE(broker.Offer("bob", offer, kT0).ok());

  // Accepting one makes room for one.
  ASSERT_TRUE(broker.Accept("alice", "t0", At(1)).ok());
  EXPECT_TRUE(broker.Offer("alice", offer, At(1)).ok());
  offer.set_transfer_id("two-too-many");
  EXPECT_EQ(broker.Offer("alice", offer, At(1)).code(), absl::StatusCode::kResourceExhausted);

  // Expiry makes room for all: the first kCap - 1 expire at kT0 + 1 s, the
  // one offered at At(1) a millisecond later.
  for (size_t i = 0; i < kCap - 1; ++i) {
    offer.set_transfer_id(absl::StrCat("u", i));
    ASSERT_TRUE(broker.Offer("alice", offer, At(1000)).ok()) << i;
  }
  offer.set_transfer_id("u-last");
  EXPECT_EQ(broker.Offer("alice", offer, At(1000)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(broker.Offer("alice", offer, At(1001)).ok());
}

TEST(TransferBrokerTest, ConcurrentOffersAndAcceptsMatchEachOfferOnce) {
  constexpr int kThreads = 4, kOffers = 200;
  TransferBroker broker;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  // Senders offer ids 0..kOffers-1 of tenants "t0".."t3"; receivers of every
  // tenant race for the same ids: each id must be handed out exactly once.
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&broker, t] {
      for (int i = 0; i < kOffers; ++i) {
        EXPECT_TRUE(
            broker.Offer(absl::StrCat("t", t), MakeOffer(absl::StrCat("id", i)), kT0).ok());
      }
    });
  }
  for (int r = 0; r < 2 * kThreads; ++r) {
    threads.emplace_back([&broker, &accepted, r] {
      const std::string tenant = absl::StrCat("t", r % kThreads);
      for (int pass = 0; pass < 50 && accepted.load() < kThreads * kOffers; ++pass) {
        for (int i = 0; i < kOffers; ++i) {
          if (broker.Accept(tenant, absl::StrCat("id", i), At(1)).ok()) accepted.fetch_add(1);
        }
        std::this_thread::yield();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  // Receivers may have given up before the last offers arrived: finish.
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOffers; ++i) {
      if (broker.Accept(absl::StrCat("t", t), absl::StrCat("id", i), At(2)).ok()) {
        accepted.fetch_add(1);
      }
    }
  }
  EXPECT_EQ(accepted.load(), kThreads * kOffers);
  EXPECT_EQ(broker.pending(), 0u);
}

}  // namespace
}  // namespace qaqkv::service
