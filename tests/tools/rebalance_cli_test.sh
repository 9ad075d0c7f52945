#!/bin/sh
# `qaqkv rebalance` end to end against three memory-only qaqkv-servers with
# a token file of two tenants (one with two tokens, as during a rotation):
# a scale-up from one server to three copies what the owners lack and a
# rerun finds nothing to do; draining the third moves everything off it;
# a server that does not answer fails every tenant (exit 1) with the error
# in its report line. A token the servers refuse gives way to its tenant's
# next one. No output ever carries a token.
# Usage: rebalance_cli_test.sh QAQKV QAQKV_SERVER TINYLM_FILE
qaqkv=$1 server=$2 src=$3
tmp=$(mktemp -d) || exit 1
pids=
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$tmp/tokens" <<EOF
# <token> <tenant>
secret-token-a1 tenant-a
secret-token-b tenant-b
secret-token-a2 tenant-a
EOF

# Starts server $1 (a name) on a free loopback port; sets addr_$1.
start() {
  "$server" --listen=127.0.0.1:0 --port-file="$tmp/$1.port" --memory-only --memory-bytes=256MiB \
    --auth-tokens="$tmp/tokens" >"$tmp/$1.log" 2>&1 &
  pids="$pids $!"
  _i=0
  while [ ! -s "$tmp/$1.port" ]; do
    _i=$((_i + 1))
    [ $_i -le 1200 ] || fail "server $1 did not start: $(cat "$tmp/$1.log")"
    sleep 0.05
  done
  eval "addr_$1=127.0.0.1:$(cat "$tmp/$1.port")"
}
start a
start b
start c

# Runs `qaqkv rebalance ARGS...`: stdout in $out, stderr in $err, exit in $rc.
rebalance() {
  "$qaqkv" rebalance "$@" --token-file "$tmp/tokens" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  out=$(cat "$tmp/out") err=$(cat "$tmp/err")
  case "$out$err" in
    *secret-token*) fail "rebalance $*: printed a token: $out $err" ;;
  esac
}
# The report line of tenant $1 has field $2 (a JSON fragment, e.g. "errors":0).
has() {
  echo "$out" | grep "\"tenant\":\"$1\"" | grep -q "$2" ||
    fail "tenant $1's report lacks $2: $out (stderr: $err)"
}

for t in a1 b; do
  "$qaqkv" put "$src" --session "s-$t" --servers "$addr_a" --token "secret-token-$t" \
    >/dev/null 2>&1 || fail "put for $t"
done

# Scale-up from one server (one copy) to three with two copies: every
# block (4 per tenant) and session lacks a copy on at least one owner.
rebalance --servers "$addr_a,$addr_b,$addr_c" --progress-interval 0
[ "$rc" -eq 0 ] || fail "scale-up: exit $rc: $err"
[ "$(echo "$out" | wc -l)" -eq 2 ] || fail "scale-up: want one line per tenant: $out"
for t in tenant-a tenant-b; do
  has $t '"blocks":4,'
  has $t '"sessions":1,'
  has $t '"errors":0,'
  has $t '"error":""'
done
echo "$out" | grep -Eq '"(blocks|sessions)_copied":0,' && fail "scale-up left copies out: $out"
echo "$err" | grep -q '"progress":true' || fail "no progress lines on stderr: $err"

# A rerun finds nothing to do.
rebalance --servers "$addr_a,$addr_b,$addr_c" --max-bytes-per-second 1MiB --batch-blocks 1
[ "$rc" -eq 0 ] || fail "rerun: exit $rc: $err"
for t in tenant-a tenant-b; do
  has $t '"blocks_copied":0,'
  has $t '"blocks_removed":0,'
  has $t '"sessions_copied":0,'
done

