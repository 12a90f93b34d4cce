#!/usr/bin/env bash
# Runs the bundle that scripts/device-bundle.sh built into .device/, on the GPU machine,
# from the repo root. Needs no Rust toolchain there.
#
# Usage: scripts/device-run.sh [STAGE ...] [bench ARGS ...]
#   tests       every test binary (less those whose names start with a prefix listed in
#               IM2WIN_DEVICE_SKIP), with IM2WIN_REQUIRE_GPU=1 (GPU tests fail, not skip,
#               without a GPU)
#   sanitize    the GPU test binaries (the library's and the benchmark's: gpu_*) under
#               compute-sanitizer memcheck, racecheck, initcheck and synccheck, with
#               IM2WIN_TEST_SMALL=1 (fewer, smaller problems; set IM2WIN_SANITIZE_SMALL=0 for
#               the full sets)
#   quickstart  the quickstart example
#   examples    every example: quickstart, macro, resnet50 and custom-kernels (the crate in
#               examples/custom-kernels); each checks its results and exits non-zero if wrong
#   bench ARGS  the benchmark binary `im2win` with ARGS (everything after `bench`)
#   tune        `im2win tune` (every default suite and batch), the table into $OUT/tuning.json;
#               IM2WIN_TUNE_ARGS adds arguments (e.g. "--layout nhwc --merge tuning/nvidia-h200.json")
#   results     the benchmark runs of bench/results/README.md (the five suites, the
#               ablation, paper NHWC, ResNet-50 with its epilogues), packed into results.tar;
#               IM2WIN_RESULTS="suite:batch[:layout[:epilogue]] ... ablation" picks some;
#               IM2WIN_BENCH_TUNING=FILE dispatches them with that tuning table
#   all         tests sanitize quickstart (the default)
#
# Logs go to $OUT (default .device/out), at most 7 files: tests.log,
# sanitize-{memcheck,racecheck,initcheck,synccheck}.log, quickstart.log, examples.log,
# bench.log, summary.txt.
# A summary table ends the output. The exit status is 0 only if every stage passed.
#
# Time: everything stops in time to print the summary before IM2WIN_DEADLINE seconds
# (default 570, under a 600 s command limit); each binary also has its own limit
# (IM2WIN_TEST_TIMEOUT 300, IM2WIN_SANITIZE_TIMEOUT 300, IM2WIN_QUICKSTART_TIMEOUT 120,
# IM2WIN_EXAMPLE_TIMEOUT 180, IM2WIN_BENCH_TIMEOUT 560 seconds). IM2WIN_SANITIZE_TOOLS picks the tools
# (default "memcheck racecheck initcheck synccheck").
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bundle="$root/.device"
out=${OUT:-$bundle/out}
mkdir -p "$out"
deadline=${IM2WIN_DEADLINE:-570}

if [ ! -f "$bundle/MANIFEST" ]; then
  echo "device-run: no .device/MANIFEST: run scripts/device-bundle.sh on the build machine and carry .device" >&2
  exit 2
fi
# A large bundle travels packed (scripts/device-bundle.sh).
if [ -f "$bundle/bin.tar.xz" ]; then
  xz -dc "$bundle/bin.tar.xz" | tar -C "$bundle" -xf - || { echo "device-run: cannot unpack bin.tar.xz" >&2; exit 2; }
