//! A specialisation fixed at compile time: what `im2win::conv2d!` expands to.

use std::fmt;

use cudarc::driver::{DevicePtr, DevicePtrMut};

use crate::element::Element;
use im2win_codegen::{Catalogue, DType, Geometry, Grouping, KernelSpec, Math, TileConfig, Variant};

use crate::error::{Error, Result};
use crate::gpu::{
    DeviceLimits, Engine, OPERAND_ALIGNMENT, Operands, Plan, can_implement, unmet_requirement,
};
use crate::layout::Layout;
use crate::problem::Conv2dProblem;

/// A kernel specialisation named at compile time: data type, filter size and stride, and
/// optionally the tile.
///
/// `im2win::conv2d!(f32, filter = 3x3, stride = 1)` checks the request against the catalogue
/// at compile time and expands to a `const` of this type, so a program that compiles names
/// only kernels that exist. At run time it skips dispatch: [`Engine::conv2d_specialized`]
/// launches its kernel, after checking that the problem has its filter size and stride
/// ([`Error::SpecMismatch`] otherwise). With a tile the kernel is exactly that spec, in its
/// materialised variant ([`Specialization::spec`]); without one, the tile and the variant
/// (materialised or fused) are chosen per problem among the compiled kernels of this
/// geometry, as [`Engine::plan`] would.
///
/// ```
/// use im2win_codegen::{DType, FixedGeometry, Geometry};
/// use im2win_runtime::{Conv2dProblem, Error, Specialization};
///
/// // What `im2win::conv2d!(f32, filter = 3x3, stride = 1)` expands to.
/// const CONV3X3: Specialization = Specialization::new(
///     DType::F32,
///     Geometry::Fixed(FixedGeometry::square(3, 1)),
///     None,
///     "im2win",
/// );
/// assert_eq!(CONV3X3.to_string(), "im2win_f32_r3s3_s1x1_*");
/// let wrong = Conv2dProblem::new([1, 8, 16, 16], [8, 8, 5, 5]);
/// assert!(matches!(CONV3X3.check(&wrong), Err(Error::SpecMismatch { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Specialization {
    dtype: DType,
    math: Math,
    geometry: Geometry,
    tile: Option<TileConfig>,
    layout: Layout,
    grouping: Grouping,
    catalogue: &'static str,
}

impl Specialization {
    /// A specialisation of `dtype` and `geometry`, with a fixed `tile` or (`None`) the tile
    /// chosen per problem, from the catalogue named `catalogue` (`im2win` for the default
    /// one, else the `name` of a crate's manifest). `im2win::conv2d!` calls this after
    /// checking that the catalogue has it; made by hand, the check happens at run time
    /// ([`Error::SpecNotLoaded`]).
    ///
    /// The layout is NCHW for float32, NHWC for bf16 and f16 (whose kernels are tensor-core
    /// kernels: NHWC kernels, which take NCHW tensors too); [`Specialization::with_layout`]
    /// sets another.
    pub const fn new(
        dtype: DType,
        geometry: Geometry,
        tile: Option<TileConfig>,
        catalogue: &'static str,
    ) -> Self {
        let math = Math::default_for(dtype);
        Specialization {
            dtype,
            math,
            geometry,
            tile,
            layout: match math {
                Math::Simt => Layout::Nchw,
                Math::TensorOp | Math::TensorOpFastF32 => Layout::Nhwc,
            },
            grouping: Grouping::Dense,
            catalogue,
        }
    }

    /// The same specialisation of the grouped family `grouping` ([`Grouping::Dense`] unless
    /// set): its kernels compute in FP32 on CUDA cores ([`Math::Simt`]) for every element
    /// type and take the specialisation's layout.
    pub const fn with_grouping(mut self, grouping: Grouping) -> Self {
        self.grouping = grouping;
        if !matches!(grouping, Grouping::Dense) {
            self.math = Math::Simt;
        }
        self
    }

    /// Which channels its kernels' outputs read ([`Grouping`]).
    pub const fn grouping(&self) -> Grouping {
        self.grouping
    }

