//! Inner products for the coarse stage: f32·f32 and f16·f32.
//!
//! Plain loops with eight independent accumulators, which LLVM vectorises;
//! a 128–65536-dim single-vector dot is not the bottleneck of a two-stage
//! search (the exact MaxSim rerank is), so there is no hand-written SIMD here.
//! `numkong` was considered and rejected: it compiles C kernels for ~3 minutes.

use half::f16;
use half::slice::HalfFloatSliceExt;

const LANES: usize = 8;

/// ⟨a, b⟩ in f32 (`a.len() == b.len()`).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// ⟨a, b⟩ with `a` stored as f16, converted in blocks of 64 on the stack
/// (`half` uses F16C when the CPU has it).
#[inline]
pub(crate) fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    const BLOCK: usize = 64;
    let mut buf = [0f32; BLOCK];
    let mut sum = 0f32;
    for (ha, fb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let fa = &mut buf[..ha.len()];
        ha.convert_to_f32_slice(fa);
        sum += dot(fa, fb);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_f64_reference() {
        for n in [1usize, 7, 8, 63, 64, 65, 130, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let h: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let want_h: f64 = h.iter().zip(&b).map(|(&x, &y)| x.to_f64() * y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4 * n as f64, "n={n}");
            assert!((dot_f16(&h, &b) as f64 - want_h).abs() < 1e-4 * n as f64, "n={n}");
        }
    }
}
