#!/usr/bin/env bash
# Packs the GPU check's binaries and the shared libraries they need into one
# tarball, so scripts/gpu_check.sh can run on a GPU machine that has the CUDA
# driver but none of the build dependencies (gRPC, RocksDB, abseil):
#
#   scripts/gpu_bundle.sh [BUILD_DIR] [OUT.tar.xz]      # here, after a CUDA build
#   tar xf OUT.tar.xz && QAQKV_BUNDLE=gpu-bundle scripts/gpu_check.sh   # there
#
# glibc, libstdc++ and NCCL are left out: the GPU machine's own are used (NCCL's
# 2.x ABI is stable, and the tarball would otherwise be 200 MiB bigger).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/release}"
tarball="${2:-gpu-bundle.tar.xz}"
bins=(tests/gpu/codec_cuda_test tests/gpu/client_device_test service/qaqkv-server
      bench/codec_cuda_bench)
[[ -x "$build/tests/client/client_nccl_transport_test" ]] &&
  bins+=(tests/client/client_nccl_transport_test)
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/gpu-bundle/lib"
for b in "${bins[@]}"; do
  [[ -x "$build/$b" ]] || { echo "gpu_bundle: $build/$b is missing; build it first" >&2; exit 1; }
  mkdir -p "$stage/gpu-bundle/$(dirname "$b")"
  cp "$build/$b" "$stage/gpu-bundle/$b"
done
# The Python package and its GPU test, when the build has them.
libs_of=("${bins[@]/#/$build/}")
if [[ -d "$build/python/qaqkv" ]]; then
  cp -r "$build/python" "$stage/gpu-bundle/python"
  mkdir -p "$stage/gpu-bundle/python-tests"
  cp python/tests/conftest.py python/tests/test_gpu.py "$stage/gpu-bundle/python-tests/"
  libs_of+=("$build"/python/qaqkv/_qaqkv*.so)
fi
ldd "${libs_of[@]}" | awk '/=> \//{print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libnccl)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/gpu-bundle/lib/"; done
tar -C "$stage" -cJf "$tarball" gpu-bundle
echo "gpu_bundle: $tarball ($(du -h "$tarball" | cut -f1)), ${#bins[@]} binaries, $(ls "$stage/gpu-bundle/lib" | wc -l) libraries"
