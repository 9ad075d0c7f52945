// The client's device path against the real qaqkv-server binary: Offload
// from GPU buffers and Load into GPU buffers give exactly what the host path
// gives for the same data (fp16 bit-exact with the input; int8, int4, qaq,
// kivi2 and the CPU-encoded qaq-cs equal to the host round trip, and the
// stored pages equal byte for byte), in NHD and HND, with buffers holding
// more tokens than the blocks moved (strided HND rows), and on_layer in
// order with each layer already in the buffers when it is reported.
// Skips without a CUDA device.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/half.h"
#include "qaqkv/client.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"

namespace qaqkv::client {
namespace {

using ::qaqkv::cuda::DeviceBuffer;
using service::testing::ServerProcess;
using ::testing::ElementsAre;

constexpr int kLayers = 3, kKvHeads = 2, kHeadDim = 64, kBlockTokens = 16, kBlocks = 3;
// Buffers start 5 rows before the first block and end 7 rows after the
// last: HND rows of a block are then strided, NHD blocks offset.
constexpr int kFirstToken = 5, kBufferTokens = kFirstToken + kBlocks * kBlockTokens + 7;
constexpr size_t kValues = size_t{kBufferTokens} * kKvHeads * kHeadDim;

Geometry TestGeometry() { return testing::SmallGeometry(kLayers); }

using Layers = std::vector<std::vector<uint16_t>>;  // fp16 bits per layer

Layers RandomLayers(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  Layers out(kLayers, std::vector<uint16_t>(kValues));
  for (auto& layer : out) {
    for (auto& x : layer) x = ::qaqkv::FloatToHalf(normal(rng));
  }
  return out;
}

Layers Filled() { return Layers(kLayers, std::vector<uint16_t>(kValues, 0xffff)); }

struct DeviceLayers {
  std::vector<DeviceBuffer> k, v;
};

DeviceLayers ToDevice(const Layers& k, const Layers& v) {
  DeviceLayers d;
  for (int l = 0; l < kLayers; ++l) {
    for (auto [src, dst] : {std::pair{&k, &d.k}, std::pair{&v, &d.v}}) {
      auto b = DeviceBuffer::Allocate(kValues * 2);
      EXPECT_TRUE(b.ok()) << b.status();
      EXPECT_EQ(cudaMemcpy(b->data(), (*src)[l].data(), kValues * 2, cudaMemcpyHostToDevice),
                cudaSuccess);
      dst->push_back(std::move(*b));
    }
  }
  return d;
}

Layers ToHost(const std::vector<DeviceBuffer>& d) {
  Layers out(kLayers, std::vector<uint16_t>(kValues));
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(cudaMemcpy(out[l].data(), d[l].data(), kValues * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return out;
}

// The buffers as a request's view: HostKv for Offload, MutableHostKv for Load.
template <typename Kv>
Kv View(const decltype(Kv::k)& k, const decltype(Kv::v)& v, Layout layout) {
  Kv h;
  h.layout = layout;
  h.k = k;
  h.v = v;
  h.tokens = kBufferTokens;
  h.first_token = kFirstToken;
  return h;
}

template <typename T>
std::vector<T> Pointers(T /*tag*/, Layers& host) {
  std::vector<T> p;
  for (auto& l : host) p.push_back(l.data());
  return p;
}
template <typename T>
std::vector<T> Pointers(T /*tag*/, const std::vector<DeviceBuffer>& dev) {
  std::vector<T> p;
  for (const auto& b : dev) p.push_back(b.data());
  return p;
}

std::vector<int32_t> Tokens(int seed) {
  std::vector<int32_t> t(kBlocks * kBlockTokens);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7 + seed * 131) % 32000);
  return t;
}

// Element (layer buffer) index of token t, head h, channel d.
size_t Index(Layout layout, int t, int h, int d) {
  return layout == Layout::kNHD ? (size_t(t) * kKvHeads + h) * kHeadDim + d
                                : (size_t(h) * kBufferTokens + t) * kHeadDim + d;
}

class ClientDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::qaqkv::cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto port = server_.Start();
    ASSERT_TRUE(port.ok()) << port.status();
    ClientOptions o;
    o.target = server_.target();
    o.deadline = absl::Seconds(60);
    o.encode_threads = 2;
    auto c = Client::Create(o);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }

