#!/usr/bin/env python3
"""PyTorch's conv2d on the layers of an `im2win bench` report, merged into that report.

    im2win bench --device cpu --suite paper --batch 1 --threads 2     # writes the JSON
    python3 bench/torch_anchor.py --device cpu --threads 2 \
        bench/results/cpu-paper-f32-nchw-n1.json                      # adds "torch-cpu"

For every layer of the report (its "problem" field) this times `torch.nn.functional.conv2d`
the way the benchmark times im2win: random float32 operands in [-1, 1), one checked run
(image 0 against PyTorch's own float64 convolution), `--warmup` untimed runs, then `--reps`
runs timed one by one with the wall clock, the median reported. It measures the call's
extra memory in a child process: the growth of the resident set's high-water mark during
one call, beyond the output tensor it returns (large allocations are forced onto fresh
mmap'ed pages, so that memory reused from earlier calls cannot hide). Results go into the
report as method "torch-<device>" (replacing an older one), and the network total is
recomputed.

--device cpu runs on the CPU with --threads threads (torch.set_num_threads); PyTorch's CPU
convolution is oneDNN's. The script is structured for a --device cuda mode (CUDA events,
torch.cuda.max_memory_allocated) that is not written yet.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="bench JSON written by `im2win bench` (updated in place)")
    p.add_argument("--device", choices=["cpu"], default="cpu",
                   help="where PyTorch runs (only cpu so far)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads [default: the report's \"threads\", else all cores]")
    p.add_argument("--reps", type=int, default=None,
                   help="timed runs [default: the report's settings.reps]")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only-noisy", action="store_true",
                   help="time again only the layers whose torch result was taken while other "
                        "processes used the machine (its detail says so), keep the others")
    p.add_argument("--retries", type=int, default=RETRIES,
                   help="timing attempts per layer while the machine is busy")
    p.add_argument("--retry-wait", type=float, default=10.0, help="seconds between attempts")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: one layer's memory
    return p.parse_args(argv)


def conv_args(problem):
    """(padding for F.pad or None, conv2d keyword arguments) of a report's problem."""
    pad = problem["padding"]
    symmetric = pad["top"] == pad["bottom"] and pad["left"] == pad["right"]
    kwargs = {
        "stride": tuple(problem["stride"]),
        "dilation": tuple(problem["dilation"]),
        "groups": problem.get("groups", 1),
        "padding": (pad["top"], pad["left"]) if symmetric else 0,
    }
    explicit = None if symmetric else (pad["left"], pad["right"], pad["top"], pad["bottom"])
    return explicit, kwargs


def operands(torch, problem, seed, device):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(problem["input"], generator=gen) * 2 - 1
    w = torch.rand(problem["filter"], generator=gen) * 2 - 1
    return x.to(device), w.to(device)


def make_conv(torch, problem):
    import torch.nn.functional as F
    explicit, kwargs = conv_args(problem)

    def conv(x, w):
        if explicit is not None:
            x = F.pad(x, explicit)
        return F.conv2d(x, w, None, **kwargs)

    return conv


def rel_err(torch, conv, x, w):
    """||out - ref|| / ||ref|| on image 0, the reference in float64."""
    out = conv(x[:1], w).double()
    ref = conv(x[:1].double(), w.double())
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()


def time_cpu(conv, x, w, warmup, reps):
    for _ in range(warmup):
        conv(x, w)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        conv(x, w)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


QUIET_CORES = 0.1  # timing while other processes used more is repeated (as the Rust side)
RETRIES = 6


def was_noisy(result):
    """Whether a stored result says it was timed while other processes used the machine."""
    detail = (result or {}).get("detail", "")
    marker = "other processes "
    if marker not in detail:
        return True
    return float(detail.split(marker)[1].split()[0]) >= QUIET_CORES


