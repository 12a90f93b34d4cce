#!/usr/bin/env bash
# Installs nvcc 13.0 from PyPI wheels into .cuda/ (git-ignored), with no GPU and no CUDA
# toolkit needed. Pinned to 13.0: the H200's driver is CUDA 13.0, and PTX from a newer
# nvcc will not JIT there. Prints the path of nvcc on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cuda"
nvcc="$dest/nvidia/cu13/bin/nvcc"
if [ ! -x "$nvcc" ]; then
  python3 -m pip install -q --disable-pip-version-check --target "$dest" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 "nvidia-cuda-cccl==13.0.*" >&2
fi
"$nvcc" --version >&2
echo "$nvcc"
