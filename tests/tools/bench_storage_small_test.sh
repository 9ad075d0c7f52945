#!/bin/sh
# `qaqkv bench storage` at its smallest --pages, many times: the DRAM-hit
# phase used to evict pages it then read (most runs failed with "block: not
# found"). Also checks that the run leaves its temporary directory nowhere.
# Usage: bench_storage_small_test.sh QAQKV
qaqkv=$1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  for pages in 8 16; do
    if ! TMPDIR=$tmp "$qaqkv" bench storage --pages $pages --page-kib 16 --memory-mib 1 \
        --format csv >/dev/null; then
      echo "run $i with --pages $pages failed" >&2
      exit 1
    fi
  done
done
if [ -n "$(ls -A "$tmp")" ]; then
  echo "left behind in TMPDIR: $(ls -A "$tmp")" >&2
  exit 1
fi
