//! What each compiled kernel costs on the GPU, as ptxas reported it: registers, shared memory,
//! stack and spills per kernel and architecture.
//!
//! build.rs writes a [`KernelReport`] beside the fatbin (`kernels.json`); the facade exposes it
//! (`im2win::kernel_resources()`), and `im2win kernels` lists it. Spills matter most: a kernel
//! that spills registers to local memory is usually several times slower than one that does
//! not, so build.rs turns any spill into a `cargo:warning`.

use serde::{Deserialize, Serialize};

/// ptxas's resource usage of one kernel for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelResources {
    /// The `extern "C"` kernel name.
    pub kernel: String,
    /// The real architecture, e.g. `sm_90`.
    pub arch: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Stack frame per thread, in bytes (local memory, including spill slots).
    pub stack_bytes: u32,
    /// Bytes of registers spilled to local memory per thread.
    pub spill_store_bytes: u32,
    /// Bytes reloaded from spill slots per thread.
    pub spill_load_bytes: u32,
}

impl KernelResources {
    /// Whether ptxas had to spill registers to local memory.
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

/// The resource report of one compiled fatbin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KernelReport {
    /// nvcc's version line, e.g. `Cuda compilation tools, release 13.0, V13.0.88`.
    pub nvcc_version: String,
    /// The images the fatbin holds, e.g. `["sm_80", "sm_90", "compute_90"]`.
    pub targets: Vec<String>,
    /// Size of the fatbin in bytes.
    pub fatbin_bytes: u64,
    /// One entry per kernel and real architecture, sorted by kernel then architecture.
    pub kernels: Vec<KernelResources>,
}

impl KernelReport {
    /// The report as pretty JSON (what build.rs writes to `kernels.json`).
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a report written by [`KernelReport::to_json`].
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The entries that spill registers.
    pub fn spilling(&self) -> impl Iterator<Item = &KernelResources> {
        self.kernels.iter().filter(|k| k.spills())
    }
}
