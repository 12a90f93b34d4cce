#!/usr/bin/env bash
# Compiles a few catalogue kernels against a directory of kernel headers into one sm_90 cubin,
# for scripts/kernel-ab.py (A/B of template variants on the GPU without rebuilding the
# benchmark). Prints ptxas's spills and, with NVDISASM or /tmp/nvdis (see
# scripts/sass-bank-conflicts.py), each kernel's same-bank FFMA operand pairs.
#
# Usage: scripts/kernel-ab.sh TEMPLATES OUT.cubin KERNEL [KERNEL ...]
#   TEMPLATES  a copy of codegen/templates (a variant under test), or codegen/templates itself
#   KERNEL     catalogue kernel names; their instantiations are taken from the rendered
#              im2win_conv.cu of the last release build (target/release/build/im2win-*/out)
#
# The instantiation text is the generator's; only the headers differ between variants.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
templates=$1
out=$2
shift 2
nvcc=${NVCC:-$root/.cuda/nvidia/cu13/bin/nvcc}
rendered=$(ls -t "$root"/target/release/build/im2win-*/out/im2win.nvcc/im2win_conv.cu | head -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo '#include "common.cuh"'
  echo '#include "conv_fprop.cuh"'
  for kernel in "$@"; do
    text=$(awk -v k="$kernel" '$0 == "// " k { p = 1 } p { print } p && /^}$/ { exit }' "$rendered")
    [ -n "$text" ] || { echo "kernel-ab: $kernel is not in $rendered" >&2; exit 1; }
    echo "$text"
  done
} >"$work/kernels.cu"
"$nvcc" -O3 -std=c++17 -I"$templates" --cubin -arch=sm_90 -Xptxas -v -o "$out" "$work/kernels.cu" 2>"$work/ptxas.txt" \
  || { cat "$work/ptxas.txt" >&2; exit 1; }
awk '/Function properties for/ { name = $NF }
     /spill stores/ && !/ 0 bytes spill stores, 0 bytes spill loads/ { sub(/^ +/, ""); print "spills: " name ": " $0 }' "$work/ptxas.txt"
nvdisasm=${NVDISASM:-/tmp/nvdis/nvidia/cu13/bin/nvdisasm}
if [ -x "$nvdisasm" ]; then
  NVDISASM=$nvdisasm python3 "$root/scripts/sass-bank-conflicts.py" "$out" "$@"
fi
