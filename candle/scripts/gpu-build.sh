#!/usr/bin/env bash
# Builds im2win-candle's GPU test binaries and example with the crate's `cuda` feature (candle's
# CUDA backend) on a machine without a GPU or a CUDA install, and packs them for the GPU
# machine into DEST/candle-gpu.tar.xz (DEST default target/candle-gpu; about 11 MB: each
# binary is about 50 MB, mostly candle's own CUDA kernels, and they share most of it):
#   gpu          the GPU tests (candle/tests/gpu.rs)
#   cpu          the CPU tests of the same build (candle/tests/cpu.rs)
#   basic_block  the example
#   networks     the networks example (candle/examples/networks: ResNet-50, MobileNetV2, the
#                YOLOv8s backbone, timed with im2win-candle and candle's own conv2d)
#   networks-cudnn  the same example built with the crate's `cudnn` feature (candle's conv2d
#                through cuDNN: its method is `candle-cudnn`); it needs libcudnn.so.9 at run
#                time (the cuDNN wheel's nvidia/cudnn/lib)
#
# Both builds share one target directory: cargo keeps each feature set's artifacts apart
# (features are part of every unit's hash), so candle-kernels' nvcc step, which does not
# depend on them, is built once and both builds stay cached; only the final copy
# target/release/examples/networks is overwritten, so each is copied out right after its build.
#
# What the build needs:
#   - nvcc (NVCC, else the pinned copy of scripts/install-nvcc.sh) for im2win's kernels
#     (IM2WIN_REQUIRE_NVCC=1) and for candle-kernels, which compiles for CUDA_COMPUTE_CAP
#     (default 90: H100 and H200); candle-kernels alone takes about 15 minutes on 2 cores the
#     first time (cargo keeps it afterwards while NVCC and CUDA_COMPUTE_CAP stay the same);
#   - the CUDA libraries candle links at build time: stand-ins from cuda-link-stubs.sh
#     (CUDA_HOME points cudarc's link search at them; the binaries load the real ones).
#
# On the GPU machine (no Rust needed), from the repo root with DEST carried along:
#   mkdir -p /tmp/candle && tar -xJf target/candle-gpu/candle-gpu.tar.xz -C /tmp/candle
#   SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
#   export LD_LIBRARY_PATH="$SP/nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
#   IM2WIN_REQUIRE_GPU=1 /tmp/candle/gpu && /tmp/candle/cpu && /tmp/candle/basic_block
#   /tmp/candle/networks --network resnet50 --dtype bf16 --batch 32   # cudnn: also
#   #   LD_LIBRARY_PATH=$SP/nvidia/cudnn/lib:...; candle/scripts/run-networks.sh runs them all
#
# Usage: candle/scripts/gpu-build.sh [DEST]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
dest=${1:-$root/target/candle-gpu}
if [ -z "${NVCC:-}" ]; then
  NVCC=$("$root/scripts/install-nvcc.sh" | tail -n 1)
fi
export NVCC
export IM2WIN_REQUIRE_NVCC=1
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
CUDA_HOME=$("$root/candle/scripts/cuda-link-stubs.sh" "$NVCC" | tail -n 1)
export CUDA_HOME
echo "gpu-build: NVCC=$NVCC CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDA_HOME=$CUDA_HOME" >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# `--no-run` names each test binary on a line `Executable tests/NAME.rs (PATH)`.
cargo test -p im2win-candle --features cuda --release --no-run 2>&1 | tee "$log" >&2
cargo build -p im2win-candle --features cuda --release --example basic_block --example networks
examples=${CARGO_TARGET_DIR:-$root/target}/release/examples

rm -rf "$dest"
mkdir -p "$dest/bin"
for test in gpu cpu; do
  path=$(sed -n "s|^ *Executable tests/$test\.rs (\(.*\))\$|\1|p" "$log")
  [ -n "$path" ] || { echo "gpu-build: no test binary $test" >&2; exit 1; }
  cp "$path" "$dest/bin/$test"
done
cp "$examples/basic_block" "$examples/networks" "$dest/bin/"
cargo build -p im2win-candle --features cudnn --release --example networks
cp "$examples/networks" "$dest/bin/networks-cudnn"
# Symbols and debug info are not needed there (and make the binaries larger).
strip --strip-all "$dest/bin"/*
tar -C "$dest/bin" -cf - . | xz -9 -T2 >"$dest/candle-gpu.tar.xz"
rm -rf "$dest/bin"
ls -l "$dest" >&2
echo "$dest"
