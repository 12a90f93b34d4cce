//! Driving nvcc: finding it, choosing the target architectures, and compiling rendered
//! sources into ONE fatbin that holds every kernel for every target.
//!
//! # How the single fatbin is made
//!
//! 1. The whole catalogue is one translation unit (`im2win.cu`, which includes the rendered
//!    files: the support kernels, the benchmark's baselines when the catalogue asks for them,
//!    the convolutions; see `render.rs`). It is compiled once per target, the targets in
//!    parallel: `--cubin -gencode=arch=compute_XX,code=sm_XX` for each SASS target (sm_90 as
//!    sm_90a: [`sass_architecture`]) (with `-Xptxas -v`, so that ptxas
//!    reports each kernel's registers, shared memory and spills) and `--ptx -arch=compute_XX`
//!    for each PTX target.
//! 2. `fatbinary` (next to nvcc) packs the cubins and the PTX, uncompressed, into one fatbin,
//!    and [`crate::fatbin::missing`] checks that every image defines every kernel that was
//!    rendered (it can only read the names of uncompressed images).
//! 3. `fatbinary` packs the same images again with the PTX compressed (`--compress=true`):
//!    that is the fatbin a crate embeds. Measured on the H200 (`scripts/fatbin-load-time.py`,
//!    the default catalogue): 10.7 MB instead of 18.3 MB, and no slower to load (first load
//!    in a process 3.8 ms against 5.4 ms, later loads 1.2 against 1.0 ms). Compressing the
//!    SASS images too (`--compress-all`) would give 1.0 MB but cost 6 to 7 ms at the first
//!    load, since the driver then decompresses every image; we ship the PTX-only form.
//!    With the NHWC and epilogue kernels the default catalogue's cubins grew to about 12 MB
//!    each, and fatbinary 13.0 then compresses them as well (43.6 MB packed uncompressed,
//!    2.9 MB shipped); there is no switch for PTX-only compression. Measured on the H200
//!    (2026-12-03, `scripts/fatbin-load-time.py`, median of 7 loads after a warm-up / first
//!    load in a fresh process): the shipped fatbin 15.2 / 17.6 ms; its sm_90 image alone,
//!    uncompressed (12.0 MB) 2.0 / 7.6 ms, compressed by fatbinary's default mode (0.8 MB)
//!    9.2 / 15.9 ms (`--compress-mode=speed`, 4.0 MB: 18.2 ms; `size`, 0.5 MB: 19.6 ms). So
//!    compression costs about 13 ms per module load, once per engine; we still ship it
//!    compressed, since the alternative adds 40 MB to every binary that embeds the kernels.
//!
//! Why not separate translation units, compiled in parallel with `-rdc=true` and
//! device-linked? We tried: relocatable device code cost the convolution kernels 6 to 16
//! registers (on sm_80, 126 became 142: past the 128 that lets two 256-thread blocks share an
//! SM) and the grid-stride support kernels 20 to 46 more, and a device link cannot emit PTX.
//! A whole-program compile per target gives ptxas everything, and the targets still compile
//! in parallel.
//!
//! # Where nvcc comes from
//!
//! `NVCC` (a path to the nvcc binary), else `CUDA_HOME/bin/nvcc`, else `CUDA_PATH/bin/nvcc`,
//! else the first `nvcc` on `PATH`. Never from a visible GPU: the targets come from
//! `IM2WIN_CUDA_ARCHS` (see [`CudaTargets::parse`]) or the default, so a build is the same on
//! every machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fatbin;
use crate::render::{RenderedSources, TRANSLATION_UNIT_FILE};
use crate::resources::KernelResources;

/// Environment variable: path of the nvcc binary to use.
pub const ENV_NVCC: &str = "NVCC";
/// Environment variables holding a CUDA installation root, searched for `bin/nvcc` in order.
pub const ENV_CUDA_ROOTS: [&str; 2] = ["CUDA_HOME", "CUDA_PATH"];
/// Environment variable: the target architectures, see [`CudaTargets::parse`].
pub const ENV_ARCHS: &str = "IM2WIN_CUDA_ARCHS";

/// Flags every compile gets. `-Xptxas -v` is added to the compiles that run ptxas.
pub const BASE_FLAGS: [&str; 2] = ["-O3", "-std=c++17"];