    /// The same specialisation for tensors in `layout` (NCHW unless set). The macro's
    /// `layout = nhwc`.
    pub const fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The same specialisation multiplying with `math` ([`Math::default_for`] its element
    /// type unless set): the macro's `tf32` is float32 with [`Math::TensorOp`].
    pub const fn with_math(mut self, math: Math) -> Self {
        self.math = math;
        self
    }

    /// How its kernels multiply.
    pub const fn math(&self) -> Math {
        self.math
    }

    /// The layout of input and output.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// The element type.
    pub const fn dtype(&self) -> DType {
        self.dtype
    }

    /// The filter size and stride (or [`Geometry::Generic`]).
    pub const fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The tile, when fixed.
    pub const fn tile(&self) -> Option<TileConfig> {
        self.tile
    }

    /// The catalogue it was found in: `im2win` or a manifest's name.
    pub const fn catalogue(&self) -> &'static str {
        self.catalogue
    }

    /// The kernel, when the tile is fixed: the materialised variant of that tile for NCHW
    /// SIMT kernels, the fused one for NHWC and for tensor-core kernels (their only
    /// algorithm; with vector loads: a fixed tile names the kernel for `C` a multiple of 8,
    /// or 4 for TF32).
    pub const fn spec(&self) -> Option<KernelSpec> {
        match self.tile {
            Some(tile) => Some(self.spec_with_tile(tile)),
            None => None,
        }
    }

    /// The layout of its kernels: the specialisation's for SIMT kernels; NHWC for
    /// tensor-core kernels, which also take NCHW tensors (through an NHWC copy of the input,
    /// writing the NCHW output themselves).
    const fn kernel_layout(&self) -> Layout {
        match self.math {
            Math::TensorOp | Math::TensorOpFastF32 => Layout::Nhwc,
            Math::Simt => self.layout,
        }
    }

    /// The spec of the fields this specialisation fixes, with `tile`.
    const fn spec_with_tile(&self, tile: TileConfig) -> KernelSpec {
        let variant = match (self.layout, self.math, self.grouping) {
            (Layout::Nchw, Math::Simt, Grouping::Dense) => Variant::MATERIALISED,
            _ => Variant::FUSED,
        };
        KernelSpec {
            dtype: self.dtype,
            geometry: self.geometry,
            tile,
            variant,
            layout: self.kernel_layout(),
            math: self.math,
            grouping: self.grouping,
        }
    }

    /// Whether its kernels compute `problem`: the problem's element type and precision
    /// ([`KernelSpec::computes`]), the same layout, filter size and stride, and dilation 1
    /// along every axis where the filter is longer than 1 (always, for the generic kernel),
    /// and the kernels' own requirements ([`unmet_requirement`]: for tensor-core kernels
    /// with a fixed tile, `C` a multiple of its channel vector).
    pub fn supports(&self, problem: &Conv2dProblem) -> bool {
        can_implement(&self.probe(), problem)
    }

    /// The spec whose [`can_implement`] answers for the specialisation: its kernel, or
    /// without a tile one of its geometry (for tensor cores the element-wise one, which
    /// takes any `C`, since the tile is chosen among both loaders).
    fn probe(&self) -> KernelSpec {
        match self.spec() {
            Some(spec) => spec,
            None => {
                let tile = self
                    .grouping
                    .tile(self.kernel_layout(), self.dtype)
                    .unwrap_or(TileConfig::PAPER);
                let mut spec = self.spec_with_tile(tile);
                if spec.math.is_tensor_op() {
                    spec.variant.vector_loads = false;
                }
                spec
            }
        }
    }

    /// Checks that its kernels compute `problem` ([`Specialization::supports`]).
    ///
    /// # Errors
    /// [`Error::PrecisionMismatch`] for a problem of another element type or precision,
    /// [`Error::KernelRequirement`] for one that lacks what the kernels need (a channel
    /// count for tensor-core kernels with vector loads), [`Error::SpecMismatch`] naming the kernel and the
    /// problem's geometry.
    pub fn check(&self, problem: &Conv2dProblem) -> Result<()> {
        if self.supports(problem) {
            return Ok(());
        }
        let spec = self.probe();
        if !spec.computes(problem.dtype, problem.precision) {
            return Err(Error::PrecisionMismatch {
                kernel: self.to_string(),
                computes: spec.numeric_name(),
                problem: problem.numeric_name(),
            });
        }
        if let Some(requirement) = unmet_requirement(&spec, problem) {
            return Err(Error::KernelRequirement {
                kernel: self.to_string(),
                requirement,
            });
        }
        Err(Error::SpecMismatch {
            kernel: self.to_string(),
            filter: [problem.filter[2], problem.filter[3]],
            stride: problem.stride,
            dilation: problem.dilation,
        })
    }

