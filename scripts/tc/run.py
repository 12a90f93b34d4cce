#!/usr/bin/env python3
"""One device call: correctness of every kernel type, then the timings, each step in its own
process (a faulting kernel cannot take the others down) under a time limit. Prints a compact
table last; JSON and the full log go to $OUT.

  TC_TOTAL_SECONDS   wall-clock budget of the whole run (default 220)
  TC_STEPS           which steps, e.g. "check:bf16 bench:bf16:paper:128" (default: all)
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", HERE)
TOTAL = float(os.environ.get("TC_TOTAL_SECONDS", "220"))
DEFAULT = ("check:bf16:150 check:f16:150 check:tf32:150 "
           "bench:bf16:paper:128 bench:bf16:resnet50:32 bench:f16:paper:128 bench:f16:resnet50:32 "
           "bench:tf32:paper:128 bench:tf32:resnet50:32")
steps = os.environ.get("TC_STEPS", DEFAULT).split()
start = time.time()
subprocess.run("nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv",
               shell=True)
status = {}
for i, step in enumerate(steps):
    parts = step.split(":")
    left = TOTAL - (time.time() - start)
    if left < 5:
        print(f"== {step}: skipped (time)", flush=True)
        status[step] = "skipped"
        continue
    benches_left = sum(1 for s in steps[i:] if s.startswith("bench"))
    env = dict(os.environ)
    if parts[0] == "bench":
        # An equal share of what is left for each remaining bench, less a margin for start-up.
        env["TC_BENCH_SECONDS"] = str(max(5.0, left / benches_left - 8))
    print(f"== {step} ({left:.0f} s left)", flush=True)
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, os.path.join(HERE, "tc.py")] + parts, env=env,
                           timeout=max(10, left - 2))
        status[step] = "ok" if r.returncode == 0 else f"exit {r.returncode}"
    except subprocess.TimeoutExpired:
        status[step] = "timeout"
    print(f"== {step}: {status[step]} in {time.time() - t0:.1f} s", flush=True)
json.dump(status, open(os.path.join(OUT, "status.json"), "w"), indent=1)

# The compact table.
print("\n==== summary ====")
for step, st in status.items():
    print(f"{step:28s} {st}")
for f in sorted(os.listdir(OUT)):
    if f.startswith("check-") and f.endswith(".json"):
        s = json.load(open(os.path.join(OUT, f)))["summary"]
        print(f"{f}: {s['problems']} problems, {s['kernel_runs']} runs, {s['failures']} failures, worst "
              f"{s['worst_err']:.3g} (limit {s['limit']:g}), cuDNN worst {s['worst_cudnn_err']:.3g}, "
              f"ours/cuDNN max {s['max_err_over_cudnn']}, {s['device']}")
for f in sorted(os.listdir(OUT)):
    if f.startswith("bench-") and f.endswith(".json"):
        d = json.load(open(os.path.join(OUT, f)))
        s = d["summary"]
        print(f"\n{f} ({s['device']}, torch {s['torch_version']}, cuDNN {s['cudnn']})")
        print(f"{'layer':24s} {'ours TF/s':>9s} {'torch TF/s':>10s} {'ratio':>6s} {'base TF/s':>9s}  kernel")
        for r in d["rows"]:
            b = r["ours"][r["best"]]
            base = f"{r['flops'] / r['baseline_ms'] / 1e9:9.1f}" if r.get("baseline_ms") else f"{'-':>9s}"
            print(f"{r['layer']:24s} {b['tflops']:9.1f} {r['torch']['tflops']:10.1f} {r['ratio']:6.2f} {base}  "
                  f"{r['best'].split('_', 2)[2]}")
        base = s.get("total_baseline_ms")
        print(f"total x count: ours {s['total_ours_ms']:.3f} ms, torch {s['total_torch_ms']:.3f} ms"
              + (f", baseline {base:.3f} ms" if base else ""))

# One file for everything (the device call returns only a few files): all.json, beside the log.
merged = {"status": status}
for f in sorted(os.listdir(OUT)):
    if (f.startswith("check-") or f.startswith("bench-")) and f.endswith(".json"):
        merged[f[:-5]] = json.load(open(os.path.join(OUT, f)))
        os.remove(os.path.join(OUT, f))
json.dump(merged, open(os.path.join(OUT, "all.json"), "w"))
os.remove(os.path.join(OUT, "status.json"))
