#!/usr/bin/env python3
"""PyTorch's eager forward of the networks of im2win-candle's `networks` example.

    networks --network resnet50 --dtype bf16 --batch 32 --save-ref ref.npy --out candle.json
    python3 bench/torch_networks.py --network resnet50 --dtype bf16 --batch 32 \
        --ref ref.npy --out torch.json                                 # method "torch"
    python3 bench/merge_networks.py --out bench/results/candle-resnet50-bf16-n32.json \
        candle.json cudnn.json torch.json

The same three networks as candle/examples/networks (ResNet-50 and MobileNetV2 as torchvision
defines them, the YOLOv8s backbone as Ultralytics' yolov8.yaml at scale s), written with
plain torch.nn modules (no torchvision, no ultralytics), with the same weights: every tensor
comes from the same generator as the Rust example's (`uniform`: splitmix64 keyed by the
tensor's name, float32), and each BatchNorm is folded into its convolution's weight and bias
with the same float32 operations as candle_nn's `absorb_bn`, so the convolutions are
`nn.Conv2d(..., bias=True)` holding identical values. The input is the same too, so the
output can be checked against the candle output the example saved (`--ref`, float32 .npy):
`rel_err` is ‖torch − candle‖ / ‖candle‖.

On CUDA: bf16 and f16 as channels_last tensors and weights, f32 strict (TF32 off for
convolutions and matmuls) as contiguous NCHW unless --layout says otherwise;
`torch.backends.cudnn.benchmark = True`; `torch.inference_mode()`. Timing as the example's:
two warm-up forwards (cuDNN's search happens in the first), then rounds of `reps` forwards
followed by one `torch.cuda.synchronize()`, wall clock per forward, median (min, max) over
the rounds; `reps` fills --round-s seconds and the rounds are cut to fit --budget seconds (at
least 3). --device cpu runs the same on the CPU (for checks; method "torch-cpu").
"""

import argparse
import ast
import json
import math
import sys
import time

import torch

# ---------------------------------------------------------------------------------------------
# The generator shared with candle/examples/networks/common.rs (`uniform`), in torch's int64
# (whose products and sums wrap like the u64 ones; the shifts are made logical by a mask).


def signed(c):
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN = signed(0x9E3779B97F4A7C15)
MIX1 = signed(0xBF58476D1CE4E5B9)
MIX2 = signed(0x94D049BB133111EB)


def shr(z, k):
    return (z >> k) & ((1 << (64 - k)) - 1)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return signed(h)


def f32(v):
    """A float32 scalar (so that every operation below is a float32 one, as in the example)."""
    return torch.tensor(v, dtype=torch.float32)


def uniform(name, shape, lo, hi):
    """float32 tensor of `shape`: element i is lo + (hi - lo) * u_i, u_i the top 24 bits of
    splitmix64(fnv1a64(name) + (i + 1) * golden), in [0, 1)."""
    n = math.prod(shape)
    z = torch.arange(1, n + 1, dtype=torch.int64) * GOLDEN + fnv1a64(name)
    z = (z ^ shr(z, 30)) * MIX1
    z = (z ^ shr(z, 27)) * MIX2
    z = z ^ shr(z, 31)
    u = shr(z, 40).to(torch.float32) * f32(1.0 / 16777216.0)
    lo = lo if isinstance(lo, torch.Tensor) else f32(lo)
    hi = hi if isinstance(hi, torch.Tensor) else f32(hi)
    return (lo + (hi - lo) * u).reshape(shape)


BN_EPS = f32(1e-5)


