#!/usr/bin/env python3
"""A/B timing of convolution kernel builds on the GPU, without the Rust runtime.

Usage (on the GPU machine, python3 with PyTorch):
    scripts/kernel-ab.py --report bench/results/paper-f32-n128.json \
        --build old=path/old.cubin --build new=path/new.cubin [--layers conv1,conv8] [--reps 25]

Why: a change to the kernel templates (register allocation, epilogue, loaders) is decided by
a few percent on a few kernels. Rebuilding the benchmark binary (the whole catalogue, twice)
for every variant costs far more time than the measurement; this loads any number of cubins
that hold the kernels (the full build's `im2win.sm_90.cubin`, or a few kernels compiled
alone, see scripts/kernel-ab.sh) and times the same kernel of each build on the same
buffers, alternately, in one process.

For each layer of a committed bench report it takes the problem and the kernel that dispatch
chose there (the result's `detail`), and runs that kernel of every build (a build lacking it
is skipped) with the split reduction off (Z = 1: the A/B is of the convolution kernel; the
bench's split layers are marked). The transforms are done here, in torch, and not timed:
the filter into A[kk][K4] (fused kernels: kk = (r*S + s)*C + c; materialised: kk =
c*S*R + s*R + r), and for materialised kernels the input into the im2win buffer
T[N][C][P][Wt][R] (docs/DESIGN.md). Inputs are
random in [-1, 1); outputs are NaN-poisoned before the checked run, which compares images 0
and 1 against torch's float64 convolution (with the epilogue); the last lines give each build's
worst relative error, and a wrong build makes the exit status 1. Timing: CUDA events around
each launch, input sets rotated past 3x the L2, builds interleaved run by run, median of
--reps after --warmup.

Builds compiled before the epilogue existed (93e0550: no residual parameter, a shorter
ConvParams) are recognised with --legacy NAME and launched with their own signature.
"""

import argparse
import ctypes
import json
import statistics
import sys

import torch
import torch.nn.functional as F

L2_BYTES = 60 << 20


class ConvParams(ctypes.Structure):
    """common.cuh's ConvParams (112 bytes; ctypes adds the same padding before crs)."""
    _fields_ = [(n, ctypes.c_int) for n in (
        "n c h w k r s p q stride_h stride_w pad_top pad_left dil_h dil_w win_w has_bias "
        "layout filter_layout activation has_residual").split()] + [
        ("alpha", ctypes.c_float), ("beta", ctypes.c_float),
        ("crs", ctypes.c_longlong), ("npq", ctypes.c_longlong)]


class LegacyParams(ctypes.Structure):
    """93e0550's ConvParams: no layout, epilogue or residual fields."""
    _fields_ = [(n, ctypes.c_int) for n in (
        "n c h w k r s p q stride_h stride_w pad_top pad_left dil_h dil_w win_w has_bias").split()] + [
        ("crs", ctypes.c_longlong), ("npq", ctypes.c_longlong)]


assert ctypes.sizeof(ConvParams) == 112


class Cuda:
    def __init__(self):
        torch.zeros(1, device="cuda")  # the primary context, current on this thread
        self.lib = ctypes.CDLL("libcuda.so.1")

    def check(self, rc, what):
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what}: {name.value.decode() if name.value else rc}")

    def load(self, path):
        module = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoad(ctypes.byref(module), path.encode()), f"cuModuleLoad {path}")
        return module

    def function(self, module, name):
        fn = ctypes.c_void_p()
        rc = self.lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode())
        return fn if rc == 0 else None

    def launch(self, fn, grid, block, args):
        holders = [ctypes.c_void_p(a) if isinstance(a, int) else a for a in args]
        params = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.check(self.lib.cuLaunchKernel(fn, *grid, *block, 0, stream, params, None), "cuLaunchKernel")


