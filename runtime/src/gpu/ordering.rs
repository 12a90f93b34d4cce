//! Ordering the engine's launches with the streams its operands belong to.
//!
//! cudarc orders the uses of a buffer across streams with events, but only when the
//! buffer's own `CudaContext` object tracks them (it has created a stream of its own), and
//! each buffer keeps a single read event that its latest reader overwrites. So buffers made
//! on the legacy default stream of another context object (`CudaContext::new(0)?` and its
//! `default_stream()`, the common idiom), an input that a second stream of the engine's
//! context reads after the engine, or one that two engines read, slip through: the kernel
//! can read an input before its upload lands, a copy back can read the output before the
//! kernel writes it, and a drop can free an input the kernel still reads.
//!
//! The engine therefore orders every call itself, whatever cudarc tracks. Before queuing,
//! its launch stream waits for everything queued so far on each operand's stream; after
//! queuing, each operand's stream waits for the engine's work. An operand on the launch
//! stream itself needs neither (the stream orders it), which is the free path of an engine
//! made with [`Engine::on_stream`](super::Engine::on_stream) on the caller's stream.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, sys};

use crate::error::Result;

/// Two reusable events, recorded anew by each call: a stream wait uses the state an event
/// had when the wait was queued, so re-recording it later changes no earlier wait. The
/// engine holds them under its launch lock, so calls from several threads cannot
/// interleave their records.
pub(super) struct StreamJoin {
    /// Recorded on each operand's stream; the launch stream waits on it.
    before: CudaEvent,
    /// Recorded on the launch stream after the launches; each operand's stream waits on it.
    after: CudaEvent,
}

impl StreamJoin {
    /// Two events of `ctx` without timing (cheaper to record and wait on).
    pub(super) fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        Ok(StreamJoin {
            before: ctx.new_event(flags)?,
            after: ctx.new_event(flags)?,
        })
    }

    /// Makes `launch` wait for the work queued so far on each of `streams`.
    pub(super) fn wait_for(&self, launch: &CudaStream, streams: &[&CudaStream]) -> Result<()> {
        for stream in streams {
            self.before.record(stream)?;
            launch.wait(&self.before)?;
        }
        Ok(())
    }

    /// Makes each of `streams` wait for the work queued so far on `launch`.
    pub(super) fn release_to(&self, launch: &CudaStream, streams: &[&CudaStream]) -> Result<()> {
        if streams.is_empty() {
            return Ok(());
        }
        self.after.record(launch)?;
        for stream in streams {
            stream.wait(&self.after)?;
        }
        Ok(())
    }
}

/// The distinct streams among `streams` other than `launch`, in first-seen order. Two
/// `CudaStream` objects are the same stream when they wrap the same handle in the same
/// CUDA context (the legacy default stream of two context objects of one primary context
/// is one stream).
pub(super) fn other_streams<'a>(
    launch: &CudaStream,
    streams: impl IntoIterator<Item = &'a CudaStream>,
) -> Vec<&'a CudaStream> {
    let mut distinct: Vec<&CudaStream> = Vec::new();
    for stream in streams {
        if stream != launch && !distinct.contains(&stream) {
            distinct.push(stream);
        }
    }
    distinct
}
