//! Renders the default catalogue and compiles it with nvcc into `OUT_DIR/im2win.fatbin`, which
//! `src/lib.rs` embeds. Beside it: `catalogue.json` (the specs the fatbin holds) and
//! `kernels.json` (ptxas's registers, shared memory and spills per kernel).
//!
//! Without nvcc the crate still builds: a `cargo:warning` says why, and the cfg
//! `im2win_no_kernels` makes `im2win::kernels()` return a module without a fatbin (the CPU
//! backend still works). With `IM2WIN_REQUIRE_NVCC=1` (CI, releases) a missing nvcc or a failed
//! compile fails the build instead. On docs.rs (`DOCS_RS`) nvcc is never run.
//!
//! Environment: `NVCC`, `CUDA_HOME`, `CUDA_PATH` (finding nvcc), `IM2WIN_CUDA_ARCHS` (targets,
//! e.g. `80,90`), `IM2WIN_REQUIRE_NVCC`, `IM2WIN_DUMP_DIR` (copy the rendered .cu files there),
//! `DOCS_RS`.
//!
//! The compile is cached: if the rendered sources, the targets, the flags and the nvcc version
//! are what produced the fatbin already in `OUT_DIR`, it is reused.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use im2win_codegen::nvcc::{self, CudaTargets, Nvcc, NvccError};
use im2win_codegen::render::{self, RenderedSources};
use im2win_codegen::{Catalogue, KernelReport};

const REQUIRE_NVCC: &str = "IM2WIN_REQUIRE_NVCC";
const DUMP_DIR: &str = "IM2WIN_DUMP_DIR";
const DOCS_RS: &str = "DOCS_RS";

