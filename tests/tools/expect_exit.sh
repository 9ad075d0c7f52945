#!/bin/sh
# Usage: expect_exit.sh CODE TEXT COMMAND [ARGS...]
# Passes iff COMMAND exits with CODE and its stderr contains TEXT (a fixed
# string, e.g. the flag the message must name).
code=$1 text=$2
shift 2
err=$("$@" 2>&1 >/dev/null)
rc=$?
if [ "$rc" -ne "$code" ]; then
  echo "expected exit $code, got $rc from: $*" >&2
  echo "stderr: $err" >&2
  exit 1
fi
case $err in
  *"$text"*) exit 0 ;;
esac
echo "exit $rc as expected, but stderr lacks \"$text\": $err" >&2
exit 1
