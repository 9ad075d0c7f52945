#!/usr/bin/env bash
# Runs everything issue 5 needs a real NVIDIA GPU for, and records the output:
#   1. configure + build the release preset with CUDA (QAQKV_SKIP_BUILD=1 reuses the
#      build in ${QAQKV_BUILD_DIR:-build/release})
#   2. ctest -L gpu (the GPU suite: CPU reference vs GPU byte for byte, the client's
#      device path against the real server, the NCCL transport's loopback)
#   3. the GPU suites under compute-sanitizer memcheck (and the codec's under racecheck)
#   4. the GPU benchmark (bench/codec_cuda_bench)
# Output goes to $OUT/gpu-results.txt when OUT is set, else docs/gpu-results.txt.
# Every step runs even if an earlier one fails, each under a time limit
# (QAQKV_STEP_TIMEOUT seconds, default 300); the exit status is 1 if any failed.
#
# On a GPU machine without the build dependencies, run it from a bundle made by
# scripts/gpu_bundle.sh: QAQKV_BUNDLE=DIR (the unpacked gpu-bundle) skips the
# build and runs the bundle's binaries against its libraries.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-docs}"
mkdir -p "$out_dir"
log="$out_dir/gpu-results.txt"
exec > >(tee "$log") 2>&1
build="${QAQKV_BUILD_DIR:-build/release}"
step_timeout="${QAQKV_STEP_TIMEOUT:-300}"
if [[ -n "${QAQKV_BUNDLE:-}" ]]; then
  build="$QAQKV_BUNDLE"
  QAQKV_SKIP_BUILD=1
  # NCCL is not in the bundle: take the machine's (the CUDA toolkit's or pip's).
  nccl_dir="$(find /usr/local/cuda*/ /usr/lib /opt -name 'libnccl.so.2' -print -quit 2>/dev/null)"
  export LD_LIBRARY_PATH="$build/lib${nccl_dir:+:$(dirname "$nccl_dir")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# The device-path tests start this binary (tests/service/server_process.cc).
export QAQKV_SERVER_BINARY="${QAQKV_SERVER_BINARY:-$(realpath -m "$build")/service/qaqkv-server}"
jobs="$(nproc 2>/dev/null || echo 2)"
sanitizer="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}"
failed=()

step() {  # step NAME COMMAND...
  local name="$1"; shift
  echo; echo "=== $name: $*"
  local t0=$SECONDS
  if timeout -k 10 "$step_timeout" "$@"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; else
    echo "=== $name: FAILED (exit $?, $((SECONDS - t0)) s)"; failed+=("$name"); fi
}

echo "qaqkv GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit ${QAQKV_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi not available"
/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1

if [[ "${QAQKV_SKIP_BUILD:-0}" != 1 ]]; then
  step configure cmake --preset release -DQAQKV_ENABLE_CUDA=ON -DQAQKV_BUILD_BENCHMARKS=ON
  targets=(codec_cuda_test client_device_test qaqkv-server codec_cuda_bench codec_test
           fast_path_test qaqkv_python)
  # The NCCL transport's test exists when NCCL was found at configure time.
  grep -q 'client_nccl_transport_test' "$build/build.ninja" 2>/dev/null &&
    targets+=(client_nccl_transport_test)
  step build cmake --build --preset release -j "$jobs" --target "${targets[@]}"
fi
test_bin="$build/tests/gpu/codec_cuda_test"
device_bin="$build/tests/gpu/client_device_test"
nccl_bin="$build/tests/client/client_nccl_transport_test"
# The binaries themselves rather than ctest: a bundle has no CTestTestfile.
step codec-gpu "$test_bin"
step client-device "$device_bin"
[[ -x "$nccl_bin" ]] && step nccl "$nccl_bin"
# The Python package's device path (python/tests/test_gpu.py): needs a
# python3 of the module's version with numpy and pytest on this machine.
py_tests="${QAQKV_PYTHON_TESTS:-python/tests}"
[[ -n "${QAQKV_BUNDLE:-}" ]] && py_tests="$build/python-tests"
if PYTHONPATH="$build/python" python3 -c 'import numpy, pytest, qaqkv' 2>/dev/null; then
  step python-gpu env PYTHONPATH="$build/python" python3 -m pytest -q -p no:cacheprovider \
    "$py_tests/test_gpu.py"
else
  echo; echo "=== python-gpu: skipped (no python3 here that imports numpy, pytest and $build/python/qaqkv)"
fi
step bench "$build/bench/codec_cuda_bench" "$@"
[[ "${QAQKV_SKIP_BUILD:-0}" != 1 ]] &&
  step ctest-kernels ctest --test-dir "$build" -R 'Codec|FastPath' -LE gpu --output-on-failure
step memcheck "$sanitizer" --tool memcheck --error-exitcode 1 --leak-check full "$test_bin"
# racecheck is slow: the smaller tests cover every kernel's shared-memory use.
step racecheck "$sanitizer" --tool racecheck --error-exitcode 1 "$test_bin" \
  --gtest_filter='*SideInputs*:*RoundTrip*:*Paged*:*NanAndInf*:*LargeLayer*'
step memcheck-client "$sanitizer" --tool memcheck --error-exitcode 1 "$device_bin"
# NCCL probes which of its kernels the device can run and handles the
# "no kernel image" answers itself: those API errors are not ours.
[[ -x "$nccl_bin" ]] && step memcheck-nccl "$sanitizer" --tool memcheck --error-exitcode 1 \
  --report-api-errors no "$nccl_bin"

echo
if ((${#failed[@]})); then echo "GPU check: FAILED: ${failed[*]} (log: $log)"; exit 1; fi
echo "GPU check: all steps passed (log: $log)"
