//! Dispatch: which kernel of a catalogue runs a problem, and with what launch shape.
//!
//! Pure functions of the problem and the catalogue (no GPU), so that they are tested on
//! any machine.
//!
//! **Geometry.** A fixed-geometry kernel is chosen when the catalogue has one whose filter
//! size and stride equal the problem's and the problem's dilation is 1 — or does not
//! matter: along an axis where the filter has size 1 the dilation never multiplies
//! anything, so a dilated 1×1 convolution still takes the 1×1 kernel. Otherwise the
//! generic kernel runs.
//!
//! **Tile.** Among the specs of the chosen geometry (one per tile), the heuristic is:
//! 1. Prefer tiles whose grid has at least one block per multiprocessor, so that the whole
//!    GPU is busy; among those take the largest block tile (`block_m·block_n`, the most
//!    reuse of each loaded value), then the one that wastes least work on partial tiles.
//! 2. If no tile fills the GPU, take the one with the most blocks (most parallelism), then
//!    the least waste.
//!
//! Remaining ties go to the earlier spec in catalogue order, so the choice is
//! deterministic. Tiles whose grid exceeds CUDA's limits are never chosen.

use im2win_codegen::{Catalogue, DType, FixedGeometry, Geometry, KernelSpec};

use crate::error::{Error, Result};
use crate::problem::{Conv2dProblem, ProblemShape};

/// CUDA's limit on `gridDim.x`.
const MAX_GRID_X: u64 = i32::MAX as u64;
/// CUDA's limit on `gridDim.y`.
const MAX_GRID_Y: u64 = 65_535;

/// A problem bound to one kernel specialisation, with everything needed to launch it.
///
/// Make one with [`Plan::new`] (dispatch from a catalogue), [`Plan::for_spec`] (force a
/// spec, e.g. to test or benchmark one kernel) or
/// [`Engine::plan`](crate::Engine::plan). The fields are private so that a plan is always
/// consistent with its problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Plan {
    problem: Conv2dProblem,
    shape: ProblemShape,
    kernel: KernelSpec,
    workspace_bytes: usize,
    grid_dim: (u32, u32, u32),
    block_dim: (u32, u32, u32),
}