/// File name of the fatbin in the work directory.
const FATBIN_FILE: &str = "im2win.fatbin";
/// The same images uncompressed, for [`crate::fatbin::missing`] (step 2 above).
const CHECKED_FATBIN_FILE: &str = "im2win.uncompressed.fatbin";

/// Why finding nvcc or compiling failed. Every variant carries what a person needs to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvccError {
    /// No nvcc was found.
    #[error(
        "nvcc not found (searched: {searched}); set NVCC to the nvcc binary or CUDA_HOME to a CUDA toolkit"
    )]
    NotFound {
        /// The places that were searched, in order.
        searched: String,
    },
    /// `NVCC` (or a CUDA root) names a file that does not exist.
    #[error("{variable} points to {path}, which is not a file")]
    BadPath {
        /// The environment variable.
        variable: &'static str,
        /// The path it gave.
        path: PathBuf,
    },
    /// `IM2WIN_CUDA_ARCHS` could not be parsed.
    #[error(
        "invalid {ENV_ARCHS}=`{value}`: {reason} (expected e.g. `80,90` or `sm_90,compute_90`)"
    )]
    BadTargets {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted, e.g. "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tool exited with an error.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        /// The command line.
        command: String,
        /// The exit status.
        status: String,
        /// Its standard error and output.
        output: String,
    },
    /// The fatbin could not be read back.
    #[error("the fatbin nvcc produced is unreadable: {0}")]
    Fatbin(#[from] fatbin::FatbinError),
    /// The fatbin lacks a kernel for some target.
    #[error("the fatbin is incomplete: {}", .0.join("; "))]
    Incomplete(Vec<String>),
}

/// The architectures a fatbin is built for: SASS for real GPUs, PTX for the driver to compile
/// on GPUs newer than any SASS target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CudaTargets {
    /// Real architectures to build SASS for, compute capability × 10 (e.g. 90), ascending.
    pub sass: Vec<u32>,
    /// Virtual architectures to embed PTX for, ascending.
    pub ptx: Vec<u32>,
}

impl Default for CudaTargets {
    /// SASS for sm_80 (A100) and sm_90 (H100/H200), PTX for compute_90.
    fn default() -> Self {
        CudaTargets {
            sass: vec![80, 90],
            ptx: vec![90],
        }
    }
}

impl CudaTargets {
    /// Parses a target list, the syntax of `IM2WIN_CUDA_ARCHS`.
    ///
    /// Entries are separated by commas, semicolons or spaces:
    /// * `90` or `sm_90`: SASS for sm_90;
    /// * `compute_90`: PTX for compute_90;
    /// * `noptx`: no PTX at all.
    ///
    /// Without a `compute_` entry (and without `noptx`), PTX for the highest SASS architecture
    /// is added, so that GPUs newer than every SASS target can still run the kernels. So `80,90`
    /// means SASS for sm_80 and sm_90 plus compute_90 PTX (the default), and `90` means sm_90
    /// plus compute_90.
    pub fn parse(text: &str) -> Result<Self, NvccError> {
        let bad = |reason: String| NvccError::BadTargets {
            value: text.to_string(),
            reason,
        };
        let mut targets = CudaTargets {
            sass: Vec::new(),
            ptx: Vec::new(),
        };
        let mut no_ptx = false;
        for entry in text
            .split([',', ';', ' ', '\t'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (list, number) = if entry == "noptx" {
                no_ptx = true;
                continue;
            } else if let Some(n) = entry.strip_prefix("compute_") {
                (&mut targets.ptx, n)
            } else {
                (
                    &mut targets.sass,
                    entry.strip_prefix("sm_").unwrap_or(entry),
                )
            };
            let arch: u32 = number
                .parse()
                .ok()
                .filter(|a| (10..1000).contains(a))
                .ok_or_else(|| bad(format!("`{entry}` is not an architecture")))?;
            list.push(arch);
        }
        if no_ptx && !targets.ptx.is_empty() {
            return Err(bad("`noptx` contradicts a `compute_` entry".to_string()));
        }
        if targets.ptx.is_empty() && !no_ptx {
            targets.ptx.extend(targets.sass.iter().max());
        }
        for list in [&mut targets.sass, &mut targets.ptx] {
            list.sort_unstable();
            list.dedup();
        }
        if targets.sass.is_empty() && targets.ptx.is_empty() {
            return Err(bad("no architecture given".to_string()));
        }
        Ok(targets)
    }

    /// The targets from `IM2WIN_CUDA_ARCHS`, or [`CudaTargets::default`] when it is unset or
    /// empty.
    pub fn from_env() -> Result<Self, NvccError> {
        Ok(Self::from_env_var()?.unwrap_or_default())
    }

    /// The targets from `IM2WIN_CUDA_ARCHS`, or `None` when it is unset or empty.
    pub fn from_env_var() -> Result<Option<Self>, NvccError> {
        match std::env::var(ENV_ARCHS) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// The image names, as nvcc and [`crate::fatbin::Image::target`] spell them:
    /// `sm_80`, `sm_90`, `compute_90`.
    pub fn names(&self) -> Vec<String> {
        let sass = self.sass.iter().map(|a| format!("sm_{a}"));
        sass.chain(self.ptx.iter().map(|a| format!("compute_{a}")))
            .collect()
    }
}

impl fmt::Display for CudaTargets {
    /// The canonical list, e.g. `sm_80,sm_90,compute_90` (parses back to the same targets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = self.names().join(",");
        if self.ptx.is_empty() {
            names.push_str(",noptx");
        }
        f.write_str(&names)
    }
}

/// The architecture the SASS for compute capability `arch` (× 10) is built for: `90a` for 90,
/// the sm_90 features beyond the portable set (`wgmma`, `setmaxnreg`) that the warpgroup
/// kernels use and that every compute-capability-9.0 GPU (H100, H200) has; the number itself
/// for every other. The image still serves `sm_90` in the fatbin (its architecture field is
/// 90), and the driver loads it on exactly those GPUs, as it would plain sm_90 SASS.
pub fn sass_architecture(arch: u32) -> String {
    if arch == 90 {
        "90a".to_string()
    } else {
        arch.to_string()
    }
}

/// What a compile produced.
#[derive(Debug, Clone)]
pub struct CompileOutput {
    /// The fatbin: every kernel for every target.
    pub fatbin: Vec<u8>,
    /// ptxas's report of every kernel for every SASS target, sorted by kernel then arch.
    pub resources: Vec<KernelResources>,
    /// Everything ptxas printed (the source of `resources`; keep it to re-parse later).
    pub ptxas_log: String,
}

/// An nvcc installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nvcc {
    path: PathBuf,
}

