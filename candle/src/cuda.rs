//! CUDA tensors: im2win's engine on candle's own stream, one per candle CUDA device.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CudaStorage, Layout, Result, Shape, Storage, Tensor};
use im2win::half::{bf16, f16};
use im2win::{Element, Engine, PreparedFilter};

use crate::op::{ConvOp, contiguous_range, im2win_error, misplaced_bias};

/// The engine that launches on `device`'s stream: made on the device's first convolution
/// (it loads im2win's kernels, waiting for the stream once) and kept for the program's
/// life, with its workspace.
pub(crate) fn engine(device: &CudaDevice) -> Result<Arc<Engine>> {
    static ENGINES: OnceLock<Mutex<HashMap<DeviceId, Arc<Engine>>>> = OnceLock::new();
    let mut engines = ENGINES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(engine) = engines.get(&device.id()) {
        return Ok(engine.clone());
    }
    let engine = Engine::on_stream(device.cuda_stream(), im2win::kernels())
        .map_err(im2win_error)?
        .with_tuning(im2win::default_tuning());
    let engine = Arc::new(engine);
    engines.insert(device.id(), engine.clone());
    Ok(engine)
}

/// A layer's prepared filters (`Engine::prepare_filter`): one per device, element type and
/// form that a kernel running the layer reads, made on the first forward that needs it.
#[derive(Default)]
pub(crate) struct PreparedFilters {
    /// `(device, PreparedFilter<T>)`, the element type `T` behind `Any`.
    filters: Mutex<Vec<(DeviceId, Arc<dyn Any + Send + Sync>)>>,
}

impl std::fmt::Debug for PreparedFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.filters.lock().map_or(0, |filters| filters.len());
        write!(f, "PreparedFilters({count})")
    }
}

impl PreparedFilters {
    /// The prepared filter of `filter` that `plan` reads on `device`, made now if there is
    /// none yet.
    fn get<T: Element + DeviceRepr>(
        &self,
        engine: &Engine,
        device: DeviceId,
        plan: &im2win::Plan,
        filter: &dyn DevicePtr<T>,
    ) -> Result<Arc<PreparedFilter<T>>> {
        let mut filters = self.filters.lock().unwrap_or_else(PoisonError::into_inner);
        let found = filters.iter().find_map(|(id, any)| {
            let prepared = any.clone().downcast::<PreparedFilter<T>>().ok()?;
            (*id == device && prepared.suits(plan)).then_some(prepared)
        });
        if let Some(prepared) = found {
            return Ok(prepared);
        }
        let prepared = Arc::new(
            engine
                .prepare_filter_for(plan, filter)
                .map_err(im2win_error)?,
        );
        filters.push((device, prepared.clone()));
        Ok(prepared)
    }
}

type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// The convolution of `op` on CUDA storage: the output allocated on the input's device (not
/// zeroed: every element is written), the kernels queued on its stream.
pub(crate) fn forward(
    op: &ConvOp,
    x: Operand<'_>,
    w: Operand<'_>,
    residual: Option<Operand<'_>>,
) -> Result<(CudaStorage, Shape)> {
    let bias = op.bias.as_ref().map(Tensor::storage_and_layout);
    let bias = match bias.as_ref().map(|(guard, layout)| (&**guard, *layout)) {
        None => None,
        Some((Storage::Cuda(storage), layout)) => Some((storage, layout)),
        Some((other, _)) => return Err(misplaced_bias(other, "a CUDA device")),
    };
    let storage = match op.problem.dtype {
        im2win::DType::F32 => typed::<f32>(op, x, w, bias, residual)?,
        im2win::DType::Bf16 => typed::<bf16>(op, x, w, bias, residual)?,
        im2win::DType::F16 => typed::<f16>(op, x, w, bias, residual)?,
    };
    Ok((storage, op.output_shape()?))
}

fn typed<T: Element + CudaDType + DeviceRepr>(
    op: &ConvOp,
    x: Operand<'_>,
    w: Operand<'_>,
    bias: Option<Operand<'_>>,
    residual: Option<Operand<'_>>,
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let engine = engine(device)?;
    let shape = op.problem.shape().map_err(im2win_error)?;
    let input = view::<T>("input", x)?;
    let filter = view::<T>("weight", w)?;
    let bias = bias.map(|b| view::<T>("bias", b)).transpose()?;
    let residual = residual.map(|r| view::<T>("residual", r)).transpose()?;
    // SAFETY: the slice is handed out (as the op's output) only after the convolution,
    // which writes every element of it, was queued; on an error it is dropped unread.
    let mut output = unsafe { device.alloc::<T>(shape.output_len) }?;
    let bias = bias.as_ref().map(|b| b as &dyn DevicePtr<T>);
    if let Some(prepared) = &op.prepared {
        // The plan that reads a prepared filter (no transform), and that filter.
        let plan = engine.plan_prepared(&op.problem).map_err(im2win_error)?;
        let filter = prepared.get::<T>(&engine, device.id(), &plan, &filter)?;
        let residual = residual.as_ref().map(|r| r as &dyn DevicePtr<T>);
        engine
            .conv2d_prepared(
                &op.problem,
                &input,
                &filter,
                bias,
                residual,
                &mut output,
                None,
            )
            .map_err(im2win_error)?;
        return Ok(CudaStorage::wrap_cuda_slice(output, device.clone()));
    }
    match &residual {
        None => engine.conv2d(&op.problem, &input, &filter, bias, &mut output, None),
        Some(residual) => {
            // `Engine::conv2d` plans with its operands' alignment itself; a residual call
            // takes a plan, made here for the operands' alignment.
            let aligned_to = alignment::<T>(x.1).min(alignment::<T>(w.1));
            engine
                .plan_for_operands(&op.problem, aligned_to)
                .and_then(|plan| {
                    engine.conv2d_with_residual(
                        &plan,
                        &input,
                        &filter,
                        bias,
                        Some(residual),
                        &mut output,
                        None,
                    )
                })
        }
    }
    .map_err(im2win_error)?;
    Ok(CudaStorage::wrap_cuda_slice(output, device.clone()))
}

/// The contiguous elements of a CUDA tensor, in place.
fn view<'a, T: CudaDType>(name: &str, (storage, layout): Operand<'a>) -> Result<CudaView<'a, T>> {
    let slice = storage.as_cuda_slice::<T>()?;
    let (start, end) = contiguous_range(name, layout)?;
    if end > slice.len() {
        return Err(candle_core::Error::msg(format!(
            "im2win-candle Conv2d: the {name}'s layout reaches past its storage"
        )));
    }
    Ok(slice.slice(start..end))
}

/// The alignment in bytes (up to 16, what the kernels' vector loads need) of a tensor that
/// starts `layout.start_offset()` elements into its allocation, whose start every CUDA
/// allocation aligns to 256 bytes. A wrong guess cannot give a wrong result: the engine
/// checks the addresses and refuses a misaligned operand.
fn alignment<T>(layout: &Layout) -> usize {
    let bytes = layout.start_offset() * std::mem::size_of::<T>();
    if bytes == 0 {
        16
    } else {
        (1usize << bytes.trailing_zeros()).min(16)
    }
}
