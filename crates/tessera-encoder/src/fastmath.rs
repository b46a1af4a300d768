//! Branch-free `exp` and `erf` over f32 slices, written so the compiler
//! vectorizes them (libm's are scalar calls: a tenth of an encoder's time
//! went to them), and the two places they serve: exact GELU and the
//! attention softmax.
//!
//! `exp`: Cody–Waite reduction `x = n·ln2 + r`, a degree-6 polynomial in `r`,
//! and `2ⁿ` built in the exponent bits: within 3e-7 relative over
//! `[-87, 88]`, 0 below (a masked score), clamped above.
//! `erf`: Abramowitz & Stegun 7.1.26, absolute error ≤ 1e-6 in f32 (far below an
//! f16-stored token's rounding, 5e-4). Both are checked against f64 below.

#[inline(always)]
fn exp(x: f32) -> f32 {
    let small = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2²³ trick: `round()` is a libm call that
    // stops vectorization.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let y = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if small { 0.0 } else { y }
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Exact (erf) GELU in place: `x · ½ · (1 + erf(x / √2))`.
pub(crate) fn gelu(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { gelu_avx512(values) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { gelu_avx2(values) };
        }
    }
    gelu_body(values)
}

// The same loop compiled for wider vectors (the compiler vectorizes it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(values: &mut [f32]) {
    gelu_body(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(values: &mut [f32]) {
    gelu_body(values)
}

#[inline(always)]
fn gelu_body(values: &mut [f32]) {
    for v in values {
        *v = *v * 0.5 * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of each row of `width` values, in place (the row's maximum is
/// subtracted first, so masked `f32::MIN` scores give 0, and a row of equal
/// scores is uniform).
pub(crate) fn softmax_rows(values: &mut [f32], width: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { softmax_avx512(values, width) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { softmax_avx2(values, width) };
        }
    }
    softmax_body(values, width)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(values: &mut [f32], width: usize) {
    softmax_body(values, width)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(values: &mut [f32], width: usize) {
    softmax_body(values, width)
}

/// Lanes of the max and sum reductions: an f32 reduction in one chain
/// neither vectorizes nor pipelines (the compiler keeps its order), so each
/// lane keeps its own and they are combined at the end.
const LANES: usize = 16;

#[inline(always)]
fn softmax_body(values: &mut [f32], width: usize) {
    for row in values.chunks_exact_mut(width) {
        let mut top = [f32::MIN; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (t, &v) in top.iter_mut().zip(c) {
                *t = if v > *t { v } else { *t };
            }
        }
        let max = chunks.remainder().iter().chain(&top).copied().fold(f32::MIN, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (s, &v) in sums.iter_mut().zip(c) {
                *s += v;
            }
        }
        let sum: f32 = sums.iter().chain(chunks.remainder()).sum();
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_f64() {
        let mut worst_exp = 0f64;
        let mut worst_erf = 0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-3;
            let e = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64) - e).abs() / e);
            let want = libm_erf(x as f64 / 8.0);
            worst_erf = worst_erf.max((erf(x / 8.0) as f64 - want).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
        assert_eq!(exp(-1e30), 0.0);
        assert!(exp(-87.0) > 0.0 && exp(88.0).is_finite());
    }

    /// erf in f64 by its Maclaurin series (exact to ~1e-9 for |x| ≤ 4, where
    /// the terms' cancellation stays small); beyond, erfc(4) = 1.5e-8 < the bound.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
            if n > 400.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_matches_f64_and_handles_masked_rows() {
        let mut v = vec![0.5f32, -1.0, 3.0, f32::MIN, f32::MIN, f32::MIN, f32::MIN, f32::MIN];
        softmax_rows(&mut v, 4);
        let e: Vec<f64> = [0.5f64, -1.0, 3.0].iter().map(|x| x.exp()).collect();
        let s: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((v[i] as f64 - e[i] / s).abs() < 1e-7);
        }
        assert_eq!(v[3], 0.0);
        assert!(v[4..].iter().all(|&p| (p - 0.25).abs() < 1e-7), "{v:?}");
    }
}
