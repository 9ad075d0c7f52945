#!/usr/bin/env bash
# Runs everything issue 5 needs a real NVIDIA GPU for, and records the output:
#   1. configure + build the release preset with CUDA (QAQKV_SKIP_BUILD=1 reuses the
#      build in ${QAQKV_BUILD_DIR:-build/release})
#   2. ctest -L gpu (the GPU suite: CPU reference vs GPU byte for byte, the client's
#      device path against the real server, the NCCL transport's loopback)
#   3. the GPU suites under compute-sanitizer memcheck (and the codec's under racecheck)
#   4. the GPU benchmark (bench/codec_cuda_bench)
# Output goes to $OUT/gpu-results.txt when OUT is set, else docs/gpu-results.txt.
# Every step runs even if an earlier one fails; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-docs}"
mkdir -p "$out_dir"
log="$out_dir/gpu-results.txt"
exec > >(tee "$log") 2>&1
build="${QAQKV_BUILD_DIR:-build/release}"
jobs="$(nproc 2>/dev/null || echo 2)"
sanitizer="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}"
failed=()

step() {  # step NAME COMMAND...
  local name="$1"; shift
  echo; echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else
    echo "=== $name: FAILED (exit $?, $((SECONDS - t0)) s)"; failed+=("$name"); fi
}

echo "qaqkv GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi not available"
/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1

if [[ "${QAQKV_SKIP_BUILD:-0}" != 1 ]]; then
  step configure cmake --preset release -DQAQKV_ENABLE_CUDA=ON -DQAQKV_BUILD_BENCHMARKS=ON
  targets=(codec_cuda_test client_device_test qaqkv-server codec_cuda_bench codec_test
           fast_path_test)
  # The NCCL transport's test exists when NCCL was found at configure time.
  grep -q 'client_nccl_transport_test' "$build/build.ninja" 2>/dev/null &&
    targets+=(client_nccl_transport_test)
  step build cmake --build --preset release -j "$jobs" --target "${targets[@]}"
fi
test_bin="$build/tests/gpu/codec_cuda_test"
device_bin="$build/tests/gpu/client_device_test"
nccl_bin="$build/tests/client/client_nccl_transport_test"
step ctest-gpu ctest --test-dir "$build" -L gpu --output-on-failure
step ctest-kernels ctest --test-dir "$build" -R 'Codec|FastPath' -LE gpu --output-on-failure
step memcheck "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check full "$test_bin"
# racecheck is slow: the smaller tests cover every kernel's shared-memory use.
step racecheck "$sanitizer" --tool racecheck --error-exitcode 1 "$test_bin" \
  --gtest_filter='*SideInputs*:*RoundTrip*:*Paged*:*NanAndInf*:*LargeLayer*'
step memcheck-client "$sanitizer" --tool memcheck --error-exitcode 1 "$device_bin"
[[ -x "$nccl_bin" ]] && step memcheck-nccl "$sanitizer" --tool memcheck --error-exitcode 1 "$nccl_bin"
step bench "$build/bench/codec_cuda_bench" "$@"

echo
if ((${#failed[@]})); then echo "GPU check: FAILED: ${failed[*]} (log: $log)"; exit 1; fi
echo "GPU check: all steps passed (log: $log)"
