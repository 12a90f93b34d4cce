//! The CUDA modules of an engine: one per fatbin ("part") of its
//! [`KernelModule`](crate::KernelModule), each loaded on first use, and which of them a
//! kernel comes from ([`KernelModule::part_of`]).

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;

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

    /// The CUDA module that holds the kernel `name`, loading its fatbin into `ctx` on first
    /// use.
    ///
    /// # Errors
    /// [`Error::KernelsNotBuilt`] when that part has no fatbin, [`Error::Driver`] when
    /// loading fails.
    pub(super) fn for_kernel(
        &self,
        ctx: &Arc<CudaContext>,
        kernels: &KernelModule,
        name: &str,
    ) -> Result<Arc<CudaModule>> {
        let index = kernels.part_of(name);
        let mut loaded = self.lock();
        if let Some(Some(module)) = loaded.get(index) {
            return Ok(module.clone());
        }
        let fatbin = kernels
            .parts()
            .get(index)
            .and_then(|part| part.fatbin())
            .ok_or(Error::KernelsNotBuilt)?;
        let module = ctx.load_module(Ptx::from_binary(fatbin.to_vec()))?;
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
