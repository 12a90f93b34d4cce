//! The measured float32 FMA peak of the CPU: every thread of the pool runs register-only,
//! independent FMA chains at once, with each vector width the CPU has (256-bit AVX2 and,
//! where present, 512-bit AVX-512); the peak is the best of them.
//!
//! Independent chains (more than FMA latency × FMA units per cycle) keep every FMA unit
//! busy; nothing touches memory, so the rate is the cores' arithmetic ceiling at the clock
//! they reach with all threads busy. Both widths are measured because the wider one is not
//! always faster per cycle (Zen 4 runs a 512-bit FMA as two 256-bit halves, so both reach
//! the same rate there; some Intel parts lower their clock for 512-bit work), and the peak
//! that a fraction of peak divides by must be the best the cores can do. This is what
//! `im2win-cpu`'s fraction of peak divides by, measured in the same run, on the same
//! threads.

use std::hint::black_box;
use std::time::Instant;

use im2win::cpu::Isa;

/// Independent accumulator chains per thread: at least latency × units (5 × 1 on Zen 1,
/// 4 × 2 on Skylake and Zen 4), within 16 vector registers.
const CHAINS: usize = 12;

/// Timed trials; the best one is the peak (an interruption can only slow a trial).
const TRIALS: usize = 5;

/// The peak of every vector width this CPU has: `(level, GFLOP/s of all pool threads
/// together)`, widest last. The levels are those of the hardware, whatever level the
/// benchmark was told to run: a peak is a property of the cores.
pub fn measure_each(pool: &rayon::ThreadPool) -> Vec<(Isa, f64)> {
    let mut levels: Vec<Isa> = [Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|isa| isa.is_available())
        .collect();
    if levels.is_empty() {
        levels.push(Isa::detected());
    }
    levels
        .into_iter()
        .map(|isa| (isa, measure_isa(pool, isa)))
        .collect()
}

/// The best of [`measure_each`]: the peak that a fraction of peak divides by.
pub fn best(each: &[(Isa, f64)]) -> f64 {
    each.iter().map(|&(_, g)| g).fold(0.0, f64::max)
}

/// GFLOP/s of all `pool` threads together, each running FMA chains of `isa`'s width.
fn measure_isa(pool: &rayon::ThreadPool, isa: Isa) -> f64 {
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
        // SAFETY: the level is checked available first, so this CPU has AVX-512F.
        Isa::Avx512 if isa.is_available() => unsafe { x86::avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is checked available first, so this CPU has AVX2 and FMA.
        Isa::Avx2 if isa.is_available() => unsafe { x86::avx2(iters) },
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
        let each = measure_each(&pool);
        assert!(!each.is_empty());
        assert!(best(&each) > 0.0);
    }
}
