//! Tensor maps for the kernels whose operands the tensor memory accelerator copies
//! ([`Variant::tma`](im2win_codegen::Variant::tma), `codegen/templates/tma.cuh`): the host
//! describes each operand once per call (`cuTensorMapEncodeIm2col`, `cuTensorMapEncodeTiled`),
//! and the kernel receives the 128-byte descriptors by value, after `ConvParams`.
//!
//! The input (NHWC, in place or its channels-last copy) is an im2col map: a box is the tile's
//! `block_n` output pixels × `block_k` channels of one filter tap; the window origins' bounding
//! box runs from `-pad` to `pad - (R − 1)·dilation` past the far edge (the padding the last
//! output's window needs, not more: the copy engine then walks from one output row to the next
//! as the output does), its traversal strides are the convolution's, and what lies outside the
//! tensor reads as zeros (the padding). The KRSC filter is a `K × C·R·S` matrix, boxes of
//! `block_k × block_m`. Both use the swizzle of the kernel's rows (128- or 64-byte), which is
//! the one its warpgroup MMA reads.

use cudarc::driver::{DeviceRepr, sys};
use im2win_codegen::{DType, KernelSpec};

use super::params::ConvParams;
use crate::error::{Error, Result};

/// A `CUtensorMap` as a kernel argument: 128 opaque bytes, 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorMap([u64; 16]);

// SAFETY: plain data the driver encoded, passed by value as the kernel's
// `const __grid_constant__ im2win::TensorMap` (tma.cuh: 128 bytes, alignas(64)).
unsafe impl DeviceRepr for TensorMap {}

/// The copy engine's limits that dispatch checks before it picks a TMA kernel
/// (`dispatch::unmet_requirement`): the largest traversal stride, the range of an im2col
/// map's bounding-box corners for a 4-D tensor, and the largest tap offset (16 bits).
pub(crate) const MAX_TRAVERSAL_STRIDE: usize = 8;
pub(crate) const CORNER_RANGE: std::ops::RangeInclusive<i64> = -128..=127;
pub(crate) const MAX_TAP_OFFSET: usize = u16::MAX as usize;

/// The bounding box of the window origins along one axis, relative to the input's edges:
/// `(lower, upper)` = `-pad` at the near edge, and at the far edge
/// `(out − 1)·stride + 1 − size − pad` (the last output's window origin, less the edge's
/// index: `pad_far − (taps − 1)·dilation` with `pad_far` the padding that window reaches).
/// Dispatch checks both against [`CORNER_RANGE`]; the input's map is encoded with them.
pub(crate) fn im2col_corners(out: i64, stride: i64, size: i64, pad: i64) -> (i64, i64) {
    (-pad, (out - 1) * stride + 1 - size - pad)
}

/// The maps' element type. Float32 is TFLOAT32: the TMA kernels of float32 are TF32 kernels
/// (`KernelSpec::validate`), and with this type the copy engine rounds each float to TF32 on
/// its way into shared memory, so that the warpgroup MMA (which reads only a float's top 19
/// bits) multiplies rounded operands like the warp MMA's `cvt.rna.tf32.f32`, not truncated
/// ones. (gpu_conv's `tf32_kernels_round_their_operands` tells the two apart.)
fn data_type(dtype: DType) -> sys::CUtensorMapDataType {
    match dtype {
        DType::Bf16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        DType::F32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_TFLOAT32,
    }
}

fn swizzle(row_bytes: u64) -> sys::CUtensorMapSwizzle {
    if row_bytes == 128 {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
    } else {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B
    }
}

fn encoded(result: sys::CUresult, spec: &KernelSpec, what: &'static str) -> Result<()> {
    if result == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::TensorMap {
            what,
            kernel: spec.name(),
            error: cudarc::driver::DriverError(result),
        })
    }
}

/// The im2col map of the NHWC input at device address `x` for `spec` on `p`.
pub(crate) fn input_map(spec: &KernelSpec, p: &ConvParams, x: u64) -> Result<TensorMap> {
    let element = spec.dtype.size_bytes() as u64;
    let row_bytes = u64::from(spec.tile.block_k) * element;
    let [n, c, h, w] = [p.n, p.c, p.h, p.w].map(|v| v as u64);
    let dims = [c, w, h, n];
    let strides = [c * element, w * c * element, h * w * c * element];
    // [W, H] order, as the map's other arrays (innermost first).
    let axes = [
        im2col_corners(p.q.into(), p.stride_w.into(), p.w.into(), p.pad_left.into()),
        im2col_corners(p.p.into(), p.stride_h.into(), p.h.into(), p.pad_top.into()),
    ];
    let lower = axes.map(|(lower, _)| lower as i32);
    let upper = axes.map(|(_, upper)| upper as i32);
    let steps = [1, p.stride_w as u32, p.stride_h as u32, 1];
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: every array holds the rank's entries (dims and steps 4, strides 3, corners 2),
    // `map` is a CUtensorMap to write, and the encoding only reads its arguments.
    let result = unsafe {
        sys::cuTensorMapEncodeIm2col(
            &mut map,
            data_type(spec.dtype),
            4,
            x as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            lower.as_ptr(),
            upper.as_ptr(),
            spec.tile.block_k,
            spec.tile.block_n,
            steps.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle(row_bytes),
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    encoded(result, spec, "the input's im2col tensor map")?;
    Ok(TensorMap(map.opaque))
}

/// The tiled map of the KRSC filter at device address `f` for `spec` on `p`.
pub(crate) fn filter_map(spec: &KernelSpec, p: &ConvParams, f: u64) -> Result<TensorMap> {
    let element = spec.dtype.size_bytes() as u64;
    let row_bytes = u64::from(spec.tile.block_k) * element;
    let crs = p.crs as u64;
    let dims = [crs, p.k as u64];
    let strides = [crs * element];
    let boxes = [spec.tile.block_k, spec.tile.block_m];
    let steps = [1u32, 1];
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: every array holds the rank's entries (2, strides 1), `map` is a CUtensorMap to
    // write, and the encoding only reads its arguments.
    let result = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            data_type(spec.dtype),
            2,
            f as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            steps.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle(row_bytes),
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    encoded(result, spec, "the filter's tensor map")?;
    Ok(TensorMap(map.opaque))
}