impl Nvcc {
    /// nvcc at `path`, used as is.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Nvcc { path: path.into() }
    }

    /// Finds nvcc from `NVCC`, `CUDA_HOME`, `CUDA_PATH`, then `PATH` (see the module docs).
    /// A variable that is set but names no nvcc is an error, not skipped: it is a typo.
    pub fn locate() -> Result<Self, NvccError> {
        let exe = format!("nvcc{}", std::env::consts::EXE_SUFFIX);
        let mut searched = Vec::new();
        if let Some(path) = std::env::var_os(ENV_NVCC).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(NvccError::BadPath {
                    variable: ENV_NVCC,
                    path,
                });
            }
            return Ok(Nvcc { path });
        }
        searched.push(format!("${ENV_NVCC} (unset)"));
        for variable in ENV_CUDA_ROOTS {
            if let Some(root) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
                let path = Path::new(&root).join("bin").join(&exe);
                if !path.is_file() {
                    return Err(NvccError::BadPath { variable, path });
                }
                return Ok(Nvcc { path });
            }
            searched.push(format!("${variable} (unset)"));
        }
        if let Some(dirs) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&dirs) {
                let path = dir.join(&exe);
                if path.is_file() {
                    return Ok(Nvcc { path });
                }
            }
        }
        searched.push("$PATH".to_string());
        Err(NvccError::NotFound {
            searched: searched.join(", "),
        })
    }

    /// The nvcc binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full output of `nvcc --version`.
    pub fn version(&self) -> Result<String, NvccError> {
        let mut command = Command::new(&self.path);
        command.arg("--version");
        run(&mut command)
    }

    /// Another tool of the toolkit (`fatbinary`): next to nvcc, else next to the file nvcc
    /// links to (distributions put a `/usr/bin/nvcc` link or wrapper in front of the toolkit),
    /// else on `PATH`. If none exists, the path next to nvcc, so that running it fails with
    /// that path in the error.
    fn tool(&self, name: &str) -> PathBuf {
        let exe = format!("{name}{}", std::env::consts::EXE_SUFFIX);
        let beside = self.path.with_file_name(&exe);
        let linked = std::fs::canonicalize(&self.path)
            .ok()
            .map(|real| real.with_file_name(&exe));
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|dirs| std::env::split_paths(&dirs).collect::<Vec<_>>())
            .map(|dir| dir.join(&exe));
        std::iter::once(beside.clone())
            .chain(linked)
            .chain(on_path)
            .find(|path| path.is_file())
            .unwrap_or(beside)
    }

    /// The commands that compile `work_dir/im2win.cu` for `targets`: the per-target compiles
    /// (SASS first, then PTX) and the two `fatbinary` calls that pack their outputs, the
    /// uncompressed one to check and the one to ship (PTX compressed).
    fn commands(&self, targets: &CudaTargets, work_dir: &Path) -> (Vec<Command>, [Command; 2]) {
        let unit = work_dir.join(TRANSLATION_UNIT_FILE);
        let mut compiles = Vec::new();
        let mut images = Vec::new();
        for arch in &targets.sass {
            let cubin = work_dir.join(format!("im2win.sm_{arch}.cubin"));
            let real = sass_architecture(*arch);
            let mut command = self.nvcc_command(work_dir);
            command
                .arg("--cubin")
                .arg(format!("-gencode=arch=compute_{real},code=sm_{real}"))
                .args(["-Xptxas", "-v", "-o"])
                .arg(&cubin)
                .arg(&unit);
            compiles.push(command);
            images.push(format!(
                "--image3=kind=elf,sm={real},file={}",
                cubin.display()
            ));
        }
        for arch in &targets.ptx {
            let ptx = work_dir.join(format!("im2win.compute_{arch}.ptx"));
            let mut command = self.nvcc_command(work_dir);
            command
                .arg("--ptx")
                .arg(format!("-arch=compute_{arch}"))
                .arg("-o")
                .arg(&ptx)
                .arg(&unit);
            compiles.push(command);
            images.push(format!(
                "--image3=kind=ptx,sm={arch},file={}",
                ptx.display()
            ));
        }
        let pack = |file: &str, compress: &str| {
            let mut fatbinary = Command::new(self.tool("fatbinary"));
            fatbinary
                .current_dir(work_dir)
                .arg(format!("--create={}", work_dir.join(file).display()))
                .args(["-64", compress])
                .args(&images);
            fatbinary
        };
        let packs = [
            pack(CHECKED_FATBIN_FILE, "--compress=false"),
            pack(FATBIN_FILE, "--compress=true"),
        ];
        (compiles, packs)
    }

    /// Every command [`Nvcc::compile`] would run for `targets` in `work_dir`, one per line:
    /// with the nvcc version, what decides the fatbin besides the sources (build.rs hashes it
    /// for its cache).
    pub fn fingerprint(&self, targets: &CudaTargets, work_dir: &Path) -> String {
        let (compiles, packs) = self.commands(targets, work_dir);
        compiles
            .iter()
            .chain(&packs)
            .map(|c| describe(c) + "\n")
            .collect()
    }

    /// Compiles `sources` for `targets` into one fatbin, working in `work_dir` (created if
    /// needed; its files are overwritten) with up to `jobs` nvcc processes at a time.
    pub fn compile(
        &self,
        sources: &RenderedSources,
        targets: &CudaTargets,
        work_dir: &Path,
        jobs: usize,
    ) -> Result<CompileOutput, NvccError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| NvccError::Io {
                action,
                path,
                source,
            }
        };
        sources
            .write_to(work_dir)
            .map_err(io("write sources in", work_dir))?;
        let (compiles, [mut check_pack, mut ship_pack]) = self.commands(targets, work_dir);
        // Step 1, the targets in parallel. Only the cubin compiles run ptxas; they come first.
        let ptxas_log: String = run_parallel(compiles, jobs)?
            .into_iter()
            .take(targets.sass.len())
            .collect();
        // Step 2.
        run(&mut check_pack)?;
        let checked_path = work_dir.join(CHECKED_FATBIN_FILE);
        let checked = std::fs::read(&checked_path).map_err(io("read", &checked_path))?;
        let kernels: Vec<&str> = sources.kernel_names().collect();
        let problems = fatbin::missing(&checked, &targets.names(), &kernels)?;
        if !problems.is_empty() {
            return Err(NvccError::Incomplete(problems));
        }
        // Step 3.
        run(&mut ship_pack)?;
        let fatbin_path = work_dir.join(FATBIN_FILE);
        let fatbin = std::fs::read(&fatbin_path).map_err(io("read", &fatbin_path))?;
        Ok(CompileOutput {
            fatbin,
            resources: parse_ptxas_log(&ptxas_log),
            ptxas_log,
        })
    }

    /// `nvcc` with the base flags, run in `work_dir` so that `#include "common.cuh"` resolves.
    fn nvcc_command(&self, work_dir: &Path) -> Command {
        let mut command = Command::new(&self.path);
        command.current_dir(work_dir).args(BASE_FLAGS);
        command
    }
}

