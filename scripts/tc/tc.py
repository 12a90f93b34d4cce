#!/usr/bin/env python3
"""The tensor-core kernels' standalone harness, run on the GPU machine (PyTorch + cuDNN there).

  tc.py check <bf16|f16|tf32> [problems]   correctness on random problems against a float64
                                           reference of the same rounded inputs; cuDNN's error
                                           on the same data beside ours
  tc.py bench <bf16|f16|tf32> <paper|resnet50> [batch]
                                           time our kernels and torch.conv2d (cuDNN, benchmark
                                           mode, channels_last) in the same process, the same way

The kernels come from tc_<type>.cubin (scripts/tc/build.sh), loaded through the driver API
(ctypes, libcuda) into PyTorch's context and launched on PyTorch's stream. Each kernel's
configuration is read from its name (scripts/tc/kernels.cu). Results go to $OUT as JSON.
"""
import ctypes
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", HERE)

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "tf32": torch.float32}
LIMITS = {"bf16": 8e-3, "f16": 1e-3, "tf32": 1e-3}

# ---------------------------------------------------------------------------------------------
# The driver API, through ctypes.

cuda = ctypes.CDLL("libcuda.so.1")


def check_cu(result, what):
    if result != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what}: CUDA error {result} {name.value}")


class ConvParams(ctypes.Structure):
    # common.cuh `struct ConvParams` (112 bytes: ctypes pads the 4 bytes before `crs`).
    _fields_ = [(n, ctypes.c_int) for n in (
        "n", "c", "h", "w", "k", "r", "s", "p", "q", "stride_h", "stride_w", "pad_top", "pad_left",
        "dil_h", "dil_w", "win_w", "has_bias", "layout", "filter_layout", "activation", "has_residual")] + [
        ("alpha", ctypes.c_float), ("beta", ctypes.c_float), ("crs", ctypes.c_longlong), ("npq", ctypes.c_longlong)]


assert ctypes.sizeof(ConvParams) == 112 and ConvParams.crs.offset == 96


