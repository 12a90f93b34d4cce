//! The GPU the benchmark runs on: the im2win engine (its context and stream carry every
//! launch, cuDNN's and cuBLAS's included), the device's name and the software versions.

use std::collections::BTreeMap;

use im2win::Engine;
use im2win::codegen::catalogue::support;

use crate::error::{Context, Result};

/// The device and what runs on it.
pub struct Gpu {
    /// The im2win engine; [`Engine::stream`] is the one stream everything runs on.
    pub engine: Engine,
    /// The device's name, e.g. `NVIDIA H200`.
    pub device: String,
    /// Versions seen at run time (driver, cuDNN, cuBLAS, im2win), for the report.
    pub software: BTreeMap<String, String>,
    /// cuDNN and cuBLAS, each loaded only if a selected method needs it.
    #[cfg(feature = "baselines")]
    pub libraries: crate::methods::libraries::Libraries,
}

impl Gpu {
    /// Opens device `ordinal` with im2win's default kernels and the benchmark's own (the
    /// ablation's and the baselines), the tuning table `tuning`, and the libraries that the
    /// selection needs (a missing library is not an error here: its methods are skipped
    /// with the reason).
    ///
    /// # Errors
    /// When there is no CUDA driver, no such device, or the engine cannot start.
    pub fn open(
        ordinal: usize,
        selection: &crate::method::Selection,
        tuning: &crate::runner::Tuning,
        workspace_limit: Option<usize>,
    ) -> Result<Gpu> {
        let (table, table_name) = tuning.table();
        // im2win's kernels, tuning table and dispatch, exactly as `im2win::engine` sets them
        // up, plus the benchmark's module (bench/build.rs), whose kernels dispatch never
        // picks: the ablation's variants are incomplete (`Variant::is_complete`), and the
        // baselines (`direct`, `im2col-cublas`) are no specialisations. The engine loads the
        // baselines from it, the part whose catalogue has them (`KernelModule::part_of`).
        let kernels = im2win::kernels().merged(im2win::include_kernels!("bench"));
        let engine = im2win::Engine::new(ordinal, kernels)
            .map(|engine| {
                engine
                    .with_tuning(table)
                    .with_workspace_limit(workspace_limit)
            })
            .context("starting the im2win engine")?;
        // Every layer needs the GPU oracle: without kernels (a build without nvcc) or
        // without a loadable fatbin, stop here with the reason rather than skip every layer.
        engine
            .function(support::DIRECT_F64)
            .context("loading im2win's kernels")?;
        let ctx = engine.context().clone();
        // SAFETY: every buffer the benchmark allocates from now on is used on the engine's
        // one stream only (cuDNN and cuBLAS are bound to it as well), so cudarc's
        // cross-stream event tracking has nothing to order. Without it, no event is
        // recorded per buffer per launch, which would cost host time on small layers.
        unsafe { ctx.disable_event_tracking() };
        let device = ctx.name().context("reading the device name")?;
        let mut software = BTreeMap::new();
        software.insert("im2win".to_string(), env!("CARGO_PKG_VERSION").to_string());
        software.insert("tuning_table".to_string(), table_name);
        let mut version = 0;
        // SAFETY: `Engine::new` checked that libcuda is loaded; the call writes one int.
        let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
        if status == cudarc::driver::sys::cudaError_enum::CUDA_SUCCESS {
            software.insert("cuda_driver".to_string(), format_cuda_version(version));
        }
        let (major, minor) = ctx
            .compute_capability()
            .context("reading the compute capability")?;
        software.insert("compute_capability".to_string(), format!("{major}.{minor}"));
        #[cfg(feature = "baselines")]
        let libraries =
            crate::methods::libraries::Libraries::open(engine.stream(), selection, &mut software);
        #[cfg(not(feature = "baselines"))]
        let _ = selection;
        Ok(Gpu {
            engine,
            device,
            software,
            #[cfg(feature = "baselines")]
            libraries,
        })
    }

    /// Whether the CUDA context still works: after a launch fails asynchronously (an
    /// illegal address, say) every later call fails too, and the run must stop.
    ///
    /// # Errors
    /// The driver's error when the stream cannot be synchronised.
    pub fn healthy(&self) -> Result<()> {
        self.engine
            .stream()
            .synchronize()
            .context("the CUDA context failed; later results would be meaningless")
    }
}

/// A CUDA version number (`1000·major + 10·minor`) as `major.minor`.
pub fn format_cuda_version(version: i32) -> String {
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions() {
        assert_eq!(format_cuda_version(13000), "13.0");
        assert_eq!(format_cuda_version(12090), "12.9");
    }
}
