#!/usr/bin/env bash
# Builds the `fuzz` preset (clang, libFuzzer + ASan + UBSan), seeds a corpus
# with valid pages of every codec and fuzzes the page decoder.
#   FUZZ_SECONDS=600 scripts/fuzz.sh          # longer run
#   FUZZ_CORPUS=/path scripts/fuzz.sh          # keep the corpus elsewhere
# Exits non-zero when the fuzzer finds a crash (the reproducer is written to
# build/fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
corpus="${FUZZ_CORPUS:-build/fuzz/corpus}"
artifacts=build/fuzz/artifacts

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target page_decode_fuzzer page_seed_writer
mkdir -p "$corpus" "$artifacts"
# Every input a fuzzer once failed on must pass before new fuzzing starts,
# and seeds the corpus so mutation starts near those corners.
build/fuzz/tests/fuzz/page_decode_fuzzer tests/fuzz/regressions/*
cp tests/fuzz/regressions/* "$corpus/"
build/fuzz/tests/fuzz/page_seed_writer "$corpus"
# The frozen version-1 pages too (those within -max_len).
for page in tests/data/pages-v1/*.page; do
  [[ $(stat -c %s "$page") -le 8192 ]] && cp "$page" "$corpus/v1-$(basename "$page")"
done
build/fuzz/tests/fuzz/page_decode_fuzzer -max_total_time="$seconds" -max_len=8192 \
  -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$corpus"
