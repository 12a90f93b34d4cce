//! cuDNN and cuBLAS, loaded at run time through cudarc and bound to the engine's stream.
//!
//! cudarc panics on the first call into a library it cannot load, so presence is checked
//! first with `is_culib_present`; a missing library becomes a reason that its methods are
//! skipped, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::cudnn::Cudnn;
use cudarc::driver::CudaStream;

use crate::method::Selection;

/// The libraries' handles, or why each is unavailable.
pub struct Libraries {
    /// cuDNN's handle on the engine's stream.
    pub cudnn: Result<Arc<Cudnn>, String>,
    /// cuBLAS's handle on the engine's stream, in its default (strict float32) math mode.
    pub cublas: Result<CudaBlas, String>,
}

/// Where the H200 machine keeps the libraries (`../shared/GPU.md`).
const LIBRARY_HINT: &str = "put it on LD_LIBRARY_PATH (on the H200: the pip copies inside PyTorch's \
environment, SP=$(python3 -c 'import site; print(site.getsitepackages()[0])'); \
LD_LIBRARY_PATH=$SP/nvidia/cudnn/lib:$SP/nvidia/cu13/lib)";

impl Libraries {
    /// Loads the libraries the selection needs, on `stream`, and records their versions.
    pub fn open(
        stream: &Arc<CudaStream>,
        selection: &Selection,
        software: &mut BTreeMap<String, String>,
    ) -> Libraries {
        let cudnn = if selection.needs_cudnn() {
            open_cudnn(stream, software)
        } else {
            Err("not selected".to_string())
        };
        let cublas = if selection.im2col_cublas {
            open_cublas(stream, software)
        } else {
            Err("not selected".to_string())
        };
        Libraries { cudnn, cublas }
    }
}

/// cuDNN's handle on `stream`, or why there is none.
fn open_cudnn(
    stream: &Arc<CudaStream>,
    software: &mut BTreeMap<String, String>,
) -> Result<Arc<Cudnn>, String> {
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { cudarc::cudnn::sys::is_culib_present() } {
        return Err(format!("libcudnn not found: {LIBRARY_HINT}"));
    }
    // `Cudnn::new` unwraps binding the context; bind it first so that this cannot fail there.
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| format!("binding the CUDA context: {e}"))?;
    let handle =
        Cudnn::new(stream.clone()).map_err(|e| format!("creating the cuDNN handle: {e}"))?;
    software.insert(
        "cudnn".to_string(),
        format_library_version(cudarc::cudnn::result::get_version()),
    );
    Ok(handle)
}

/// cuBLAS's handle on `stream` in strict float32 mode, or why there is none.
fn open_cublas(
    stream: &Arc<CudaStream>,
    software: &mut BTreeMap<String, String>,
) -> Result<CudaBlas, String> {
    use cudarc::cublas::sys;
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { sys::is_culib_present() } {
        return Err(format!("libcublas not found: {LIBRARY_HINT}"));
    }
    let blas =
        CudaBlas::new(stream.clone()).map_err(|e| format!("creating the cuBLAS handle: {e}"))?;
    // Strict float32: the default math mode never uses TF32 tensor cores for SGEMM. Set it
    // explicitly so that nothing else (a changed default) can turn them on.
    // SAFETY: a valid handle and a valid enum value.
    unsafe { sys::cublasSetMathMode(*blas.handle(), sys::cublasMath_t::CUBLAS_DEFAULT_MATH) }
        .result()
        .map_err(|e| format!("setting cuBLAS's math mode: {e}"))?;
    let mut version = 0;
    // SAFETY: a valid handle; the call writes one int.
    if unsafe { sys::cublasGetVersion_v2(*blas.handle(), &mut version) }
        .result()
        .is_ok()
    {
        software.insert(
            "cublas".to_string(),
            format_library_version(version as usize),
        );
    }
    Ok(blas)
}

/// cuDNN 9 and cuBLAS 13 encode versions as `major·10000 + minor·100 + patch`
/// (`91900` is 9.19.0); older cuDNN 8 used `major·1000 + minor·100 + patch`.
pub fn format_library_version(version: usize) -> String {
    if version >= 10000 {
        format!(
            "{}.{}.{} ({version})",
            version / 10000,
            (version % 10000) / 100,
            version % 100
        )
    } else {
        format!(
            "{}.{}.{} ({version})",
            version / 1000,
            (version % 1000) / 100,
            version % 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(format_library_version(91900), "9.19.0 (91900)");
        assert_eq!(format_library_version(130100), "13.1.0 (130100)");
        assert_eq!(format_library_version(8907), "8.9.7 (8907)");
    }
}
