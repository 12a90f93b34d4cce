//! The operand buffers every method reads and writes: several sets of input, filter and
//! output, rotated while timing so that a small layer is not measured out of the L2 cache.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};
use im2win::{Element, ProblemShape, round_to_tf32};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Context, Result};

/// The H200's L2 cache is 60 MiB; sets are rotated until they exceed three times that.
pub const ROTATION_BYTES: u64 = 3 * 60 * (1 << 20);

/// At most this many sets, however small the layer (the smallest layer of the built-in
/// suites needs 117).
pub const MAX_SETS: usize = 512;

/// The number of buffer sets of `set_bytes` each whose total exceeds `target` bytes: one
/// more than fit in `target`, at least 1 (a set larger than `target` needs no rotation) and
/// at most `cap`.
pub fn rotation_sets(set_bytes: u64, target: u64, cap: usize) -> usize {
    let needed = target / set_bytes.max(1) + 1;
    usize::try_from(needed)
        .unwrap_or(usize::MAX)
        .clamp(1, cap.max(1))
}

/// Bytes of one set: input, filter and output (and bias and residual), in elements of
/// `element_bytes` bytes (4 for float32, 2 for bf16 and f16).
pub fn set_bytes(shape: &ProblemShape, operands: Operands, element_bytes: usize) -> u64 {
    let bias = if operands.bias { shape.output[1] } else { 0 };
    let residual = if operands.residual {
        shape.output_len
    } else {
        0
    };
    element_bytes as u64
        * (shape.input_len + shape.filter_len + shape.output_len + bias + residual) as u64
}

/// `sets` sets of input, filter and output on the device, of element type `T` (the layer's
/// `Conv2dProblem::dtype`). Inputs and filters hold uniform random values in [−1, 1) rounded
/// to `T` (never zeros); outputs start zeroed.
pub struct BufferSets<T> {
    /// Inputs `N×C×H×W`, one per set.
    pub inputs: Vec<CudaSlice<T>>,
    /// Filters `K×C×R×S`, one per set.
    pub filters: Vec<CudaSlice<T>>,
    /// Outputs `N×K×P×Q`, one per set.
    pub outputs: Vec<CudaSlice<T>>,
    /// Biases `K`, one per set, when the layer has one.
    pub biases: Vec<CudaSlice<T>>,
    /// Residuals `N×K×P×Q`, one per set, when the layer's epilogue adds one.
    pub residuals: Vec<CudaSlice<T>>,
    /// Set 0's operands on the host as the values the convolution multiplies (float32:
    /// widened from `T`, input and filter rounded to TF32 for a TF32 layer), for the float64
    /// oracles: the reference of the same rounded inputs. Dropped once the reference exists.
    pub host0: Option<HostSet>,
}

/// Set 0's operands on the host, as float32 values.
pub struct HostSet {
    /// The input.
    pub input: Vec<f32>,
    /// The filter.
    pub filter: Vec<f32>,
    /// The bias, if any.
    pub bias: Option<Vec<f32>>,
    /// The residual, if any.
    pub residual: Option<Vec<f32>>,
}

/// Which optional operands a layer has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Operands {
    /// A bias of `K`.
    pub bias: bool,
    /// A residual of the output's size.
    pub residual: bool,
}

/// `len` uniform random values in [−1, 1) from `seed`.
pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `values` rounded to `T` (to nearest even), as uploaded.
fn rounded<T: Element>(values: &[f32]) -> Vec<T> {
    values.iter().map(|&v| T::from_f32(v)).collect()
}

/// The float32 values of `uploaded` that the convolution multiplies: widened, and rounded
/// to TF32 when `tf32`.
fn multiplied<T: Element>(uploaded: &[T], tf32: bool) -> Vec<f32> {
    uploaded
        .iter()
        .map(|&v| {
            let v = v.to_f32();
            if tf32 { round_to_tf32(v) } else { v }
        })
        .collect()
}