def kernel_shape(name):
    """(BM, BN, threads) from a kernel name's tile (b{BM}x{BN}x{BK}_t{TM}x{TN})."""
    import re
    m = re.search(r"_b(\d+)x(\d+)x(\d+)_t(\d+)x(\d+)", name)
    bm, bn, _, tm, tn = map(int, m.groups())
    return bm, bn, (bm // tm) * (bn // tn)


def problem_args(problem):
    n, c, h, w = problem["input"]
    k, _, r, s = problem["filter"]
    sh, sw = problem["stride"]
    dh, dw = problem["dilation"]
    pad = problem["padding"]
    p = (h + pad["top"] + pad["bottom"] - dh * (r - 1) - 1) // sh + 1
    q = (w + pad["left"] + pad["right"] - dw * (s - 1) - 1) // sw + 1
    return n, c, h, w, k, r, s, p, q, sh, sw, dh, dw, pad


ACTIVATIONS = {"identity": 0, "relu": 1, "silu": 2, "gelu": 3, "gelu_tanh": 4}


def params(problem, legacy, has_bias):
    n, c, h, w, k, r, s, p, q, sh, sw, dh, dw, pad = problem_args(problem)
    common = dict(n=n, c=c, h=h, w=w, k=k, r=r, s=s, p=p, q=q, stride_h=sh, stride_w=sw,
                  pad_top=pad["top"], pad_left=pad["left"], dil_h=dh, dil_w=dw,
                  win_w=(q - 1) * sw + (s - 1) * dw + 1, has_bias=int(has_bias),
                  crs=c * r * s, npq=n * p * q)
    if legacy:
        return LegacyParams(**common)
    epi = problem.get("epilogue", {})
    nhwc = problem.get("layout", "nchw") == "nhwc"
    return ConvParams(**common, layout=int(nhwc), filter_layout=int(problem.get("filter_layout") == "krsc"),
                      activation=ACTIVATIONS[epi.get("activation", "identity")],
                      has_residual=int(bool(epi.get("residual"))), alpha=float(epi.get("alpha", 1.0)),
                      beta=float(epi.get("beta", 0.0)))


def im2win_buffer(problem, x):
    """The materialised kernels' input T[n][c][p][w][r] = Xpad[n][c][p*sh + r*dh][w], w < Wt."""
    n, c, h, w, k, r, s, p, q, sh, sw, dh, dw, pad = problem_args(problem)
    wt = (q - 1) * sw + (s - 1) * dw + 1
    xp = F.pad(x, (pad["left"], pad["right"], pad["top"], pad["bottom"]))
    rows = [xp[:, :, i * dh: i * dh + (p - 1) * sh + 1: sh, :wt] for i in range(r)]
    return torch.stack(rows, dim=-1).contiguous()


def reference(problem, x, wt, bias, residual, images):
    """float64 conv + epilogue of the first `images` images, in the problem's layout."""
    n, c, h, w, k, r, s, p, q, sh, sw, dh, dw, pad = problem_args(problem)
    nhwc = problem.get("layout", "nchw") == "nhwc"
    xs = x[:images].double()
    if nhwc:
        xs = xs.permute(0, 3, 1, 2)
    xs = F.pad(xs, (pad["left"], pad["right"], pad["top"], pad["bottom"]))
    y = F.conv2d(xs, wt.double(), None, (sh, sw), 0, (dh, dw))
    epi = problem.get("epilogue", {})
    y = y * float(epi.get("alpha", 1.0))
    if bias is not None:
        y = y + bias.double().view(1, -1, 1, 1)
    if nhwc:
        y = y.permute(0, 2, 3, 1)
    if epi.get("residual"):
        y = y + float(epi.get("beta", 0.0)) * residual[:images].double()
    act = epi.get("activation", "identity")
    if act == "relu":
        y = torch.relu(y)
    elif act != "identity":
        raise SystemExit(f"activation {act} not modelled here")
    return y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", action="append", required=True, help="committed bench JSON (repeatable)")
    ap.add_argument("--build", action="append", required=True, help="NAME=CUBIN (repeatable)")
    ap.add_argument("--legacy", action="append", default=[], help="builds with 93e0550's kernel signature")
    ap.add_argument("--layers", default="", help="comma-separated layer names (default: all)")
    ap.add_argument("--kernel", action="append", default=[], help="LAYER=KERNEL: run this kernel there instead")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bias", action="store_true", help="add a bias even where the report has none")
    ap.add_argument("--plain", action="store_true",
                    help="drop the reports' epilogues (no bias, residual or activation): the baseline "
                         "that an epilogue's cost is measured against")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    cuda = Cuda()
    builds = []
    for b in a.build:
        name, path = b.split("=", 1)
        builds.append((name, cuda.load(path), name in a.legacy))
    wanted = set(filter(None, a.layers.split(",")))
    forced = dict(kv.split("=", 1) for kv in a.kernel)
    torch.manual_seed(1)
    rows = []
    print(f"device: {torch.cuda.get_device_name()}", flush=True)
    for report in a.report:
        rep = json.load(open(report))
        for layer in rep["layers"]:
            if "problem" not in layer or (wanted and layer["name"] not in wanted):
                continue
            problem = dict(layer["problem"])
            if a.plain:
                problem.pop("epilogue", None)
            ours = next((m for m in layer["results"] if m["method"] == "im2win"), None)
            if ours is None:
                continue
            detail = ours.get("detail", "")
            kname = forced.get(layer["name"], detail.split()[0] if detail else "")
            split = "split" in detail and layer["name"] not in forced
            rows.append(run_layer(cuda, builds, rep, layer, problem, kname, split, a))
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)
    names = [b[0] for b in builds]
    print("\nlayer            kernel                                           " + " ".join(f"{n:>10s}" for n in names)
          + "  " + " ".join(f"{n}/{names[0]:s}" for n in names[1:]))
    for row in rows:
        t = row["ms"]
        base = t.get(names[0])
        cells = " ".join(f"{t[n]:10.4f}" if n in t else f"{'-':>10s}" for n in names)
        ratios = " ".join(f"{t[n] / base:>{len(n) + len(names[0]) + 1}.3f}" if n in t and base else "-" for n in names[1:])
        print(f"{row['layer']:16s} {row['kernel'][:48]:48s} {cells}  {ratios}{'  (split in the bench)' if row['split'] else ''}")
    for n in names[1:]:
        pairs = [(r["ms"][n], r["ms"][names[0]]) for r in rows if n in r["ms"] and names[0] in r["ms"]]
        if pairs:
            print(f"total {n}/{names[0]}: {sum(p[0] for p in pairs) / sum(p[1] for p in pairs):.4f} over {len(pairs)} layers")
    # The checked runs' verdict last, where a `tail` of the output still shows it; a wrong
    # build makes the exit status 1.
    wrong = []
    for n in names:
        errs = [(r["rel_err"][n], r["layer"]) for r in rows if n in r["rel_err"]]
        if errs:
            worst = max(errs)
            print(f"worst relative error {n}: {worst[0]:.2e} ({worst[1]}) over {len(errs)} layers")
            wrong += [f"{n} on {layer}" for e, layer in errs if not e < 1e-5]
    if wrong:
        print("WRONG (relative error above 1e-5 or not finite): " + ", ".join(wrong))
        return 1
    return 0