impl Plan {
    /// Dispatches `problem` to the best float32 kernel of `catalogue` (see the module
    /// documentation for the rule), on a GPU with `multiprocessors` SMs (132 on an H200).
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`]; [`Error::NoKernel`] when the
    /// catalogue has neither a matching fixed kernel nor a generic one;
    /// [`Error::TooLarge`] when every candidate's grid exceeds CUDA's limits.
    pub fn new(
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        multiprocessors: usize,
    ) -> Result<Plan> {
        let shape = problem.shape()?;
        let fixed: Vec<&KernelSpec> = catalogue
            .kernels
            .iter()
            .filter(|spec| spec.dtype == DType::F32 && matches_fixed(spec, problem))
            .collect();
        let candidates = if fixed.is_empty() {
            catalogue
                .matching(DType::F32, Geometry::Generic)
                .collect::<Vec<_>>()
        } else {
            fixed
        };
        let Some(first) = candidates.first() else {
            return Err(no_kernel(problem));
        };

        let grid = |spec: &KernelSpec| grid_blocks(spec, &shape);
        let fitting: Vec<(&KernelSpec, (u64, u64))> = candidates
            .iter()
            .filter_map(|spec| grid(spec).ok().map(|g| (*spec, g)))
            .collect();
        if fitting.is_empty() {
            // Report the first candidate's limit: every candidate exceeds one.
            grid(first)?;
        }
        let multiprocessors = multiprocessors.max(1) as u64;
        let blocks = |(x, y): (u64, u64)| x * y;
        // Work the launch does including partial tiles, in output elements.
        let padded = |spec: &KernelSpec, (x, y): (u64, u64)| {
            x * u64::from(spec.tile.block_n) * y * u64::from(spec.tile.block_m)
        };
        let area = |spec: &KernelSpec| u64::from(spec.tile.block_m) * u64::from(spec.tile.block_n);
        let filling: Vec<_> = fitting
            .iter()
            .filter(|(_, g)| blocks(*g) >= multiprocessors)
            .collect();
        // `min_by_key` keeps the first of equal keys: catalogue order breaks ties.
        let chosen = if filling.is_empty() {
            fitting
                .iter()
                .min_by_key(|(spec, g)| (std::cmp::Reverse(blocks(*g)), padded(spec, *g)))
        } else {
            filling
                .into_iter()
                .min_by_key(|(spec, g)| (std::cmp::Reverse(area(spec)), padded(spec, *g)))
        };
        match chosen {
            Some((spec, _)) => Plan::for_spec(problem, **spec),
            None => Err(no_kernel(problem)),
        }
    }

    /// A plan that runs `problem` with exactly `spec`, bypassing the choice among kernels.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`]; [`Error::SpecMismatch`] when `spec`
    /// cannot compute `problem` (see [`supports`]); [`Error::TooLarge`] when the grid
    /// exceeds CUDA's limits.
    pub fn for_spec(problem: &Conv2dProblem, spec: KernelSpec) -> Result<Plan> {
        let shape = problem.shape()?;
        if !supports(&spec, problem) {
            return Err(Error::SpecMismatch {
                kernel: spec.name(),
                filter: [problem.filter[2], problem.filter[3]],
                stride: problem.stride,
                dilation: problem.dilation,
            });
        }
        let (x, y) = grid_blocks(&spec, &shape)?;
        Ok(Plan {
            problem: *problem,
            shape,
            kernel: spec,
            workspace_bytes: problem.workspace_bytes()?,
            // `grid_blocks` checked both against CUDA's limits, which fit in u32.
            grid_dim: (x as u32, y as u32, 1),
            block_dim: (spec.tile.threads(), 1, 1),
        })
    }

    /// The problem this plan computes.
    pub fn problem(&self) -> &Conv2dProblem {
        &self.problem
    }

    /// The problem's sizes.
    pub fn shape(&self) -> &ProblemShape {
        &self.shape
    }

    /// The convolution kernel that runs; its name is [`KernelSpec::name`].
    pub fn kernel(&self) -> &KernelSpec {
        &self.kernel
    }

    /// Device memory the convolution needs besides its operands
    /// ([`Conv2dProblem::workspace_bytes`]).
    pub fn workspace_bytes(&self) -> usize {
        self.workspace_bytes
    }

    /// Grid of the convolution kernel: `(ceil(N·P·Q / block_n), ceil(K / block_m), 1)`.
    pub fn grid_dim(&self) -> (u32, u32, u32) {
        self.grid_dim
    }

    /// Block of the convolution kernel: `(threads of the tile, 1, 1)`.
    pub fn block_dim(&self) -> (u32, u32, u32) {
        self.block_dim
    }
}

/// Whether the kernel `spec` computes `problem` correctly: always for the generic kernel;
/// for a fixed one, when filter size and stride match and the dilation is 1 along every
/// axis where the filter is longer than 1.
pub fn supports(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    match spec.dtype {
        DType::F32 => matches!(spec.geometry, Geometry::Generic) || matches_fixed(spec, problem),
    }
}

/// Whether `spec` is a fixed-geometry kernel for exactly this problem's geometry.
fn matches_fixed(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    let Geometry::Fixed(g) = spec.geometry else {
        return false;
    };
    let FixedGeometry {
        filter_h,
        filter_w,
        stride_h,
        stride_w,
    } = g;
    let [_, _, r, s] = problem.filter;
    let [sh, sw] = problem.stride;
    let [dh, dw] = problem.dilation;
    let eq = |a: u32, b: usize| a as usize == b;
    eq(filter_h, r)
        && eq(filter_w, s)
        && eq(stride_h, sh)
        && eq(stride_w, sw)
        && (dh == 1 || r == 1)
        && (dw == 1 || s == 1)
}