def busy_ticks():
    """(busy ticks of the machine, ticks of this process): /proc/stat, /proc/self/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    machine = sum(v[0:3]) + sum(v[5:8])
    t = os.times()
    own = round((t.user + t.system) * 100)
    return machine, own, time.perf_counter()


def foreign_cores(before):
    machine, own, at = busy_ticks()
    return max(0.0, ((machine - before[0]) - (own - before[1])) / 100 / (at - before[2]))


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(args):
    """Runs in a child process: prints the extra bytes of one conv2d call."""
    import torch
    torch.set_num_threads(args.threads)
    problem = json.loads(args.memory_child)
    x, w = operands(torch, problem, args.seed, "cpu")
    conv = make_conv(torch, problem)
    for _ in range(2):  # kernels generated, thread pool started, allocator warm
        conv(x, w)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    before = rss_kib("VmRSS")
    y = conv(x, w)
    peak = rss_kib("VmHWM")
    extra = (peak - before) * 1024 - y.numel() * y.element_size()
    print(max(extra, 0))


def extra_bytes(args, problem, threads):
    env = dict(os.environ)
    # Every allocation of 64 KiB or more gets fresh pages and returns them when freed, so
    # the high-water mark sees what the call allocates, not what an earlier call left.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    env["MALLOC_TRIM_THRESHOLD_"] = "0"
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, args.report, "--threads", str(threads),
           "--seed", str(args.seed), "--memory-child", json.dumps(problem)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def total(layers, method):
    """The network total of `method` (Σ count × median), or None if a layer lacks it."""
    rows = [l for l in layers if l["name"] != "total"]
    picked = []
    for l in rows:
        r = next((r for r in l["results"] if r["method"] == method), None)
        if r is None:
            return None
        picked.append((l.get("count", 1), r))
    gflop = sum(c * l["gflop"] for c, l in zip((c for c, _ in picked), rows))
    median = sum(c * r["median_ms"] for c, r in picked)
    return {
        "method": method,
        "median_ms": median,
        "tflops": gflop / median if median > 0 else 0.0,
        "extra_bytes": max(r["extra_bytes"] for _, r in picked),
        "rel_err": max(r["rel_err"] for _, r in picked),
        "flagged": any(r["flagged"] for _, r in picked),
        "min_ms": sum(c * r["min_ms"] for c, r in picked),
        "max_ms": sum(c * r["max_ms"] for c, r in picked),
    }


def main():
    args = parse_args()
    if args.memory_child:
        return memory_child(args)
    with open(args.report) as f:
        report = json.load(f)
    threads = args.threads or report.get("threads") or os.cpu_count()
    reps = args.reps or report["settings"]["reps"]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)
    method = f"torch-{args.device}"
    limit = report["settings"]["rel_err_limit"]
    print(f"torch {torch.__version__} on {args.device}, {threads} threads, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}", file=sys.stderr)

    for index, layer in enumerate(report["layers"]):
        problem = layer.get("problem")
        if problem is None:
            continue
        old = next((r for r in layer["results"] if r["method"] == method), None)
        if args.only_noisy and not was_noisy(old):
            continue
        x, w = operands(torch, problem, args.seed * 1_000_003 + index, args.device)
        conv = make_conv(torch, problem)
        err = rel_err(torch, conv, x, w)
        for attempt in range(args.retries):
            before = busy_ticks()
            samples = time_cpu(conv, x, w, args.warmup, reps)
            foreign = foreign_cores(before)
            if foreign < QUIET_CORES or attempt == args.retries - 1:
                break
            print(f"{layer['name']}: other processes used {foreign:.2f} cores while timing; "
                  f"again in {args.retry_wait:g} s", file=sys.stderr)
            time.sleep(args.retry_wait)
        median = statistics.median(samples)
        result = {
            "method": method,
            "median_ms": median,
            "tflops": layer["gflop"] / median,
            "extra_bytes": extra_bytes(args, problem, threads),
            "rel_err": err,
            "flagged": not err <= limit,
            "min_ms": min(samples),
            "max_ms": max(samples),
            "detail": f"torch {torch.__version__}, {threads} threads, "
                      f"other processes {foreign:.2f} cores",
        }
        layer["results"] = [r for r in layer["results"] if r["method"] != method] + [result]
        ours = next((r for r in layer["results"] if r["method"] == "im2win-cpu"), None)
        ratio = f", im2win-cpu {median / ours['median_ms']:.2f}x faster" if ours else ""
        print(f"{layer['name']}: {method} {median:.3f} ms {result['tflops'] * 1e3:.1f} GFLOP/s, "
              f"{result['extra_bytes'] / 2**20:.2f} MiB extra{ratio}", file=sys.stderr)

    for layer in report["layers"]:
        if layer["name"] == "total":
            t = total(report["layers"], method)
            layer["results"] = [r for r in layer["results"] if r["method"] != method]
            if t:
                layer["results"].append(t)
    report.setdefault("software", {})["torch"] = torch.__version__
    report["software"]["torch load average after"] = " ".join(
        open("/proc/loadavg").read().split()[:3])
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