    /// The plan that runs `problem` with this specialisation, given the kernels available
    /// (`catalogue`, usually `engine.kernels().catalogue()`) and the GPU's multiprocessors
    /// (with an H200's limits per SM, as [`Plan::new`]).
    ///
    /// # Errors
    /// As [`Specialization::plan_for_device`].
    pub fn plan(
        &self,
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        multiprocessors: usize,
    ) -> Result<Plan> {
        let device = DeviceLimits::H200.with_multiprocessors(multiprocessors as u64);
        self.plan_for_device(problem, catalogue, &device)
    }

    /// [`Specialization::plan`] on a GPU with the limits `device`
    /// ([`Engine::device_limits`](crate::Engine::device_limits)).
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`]; [`Error::SpecMismatch`] for a
    /// problem of another geometry; [`Error::SpecNotLoaded`] when `catalogue` lacks the
    /// kernel; [`Error::TooLarge`] when the grid exceeds CUDA's limits.
    pub fn plan_for_device(
        &self,
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        device: &DeviceLimits,
    ) -> Result<Plan> {
        self.plan_for_operands(problem, catalogue, device, OPERAND_ALIGNMENT)
    }

    /// [`Specialization::plan_for_device`] for input and filter that start at a multiple of
    /// `aligned_to` bytes (see [`Plan::for_operands`]): without a fixed tile, kernels with
    /// vector loads of them are chosen only when they are 16-byte aligned.
    ///
    /// # Errors
    /// As [`Specialization::plan_for_device`].
    pub fn plan_for_operands(
        &self,
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        device: &DeviceLimits,
        aligned_to: usize,
    ) -> Result<Plan> {
        problem.shape()?;
        self.check(problem)?;
        let candidates: Vec<KernelSpec> = catalogue
            .kernels
            .iter()
            .filter(|k| match self.spec() {
                Some(spec) => **k == spec,
                None => {
                    k.dtype == self.dtype
                        && k.math == self.math
                        && k.grouping == self.grouping
                        && k.geometry == self.geometry
                        && k.layout == self.kernel_layout()
                }
            })
            .copied()
            .collect();
        match (self.spec(), candidates.is_empty()) {
            (_, true) => Err(Error::SpecNotLoaded {
                kernel: self.to_string(),
                catalogue: self.catalogue,
            }),
            (Some(spec), false) => Plan::for_spec(problem, spec),
            // Every candidate has this geometry, which computes the problem: the heuristic
            // only chooses the tile (and, for tensor cores, the loader).
            (None, false) => Plan::for_operands(
                problem,
                &Catalogue {
                    kernels: candidates,
                    ..Catalogue::default()
                },
                device,
                aligned_to,
            ),
        }
    }
}

impl fmt::Display for Specialization {
    /// The kernel name, e.g. `im2win_f32_r3s3_s1x1_b128x128x8_t8x8`; without a fixed tile
    /// the tile part is `*`: `im2win_f32_r3s3_s1x1_*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(spec) = self.spec() {
            return write!(f, "{spec}");
        }
        write!(
            f,
            "{}_*",
            KernelSpec::name_stem(self.dtype, self.math, self.grouping, self.geometry)
        )?;
        match self.kernel_layout() {
            Layout::Nchw => Ok(()),
            Layout::Nhwc => f.write_str("_nhwc"),
        }
    }
}

impl Engine {
    /// The plan that runs `problem` with `specialization` ([`Specialization::plan`] on this
    /// engine's kernels): no dispatch among geometries, and the tuning table is not
    /// consulted.
    ///
    /// # Errors
    /// As [`Specialization::plan`].
    pub fn plan_specialized(
        &self,
        specialization: &Specialization,
        problem: &Conv2dProblem,
    ) -> Result<Plan> {
        specialization.plan_for_device(problem, self.kernels().catalogue(), self.device_limits())
    }