class Kernel:
    def __init__(self, module, name, prefix="tc"):
        # A baseline cubin (<prefix>_<type>.cubin) may hold kernels of the same names: its
        # kernels are labelled <prefix>_<name>.
        self.name = name
        self.label = name if prefix == "tc" else f"{prefix}_{name}"
        parts = name.split("_")   # tc, type, BMxBN, wWMxWN, sS, rRB, geometry, vec|any
        self.prefix = prefix
        self.dtype = parts[1]
        self.bm, self.bn = map(int, parts[2].split("x"))
        # w<WM>x<WN>: warps of mma.sync; g<WM>x<WN>: warpgroups of wgmma (WM = BM / warps, WN = BN).
        # p<WM>x<WN>: the same warpgroups, warp-specialised: one more warpgroup that only copies.
        # q<WM>x<WN>: two such teams taking turns (ping-pong), each a whole tile.
        # u<WM>x<WN>, t<WM>x<WN>: p and q with the filter's rows copied by TMA; x<WM>x<WN>,
        # v<WM>x<WN>: p and q with both operands copied by TMA, the windows in im2col mode (the
        # input's and the filter's tensor maps are arguments after ConvParams).
        self.warpgroup = parts[3][0] in "gpqtuvx"
        self.specialized = parts[3][0] in "pqtuvx"
        self.teams = 2 if parts[3][0] in "qtv" else 1
        self.filter_tma = parts[3][0] in "tuvx"
        self.act_tma = parts[3][0] in "vx"
        self.maps = {}
        self.wm, self.wn = map(int, parts[3][1:].split("x"))
        self.stages = int(parts[4][1:])
        self.row_bytes = int(parts[5][1:])
        self.geometry = None
        if parts[6] != "gen":
            rs, st = parts[6][1:].split("s")
            self.geometry = tuple(map(int, rs.split("x"))) + tuple(map(int, st.split("x")))
        self.vector = parts[7] == "vec"
        self.threads = 32 * (self.bm // self.wm) * (self.bn // self.wn)   # g: WN = BN, warps = BM / WM
        self.smem = self.stages * (self.bm + self.bn) * self.row_bytes
        if self.specialized:
            # tile_tensorop.cuh: a staging area of its own (the sums, or what is left of 227 KiB,
            # a power of two), then the pipeline's mbarriers.
            self.threads = self.threads * self.teams + 128
            operands = self.smem
            room = min(self.bm * self.bn * 4, (227 * 1024 - operands - 16 * self.stages) // self.teams)
            staging = 1
            while staging * 2 <= room:
                staging *= 2
            self.smem = operands + self.teams * staging + 16 * self.stages
        self.chunk = 16 // (2 if self.dtype in ("bf16", "f16") else 4)
        self.fn = ctypes.c_void_p()
        check_cu(cuda.cuModuleGetFunction(ctypes.byref(self.fn), module, name.encode()), name)
        # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8: above 48 KiB, the runtime must ask.
        check_cu(cuda.cuFuncSetAttribute(self.fn, 8, self.smem), f"{name}: dynamic shared memory {self.smem}")
        regs, local, maxthreads = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        cuda.cuFuncGetAttribute(ctypes.byref(regs), 4, self.fn)
        cuda.cuFuncGetAttribute(ctypes.byref(local), 3, self.fn)
        cuda.cuFuncGetAttribute(ctypes.byref(maxthreads), 0, self.fn)
        self.regs, self.local = regs.value, local.value
        assert maxthreads.value >= self.threads, (name, maxthreads.value, self.threads)
        blocks = ctypes.c_int()
        check_cu(cuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(blocks), self.fn, self.threads,
                                                                  ctypes.c_size_t(self.smem)), "occupancy")
        self.blocks_per_sm = blocks.value

    def applies(self, pb):
        if self.vector and pb["c"] % self.chunk != 0:
            return False
        if self.act_tma and pb["c"] % (self.row_bytes // 2) != 0:   # a stage: BK channels of one tap
            return False
        if self.geometry is not None:
            if (pb["r"], pb["s"], pb["sh"], pb["sw"]) != self.geometry or (pb["dh"], pb["dw"]) != (1, 1):
                return False
        return True

    def launch(self, x, f, bias, res, y, prm, stream):
        tiles = ((prm.npq + self.bm - 1) // self.bm) * ((prm.k + self.bn - 1) // self.bn)
        if self.specialized:   # persistent blocks: as many as fit on the GPU at once
            tiles = min(tiles, SMS * self.blocks_per_sm)
        ptrs = [ctypes.c_void_p(t.data_ptr() if t is not None else 0) for t in (x, f, bias, res, y)]
        if self.filter_tma:
            fmap = self.filter_map(f, prm)
            amap = self.input_map(x, prm) if self.act_tma else fmap   # (unused without act_tma)
            args = (ctypes.c_void_p * 8)(*[ctypes.addressof(p) for p in ptrs], ctypes.addressof(prm),
                                         ctypes.addressof(amap), ctypes.addressof(fmap))
        else:
            args = (ctypes.c_void_p * 6)(*[ctypes.addressof(p) for p in ptrs], ctypes.addressof(prm))
        check_cu(cuda.cuLaunchKernel(self.fn, tiles, 1, 1, self.threads, 1, 1, self.smem, ctypes.c_void_p(stream),
                                     args, None), f"launch {self.name}")


    def filter_map(self, f, prm):
        """The tensor map of the KRSC filter as a K x CRS matrix (tma.cuh): boxes of one stage's
        row bytes x BN rows, the rows' swizzle (128- or 64-byte), zeros outside."""
        key = (f.data_ptr(), prm.k, prm.crs)
        if key not in self.maps:
            fmap = (ctypes.c_uint64 * 16)()
            dims = (ctypes.c_uint64 * 2)(prm.crs, prm.k)
            strides = (ctypes.c_uint64 * 1)(prm.crs * f.element_size())
            box = (ctypes.c_uint32 * 2)(self.row_bytes // f.element_size(), self.bn)
            ones = (ctypes.c_uint32 * 2)(1, 1)
            kind = {torch.bfloat16: 9, torch.float16: 6}[f.dtype]   # CU_TENSOR_MAP_DATA_TYPE_*
            # interleave none, swizzle 128B (3) or 64B (2), L2 promotion 128B (2), OOB fill zeros (0)
            check_cu(cuda.cuTensorMapEncodeTiled(ctypes.byref(fmap), kind, 2, ctypes.c_void_p(f.data_ptr()), dims,
                                                 strides, box, ones, 0, 3 if self.row_bytes == 128 else 2, 2, 0), f"{self.name}: filter tensor map")
            self.maps[key] = fmap
        return self.maps[key]


    def input_map(self, x, prm):
        """The im2col tensor map of the NHWC input (tma.cuh `tma_load_im2col_4d`): BM pixels x
        one stage's channels a box, the window origins' bounding box from -pad to
        pad - (R - 1) * dilation past the far edge, the convolution's strides as the traversal
        strides, the rows' swizzle, zeros outside."""
        pad_bottom = (prm.p - 1) * prm.stride_h + (prm.r - 1) * prm.dil_h + 1 - prm.h - prm.pad_top
        pad_right = (prm.q - 1) * prm.stride_w + (prm.s - 1) * prm.dil_w + 1 - prm.w - prm.pad_left
        key = (x.data_ptr(), prm.n, prm.c, prm.h, prm.w, prm.stride_h, prm.stride_w, prm.pad_top, prm.pad_left,
               pad_bottom, pad_right, prm.r, prm.s, prm.dil_h, prm.dil_w)
        if key not in self.maps:
            amap = (ctypes.c_uint64 * 16)()
            e = x.element_size()
            dims = (ctypes.c_uint64 * 4)(prm.c, prm.w, prm.h, prm.n)
            strides = (ctypes.c_uint64 * 3)(prm.c * e, prm.w * prm.c * e, prm.h * prm.w * prm.c * e)
            lower = (ctypes.c_int * 2)(-prm.pad_left, -prm.pad_top)
            upper = (ctypes.c_int * 2)(pad_right - (prm.s - 1) * prm.dil_w, pad_bottom - (prm.r - 1) * prm.dil_h)
            steps = (ctypes.c_uint32 * 4)(1, prm.stride_w, prm.stride_h, 1)
            kind = {torch.bfloat16: 9, torch.float16: 6}[x.dtype]
            check_cu(cuda.cuTensorMapEncodeIm2col(ctypes.byref(amap), kind, 4, ctypes.c_void_p(x.data_ptr()), dims,
                                                  strides, lower, upper, self.row_bytes // e, self.bm, steps,
                                                  0, 3 if self.row_bytes == 128 else 2, 2, 0), f"{self.name}: input tensor map {key[1:]}")
            self.maps[key] = amap
        return self.maps[key]


SMS = None


def load_module(path):
    data = open(path, "rb").read()
    module = ctypes.c_void_p()
    check_cu(cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(data)), f"load {path}")
    return module


def load_kernels(dtype, baselines=False):
    """The kernels of tc_<dtype>.cubin; with baselines, also those of any <prefix>_<dtype>.cubin
    beside it (an earlier version of the kernels, built from its commit, timed in the same
    process as a reference)."""
    torch.zeros(1, device="cuda")   # PyTorch's primary context, current on this thread
    global SMS
    SMS = torch.cuda.get_device_properties(0).multi_processor_count
    prefixes = ["tc"]
    if baselines:
        prefixes += sorted(f.split("_")[0] for f in os.listdir(HERE)
                           if f.endswith(f"_{dtype}.cubin") and not f.startswith("tc_"))
    kernels = []
    for prefix in prefixes:
        module = load_module(os.path.join(HERE, f"{prefix}_{dtype}.cubin"))
        names = [l.strip() for l in open(os.path.join(HERE, f"{prefix}_{dtype}.names")) if l.strip()]
        kernels += [Kernel(module, n, prefix) for n in names]
    return kernels


# ---------------------------------------------------------------------------------------------
# Problems.

ACTS = {0: "identity", 1: "relu", 2: "silu", 3: "gelu", 4: "gelu_tanh"}


def out_size(h, r, sh, dh, p0, p1):
    return (h + p0 + p1 - dh * (r - 1) - 1) // sh + 1


def make_problem(n, c, h, w, k, r, s, sh=1, sw=1, pt=0, pb=0, pl=0, pr=0, dh=1, dw=1,
                 bias=False, act=0, residual=False, alpha=1.0, beta=0.0):
    p = out_size(h, r, sh, dh, pt, pb)
    q = out_size(w, s, sw, dw, pl, pr)
    return dict(n=n, c=c, h=h, w=w, k=k, r=r, s=s, sh=sh, sw=sw, pt=pt, pb=pb, pl=pl, pr=pr, dh=dh, dw=dw,
                p=p, q=q, bias=bias, act=act, residual=residual, alpha=alpha, beta=beta)


def params(pb):
    prm = ConvParams()
    for f in ("n", "c", "h", "w", "k", "r", "s", "p", "q"):
        setattr(prm, f, pb[f])
    prm.stride_h, prm.stride_w = pb["sh"], pb["sw"]
    prm.pad_top, prm.pad_left = pb["pt"], pb["pl"]
    prm.dil_h, prm.dil_w = pb["dh"], pb["dw"]
    prm.win_w = (pb["q"] - 1) * pb["sw"] + (pb["s"] - 1) * pb["dw"] + 1
    prm.has_bias = int(pb["bias"])
    prm.layout = 1          # IM2WIN_NHWC
    prm.filter_layout = 1   # IM2WIN_KRSC
    prm.activation = pb["act"]
    prm.has_residual = int(pb["residual"])
    prm.alpha, prm.beta = pb["alpha"], pb["beta"]
    prm.crs = pb["c"] * pb["r"] * pb["s"]
    prm.npq = pb["n"] * pb["p"] * pb["q"]
    return prm


def random_problem(rng):
    """A random valid problem: odd sizes, C = 3 and other C not multiple of 8, padding (also
    asymmetric), stride, dilation, K not a multiple of any tile, and random epilogues."""
    while True:
        kind = rng.random()
        if kind < 0.2:      # the fixed 3x3 / 1x1 geometries
            r, s, sh, sw, dh, dw = rng.choice([(3, 3, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1)])
        elif kind < 0.3:    # the stems' fixed geometries
            r, s, sh, sw, dh, dw = rng.choice([(11, 11, 4, 4, 1, 1), (7, 7, 2, 2, 1, 1)])
        else:
            r, s = rng.randint(1, 7), rng.randint(1, 7)
            sh, sw = rng.randint(1, 3), rng.randint(1, 3)
            dh, dw = (1, 1) if rng.random() < 0.6 else (rng.randint(1, 3), rng.randint(1, 3))
        c = rng.choice([1, 2, 3, 3, 4, 5, 7, 8, 8, 12, 16, 16, 24, 32, 32, 40, 48, 64, 64, 72, 96, 128, 136, 256])
        k = rng.choice([1, 3, 8, 16, 24, 40, 63, 64, 72, 96, 100, 128, 130, 192, 200, 256, 264])
        n = rng.choice([1, 1, 2, 3, 5])
        h, w = rng.randint(1, 40), rng.randint(1, 40)
        pads = [rng.choice([0, 0, 1, 2, 3]) for _ in range(4)]
        if rng.random() < 0.5:
            pads = [pads[0]] * 4
        ep = rng.random()
        bias = ep < 0.5
        act = rng.choice([0, 1, 2, 3, 4]) if ep < 0.5 else 0
        residual = 0.3 < ep < 0.5
        alpha = rng.choice([1.0, 1.0, 0.5, -1.25]) if ep < 0.5 else 1.0
        beta = rng.choice([1.0, 0.75]) if residual else 0.0
        pb = make_problem(n, c, h, w, k, r, s, sh, sw, pads[0], pads[1], pads[2], pads[3], dh, dw,
                          bias, act, residual, alpha, beta)
        if pb["p"] >= 1 and pb["q"] >= 1 and pb["n"] * pb["p"] * pb["q"] * k * c * r * s < 4e8:
            return pb


def describe(pb):
    s = (f"N{pb['n']} C{pb['c']} {pb['h']}x{pb['w']} K{pb['k']} {pb['r']}x{pb['s']} s{pb['sh']},{pb['sw']} "
         f"d{pb['dh']},{pb['dw']} pad{pb['pt']},{pb['pb']},{pb['pl']},{pb['pr']} -> {pb['p']}x{pb['q']}")
    if pb["bias"] or pb["residual"] or pb["act"] or pb["alpha"] != 1.0:
        s += f" ep(a={pb['alpha']},bias={int(pb['bias'])},res={int(pb['residual'])}*{pb['beta']},{ACTS[pb['act']]})"
    return s


def tensors(pb, dtype, gen):
    """Random inputs in [-1, 1], rounded to the type (TF32: float32 tensors)."""
    def rnd(*shape):
        return (torch.rand(*shape, device="cuda", generator=gen, dtype=torch.float32) * 2 - 1).to(dtype)
    x = rnd(pb["n"], pb["h"], pb["w"], pb["c"])
    f = rnd(pb["k"], pb["r"], pb["s"], pb["c"])
    bias = rnd(pb["k"]) if pb["bias"] else None
    res = rnd(pb["n"], pb["p"], pb["q"], pb["k"]) if pb["residual"] else None
    return x, f, bias, res


def activation(act, v):
    if act == 1:
        return torch.relu(v)
    if act == 2:
        return v * torch.sigmoid(v)
    if act == 3:
        return 0.5 * v * (1 + torch.erf(v / math.sqrt(2)))
    if act == 4:
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    return v


def torch_conv(pb, x, f, dtype=None):
    """NHWC output of conv2d on NHWC x, KRSC f (views as NCHW channels_last), in x's dtype or `dtype`."""
    xt = x.permute(0, 3, 1, 2)
    ft = f.permute(0, 3, 1, 2)
    if dtype is not None:
        xt, ft = xt.to(dtype), ft.to(dtype)
    xt = F.pad(xt, (pb["pl"], pb["pr"], pb["pt"], pb["pb"]))
    y = F.conv2d(xt, ft, stride=(pb["sh"], pb["sw"]), dilation=(pb["dh"], pb["dw"]))
    return y.permute(0, 2, 3, 1)


def epilogue(pb, acc, bias, res):
    v = pb["alpha"] * acc
    if bias is not None:
        v = v + bias.to(acc.dtype)
    if res is not None:
        v = v + pb["beta"] * res.to(acc.dtype)
    return activation(pb["act"], v)


def rel_err(out, ref):
    out = out.double()
    if not torch.isfinite(out).all():
        return float("nan")
    return (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()


GUARD = 4096


def run_ours(kernel, pb, x, f, bias, res, dtype):
    total = pb["n"] * pb["p"] * pb["q"] * pb["k"]
    buf = torch.full((total + GUARD,), float("nan"), device="cuda", dtype=dtype)
    y = buf[:total]
    kernel.launch(x, f, bias, res, y, params(pb), torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    guard_ok = bool(torch.isnan(buf[total:]).all().item())
    unwritten = int(torch.isnan(y).sum().item())
    return y.view(pb["n"], pb["p"], pb["q"], pb["k"]), guard_ok, unwritten


def check(dtype_name, count):
    dtype = DTYPES[dtype_name]
    torch.backends.cudnn.allow_tf32 = dtype_name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = False
    kernels = load_kernels(dtype_name)
    rng = random.Random({"bf16": 12, "f16": 13, "tf32": 14}[dtype_name])
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    limit = LIMITS[dtype_name]
    problems = [random_problem(rng) for _ in range(count)]
    # A few larger ones: many tiles and long reductions, and the stems' shapes.
    problems += [
        make_problem(4, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1),
        # C = 64 and 128 (the im2col TMA's stages) with stride, dilation, asymmetric padding, odd sizes.
        make_problem(3, 64, 23, 19, 72, 3, 3, 2, 2, 1, 2, 0, 1, 2, 2, bias=True, act=2),
        make_problem(2, 128, 17, 30, 100, 5, 3, 1, 3, 2, 0, 1, 1, 1, 2, residual=True, beta=0.75),
        make_problem(5, 64, 9, 9, 64, 7, 7, 1, 1, 3, 3, 3, 3),
        make_problem(2, 512, 14, 14, 512, 3, 3, 1, 1, 1, 1, 1, 1, bias=True, act=1),
        make_problem(2, 256, 28, 28, 1024, 1, 1, 2, 2),
        make_problem(2, 3, 227, 227, 96, 11, 11, 4, 4),
        make_problem(2, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 3, 3, bias=True, act=1),
        make_problem(3, 1024, 7, 7, 2048, 1, 1, 1, 1, bias=True, act=1, residual=True, beta=1.0),
    ]
    results, worst, worst_cudnn, failures, runs = [], 0.0, 0.0, 0, 0
    t_start = time.time()
    for i, pb in enumerate(problems):
        x, f, bias, res = tensors(pb, dtype, gen)
        ref = epilogue(pb, torch_conv(pb, x, f, torch.float64), bias, res)
        # cuDNN at the same precision on the same data: its convolution, then the epilogue in
        # float32, rounded to the type.
        try:
            cud = epilogue(pb, torch_conv(pb, x, f).float(), bias, res).to(dtype)
            e_cudnn = rel_err(cud, ref)
        except RuntimeError as e:   # e.g. a shape cuDNN does not take
            e_cudnn = float("nan")
        row = dict(problem=describe(pb), cudnn=e_cudnn, kernels={})
        for kern in kernels:
            if not kern.applies(pb):
                continue
            y, guard_ok, unwritten = run_ours(kern, pb, x, f, bias, res, dtype)
            e = rel_err(y, ref)
            ok = guard_ok and unwritten == 0 and e == e and e <= limit
            runs += 1
            if not ok:
                failures += 1
                print(f"FAIL {kern.name} {describe(pb)}: err {e:.3g} (cuDNN {e_cudnn:.3g}) guard_ok={guard_ok} "
                      f"unwritten={unwritten}", flush=True)
                if failures <= 3:   # where the wrong outputs are
                    bad = ((y.double() - ref).abs() > 0.05 * ref.abs().max()) | torch.isnan(y)
                    idx = bad.nonzero()
                    print("   first bad (n,p,q,k):", idx[:8].tolist(), "count", idx.shape[0], flush=True)
            else:
                worst = max(worst, e)
            row["kernels"][kern.label] = dict(err=e, guard_ok=guard_ok, unwritten=unwritten, ok=ok)
        if e_cudnn == e_cudnn:
            worst_cudnn = max(worst_cudnn, e_cudnn)
        results.append(row)
    summary = dict(dtype=dtype_name, problems=len(problems), kernel_runs=runs, failures=failures,
                   worst_err=worst, worst_cudnn_err=worst_cudnn, limit=limit, seconds=time.time() - t_start,
                   device=torch.cuda.get_device_name(),
                   kernels={k.label: dict(regs=k.regs, local=k.local, smem=k.smem, blocks_per_sm=k.blocks_per_sm)
                            for k in kernels})
    # Our error against cuDNN's, problem by problem (the issue asks for at most 1.5x cuDNN's).
    ratios = [v["err"] / r["cudnn"] for r in results for v in r["kernels"].values()
              if r["cudnn"] == r["cudnn"] and r["cudnn"] > 0 and v["err"] == v["err"]]
    summary["max_err_over_cudnn"] = max(ratios) if ratios else None
    summary["median_err_over_cudnn"] = sorted(ratios)[len(ratios) // 2] if ratios else None
    print(f"CHECK {dtype_name}: {len(problems)} problems, {runs} kernel runs, {failures} failures, worst err "
          f"{worst:.3g} (limit {limit:g}), cuDNN worst {worst_cudnn:.3g}, ours/cuDNN max "
          f"{summary['max_err_over_cudnn']:.3g} median {summary['median_err_over_cudnn']:.3g}, "
          f"{summary['seconds']:.1f} s", flush=True)
    with open(os.path.join(OUT, f"check-{dtype_name}.json"), "w") as fh:
        json.dump(dict(summary=summary, results=results), fh, indent=1)
    return failures == 0


# ---------------------------------------------------------------------------------------------
# Timing.

PAPER = [(3, 227, 96, 11, 4), (3, 231, 96, 11, 4), (3, 227, 64, 7, 2), (32, 224, 64, 7, 2), (96, 24, 256, 5, 1),
         (256, 12, 512, 3, 1), (3, 224, 64, 3, 1), (64, 112, 128, 3, 1), (64, 56, 64, 3, 1), (128, 28, 128, 3, 1),
         (256, 14, 256, 3, 1), (512, 7, 512, 3, 1)]
RESNET50 = [(3, 224, 64, 7, 2, 3, 1), (64, 56, 64, 1, 1, 0, 1), (64, 56, 64, 3, 1, 1, 3), (64, 56, 256, 1, 1, 0, 4),
            (256, 56, 64, 1, 1, 0, 2), (256, 56, 128, 1, 1, 0, 1), (128, 56, 128, 3, 2, 1, 1),
            (128, 28, 512, 1, 1, 0, 4), (256, 56, 512, 1, 2, 0, 1), (512, 28, 128, 1, 1, 0, 3),
            (128, 28, 128, 3, 1, 1, 3), (512, 28, 256, 1, 1, 0, 1), (256, 28, 256, 3, 2, 1, 1),
            (256, 14, 1024, 1, 1, 0, 6), (512, 28, 1024, 1, 2, 0, 1), (1024, 14, 256, 1, 1, 0, 5),
            (256, 14, 256, 3, 1, 1, 5), (1024, 14, 512, 1, 1, 0, 1), (512, 14, 512, 3, 2, 1, 1),
            (512, 7, 2048, 1, 1, 0, 3), (1024, 14, 2048, 1, 2, 0, 1), (2048, 7, 512, 1, 1, 0, 2),
            (512, 7, 512, 3, 1, 1, 2)]


def suite(name, batch):
    if name == "paper":
        return [(f"conv{i + 1}", make_problem(batch, c, h, h, k, r, r, st, st), 1)
                for i, (c, h, k, r, st) in enumerate(PAPER)]
    return [(f"{c}x{h}->{k} {r}x{r}/{st}", make_problem(batch, c, h, h, k, r, r, st, st, pd, pd, pd, pd), cnt)
            for (c, h, k, r, st, pd, cnt) in RESNET50]


ROTATE_BYTES = 180 * 2 ** 20
REPLAYS = 20


def time_graph(body, launches):
    """Median time of one launch: `launches` calls of body(i) captured in a CUDA graph, replayed
    REPLAYS times (after a warm-up replay), each replay timed with events."""
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        body(0)   # warm-up outside the capture (cuDNN's benchmark search, allocations)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    with torch.cuda.graph(g):
        for i in range(launches):
            body(i)
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPLAYS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / launches)
    del g
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def timed_kernels(kernels, pb):
    """The kernels worth timing on pb: of each tile, the most specialised one that applies (a
    fixed geometry over the generic one)."""
    best = {}
    # A baseline's kernel only where the current kernels have its tile and geometry (A/B).
    current = {(k.bm, k.bn, k.wm, k.wn, k.stages, k.row_bytes, k.vector, k.geometry)
               for k in kernels if k.prefix == "tc"}
    for k in kernels:
        if k.prefix != "tc" and (k.bm, k.bn, k.wm, k.wn, k.stages, k.row_bytes, k.vector, k.geometry) not in current:
            continue
        if k.applies(pb):
            tile = (k.prefix, k.bm, k.bn, k.wm, k.wn, k.warpgroup, k.specialized, k.teams, k.filter_tma, k.act_tma,
                    k.stages, k.row_bytes, k.vector)
            if tile not in best or (best[tile].geometry is None and k.geometry is not None):
                best[tile] = k
    # A vector kernel beats the element-wise one of the same tile: keep only vector ones when any.
    if any(k.vector for k in best.values()):
        return [k for k in best.values() if k.vector]
    return list(best.values())


def bench(dtype_name, suite_name, batch, deadline, only=None):
    dtype = DTYPES[dtype_name]
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = dtype_name == "tf32"
    kernels = load_kernels(dtype_name, baselines=True)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(99)
    rows = []
    for index, (lname, pb, count) in enumerate(suite(suite_name, batch)):
        if only is not None and index not in only:
            continue
        if time.time() > deadline:
            print(f"  (deadline: skipping {lname} and the rest)", flush=True)
            break
        esize = torch.tensor([], dtype=dtype).element_size()
        in_bytes = (pb["n"] * pb["h"] * pb["w"] * pb["c"] + pb["k"] * pb["r"] * pb["s"] * pb["c"]) * esize
        out_elems = pb["n"] * pb["p"] * pb["q"] * pb["k"]
        sets = max(2, math.ceil(ROTATE_BYTES / in_bytes))
        sets = min(sets, max(2, int(6e9 // (in_bytes + out_elems * esize))))
        launches = sets * max(1, math.ceil(8 / sets))
        data = [tensors(pb, dtype, gen)[:2] for _ in range(sets)]
        ys = [torch.empty(out_elems, device="cuda", dtype=dtype) for _ in range(sets)]
        flops = 2.0 * out_elems * pb["c"] * pb["r"] * pb["s"]
        prm = params(pb)
        row = dict(layer=lname, count=count, problem=describe(pb), flops=flops, sets=sets, launches=launches, ours={})
        stream_of = lambda: torch.cuda.current_stream().cuda_stream
        for kern in timed_kernels(kernels, pb):
            def body(i, kern=kern):
                x, f = data[i % sets]
                kern.launch(x, f, None, None, ys[i % sets], prm, stream_of())
            med, lo, hi = time_graph(body, launches)
            row["ours"][kern.label] = dict(ms=med, min=lo, max=hi, tflops=flops / med / 1e9)
        # torch / cuDNN, channels_last views of the same NHWC data.
        xs = [(x.permute(0, 3, 1, 2), f.permute(0, 3, 1, 2)) for x, f in data]
        outs = [None] * sets

        def tbody(i):
            xt, ft = xs[i % sets]
            outs[i % sets] = F.conv2d(xt, ft, stride=(pb["sh"], pb["sw"]), padding=(pb["pt"], pb["pl"]))
        med, lo, hi = time_graph(tbody, launches)
        row["torch"] = dict(ms=med, min=lo, max=hi, tflops=flops / med / 1e9)
        best = min(((n, v) for n, v in row["ours"].items() if n.startswith("tc_")), key=lambda kv: kv[1]["ms"])
        base = [v["ms"] for n, v in row["ours"].items() if not n.startswith("tc_")]
        row["baseline_ms"] = min(base) if base else None
        row["best"] = best[0]
        # The best of each MMA (mma.sync warps "_w", the wgmma warpgroup "_g").
        for tag in ("_w", "_g", "_p", "_q", "_u", "_t", "_x", "_v"):
            kinds = [(n, v["ms"]) for n, v in row["ours"].items() if n.startswith("tc_") and n.split("_")[3][0] == tag[1]]
            if kinds:
                n, ms = min(kinds, key=lambda kv: kv[1])
                row["best" + tag] = dict(name=n, ms=ms)
        row["ratio"] = row["torch"]["ms"] / best[1]["ms"]   # > 1: ours faster
        # Same answer as cuDNN on the timed data (a sanity check of the timed path).
        torch.cuda.synchronize()
        got = ys[0].view(pb["n"], pb["p"], pb["q"], pb["k"]).double()
        ref = torch_conv(pb, data[0][0], data[0][1], torch.float64)
        row["check_err"] = rel_err(got, ref)
        print(f"  {lname:24s} {pb['n']:4d} ours {best[1]['ms']:8.4f} ms {best[1]['tflops']:7.1f} TF/s "
              f"({best[0].split('_', 2)[2]})  torch {row['torch']['ms']:8.4f} ms "
              f"{row['torch']['tflops']:7.1f} TF/s  x{row['ratio']:.2f}  err {row['check_err']:.2g}"
              + (f"  baseline {row['baseline_ms']:.4f} ms" if row["baseline_ms"] else "")
              + "".join(f"  best{t} {row['best' + t]['ms']:.4f}" for t in ("_w", "_g", "_p", "_q") if "best" + t in row), flush=True)
        rows.append(row)
        del data, ys, xs, outs
        torch.cuda.empty_cache()
    def total(key):
        if key == "ours":
            return sum(r["count"] * r["ours"][r["best"]]["ms"] for r in rows)
        if key == "baseline":
            return sum(r["count"] * r["baseline_ms"] for r in rows) if all(r["baseline_ms"] for r in rows) else None
        return sum(r["count"] * r["torch"]["ms"] for r in rows)
    summary = dict(dtype=dtype_name, suite=suite_name, batch=batch, device=torch.cuda.get_device_name(),
                   layers=len(rows), total_ours_ms=total("ours"), total_torch_ms=total("torch"),
                   total_baseline_ms=total("baseline") if rows else None,
                   torch_version=torch.__version__, cudnn=torch.backends.cudnn.version())
    print(f"  total (x count): ours {summary['total_ours_ms']:.3f} ms, torch {summary['total_torch_ms']:.3f} ms",
          flush=True)
    tag = "" if only is None else "-" + "-".join(str(i) for i in sorted(only))
    with open(os.path.join(OUT, f"bench-{suite_name}-{dtype_name}-n{batch}{tag}.json"), "w") as fh:
        json.dump(dict(summary=summary, rows=rows), fh, indent=1)


if __name__ == "__main__":
    cmd, dtype_name = sys.argv[1], sys.argv[2]
    if cmd == "check":
        ok = check(dtype_name, int(sys.argv[3]) if len(sys.argv) > 3 else 100)
        sys.exit(0 if ok else 1)
    elif cmd == "bench":
        seconds = float(os.environ.get("TC_BENCH_SECONDS", "60"))
        only = set(int(i) for i in sys.argv[5].split(",")) if len(sys.argv) > 5 else None
        bench(dtype_name, sys.argv[3], int(sys.argv[4]), time.time() + seconds, only)
    elif cmd == "quick":
        # One process (no start-up per step): every type's check, then the given types' stems
        # (the element-wise loader: paper conv1, 2, 3, 7 and ResNet-50's first layer).
        ok = all([check(t, 150) for t in ("bf16", "f16", "tf32")])
        for t in dtype_name.split(","):
            bench(t, "paper", 128, time.time() + 30, {0, 1, 2, 6})
            bench(t, "resnet50", 32, time.time() + 10, {0})
        sys.exit(0 if ok else 1)
