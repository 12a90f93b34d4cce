#!/bin/sh
# Builds the harness's kernels: scripts/tc/tc_<type>.cubin (sm_90 SASS, what the H100 and H200
# run) and tc_<type>.names (the kernel names, for tc.py), with ptxas's resource report in
# tc_<type>.ptxas. NVCC defaults to the project's nvcc; ARCH (default 90) picks the SASS.
# Usage: scripts/tc/build.sh [bf16 f16 tf32]   (from anywhere; two types compile in parallel)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NVCC=${NVCC:-/work/main/.cuda/nvidia/cu13/bin/nvcc}
ARCH=${ARCH:-90}
OUTDIR=${OUTDIR:-$HERE}
# PREFIX names the files (<prefix>_<type>.cubin: tc, or a baseline for tc.py); FLAGS go to nvcc.
PREFIX=${PREFIX:-tc}
FLAGS=${FLAGS:-}
TYPES=${*:-bf16 f16 tf32}
build() {
    wg=""
    if [ "$ARCH" = 90a ] && [ "$1" != tf32 ]; then wg="-DTC_WGMMA=$1"; fi
    "$NVCC" -std=c++17 -O3 -cubin -gencode "arch=compute_$ARCH,code=sm_$ARCH" -Xptxas -v \
        -I "${TEMPLATES:-$ROOT/codegen/templates}" -DTC_ONLY="$1" $wg $FLAGS "$HERE/kernels.cu" -o "$OUTDIR/${PREFIX}_$1.cubin" \
        > "$OUTDIR/${PREFIX}_$1.ptxas" 2>&1 || { cat "$OUTDIR/${PREFIX}_$1.ptxas"; return 1; }
    grep -o "Compiling entry function '[^']*'" "$OUTDIR/${PREFIX}_$1.ptxas" | cut -d"'" -f2 > "$OUTDIR/${PREFIX}_$1.names"
    if grep -E "[1-9][0-9]* bytes (spill|stack)" "$OUTDIR/${PREFIX}_$1.ptxas"; then echo "SPILLS in $1"; return 1; fi
    echo "built ${PREFIX}_$1.cubin: $(wc -l < "$OUTDIR/${PREFIX}_$1.names") kernels"
}
pids=""
n=0
for t in $TYPES; do
    build "$t" &
    pids="$pids $!"
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then for p in $pids; do wait "$p"; done; pids=""; fi
done
for p in $pids; do wait "$p"; done