  // Every stored page of `keys`, in stream order.
  std::vector<std::string> StoredPages(std::span<const BlockKey> keys) {
    std::vector<std::string> pages;
    const absl::Status s = client_->GetPages(
        keys, 0, 0, [&](const BlockKey&, int, std::string_view data) {
          pages.emplace_back(data);
          return absl::OkStatus();
        });
    EXPECT_TRUE(s.ok()) << s;
    return pages;
  }

  ServerProcess server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientDeviceTest, DeviceRoundTripEqualsTheHostPath) {
  const Geometry g = TestGeometry();
  std::mt19937 rng(20240611);
  const Layers in_k = RandomLayers(rng), in_v = RandomLayers(rng);
  const DeviceLayers dev_in = ToDevice(in_k, in_v);
  Layers in_k_copy = in_k, in_v_copy = in_v;
  const std::vector<const void*> host_k = Pointers<const void*>(nullptr, in_k_copy),
                                 host_v = Pointers<const void*>(nullptr, in_v_copy),
                                 dev_k = Pointers<const void*>(nullptr, dev_in.k),
                                 dev_v = Pointers<const void*>(nullptr, dev_in.v);
  // QAQ's side inputs, the same host spans for both paths.
  std::vector<std::vector<float>> attention(kLayers,
                                            std::vector<float>(size_t(kBufferTokens) * kKvHeads));
  std::vector<std::vector<float>> q2(kLayers, std::vector<float>(kKvHeads));
  std::uniform_real_distribution<float> u(-0.2f, 1.0f);
  for (auto& a : attention) for (float& x : a) x = u(rng);
  for (auto& q : q2) for (float& x : q) x = 0.5f + std::abs(u(rng)) * 4;

  int seed = 0;
  for (const char* codec : {"fp16", "int8", "int4", "qaq", "kivi2", "qaq-cs"}) {
    for (const Layout layout : {Layout::kNHD, Layout::kHND}) {
      SCOPED_TRACE(absl::StrCat(codec, layout == Layout::kNHD ? " nhd" : " hnd"));
      ++seed;
      // The host path first: its keys and its result are the reference.
      const auto tokens = Tokens(seed);
      const auto host_keys = Client::ComputeBlockKeys("host", codec, tokens, kBlockTokens);
      const auto dev_keys = Client::ComputeBlockKeys("device", codec, tokens, kBlockTokens);
      OffloadRequest off;
      off.geometry = g;
      off.codec = codec;
      for (int l = 0; l < kLayers; ++l) {
        off.side.attention.push_back(attention[l]);
        off.side.q2.push_back(q2[l]);
      }
      off.blocks = host_keys;
      off.kv = View<HostKv>(host_k, host_v, layout);
      auto host_off = client_->Offload(off);
      ASSERT_TRUE(host_off.ok()) << host_off.status();
      off.blocks = dev_keys;
      off.kv = View<HostKv>(dev_k, dev_v, layout);
      auto dev_off = client_->Offload(off);
      ASSERT_TRUE(dev_off.ok()) << dev_off.status();
      EXPECT_EQ(dev_off->blocks_committed, size_t{kBlocks});
      EXPECT_EQ(dev_off->pages, uint64_t{kBlocks * kLayers});
      EXPECT_EQ(dev_off->stored_bytes, host_off->stored_bytes);
      EXPECT_TRUE(StoredPages(dev_keys) == StoredPages(host_keys)) << "stored pages differ";

      Layers host_out_k = Filled(), host_out_v = Filled();
      LoadRequest load;
      load.geometry = g;
      load.codec = codec;
      load.blocks = host_keys;
      load.kv = View<MutableHostKv>(Pointers<void*>(nullptr, host_out_k),
                            Pointers<void*>(nullptr, host_out_v), layout);
      ASSERT_TRUE(client_->Load(load).ok());

      // Into device buffers (0xff everywhere, like the host ones), checking
      // in on_layer that the layer is already there.
      DeviceLayers dev_out = ToDevice(Filled(), Filled());
      std::vector<int> layers;
      Layers seen(kLayers);
      load.blocks = dev_keys;
      load.kv = View<MutableHostKv>(Pointers<void*>(nullptr, dev_out.k),
                            Pointers<void*>(nullptr, dev_out.v), layout);
      load.on_layer = [&](int l) {
        layers.push_back(l);
        seen[l].resize(kValues);
        EXPECT_EQ(cudaMemcpy(seen[l].data(), dev_out.k[l].data(), kValues * 2,
                             cudaMemcpyDeviceToHost),
                  cudaSuccess);
      };
      auto loaded = client_->Load(load);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      EXPECT_THAT(layers, ElementsAre(0, 1, 2));
      EXPECT_EQ(loaded->pages, uint64_t{kBlocks * kLayers});
      EXPECT_LE(loaded->time_to_first_layer, loaded->total_time);
      const Layers dev_k_out = ToHost(dev_out.k), dev_v_out = ToHost(dev_out.v);
      EXPECT_TRUE(dev_k_out == host_out_k) << "K differs from the host path";
      EXPECT_TRUE(dev_v_out == host_out_v) << "V differs from the host path";
      EXPECT_TRUE(seen == dev_k_out) << "a layer was reported before it was complete";

      if (std::string(codec) == "fp16") {
        // Bit-exact with the input on the moved rows, untouched elsewhere.
        for (int l = 0; l < kLayers; ++l) {
          for (int t = 0; t < kBufferTokens; ++t) {
            const bool moved = t >= kFirstToken && t < kFirstToken + kBlocks * kBlockTokens;
            for (int h = 0; h < kKvHeads; ++h) {
              for (int d = 0; d < kHeadDim; d += 17) {
                const size_t i = Index(layout, t, h, d);
                ASSERT_EQ(dev_k_out[l][i], moved ? in_k[l][i] : uint16_t{0xffff}) << l << " " << t;
                ASSERT_EQ(dev_v_out[l][i], moved ? in_v[l][i] : uint16_t{0xffff}) << l << " " << t;
              }
            }
          }
        }
      }

      // A layer range fills only its layers and reports only them.
      DeviceLayers part = ToDevice(Filled(), Filled());
      layers.clear();
      load.kv = View<MutableHostKv>(Pointers<void*>(nullptr, part.k), Pointers<void*>(nullptr, part.v),
                            layout);
      load.layer_begin = 1;
      load.layer_end = 3;
      load.on_layer = [&](int l) { layers.push_back(l); };
      ASSERT_TRUE(client_->Load(load).ok());
      EXPECT_THAT(layers, ElementsAre(1, 2));
      const Layers part_k = ToHost(part.k);
      EXPECT_TRUE(part_k[0] == Filled()[0]);
      EXPECT_TRUE(part_k[1] == host_out_k[1]);
      EXPECT_TRUE(part_k[2] == host_out_k[2]);
    }
  }
}

TEST_F(ClientDeviceTest, MixedHostAndDeviceBuffersAreRefused) {
  const Geometry g = TestGeometry();
  std::mt19937 rng(7);
  Layers k = RandomLayers(rng), v = RandomLayers(rng);
  const DeviceLayers dev = ToDevice(k, v);
  const auto keys = Client::ComputeBlockKeys("mixed", "int8", Tokens(1), kBlockTokens);
  OffloadRequest off;
  off.geometry = g;
  off.codec = "int8";
  off.blocks = keys;
  off.kv = View<HostKv>(Pointers<const void*>(nullptr, k), Pointers<const void*>(nullptr, dev.v),
                Layout::kNHD);
  EXPECT_EQ(client_->Offload(off).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*client_->Lookup(keys), 0u);  // nothing was sent
}

}  // namespace
}  // namespace qaqkv::client
