//! The generator as a library: render a catalogue, compile it with nvcc, and write the fatbin
//! and its catalogue into a build script's `OUT_DIR`.
//!
//! im2win's own build.rs is one call of [`Builder`] (the default catalogue, named `im2win`),
//! im2win-bench's another (the ablation's kernels and the baselines, named `bench`); a
//! user's build.rs makes one with the specialisations it needs, from code or from a TOML
//! manifest ([`crate::manifest`]):
//!
//! ```no_run
//! // build.rs of a crate with build-dependency
//! // im2win-codegen = { version = "0.1", features = ["generate"] }
//! use im2win_codegen::{Builder, DType, FixedGeometry, KernelSpec, TileConfig};
//!
//! fn main() {
//!     // Either name the kernels in code ...
//!     Builder::new("custom")
//!         .kernel(KernelSpec::fixed(DType::F32, FixedGeometry::square(9, 3), TileConfig::PAPER))
//!         .build_or_exit();
//!     // ... or in a manifest that `im2win::conv2d!(.., catalogue = "im2win.toml")` reads too.
//!     Builder::from_manifest("im2win.toml").build_or_exit();
//! }
//! ```
//!
//! and embeds the result with `im2win::include_kernels!("custom")`, a `KernelModule` to merge
//! with `im2win::kernels()`.
//!
//! # What it writes
//! Into `OUT_DIR` (or [`Builder::out_dir`]), for a module named `<name>`:
//! * `<name>.fatbin`: every kernel of the catalogue plus the support kernels
//!   ([`crate::catalogue::support`]: the transforms, the split reduction, the float64
//!   oracle) for every target; **empty** when the kernels were not built, which
//!   `KernelModule::embedded` reads as "not built". The benchmark's baselines
//!   ([`crate::catalogue::baselines`]) are in it only with [`Builder::with_baselines`], which
//!   only im2win-bench's build.rs calls: neither im2win's default fatbin nor a user's holds
//!   them;
//! * `<name>.catalogue.json`: the catalogue ([`Catalogue::to_json`]), with
//!   `"baselines": true` when the fatbin holds the baselines;
//! * `<name>.kernels.json`: ptxas's report ([`KernelReport`]), or `null` when not built;
//! * `<name>.nvcc/`, `<name>.key`, `<name>.ptxas.log`: the work directory and the cache.
//!
//! # Without nvcc
//! As im2win's own build: when nvcc is missing or fails, the build script still succeeds, with
//! a `cargo:warning` saying why, and the fatbin is empty (the kernels then fail at run time with
//! `Error::KernelsNotBuilt`, and the CPU backend works). With `IM2WIN_REQUIRE_NVCC=1` (or
//! [`Builder::require_nvcc`]) that is a build error instead. Under docs.rs (`DOCS_RS`), and
//! with `IM2WIN_SKIP_NVCC=1` (builds that only check code), nvcc is never run and no warning
//! is printed.
//!
//! # Environment
//! `NVCC`, `CUDA_HOME`, `CUDA_PATH` (finding nvcc, see [`Nvcc::locate`]),
//! `IM2WIN_CUDA_ARCHS` (targets; overrides [`Builder::targets`] and a manifest's `archs`),
//! `IM2WIN_REQUIRE_NVCC`, `IM2WIN_SKIP_NVCC`, `IM2WIN_DUMP_DIR` (copy the rendered `.cu`
//! files into `$IM2WIN_DUMP_DIR/<name>/`), `DOCS_RS`, `NUM_JOBS` (parallel nvcc processes). In a build
//! script the builder prints `cargo::rerun-if-env-changed` for each, and
//! `cargo::rerun-if-changed` for the manifest.
//!
//! # Caching
//! The compile is skipped when the rendered sources, the nvcc commands (binary, flags,
//! targets) and the nvcc version are those that produced the fatbin already in `OUT_DIR`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::catalogue::Catalogue;
use crate::manifest::{Manifest, ManifestError, validate_name};
use crate::nvcc::{self, CudaTargets, Nvcc, NvccError};
use crate::render::{self, RenderError, RenderedSources};
use crate::resources::KernelReport;
use crate::spec::{KernelSpec, SpecError};

