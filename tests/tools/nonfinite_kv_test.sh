#!/bin/sh
# `qaqkv put` and `qaqkv get --compare` against a memory-only qaqkv-server
# with a tinylm-kv file patched to hold a NaN in K and an Inf in V: put
# rejects NaN K under QAQ (its side inputs need finite K) naming the tensor,
# and --compare reports the non-finite values instead of an error of 0.
# Skipped (77) without python3 (it patches the file).
# Usage: nonfinite_kv_test.sh QAQKV QAQKV_SERVER TINYLM_FILE
qaqkv=$1 server=$2 src=$3
command -v python3 >/dev/null || exit 77
. "$(dirname "$0")/server_lib.sh"

python3 - "$src" "$tmp" <<'PY' || fail "cannot patch $src"
import json, struct, sys
src, out = sys.argv[1], sys.argv[2]
b = bytearray(open(src, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
def patch(path, name, value, index):
    c = bytearray(b)
    t = h[name]
    size = {'F16': 2, 'F32': 4}[t['dtype']]
    off = 8 + n + t['data_offsets'][0] + size * index
    c[off:off + size] = struct.pack('<e' if size == 2 else '<f', value)
    open(path, 'wb').write(c)
patch(out + '/nan_k.safetensors', 'layers.0.k', float('nan'), 0)
patch(out + '/inf_v.safetensors', 'layers.1.v', float('inf'), 5)
PY

start_server "$server" --memory-only --memory-bytes=268435456

# NaN in K under QAQ: rejected, exit 2, naming the tensor.
err=$("$qaqkv" put "$tmp/nan_k.safetensors" --session nan --target "$target" 2>&1 >/dev/null)
rc=$?
[ $rc -eq 2 ] || fail "put NaN K: exit $rc, want 2: $err"
case $err in *layers.0.k*) ;; *) fail "put NaN K: no tensor name in: $err" ;; esac

# A clean session, compared with references holding NaN or Inf: exit 1
# and "not computable", never an error of 0.
"$qaqkv" put "$src" --session clean --target "$target" >/dev/null || fail "put clean"
for ref in nan_k inf_v; do
  out=$("$qaqkv" get --session clean --target "$target" --compare "$tmp/$ref.safetensors" 2>&1)
  rc=$?
  [ $rc -eq 1 ] || fail "get --compare $ref: exit $rc, want 1: $out"
  case $out in *"not computable"*"1 in the reference"*) ;; *) fail "get --compare $ref: $out" ;; esac
done
out=$("$qaqkv" get --session clean --target "$target" --compare "$src" 2>&1) ||
  fail "get --compare clean: $out"
case $out in *"relative RMS error of K and V 0."*) ;; *) fail "get --compare clean: $out" ;; esac

# int4 stores NaN as it is (the codec keeps such a group as fp16): put
# warns naming the tensor and succeeds.
err=$("$qaqkv" put "$tmp/nan_k.safetensors" --session nan4 --codec int4 --fingerprint nan4 \
      --target "$target" 2>&1 >/dev/null) || fail "put NaN K with int4: $err"
case $err in *warning*layers.0.k*) ;; *) fail "put NaN K with int4: no warning: $err" ;; esac
exit 0