/// The grid `(x, y)` of `spec` on a problem, checked against CUDA's grid limits.
fn grid_blocks(spec: &KernelSpec, shape: &ProblemShape) -> Result<(u64, u64)> {
    let x = (shape.pixels as u64).div_ceil(u64::from(spec.tile.block_n.max(1)));
    let y = (shape.output[1] as u64).div_ceil(u64::from(spec.tile.block_m.max(1)));
    if x > MAX_GRID_X {
        return Err(Error::TooLarge {
            what: "grid blocks along N·P·Q (output pixels / block_n)",
            value: u128::from(x),
            limit: u128::from(MAX_GRID_X),
        });
    }
    if y > MAX_GRID_Y {
        return Err(Error::TooLarge {
            what: "grid blocks along K (output channels / block_m)",
            value: u128::from(y),
            limit: u128::from(MAX_GRID_Y),
        });
    }
    Ok((x, y))
}

fn no_kernel(problem: &Conv2dProblem) -> Error {
    Error::NoKernel {
        filter: [problem.filter[2], problem.filter[3]],
        stride: problem.stride,
        dilation: problem.dilation,
    }
}

#[cfg(test)]
mod tests {
    use im2win_codegen::{DEFAULT_GEOMETRIES, TileConfig};

    use super::*;
    use crate::problem::Padding;

    const H200_SMS: usize = 132;

    fn square(c: usize, hw: usize, k: usize, rs: usize) -> Conv2dProblem {
        Conv2dProblem::new([2, c, hw, hw], [k, c, rs, rs])
    }

    fn plan(problem: &Conv2dProblem) -> Plan {
        Plan::new(problem, &Catalogue::default_catalogue(), H200_SMS).unwrap()
    }

    fn generic() -> KernelSpec {
        KernelSpec::generic(DType::F32, TileConfig::PAPER)
    }

    #[test]
    fn every_default_geometry_gets_its_fixed_kernel() {
        for g in DEFAULT_GEOMETRIES {
            let (r, st) = (g.filter_h as usize, g.stride_h as usize);
            let problem = square(5, 23 + r, 7, r)
                .with_stride([st, st])
                .with_padding(Padding::uniform(r / 2));
            let plan = plan(&problem);
            assert_eq!(
                *plan.kernel(),
                KernelSpec::fixed(DType::F32, g, TileConfig::PAPER),
                "{g:?}"
            );
            assert_eq!(
                plan.kernel().name(),
                format!("im2win_f32_r{r}s{r}_s{st}x{st}_b128x128x8_t8x8")
            );
        }
    }

