#!/usr/bin/python3
"""How many bits an entropy-coded scalar quantizer would need, against QAQ's
min-max quantizer, at the same mean squared error, on real KV.

A design study for issue 19 (docs/quality.md, "Codec v2, step 2"). For every
page of 256 tokens of every layer of the tinylm-kv files, and a sweep of
error targets sigma (the same for every value, as QAQ's key bound is), it
measures rate and MSE of:

  minmax      QAQ's quantizer: per token and head, B = ceil(log2(range /
              (sqrt(12) sigma))) in [0, 8], codes of B bits, 36 bits of
              metadata per group (fp16 offset and step, 4-bit width)
  minmax-cc   the same after subtracting each channel's page mean (qaq-cc;
              16 bits per channel per page)
  ecsq        q = round((x - channel mean) / (sqrt(12) sigma)), coded under
              a two-sided geometric model per channel whose one parameter is
              the channel's mean |q| (side information: 16 bits of centre and
              8 of parameter per channel per page, 8 bits of step per token);
              the rate is the model's cross-entropy, which an rANS coder with
              12-bit frequencies reaches within about 1%

and prints, per tensor (K, V), the bits per value of each at the MSE the
minmax quantizer reaches at a few sigma. Usage:

  PYTHONPATH=build/release/python /usr/bin/python3 scripts/ecsq_study.py data/tinylm-kv
"""

import glob
import math
import os
import sys

import numpy as np

from qaqkv import safetensors

PAGE = 256
SQRT12 = math.sqrt(12.0)


def minmax(x, sigma, center):
    """x: [tokens, dim] of one head. Returns (bits, squared error sum)."""
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    lo = x.min(axis=1, keepdims=True)
    hi = x.max(axis=1, keepdims=True)
    rng = hi - lo
    e = SQRT12 * sigma
    b = np.clip(np.ceil(np.log2(np.maximum(rng, 1e-30) / e)), 0, 8)
    levels = 2.0 ** b
    step = rng / levels
    code = np.where(step > 0, np.clip(np.floor((x - lo) / np.where(step > 0, step, 1)), 0, levels - 1), 0)
    rec = lo + (code + 0.5) * step
    err = float(((x - rec) ** 2).sum())
    bits = float(b.sum() * x.shape[1] + 36 * x.shape[0] + (16 * x.shape[1] if center else 0))
    return bits, err


def ecsq(x, sigma):
    c = x.mean(axis=0, keepdims=True)
    s = SQRT12 * sigma
    q = np.round((x - c) / s)
    err = float(((x - (c + q * s)) ** 2).sum())
    # Two-sided geometric per channel: P(q) = (1 - t) / (1 + t) * t^|q|, t
    # from the channel's mean |q| (maximum likelihood: m = 2t / (1 - t^2)).
    m = np.abs(q).mean(axis=0)
    t = np.where(m > 0, (np.sqrt(1 + m * m) - 1) / np.maximum(m, 1e-12), 0.0)
    t = np.clip(t, 1e-6, 1 - 1e-6)
    logp = np.log2((1 - t) / (1 + t)) + np.abs(q) * np.log2(t)
    # A floor on probabilities, as 12-bit frequencies impose (1/4096).
    logp = np.maximum(logp, -12.0)
    bits = float(-logp.sum() + (16 + 8) * x.shape[1] + 8 * x.shape[0])
    return bits, err


def pages(path):
    tensors, meta = safetensors.load(path)
    layers = int(meta["num_layers"])
    for layer in range(layers):
        for name in ("k", "v"):
            x = tensors[f"layers.{layer}.{name}"].astype(np.float32)  # [heads, T, D]
            tokens = x.shape[1] * 3 // 4  # the evaluator's cached prefix
            for h in range(x.shape[0]):
                for p0 in range(0, tokens - PAGE + 1, PAGE):
                    yield name, x[h, p0:p0 + PAGE]


def main():
    paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
    sigmas = np.geomspace(2e-3, 0.5, 25)
    for which in ("k", "v"):
        data = [x for path in paths for name, x in pages(path) if name == which]
        values = sum(x.size for x in data)
        curves = {}
        for method in ("minmax", "minmax-cc", "ecsq"):
            rates, mses = [], []
            for sigma in sigmas:
                bits = err = 0.0
                for x in data:
                    if method == "ecsq":
                        b, e = ecsq(x, sigma)
                    else:
                        b, e = minmax(x, sigma, method == "minmax-cc")
                    bits += b
                    err += e
                rates.append(bits / values)
                mses.append(err / values)
            curves[method] = (np.array(rates), np.array(mses))
        print(f"{which.upper()}: {values} values; bits per value at the MSE minmax reaches at sigma")
        print(f"{'sigma':>8} {'rmse':>9} {'minmax':>7} {'minmax-cc':>9} {'ecsq':>6} {'saved':>6}")
        r0, m0 = curves["minmax"]
        for i in range(0, len(sigmas), 3):
            target = m0[i]
            row = []
            for method in ("minmax", "minmax-cc", "ecsq"):
                r, m = curves[method]
                # Rate at equal MSE: interpolate log(mse) -> rate (mse grows with sigma).
                row.append(float(np.interp(np.log(target), np.log(m), r)))
            print(f"{sigmas[i]:8.4f} {math.sqrt(target):9.5f} {row[0]:7.3f} {row[1]:9.3f} "
                  f"{row[2]:6.3f} {1 - row[2] / row[0]:6.1%}")


if __name__ == "__main__":
    main()