# Scale-down: c drains and keeps nothing; the sessions still resume from
# the two that stay.
rebalance --servers "$addr_a,$addr_b" --draining "$addr_c"
[ "$rc" -eq 0 ] || fail "drain: exit $rc: $err"
for t in a1 b; do
  stats=$("$qaqkv" stats --target "$addr_c" --token "secret-token-$t" --format csv 2>&1) ||
    fail "stats of c: $stats"
  echo "$stats" | grep -qx 'tenant_blocks,0' || fail "c still holds blocks of $t: $stats"
  "$qaqkv" get --session "s-$t" --servers "$addr_a,$addr_b" --token "secret-token-$t" \
    >/dev/null 2>&1 || fail "session s-$t does not resume after the drain"
done

# --metrics-listen: the reports as gauges per tenant, up for a last scrape
# (--metrics-linger) after the run.
"$qaqkv" rebalance --servers "$addr_a,$addr_b" --token-file "$tmp/tokens" \
  --metrics-listen 127.0.0.1:0 --metrics-linger 20s >"$tmp/out" 2>"$tmp/err" &
rb=$!
_i=0
until port=$(sed -n 's/.*metrics on port \([0-9]*\).*/\1/p' "$tmp/err") && [ -n "$port" ] &&
  grep -q '"tenant":"tenant-b"' "$tmp/out"; do
  _i=$((_i + 1))
  [ $_i -le 600 ] || { kill $rb; fail "no metrics port or report: $(cat "$tmp/err" "$tmp/out")"; }
  sleep 0.05
done
metrics=$(/usr/bin/python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
  "http://127.0.0.1:$port/metrics") || { kill $rb; fail "scrape of the rebalance's metrics"; }
kill $rb; wait $rb 2>/dev/null
for t in tenant-a tenant-b; do
  echo "$metrics" | grep -qx "qaqkv_rebalance_done{tenant=\"$t\"} 1" || fail "no done gauge for $t: $metrics"
  echo "$metrics" | grep -qx "qaqkv_rebalance_blocks{tenant=\"$t\"} 4" || fail "no blocks gauge for $t: $metrics"
  echo "$metrics" | grep -qx "qaqkv_rebalance_errors{tenant=\"$t\"} 0" || fail "no errors gauge for $t: $metrics"
done
"$qaqkv" rebalance --servers "$addr_a" --metrics-listen nowhere >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--metrics-listen" "$tmp/err" || fail "a bad --metrics-listen: $(cat "$tmp/err")"

# A token the servers refuse (here: one they never had, first for its
# tenant) gives way to the tenant's next one.
{ echo "secret-token-gone tenant-a"; cat "$tmp/tokens"; } >"$tmp/tokens.cli"
"$qaqkv" rebalance --servers "$addr_a,$addr_b" --token-file "$tmp/tokens.cli" >"$tmp/out" 2>"$tmp/err" ||
  fail "a refused first token: $(cat "$tmp/out" "$tmp/err")"
grep -q '"tenant":"tenant-a".*"error":""' "$tmp/out" || fail "a refused first token: $(cat "$tmp/out")"
grep -q "secret-token" "$tmp/out" "$tmp/err" && fail "printed a token: $(cat "$tmp/out" "$tmp/err")"

# --token-file and --token do not mix (the message names no token).
"$qaqkv" rebalance --servers "$addr_a" --token-file "$tmp/tokens" --token secret-token-b \
  >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] || fail "--token-file with --token: want exit 2"
grep -q "secret-token" "$tmp/err" && fail "printed a token: $(cat "$tmp/err")"

# A server that does not answer: each tenant's run fails before it changes
# anything, and the exit is 1 with the error in the report.
rebalance --servers "$addr_a,$addr_b,127.0.0.1:1" --deadline 2
[ "$rc" -eq 1 ] || fail "unreachable server: exit $rc, want 1: $out $err"
[ "$(echo "$out" | wc -l)" -eq 2 ] || fail "unreachable server: want one line per tenant: $out"
has tenant-a '"error":"UNAVAILABLE'
has tenant-b '"blocks_copied":0,'
echo "$err" | grep -q "tenant tenant-b: UNAVAILABLE" || fail "the error is not printed: $err"
echo "ok"