/// A command line as text, for error messages.
fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command to completion; returns its standard error and output (ptxas reports on
/// standard error), or the failure with that text.
fn run(command: &mut Command) -> Result<String, NvccError> {
    let output = command.output().map_err(|source| NvccError::Spawn {
        program: PathBuf::from(command.get_program()),
        source,
    })?;
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(NvccError::Failed {
            command: describe(command),
            status: output.status.to_string(),
            output: text,
        });
    }
    Ok(text)
}

/// Runs `commands` with at most `parallel` at a time (scoped threads taking the next command
/// from a shared counter). Returns each command's output in order, or the first failure in
/// that order.
fn run_parallel(commands: Vec<Command>, parallel: usize) -> Result<Vec<String>, NvccError> {
    let commands: Vec<Mutex<Command>> = commands.into_iter().map(Mutex::new).collect();
    let results: Vec<Mutex<Option<Result<String, NvccError>>>> =
        commands.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, commands.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(command), Some(slot)) = (commands.get(i), results.get(i)) else {
                        break;
                    };
                    // A poisoned lock only means another worker panicked; the data is intact.
                    let result = run(&mut command.lock().unwrap_or_else(|e| e.into_inner()));
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            // Every slot is filled: the workers only stop once the counter has passed them all.
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Ok(String::new()))
        })
        .collect()
}

