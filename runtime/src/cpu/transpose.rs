//! The 8 × 8 float transpose in AVX registers: what packs the filter (`MR` filter rows
//! become groups of `MR` channels) and turns a tile's sums (pixel-major) into runs of
//! pixels per channel for an NCHW store.

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
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The classic 8 × 8 transpose: unpack pairs, then quads, then swap 128-bit halves;
    /// 24 shuffles for 64 floats.
    #[target_feature(enable = "avx")]
    pub fn transpose8(rows: &[&[f32]; 8], l0: usize, dst: &mut [f32], stride: usize) {
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
        let out = [
            _mm256_permute2f128_ps::<0x20>(c0, c4),
            _mm256_permute2f128_ps::<0x20>(c1, c5),
            _mm256_permute2f128_ps::<0x20>(c2, c6),
            _mm256_permute2f128_ps::<0x20>(c3, c7),
            _mm256_permute2f128_ps::<0x31>(c0, c4),
            _mm256_permute2f128_ps::<0x31>(c1, c5),
            _mm256_permute2f128_ps::<0x31>(c2, c6),
            _mm256_permute2f128_ps::<0x31>(c3, c7),
        ];
        for (l, v) in out.into_iter().enumerate() {
            let d: &mut [f32; 8] = (&mut dst[l * stride..][..8]).try_into().expect("8 floats");
            // SAFETY: `d` is 8 floats, what an unaligned store writes.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_an_8_by_8_block() {
        let Some(t) = Transpose8::detect() else {
            eprintln!("no AVX: the transpose is not used here");
            return;
        };
        let data: Vec<Vec<f32>> = (0..8)
            .map(|i| (0..11).map(|l| (i * 100 + l) as f32).collect())
            .collect();
        let rows: [&[f32]; 8] = std::array::from_fn(|i| &data[i][..]);
        let mut dst = vec![f32::NAN; 7 * 10 + 8];
        t.run(&rows, 3, &mut dst, 10);
        for l in 0..8 {
            for i in 0..8 {
                assert_eq!(dst[l * 10 + i], (i * 100 + 3 + l) as f32);
            }
        }
    }
}
