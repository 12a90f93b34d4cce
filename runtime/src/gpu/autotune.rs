//! Autotuning: time every kernel that can compute a problem and remember the fastest.
//!
//! Only runs when asked ([`Engine::autotune`], or `im2win tune` to build a table ahead of
//! time); ordinary calls never time anything.

use cudarc::driver::{CudaSlice, sys};
use im2win_codegen::DType;

use super::dispatch::{Plan, blocks_per_sm, can_implement, fits_device, max_splits};
use super::engine::{Engine, allocation_error};
use super::tuning::TuningEntry;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;

/// Timed runs per candidate (after one warm-up run); the median is kept.
const REPS: usize = 9;

impl Engine {
    /// Times every plan that can compute `problem` (each kernel of the catalogue that
    /// supports it, unsplit and, where its grid is under two waves, split in 2, 4, 8, ...
    /// parts) on this GPU, records the fastest in the engine's tuning table (so that
    /// [`Engine::plan`] picks it from now on) and returns its entry.
    ///
    /// Allocates the problem's operands and the largest workspace among the candidates,
    /// fills them with arbitrary non-zero data, and synchronises the engine's stream.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`], and errors of
    /// [`Engine::conv2d_with`] and of the allocations and event timing.
    pub fn autotune(&self, problem: &Conv2dProblem) -> Result<TuningEntry> {
        match problem.dtype {
            DType::F32 => self.autotune_typed::<f32>(problem),
            DType::Bf16 => self.autotune_typed::<half::bf16>(problem),
            DType::F16 => self.autotune_typed::<half::f16>(problem),
        }
    }

    /// [`Engine::autotune`] with operands of the problem's element type `T`.
    fn autotune_typed<T: Element>(&self, problem: &Conv2dProblem) -> Result<TuningEntry> {
        let heuristic = self.heuristic_plan(problem)?;
        let candidates = candidates(problem, self);
        let shape = problem.shape()?;
        let stream = self.stream();
        let input = stream.clone_htod(&pattern::<T>(shape.input_len, 1)?)?;
        let filter = stream.clone_htod(&pattern::<T>(shape.filter_len, 2)?)?;
        let output_bytes = shape.output_len * problem.dtype.size_bytes();
        let mut output: CudaSlice<T> = stream
            .alloc_zeros(shape.output_len)
            .map_err(|err| allocation_error(err, "autotune output", output_bytes))?;
        let workspace_bytes = candidates
            .iter()
            .chain([&heuristic])
            .map(Plan::workspace_bytes)
            .max()
            .unwrap_or(0);
        let mut workspace: CudaSlice<u8> = stream
            .alloc_zeros(workspace_bytes.max(1))
            .map_err(|err| allocation_error(err, "autotune workspace", workspace_bytes))?;

        let mut time = |plan: &Plan| -> Result<f64> {
            let mut run = || {
                self.conv2d_with(
                    plan,
                    &input,
                    &filter,
                    None,
                    &mut output,
                    Some(&mut workspace),
                )
            };
            run()?;
            let mut samples = Vec::with_capacity(REPS);
            for _ in 0..REPS {
                let start = stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?;
                run()?;
                let end = stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))?;
                samples.push(f64::from(start.elapsed_ms(&end)?));
            }
            samples.sort_by(f64::total_cmp);
            Ok(samples[REPS / 2])
        };

        let heuristic_ms = time(&heuristic)?;
        let mut best = (heuristic, heuristic_ms);
        for plan in candidates {
            if plan == best.0 {
                continue;
            }
            let ms = time(&plan)?;
            if ms < best.1 {
                best = (plan, ms);
            }
        }
        let entry = TuningEntry {
            problem: *problem,
            dtype: problem.dtype,
            kernel: best.0.kernel().name(),
            splits: best.0.splits(),
            median_ms: best.1,
            heuristic_ms,
        };
        self.record_tuning(entry.clone());
        Ok(entry)
    }
}

/// Every plan worth timing for `problem` with the engine's catalogue: each supporting
/// kernel unsplit, and split in 2, 4, 8, ... parts (up to its [`max_splits`]: 1 for the
/// tensor-core kernels) while the previous count still gave fewer than two waves of blocks:
/// beyond that a split only adds partial sums to write and reduce.
fn candidates(problem: &Conv2dProblem, engine: &Engine) -> Vec<Plan> {
    let device = engine.device_limits();
    let mut plans = Vec::new();
    for spec in &engine.kernels().catalogue().kernels {
        // The operands are fresh allocations (aligned): only the device's shared memory
        // can rule out a kernel that computes the problem.
        if !can_implement(spec, problem) || !fits_device(spec, device) {
            continue;
        }
        // A spec whose grid exceeds CUDA's limits for this problem is no candidate.
        let Ok(plan) = Plan::for_spec(problem, *spec) else {
            continue;
        };
        let (x, y, _) = plan.grid_dim();
        let two_waves = 2 * device.multiprocessors * u64::from(blocks_per_sm(spec, device));
        let most = max_splits(spec, plan.shape());
        let mut splits = 2;
        while splits <= most && u64::from(x) * u64::from(y) * u64::from(splits / 2) < two_waves {
            if let Ok(split) = plan.clone().with_split(splits) {
                plans.push(split);
            }
            splits *= 2;
        }
        plans.push(plan);
    }
    plans
}

/// `len` values in [-1, 1), never zero, from a small linear congruential generator, in
/// element type `T` (rounded to nearest: nonzero in every type): the timing does not depend
/// on the values, only on their not being special (zeros, NaN).
///
/// # Errors
/// [`Error::OutOfMemory`] when the host cannot hold them (a valid problem's operands can be
/// far larger than memory), instead of aborting.
fn pattern<T: Element>(len: usize, seed: u32) -> Result<Vec<T>> {
    let mut values = Vec::new();
    values
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            what: "autotune operands",
            bytes: len as u128 * T::DTYPE.size_bytes() as u128,
            on_device: false,
        })?;
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    values.extend((0..len).map(|_| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        // 23 random bits scaled to [-1, 1), then nudged off zero.
        let v = (state >> 9) as f32 / (1u32 << 22) as f32 - 1.0;
        // Values below 2^-24 would flush to zero in f16: none that small.
        T::from_f32(if v.abs() < 1.0e-3 { 0.5 } else { v })
    }));
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn an_impossible_pattern_is_out_of_memory_not_an_abort() {
        assert!(matches!(
            pattern::<f32>(usize::MAX / 2, 1),
            Err(super::Error::OutOfMemory {
                on_device: false,
                ..
            })
        ));
    }

    #[test]
    fn pattern_is_in_range_and_never_zero() {
        let values = pattern::<f32>(10_000, 3).unwrap();
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v) && *v != 0.0));
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert_ne!(pattern::<f32>(8, 1).unwrap(), pattern::<f32>(8, 2).unwrap());
        for v in pattern::<half::bf16>(10_000, 3).unwrap() {
            assert!((-1.0..=1.0).contains(&v.to_f32()) && v.to_f32() != 0.0);
        }
        for v in pattern::<half::f16>(10_000, 3).unwrap() {
            assert!((-1.0..=1.0).contains(&v.to_f32()) && v.to_f32() != 0.0);
        }
    }
}