fn main() {
    // The templates and the generator reach this script through the im2win-codegen
    // build-dependency (a change rebuilds it, which reruns this script); naming them as well
    // is belt and braces inside the workspace. Only existing paths: cargo reruns a script on
    // every build when a named path is missing, as these are in a published package.
    for path in ["templates", "codegen/src", "build.rs"] {
        if Path::new(path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    let variables = [
        nvcc::ENV_NVCC,
        nvcc::ENV_ARCHS,
        REQUIRE_NVCC,
        DUMP_DIR,
        DOCS_RS,
    ];
    for variable in variables.into_iter().chain(nvcc::ENV_CUDA_ROOTS) {
        println!("cargo::rerun-if-env-changed={variable}");
    }
    println!("cargo::rustc-check-cfg=cfg(im2win_no_kernels)");

    let required = std::env::var(REQUIRE_NVCC).is_ok_and(|v| v == "1");
    match build() {
        Ok(Built::Kernels) => {}
        // docs.rs has no toolkit and needs none: no kernels, whatever else is set.
        Ok(Built::Documentation) => println!("cargo::rustc-cfg=im2win_no_kernels"),
        Err(error) if !required && error.is_environmental() => no_kernels(&error.to_string()),
        Err(error) => fail(&error.to_string()),
    }
}

/// Builds the crate without kernels, saying why. Each line of the reason (nvcc's output can
/// have many) is a warning of its own: cargo reads one directive per line.
fn no_kernels(why: &str) {
    println!(
        "cargo::warning=im2win: GPU kernels not built (set {REQUIRE_NVCC}=1 to make this an error):"
    );
    for line in why.lines().filter(|l| !l.trim().is_empty()).take(40) {
        println!("cargo::warning=  {line}");
    }
    println!("cargo::rustc-cfg=im2win_no_kernels");
}

/// Ends the build script with an error message (cargo shows stderr of a failed script).
fn fail(message: &str) -> ! {
    eprintln!("error: im2win: {message}");
    std::process::exit(1);
}

/// What the build produced.
enum Built {
    /// `im2win.fatbin` and `kernels.json` are in `OUT_DIR`.
    Kernels,
    /// A documentation build (`DOCS_RS`): no kernels.
    Documentation,
}

/// Why the build failed.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("cannot render the kernels: {0}")]
    Render(#[from] render::RenderError),
    #[error("{0}")]
    Nvcc(#[from] NvccError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("OUT_DIR is not set (build.rs must run under cargo)")]
    NoOutDir,
}

impl BuildError {
    /// Whether the error comes from the machine (nvcc missing, failing or producing something
    /// unexpected) rather than from our templates or the user's settings: only those degrade
    /// to "no kernels" when nvcc is not required. A template that does not render, or an
    /// `IM2WIN_CUDA_ARCHS` typo, fails everywhere.
    fn is_environmental(&self) -> bool {
        match self {
            BuildError::Nvcc(error) => !matches!(error, NvccError::BadTargets { .. }),
            BuildError::Render(_) | BuildError::Io { .. } | BuildError::NoOutDir => false,
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), BuildError> {
    std::fs::write(path, contents).map_err(io_error("write", path))
}

fn build() -> Result<Built, BuildError> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?);
    let catalogue = Catalogue::default_catalogue();
    write(&out_dir.join("catalogue.json"), catalogue.to_json())?;

    // Rendering needs no toolkit, so it always runs: a template error fails every build, and
    // IM2WIN_DUMP_DIR works without nvcc.
    let sources = render::render_catalogue(&catalogue)?;
    if let Some(dir) = std::env::var_os(DUMP_DIR).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        sources
            .write_to(&dir)
            .map_err(io_error("write the rendered sources to", &dir))?;
    }
    if std::env::var_os(DOCS_RS).is_some() {
        return Ok(Built::Documentation);
    }
    let targets = CudaTargets::from_env()?;
    let nvcc = Nvcc::locate()?;
    let version = nvcc.version()?;

    let work_dir = out_dir.join("nvcc");
    let fatbin = out_dir.join("im2win.fatbin");
    let log = out_dir.join("ptxas.log");
    let key_file = out_dir.join("im2win.key");
    let key = cache_key(&sources, &nvcc.fingerprint(&targets, &work_dir), &version);
    let cached = std::fs::read_to_string(&key_file).is_ok_and(|k| k == key)
        && fatbin.is_file()
        && log.is_file();
    let (fatbin_bytes, ptxas_log) = if cached {
        let bytes = std::fs::metadata(&fatbin)
            .map_err(io_error("read", &fatbin))?
            .len();
        let ptxas_log = std::fs::read_to_string(&log).map_err(io_error("read", &log))?;
        (bytes, ptxas_log)
    } else {
        let jobs = std::env::var("NUM_JOBS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let output = nvcc.compile(&sources, &targets, &work_dir, jobs)?;
        write(&fatbin, &output.fatbin)?;
        write(&log, &output.ptxas_log)?;
        // Written last: a build interrupted before this point recompiles next time.
        write(&key_file, &key)?;
        (output.fatbin.len() as u64, output.ptxas_log)
    };

    // The report is re-derived from the saved ptxas log even on a cache hit, so that it always
    // follows the current parser.
    let report = KernelReport {
        nvcc_version: version
            .lines()
            .find(|l| l.contains("release"))
            .unwrap_or(version.trim())
            .to_string(),
        targets: targets.names(),
        fatbin_bytes,
        kernels: nvcc::parse_ptxas_log(&ptxas_log),
    };
    for k in report.spilling() {
        println!(
            "cargo::warning=im2win: {} spills on {}: {} bytes stored, {} bytes loaded per thread",
            k.kernel, k.arch, k.spill_store_bytes, k.spill_load_bytes
        );
    }
    write(&out_dir.join("kernels.json"), report.to_json())?;
    Ok(Built::Kernels)
}

/// Everything the fatbin depends on, hashed: the rendered sources, the commands that compile
/// them (nvcc binary, flags, targets) and the nvcc version.
fn cache_key(sources: &RenderedSources, commands: &str, version: &str) -> String {
    // SipHash with fixed keys: deterministic for a given Rust release, and a different release
    // also changes OUT_DIR, so the key never has to be compared across releases.
    let mut hasher = std::hash::DefaultHasher::new();
    render::COMMON_HEADER.hash(&mut hasher);
    sources.translation_unit().hash(&mut hasher);
    for file in &sources.files {
        (&file.file_name, &file.source).hash(&mut hasher);
    }
    commands.hash(&mut hasher);
    version.hash(&mut hasher);
    format!(
        "{:016x} {}\n",
        hasher.finish(),
        version.lines().last().unwrap_or_default()
    )
}