    #[test]
    fn dilation_and_unusual_geometry_take_the_generic_kernel() {
        let cases = [
            square(4, 20, 8, 3).with_dilation([2, 2]),
            square(4, 20, 8, 3).with_dilation([1, 2]),
            square(4, 20, 8, 3).with_stride([3, 3]),
            square(4, 20, 8, 3).with_stride([1, 2]),
            square(4, 20, 8, 11).with_stride([1, 1]),
            square(4, 20, 8, 2),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 3, 5]),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 1, 3]),
        ];
        for problem in cases {
            assert_eq!(*plan(&problem).kernel(), generic(), "{problem:?}");
        }
    }

    #[test]
    fn dilation_along_a_unit_axis_keeps_the_fixed_kernel() {
        let problem = square(4, 20, 8, 1).with_dilation([3, 2]);
        let fixed = KernelSpec::fixed(DType::F32, FixedGeometry::square(1, 1), TileConfig::PAPER);
        assert_eq!(*plan(&problem).kernel(), fixed);
        assert!(supports(&fixed, &problem));
    }

    #[test]
    fn launch_shape_and_workspace() {
        // N·P·Q = 2·20·20 = 800 → 7 blocks of 128 pixels; K = 300 → 3 blocks of 128.
        let problem = square(5, 22, 300, 3);
        let plan = plan(&problem);
        assert_eq!(plan.grid_dim(), (7, 3, 1));
        assert_eq!(plan.block_dim(), (256, 1, 1));
        assert_eq!(plan.workspace_bytes(), problem.workspace_bytes().unwrap());
        // T = 2·5·20·22·3 = 13200 floats = 52800 B, so F' (300·45 floats) starts at the
        // next 256-byte boundary, 52992.
        assert_eq!(plan.workspace_bytes(), 52_992 + 300 * 45 * 4);
        assert_eq!(plan.shape().output, [2, 300, 20, 20]);
        assert_eq!(*plan.problem(), problem);
    }

    #[test]
    fn forcing_a_spec() {
        let problem = square(3, 16, 4, 3);
        let fixed5 = KernelSpec::fixed(DType::F32, FixedGeometry::square(5, 1), TileConfig::PAPER);
        assert!(matches!(
            Plan::for_spec(&problem, fixed5),
            Err(Error::SpecMismatch { .. })
        ));
        let forced = Plan::for_spec(&problem, generic()).unwrap();
        assert_eq!(*forced.kernel(), generic());
        let dilated = problem.with_dilation([2, 1]);
        let fixed3 = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TileConfig::PAPER);
        assert!(!supports(&fixed3, &dilated));
        assert!(Plan::for_spec(&dilated, fixed3).is_err());
    }

    #[test]
    fn missing_generic_kernel_is_a_clear_error() {
        let only_3x3 = Catalogue::new(vec![KernelSpec::fixed(
            DType::F32,
            FixedGeometry::square(3, 1),
            TileConfig::PAPER,
        )])
        .unwrap();
        assert!(Plan::new(&square(3, 16, 4, 3), &only_3x3, H200_SMS).is_ok());
        let err = Plan::new(&square(3, 16, 4, 5), &only_3x3, H200_SMS).unwrap_err();
        assert!(matches!(err, Error::NoKernel { .. }), "{err}");
        assert!(err.to_string().contains("5×5"), "{err}");
        let empty = Catalogue::default();
        assert!(matches!(
            Plan::new(&square(3, 16, 4, 3), &empty, H200_SMS),
            Err(Error::NoKernel { .. })
        ));
    }

    #[test]
    fn too_many_output_channels_for_the_grid() {
        // K = 65536·128 + 1 needs 65537 blocks along y.
        let problem = Conv2dProblem::new([1, 1, 1, 1], [65_536 * 128 + 1, 1, 1, 1]);
        let err = Plan::new(&problem, &Catalogue::default_catalogue(), H200_SMS).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 65_535, .. }),
            "{err}"
        );
        let fits = Conv2dProblem::new([1, 1, 1, 1], [65_535 * 128, 1, 1, 1]);
        assert_eq!(plan(&fits).grid_dim(), (1, 65_535, 1));
    }

    #[test]
    fn problem_errors_come_first() {
        let bad = Conv2dProblem::new([1, 3, 4, 4], [2, 4, 3, 3]);
        assert!(matches!(
            Plan::new(&bad, &Catalogue::default_catalogue(), H200_SMS),
            Err(Error::ChannelMismatch { .. })
        ));
    }

    fn tile(block_m: u32, block_n: u32) -> TileConfig {
        TileConfig {
            block_m,
            block_n,
            block_k: 8,
            thread_m: block_m / 16,
            thread_n: block_n / 16,
        }
    }

    #[test]
    fn tile_heuristic() {
        let big = KernelSpec::generic(DType::F32, tile(128, 128));
        let small = KernelSpec::generic(DType::F32, tile(64, 64));
        let wide = KernelSpec::generic(DType::F32, tile(64, 128));
        let catalogue = Catalogue::new(vec![small, wide, big]).unwrap();
        let pick =
            |problem: &Conv2dProblem| *Plan::new(problem, &catalogue, H200_SMS).unwrap().kernel();

        // K = 256, N·P·Q = 2·64·64 = 8192: the big tile gives 64·2 = 128 blocks (< 132),
        // the wide one 64·4 = 256: the largest tile that fills the GPU wins.
        assert_eq!(pick(&square(4, 66, 256, 3)), wide);
        // N·P·Q = 2·128·128 = 32768 → 256·2 = 512 big blocks: big wins.
        assert_eq!(pick(&square(4, 130, 256, 3)), big);
        // A tiny problem fills nothing: the most blocks (smallest tile) win.
        assert_eq!(pick(&square(4, 10, 8, 3)), small);
        // Equal tiles in one geometry: catalogue order decides.
        let twin = KernelSpec::generic(
            DType::F32,
            TileConfig {
                block_k: 16,
                ..tile(64, 64)
            },
        );
        let tied = Catalogue::new(vec![twin, small]).unwrap();
        assert_eq!(
            *Plan::new(&square(4, 10, 8, 3), &tied, H200_SMS)
                .unwrap()
                .kernel(),
            twin
        );
    }
}