    /// `output = conv2d(input, filter) + bias` with the kernel of `specialization` (usually
    /// a `const` from `im2win::conv2d!`), refusing a problem of another filter size or
    /// stride ([`Error::SpecMismatch`]). Buffers and workspace as [`Engine::conv2d_with`].
    /// Without a fixed tile, the kernel is chosen for the operands' alignment as
    /// [`Engine::conv2d`] chooses it (a misaligned input or filter takes an element-wise
    /// tensor-core kernel); a fixed tensor-core tile on misaligned operands is
    /// [`Error::Misaligned`].
    ///
    /// # Errors
    /// As [`Engine::plan_specialized`] and [`Engine::conv2d_with`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_specialized<T: Element>(
        &self,
        specialization: &Specialization,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<T>,
        filter: &dyn DevicePtr<T>,
        bias: Option<&dyn DevicePtr<T>>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        problem.shape()?;
        crate::element::check_dtype::<T>(problem)?;
        let plan = self.plan_specialized(specialization, problem)?;
        // As `Engine::conv2d`: the plan for the operands' own alignment.
        let replan = |aligned_to| {
            specialization.plan_for_operands(
                problem,
                self.kernels().catalogue(),
                self.device_limits(),
                aligned_to,
            )
        };
        let operands = Operands {
            input,
            filter,
            bias,
            residual: None,
        };
        self.launch_plan(&plan, Some(&replan), operands, output, workspace)
    }
}

#[cfg(test)]
mod tests {
    use im2win_codegen::FixedGeometry;

    use super::*;

    const H200_SMS: usize = 132;

    fn geometry(size: u32, stride: u32) -> Geometry {
        Geometry::Fixed(FixedGeometry::square(size, stride))
    }

    fn small_tile() -> TileConfig {
        TileConfig {
            block_m: 64,
            block_n: 64,
            block_k: 8,
            thread_m: 4,
            thread_n: 4,
        }
    }

    fn catalogue() -> Catalogue {
        let mut kernels = Catalogue::default_catalogue().kernels;
        let small = KernelSpec {
            dtype: DType::F32,
            geometry: geometry(3, 1),
            tile: small_tile(),
            variant: Variant::MATERIALISED,
            layout: Layout::Nchw,
            math: Math::Simt,
            grouping: Grouping::Dense,
        };
        if !kernels.contains(&small) {
            kernels.push(small);
        }
        Catalogue::new(kernels).unwrap()
    }

    #[test]
    fn a_depthwise_specialisation_plans_its_family_only() {
        let handle = Specialization::new(DType::Bf16, geometry(3, 2), None, "im2win")
            .with_layout(Layout::Nhwc)
            .with_grouping(Grouping::Depthwise);
        assert_eq!(handle.math(), Math::Simt);
        assert_eq!(handle.to_string(), "im2win_bf16simt_dw_r3s3_s2x2_*_nhwc");
        let problem = Conv2dProblem::new([2, 16, 15, 15], [32, 1, 3, 3])
            .with_groups(16)
            .with_stride([2, 2])
            .with_layout(Layout::Nhwc)
            .with_dtype(DType::Bf16);
        let plan = handle.plan(&problem, &catalogue(), H200_SMS).unwrap();
        assert_eq!(plan.kernel().grouping, Grouping::Depthwise);
        assert_eq!(plan.kernel().geometry, geometry(3, 2));
        // A dense problem of that geometry is not its business.
        let dense = Conv2dProblem::new([2, 16, 15, 15], [32, 16, 3, 3])
            .with_stride([2, 2])
            .with_layout(Layout::Nhwc)
            .with_dtype(DType::Bf16);
        assert!(handle.check(&dense).is_err());
    }

    #[test]
    fn fixed_tile_is_exactly_that_kernel() {
        let handle = Specialization::new(
            DType::F32,
            geometry(3, 1),
            Some(TileConfig::PAPER),
            "im2win",
        );
        let problem = Conv2dProblem::new([2, 4, 20, 20], [8, 4, 3, 3]);
        let plan = handle.plan(&problem, &catalogue(), H200_SMS).unwrap();
        assert_eq!(Some(*plan.kernel()), handle.spec());
        assert_eq!(handle.to_string(), "im2win_f32_r3s3_s1x1_b128x128x8_t8x8");
    }