def run_layer(cuda, builds, rep, layer, problem, kname, split, a):
    n, c, h, w, k, r, s, p, q, sh, sw, dh, dw, pad = problem_args(problem)
    nhwc = problem.get("layout", "nchw") == "nhwc"
    epi = problem.get("epilogue", {})
    # Builds differ in where alpha is applied (the epilogue before issue 11's staged epilogue,
    # the filter transform since): only alpha = 1 means the same for all of them.
    assert float(epi.get("alpha", 1.0)) == 1.0, "kernel-ab.py compares builds at alpha = 1 only"
    has_bias = a.bias or epi.get("activation", "identity") != "identity" or bool(epi.get("residual"))
    bm, bn, threads = kernel_shape(kname)
    npq = n * p * q
    grid = ((npq + bn - 1) // bn, (k + bm - 1) // bm, 1)
    xshape = (n, h, w, c) if nhwc else (n, c, h, w)
    yshape = (n, p, q, k) if nhwc else (n, k, p, q)
    per_set = 4 * (n * c * h * w + 2 * n * k * p * q)
    sets = max(1, min(16, -(-3 * L2_BYTES // per_set)))
    xs = [torch.rand(xshape, device="cuda") * 2 - 1 for _ in range(sets)]
    ys = [torch.empty(yshape, device="cuda") for _ in range(sets)]
    res = [torch.rand(yshape, device="cuda") * 2 - 1 for _ in range(sets)] if epi.get("residual") else None
    wt = torch.rand((k, c, r, s), device="cuda") * 2 - 1
    k4 = (k + 3) // 4 * 4
    A = torch.zeros((r * s * c, k4), device="cuda")
    fused = "_fused" in kname
    A[:, :k] = (wt.permute(2, 3, 1, 0) if fused else wt.permute(1, 3, 2, 0)).reshape(r * s * c, k)
    assert fused or not nhwc
    bias = torch.rand(k, device="cuda") * 2 - 1 if has_bias else None
    out = {"layer": layer["name"], "kernel": kname, "split": split, "ms": {}, "rel_err": {}}
    images = min(n, 2)
    ref = reference(problem, xs[0], wt, bias, res[0] if res else None, images)
    if not fused:
        xs = [im2win_buffer(problem, x) for x in xs]
    fns = []
    for bname, module, legacy in builds:
        fn = cuda.function(module, kname)
        if fn is None:
            print(f"{layer['name']}: {bname} has no {kname}", flush=True)
            continue
        if legacy and (res is not None or nhwc or (epi.get("activation", "identity") != "identity")):
            print(f"{layer['name']}: {bname} (legacy) has no epilogue or NHWC; skipped", flush=True)
            continue
        prm = params(problem, legacy, has_bias)

        def args(i, legacy=legacy, prm=prm):
            b = bias.data_ptr() if bias is not None else 0
            if legacy:
                return [xs[i].data_ptr(), A.data_ptr(), b, ys[i].data_ptr(), prm]
            return [xs[i].data_ptr(), A.data_ptr(), b, res[i].data_ptr() if res else 0, ys[i].data_ptr(), prm]
        ys[0].fill_(float("nan"))
        cuda.launch(fn, grid, (threads, 1, 1), args(0))
        torch.cuda.synchronize()
        got = ys[0][:images].double()
        err = ((got - ref).norm() / ref.norm()).item()
        if not err < 1e-5:
            print(f"{layer['name']}: {bname} {kname} WRONG: relative error {err:.3e}", flush=True)
        out["rel_err"][bname] = err
        fns.append((bname, fn, args))
    times = {b: [] for b, _, _ in fns}
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for it in range(a.warmup + a.reps):
        for bname, fn, args in fns:
            i = it % sets
            start.record()
            cuda.launch(fn, grid, (threads, 1, 1), args(i))
            stop.record()
            stop.synchronize()
            if it >= a.warmup:
                times[bname].append(start.elapsed_time(stop))
    for bname in times:
        out["ms"][bname] = statistics.median(times[bname])
    print(f"{layer['name']:16s} {kname:48s} " + " ".join(f"{b}={out['ms'][b]:.4f}ms(err {out['rel_err'][b]:.1e})" for b in out["ms"]), flush=True)
    del xs, ys, res
    torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    sys.exit(main())
