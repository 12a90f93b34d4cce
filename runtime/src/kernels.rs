//! Compiled kernels: one or more fatbins, each with the catalogue of specialisations it holds.

use std::borrow::Cow;
use std::fmt;

use im2win_codegen::catalogue::baselines;
use im2win_codegen::{Catalogue, KernelSpec};

/// The kernels an [`Engine`](crate::Engine) can launch: one or more fatbins ("parts"), each
/// with its catalogue.
///
/// The facade's `im2win::kernels()` gives the default catalogue embedded at build time;
/// `im2win::include_kernels!("name")` gives the kernels a crate's own build.rs generated
/// (`im2win_codegen::Builder`). [`KernelModule::merged`] puts them together:
///
/// ```ignore
/// let kernels = im2win::kernels().merged(im2win::include_kernels!("custom"));
/// let engine = im2win::Engine::new(0, kernels)?;
/// ```
///
/// Dispatch ([`Engine::plan`](crate::Engine::plan)) then chooses from the union of the
/// catalogues ([`KernelModule::catalogue`]), and each kernel is loaded from the part that
/// lists it ([`KernelModule::part_of`]); the engine loads each fatbin into its own CUDA
/// module, on first use.
#[derive(Clone)]
pub struct KernelModule {
    parts: Vec<Part>,
    /// The union of the parts' catalogues, in part order, without duplicates.
    catalogue: Catalogue,
}

/// One fatbin of a [`KernelModule`] and the catalogue it was compiled from.
#[derive(Clone)]
pub struct Part {
    name: Cow<'static, str>,
    fatbin: Option<Cow<'static, [u8]>>,
    catalogue: Catalogue,
    /// Why the embedded catalogue could not be read; the engine refuses the module then.
    catalogue_error: Option<String>,
}

impl Part {
    /// The module name it was generated under (`im2win` for the default kernels; empty for
    /// a module made with [`KernelModule::new`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fatbin, or `None` if the kernels were not built.
    pub fn fatbin(&self) -> Option<&[u8]> {
        self.fatbin.as_deref()
    }

    /// The specialisations in the fatbin.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// [`Error::BadCatalogue`](crate::Error::BadCatalogue) when the part's embedded
    /// catalogue did not parse ([`KernelModule::embedded`]).
    ///
    /// # Errors
    /// As said.
    pub fn check_catalogue(&self) -> crate::Result<()> {
        match &self.catalogue_error {
            None => Ok(()),
            Some(reason) => Err(crate::Error::BadCatalogue {
                module: self.name.to_string(),
                reason: reason.clone(),
            }),
        }
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("fatbin_bytes", &self.fatbin.as_ref().map(|b| b.len()))
            .field("kernels", &self.catalogue.kernels.len())
            .finish()
    }
}

impl fmt::Debug for KernelModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelModule")
            .field("parts", &self.parts)
            .finish()
    }
}

impl KernelModule {
    /// A module from a fatbin (as written by nvcc `--fatbin`) and the catalogue it was
    /// compiled from.
    pub fn new(fatbin: impl Into<Cow<'static, [u8]>>, catalogue: Catalogue) -> Self {
        Self::from_part(Part {
            name: Cow::Borrowed(""),
            fatbin: Some(fatbin.into()),
            catalogue,
            catalogue_error: None,
        })
    }

    /// A module whose kernels were not compiled (no nvcc at build time). Dispatch still
    /// works; launching returns [`Error::KernelsNotBuilt`](crate::Error::KernelsNotBuilt).
    pub fn not_built(catalogue: Catalogue) -> Self {
        Self::from_part(Part {
            name: Cow::Borrowed(""),
            fatbin: None,
            catalogue,
            catalogue_error: None,
        })
    }

    /// The module `im2win_codegen::Builder` wrote as `<name>.fatbin` and
    /// `<name>.catalogue.json`; what `im2win::include_kernels!` expands to. An empty fatbin
    /// means the kernels were not built ([`KernelModule::not_built`]). A catalogue that does
    /// not parse (written by an incompatible im2win-codegen) leaves this part without
    /// kernels, and [`Engine::new`](crate::Engine::new) refuses the module with
    /// [`Error::BadCatalogue`](crate::Error::BadCatalogue).
    pub fn embedded(name: &'static str, fatbin: &'static [u8], catalogue_json: &str) -> Self {
        let (catalogue, catalogue_error) = match Catalogue::from_json(catalogue_json) {
            Ok(catalogue) => (catalogue, None),
            Err(err) => (Catalogue::default(), Some(err.to_string())),
        };
        Self::from_part(Part {
            name: Cow::Borrowed(name),
            fatbin: (!fatbin.is_empty()).then_some(Cow::Borrowed(fatbin)),
            catalogue,
            catalogue_error,
        })
    }

    fn from_part(part: Part) -> Self {
        KernelModule {
            catalogue: part.catalogue.clone(),
            parts: vec![part],
        }
    }

    /// This module's parts followed by `other`'s. Dispatch chooses from both catalogues; a
    /// spec that both list is loaded from this module's part. The union has the benchmark's
    /// baselines when either has them.
    pub fn merged(mut self, other: KernelModule) -> Self {
        self.catalogue.baselines |= other.catalogue.baselines;
        for spec in other.catalogue.kernels {
            if !self.catalogue.kernels.contains(&spec) {
                self.catalogue.kernels.push(spec);
            }
        }
        self.parts.extend(other.parts);
        self
    }

