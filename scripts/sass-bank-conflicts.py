#!/usr/bin/env python3
"""Counts register-bank conflicts in the main loop of convolution kernels, from SASS.

Usage: scripts/sass-bank-conflicts.py CUBIN KERNEL [KERNEL ...]

Why: the FP32 kernels are FFMA-bound, and an FFMA whose register operands sit in the same
register bank reads them one cycle apart. The main loop (the densest run of TM*TN*BK FFMAs)
is the same instruction for instruction before and after issue 11's rewrite, yet 3-10%
slower on the H200; the one visible difference is ptxas's register allocation, which this
counts. Model: 2 banks, bank = register number % 2 (Volta and later); an operand marked
.reuse comes from the operand cache and is not counted. A proxy, not a timing: confirm on
the GPU.

Needs nvdisasm: `pip install --target /tmp/nvdis nvidia-cuda-nvdisasm==13.2.51` (13.0 has no
wheel; 13.2 disassembles sm_80/sm_90 cubins from nvcc 13.0), or $NVDISASM. The cubins are
in the build's work directory, e.g. target/release/build/im2win-*/out/im2win.nvcc/im2win.sm_90.cubin.
"""
import os
import re
import subprocess
import sys
from collections import Counter

NVDISASM = os.environ.get("NVDISASM", "/tmp/nvdis/nvidia/cu13/bin/nvdisasm")
INSTR = re.compile(r"/\*[0-9a-f]{4,}\*/\s+((?:@!?U?P\w+\s+)?[A-Z][^;]*);")
FFMA = re.compile(r"FFMA\s+R\d+,\s*(\S+?),\s*(\S+?),\s*(\S+)$")
REG = re.compile(r"-?R(\d+)(\.reuse)?$")


def loop_ffmas(body, tile_ffmas):
    """The densest window of `tile_ffmas` consecutive FFMAs: the unrolled main-loop stage."""
    lines = INSTR.findall(body)
    idx = [i for i, t in enumerate(lines) if t.startswith("FFMA")]
    if len(idx) < tile_ffmas:
        return []
    best = min(range(len(idx) - tile_ffmas + 1), key=lambda i: idx[i + tile_ffmas - 1] - idx[i])
    return [lines[k] for k in idx[best:best + tile_ffmas]]


def conflicts(ffmas):
    total = 0
    for text in ffmas:
        m = FFMA.match(text.strip())
        if not m:
            continue
        regs = [int(r.group(1)) for r in map(REG.match, m.groups()) if r and not r.group(2)]
        total += sum(n - 1 for n in Counter(reg % 2 for reg in regs).values() if n > 1)
    return total


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sass = subprocess.run([NVDISASM, "-c", sys.argv[1]], capture_output=True, text=True, check=True).stdout
    for name in sys.argv[2:]:
        start = sass.find(f".text.{name}:")
        if start < 0:
            print(f"{name}: not in {sys.argv[1]}")
            continue
        body = sass[start:sass.find(".section", start + 10)]
        tile = re.search(r"_b(\d+)x(\d+)x(\d+)_t(\d+)x(\d+)", name)
        bk, tm, tn = int(tile.group(3)), int(tile.group(4)), int(tile.group(5))
        ffmas = loop_ffmas(body, bk * tm * tn)
        print(f"{name}: {len(ffmas)} main-loop FFMAs, {conflicts(ffmas)} same-bank operand pairs")


if __name__ == "__main__":
    main()
