//! The 8 × 8 float transpose in AVX registers: what packs the filter (`MR` filter rows
//! become groups of `MR` channels) and turns a tile's sums (pixel-major) into runs of
//! pixels per channel for an NCHW store, there fused with the store itself. The NHWC
//! store, which needs no transpose, has its AVX loop here too: both are the plain
//! epilogue's stores of a tile, where the CPU has AVX.

/// The AVX 8 × 8 transpose, available only where this CPU has AVX.
#[derive(Debug, Clone, Copy)]
pub(super) struct Transpose8 {
    _avx: (),
}

impl Transpose8 {
    /// The transpose, or `None` when this CPU has no AVX (then callers move one float at a
    /// time; Miri, which cannot run the intrinsics, detects none).
    pub fn detect() -> Option<Transpose8> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx") {
            return Some(Transpose8 { _avx: () });
        }
        None
    }

    /// `dst[l·stride + i] = rows[i][l0 + l]` for `i, l < 8`.
    ///
    /// # Panics
    /// When a row has fewer than `l0 + 8` floats or `dst` fewer than `7·stride + 8`.
    #[inline]
    pub fn run(self, rows: &[&[f32]; 8], l0: usize, dst: &mut [f32], stride: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Transpose8` exists only where AVX was detected (`detect`).
        unsafe {
            x86::transpose8(rows, l0, dst, stride);
        }
        #[cfg(not(target_arch = "x86_64"))]
        for (i, row) in rows.iter().enumerate() {
            for l in 0..8 {
                dst[l * stride + i] = row[l0 + l];
            }
        }
    }

    /// The plain epilogue's store of one pixel's run of channels (NHWC): `dst[e] =
    /// sums[e] + bias[e]`, 8 at a time, the rest one by one; the rounding of
    /// [`super::backend::store_plain`]. (The generic store compiles to 128-bit
    /// SSE loops around iterators: measured 40% of a C = 3, 3 × 3 layer's time in NHWC.)
    ///
    /// # Panics
    /// When `sums` or `bias` is shorter than `dst`.
    #[inline]
    pub fn store_run(self, dst: &mut [f32], sums: &[f32], bias: &[f32]) {
        let (sums, bias) = (&sums[..dst.len()], &bias[..dst.len()]);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Transpose8` exists only where AVX was detected (`detect`).
        unsafe {
            x86::store_run(dst, sums, bias);
        }
        #[cfg(not(target_arch = "x86_64"))]
        for ((y, &s), &b) in dst.iter_mut().zip(sums).zip(bias) {
            super::backend::store_plain(std::slice::from_mut(y), &[s], b);
        }
    }

    /// The plain epilogue's NCHW store of 8 channels of a tile, transposed on the way:
    /// `dst[l][at + i]` from the sum `rows[i][l0 + l]` (pixel `i`, channel `l0 + l`) for
    /// the first `n ≤ 8` pixels: `sum + bias[l]`, which is
    /// [`super::backend::store_plain`]'s rounding, vector for scalar. One pass over the
    /// sums, where a transpose into a buffer and a store loop over it were two (the store
    /// loop alone measured 7–10% of a 3 × 3 layer's time at batch 1).
    ///
    /// # Panics
    /// When a row has fewer than `l0 + 8` floats, `n > 8`, `dst` fewer than 8 runs or a
    /// run fewer than `at + n` floats.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn store(
        self,
        rows: &[&[f32]; 8],
        l0: usize,
        n: usize,
        bias: &[f32; 8],
        dst: &mut [&mut [f32]],
        at: usize,
    ) {
        assert!(n <= 8 && dst.len() >= 8, "8 channels of at most 8 pixels");
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Transpose8` exists only where AVX was detected (`detect`).
        unsafe {
            x86::transpose8_store(rows, l0, n, bias, &mut dst[..8], at);
        }
        #[cfg(not(target_arch = "x86_64"))]
        for (l, run) in dst.iter_mut().take(8).enumerate() {
            let sums: [f32; 8] = std::array::from_fn(|i| rows[i][l0 + l]);
            super::backend::store_plain(&mut run[at..][..n], &sums[..n], bias[l]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `rows[i][l0 .. l0 + 8]` for `i < 8`, transposed: vector `l` holds `rows[i][l0 + l]`.
    /// A macro, not a function: a `#[target_feature]` function returning eight vectors
    /// was not inlined, and its result went through memory.
    macro_rules! transposed {
        ($rows:expr, $l0:expr) => {{
            let (rows, l0): (&[&[f32]; 8], usize) = ($rows, $l0);
            let load = |i: usize| {
                let src: &[f32; 8] = rows[i][l0..][..8].try_into().expect("8 floats");
                // SAFETY: `src` is 8 floats, what an unaligned load reads.
                unsafe { _mm256_loadu_ps(src.as_ptr()) }
            };
            let (a0, a1, a2, a3) = (load(0), load(1), load(2), load(3));
            let (a4, a5, a6, a7) = (load(4), load(5), load(6), load(7));
            let (b0, b1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (b2, b3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let (b4, b5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
            let (b6, b7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
            let c0 = _mm256_shuffle_ps::<0x44>(b0, b2);
            let c1 = _mm256_shuffle_ps::<0xEE>(b0, b2);
            let c2 = _mm256_shuffle_ps::<0x44>(b1, b3);
            let c3 = _mm256_shuffle_ps::<0xEE>(b1, b3);
            let c4 = _mm256_shuffle_ps::<0x44>(b4, b6);
            let c5 = _mm256_shuffle_ps::<0xEE>(b4, b6);
            let c6 = _mm256_shuffle_ps::<0x44>(b5, b7);
            let c7 = _mm256_shuffle_ps::<0xEE>(b5, b7);
            [
                _mm256_permute2f128_ps::<0x20>(c0, c4),
                _mm256_permute2f128_ps::<0x20>(c1, c5),
                _mm256_permute2f128_ps::<0x20>(c2, c6),
                _mm256_permute2f128_ps::<0x20>(c3, c7),
                _mm256_permute2f128_ps::<0x31>(c0, c4),
                _mm256_permute2f128_ps::<0x31>(c1, c5),
                _mm256_permute2f128_ps::<0x31>(c2, c6),
                _mm256_permute2f128_ps::<0x31>(c3, c7),
            ]
        }};
    }

    /// The classic 8 × 8 transpose: unpack pairs, then quads, then swap 128-bit halves;
    /// 24 shuffles for 64 floats.
    #[target_feature(enable = "avx")]
    pub fn transpose8(rows: &[&[f32]; 8], l0: usize, dst: &mut [f32], stride: usize) {
        for (l, v) in transposed!(rows, l0).into_iter().enumerate() {
            let d: &mut [f32; 8] = (&mut dst[l * stride..][..8]).try_into().expect("8 floats");
            // SAFETY: `d` is 8 floats, what an unaligned store writes.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) };
        }
    }

    /// [`super::Transpose8::store_run`] (`sums` and `bias` as long as `dst`).
    #[target_feature(enable = "avx")]
    pub fn store_run(dst: &mut [f32], sums: &[f32], bias: &[f32]) {
        let (dst8, dst_rest) = dst.as_chunks_mut::<8>();
        let (sums8, sums_rest) = sums.as_chunks::<8>();
        let (bias8, bias_rest) = bias.as_chunks::<8>();
        for ((y, s), b) in dst8.iter_mut().zip(sums8).zip(bias8) {
            // SAFETY: each is 8 floats, what an unaligned load or store moves.
            unsafe {
                let v = _mm256_add_ps(_mm256_loadu_ps(s.as_ptr()), _mm256_loadu_ps(b.as_ptr()));
                _mm256_storeu_ps(y.as_mut_ptr(), v);
            }
        }
        for ((y, &s), &b) in dst_rest.iter_mut().zip(sums_rest).zip(bias_rest) {
            super::super::backend::store_plain(std::slice::from_mut(y), &[s], b);
        }
    }

    /// [`super::Transpose8::store`]: each channel's 8 pixels leave as one vector, the
    /// first `n` lanes of it (a masked load and store for a tile's last, partial block).
    #[target_feature(enable = "avx")]
    pub fn transpose8_store(
        rows: &[&[f32]; 8],
        l0: usize,
        n: usize,
        bias: &[f32; 8],
        dst: &mut [&mut [f32]],
        at: usize,
    ) {
        // Lane i is written where i < n: a mask lane is active when its sign bit is set.
        let lanes = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(lanes, _mm256_set1_ps(n as f32));
        let mask = _mm256_castps_si256(below);
        for ((l, sums), run) in transposed!(rows, l0).into_iter().enumerate().zip(dst) {
            let run = &mut run[at..][..n];
            let v = _mm256_add_ps(sums, _mm256_set1_ps(bias[l]));
            if n == 8 {
                // SAFETY: `run` is 8 floats, what an unaligned store writes.
                unsafe { _mm256_storeu_ps(run.as_mut_ptr(), v) };
            } else {
                // SAFETY: the mask writes only the `n` lanes `run` has.
                unsafe { _mm256_maskstore_ps(run.as_mut_ptr(), mask, v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX transpose, or `None` (and a note) where this CPU has no AVX.
    fn avx() -> Option<Transpose8> {
        let t = Transpose8::detect();
        if t.is_none() {
            eprintln!("no AVX: the transpose and its stores are not used here");
        }
        t
    }

    /// 8 rows of 11 floats, `value(row, column)`.
    fn eight_rows(value: impl Fn(usize, usize) -> f32) -> Vec<Vec<f32>> {
        (0..8)
            .map(|i| (0..11).map(|l| value(i, l)).collect())
            .collect()
    }

    #[test]
    fn transposes_an_8_by_8_block() {
        let Some(t) = avx() else { return };
        let data = eight_rows(|i, l| (i * 100 + l) as f32);
        let rows: [&[f32]; 8] = std::array::from_fn(|i| &data[i][..]);
        let mut dst = vec![f32::NAN; 7 * 10 + 8];
        t.run(&rows, 3, &mut dst, 10);
        for l in 0..8 {
            for i in 0..8 {
                assert_eq!(dst[l * 10 + i], (i * 100 + 3 + l) as f32);
            }
        }
    }

    #[test]
    fn stores_runs_as_store_plain_does() {
        let Some(t) = avx() else { return };
        for len in [1, 7, 8, 13, 32, 35] {
            let sums: Vec<f32> = (0..len).map(|e| e as f32 * 0.37 - 3.0).collect();
            let bias: Vec<f32> = (0..len).map(|e| e as f32 * -1.25 + 2.0).collect();
            let old: Vec<f32> = (0..len + 3).map(|e| e as f32 * 0.5 + 0.25).collect();
            let mut got = old.clone();
            t.store_run(&mut got[1..1 + len], &sums, &bias);
            let mut want = old.clone();
            for e in 0..len {
                let y = std::slice::from_mut(&mut want[1 + e]);
                crate::cpu::backend::store_plain(y, &sums[e..e + 1], bias[e]);
            }
            assert_eq!(got, want, "{len} channels");
        }
    }

    #[test]
    fn stores_8_channels_as_store_plain_does() {
        let Some(t) = avx() else { return };
        // Sums of 8 pixels (rows) × 11 channels; channels 2..10 are stored.
        let data = eight_rows(|i, l| (i * 11 + l) as f32 * 0.37 - 9.0);
        let rows: [&[f32]; 8] = std::array::from_fn(|i| &data[i][..]);
        let bias: [f32; 8] = std::array::from_fn(|l| l as f32 * 1.5 - 4.0);
        for n in 1..=8 {
            // Runs of 13 floats, written from float 3 on: the rest must stay.
            let old: Vec<Vec<f32>> = (0..8)
                .map(|l| (0..13).map(|e| (l * 13 + e) as f32 * 0.5 + 0.25).collect())
                .collect();
            let mut got = old.clone();
            let mut runs: Vec<&mut [f32]> = got.iter_mut().map(|r| &mut r[..]).collect();
            t.store(&rows, 2, n, &bias, &mut runs, 3);
            for l in 0..8 {
                let mut want = old[l].clone();
                let sums: Vec<f32> = (0..n).map(|i| data[i][2 + l]).collect();
                crate::cpu::backend::store_plain(&mut want[3..3 + n], &sums, bias[l]);
                assert_eq!(got[l], want, "{n} pixels, channel {l}");
            }
        }
    }
}