impl<T: Element> BufferSets<T> {
    /// Allocates and fills `sets` sets for a problem of `shape`, from `seed`, and keeps set
    /// 0's operands on the host ([`BufferSets::host0`]) as the values the convolution
    /// multiplies: input and filter rounded to TF32 when `tf32`.
    ///
    /// # Errors
    /// When an allocation or copy fails (typically: out of device memory).
    pub fn new(
        stream: &Arc<CudaStream>,
        shape: &ProblemShape,
        sets: usize,
        seed: u64,
        tf32: bool,
        operands: Operands,
    ) -> Result<Self> {
        let mut buffers = BufferSets {
            inputs: Vec::with_capacity(sets),
            filters: Vec::with_capacity(sets),
            outputs: Vec::with_capacity(sets),
            biases: Vec::new(),
            residuals: Vec::new(),
            host0: None,
        };
        for set in 0..sets as u64 {
            let input: Vec<T> = rounded(&random_values(
                shape.input_len,
                seed ^ (2 * set + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            let filter: Vec<T> = rounded(&random_values(
                shape.filter_len,
                seed ^ (2 * set + 2).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            buffers.inputs.push(
                stream
                    .clone_htod(&input)
                    .with_context(|| format!("uploading input set {set}"))?,
            );
            buffers.filters.push(
                stream
                    .clone_htod(&filter)
                    .with_context(|| format!("uploading filter set {set}"))?,
            );
            buffers.outputs.push(
                stream
                    .alloc_zeros::<T>(shape.output_len)
                    .with_context(|| format!("allocating output set {set}"))?,
            );
            let mix = |k: u64| seed ^ (4 * set + k).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let bias: Option<Vec<T>> = operands
                .bias
                .then(|| rounded(&random_values(shape.output[1], mix(3))));
            let residual: Option<Vec<T>> = operands
                .residual
                .then(|| rounded(&random_values(shape.output_len, mix(4))));
            for (values, list, what) in [
                (&bias, &mut buffers.biases, "bias"),
                (&residual, &mut buffers.residuals, "residual"),
            ] {
                if let Some(values) = values {
                    list.push(
                        stream
                            .clone_htod(values)
                            .with_context(|| format!("uploading {what} set {set}"))?,
                    );
                }
            }
            if set == 0 {
                // Bias and residual enter the float32 epilogue as they are: never TF32.
                buffers.host0 = Some(HostSet {
                    input: multiplied(&input, tf32),
                    filter: multiplied(&filter, tf32),
                    bias: bias.as_deref().map(|b| multiplied(b, false)),
                    residual: residual.as_deref().map(|r| multiplied(r, false)),
                });
            }
        }
        Ok(buffers)
    }
}

impl<T> BufferSets<T> {
    /// How many sets.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }
}

/// Fills `output` with NaN (every byte 0xFF: a NaN in float32, bf16 and f16 alike), so
/// that anything a method fails to write shows up in the check.
///
/// # Errors
/// When the memset fails.
pub fn poison<T: Element>(stream: &Arc<CudaStream>, output: &mut CudaSlice<T>) -> Result<()> {
    let bytes = output.num_bytes();
    let (ptr, _sync) = output.device_ptr_mut(stream);
    // SAFETY: `ptr` is the start of `output`'s allocation of `bytes` bytes, valid on
    // `stream`; all-ones bytes are a NaN of every element type, a valid value.
    unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, stream.cu_stream()) }
        .context("poisoning the output with NaN")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rotation_exceeds_three_l2() {
        assert_eq!(ROTATION_BYTES, 180 * MIB);
        // 1.6 MiB sets (ResNet-50, N = 1): 113 of them, just over 180 MiB.
        let n = rotation_sets(1_622_016, ROTATION_BYTES, MAX_SETS);
        assert!(n as u64 * 1_622_016 > ROTATION_BYTES);
        assert!((n - 1) as u64 * 1_622_016 <= ROTATION_BYTES);
        // Exactly 60 MiB sets: 3 would only equal 180 MiB, so 4.
        assert_eq!(rotation_sets(60 * MIB, ROTATION_BYTES, MAX_SETS), 4);
        // A set larger than 180 MiB needs no rotation.
        assert_eq!(rotation_sets(200 * MIB, ROTATION_BYTES, MAX_SETS), 1);
        // Tiny sets hit the cap; zero-sized ones too.
        assert_eq!(rotation_sets(12, ROTATION_BYTES, MAX_SETS), MAX_SETS);
        assert_eq!(rotation_sets(0, ROTATION_BYTES, MAX_SETS), MAX_SETS);
        assert_eq!(rotation_sets(12, ROTATION_BYTES, 0), 1);
    }

    #[test]
    fn built_in_suites_fit_under_the_cap() {
        use crate::suite::Suite;
        for suite in [Suite::paper(1), Suite::resnet50(1), Suite::vgg16(1)] {
            for layer in &suite.layers {
                let bytes = set_bytes(&layer.problem.shape().unwrap(), Operands::default(), 4);
                let n = rotation_sets(bytes, ROTATION_BYTES, usize::MAX);
                assert!(n <= MAX_SETS, "{}: {n} sets", layer.name);
            }
        }
    }

    #[test]
    fn set_size() {
        let shape = im2win::Conv2dProblem::new([2, 3, 8, 8], [4, 3, 3, 3])
            .shape()
            .unwrap();
        assert_eq!(
            set_bytes(&shape, Operands::default(), 4),
            4 * (2 * 3 * 64 + 4 * 27 + 2 * 4 * 36)
        );
        assert_eq!(
            set_bytes(&shape, Operands::default(), 2),
            2 * (2 * 3 * 64 + 4 * 27 + 2 * 4 * 36)
        );
    }

    #[test]
    fn oracle_values_are_the_multiplied_ones() {
        use im2win::half::bf16;
        let values = [0.1_f32, -0.7, 1.0 + 2.0_f32.powi(-12)];
        let uploaded: Vec<bf16> = rounded(&values);
        assert_eq!(uploaded[0], bf16::from_f32(0.1));
        // Widened exactly, never rounded again.
        assert_eq!(
            multiplied(&uploaded, false)[1],
            bf16::from_f32(-0.7).to_f32()
        );
        let floats: Vec<f32> = rounded(&values);
        assert_eq!(floats, values);
        assert_eq!(multiplied(&floats, false), values);
        // TF32: the value a tensor core multiplies.
        assert_eq!(multiplied(&floats, true)[2], 1.0);
        assert_eq!(multiplied(&floats, true)[0], round_to_tf32(0.1));
    }

    #[test]
    fn random_values_are_uniform_and_reproducible() {
        let a = random_values(10_000, 7);
        assert_eq!(a, random_values(10_000, 7));
        assert_ne!(a, random_values(10_000, 8));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(a.iter().filter(|&&v| v == 0.0).count() < 5);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}
