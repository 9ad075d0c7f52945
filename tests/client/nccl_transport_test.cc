// The NCCL transport on real GPUs (ctest label gpu; skips without them):
// one rank sending pages to itself (what one GPU can run), and, with two
// GPUs, a sender and a receiver meeting through a real qaqkv-server.
#include "qaqkv/nccl_transport.h"

#include <cuda_runtime_api.h>

#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/service/server_process.h"

namespace qaqkv::client {
namespace {

int Devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Random pages of assorted sizes, on the host and copied to `device`.
struct Pages {
  std::vector<std::vector<uint8_t>> host;
  std::vector<void*> device;
  ~Pages() {
    for (void* p : device) cudaFree(p);
  }
  std::vector<DevicePageRef> Refs() const {
    std::vector<DevicePageRef> r;
    for (size_t i = 0; i < host.size(); ++i) r.push_back({device[i], host[i].size()});
    return r;
  }
  size_t total() const {
    size_t t = 0;
    for (const auto& h : host) t += h.size();
    return t;
  }
};

void MakePages(int dev, const std::vector<size_t>& sizes, uint32_t seed, Pages* out) {
  ASSERT_EQ(cudaSetDevice(dev), cudaSuccess);
  std::mt19937 rng(seed);
  for (size_t s : sizes) {
    auto& h = out->host.emplace_back(s);
    for (auto& b : h) b = static_cast<uint8_t>(rng());
    void* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, s), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d, h.data(), s, cudaMemcpyHostToDevice), cudaSuccess);
    out->device.push_back(d);
  }
}

TEST(NcclTransportTest, CreateNeedsADevice) {
  if (Devices() > 0) GTEST_SKIP() << "a device is present";
  ClientOptions o;
  o.target = "127.0.0.1:1";
  auto c = Client::Create(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(NcclTransport::Create(c->get(), nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(NcclTransportTest, OneRankSendsPagesToItselfByteForByte) {
  if (Devices() < 1) GTEST_SKIP() << "no CUDA device";
  Pages pages;
  MakePages(0, {1, 4096, 70001, 262144, 3}, 1, &pages);
  void* out = nullptr;
  ASSERT_EQ(cudaMalloc(&out, pages.total()), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  const std::vector<DevicePageRef> refs = pages.Refs();
  ASSERT_TRUE(NcclTransport::Loopback(refs, out, stream).ok());
  std::vector<uint8_t> back(pages.total());
  ASSERT_EQ(cudaMemcpy(back.data(), out, back.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  size_t offset = 0;
  for (const auto& h : pages.host) {
    EXPECT_TRUE(std::equal(h.begin(), h.end(), back.begin() + offset));
    offset += h.size();
  }
  cudaStreamDestroy(stream);
  cudaFree(out);
}

TEST(NcclTransportTest, TwoGpusMeetThroughTheCacheService) {
  if (Devices() < 2) GTEST_SKIP() << "needs two CUDA devices";
  service::testing::ServerProcess server;
  ASSERT_TRUE(server.Start().ok());
  ClientOptions o;
  o.target = server.target();
  auto sender_client = Client::Create(o);
  auto receiver_client = Client::Create(o);
  ASSERT_TRUE(sender_client.ok() && receiver_client.ok());
  Pages pages;
  MakePages(0, {1000, 2000, 3000, 4000}, 2, &pages);  // 2 blocks x 2 layers
  NcclSendRequest send;
  send.transfer_id = "req-7";
  send.format.geometry.num_layers = 2;
  send.format.geometry.num_kv_heads = 2;
  send.format.geometry.num_q_heads = 4;
  send.format.geometry.head_dim = 64;
  send.format.geometry.block_tokens = 16;
  send.format.codec = "int8";
  send.blocks = {BlockKey{1}, BlockKey{2}};
  send.pages = pages.Refs();
  absl::Status sent;
  std::thread sender([&] {
    cudaSetDevice(0);
    auto t = NcclTransport::Create(sender_client->get(), nullptr);
    sent = t.ok() ? (*t)->Send(send) : t.status();
  });
  cudaSetDevice(1);
  auto receiver = NcclTransport::Create(receiver_client->get(), nullptr);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  auto got = (*receiver)->Receive("req-7", absl::Seconds(30));
  sender.join();
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->pages(), 4u);
  EXPECT_EQ(got->offer().blocks, send.blocks);
  for (size_t i = 0; i < 4; ++i) {
    std::vector<uint8_t> back(pages.host[i].size());
    ASSERT_EQ(cudaMemcpy(back.data(), got->page(i), back.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(back, pages.host[i]) << "page " << i;
  }
}

}  // namespace
}  // namespace qaqkv::client
