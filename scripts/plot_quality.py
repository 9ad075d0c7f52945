#!/usr/bin/python3
"""Plots attention-output error against honest compression ratio for every
codec family, from the CSV of `qaqkv eval --format csv`, and prints the
Pareto frontier and the QAQ configs that beat int4 and kivi2 as Markdown.

    scripts/plot_quality.py SWEEP.csv OUT.png [TITLE]

Uses Debian's python3-matplotlib (run with /usr/bin/python3)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def family(row):
    cfg = row["config"]
    if row["codec"] == "kivi2":
        return cfg.split(",")[0]
    if row["codec"] != "qaq":
        return cfg
    name = cfg.split(":")[0]
    return f"{name} ({'1% outliers' if 'o=0.01' in cfg else 'no outliers'})"


def dominates(a, b):
    """a has a higher ratio than b at an equal or lower error."""
    return a["ratio"] > b["ratio"] and a["err"] <= b["err"]


def main():
    src, out = sys.argv[1], sys.argv[2]
    title = sys.argv[3] if len(sys.argv) > 3 else src
    rows = []
    for r in csv.DictReader(open(src)):
        r["ratio"] = float(r["ratio"])
        r["err"] = float(r["out_rel_err"])
        rows.append(r)
    series = {}
    for r in rows:
        series.setdefault(family(r), []).append((r["ratio"], r["err"]))
    fig, ax = plt.subplots(figsize=(9, 6))
    baselines = {"int8": ("D", "black"), "int4": ("s", "black"), "kivi2:r=128": ("^", "red"),
                 "kivi2:r=32": ("v", "red")}
    qaq_styles = ["o", "x", "+", "1", "*", "."]
    qaq_index = 0
    for name, pts in sorted(series.items()):
        pts = sorted(p for p in pts if p[1] > 0)  # fp16 has no error to plot
        if not pts:
            continue
        xs, ys = zip(*pts)
        if name.startswith("qaq"):
            ax.plot(xs, ys, marker=qaq_styles[qaq_index % len(qaq_styles)], markersize=5,
                    linestyle="none", label=name, alpha=0.8)
            qaq_index += 1
        else:
            marker, color = baselines.get(name, ("*", "gray"))
            ax.plot(xs, ys, marker=marker, markersize=11, linestyle="none", label=name,
                    color=color, markerfacecolor="none" if name != "int4" else color)
    ax.set_xlabel("honest compression ratio (fp16 bytes / stored bytes)")
    ax.set_ylabel("attention-output relative L2 error (held-out queries)")
    ax.set_yscale("log")
    ax.set_xlim(1, 10)
    ax.set_ylim(5e-4, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)

    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: -r["ratio"]):
        if r["err"] < best:
            best = r["err"]
            front.append(r)
    print("| config | ratio | ratio (paper) | out_rel_err | attn_kl | top8 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in reversed(front):
        print(f"| `{r['config']}` | {r['ratio']:.3f} | {float(r['ratio_paper']):.3f} | "
              f"{r['err']:.5f} | {float(r['attn_kl']):.6f} | {float(r['top8']):.4f} |")
    base = {r["config"]: r for r in rows if r["codec"] != "qaq"}
    for name in ("int4", "kivi2:r=128,g=32"):
        b = base[name]
        wins = [r for r in rows if r["codec"] == "qaq" and dominates(r, b)]
        wins.sort(key=lambda r: -r["ratio"])
        print(f"\nQAQ configs with a higher ratio than {name} ({b['ratio']:.3f}x) at an equal "
              f"or lower error ({b['err']:.5f}): {len(wins)}; highest ratios:")
        for r in wins[:3]:
            print(f"- `{r['config']}`: {r['ratio']:.3f}x, error {r['err']:.5f}")


if __name__ == "__main__":
    main()
