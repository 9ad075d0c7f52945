// GPU codec throughput on one layer of llama3-8b (8 KV heads x 128, fp16 NHD,
// 32k tokens by default) against a device-to-device cudaMemcpyAsync of the
// same K+V bytes, measured in the same run with CUDA events: warm-up, then
// the median of many iterations. Encode is EncodeToDevice (page left on the
// device; includes its one sync, at the end); decode is Decode of a device
// page into fp16 NHD buffers. Ratios above 1 are faster than the copy.
//
//   codec_cuda_bench [--tokens=32768] [--iters=50] [--codecs=qaq,int4,...] [--no-verify]
//
// Exits 0 with a message when there is no CUDA device.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "kernels/codec.h"
#include "kernels/cuda/codec_cuda.h"
#include "kernels/cuda/cuda_raii.h"
#include "kernels/half.h"

namespace {

using namespace qaqkv;  // NOLINT: a benchmark's main

int Fail(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "codec_cuda_bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

template <typename F>
absl::StatusOr<double> MedianMs(cudaStream_t stream, int warmup, int iters, F&& body) {
  QAQKV_ASSIGN_OR_RETURN(const cuda::CudaEvent start, cuda::CudaEvent::Create());
  QAQKV_ASSIGN_OR_RETURN(const cuda::CudaEvent stop, cuda::CudaEvent::Create());
  std::vector<double> ms;
  for (int i = 0; i < warmup + iters; ++i) {
    QAQKV_RETURN_IF_ERROR(start.Record(stream));
    QAQKV_RETURN_IF_ERROR(body());
    QAQKV_RETURN_IF_ERROR(stop.Record(stream));
    QAQKV_RETURN_IF_ERROR(stop.Synchronize());
    QAQKV_ASSIGN_OR_RETURN(const float t, cuda::CudaEvent::ElapsedMs(start, stop));
    if (i >= warmup) ms.push_back(t);
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int tokens = 32768, iters = 50;
  bool verify = true;
  std::string codecs = "qaq,qaq-layer,int8,int4,kivi2";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--tokens=", 0) == 0) tokens = std::atoi(a.c_str() + 9);
    else if (a.rfind("--iters=", 0) == 0) iters = std::atoi(a.c_str() + 8);
    else if (a.rfind("--codecs=", 0) == 0) codecs = a.substr(9);
    else if (a == "--no-verify") verify = false;
    else {
      std::fprintf(stderr, "usage: %s [--tokens=N] [--iters=N] [--codecs=a,b] [--no-verify]\n", argv[0]);
      return 2;
    }
  }
  if (tokens < 1 || iters < 1) {
    std::fprintf(stderr, "codec_cuda_bench: --tokens and --iters must be >= 1\n");
    return 2;
  }
  if (cuda::DeviceCount() == 0) {
    std::printf("codec_cuda_bench: no CUDA device; nothing measured\n");
    return 0;
  }
  cudaDeviceProp prop{};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    std::fprintf(stderr, "codec_cuda_bench: cannot read device properties\n");
    return 1;
  }
  const PageShape shape{tokens, 8, 128};
  const size_t bytes = shape.values() * 2;  // one tensor, fp16
  std::printf("GPU: %s (sm_%d%d, %.0f GiB)\n", prop.name, prop.major, prop.minor,
              prop.totalGlobalMem / 1073741824.0);
  std::printf("page: %d tokens x %d kv heads x %d head dim, fp16 NHD, K+V = %.1f MiB; "
              "median of %d after 5 warm-up\n",
              shape.tokens, shape.kv_heads, shape.head_dim, 2.0 * bytes / 1048576.0, iters);

  std::mt19937_64 rng(42);
  std::normal_distribution<float> n(0, 1);
  std::vector<uint16_t> hk(shape.values()), hv(shape.values());
  for (auto& x : hk) x = ::qaqkv::FloatToHalf(n(rng) * 2.0f);
  for (auto& x : hv) x = ::qaqkv::FloatToHalf(n(rng));

  auto stream = cuda::CudaStream::Create();
  if (!stream.ok()) return Fail(stream.status(), "stream");
  const cudaStream_t s = stream->get();
  auto dk = cuda::DeviceBuffer::Allocate(bytes), dv = cuda::DeviceBuffer::Allocate(bytes);
  auto ok_out = cuda::DeviceBuffer::Allocate(bytes), ov_out = cuda::DeviceBuffer::Allocate(bytes);
  auto copy_dst = cuda::DeviceBuffer::Allocate(2 * bytes), copy_src = cuda::DeviceBuffer::Allocate(2 * bytes);
  for (auto* b : {&dk, &dv, &ok_out, &ov_out, &copy_dst, &copy_src}) {
    if (!b->ok()) return Fail(b->status(), "cudaMalloc");
  }
  if (cudaMemcpy(dk->data(), hk.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaMemcpy(dv->data(), hv.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaMemcpy(copy_src->data(), hk.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
    std::fprintf(stderr, "codec_cuda_bench: upload failed\n");
    return 1;
  }
  auto codec = cuda::GpuCodec::Create(s);
  if (!codec.ok()) return Fail(codec.status(), "codec");

  auto copy_ms = MedianMs(s, 5, iters, [&]() -> absl::Status {
    return cuda::CudaStatus(cudaMemcpyAsync(copy_dst->data(), copy_src->data(), 2 * bytes,
                                            cudaMemcpyDeviceToDevice, s),
                            "cudaMemcpyAsync");
  });
  if (!copy_ms.ok()) return Fail(copy_ms.status(), "copy");
  const double copy_gbs = 2.0 * bytes / (*copy_ms * 1e6);
  std::printf("d2d copy of K+V: %.3f ms, %.1f GB/s\n\n", *copy_ms, copy_gbs);
  std::printf("%-12s %8s %10s %10s %8s %10s %10s %8s %12s\n", "codec", "ratio", "enc ms",
              "enc GB/s", "enc/cp", "dec ms", "dec GB/s", "dec/cp", "enc+d2h ms");

  const TensorView k{dk->data(), DType::kF16, Layout::kNHD}, v{dv->data(), DType::kF16, Layout::kNHD};
  const MutableTensorView ko{ok_out->data(), DType::kF16, Layout::kNHD},
      vo{ov_out->data(), DType::kF16, Layout::kNHD};
  int status = 0;
  for (absl::string_view name : absl::StrSplit(codecs, ',')) {
    auto config = ParseCodecConfig(base::AsStd(name));
    if (!config.ok()) return Fail(config.status(), "codec name");
    cuda::DevicePage page;
    auto enc_ms = MedianMs(s, 5, iters, [&] {
      return (*codec)->EncodeToDevice(*config, shape, k, v, {}, &page);
    });
    if (!enc_ms.ok()) return Fail(enc_ms.status(), "encode");
    auto bytes_out = (*codec)->Download(page);
    if (!bytes_out.ok()) return Fail(bytes_out.status(), "download");
    auto e2e_ms = MedianMs(s, 2, std::max(iters / 5, 3), [&]() -> absl::Status {
      return (*codec)->EncodePage(*config, shape, k, v).status();
    });
    if (!e2e_ms.ok()) return Fail(e2e_ms.status(), "encode end to end");
    cuda::DevicePage uploaded;
    if (absl::Status st = (*codec)->Upload(*bytes_out, &uploaded); !st.ok()) return Fail(st, "upload");
    auto dec_ms = MedianMs(s, 5, iters, [&] { return (*codec)->Decode(uploaded, ko, vo); });
    if (!dec_ms.ok()) return Fail(dec_ms.status(), "decode");
    const double ratio = 2.0 * bytes / bytes_out->size();
    const double enc_gbs = 2.0 * bytes / (*enc_ms * 1e6), dec_gbs = 2.0 * bytes / (*dec_ms * 1e6);
    std::printf("%-12s %7.2fx %10.3f %10.1f %7.2fx %10.3f %10.1f %7.2fx %12.3f\n",
                std::string(name).c_str(), ratio, *enc_ms, enc_gbs, enc_gbs / copy_gbs, *dec_ms,
                dec_gbs, dec_gbs / copy_gbs, *e2e_ms);
    if (verify) {
      // The same page from the CPU encoder, and the same decoded values.
      auto cpu = EncodePage(*config, shape, {hk.data(), DType::kF16, Layout::kNHD},
                            {hv.data(), DType::kF16, Layout::kNHD});
      if (!cpu.ok()) return Fail(cpu.status(), "cpu encode");
      std::vector<uint16_t> ck(shape.values()), cv(shape.values()), gk(shape.values()),
          gv(shape.values());
      if (!DecodePage(*cpu, {ck.data(), DType::kF16, Layout::kNHD},
                      {cv.data(), DType::kF16, Layout::kNHD}).ok() ||
          cudaStreamSynchronize(s) != cudaSuccess ||
          cudaMemcpy(gk.data(), ok_out->data(), bytes, cudaMemcpyDeviceToHost) != cudaSuccess ||
          cudaMemcpy(gv.data(), ov_out->data(), bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        std::fprintf(stderr, "codec_cuda_bench: verification could not run\n");
        return 1;
      }
      const bool same_page = *cpu == *bytes_out;
      const bool same_values = ck == gk && cv == gv;
      std::printf("%-12s verify: page %s the CPU's, decoded values %s the CPU's\n", "",
                  same_page ? "==" : "DIFFERS FROM", same_values ? "==" : "DIFFER FROM");
      if (!same_page || !same_values) status = 1;
    }
  }
  return status;
}
