#!/usr/bin/env bash
# Runs the networks example of both builds of gpu-build.sh and bench/torch_networks.py on the GPU
# machine, for every network, dtype and batch, and joins each case's reports into
# OUT/candle-<network>-<dtype>-n<batch>.json (bench/merge_networks.py). From the repo root:
#
#   mkdir -p /tmp/candle && tar -xJf .device/candle-gpu/candle-gpu.tar.xz -C /tmp/candle
#   candle/scripts/run-networks.sh /tmp/candle OUT
#
# NETWORKS, DTYPES and BATCHES (space-separated) narrow it down, METHODS (comma-separated) the
# default build's methods (im2win-candle, im2win-candle-unprepared, im2win-candle-graph, candle); NETWORKS_ARGS is passed to
# every run of both builds (e.g. "--budget 2"), TORCH_ARGS to every run of torch_networks.py.
# A failing run does not stop the others: its case lacks that method. Logs in OUT/log.txt.
set -uo pipefail
bin=${1:?usage: run-networks.sh BIN_DIR OUT_DIR}
out=${2:?usage: run-networks.sh BIN_DIR OUT_DIR}
tmp=$(mktemp -d)
mkdir -p "$out"
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$SP/nvidia/cudnn/lib:$SP/nvidia/cu13/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
exec > >(tee -a "$out/log.txt") 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader || true
for net in ${NETWORKS:-resnet50 mobilenetv2 yolov8s}; do
  for dt in ${DTYPES:-f32 bf16}; do
    for n in ${BATCHES:-1 32}; do
      case=$net-$dt-n$n
      ref=$tmp/$case.npy
      # shellcheck disable=SC2086
      timeout 180 "$bin/networks" --network "$net" --dtype "$dt" --batch "$n" \
        --methods "${METHODS:-im2win-candle,im2win-candle-unprepared,im2win-candle-graph,candle}" \
        --save-ref "$ref" --out "$tmp/$case-candle.json" ${NETWORKS_ARGS:-}
      refarg=()
      [ -f "$ref" ] && refarg=(--ref "$ref")
      # shellcheck disable=SC2086
      timeout 180 "$bin/networks-cudnn" --network "$net" --dtype "$dt" --batch "$n" \
        --methods candle-cudnn "${refarg[@]}" --out "$tmp/$case-cudnn.json" ${NETWORKS_ARGS:-}
      # shellcheck disable=SC2086
      timeout 180 python3 bench/torch_networks.py --network "$net" --dtype "$dt" --batch "$n" \
        "${refarg[@]}" --out "$tmp/$case-torch.json" ${TORCH_ARGS:-}
      reports=()
      for part in candle cudnn torch; do
        [ -f "$tmp/$case-$part.json" ] && reports+=("$tmp/$case-$part.json")
      done
      [ ${#reports[@]} -gt 0 ] &&
        python3 bench/merge_networks.py --out "$out/candle-$case.json" "${reports[@]}"
      rm -f "$ref"
    done
  done
done
rm -rf "$tmp"
