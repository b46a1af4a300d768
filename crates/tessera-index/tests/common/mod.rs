//! Shared test helpers: seeded random data (splitmix64, like the crate's own
//! generator, re-written here to keep tests independent of its internals),
//! clustered vectors and brute-force references.
#![allow(dead_code)]

pub struct Rng(u64);

impl Rng {
    /// A seeded generator: `TESSERA_TEST_SEED` overrides `default`; the seed is printed.
    pub fn from_env(test: &str, default: u64) -> Self {
        let seed = std::env::var("TESSERA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
        println!("{test}: seed {seed} (set TESSERA_TEST_SEED to reproduce another)");
        Self(seed)
    }

    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `clusters` random unit centres.
pub fn centres(rng: &mut Rng, clusters: usize, dim: usize) -> Vec<Vec<f32>> {
    (0..clusters)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.gaussian()).collect();
            normalise(&mut c);
            c
        })
        .collect()
}

/// `n` unit vectors around random ones of `centres` (noise norm ≈ `spread`).
pub fn around(rng: &mut Rng, centres: &[Vec<f32>], n: usize, spread: f32) -> Vec<f32> {
    let dim = centres[0].len();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[rng.below(centres.len())];
        let mut v: Vec<f32> = c.iter().map(|&x| x + spread * rng.gaussian() / (dim as f32).sqrt()).collect();
        normalise(&mut v);
        out.extend(v);
    }
    out
}

/// `n` unit vectors around `clusters` fresh centres (for data without queries).
pub fn clustered(rng: &mut Rng, n: usize, dim: usize, clusters: usize, spread: f32) -> Vec<f32> {
    let c = centres(rng, clusters, dim);
    around(rng, &c, n, spread)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Brute-force top-k by inner product among accepted rows (f16-rounded, as the index stores them).
pub fn brute_top_k(vectors: &[f32], dim: usize, q: &[f32], k: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut s: Vec<(f32, u32)> = vectors
        .chunks_exact(dim)
        .enumerate()
        .filter(|&(i, _)| accept(i as u32))
        .map(|(i, v)| {
            let r: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            (dot(&r, q), i as u32)
        })
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.into_iter().take(k).map(|x| x.1).collect()
}

/// A copy of `bytes` at an 8-byte-aligned address (as a memory map gives).
pub fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// Overwrites the start of a section of a sectioned file (`file`: header of
/// 384 bytes, section table entry at `entry`: offset u64, length u64, CRC
/// u32) with `bytes`, then recomputes that section's CRC and the header CRC
/// (at `header_crc_at`): damage that only the parser's value checks can see.
pub fn rewrite_section(file: &mut [u8], entry: usize, header_crc_at: usize, bytes: &[u8]) {
    let word = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
    let (off, len) = (word(entry), word(entry + 8));
    file[off..off + bytes.len()].copy_from_slice(bytes);
    let crc = tessera_format::crc32(&file[off..off + len]);
    file[entry + 16..entry + 20].copy_from_slice(&crc.to_le_bytes());
    file[header_crc_at..header_crc_at + 4].fill(0);
    let crc = tessera_format::crc32(&file[..384]);
    file[header_crc_at..header_crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}
