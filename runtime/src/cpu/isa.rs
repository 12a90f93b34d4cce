//! Which SIMD instruction set the CPU backend's micro-kernel uses: detected at run time,
//! or forced (`IM2WIN_CPU_ISA`, or [`super::conv2d_with_isa`]) so that tests can check
//! every code path on one machine.

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// An instruction-set level of the CPU micro-kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust that the compiler auto-vectorises for the build's baseline (SSE2 on
    /// x86-64): runs everywhere.
    Portable,
    /// x86-64 AVX2 with FMA: 256-bit vectors, 16 registers.
    Avx2,
    /// x86-64 AVX-512F: 512-bit vectors, 32 registers.
    Avx512,
    /// AArch64 Advanced SIMD (NEON, with fused multiply-add): 128-bit vectors, 32 registers.
    Neon,
}

/// The environment variable that forces a level for [`super::conv2d`]: `portable`, `avx2`,
/// `avx512` or `neon` (read once per process).
pub const ISA_ENV: &str = "IM2WIN_CPU_ISA";

impl Isa {
    /// Every level, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The level's name, as [`ISA_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The level named `name` (as [`Isa::name`] spells it, any case).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the level (checked at run time, not at build time).
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            // NEON is part of every AArch64 target Rust supports.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest level this CPU runs.
    pub fn detected() -> Isa {
        // Preference order: the wider vectors first.
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// The level [`super::conv2d`] uses: [`ISA_ENV`] when set, else [`Isa::detected`].
    /// Read once; later changes of the variable are not seen.
    ///
    /// # Errors
    /// [`Error::IsaUnavailable`] when the variable names a level this CPU cannot run, or
    /// no level at all.
    pub fn selected() -> Result<Isa> {
        static SELECTED: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
        let choice = SELECTED.get_or_init(|| match std::env::var(ISA_ENV) {
            Err(_) => Ok(Isa::detected()),
            Ok(name) => Isa::from_name(&name).ok_or(name),
        });
        match choice {
            Ok(isa) => isa.check(),
            Err(name) => Err(Error::IsaUnavailable {
                isa: format!("{name:?} (not one of portable, avx2, avx512, neon)"),
            }),
        }
    }

    /// `Ok(self)` if this CPU runs the level, else [`Error::IsaUnavailable`].
    ///
    /// # Errors
    /// [`Error::IsaUnavailable`] when it does not.
    pub fn check(self) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::IsaUnavailable {
                isa: self.name().to_string(),
            })
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse"), None);
    }

    #[test]
    fn detection_is_consistent() {
        assert!(Isa::Portable.is_available());
        assert!(Isa::detected().is_available());
        for isa in Isa::ALL {
            assert_eq!(isa.check().is_ok(), isa.is_available());
        }
    }
}
