//! The convolution as a candle custom op: `CustomOp2` on (input, filter), `CustomOp3` on
//! (input, filter, residual); the bias is a tensor of the op, read in its forward.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use im2win::{Conv2dProblem, Element, Epilogue, Padding, Precision};

use crate::{Conv2d, Conv2dConfig};

/// An im2win error as a candle error, with its message.
pub(crate) fn im2win_error(err: im2win::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("im2win: {err}"))
}

/// The error for a group count im2win refuses (0, or not dividing the channels).
fn groups_error(groups: usize, why: &im2win::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("im2win-candle Conv2d: groups = {groups}: {why}"))
}

/// Checks the group count of a layer of `in_channels` → `out_channels` with `kernel_size`
/// filters, before any weight is read: at least 1, dividing both channel counts.
pub(crate) fn check_groups(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: &Conv2dConfig,
) -> Result<()> {
    if cfg.groups == 0 {
        // candle_nn would divide by it.
        return Err(candle_core::Error::msg(
            "im2win-candle Conv2d: groups must be at least 1",
        ));
    }
    let extent = cfg.dilation.saturating_mul(kernel_size.saturating_sub(1)) + 1;
    let probe = Conv2dProblem::new(
        [1, in_channels, extent, extent],
        [
            out_channels,
            in_channels / cfg.groups,
            kernel_size,
            kernel_size,
        ],
    )
    .with_stride([cfg.stride; 2])
    .with_dilation([cfg.dilation; 2])
    .with_groups(cfg.groups);
    // Only the group count is judged here; any other problem shows when the layer runs.
    match probe.validate() {
        Err(err @ im2win::Error::BadGroups { .. }) => Err(groups_error(cfg.groups, &err)),
        _ => Ok(()),
    }
}

/// im2win's element type of a candle dtype.
fn element_type(dtype: DType) -> Result<im2win::DType> {
    match dtype {
        DType::F32 => Ok(im2win::DType::F32),
        DType::BF16 => Ok(im2win::DType::Bf16),
        DType::F16 => Ok(im2win::DType::F16),
        other => Err(candle_core::Error::msg(format!(
            "im2win-candle Conv2d: dtype {other:?} is not supported (F32, BF16 and F16 are)"
        ))),
    }
}

/// One convolution: the problem (every shape and parameter, element type, precision and
/// epilogue) and the layer's bias.
pub(crate) struct ConvOp {
    pub(crate) problem: Conv2dProblem,
    pub(crate) bias: Option<Tensor>,
    /// Where the CPU path keeps the layer's prepared filters, when it prepares them.
    pub(crate) prepared_cpu: Option<std::sync::Arc<crate::cpu::PreparedFilters>>,
    /// Where the GPU path keeps the layer's prepared filters, when it prepares them.
    #[cfg(feature = "cuda")]
    pub(crate) prepared: Option<std::sync::Arc<crate::cuda::PreparedFilters>>,
}

impl ConvOp {
    /// The convolution of `layer` on `x` (and `residual`), checked: shapes, dtypes, devices,
    /// and the problem as im2win validates it.
    pub(crate) fn new(layer: &Conv2d, x: &Tensor, residual: Option<&Tensor>) -> Result<ConvOp> {
        let Conv2dConfig {
            padding,
            stride,
            dilation,
            groups,
            ..
        } = layer.config;
        let (n, c, h, w) = x.dims4()?;
        let (k, fc, r, s) = layer.weight.dims4()?;
        if groups == 0 {
            return Err(candle_core::Error::msg(
                "im2win-candle Conv2d: groups must be at least 1",
            ));
        }
        let dtype = x.dtype();
        let mut tensors = vec![("weight", &layer.weight)];
        tensors.extend(layer.bias.as_ref().map(|b| ("bias", b)));
        tensors.extend(residual.map(|res| ("residual", res)));
        for (name, tensor) in &tensors {
            if tensor.dtype() != dtype {
                return Err(candle_core::Error::msg(format!(
                    "im2win-candle Conv2d: the {name} is {:?} but the input is {dtype:?}",
                    tensor.dtype()
                )));
            }
            // Where, as candle's own ops check it: two candle devices of one GPU are one
            // place (the engine orders their streams).
            if tensor.device().location() != x.device().location() {
                return Err(candle_core::Error::msg(format!(
                    "im2win-candle Conv2d: the {name} is on {:?} but the input is on {:?}",
                    tensor.device().location(),
                    x.device().location()
                )));
            }
        }
        let element = element_type(dtype)?;
        let precision = match element {
            im2win::DType::F32 => layer.precision,
            // bf16 and f16 products are exact in float32: computed as stored.
            _ => Precision::Strict,
        };
        let mut epilogue = Epilogue::activation(layer.activation).with_alpha(layer.alpha);
        if residual.is_some() {
            epilogue = epilogue.with_residual(layer.beta);
        }
        let problem = Conv2dProblem::new([n, c, h, w], [k, fc, r, s])
            .with_groups(groups)
            .with_stride([stride; 2])
            .with_padding(Padding::uniform(padding))
            .with_dilation([dilation; 2])
            .with_dtype(element)
            .with_precision(precision)
            .with_epilogue(epilogue);
        let shape = problem.shape().map_err(|err| match err {
            im2win::Error::BadGroups { .. } => groups_error(groups, &err),
            err => im2win_error(err),
        })?;
        if let Some(bias) = &layer.bias {
            let len = bias.dims1()?;
            if len != k {
                return Err(candle_core::Error::msg(format!(
                    "im2win-candle Conv2d: the bias has {len} elements for {k} output channels"
                )));
            }
        }
        if let Some(residual) = residual
            && residual.dims() != shape.output
        {
            return Err(candle_core::Error::msg(format!(
                "im2win-candle Conv2d: the residual is {:?} but the output is {:?}",
                residual.dims(),
                shape.output
            )));
        }
        Ok(ConvOp {
            problem,
            bias: layer.bias.clone(),
            prepared_cpu: (layer.prepare && !layer.weight.is_variable())
                .then(|| layer.prepared_cpu.clone()),
            #[cfg(feature = "cuda")]
            prepared: (layer.prepare && !layer.weight.is_variable())
                .then(|| layer.prepared.clone()),
        })
    }

