#!/usr/bin/env python3
"""Joins the reports of one (network, dtype, batch) into one bench file.

    python3 bench/merge_networks.py --out bench/results/candle-resnet50-bf16-n32.json \
        default.json cudnn.json torch.json

The inputs are reports of candle/examples/networks (its two builds: methods im2win-candle
and candle, then candle-cudnn) and of bench/torch_networks.py (method torch), each with one
layer `total`. The output has the first report's top level, every method of layer `total`
(a later report's result replaces an earlier one of the same method; a method skipped in one
report and measured in another counts as measured), `settings` and `software` of every input
(software merged; settings under `settings.sources`, by file). The inputs must agree on
network, dtype, batch and device.
"""

import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("reports", nargs="+")
    args = p.parse_args(argv)

    merged = None
    results, skipped, sources, software = {}, {}, {}, {}
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        if merged is None:
            merged = {k: v for k, v in report.items() if k not in ("settings", "software")}
        for key in ("suite", "dtype", "batch", "device"):
            if report.get(key) != merged.get(key):
                sys.exit(f"{path}: {key} {report.get(key)!r}, but {merged.get(key)!r} before")
        (total,) = [layer for layer in report["layers"] if layer["name"] == "total"]
        for r in total["results"]:
            results[r["method"]] = r
            skipped.pop(r["method"], None)
        for s in total.get("skipped", []):
            if s["method"] not in results:
                skipped[s["method"]] = s
        sources[os.path.basename(path)] = report.get("settings", {})
        software.update(report.get("software", {}))
    (total,) = [layer for layer in merged["layers"] if layer["name"] == "total"]
    total["results"] = list(results.values())
    total["skipped"] = list(skipped.values())
    merged["settings"] = {"sources": sources}
    merged["software"] = software
    with open(args.out, "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")
    line = ", ".join(f"{m} {r['median_ms']:.3f} ms" for m, r in results.items())
    print(f"{args.out}: {line}" + "".join(f"; {m} skipped" for m in skipped))


if __name__ == "__main__":
    main()
