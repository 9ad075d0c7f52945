# Sourced by the shell tests that run a real qaqkv-server. Gives them a
# temporary directory ($tmp), `fail MESSAGE`, and `start_server BINARY ARGS...`,
# which starts the server on a free loopback port (its log in $tmp), waits for
# it to serve and sets $target. The server is stopped and $tmp removed on exit.
tmp=$(mktemp -d) || exit 1
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }

start_server() {
  _bin=$1
  shift
  "$_bin" --listen=127.0.0.1:0 --port-file="$tmp/port" "$@" >"$tmp/server.log" 2>&1 &
  pid=$!
  _i=0
  while [ ! -s "$tmp/port" ]; do
    _i=$((_i + 1))
    if [ $_i -gt 1200 ] || ! kill -0 "$pid" 2>/dev/null; then
      fail "server did not start: $(cat "$tmp/server.log")"
    fi
    sleep 0.05
  done
  target=127.0.0.1:$(cat "$tmp/port")
}