def folded(name, c_in, c_out, k, groups, gamma):
    """The convolution's filter and the bias of its folded BatchNorm, as the example makes them
    (Kaiming-uniform filter; BatchNorm scale about `gamma`), in float32."""
    fan_in = c_in // groups * k * k
    bound = torch.sqrt(f32(6.0) / f32(float(fan_in)))
    w = uniform(f"{name}.weight", (c_out, c_in // groups, k, k), -bound, bound)
    mean = uniform(f"{name}.bn.running_mean", (c_out,), -0.1, 0.1)
    var = uniform(f"{name}.bn.running_var", (c_out,), 0.9, 1.1)
    g = uniform(f"{name}.bn.weight", (c_out,), f32(0.9) * f32(gamma), f32(1.1) * f32(gamma))
    beta = uniform(f"{name}.bn.bias", (c_out,), -0.1, 0.1)
    # candle_nn's absorb_bn: std = gamma / sqrt(var + eps); w * std; beta - std * mean.
    std = g / torch.sqrt(var + BN_EPS)
    return w * std.reshape(-1, 1, 1, 1), beta - std * mean


def load_npy(path):
    """A float32 .npy file (as candle writes it) as a tensor; no numpy needed."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise SystemExit(f"{path}: not a .npy file")
        major = f.read(2)[0]
        header_len = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        header = ast.literal_eval(f.read(header_len).decode("latin1"))
        data = bytearray(f.read())
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise SystemExit(f"{path}: {header}: want little-endian float32, C order")
    return torch.frombuffer(data, dtype=torch.float32).reshape(header["shape"])


# ---------------------------------------------------------------------------------------------
# The networks.

def build(network):
    nn = torch.nn

    class ConvBN(nn.Module):
        """Convolution (padding k // 2) with its BatchNorm folded into the bias, activation."""

        def __init__(self, name, c_in, c_out, k, stride=1, groups=1, act=None, gamma=1.0):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=True)
            w, b = folded(name, c_in, c_out, k, groups, gamma)
            with torch.no_grad():
                self.conv.weight.copy_(w)
                self.conv.bias.copy_(b)
            self.act = {None: nn.Identity(), "relu": nn.ReLU(inplace=True),
                        "relu6": nn.ReLU6(inplace=True), "silu": nn.SiLU()}[act]

        def forward(self, x):
            return self.act(self.conv(x))

    def linear(name, c_in, c_out):
        fc = nn.Linear(c_in, c_out)
        bound = f32(1.0) / torch.sqrt(f32(float(c_in)))
        with torch.no_grad():
            fc.weight.copy_(uniform(f"{name}.weight", (c_out, c_in), -bound, bound))
            fc.bias.copy_(uniform(f"{name}.bias", (c_out,), -bound, bound))
        return fc

    if network == "resnet50":
        branch_gamma = 0.3

        class Bottleneck(nn.Module):
            def __init__(self, name, c_in, width, stride):
                super().__init__()
                c_out = width * 4
                self.conv1 = ConvBN(f"{name}.conv1", c_in, width, 1, act="relu")
                self.conv2 = ConvBN(f"{name}.conv2", width, width, 3, stride, act="relu")
                self.conv3 = ConvBN(f"{name}.conv3", width, c_out, 1, gamma=branch_gamma)
                self.downsample = (ConvBN(f"{name}.downsample", c_in, c_out, 1, stride)
                                   if stride != 1 or c_in != c_out else None)
                self.relu = nn.ReLU(inplace=True)

            def forward(self, x):
                identity = x if self.downsample is None else self.downsample(x)
                out = self.conv3(self.conv2(self.conv1(x)))
                out += identity
                return self.relu(out)

        class ResNet50(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = ConvBN("conv1", 3, 64, 7, 2, act="relu")
                self.maxpool = nn.MaxPool2d(3, 2, 1)
                blocks, c_in = [], 64
                for i, (width, count, stride) in enumerate(
                        [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
                    for j in range(count):
                        blocks.append(Bottleneck(f"layer{i + 1}.{j}", c_in, width,
                                                 stride if j == 0 else 1))
                        c_in = width * 4
                self.blocks = nn.Sequential(*blocks)
                self.fc = linear("fc", 2048, 1000)

            def forward(self, x):
                x = self.blocks(self.maxpool(self.conv1(x)))
                return [self.fc(x.mean((2, 3)))]

        return ResNet50()

    if network == "mobilenetv2":
        branch_gamma = 0.3

        class InvertedResidual(nn.Module):
            def __init__(self, name, c_in, c_out, stride, t):
                super().__init__()
                hidden = c_in * t
                self.residual = stride == 1 and c_in == c_out
                layers = []
                if t != 1:
                    layers.append(ConvBN(f"{name}.expand", c_in, hidden, 1, act="relu6"))
                layers.append(ConvBN(f"{name}.depthwise", hidden, hidden, 3, stride,
                                     groups=hidden, act="relu6"))
                layers.append(ConvBN(f"{name}.project", hidden, c_out, 1,
                                     gamma=branch_gamma if self.residual else 1.0))
                self.conv = nn.Sequential(*layers)

            def forward(self, x):
                return x + self.conv(x) if self.residual else self.conv(x)

        class MobileNetV2(nn.Module):
            def __init__(self):
                super().__init__()
                layers, c_in = [ConvBN("stem", 3, 32, 3, 2, act="relu6")], 32
                n_blocks = 0
                for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
                    for j in range(n):
                        layers.append(InvertedResidual(f"blocks.{n_blocks}", c_in, c,
                                                       s if j == 0 else 1, t))
                        n_blocks += 1
                        c_in = c
                layers.append(ConvBN("head", 320, 1280, 1, act="relu6"))
                self.features = nn.Sequential(*layers)
                self.classifier = linear("classifier", 1280, 1000)

            def forward(self, x):
                return [self.classifier(self.features(x).mean((2, 3)))]

        return MobileNetV2()

    if network == "yolov8s":
        silu_gamma = 1.12  # as candle/examples/networks/yolov8.rs

        def conv(name, c_in, c_out, k, s=1):
            return ConvBN(name, c_in, c_out, k, s, act="silu", gamma=silu_gamma)

        class Bottleneck(nn.Module):
            def __init__(self, name, c):
                super().__init__()
                self.cv1 = conv(f"{name}.cv1", c, c, 3)
                self.cv2 = conv(f"{name}.cv2", c, c, 3)

            def forward(self, x):
                return x + self.cv2(self.cv1(x))

        class C2f(nn.Module):
            def __init__(self, name, c_in, c_out, n):
                super().__init__()
                self.c = c_out // 2
                self.cv1 = conv(f"{name}.cv1", c_in, 2 * self.c, 1)
                self.cv2 = conv(f"{name}.cv2", (2 + n) * self.c, c_out, 1)
                self.m = nn.ModuleList(Bottleneck(f"{name}.m.{i}", self.c) for i in range(n))

            def forward(self, x):
                y = list(self.cv1(x).chunk(2, 1))
                y.extend(m(y[-1]) for m in self.m)
                return self.cv2(torch.cat(y, 1))

        class SPPF(nn.Module):
            def __init__(self, name, c_in, c_out):
                super().__init__()
                self.cv1 = conv(f"{name}.cv1", c_in, c_in // 2, 1)
                self.cv2 = conv(f"{name}.cv2", c_in // 2 * 4, c_out, 1)
                self.m = nn.MaxPool2d(5, 1, 2)

            def forward(self, x):
                y = [self.cv1(x)]
                y.extend(self.m(y[-1]) for _ in range(3))
                return self.cv2(torch.cat(y, 1))

        class Yolov8sBackbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(conv("model.0", 3, 32, 3, 2),
                                          conv("model.1", 32, 64, 3, 2),
                                          C2f("model.2", 64, 64, 1),
                                          conv("model.3", 64, 128, 3, 2),
                                          C2f("model.4", 128, 128, 2))
                self.p4 = nn.Sequential(conv("model.5", 128, 256, 3, 2),
                                        C2f("model.6", 256, 256, 2))
                self.p5 = nn.Sequential(conv("model.7", 256, 512, 3, 2),
                                        C2f("model.8", 512, 512, 1),
                                        SPPF("model.9", 512, 512))

            def forward(self, x):
                p3 = self.stem(x)
                p4 = self.p4(p3)
                return [p3, p4, self.p5(p4)]

        return Yolov8sBackbone()

    raise SystemExit(f"unknown network {network}")


def flatten(outputs):
    """The outputs flattened per image and concatenated, float32 (as the example's)."""
    return torch.cat([o.float().reshape(o.shape[0], -1) for o in outputs], 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", choices=["resnet50", "mobilenetv2", "yolov8s"], required=True)
    p.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=None,
                   help="input resolution [default 224, yolov8s 640]")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--layout", choices=["nchw", "channels_last"], default=None,
                   help="torch's memory format [default: channels_last for bf16/f16, "
                        "nchw for f32]")
    p.add_argument("--ref", help="candle's output (the example's --save-ref) to check against")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-s", type=float, default=0.1)
    p.add_argument("--budget", type=float, default=3.0)
    p.add_argument("--out", help="write the report (bench schema, layer total) here")
    args = p.parse_args(argv)

    size = args.size or (640 if args.network == "yolov8s" else 224)
    layout = args.layout or ("nchw" if args.dtype == "f32" else "channels_last")
    device = torch.device(args.device)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
        if conv is not None:  # PyTorch 2.9's finer switch, where it exists
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        name = torch.cuda.get_device_name(device)
        sync = torch.cuda.synchronize
        method = "torch"
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"
        sync = lambda: None  # noqa: E731
        method = "torch-cpu"
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    model = build(args.network).eval().to(device=device, dtype=dtype, memory_format=fmt)
    x = uniform("input", (args.batch, 3, size, size), -1.0, 1.0)
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    print(f"torch {torch.__version__} {args.network} {args.dtype} batch {args.batch} "
          f"{size}x{size} {layout} on {name}", file=sys.stderr)

    with torch.inference_mode():
        output = flatten(model(x))
        sync()
        start = time.perf_counter()
        model(x)
        sync()
        estimate = time.perf_counter() - start
        reps = min(200, max(1, math.ceil(args.round_s / estimate)))
        rounds = min(max(3, args.rounds), max(3, int(args.budget / (estimate * reps))))
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                model(x)
            sync()
            times.append((time.perf_counter() - start) * 1e3 / reps)
    times.sort()
    rel_err = None
    if args.ref:
        ref = load_npy(args.ref).to(device)
        if ref.shape != output.shape:
            raise SystemExit(f"output {tuple(output.shape)} but the reference is {tuple(ref.shape)}")
        rel_err = float((output - ref).norm() / ref.norm())
    out_rms = float(output.square().mean().sqrt())
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    result = {
        "method": method,
        "median_ms": times[len(times) // 2],
        "min_ms": times[0],
        "max_ms": times[-1],
        "rel_err": rel_err,
        "output_rms": out_rms,
        "detail": f"torch {torch.__version__}, cuDNN {cudnn}, {args.dtype} {layout}, "
                  f"cudnn.benchmark, eager, inference_mode, {rounds} rounds x {reps} forwards",
    }
    print(f"  {method:14} {result['median_ms']:9.3f} ms (min {times[0]:.3f}, max {times[-1]:.3f}; "
          f"{rounds} x {reps}), rel_err {rel_err}, output rms {out_rms:.3f}", file=sys.stderr)
    if args.out:
        report = {
            "device": name,
            "suite": args.network,
            "dtype": args.dtype,
            "batch": args.batch,
            "layout": "nchw",
            "layers": [{"name": "total", "count": 1,
                        "problem": {"input": [args.batch, 3, size, size]},
                        "results": [result]}],
            "settings": {"torch_layout": layout, "rounds": args.rounds, "round_s": args.round_s,
                         "budget_s": args.budget, "warmup": 2, "size": size,
                         "reference": args.ref},
            "software": {"torch": torch.__version__, "torch cudnn": str(cudnn)},
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
