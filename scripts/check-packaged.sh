#!/usr/bin/env bash
# Checks that im2win is publishable: every crate of the workspace packages
# (`cargo package --workspace`), and a crate OUTSIDE this workspace that depends only on
# the packaged im2win and im2win-codegen builds its own kernels in its build.rs and runs
# them.
#
# The outside crate is examples/custom-kernels' code (a 9x9 stride-3 kernel generated from
# its im2win.toml) with a Cargo.toml of its own whose im2win crates are the unpacked .crate
# files (path dependencies, and a [patch] for the crates they depend on by version, since
# none is on crates.io). It builds in target/outside-crate/ with this workspace's Cargo.lock
# and target directory, so the registry dependencies are not compiled twice.
#
# nvcc: the outside crate finds it as any build does (NVCC, CUDA_HOME, PATH;
# IM2WIN_REQUIRE_NVCC). Without it the crates build without kernels and the outside crate
# runs its CPU fallback, which still checks its result; with it (and a GPU) it runs its own
# kernel. IM2WIN_CUDA_ARCHS (default 90 here) picks the targets of the outside build.
#
# Usage: scripts/check-packaged.sh [--bin-out DIR]   (DIR: where to copy the outside binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin_out=
if [ "${1:-}" = "--bin-out" ]; then
  bin_out=$2
fi

echo "check-packaged: cargo package --workspace" >&2
rm -rf "$root/target/package"
# --allow-dirty: the check is about what the packages hold, not about the VCS state.
# --no-verify: the outside crate below builds im2win, im2win-codegen, im2win-runtime and
# im2win-macros from their .crate contents, which is the verification that matters, once.
# (cargo's own verification would build every package again, a minute of CI, and it trusts
# a build of a registry package of the same version from an earlier run: it checked stale
# sources here when the crates changed between two runs.)
env -u NVCC -u IM2WIN_REQUIRE_NVCC cargo package --workspace --allow-dirty --quiet --no-verify

outside="$root/target/outside-crate"
rm -rf "$outside"
mkdir -p "$outside/crates" "$outside/user"
for crate in im2win im2win-codegen im2win-runtime im2win-macros; do
  tar -xzf "$root/target/package/$crate-0.1.0.crate" -C "$outside/crates"
done
# The templates travel inside im2win-codegen's package.
ls "$outside/crates/im2win-codegen-0.1.0/templates/conv.cu.tera" >/dev/null

cp -r examples/custom-kernels/src examples/custom-kernels/build.rs \
  examples/custom-kernels/im2win.toml "$outside/user/"
cp Cargo.lock "$outside/user/"
cat >"$outside/user/Cargo.toml" <<'TOML'
# A user's crate outside the im2win workspace (written by scripts/check-packaged.sh).
[package]
name = "im2win-outside-user"
version = "0.1.0"
edition = "2024"
publish = false

[[bin]]
name = "outside-custom-kernels"
path = "src/main.rs"

[dependencies]
im2win = { path = "../crates/im2win-0.1.0" }
cudarc = { version = "0.19.10", default-features = false, features = ["std", "driver", "nvrtc", "cuda-13000", "fallback-dynamic-loading"] }
rand = "0.9"

[build-dependencies]
im2win-codegen = { path = "../crates/im2win-codegen-0.1.0", features = ["generate"] }

# Its own workspace: nothing of im2win's is in scope.
[workspace]

# The packaged crates name each other by version (crates.io); none is published, so point
# those names at the unpacked packages.
[patch.crates-io]
im2win-codegen = { path = "../crates/im2win-codegen-0.1.0" }
im2win-runtime = { path = "../crates/im2win-runtime-0.1.0" }
im2win-macros = { path = "../crates/im2win-macros-0.1.0" }
TOML

echo "check-packaged: building the outside crate" >&2
(cd "$outside/user" && IM2WIN_CUDA_ARCHS=${IM2WIN_CUDA_ARCHS:-90} \
  CARGO_TARGET_DIR="$root/target" cargo build --release --quiet --bin outside-custom-kernels)
binary="$root/target/release/outside-custom-kernels"
echo "check-packaged: running it" >&2
"$binary"
if [ -n "$bin_out" ]; then
  mkdir -p "$bin_out"
  cp "$binary" "$bin_out/"
fi
echo "check-packaged: ok"
