#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, and runs
# the codec quality comparison on the real tinylm-kv caches shipped in data/.
# (The service issue turns this into the full offload/resume demo.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target qaqkv

echo
echo "== qaqkv eval: codecs on the six tinylm-kv dev caches (real KV of a trained model) =="
./build/release/tools/qaqkv eval data/tinylm-kv "$@"
echo
echo "== qaqkv bench codec: one-thread throughput on llama3-8b pages of 256 tokens =="
./build/release/tools/qaqkv bench codec --codecs "int8 int4 kivi2 qaq:s=1e-3,x=1e-3,o=0.01 qaq-cc:s=3e-4,x=2e-2,o=0"
