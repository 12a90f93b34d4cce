#!/usr/bin/env bash
# Miri over the CPU backend's unit tests: every `unsafe` of runtime/src/cpu (vector loads and
# stores, `#[target_feature]` calls) is checked for out-of-bounds and uninitialised accesses
# and data races on the paths Miri can run.
#
# Two runs. First the portable level forced (IM2WIN_CPU_ISA=portable, and no target
# features: under Miri `is_x86_feature_detected!` finds only what the build enables, so
# every level but the plain-Rust one is unavailable and its tests say so). Then the same
# tests built with AVX2 and FMA enabled (`-C target-feature=+avx,+avx2,+fma`), which Miri
# can interpret: the AVX2 micro-kernels (general and row), their vector loads and stores,
# and the AVX transpose of the packing and the NCHW store run under Miri too. The AVX-512
# kernels are not interpreted (Miri lacks some of their intrinsics); they share the
# loads, stores and bounds checks of the AVX2 code (one macro, `body!`) and are covered by
# the float64 oracle tests (runtime/tests/cpu_backend.rs forces every level this CPU runs).
# The tests run on 2 rayon threads, so Miri also checks the jobs' disjoint output slices
# for data races.
#
# Flags: Tree Borrows (`-Zmiri-tree-borrows`), because rayon's crossbeam-epoch breaks the
# stricter, experimental Stacked Borrows rules in its own code (not ours); deterministic
# floats, because Miri otherwise adds random errors to `exp`/`tanh` and the epilogue test
# compares two evaluations bit for bit; permissive provenance, for crossbeam's
# integer-to-pointer casts (a warning, not an error); ignored leaks, because rayon's global
# pool threads outlive the tests.
#
# Needs the nightly toolchain with Miri: rustup component add --toolchain nightly miri
# Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
flags="-Zmiri-tree-borrows -Zmiri-deterministic-floats -Zmiri-permissive-provenance"
flags="$flags -Zmiri-ignore-leaks"
# Without nvcc the build scripts write empty fatbins, which is all these tests need.
echo "== Miri, portable level forced"
env -u NVCC IM2WIN_CPU_ISA=portable MIRIFLAGS="${MIRIFLAGS:-$flags}" \
  cargo +nightly miri test -p im2win-runtime --lib cpu:: "$@"
echo "== Miri, AVX2 + FMA"
env -u NVCC MIRIFLAGS="${MIRIFLAGS:-$flags}" RUSTFLAGS="-C target-feature=+avx,+avx2,+fma" \
  cargo +nightly miri test -p im2win-runtime --lib cpu:: "$@"
