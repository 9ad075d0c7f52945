#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the CPU test
# suite (every test not labelled `gpu`). Extra arguments go to ctest.
#   QAQKV_PRESET=asan scripts/test.sh    # the same under ASan + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${QAQKV_PRESET:-release}"

bash scripts/deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" --output-on-failure -j2 "$@"