    #[test]
    fn open_tile_is_chosen_among_the_geometry_s_tiles() {
        let handle = Specialization::new(DType::F32, geometry(3, 1), None, "im2win");
        assert_eq!(handle.to_string(), "im2win_f32_r3s3_s1x1_*");
        assert_eq!(handle.spec(), None);
        // The dispatch heuristic, run over this geometry's kernels only.
        let problem = Conv2dProblem::new([1, 4, 10, 10], [8, 4, 3, 3]);
        let plan = handle.plan(&problem, &catalogue(), H200_SMS).unwrap();
        let own = Catalogue {
            kernels: catalogue()
                .matching(DType::F32, Layout::Nchw, geometry(3, 1))
                .copied()
                .collect(),
            ..Catalogue::default()
        };
        assert!(own.kernels.contains(&KernelSpec {
            dtype: DType::F32,
            geometry: geometry(3, 1),
            tile: small_tile(),
            variant: Variant::MATERIALISED,
            layout: Layout::Nchw,
            math: Math::Simt,
            grouping: Grouping::Dense,
        }));
        assert_eq!(plan, Plan::new(&problem, &own, H200_SMS).unwrap());
        assert_eq!(plan.kernel().geometry, geometry(3, 1));
        let generic = Specialization::new(DType::F32, Geometry::Generic, None, "im2win");
        assert_eq!(generic.to_string(), "im2win_f32_generic_*");
        // NHWC: only the fused kernels, and only NHWC problems.
        let nhwc = generic.with_layout(Layout::Nhwc);
        assert_eq!(nhwc.to_string(), "im2win_f32_generic_*_nhwc");
        assert!(!nhwc.supports(&problem));
        let nhwc_problem = problem.with_layout(Layout::Nhwc);
        let plan = nhwc.plan(&nhwc_problem, &catalogue(), H200_SMS).unwrap();
        assert_eq!(plan.kernel().layout, Layout::Nhwc);
        assert!(plan.kernel().variant.fused);
        let plan = generic.plan(&problem, &catalogue(), H200_SMS).unwrap();
        assert_eq!(plan.kernel().geometry, Geometry::Generic);
    }

