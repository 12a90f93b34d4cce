//! Timing with CUDA events, and the check-then-time harness every method goes through.
//!
//! One repetition runs the method once on every buffer set, in order; events recorded
//! between repetitions give its time, divided by the number of sets. All repetitions are
//! queued back to back after the warm-up (the host only waits at the end), so the GPU never
//! idles between them and launch overhead is hidden as it is in a real network.

use std::sync::Arc;

use cudarc::driver::{CudaStream, sys::CUevent_flags};
use im2win::Element;

use crate::buffers::{BufferSets, poison};
use crate::error::{BenchError, Context, Result};
use crate::stats::{Summary, relative_error, summarize};

/// How many times to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingConfig {
    /// Untimed rounds over all sets first.
    pub warmup: usize,
    /// Timed repetitions (rounds over all sets); the median is reported.
    pub reps: usize,
}

/// Times `run(sets, i)` over every set `i`, `config.reps` times after `config.warmup`
/// rounds, and summarises the per-convolution times in milliseconds.
///
/// # Errors
/// The first error of `run`, or of recording or reading an event.
pub fn time_rotated<T, F>(
    stream: &Arc<CudaStream>,
    sets: &mut BufferSets<T>,
    config: TimingConfig,
    mut run: F,
) -> Result<Summary>
where
    F: FnMut(&mut BufferSets<T>, usize) -> Result<()>,
{
    let count = sets.len();
    for _ in 0..config.warmup {
        for set in 0..count {
            run(sets, set)?;
        }
    }
    let record = || {
        stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .context("recording a timing event")
    };
    let mut events = Vec::with_capacity(config.reps + 1);
    events.push(record()?);
    let queueing = std::time::Instant::now();
    for _ in 0..config.reps {
        for set in 0..count {
            run(sets, set)?;
        }
        events.push(record()?);
    }
    // Nothing above waits for the GPU (reading the events below does).
    let host_ms = queueing.elapsed().as_secs_f64() * 1e3 / (config.reps * count).max(1) as f64;
    let samples = events
        .windows(2)
        .map(|pair| {
            pair[0]
                .elapsed_ms(&pair[1])
                .map(|ms| f64::from(ms) / count as f64)
                .context("reading a timing event (a launch failed asynchronously?)")
        })
        .collect::<Result<Vec<f64>>>()?;
    let summary =
        summarize(&samples).ok_or_else(|| BenchError::new("no repetitions to time (--reps 0)"))?;
    Ok(Summary { host_ms, ..summary })
}

/// Checks a method, then times it.
///
/// The check poisons set 0's output with NaN, runs the method once on set 0 and compares
/// the result with `reference` (`‖out − ref‖₂ / ‖ref‖₂`). That run also warms the method
/// up; then [`time_rotated`] times it.
///
/// # Errors
/// The first error of `run`, a failed copy, or a timing error.
pub fn check_and_time<T: Element, F>(
    stream: &Arc<CudaStream>,
    sets: &mut BufferSets<T>,
    reference: &[f64],
    config: TimingConfig,
    mut run: F,
) -> Result<(Summary, f64)>
where
    F: FnMut(&mut BufferSets<T>, usize) -> Result<()>,
{
    poison(stream, &mut sets.outputs[0])?;
    run(sets, 0)?;
    let out = stream
        .clone_dtoh(&sets.outputs[0])
        .context("copying the output back for the check (a launch failed asynchronously?)")?;
    let rel_err = relative_error(&out, reference);
    drop(out);
    let times = time_rotated(stream, sets, config, run)?;
    Ok((times, rel_err))
}