    /// The fatbin of the first part, or `None` if its kernels were not built.
    pub fn fatbin(&self) -> Option<&[u8]> {
        self.parts.first().and_then(Part::fatbin)
    }

    /// Whether every part's kernels were built.
    pub fn is_built(&self) -> bool {
        self.parts.iter().all(|p| p.fatbin.is_some())
    }

    /// Every specialisation of every part, without duplicates: what dispatch chooses from.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The fatbins, in merge order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The index of the part that the kernel `name` is loaded from: the first part whose
    /// catalogue lists it; for a baseline kernel ([`baselines`], in the benchmark's module
    /// only), the first part whose catalogue has [`Catalogue::baselines`]; for any other name
    /// (the support kernels, which every fatbin holds), the first part that has a fatbin,
    /// else the first part.
    pub fn part_of(&self, name: &str) -> usize {
        let listed = name.parse::<KernelSpec>().ok().and_then(|spec| {
            self.parts
                .iter()
                .position(|p| p.catalogue.kernels.contains(&spec))
        });
        let baseline = || {
            if baselines::ALL.contains(&name) {
                self.parts.iter().position(|p| p.catalogue.baselines)
            } else {
                None
            }
        };
        listed
            .or_else(baseline)
            .or_else(|| self.parts.iter().position(|p| p.fatbin.is_some()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use im2win_codegen::catalogue::support;
    use im2win_codegen::{DType, FixedGeometry, TileConfig};

    use super::*;

    fn fixed(size: u32, stride: u32) -> KernelSpec {
        KernelSpec::fixed(
            DType::F32,
            FixedGeometry::square(size, stride),
            TileConfig::PAPER,
        )
    }

    #[test]
    fn merged_modules_dispatch_from_the_union_and_load_from_the_owner() {
        let default = KernelModule::embedded(
            "im2win",
            b"fatbin-a",
            &Catalogue::new(vec![fixed(3, 1), fixed(1, 1)])
                .unwrap()
                .to_json(),
        );
        let custom = KernelModule::embedded(
            "custom",
            b"fatbin-b",
            &Catalogue::new(vec![fixed(9, 3), fixed(3, 1)])
                .unwrap()
                .to_json(),
        );
        let merged = default.merged(custom);
        assert_eq!(
            merged.catalogue().kernels,
            [fixed(3, 1), fixed(1, 1), fixed(9, 3)]
        );
        assert_eq!(merged.part_of(&fixed(9, 3).name()), 1);
        assert_eq!(merged.part_of(&fixed(3, 1).name()), 0);
        assert_eq!(merged.part_of(support::INPUT_TRANSFORM_F32), 0);
        assert_eq!(merged.parts()[1].name(), "custom");
        assert_eq!(merged.parts()[1].fatbin(), Some(&b"fatbin-b"[..]));
        assert!(merged.is_built());
    }

    #[test]
    fn empty_fatbin_means_not_built() {
        let catalogue = Catalogue::new(vec![fixed(9, 3)]).unwrap();
        let unbuilt = KernelModule::embedded("custom", b"", &catalogue.to_json());
        assert_eq!(unbuilt.fatbin(), None);
        assert!(!unbuilt.is_built());
        assert_eq!(unbuilt.catalogue(), &catalogue);
        // Support kernels come from the first part that has a fatbin.
        let both = unbuilt.merged(KernelModule::new(&b"x"[..], Catalogue::default()));
        assert_eq!(both.part_of(support::DIRECT_F64), 1);
        assert_eq!(both.part_of(&fixed(9, 3).name()), 0);
        assert!(format!("{both:?}").contains("fatbin_bytes: None"));
    }

    #[test]
    fn baselines_load_from_the_part_that_has_them() {
        let default = KernelModule::embedded(
            "im2win",
            b"fatbin-a",
            &Catalogue::new(vec![fixed(3, 1)]).unwrap().to_json(),
        );
        assert!(!default.catalogue().baselines);
        let bench = KernelModule::embedded(
            "bench",
            b"fatbin-b",
            &Catalogue::new(vec![fixed(9, 3)])
                .unwrap()
                .with_baselines()
                .to_json(),
        );
        let merged = default.clone().merged(bench);
        assert!(merged.catalogue().baselines);
        for name in baselines::ALL {
            assert_eq!(merged.part_of(name), 1, "{name}");
        }
        assert_eq!(merged.part_of(support::DIRECT_F64), 0);
        // Without a part that has them, a baseline is looked up like a support kernel (and
        // the launch then reports it missing).
        assert_eq!(default.part_of(baselines::DIRECT_F32), 0);
    }

    #[test]
    fn an_unreadable_catalogue_is_an_error_not_an_empty_module() {
        let module = KernelModule::embedded("old", b"fatbin", "{\"kernels\": 7}");
        assert!(module.catalogue().kernels.is_empty());
        let err = module.parts()[0].check_catalogue().unwrap_err();
        assert!(
            matches!(&err, crate::Error::BadCatalogue { module, .. } if module == "old"),
            "{err}"
        );
        let good = KernelModule::embedded("new", b"fatbin", &Catalogue::default().to_json());
        assert!(good.parts()[0].check_catalogue().is_ok());
    }
}
