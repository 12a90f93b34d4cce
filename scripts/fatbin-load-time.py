#!/usr/bin/env python3
"""Times loading fatbins into a CUDA context (cuModuleLoadData), to weigh fatbin compression.

Usage: scripts/fatbin-load-time.py FATBIN [FATBIN ...]

For each file: its size, then the median and the spread of REPS loads (each load followed
by an unload) into the primary context of GPU 0, after one warm-up load, plus the time of
the first load in a fresh process (what a program pays at start). Needs only the driver
(libcuda), through ctypes: no toolkit, no PyTorch.
"""
import ctypes
import statistics
import subprocess
import sys
import time

REPS = 7


def driver():
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(result, what):
        if result != 0:
            raise RuntimeError(f"{what} failed with CUresult {result}")

    check(cuda.cuInit(0), "cuInit")
    device = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device), "cuDevicePrimaryCtxRetain")
    check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return cuda, check


def load_ms(cuda, check, image):
    module = ctypes.c_void_p()
    start = time.perf_counter()
    check(cuda.cuModuleLoadData(ctypes.byref(module), image), "cuModuleLoadData")
    elapsed = (time.perf_counter() - start) * 1e3
    check(cuda.cuModuleUnload(module), "cuModuleUnload")
    return elapsed


def first_load(path):
    """One load in this (fresh) process, printed for the parent."""
    cuda, check = driver()
    image = open(path, "rb").read()
    print(f"{load_ms(cuda, check, image):.3f}")


def main(paths):
    cuda, check = driver()
    print(f"{'fatbin':40s} {'bytes':>10s} {'first ms':>9s} {'median ms':>10s} {'min':>8s} {'max':>8s}")
    for path in paths:
        image = open(path, "rb").read()
        first = subprocess.run(
            [sys.executable, __file__, "--first", path], capture_output=True, text=True, check=True
        ).stdout.strip()
        load_ms(cuda, check, image)
        times = [load_ms(cuda, check, image) for _ in range(REPS)]
        print(
            f"{path.rsplit('/', 1)[-1]:40s} {len(image):10d} {float(first):9.2f} "
            f"{statistics.median(times):10.2f} {min(times):8.2f} {max(times):8.2f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--first":
        first_load(sys.argv[2])
    else:
        main(sys.argv[1:])
