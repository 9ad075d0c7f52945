#!/usr/bin/env bash
# Replays the Mooncake trace (data/mooncake_synthetic_trace.jsonl) against N
# qaqkv-server processes on loopback, each with its own RocksDB in a
# temporary directory, through the sharded client (R = 2 when N >= 2). The
# servers are stopped with SIGTERM (drained) at the end, whatever happens.
#   scripts/replay_cluster.sh 3                      # whole trace, 3 servers
#   scripts/replay_cluster.sh 1 --redis              # one server, and Redis
#   QAQKV_BUILD=build/release scripts/replay_cluster.sh 3 --requests 500
# Arguments after N go to `qaqkv replay`. Server flags: $QAQKV_SERVER_FLAGS
# (default --memory-bytes=512MiB --disk-bytes=16GiB). With
# QAQKV_KILL_AFTER=S, server 0 is SIGKILLed S seconds into the replay (node
# loss under load: the replay must still see no errors). With
# QAQKV_METRICS_PORT=P, server i serves /metrics on 127.0.0.1:P+i and the
# disk tier's figures (page bytes received, segment files and live bytes,
# what the collector copied, blocks evicted, peak RSS) are printed after the
# replay.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:?usage: scripts/replay_cluster.sh SERVERS [qaqkv replay args]}"
shift
build="${QAQKV_BUILD:-build/release}"
flags="${QAQKV_SERVER_FLAGS:---memory-bytes=512MiB --disk-bytes=16GiB}"
if [[ ! -x "$build/tools/qaqkv" || ! -x "$build/service/qaqkv-server" ]]; then
  bash scripts/deps.sh
  cmake --preset release >/dev/null
  cmake --build --preset release --target qaqkv qaqkv-server
  build=build/release
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/qaqkv-replay.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

servers=""
for i in $(seq 0 $((n - 1))); do
  metrics=()
  [[ -n "${QAQKV_METRICS_PORT:-}" ]] && metrics=(--metrics-listen="127.0.0.1:$((QAQKV_METRICS_PORT + i))")
  # shellcheck disable=SC2086  # $flags is a list of flags
  "$build/service/qaqkv-server" --listen=127.0.0.1:0 --data-dir="$work/db$i" \
    --port-file="$work/port$i" "${metrics[@]}" $flags 2>"$work/server$i.log" &
  pids+=($!)
done
for i in $(seq 0 $((n - 1))); do
  for _ in $(seq 1 300); do
    [[ -s "$work/port$i" ]] && break
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$work/server$i.log" >&2; exit 1; }
    sleep 0.1
  done
  [[ -s "$work/port$i" ]] || { echo "server $i did not report its port" >&2; exit 1; }
  servers="${servers:+$servers,}127.0.0.1:$(cat "$work/port$i")"
done
echo "== qaqkv replay against $n server(s): $servers =="
if [[ -n "${QAQKV_KILL_AFTER:-}" ]]; then
  (sleep "$QAQKV_KILL_AFTER" && kill -KILL "${pids[0]}" 2>/dev/null &&
    echo "== SIGKILLed server 0 (127.0.0.1:$(cat "$work/port0")) after ${QAQKV_KILL_AFTER} s ==" >&2) &
fi
"$build/tools/qaqkv" replay --servers "$servers" "$@"
if [[ -n "${QAQKV_METRICS_PORT:-}" ]]; then
  for i in $(seq 0 $((n - 1))); do
    echo "== server $i: disk tier (collector write amplification = 1 + copied / received) =="
    /usr/bin/python3 - "$((QAQKV_METRICS_PORT + i))" "${pids[$i]}" <<'PY'
import sys, urllib.request
port, pid = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
want = ("qaqkv_received_bytes_total", "qaqkv_segment_file_bytes", "qaqkv_segment_live_bytes",
        "qaqkv_segment_collector_copied_bytes_total", "qaqkv_segments_collected_total",
        "qaqkv_disk_file_bytes", "qaqkv_evictions_total", "qaqkv_write_back_stalls_total",
        "qaqkv_segment_writes_total", "qaqkv_pages_stored_total")
totals = {}
for line in text.splitlines():
    if line.startswith("#"):
        continue
    name = line.split("{")[0].split(" ")[0]
    if name in want:
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        print(line)
received = totals.get("qaqkv_received_bytes_total", 0.0)
copied = totals.get("qaqkv_segment_collector_copied_bytes_total", 0.0)
if received > 0:
    print(f"write amplification of the collector: {1 + copied / received:.3f}")
for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmHWM"):
        print("server peak RSS:", line.split(":", 1)[1].strip())
PY
  done
fi
