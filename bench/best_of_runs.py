#!/usr/bin/env python3
"""Keeps, per layer and method, the lowest median of several runs of one CPU bench file.

    for run in 1 2; do
        im2win bench --device cpu --threads 2 --suite paper --batch 1 --out run$run.json
        python3 bench/torch_anchor.py --device cpu --threads 2 run$run.json
    done
    python3 bench/best_of_runs.py --out bench/results/cpu-paper-f32-nchw-n1.json \\
        run1.json run2.json

Why: the CPU runs share a host that slows the virtual machine by up to 2x for seconds at a
time, invisibly to its counters. Each method already retimes a layer whose timing is
bimodal and keeps its lowest median, but a slow phase that lasts a whole layer's timing
goes unnoticed, and the two methods run minutes apart (im2win's whole suite, then
PyTorch's), so one of them can meet a slow phase the other does not. Running the pair more
than once and keeping each method's lowest median per layer treats both methods alike.

The inputs must be reports of the same suite, batch, layout and thread count. The output is
the first input with each layer's results replaced: per method, the result with the lowest
median over the inputs, its `detail` extended by every run's median ("best of N runs:
medians a, b ms"); the network total is recomputed per method (Σ count × median), except
in a network report, whose only layer is its measured total (kept best of runs like a layer);
`peak_gflops` (and its per-width detail) is the highest run's, the peak being a best-of
measurement itself; `software` records the number of runs.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_anchor import merge_total  # noqa: E402

SAME = ("suite", "batch", "layout", "threads", "dtype")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("reports", nargs="+")
    args = p.parse_args(argv)

    reports = []
    for path in args.reports:
        with open(path) as f:
            reports.append(json.load(f))
    first = reports[0]
    for path, r in zip(args.reports, reports):
        for key in SAME:
            if r.get(key) != first.get(key):
                sys.exit(f"{path}: {key} {r.get(key)!r} differs from {first.get(key)!r}")

    # A network report (candle's `networks`, bench/torch_networks.py) has one layer, its
    # measured `total`: kept best of runs like a layer. A suite's total is recomputed below.
    network = all(layer["name"] == "total" for layer in first["layers"])
    methods = set()
    for layer in first["layers"]:
        if layer["name"] == "total" and not network:
            continue
        runs = []
        for path, r in zip(args.reports, reports):
            other = next((l for l in r["layers"] if l["name"] == layer["name"]), None)
            if other is None:
                sys.exit(f"{path}: no layer {layer['name']}")
            runs.append(other["results"])
        best = {}
        for results in runs:
            for res in results:
                m = res["method"]
                methods.add(m)
                if m not in best or res["median_ms"] < best[m]["median_ms"]:
                    best[m] = res
        merged = []
        for m, res in best.items():
            medians = [x["median_ms"] for results in runs for x in results if x["method"] == m]
            res = dict(res)
            listed = ", ".join(f"{v:.3f}" for v in medians)
            res["detail"] = (
                f"{res.get('detail', '')}; best of {len(medians)} runs: medians {listed} ms"
            ).lstrip("; ")
            merged.append(res)
        layer["results"] = merged

    for m in sorted(methods if not network else ()):
        merge_total(first, m)
    # The FMA peak is a best-of measurement too: the highest run's (a slow phase of the
    # host halved one run's peak).
    peaks = [r for r in reports if r.get("peak_gflops")]
    if peaks:
        top = max(peaks, key=lambda r: r["peak_gflops"])
        first["peak_gflops"] = top["peak_gflops"]
        width = "peak GFLOP/s per vector width"
        if width in top.get("software", {}):
            first.setdefault("software", {})[width] = top["software"][width]
    first.setdefault("software", {})["runs kept best of"] = str(len(reports))
    with open(args.out, "w") as f:
        json.dump(first, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} (best of {len(reports)} runs)")


if __name__ == "__main__":
    main()