/// Parses `nvcc -Xptxas -v` output into one entry per kernel (`extern "C"` entry function)
/// and architecture, sorted by kernel then architecture. Lines about non-kernel functions
/// and anything unrecognised are skipped.
///
/// The lines it reads look like:
///
/// ```text
/// ptxas info    : Compiling entry function 'im2win_f32_generic_b128x128x8_t8x8' for 'sm_90'
/// ptxas info    : Function properties for im2win_f32_generic_b128x128x8_t8x8
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 128 registers, used 1 barriers, 16896 bytes smem, 400 bytes cmem[0]
/// ```
pub fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    // The entry being described, and whether the "Function properties" block that follows
    // belongs to it (device functions get blocks of their own).
    let mut current: Option<usize> = None;
    let mut properties_of_current = false;
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix("ptxas info")
            .and_then(|r| r.split_once(':'))
            .map(|(_, r)| r.trim())
        {
            if let Some(what) = rest.strip_prefix("Compiling entry function ") {
                let mut quoted = what.split('\'').skip(1).step_by(2);
                if let (Some(kernel), Some(arch)) = (quoted.next(), quoted.next()) {
                    kernels.retain(|k| !(k.kernel == kernel && k.arch == arch));
                    kernels.push(KernelResources {
                        kernel: kernel.to_string(),
                        arch: arch.to_string(),
                        registers: 0,
                        shared_bytes: 0,
                        stack_bytes: 0,
                        spill_store_bytes: 0,
                        spill_load_bytes: 0,
                    });
                    current = Some(kernels.len() - 1);
                }
                properties_of_current = false;
            } else if let Some(function) = rest.strip_prefix("Function properties for ") {
                properties_of_current =
                    current.is_some_and(|i| kernels[i].kernel == function.trim());
            } else if let (Some(usage), Some(k)) = (
                rest.strip_prefix("Used "),
                current.and_then(|i| kernels.get_mut(i)),
            ) {
                k.registers = number_before(usage, "registers").unwrap_or(0);
                k.shared_bytes = number_before(usage, "bytes smem").unwrap_or(0);
            }
        } else if line.contains("bytes stack frame") && properties_of_current {
            if let Some(k) = current.and_then(|i| kernels.get_mut(i)) {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            }
            properties_of_current = false;
        }
    }
    kernels.sort_by(|a, b| (&a.kernel, &a.arch).cmp(&(&b.kernel, &b.arch)));
    kernels
}

/// The number right before `unit` in a comma-separated ptxas line (`"128 registers"`).
fn number_before(text: &str, unit: &str) -> Option<u32> {
    text.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_suffix(unit)?.trim().parse().ok())
}
