//! The measured float32 FMA peak of the CPU: every thread of the pool runs register-only,
//! independent FMA chains at once, with the widest vectors the CPU has.
//!
//! Independent chains (more than FMA latency × FMA units per cycle) keep every FMA unit
//! busy; nothing touches memory, so the rate is the cores' arithmetic ceiling at the clock
//! they reach with all threads busy. This is what `im2win-cpu`'s fraction of peak divides
//! by, measured in the same run, on the same threads.

use std::hint::black_box;
use std::time::Instant;

use im2win::cpu::Isa;

/// Independent accumulator chains per thread: at least latency × units (5 × 1 on Zen 1,
/// 4 × 2 on Skylake and later), within 16 vector registers.
const CHAINS: usize = 12;

/// Timed trials; the best one is the peak (an interruption can only slow a trial).
const TRIALS: usize = 5;

/// GFLOP/s of all `pool` threads together, each running FMA chains of `isa`'s width (the
/// portable level measures the best level this CPU has: a peak is a hardware property).
pub fn measure(pool: &rayon::ThreadPool) -> f64 {
    let isa = Isa::detected();
    // About 0.1 s per trial at a few GFLOP/s per thread.
    let iters: u64 = 20_000_000;
    let flops_per_iter = (CHAINS * 2 * lanes(isa)) as f64;
    run(pool, isa, iters / 10); // wakes the threads and lets the clock settle
    (0..TRIALS)
        .map(|_| {
            let start = Instant::now();
            run(pool, isa, iters);
            let seconds = start.elapsed().as_secs_f64();
            pool.current_num_threads() as f64 * iters as f64 * flops_per_iter / seconds / 1e9
        })
        .fold(0.0, f64::max)
}

/// Float32 lanes of one vector of `isa`.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Neon | Isa::Portable => 4,
    }
}

/// `iters` iterations of the chains on every thread of `pool` at once.
fn run(pool: &rayon::ThreadPool, isa: Isa, iters: u64) {
    let sums = pool.broadcast(|_| chains(isa, black_box(iters)));
    black_box(sums);
}

/// One thread's chains; the sum of their values, so that none can be optimised away.
fn chains(isa: Isa, iters: u64) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detected` returned AVX-512, so this CPU has AVX-512F.
        Isa::Avx512 => unsafe { x86::avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detected` returned AVX2, so this CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::avx2(iters) },
        _ => portable(iters),
    }
}

/// 4-lane chains with `mul_add`: `fmla` on AArch64 (where this is the NEON peak); on a
/// CPU without FMA a slow library call, but then there is no FMA peak to speak of.
fn portable(iters: u64) -> f32 {
    let mut acc = [[1.0_f32; 4]; CHAINS];
    let (m, c) = (black_box(0.999_999_f32), black_box(1e-7_f32));
    for _ in 0..iters {
        for chain in &mut acc {
            for lane in chain.iter_mut() {
                *lane = lane.mul_add(m, c);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    use super::CHAINS;

    #[target_feature(enable = "avx2,fma")]
    pub fn avx2(iters: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let m = _mm256_set1_ps(black_box(0.999_999));
        let c = _mm256_set1_ps(black_box(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        let mut lanes = [0.0_f32; 8];
        // SAFETY: `lanes` holds the 8 floats the unaligned store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }

    #[target_feature(enable = "avx512f")]
    pub fn avx512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        let m = _mm512_set1_ps(black_box(0.999_999));
        let c = _mm512_set1_ps(black_box(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_compute_and_the_peak_is_positive() {
        // 1 + ... stays finite and positive on every level.
        assert!(chains(Isa::detected(), 1000) > 0.0);
        assert!(portable(1000) > 0.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert!(measure(&pool) > 0.0);
    }
}