fi
chmod +x "$bundle"/bin/* 2>/dev/null || true

export PATH="/usr/local/cuda/bin:$PATH"
# cuDNN and cuBLAS are the pip copies inside PyTorch's environment (GPU.md); cudarc loads
# them at run time, so they must be on the library path.
if sp=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null); then
  export LD_LIBRARY_PATH="$sp/nvidia/cudnn/lib:$sp/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
fi
export IM2WIN_REQUIRE_GPU=1
export RUST_BACKTRACE=1

rows=()       # "stage|result|seconds|detail"
failed=0
counted=()    # logs whose counts the summary prints

# The time a command may take: its own limit, cut so that the deadline still leaves room
# for the summary. Prints 0 when no time is left.
budget() {
  local left=$((deadline - SECONDS - 10))
  local own=$1
  if [ "$left" -lt 15 ]; then echo 0; elif [ "$own" -lt "$left" ]; then echo "$own"; else echo "$left"; fi
}

# manifest KIND [NAME-PREFIX]: "name package-dir" of the matching binaries.
manifest() {
  awk -v kind="$1" -v prefix="${2:-}" '$1 == kind && index($2, prefix) == 1 { print $2, $4 }' \
    "$bundle/MANIFEST"
}

# run_binary LOG STAGE LABEL TIMEOUT DIR -- COMMAND...: runs COMMAND in DIR, appending to
# LOG, and adds a summary row.
run_binary() {
  local log=$1 stage=$2 label=$3 own=$4 dir=$5
  shift 6
  local limit start rc detail
  limit=$(budget "$own")
  if [ "$limit" -eq 0 ]; then
    rows+=("$stage|NOT RUN|0|$label: no time left before the deadline")
    failed=1
    return
  fi
  start=$SECONDS
  {
    echo "=== $label ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    (cd "$dir" && timeout --kill-after=10 "$limit" "$@")
  } >>"$log" 2>&1
  rc=$?
  echo "=== exit status $rc" >>"$log"
  detail=$label
  case $rc in
    0) result=ok ;;
    124 | 137) result=TIMEOUT ;;
    *) result="FAIL($rc)" ;;
  esac
  [ "$rc" -eq 0 ] || failed=1
  rows+=("$stage|$result|$((SECONDS - start))|$detail")
}

stage_tests() {
  local log="$out/tests.log" name dir
  : >"$log"
  counted+=("$log")
  while read -r name dir; do
    # IM2WIN_DEVICE_SKIP: name prefixes of test binaries not worth device time (the codegen
    # and macro tests need no GPU and run in CI).
    local skip=0 prefix
    for prefix in ${IM2WIN_DEVICE_SKIP:-}; do
      [[ "$name" == "$prefix"* ]] && skip=1
    done
    [ "$skip" -eq 1 ] && continue
    run_binary "$log" tests "$name" "${IM2WIN_TEST_TIMEOUT:-300}" "$root/$dir" -- \
      "$bundle/bin/$name"
    # Append the harness's counts to the row just added.
    local counts
    counts=$(awk -v n="$name" '$0 ~ "^=== " n " " {on=1} on && /^test result:/ {p+=$4; f+=$6} END {printf "%d passed, %d failed", p, f}' \
      p=0 f=0 "$log")
    rows[-1]="${rows[-1]}: $counts"
  done < <(manifest test)
}

stage_sanitize() {
  local tool log name dir
  for tool in ${IM2WIN_SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}; do
    log="$out/sanitize-$tool.log"
    : >"$log"
    counted+=("$log")
    while read -r name dir; do
      # Left out, because the sanitizer counts a deliberately failed driver call as an
      # error: `missing_kernels` asks for a kernel that does not exist, `out_of_memory...`
      # for a workspace no GPU holds, and `no_visible_device` starts a child process that
      # sees no GPU, and `modules_of_another_abi_are_refused` looks up a stamp and kernels
      # that its fake modules lack. The `tests` stage runs them.
      IM2WIN_TEST_SMALL=${IM2WIN_SANITIZE_SMALL:-1} run_binary "$log" "sanitize-$tool" "$name" \
        "${IM2WIN_SANITIZE_TIMEOUT:-300}" "$root/$dir" -- \
        compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 50 \
        "$bundle/bin/$name" --test-threads=1 \
        --skip missing_kernels --skip out_of_memory --skip no_visible_device \
        --skip modules_of_another_abi
      local summary_line
      summary_line=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -n 1 | sed 's/^=* *//')
      rows[-1]="${rows[-1]}: ${summary_line:-no sanitizer summary}"
    done < <(manifest test im2win--test--gpu_; manifest test im2win-bench--test--gpu_)
  done
}

