#!/usr/bin/env bash
# Builds everything the GPU machine runs and copies it into .device/ (git-ignored):
#   - every release test binary of the workspace (`cargo test --workspace --release --no-run`),
#   - the examples (quickstart, macro, resnet50) and the custom-kernels crate's binary,
#   - the benchmark binary `im2win` (package im2win-bench), when the workspace has it,
# plus .device/MANIFEST, which scripts/device-run.sh reads. The GPU machine has no Rust
# toolchain; these binaries (glibc 2.36 here) run there as they are.
#
# The bundle must stay under 60 MiB (the device run carries at most 64 MiB): when it is
# larger, debug info is stripped, then symbols.
#
# The kernels are compiled into the binaries at build time, so nvcc is required here
# (IM2WIN_REQUIRE_NVCC=1): $NVCC if set, else nvcc under CUDA_HOME or CUDA_PATH or on
# PATH, else the pinned copy that scripts/install-nvcc.sh puts in .cuda/ (installed if missing).
#
# Usage: scripts/device-bundle.sh
#   IM2WIN_BUNDLE_FEATURES  cargo features for every build, e.g. "im2win/tc-warp-specialized"
#                           (the experimental warp-specialised kernels, which the GPU tests
#                           then run like every catalogue kernel)
# Then, on the GPU machine, from the repo root (with .device carried along):
#   scripts/device-run.sh            # tests, sanitizers, quickstart
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dest="$root/.device"
limit=$((60 * 1024 * 1024))

if [ -z "${NVCC:-}" ]; then
  # The order build.rs searches in: CUDA_HOME, CUDA_PATH, then PATH.
  for candidate in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "${CUDA_PATH:+$CUDA_PATH/bin/nvcc}" \
    "$(command -v nvcc || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      NVCC=$candidate
      break
    fi
  done
fi
if [ -z "${NVCC:-}" ]; then
  echo "device-bundle: no nvcc found; installing the pinned one into .cuda/" >&2
  NVCC=$("$root/scripts/install-nvcc.sh" | tail -n 1)
fi
export NVCC
# A bundle without kernels would only test the skip paths: fail the build instead.
export IM2WIN_REQUIRE_NVCC=1
echo "device-bundle: NVCC=$NVCC" >&2

json=$(mktemp)
trap 'rm -f "$json"' EXIT
features=()
if [ -n "${IM2WIN_BUNDLE_FEATURES:-}" ]; then
  features=(--features "$IM2WIN_BUNDLE_FEATURES")
fi
echo "device-bundle: building release test binaries" >&2
cargo test --workspace --release --no-run "${features[@]}" --message-format=json-render-diagnostics >"$json"
echo "device-bundle: building the examples" >&2
cargo build --release -p im2win --examples "${features[@]}" \
  --message-format=json-render-diagnostics >>"$json"
# A crate of its own (examples/custom-kernels), with a build.rs that generates its kernels.
cargo build --release -p im2win-custom-kernels --bin custom-kernels "${features[@]}" \
  --message-format=json-render-diagnostics >>"$json"
# Not `cargo metadata | grep -q`: with pipefail, grep's early exit could fail the pipe.
metadata=$(cargo metadata --no-deps --format-version 1)
if grep -q '"name":"im2win-bench"' <<<"$metadata"; then
  echo "device-bundle: building the benchmark" >&2
  cargo build --release -p im2win-bench --bin im2win "${features[@]}" \
    --message-format=json-render-diagnostics >>"$json"
fi

rm -rf "$dest"
mkdir -p "$dest/bin"
# One MANIFEST line per binary: kind (test, example, bin), file under .device/bin (tests:
# package--targetkind--target, e.g. im2win--test--gpu_conv; others: package--target, e.g.
# im2win--quickstart, im2win-bench--im2win), package,
# package directory relative to the repo root (cargo runs tests from there).
python3 - "$json" "$dest" "$root" <<'PY'
import json, os, shutil, sys

json_path, dest, root = sys.argv[1:4]
rows = {}
with open(json_path) as f:
    for line in f:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        target = msg["target"]
        kinds = target["kind"]
        if msg["profile"]["test"]:
            kind = "test"
        elif "example" in kinds:
            kind = "example"
        elif "bin" in kinds:
            kind = "bin"
        else:
            continue
        pkg_dir = os.path.relpath(os.path.dirname(msg["manifest_path"]), root)
        pkg_id = msg["package_id"]
        # "path+file:///dir#name@1.0.0", or "path+file:///dir/name#1.0.0" when the name is
        # the directory's.
        frag = pkg_id.rsplit("#", 1)[-1]
        package = frag.split("@")[0] if "@" in frag else pkg_id.rsplit("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        # Test binaries are named with their target kind, which keeps e.g. the facade's
        # lib tests (im2win) apart from the benchmark's bin tests (also im2win); the others
        # are plainly package--target.
        if kind == "test":
            name = f"{package}--{kinds[0]}--{target['name']}"
        else:
            name = f"{package}--{target['name']}"
        rows[(kind, name)] = (msg["executable"], package, pkg_dir)
with open(os.path.join(dest, "MANIFEST"), "w") as manifest:
    for (kind, name), (exe, package, pkg_dir) in sorted(rows.items()):
        shutil.copy2(exe, os.path.join(dest, "bin", name))
        manifest.write(f"{kind} {name} {package} {pkg_dir}\n")
PY

size() { du -cb "$dest/bin"/* | tail -n 1 | cut -f1; }
if [ "$(size)" -gt "$limit" ]; then
  echo "device-bundle: $(($(size) / 1048576)) MiB, stripping debug info" >&2
  strip --strip-debug "$dest/bin"/*
fi
# Every binary that links im2win embeds the same fatbin (about 10 MB), so the bundle is
# mostly copies of it: one xz stream whose dictionary spans the whole bundle stores it
# once. scripts/device-run.sh unpacks bin.tar.xz when it finds it.
rm -f "$dest/bin.tar.xz"
if [ "$(size)" -gt "$limit" ]; then
  echo "device-bundle: $(($(size) / 1048576)) MiB, packing bin/ into bin.tar.xz" >&2
  tar -C "$dest" -cf - bin | xz -1 --lzma2=preset=1,dict=256MiB >"$dest/bin.tar.xz"
  rm -rf "$dest/bin"
  mkdir -p "$dest/bin"
fi
packed=$(du -cb "$dest/bin.tar.xz" "$dest/bin" 2>/dev/null | tail -n 1 | cut -f1)
if [ "$packed" -gt "$limit" ]; then
  echo "device-bundle: the bundle is $((packed / 1048576)) MiB, over the 60 MiB limit" >&2
  exit 1
fi

{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "($(git status --porcelain 2>/dev/null | wc -l) changed files)"
  echo "nvcc $("$NVCC" --version | tail -n 2 | head -n 1)"
} >"$dest/BUILD_INFO"

echo "device-bundle: $(wc -l <"$dest/MANIFEST") binaries, $((packed / 1048576)) MiB in .device/" >&2
cat "$dest/MANIFEST" >&2
