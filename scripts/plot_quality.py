#!/usr/bin/python3
"""Plots attention-output error against honest compression ratio, one series
per codec family, from the CSV of `qaqkv eval --format csv`.

    scripts/plot_quality.py SWEEP.csv OUT.png [TITLE]

Uses Debian's python3-matplotlib (run with /usr/bin/python3)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def family(row):
    cfg = row["config"]
    if row["codec"] != "qaq":
        return cfg.split(":")[0] if row["codec"] != "kivi2" else cfg
    name = cfg.split(":")[0]
    outliers = "o=0.01" in cfg
    return f"{name} ({'1% outliers' if outliers else 'no outliers'})"


def main():
    src, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else src
    rows = list(csv.DictReader(open(src)))
    series = {}
    for r in rows:
        series.setdefault(family(r), []).append((float(r["ratio"]), float(r["out_rel_err"])))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, pts in sorted(series.items()):
        pts.sort()
        xs, ys = zip(*pts)
        if name.startswith("qaq"):
            ax.scatter(xs, ys, s=12, label=name, alpha=0.8)
        else:
            ax.plot(xs, ys, marker="D", markersize=8, linestyle="none", label=name)
    ax.set_xlabel("honest compression ratio (fp16 bytes / stored bytes)")
    ax.set_ylabel("attention-output relative L2 error (held-out queries)")
    ax.set_yscale("log")
    ax.set_xlim(1, 8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