# counts LOG: one line of what a log's test binaries did: binaries, tests passed and failed,
# the problems (cases, layers, outputs) their im2win-summary lines report, kernel runs and
# catalogue kernels, and the sanitizer's errors (ERROR SUMMARY, or RACECHECK SUMMARY's).
counts() {
  awk '
    function num(v) { return v ~ /^[0-9]+$/ }
    /^=== exit status/ { bins++ }
    /^test result:/ {
      for (i = 2; i <= NF; i++) {
        if ($(i) ~ /^passed/) passed += $(i - 1)
        if ($(i) ~ /^failed/) failed += $(i - 1)
      }
    }
    /ERROR SUMMARY:/ {
      for (i = 1; i < NF; i++) if ($(i) == "SUMMARY:" && num($(i + 1))) { errors += $(i + 1); seen = 1 }
    }
    /RACECHECK SUMMARY:/ {
      for (i = 2; i <= NF; i++) if ($(i) ~ /^errors/) { v = $(i - 1); gsub(/[(]/, "", v); if (num(v)) hazards += v }
    }
    /^im2win-summary:/ {
      for (i = 3; i <= NF; i++) {
        if ($(i) ~ /^(problems|layers|outputs|cases|inputs)[,:;]?$/) {
          if (num($(i - 1))) problems += $(i - 1); else if (i > 3 && num($(i - 2))) problems += $(i - 2)
        }
        if ($(i) == "kernel" && $(i + 1) ~ /^runs/ && num($(i - 1))) runs += $(i - 1)
        if ($(i) == "over" && num($(i + 1)) && $(i + 2) ~ /^kernels/ && $(i + 1) > kernels) kernels = $(i + 1)
      }
    }
    END {
      printf "%d binaries, %d tests passed, %d failed; %d problems, %d kernel runs over %d catalogue kernels; %d sanitizer errors\n",
        bins, passed, failed, problems, runs, kernels, (seen ? errors : hazards)
    }' "$1"
}

stage_quickstart() {
  local log="$out/quickstart.log" name dir
  : >"$log"
  read -r name dir < <(manifest example im2win--quickstart)
  if [ -z "${name:-}" ]; then
    rows+=("quickstart|MISSING|0|not in the bundle")
    failed=1
    return
  fi
  run_binary "$log" quickstart "$name" "${IM2WIN_QUICKSTART_TIMEOUT:-120}" "$root" -- \
    "$bundle/bin/$name"
}

stage_examples() {
  local log="$out/examples.log" name dir found=0
  : >"$log"
  while read -r name dir; do
    found=1
    run_binary "$log" examples "$name" "${IM2WIN_EXAMPLE_TIMEOUT:-180}" "$root/$dir" -- \
      "$bundle/bin/$name"
  done < <(manifest example; manifest bin im2win-custom-kernels--)
  if [ "$found" -eq 0 ]; then
    rows+=("examples|MISSING|0|no example in the bundle")
    failed=1
  fi
}

# find_bench STAGE: sets $bench to the benchmark binary's name in the bundle; without one,
# adds a MISSING row for STAGE and returns 1.
find_bench() {
  local dir
  read -r bench dir < <(manifest bin im2win-bench--im2win)
  if [ -z "${bench:-}" ]; then
    rows+=("$1|MISSING|0|the benchmark binary is not in the bundle")
    failed=1
    return 1
  fi
}

stage_bench() {
  local log="$out/bench.log"
  : >"$log"
  find_bench bench || return
  run_binary "$log" bench "im2win $*" "${IM2WIN_BENCH_TIMEOUT:-560}" "$root" -- \
    "$bundle/bin/$bench" "$@"
}

stage_tune() {
  local log="$out/tune.log"
  : >"$log"
  find_bench tune || return
  # IM2WIN_TUNE_ARGS adds arguments, e.g. "--layout nhwc --merge tuning/nvidia-h200.json".
  # shellcheck disable=SC2086
  run_binary "$log" tune "im2win tune ${IM2WIN_TUNE_ARGS:-}" "${IM2WIN_TUNE_TIMEOUT:-560}" "$root" -- \
    "$bundle/bin/$bench" tune --out "$out/tuning.json" ${IM2WIN_TUNE_ARGS:-}
}

# The benchmark runs of bench/results/README.md, one after another, into $out/results.tar
# (JSON, SVG and ablation table per run; one archive because at most 8 files come back from
# the GPU machine).
stage_results() {
  local log="$out/bench.log" suite batch layout epilogue name dest="$out/results"
  : >"$log"
  find_bench results || return
  mkdir -p "$dest"
  # IM2WIN_RESULTS picks runs (to split them over several device calls): a space-separated
  # list of suite:batch[:layout[:epilogue]] and `ablation`; default all of bench/results/README.md.
  # IM2WIN_BENCH_TUNING: a tuning table (e.g. one `tune` just wrote) that every run dispatches
  # with instead of the built-in one.
  local tuning=()
  [ -z "${IM2WIN_BENCH_TUNING:-}" ] || tuning=(--tuning "$IM2WIN_BENCH_TUNING")
  local runs=${IM2WIN_RESULTS:-"paper:128 resnet50:1 resnet50:32 resnet50:128 vgg16:32 ablation paper:128:nhwc resnet50:32:nchw:resnet resnet50:32:nchw:bias-relu"}
  for run in $runs; do
    if [ "$run" = ablation ]; then
      run_binary "$log" results "im2win bench --suite paper --batch 128 --methods ablation" \
        "${IM2WIN_BENCH_TIMEOUT:-560}" "$root" -- "$bundle/bin/$bench" bench --suite paper \
        --batch 128 --methods ablation --out "$dest/ablation-paper-f32-n128.json" \
        --chart "$dest/ablation-paper-f32-n128.svg" "${tuning[@]}"
      continue
    fi
    IFS=: read -r suite batch layout epilogue <<<"$run"
    layout=${layout:-nchw}
    epilogue=${epilogue:-none}
    name="$suite-f32"
    [ "$layout" = nchw ] || name="$name-$layout"
    name="$name-n$batch"
    [ "$epilogue" = none ] || name="$name-$epilogue"
    local methods=all
    [ "$epilogue" = none ] || methods=im2win,im2win-unfused
    run_binary "$log" results "im2win bench --suite $suite --batch $batch --layout $layout --epilogue $epilogue" \
      "${IM2WIN_BENCH_TIMEOUT:-560}" "$root" -- "$bundle/bin/$bench" bench --suite "$suite" \
      --batch "$batch" --layout "$layout" --epilogue "$epilogue" --methods "$methods" \
      --out "$dest/$name.json" --chart "$dest/$name.svg" "${tuning[@]}"
  done
  tar -C "$out" -cf "$out/results.tar" results && rm -rf "$dest"
}

stages=()
bench_args=()
while [ $# -gt 0 ]; do
  case $1 in
    tests | sanitize | quickstart | examples | tune | results) stages+=("$1") ;;
    all) stages+=(tests sanitize quickstart) ;;
    bench)
      shift
      stages+=(bench)
      bench_args=("$@")
      break
      ;;
    *)
      echo "device-run: unknown stage '$1' (tests, sanitize, quickstart, examples, tune, results, bench ARGS, all)" >&2
      exit 2
      ;;
  esac
  shift
