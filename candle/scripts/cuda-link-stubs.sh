#!/usr/bin/env bash
# Makes link-time stand-ins for the CUDA libraries that candle's CUDA backend links (cudarc's
# `dynamic-linking`: libcuda, libnvrtc, libcurand, libcublas, libcublasLt; libcudnn with the
# crate's `cudnn` feature), so that
# `cargo build -p im2win-candle --features cuda` links on a machine without a CUDA install
# (this one). Each stub is a shared library with the real library's SONAME that defines every
# function of cudarc's bindings for it as an empty function; a binary linked against it
# records only the SONAME, and at run time the GPU machine's real library (driver, CUDA
# toolkit, or PyTorch's pip copies on LD_LIBRARY_PATH) is loaded instead. The stubs are never
# loaded at run time. libcudart (linked by candle-kernels) is the real one from the nvcc
# wheel (scripts/install-nvcc.sh), symlinked beside them.
#
# Usage: candle/scripts/cuda-link-stubs.sh NVCC [DEST]
#   NVCC  the nvcc of the wheel install (its ../lib holds libcudart.so.13)
#   DEST  where to put them (default target/cuda-stubs); prints DEST on its last line.
# Then build with CUDA_HOME=DEST (cudarc's build script adds DEST/lib64 to the link search).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
nvcc=${1:?usage: cuda-link-stubs.sh NVCC [DEST]}
dest=${2:-$root/target/cuda-stubs}
mkdir -p "$dest/lib64"
lib="$dest/lib64"

# cudarc's sources, as cargo fetched them (the version in Cargo.lock).
version=$(awk '/^name = "cudarc"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$root/Cargo.lock")
src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 1 -mindepth 1 -type d \
  -exec test -d {}/cudarc-"$version" \; -print -quit)/cudarc-"$version"
[ -d "$src/src" ] || { echo "cuda-link-stubs: no cudarc $version sources (run cargo fetch)" >&2; exit 1; }

# stub NAME SONAME SYS_DIR: every function cudarc loads from that library, defined empty.
stub() {
  local name=$1 soname=$2 sys=$3 c="$lib/$1.c"
  grep -ohE 'load::<_F>\("[A-Za-z0-9_]+"\)' "$src/src/$sys/sys/"*.rs |
    sed -E 's/.*\("([A-Za-z0-9_]+)"\)/void \1(void) {}/' | sort -u >"$c"
  [ -s "$c" ] || { echo "cuda-link-stubs: no functions found for $name" >&2; exit 1; }
  cc -shared -fPIC -Wl,-soname,"$soname" -o "$lib/$name.so" "$c"
  rm -f "$c"
}
stub libcuda libcuda.so.1 driver
stub libnvrtc libnvrtc.so.13 nvrtc
stub libcurand libcurand.so.10 curand
stub libcublas libcublas.so.13 cublas
stub libcublasLt libcublasLt.so.13 cublaslt
# Only the `cudnn` feature's build links it (the real one: nvidia/cudnn/lib of the cuDNN wheel).
stub libcudnn libcudnn.so.9 cudnn

cudart=$(cd "$(dirname "$nvcc")/../lib" && pwd)/libcudart.so.13
[ -f "$cudart" ] || { echo "cuda-link-stubs: no $cudart" >&2; exit 1; }
ln -sf "$cudart" "$lib/libcudart.so"
echo "$dest"