    #[test]
    fn other_geometries_are_refused() {
        let handle = Specialization::new(DType::F32, geometry(3, 1), None, "im2win");
        let cases = [
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 5, 5]),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 3, 3]).with_stride([2, 2]),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 3, 3]).with_dilation([2, 1]),
        ];
        for problem in cases {
            let err = handle.plan(&problem, &catalogue(), H200_SMS).unwrap_err();
            assert!(matches!(err, Error::SpecMismatch { .. }), "{err}");
            assert!(err.to_string().contains("im2win_f32_r3s3_s1x1_*"), "{err}");
        }
        // Validation errors come first.
        let bad = Conv2dProblem::new([1, 4, 20, 20], [8, 5, 5, 5]);
        assert!(matches!(
            handle.plan(&bad, &catalogue(), H200_SMS),
            Err(Error::ChannelMismatch { .. })
        ));
    }

    #[test]
    fn a_kernel_the_engine_lacks_is_a_clear_error() {
        let handle = Specialization::new(DType::F32, geometry(9, 3), None, "custom");
        let problem = Conv2dProblem::new([1, 4, 30, 30], [8, 4, 9, 9]).with_stride([3, 3]);
        let err = handle.plan(&problem, &catalogue(), H200_SMS).unwrap_err();
        assert!(matches!(err, Error::SpecNotLoaded { .. }), "{err}");
        assert!(
            err.to_string().contains("include_kernels!(\"custom\")"),
            "{err}"
        );
        // A tile the catalogue lacks, for a geometry it has.
        let odd = TileConfig {
            block_m: 32,
            block_n: 64,
            block_k: 8,
            thread_m: 2,
            thread_n: 8,
        };
        assert!(odd.validate().is_ok());
        let tiled = Specialization::new(DType::F32, geometry(3, 1), Some(odd), "x");
        let problem = Conv2dProblem::new([1, 4, 20, 20], [8, 4, 3, 3]);
        let err = tiled
            .plan(&problem, &Catalogue::default_catalogue(), H200_SMS)
            .unwrap_err();
        assert!(matches!(err, Error::SpecNotLoaded { .. }), "{err}");
    }

    #[test]
    fn element_type_and_math_are_part_of_the_specialisation() {
        use im2win_codegen::catalogue::TENSOR_OP_128X64_R64;
        use im2win_codegen::{FilterLayout, Precision};
        // bf16 and f16 specialisations are tensor-core ones, NHWC by default.
        let bf16 = Specialization::new(DType::Bf16, geometry(3, 1), None, "im2win");
        assert_eq!(bf16.math(), Math::TensorOp);
        assert_eq!(bf16.layout(), Layout::Nhwc);
        assert_eq!(bf16.to_string(), "im2win_bf16_r3s3_s1x1_*_nhwc");
        let tf32 = Specialization::new(DType::F32, geometry(3, 1), None, "im2win")
            .with_math(Math::TensorOp)
            .with_layout(Layout::Nhwc);
        assert_eq!(tf32.to_string(), "im2win_tf32_r3s3_s1x1_*_nhwc");
        let tile = TENSOR_OP_128X64_R64.tile(DType::F32);
        let fixed = Specialization::new(DType::F32, geometry(3, 1), Some(tile), "im2win")
            .with_math(Math::TensorOp)
            .with_layout(Layout::Nhwc);
        let spec = fixed.spec().unwrap();
        // Tensor-core kernels are fused, with vector loads when the tile is fixed.
        assert_eq!(spec.variant, Variant::FUSED);
        assert_eq!(
            spec.name(),
            "im2win_tf32_r3s3_s1x1_b64x128x16_w32x64_fused_nhwc"
        );
        spec.validate().unwrap();

        let problem = Conv2dProblem::new([1, 8, 20, 20], [8, 8, 3, 3])
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc);
        // A strict problem for a TF32 kernel, a float32 one for a bf16 kernel: refused by
        // precision, before the geometry.
        for (handle, wanted) in [(fixed, "f32"), (bf16, "f32")] {
            let err = handle.check(&problem).unwrap_err();
            assert!(matches!(err, Error::PrecisionMismatch { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("problem is {wanted}")),
                "{err}"
            );
        }
        let tf32_problem = problem.with_precision(Precision::Tf32);
        fixed.check(&tf32_problem).unwrap();
        let bf16_problem = problem.with_dtype(DType::Bf16);
        bf16.check(&bf16_problem).unwrap();
        // What the kernels need: with a fixed tile (vector loads) C a multiple of 4 floats;
        // without one any C (the element-wise kernels). A KCRS filter or NCHW tensors they
        // read through channels-last copies.
        bf16.check(&bf16_problem.with_filter_layout(FilterLayout::Kcrs))
            .unwrap();
        bf16.check(&bf16_problem.with_layout(Layout::Nchw)).unwrap();
        let three = Conv2dProblem::new([1, 3, 20, 20], [8, 3, 3, 3])
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc);
        bf16.check(&three.with_dtype(DType::Bf16)).unwrap();
        let err = fixed
            .check(&three.with_precision(Precision::Tf32))
            .unwrap_err();
        assert!(err.to_string().contains("multiple of 4"), "{err}");
        // The default catalogue has them, for NHWC.
        let planned = fixed.plan(&tf32_problem, &catalogue(), H200_SMS).unwrap();
        assert_eq!(*planned.kernel(), spec);
        let open = bf16.plan(&three.with_dtype(DType::Bf16), &catalogue(), H200_SMS);
        assert!(!open.unwrap().kernel().variant.vector_loads);
        // For NCHW tensors, the same NHWC kernels (on a copy of the input).
        let nchw = bf16.with_layout(Layout::Nchw);
        assert_eq!(nchw.to_string(), bf16.to_string());
        let planned = nchw
            .plan(
                &bf16_problem.with_layout(Layout::Nchw),
                &catalogue(),
                H200_SMS,
            )
            .unwrap();
        assert_eq!(planned.kernel().layout, Layout::Nhwc);
        assert!(planned.transposes_input());
    }
}