    /// The output's shape.
    pub(crate) fn output_shape(&self) -> Result<Shape> {
        let shape = self.problem.shape().map_err(im2win_error)?;
        Ok(Shape::from(shape.output.to_vec()))
    }

    fn cpu(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let bias = self.bias.as_ref().map(Tensor::storage_and_layout);
        let bias = match bias.as_ref().map(|(guard, layout)| (&**guard, *layout)) {
            None => None,
            Some((Storage::Cpu(storage), layout)) => Some((storage, layout)),
            Some((other, _)) => return Err(misplaced_bias(other, "the CPU")),
        };
        let storage = match self.problem.dtype {
            im2win::DType::F32 => self.cpu_typed::<f32>(x, w, bias, residual)?,
            im2win::DType::Bf16 => self.cpu_typed::<im2win::half::bf16>(x, w, bias, residual)?,
            im2win::DType::F16 => self.cpu_typed::<im2win::half::f16>(x, w, bias, residual)?,
        };
        Ok((storage, self.output_shape()?))
    }

    fn cpu_typed<T: Element + WithDType>(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<CpuStorage> {
        let shape = self.problem.shape().map_err(im2win_error)?;
        let x = cpu_slice::<T>("input", x)?;
        let w = cpu_slice::<T>("weight", w)?;
        let bias = bias.map(|b| cpu_slice::<T>("bias", b)).transpose()?;
        let residual = residual
            .map(|r| cpu_slice::<T>("residual", r))
            .transpose()?;
        let mut out = Vec::new();
        out.try_reserve_exact(shape.output_len).map_err(|_| {
            candle_core::Error::msg(format!(
                "im2win-candle Conv2d: cannot allocate the output ({} elements)",
                shape.output_len
            ))
        })?;
        out.resize(shape.output_len, T::from_f64(0.0));
        match &self.prepared_cpu {
            Some(prepared) => {
                let filter = prepared.get(&self.problem, w)?;
                im2win::cpu::conv2d_prepared(&self.problem, x, &filter, bias, residual, &mut out)
            }
            None => {
                im2win::cpu::conv2d_with_residual(&self.problem, x, w, bias, residual, &mut out)
            }
        }
        .map_err(im2win_error)?;
        Ok(T::to_cpu_storage_owned(out))
    }
}

/// The error for a bias on another device than the input's (`input`).
pub(crate) fn misplaced_bias(bias: &Storage, input: &str) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "im2win-candle Conv2d: the bias is on {:?}, the input on {input}",
        bias.device().location()
    ))
}

/// The elements of a contiguous CPU tensor, or an error for a strided one (`forward` makes
/// its operands contiguous, so this is a check, never a path taken).
fn cpu_slice<'a, T: WithDType>(
    name: &str,
    (storage, layout): (&'a CpuStorage, &Layout),
) -> Result<&'a [T]> {
    let all = T::cpu_storage_as_slice(storage)?;
    let (start, end) = contiguous_range(name, layout)?;
    all.get(start..end).ok_or_else(|| {
        candle_core::Error::msg(format!(
            "im2win-candle Conv2d: the {name}'s layout reaches past its storage"
        ))
    })
}

/// The element range of a contiguous layout; an error for a strided one.
pub(crate) fn contiguous_range(name: &str, layout: &Layout) -> Result<(usize, usize)> {
    layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::msg(format!(
            "im2win-candle Conv2d: the {name} is not contiguous (make it contiguous first)"
        ))
    })
}

impl candle_core::CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "im2win-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::forward(self, (s1, l1), (s2, l2), None)
    }
}

impl candle_core::CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "im2win-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu((s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::forward(self, (s1, l1), (s2, l2), Some((s3, l3)))
    }
}
