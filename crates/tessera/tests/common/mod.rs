//! Helpers shared by the engine's integration tests: seeded random tokens
//! (splitmix64) and the files of a collection folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use tessera::Tokens;

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// `n` uniform tokens.
    pub fn tokens(&mut self, n: usize, dim: usize) -> Tokens {
        self.tokens_near(n, dim, &[])
    }

    /// `n` tokens, each near one of `centres` (or uniform when there are none).
    pub fn tokens_near(&mut self, n: usize, dim: usize, centres: &[Vec<f32>]) -> Tokens {
        let mut data = Vec::with_capacity(n * dim);
        for _ in 0..n {
            if centres.is_empty() {
                data.extend((0..dim).map(|_| self.f()));
            } else {
                let c = &centres[(self.next() % centres.len() as u64) as usize];
                data.extend(c.iter().map(|&x| x + 0.1 * self.f()));
            }
        }
        Tokens::F32 { data, dim }
    }
}

/// The files in `dir` whose names start with `prefix`, sorted.
pub fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}