done
[ ${#stages[@]} -gt 0 ] || stages=(tests sanitize quickstart)

echo "device-run: stages ${stages[*]}; logs in $out"
cat "$bundle/BUILD_INFO" 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader 2>/dev/null || true
for stage in "${stages[@]}"; do
  case $stage in
    tests) stage_tests ;;
    sanitize) stage_sanitize ;;
    quickstart) stage_quickstart ;;
    examples) stage_examples ;;
    bench) stage_bench "${bench_args[@]}" ;;
    tune) stage_tune ;;
    results) stage_results ;;
  esac
done

{
  printf '%-20s %-9s %6s  %s\n' STAGE RESULT SECONDS DETAIL
  for row in "${rows[@]}"; do
    IFS='|' read -r stage result seconds detail <<<"$row"
    printf '%-20s %-9s %6s  %s\n' "$stage" "$result" "$seconds" "$detail"
  done
  echo
  # The tests' own summary lines (problem counts, worst errors); the sanitizer runs print
  # the same lines for their smaller problem sets.
  grep -h "^im2win-summary:" "$out"/tests.log 2>/dev/null || true
  # Counts per stage (per sanitizer tool): kernels, problems, errors.
  for log in ${counted[@]+"${counted[@]}"}; do
    name=${log##*/}
    echo "${name%.log}: $(counts "$log")"
  done
  grep -hE "^GPU:|TFLOP/s|relative error" "$out"/quickstart.log 2>/dev/null || true
  # The examples' headline numbers: the ResNet-50 pass, the custom kernel against the
  # generic one.
  grep -hE "^forward pass|^cuDNN|^custom 9x9" "$out"/examples.log 2>/dev/null || true
  echo
  if [ "$failed" -eq 0 ]; then echo "device-run: ALL PASSED"; else echo "device-run: SOME STAGES FAILED (see the logs in $out)"; fi
} | tee "$out/summary.txt"
exit "$failed"
