//! The limits of a GPU that dispatch models: how many blocks of a kernel run at once.

use cudarc::driver::{CudaContext, sys};

use crate::error::Result;

/// What bounds the blocks resident on a GPU: its multiprocessors and, per multiprocessor,
/// shared memory, threads, blocks and registers. An engine reads them from its device
/// ([`DeviceLimits::of`]); planning without a GPU uses [`DeviceLimits::H200`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceLimits {
    /// Streaming multiprocessors (132 on an H200). A `u64` so that a hypothetical count
    /// from any caller saturates rather than wraps in the dispatch model.
    pub multiprocessors: u64,
    /// Shared memory of one multiprocessor, in bytes.
    pub shared_bytes_per_sm: u32,
    /// Shared memory the system reserves for each resident block, in bytes.
    pub shared_bytes_reserved_per_block: u32,
    /// The most shared memory one block may have once its kernel opts in (dynamic shared
    /// memory above 48 KiB), in bytes: 227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on
    /// sm_86/89. Dispatch leaves out tensor-core kernels that need more.
    pub shared_bytes_per_block_optin: u32,
    /// Resident threads per multiprocessor.
    pub threads_per_sm: u32,
    /// Resident blocks per multiprocessor.
    pub blocks_per_sm: u32,
    /// 32-bit registers per multiprocessor.
    pub registers_per_sm: u32,
    /// Compute capability, major × 10 + minor (90 for the H100 and H200). Dispatch picks the
    /// warpgroup-MMA kernels (`_wgmma`, built for sm_90a) only where it is 90.
    pub compute_capability: u32,
}

impl DeviceLimits {
    /// An NVIDIA H200 (compute capability 9.0), as its driver reports it.
    pub const H200: DeviceLimits = DeviceLimits {
        multiprocessors: 132,
        shared_bytes_per_sm: 228 * 1024,
        shared_bytes_reserved_per_block: 1024,
        shared_bytes_per_block_optin: 227 * 1024,
        threads_per_sm: 2048,
        blocks_per_sm: 32,
        registers_per_sm: 65_536,
        compute_capability: 90,
    };

    /// The limits of the device of `ctx`, from the driver's attributes.
    ///
    /// # Errors
    /// [`Error::Driver`](crate::Error::Driver) when an attribute cannot be read.
    pub fn of(ctx: &CudaContext) -> Result<DeviceLimits> {
        use sys::CUdevice_attribute_enum as A;
        let read = |attribute| -> Result<u32> {
            let value = ctx.attribute(attribute)?;
            // A driver never reports a negative count; 0 would only make dispatch pessimistic.
            Ok(u32::try_from(value).unwrap_or(0))
        };
        Ok(DeviceLimits {
            multiprocessors: u64::from(read(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1)),
            shared_bytes_per_sm: read(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?,
            shared_bytes_reserved_per_block: read(
                A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK,
            )?,
            shared_bytes_per_block_optin: read(
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?,
            threads_per_sm: read(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
            blocks_per_sm: read(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR)?,
            registers_per_sm: read(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR)?,
            compute_capability: 10 * read(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?
                + read(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        })
    }

    /// Whether the device runs the sm_90a SASS of the warpgroup-MMA kernels (compute
    /// capability 9.0).
    pub const fn runs_warpgroup_mma(&self) -> bool {
        self.compute_capability == 90
    }

    /// The same limits per multiprocessor with `multiprocessors` of them (at least 1).
    pub fn with_multiprocessors(self, multiprocessors: u64) -> DeviceLimits {
        DeviceLimits {
            multiprocessors: multiprocessors.max(1),
            ..self
        }
    }
}
