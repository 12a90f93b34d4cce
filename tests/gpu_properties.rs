//! Property tests on the GPU: random small problems through `Engine::conv2d` against the CPU
//! oracle, and problems with any field values (invalid, huge) with buffers of any length:
//! each call returns the right error before launching anything (the output keeps its
//! poison), or, when everything is right and the problem small, the right result.
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`. `IM2WIN_TEST_SMALL=1`
//! runs fewer cases; `IM2WIN_TEST_SEED` draws others.

mod common;

use common::strategies::{
    Bounds, Len, Tally, any_problem, bounded_problem, check_property, first_wrong, is_buffer_error,
};
use common::{
    Case, Layout, POISON, TOLERANCE, describe, engine, relative_error, run_case, small, summary,
};
use cudarc::driver::CudaSlice;
use im2win::ProblemShape;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Problems that cross the GPU kernels' 128-wide tiles in `K` and `N·P·Q`, with every
/// stride, dilation and padding up to 3 or 4, filters up to 7×7.
const GPU: Bounds = Bounds {
    batch: 2,
    channels: 9,
    out_channels: 140,
    size: 20,
    filter: 7,
    stride: 3,
    dilation: 3,
    padding: 4,
};

/// The largest buffer the wrong-length test allocates, in elements.
const MAX_BUFFER: usize = 1 << 16;

/// Random valid problems through dispatch and `Engine::conv2d_with`, with or without bias,
/// operands at varied (also unaligned) offsets in guarded buffers, the engine's or the
/// caller's workspace, on the engine's or another stream: the CPU oracle's result.
#[test]
fn random_problems_match_the_cpu_oracle() {
    const TEST: &str = "random_problems_match_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let cases = if small() { 12 } else { 80 };
    let worst = std::cell::Cell::new(0.0_f64);
    let strategy = (
        bounded_problem(GPU).prop_filter("valid", |p| p.validate().is_ok()),
        any::<bool>(),
        any::<u64>(),
        0_usize..12,
    );
    check_property(
        TEST,
        cases,
        strategy,
        |(problem, with_bias, seed, layout)| {
            let mut rng = StdRng::seed_from_u64(seed);
            let case = Case::random(&mut rng, problem, with_bias);
            let layout = Layout::varied(layout);
            let err = engine
                .plan(&problem)
                .map_err(|e| e.to_string())
                .and_then(|plan| run_case(&engine, &plan, &case, &layout))
                .map_err(|e| {
                    TestCaseError::fail(format!("{} ({layout:?}): {e}", describe(&problem)))
                })?;
            worst.set(worst.get().max(err));
            Ok(())
        },
    );
    summary(
        TEST,
        &format!(
            "{cases} random problems, worst relative error {:.2e}",
            worst.get()
        ),
    );
}

/// Whether the problem is small enough to run here.
fn cheap(shape: &ProblemShape) -> bool {
    shape.output_len.saturating_mul(shape.reduction) <= 1 << 24
        && shape.im2win_len <= 1 << 24
        && shape.output_len <= MAX_BUFFER
}

/// Problems with any field values and buffers of any length, through `Engine::conv2d` and
/// `Engine::direct_reference_f64`: the problem's own error, or `BufferLength` naming the
/// first wrong buffer, with the output untouched (nothing launched); right buffers on a
/// small problem give a finite result. Valid problems with right buffers that are not small
/// are left out (they would allocate gigabytes; out of memory has its own test).
#[test]
fn invalid_and_huge_problems_fail_before_launching() {
    const TEST: &str = "invalid_and_huge_problems_fail_before_launching";
    let Some(engine) = engine(TEST) else { return };
    let cases = if small() { 60 } else { 400 };
    let tally = Tally::default();
    let strategy = (
        prop_oneof![1 => bounded_problem(GPU), 2 => any_problem()],
        prop::array::uniform4(Len::strategy()),
        any::<bool>(),
    );
    check_property(TEST, cases, strategy, |(problem, lens, with_bias)| {
        let shape = problem.shape();
        let ok = shape.as_ref().ok();
        let [x_len, f_len, b_len, y_len] = [
            lens[0].resolve(ok.map(|s| s.input_len), MAX_BUFFER),
            lens[1].resolve(ok.map(|s| s.filter_len), MAX_BUFFER),
            lens[2].resolve(ok.map(|s| s.output[1]), MAX_BUFFER),
            lens[3].resolve(ok.map(|s| s.output_len), MAX_BUFFER),
        ];
        let checks: Vec<(&'static str, usize, usize)> = match ok {
            Some(s) => [
                ("input", s.input_len, x_len),
                ("filter", s.filter_len, f_len),
            ]
            .into_iter()
            .chain(with_bias.then_some(("bias", s.output[1], b_len)))
            .chain([("output", s.output_len, y_len)])
            .collect(),
            None => Vec::new(),
        };
        let wrong = first_wrong(&checks);
        if let Some(s) = ok
            && wrong.is_none()
            && !cheap(s)
        {
            tally.add("left out (not small)");
            return Ok(());
        }

        // At least one element each (the driver refuses empty allocations); a buffer of
        // length 0 is an empty view of it.
        let upload = |len: usize, value: f32| -> Result<CudaSlice<f32>, TestCaseError> {
            engine
                .stream()
                .clone_htod(&vec![value; len.max(1)])
                .map_err(|e| TestCaseError::fail(e.to_string()))
        };
        let x = upload(x_len, 0.5)?;
        let f = upload(f_len, -0.25)?;
        let b = upload(b_len, 1.0)?;
        let mut y = upload(y_len, POISON)?;
        let mut y64 = engine
            .stream()
            .alloc_zeros::<f64>(y_len.max(1))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (x_view, f_view, b_view) = (x.slice(..x_len), f.slice(..f_len), b.slice(..b_len));
        let bias = with_bias.then_some(&b_view as _);
        let conv = engine.conv2d(
            &problem,
            &x_view,
            &f_view,
            bias,
            &mut y.slice_mut(..y_len),
            None,
        );
        let oracle = engine.direct_reference_f64(
            &problem,
            &x_view,
            &f_view,
            bias,
            &mut y64.slice_mut(..y_len),
        );
        let host = engine
            .stream()
            .clone_dtoh(&y)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let untouched = host.iter().all(|v| v.to_bits() == POISON.to_bits());

        match (ok, wrong) {
            (None, _) => {
                let reason = shape.as_ref().unwrap_err().to_string();
                prop_assert_eq!(conv.map_err(|e| e.to_string()), Err(reason.clone()));
                prop_assert_eq!(oracle.map_err(|e| e.to_string()), Err(reason));
                prop_assert!(untouched, "an invalid problem wrote the output");
                tally.add("invalid problems");
            }
            (Some(_), Some(wrong)) => {
                let err = conv.expect_err("conv2d accepted a wrong buffer");
                // `conv2d` plans first: a valid problem that no kernel can launch (a grid
                // past CUDA's limits) fails there, before the buffers are looked at.
                match engine.plan(&problem) {
                    Ok(_) => {
                        prop_assert!(is_buffer_error(&err, wrong), "{err} for {wrong:?}");
                        tally.add("wrong buffers");
                    }
                    Err(plan_err) => {
                        prop_assert_eq!(err.to_string(), plan_err.to_string());
                        tally.add("valid but not plannable");
                    }
                }
                prop_assert!(untouched, "a wrong buffer call wrote the output");
                // The oracle checks the same buffers in the same order (its output is f64).
                let err = oracle.expect_err("the GPU oracle accepted a wrong buffer");
                prop_assert!(is_buffer_error(&err, wrong), "oracle: {err} for {wrong:?}");
            }
            (Some(_), None) => {
                conv.map_err(|e| TestCaseError::fail(format!("conv2d: {e}")))?;
                oracle.map_err(|e| TestCaseError::fail(format!("oracle: {e}")))?;
                prop_assert!(host.iter().all(|v| v.is_finite()), "output not all written");
                // Constant operands: no cancellation, so the plain relative error applies.
                let reference = engine
                    .stream()
                    .clone_dtoh(&y64)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let err = relative_error(&host[..y_len], &reference[..y_len]);
                prop_assert!(err < TOLERANCE, "{}: error {err:e}", describe(&problem));
                tally.add("computed");
            }
        }
        Ok(())
    });
    summary(TEST, &format!("{cases} cases: {tally}"));
}
