#!/bin/sh
# A session id of 1000 bytes (the contract allows 1024, qaqkv/limits.h)
# round-trips through `qaqkv put` and `qaqkv get` against a memory-only
# qaqkv-server; one of 1025 bytes is refused before anything is sent.
# (The client once capped ids at 256 bytes while the server took 1024, so a
# worker could not resume a session another client had stored.)
# Usage: long_session_id_test.sh QAQKV QAQKV_SERVER TINYLM_FILE
qaqkv=$1 server=$2 src=$3
. "$(dirname "$0")/server_lib.sh"
start_server "$server" --memory-only --memory-bytes=256MiB

id=$(printf 's%.0s' $(seq 1000))
[ ${#id} -eq 1000 ] || fail "built an id of ${#id} bytes"
out=$("$qaqkv" put "$src" --session "$id" --target "$target" 2>&1) ||
  fail "put with a 1000-byte session id: $out"
out=$("$qaqkv" get --session "$id" --target "$target" 2>&1) ||
  fail "get with a 1000-byte session id: $out"
out=$("$qaqkv" sessions list --target "$target" 2>&1) || fail "sessions list: $out"
echo "$out" | grep -q "$id" || fail "sessions list does not show the id: $out"

long="${id}ssssssssssssssssssssssss"  # 1024 bytes: still fine
"$qaqkv" put "$src" --session "$long" --target "$target" >/dev/null 2>&1 ||
  fail "put with a 1024-byte session id was refused"
err=$("$qaqkv" put "$src" --session "${long}s" --target "$target" 2>&1)
rc=$?
[ $rc -ne 0 ] || fail "put with a 1025-byte session id succeeded"
echo "$err" | grep -q "session_id: 1025 bytes, must be 1..1024" ||
  fail "put with a 1025-byte id: exit $rc, want the field named: $err"
echo "ok"
