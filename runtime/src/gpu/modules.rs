//! The CUDA modules of an engine: one per fatbin ("part") of its
//! [`KernelModule`](crate::KernelModule), each loaded on first use, and which of them a
//! kernel comes from ([`KernelModule::part_of`]). A module is checked against this
//! runtime's ABI stamp ([`im2win_codegen::abi`]) as it loads, before any of its kernels can
//! be launched.

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaModule, CudaStream, DriverError, sys};
use cudarc::nvrtc::Ptx;
use im2win_codegen::abi;

use crate::error::{Error, Result};
use crate::kernels::KernelModule;

/// The loaded CUDA modules, by part index; `None` until a kernel of that part is needed.
#[derive(Default)]
pub(super) struct LoadedModules(Mutex<Vec<Option<Arc<CudaModule>>>>);

impl LoadedModules {
    /// How many fatbins are loaded.
    pub(super) fn loaded(&self) -> usize {
        self.lock().iter().flatten().count()
    }

    /// The CUDA module that holds the kernel `name`, loading its fatbin into the context of
    /// `stream` on first use and checking its ABI stamp then.
    ///
    /// # Errors
    /// [`Error::KernelsNotBuilt`] when that part has no fatbin, [`Error::AbiMismatch`] when
    /// its stamp is missing or differs from this runtime's, [`Error::Driver`] when loading
    /// fails.
    pub(super) fn for_kernel(
        &self,
        stream: &Arc<CudaStream>,
        kernels: &KernelModule,
        name: &str,
    ) -> Result<Arc<CudaModule>> {
        let index = kernels.part_of(name);
        let mut loaded = self.lock();
        if let Some(Some(module)) = loaded.get(index) {
            return Ok(module.clone());
        }
        let part = kernels.parts().get(index).ok_or(Error::KernelsNotBuilt)?;
        let fatbin = part.fatbin().ok_or(Error::KernelsNotBuilt)?;
        let module = stream
            .context()
            .load_module(Ptx::from_binary(fatbin.to_vec()))?;
        let found = read_stamp(&module, stream)?;
        let expected = abi::abi_id();
        if found != Some(expected) {
            return Err(Error::AbiMismatch {
                module: part.name().to_string(),
                expected,
                found,
            });
        }
        if loaded.len() <= index {
            loaded.resize(index + 1, None);
        }
        loaded[index] = Some(module.clone());
        Ok(module)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Arc<CudaModule>>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The module's ABI stamp ([`abi::ABI_SYMBOL`]), or `None` when it defines no 8-byte global
/// of that name. Copies 8 bytes to the host and waits for them (once per module load).
fn read_stamp(module: &Arc<CudaModule>, stream: &Arc<CudaStream>) -> Result<Option<u64>> {
    let global = match module.get_global(abi::ABI_SYMBOL, stream) {
        Ok(global) => global,
        Err(DriverError(sys::cudaError_enum::CUDA_ERROR_NOT_FOUND)) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    if global.len() != 8 {
        return Ok(None);
    }
    let mut bytes = [0_u8; 8];
    stream.memcpy_dtoh(&global, &mut bytes)?;
    stream.synchronize()?;
    Ok(Some(u64::from_le_bytes(bytes)))
}
