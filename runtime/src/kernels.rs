//! A compiled fatbin together with the catalogue of specialisations it holds.

use std::borrow::Cow;

use im2win_codegen::Catalogue;

/// The kernels an [`Engine`](crate::Engine) can launch: one fatbin and its catalogue.
///
/// The facade's `im2win::kernels()` gives the default catalogue embedded at build time.
#[derive(Debug, Clone)]
pub struct KernelModule {
    fatbin: Option<Cow<'static, [u8]>>,
    catalogue: Catalogue,
}

impl KernelModule {
    /// A module from a fatbin (as written by nvcc `--fatbin`) and the catalogue it was
    /// compiled from.
    pub fn new(fatbin: impl Into<Cow<'static, [u8]>>, catalogue: Catalogue) -> Self {
        KernelModule {
            fatbin: Some(fatbin.into()),
            catalogue,
        }
    }

    /// A module whose kernels were not compiled (no nvcc at build time). Dispatch still
    /// works; launching returns [`Error::KernelsNotBuilt`](crate::Error::KernelsNotBuilt).
    pub fn not_built(catalogue: Catalogue) -> Self {
        KernelModule {
            fatbin: None,
            catalogue,
        }
    }

    /// The fatbin, or `None` if the kernels were not built.
    pub fn fatbin(&self) -> Option<&[u8]> {
        self.fatbin.as_deref()
    }

    /// The specialisations in the fatbin.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }
}
