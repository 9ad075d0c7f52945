#!/bin/sh
# Installs this build tree into a temporary prefix, builds the consumer
# project (tests/install/consumer) against it with find_package(qaqkv), and
# runs it against a real memory-only qaqkv-server on a free port.
#   install_consumer_test.sh BUILD_DIR SOURCE_DIR SERVER_BINARY
set -eu
build=$1 src=$2 server=$3
. "$src/tests/tools/server_lib.sh"
work=$tmp
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
# Nothing private leaks into the install: no generated proto headers.
if find "$work/prefix/include" -name '*.pb.h' | grep -q .; then
  echo "generated proto headers were installed" >&2
  exit 1
fi
cmake -S "$src/tests/install/consumer" -B "$work/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
start_server "$server" --memory-only
"$work/build/consumer" "$target"
