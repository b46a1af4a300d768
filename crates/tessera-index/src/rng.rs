//! A tiny deterministic random number generator (splitmix64).
//!
//! Encoders and the HNSW level draw must be reproducible from a seed alone,
//! across platforms and versions of dependencies, so we keep the generator
//! here (a dozen lines) rather than depend on `rand`'s algorithm choices.

/// splitmix64 (Steele, Lea, Flood 2014): passes BigCrush, one `u64` of state.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1): never 0, so `ln` is finite.
    pub(crate) fn next_f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A random sign, ±1.
    pub(crate) fn sign(&mut self) -> f32 {
        if self.next_u64() >> 63 == 0 { 1.0 } else { -1.0 }
    }

    /// A standard normal draw (Box–Muller; the second value is discarded to
    /// keep the stream a pure function of the number of draws).
    pub(crate) fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.next_f64(), self.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// Uniform in `0..n` (`n ≥ 1`; the modulo bias is below 2^-40 for our sizes).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 0 from the reference C implementation.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn gaussian_moments() {
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| r.gaussian() as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
