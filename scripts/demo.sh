#!/usr/bin/env bash
# The first command of the README: installs what is missing, builds, starts
# qaqkv-server on a free loopback port with an embedded RocksDB in a
# temporary directory, and runs `qaqkv demo` against it: a 4096-token chat
# session of llama3-8b geometry (synthetic KV) and the real tinylm-kv caches
# in data/, each offloaded with QAQ, int4 and fp16, resumed and verified. The
# server is stopped (SIGTERM, drained) at the end, whatever happens.
# Extra arguments go to `qaqkv demo` (e.g. --tokens 8192, --codec qaq).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target qaqkv qaqkv-server

work=$(mktemp -d "${TMPDIR:-/tmp}/qaqkv-demo.XXXXXX")
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

./build/release/service/qaqkv-server --listen=127.0.0.1:0 --data-dir="$work/db" \
  --port-file="$work/port" --memory-bytes=2GiB 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 300); do
  [[ -s "$work/port" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "qaqkv-server failed to start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
[[ -s "$work/port" ]] || { echo "qaqkv-server did not report its port" >&2; exit 1; }
port=$(cat "$work/port")
head -n 1 "$work/server.log"

echo
echo "== qaqkv demo: offload with QAQ, int4 and fp16, resume, verify (server on 127.0.0.1:$port) =="
./build/release/tools/qaqkv demo --target "127.0.0.1:$port" --data data/tinylm-kv "$@"

echo
echo "== qaqkv stats =="
./build/release/tools/qaqkv stats --target "127.0.0.1:$port"

echo
echo "== python3 -m qaqkv.chat: a tinylm chat, each turn a fresh worker that resumes the session layer by layer =="
# Every turn runs in a new process: resume from the server, prefill the
# user's bytes, generate 48 bytes, offload the session (QAQ with the model's
# own queries as side inputs), exit. Compared with a process that never
# offloaded: fp16 must give bit-identical logits and bytes (exits 1 if not).
cmake --build --preset release --target qaqkv_python >/dev/null
PYTHONPATH="$PWD/build/release/python" /usr/bin/python3 -m qaqkv.chat run \
  --server "127.0.0.1:$port" --turns 4 --codecs fp16 qaq int4 kivi2

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
tail -n 2 "$work/server.log"