/// Environment variable: `1` makes a missing or failing nvcc a build error.
pub const ENV_REQUIRE_NVCC: &str = "IM2WIN_REQUIRE_NVCC";
/// Environment variable: a directory to copy the rendered CUDA sources into (one
/// subdirectory per module name).
pub const ENV_DUMP_DIR: &str = "IM2WIN_DUMP_DIR";
/// Environment variable: `1` renders but never runs nvcc, without a warning (the kernels are
/// not built): for builds that only check code, such as the macro's UI tests.
pub const ENV_SKIP_NVCC: &str = "IM2WIN_SKIP_NVCC";
/// Set by docs.rs: documentation builds never run nvcc.
const ENV_DOCS_RS: &str = "DOCS_RS";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The module name cannot be a file stem.
    #[error("{0}")]
    BadName(String),
    /// The builder names no kernel.
    #[error(
        "module `{0}` names no kernel: add one with Builder::kernel or a [[kernel]] table in the manifest"
    )]
    Empty(String),
    /// A spec is invalid or named twice.
    #[error("invalid catalogue: {0}")]
    Spec(#[from] SpecError),
    /// The manifest could not be read or parsed.
    #[error("invalid manifest {0}")]
    Manifest(#[from] ManifestError),
    /// The templates did not render (a bug in im2win-codegen).
    #[error("cannot render the kernels: {0}")]
    Render(#[from] RenderError),
    /// nvcc was not found, failed, or produced an incomplete fatbin; or the targets are
    /// invalid.
    #[error("{0}")]
    Nvcc(#[from] NvccError),
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Neither [`Builder::out_dir`] nor `OUT_DIR` says where to write.
    #[error("OUT_DIR is not set: run the builder from a build script, or call Builder::out_dir")]
    NoOutDir,
}

impl BuildError {
    /// Whether the error comes from the machine (nvcc missing, failing or producing something
    /// unexpected) rather than from the catalogue, the templates or the settings: only those
    /// degrade to "no kernels" when nvcc is not required. An `IM2WIN_CUDA_ARCHS` typo fails
    /// everywhere.
    pub fn is_environmental(&self) -> bool {
        match self {
            BuildError::Nvcc(error) => !matches!(error, NvccError::BadTargets { .. }),
            _ => false,
        }
    }
}

/// What a build wrote.
#[derive(Debug, Clone)]
pub struct Output {
    /// The module's name.
    pub name: String,
    /// `<out>/<name>.fatbin` (empty when not built).
    pub fatbin: PathBuf,
    /// `<out>/<name>.catalogue.json`.
    pub catalogue_file: PathBuf,
    /// `<out>/<name>.kernels.json`.
    pub report_file: PathBuf,
    /// The catalogue the fatbin holds.
    pub catalogue: Catalogue,
    /// ptxas's report; `None` when not built.
    pub report: Option<KernelReport>,
    /// Why the kernels were not built (no nvcc, a docs.rs build); `None` when they were.
    pub not_built: Option<String>,
}

impl Output {
    /// Whether the fatbin holds the kernels.
    pub fn built(&self) -> bool {
        self.not_built.is_none()
    }
}

/// Renders and compiles one module of kernels: see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Builder {
    name: Option<String>,
    manifest: Option<PathBuf>,
    kernels: Vec<KernelSpec>,
    baselines: bool,
    targets: Option<CudaTargets>,
    out_dir: Option<PathBuf>,
    nvcc: Option<PathBuf>,
    require_nvcc: Option<bool>,
    cargo: Option<bool>,
}

impl Builder {
    /// A builder for the module `name` (ASCII letters, digits, `_`, `-`), with no kernels
    /// yet.
    pub fn new(name: impl Into<String>) -> Self {
        Builder {
            name: Some(name.into()),
            manifest: None,
            kernels: Vec::new(),
            baselines: false,
            targets: None,
            out_dir: None,
            nvcc: None,
            require_nvcc: None,
            cargo: None,
        }
    }

    /// A builder for the module a TOML manifest describes ([`crate::manifest`]): its name,
    /// kernels and targets. A relative path is relative to the working directory, which in
    /// a build script is the package's root. The file is read by [`Builder::build`] (so
    /// errors surface there); [`Builder::kernel`] adds to its kernels.
    pub fn from_manifest(path: impl Into<PathBuf>) -> Self {
        Builder {
            manifest: Some(path.into()),
            name: None,
            ..Builder::new("")
        }
    }

    /// Adds a specialisation.
    pub fn kernel(mut self, spec: KernelSpec) -> Self {
        self.kernels.push(spec);
        self
    }

    /// Adds specialisations.
    pub fn kernels(mut self, specs: impl IntoIterator<Item = KernelSpec>) -> Self {
        self.kernels.extend(specs);
        self
    }

    /// Adds every specialisation of `catalogue`, and its baselines if it has them
    /// ([`Catalogue::baselines`]).
    pub fn catalogue(mut self, catalogue: &Catalogue) -> Self {
        self.baselines |= catalogue.baselines;
        self.kernels(catalogue.kernels.iter().copied())
    }

    /// Also compiles the benchmark's baseline kernels ([`crate::catalogue::baselines`]) into
    /// the fatbin and says so in its catalogue ([`Catalogue::baselines`]), so that the
    /// runtime loads them from this module. For im2win-bench, whose build.rs is the only
    /// caller: dispatch never picks them.
    pub fn with_baselines(mut self) -> Self {
        self.baselines = true;
        self
    }

    /// The targets, unless `IM2WIN_CUDA_ARCHS` is set (default: [`CudaTargets::default`]).
    pub fn targets(mut self, targets: CudaTargets) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Where to write (default: `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Use this nvcc instead of searching ([`Nvcc::locate`]).
    pub fn nvcc(mut self, path: impl Into<PathBuf>) -> Self {
        self.nvcc = Some(path.into());
        self
    }

    /// Whether a missing or failing nvcc is an error (default: `IM2WIN_REQUIRE_NVCC=1`).
    pub fn require_nvcc(mut self, required: bool) -> Self {
        self.require_nvcc = Some(required);
        self
    }

    /// Whether to print `cargo::` directives (rerun triggers, warnings); default: when
    /// `OUT_DIR` is set, i.e. in a build script.
    pub fn cargo_directives(mut self, print: bool) -> Self {
        self.cargo = Some(print);
        self
    }

    /// [`Builder::build`], ending the build script with the error (exit status 1) if it fails.
    pub fn build_or_exit(self) -> Output {
        match self.build() {
            Ok(output) => output,
            Err(error) => {
                eprintln!("error: im2win: {error}");
                std::process::exit(1);
            }
        }
    }

    /// Renders, compiles and writes the module (see the [module documentation](self)).
    ///
    /// # Errors
    /// A bad name, an empty or invalid catalogue, an unreadable manifest, a template that
    /// does not render, a file that cannot be written; and a missing or failing nvcc when
    /// nvcc is required. Without that requirement an nvcc problem is not an error: the
    /// output says why the kernels were not built.
    pub fn build(self) -> Result<Output, BuildError> {
        let cargo = self
            .cargo
            .unwrap_or_else(|| std::env::var_os("OUT_DIR").is_some());
        if cargo {
            let variables = [
                nvcc::ENV_NVCC,
                nvcc::ENV_ARCHS,
                ENV_REQUIRE_NVCC,
                ENV_DUMP_DIR,
                ENV_SKIP_NVCC,
                ENV_DOCS_RS,
            ];
            for variable in variables.into_iter().chain(nvcc::ENV_CUDA_ROOTS) {
                println!("cargo::rerun-if-env-changed={variable}");
            }
            if let Some(path) = &self.manifest {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
        let (name, kernels, manifest_targets) = self.resolve()?;
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?),
        };
        std::fs::create_dir_all(&out_dir).map_err(io_error("create", &out_dir))?;
        let mut catalogue = Catalogue::new(kernels)?;
        catalogue.baselines = self.baselines;
        let file = |suffix: &str| out_dir.join(format!("{name}.{suffix}"));
        let mut output = Output {
            fatbin: file("fatbin"),
            catalogue_file: file("catalogue.json"),
            report_file: file("kernels.json"),
            name: name.clone(),
            catalogue,
            report: None,
            not_built: None,
        };
        write(&output.catalogue_file, output.catalogue.to_json())?;

        // Rendering needs no toolkit, so it always runs: a template error fails every build,
        // and IM2WIN_DUMP_DIR works without nvcc.
        let sources = render::render_catalogue(&output.catalogue)?;
        if let Some(dir) = std::env::var_os(ENV_DUMP_DIR).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir).join(&name);
            sources
                .write_to(&dir)
                .map_err(io_error("write the rendered sources to", &dir))?;
        }
        let skip = if std::env::var_os(ENV_DOCS_RS).is_some() {
            Some("documentation build (DOCS_RS is set)")
        } else if std::env::var(ENV_SKIP_NVCC).is_ok_and(|v| v == "1") {
            Some("IM2WIN_SKIP_NVCC=1")
        } else {
            None
        };
        if let Some(why) = skip {
            output.not_built = Some(why.to_string());
            write_not_built(&output, &out_dir)?;
            return Ok(output);
        }

        let targets = match CudaTargets::from_env_var()? {
            Some(targets) => targets,
            None => match (&self.targets, manifest_targets) {
                (Some(targets), _) => targets.clone(),
                (None, Some(archs)) => CudaTargets::parse(&archs)?,
                (None, None) => CudaTargets::default(),
            },
        };
        let required = self
            .require_nvcc
            .unwrap_or_else(|| std::env::var(ENV_REQUIRE_NVCC).is_ok_and(|v| v == "1"));
        match self.compile(&sources, &targets, &out_dir, &output) {
            Ok(report) => {
                if cargo {
                    for k in report.spilling() {
                        println!(
                            "cargo::warning=im2win: {} spills on {}: {} bytes stored, {} bytes loaded per thread",
                            k.kernel, k.arch, k.spill_store_bytes, k.spill_load_bytes
                        );
                    }
                }
                write(&output.report_file, report.to_json())?;
                output.report = Some(report);
            }
            Err(error) if !required && error.is_environmental() => {
                let why = error.to_string();
                if cargo {
                    // One warning per line: cargo reads one directive per line.
                    println!(
                        "cargo::warning=im2win: GPU kernels of `{name}` not built (set {ENV_REQUIRE_NVCC}=1 to make this an error):"
                    );
                    for line in why.lines().filter(|l| !l.trim().is_empty()).take(40) {
                        println!("cargo::warning=  {line}");
                    }
                }
                output.not_built = Some(why);
                write_not_built(&output, &out_dir)?;
            }
            Err(error) => return Err(error),
        }
        Ok(output)
    }

    /// The name, the kernels (the manifest's, then those added in code) and the manifest's
    /// targets.
    fn resolve(&self) -> Result<(String, Vec<KernelSpec>, Option<String>), BuildError> {
        let (name, mut kernels, archs) = match &self.manifest {
            Some(path) => {
                let manifest = Manifest::read(path)?;
                (manifest.name, manifest.catalogue.kernels, manifest.archs)
            }
            None => (self.name.clone().unwrap_or_default(), Vec::new(), None),
        };
        validate_name(&name).map_err(BuildError::BadName)?;
        kernels.extend(self.kernels.iter().copied());
        if kernels.is_empty() {
            return Err(BuildError::Empty(name));
        }
        Ok((name, kernels, archs))
    }

    /// Compiles (or reuses the cached fatbin) and returns the resource report.
    fn compile(
        &self,
        sources: &RenderedSources,
        targets: &CudaTargets,
        out_dir: &Path,
        output: &Output,
    ) -> Result<KernelReport, BuildError> {
        let nvcc = match &self.nvcc {
            Some(path) => Nvcc::at(path),
            None => Nvcc::locate()?,
        };
        let version = nvcc.version()?;
        let name = &output.name;
        let work_dir = out_dir.join(format!("{name}.nvcc"));
        let log = out_dir.join(format!("{name}.ptxas.log"));
        let key_file = out_dir.join(format!("{name}.key"));
        let key = cache_key(sources, &nvcc.fingerprint(targets, &work_dir), &version);
        let cached = std::fs::read_to_string(&key_file).is_ok_and(|k| k == key)
            && std::fs::metadata(&output.fatbin).is_ok_and(|m| m.len() > 0)
            && log.is_file();
        let (fatbin_bytes, ptxas_log) = if cached {
            let bytes = std::fs::metadata(&output.fatbin)
                .map_err(io_error("read", &output.fatbin))?
                .len();
            let ptxas_log = std::fs::read_to_string(&log).map_err(io_error("read", &log))?;
            (bytes, ptxas_log)
        } else {
            let jobs = std::env::var("NUM_JOBS")
                .ok()
                .and_then(|n| n.parse().ok())
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1);
            let compiled = nvcc.compile(sources, targets, &work_dir, jobs)?;
            // The key goes last: a build interrupted before it recompiles next time.
            remove_if_present(&key_file)?;
            write(&output.fatbin, &compiled.fatbin)?;
            write(&log, &compiled.ptxas_log)?;
            write(&key_file, &key)?;
            (compiled.fatbin.len() as u64, compiled.ptxas_log)
        };
        // Re-derived from the saved log even on a cache hit, so that it always follows the
        // current parser.
        Ok(KernelReport {
            nvcc_version: version
                .lines()
                .find(|l| l.contains("release"))
                .unwrap_or(version.trim())
                .to_string(),
            targets: targets.names(),
            fatbin_bytes,
            kernels: nvcc::parse_ptxas_log(&ptxas_log),
        })
    }
}

/// Writes the files of a module without kernels: an empty fatbin and a `null` report, and
/// forgets the cache key so that a later build with nvcc compiles.
fn write_not_built(output: &Output, out_dir: &Path) -> Result<(), BuildError> {
    remove_if_present(&out_dir.join(format!("{}.key", output.name)))?;
    write(&output.fatbin, [])?;
    write(&output.report_file, "null")
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

fn remove_if_present(path: &Path) -> Result<(), BuildError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Everything the fatbin depends on, hashed: the rendered sources, the commands that compile
/// them (nvcc binary, flags, targets) and the nvcc version.
fn cache_key(sources: &RenderedSources, commands: &str, version: &str) -> String {
    // SipHash with fixed keys: deterministic for a given Rust release, and a different release
    // also changes OUT_DIR, so the key never has to be compared across releases.
    let mut hasher = std::hash::DefaultHasher::new();
    for (name, text) in render::HEADERS {
        name.hash(&mut hasher);
        text.hash(&mut hasher);
    }
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
