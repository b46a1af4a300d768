//! Shared pieces of the end-to-end tests: deterministic documents derived
//! from their id, so a checker can know what a writer wrote without being told.

use tessera::{Document, Tokens, f16};

pub const DIM: usize = 16;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable hash of a string.
pub fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| mix(h ^ b as u64))
}

/// The tokens of document `id` in version `version`: 1..=24 rows of DIM values in [-1, 1), as f16.
pub fn tokens_for(id: &str, version: u64) -> Vec<f16> {
    let mut s = hash(id) ^ version.wrapping_mul(0x1234_5678_9abc_def1);
    let rows = 1 + (mix(s) % 24) as usize;
    (0..rows * DIM)
        .map(|_| {
            s = mix(s);
            f16::from_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        })
        .collect()
}

pub fn doc_for(id: &str, version: u64) -> Document {
    Document::new(id, Tokens::F16 { data: tokens_for(id, version), dim: DIM }).with_text(format!("{id} v{version}"))
}

/// A collection kind the end-to-end tests run: how it stores tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    pub storage: tessera::TokenType,
    pub screening: tessera::Screening,
    pub keep: tessera::Keep,
}

/// The kinds the end-to-end tests run: f16; int8 with binary screening
/// codes; residual2 with a kept f16 copy (a centroids index of 16
/// centroids, trained as soon as a segment holds 256 tokens).
pub const KINDS: [Kind; 3] = [
    Kind { storage: tessera::TokenType::F16, screening: tessera::Screening::None, keep: tessera::Keep::None },
    Kind { storage: tessera::TokenType::Int8, screening: tessera::Screening::Binary, keep: tessera::Keep::None },
    Kind { storage: tessera::TokenType::Residual2, screening: tessera::Screening::None, keep: tessera::Keep::F16 },
];

impl Kind {
    /// The type of the values exact scores and `get` read: a residual
    /// collection's kept copy's (the memtable and pre-codebook segments are
    /// f16, which an f16 copy equals).
    pub fn values(&self) -> tessera::TokenType {
        self.keep.token_type().unwrap_or(self.storage)
    }

    /// A collection of this kind (dim [`DIM`]).
    pub fn config(&self) -> tessera::CollectionConfig {
        let mut c = tessera::CollectionConfig::new(DIM);
        (c.storage, c.screening, c.keep) = (self.storage, self.screening, self.keep);
        if self.storage.is_residual() {
            let centroids = tessera::CentroidParams { k: 16, min_train_tokens: 256, ..Default::default() };
            c.index = Some(tessera::IndexConfig::Centroids { centroids });
        }
        c
    }

    /// Its names (storage, screening, keep), as a child process is told them.
    pub fn names(&self) -> [&'static str; 3] {
        [self.storage.name(), self.screening.name(), self.keep.name()]
    }

    /// The kind [`names`](Self::names) gave.
    pub fn parse(names: &[String]) -> Self {
        Kind {
            storage: names[0].parse().expect("storage"),
            screening: names[1].parse().expect("screening"),
            keep: names[2].parse().expect("keep"),
        }
    }
}

/// The values a collection storing `storage` holds for `tokens`, as f32:
/// f16 as given; int8 by an independent naive per-token quantisation
/// (scale = max |x| / 127, code = round(x / scale)), dequantised as code × scale.
pub fn stored_values(tokens: &[f16], storage: tessera::TokenType) -> Vec<f32> {
    match storage {
        tessera::TokenType::F16 => tokens.iter().map(|x| x.to_f32()).collect(),
        tessera::TokenType::Int8 => tokens
            .chunks(DIM)
            .flat_map(|t| {
                let max = t.iter().map(|x| x.to_f32().abs()).fold(0.0, f32::max);
                let scale = max / 127.0;
                t.iter().map(move |x| if max == 0.0 { 0.0 } else { (x.to_f32() / scale).round() * scale })
            })
            .collect(),
        tessera::TokenType::Residual2 | tessera::TokenType::Residual4 => {
            panic!("residual values depend on the collection's codebook: read them with get")
        }
    }
}

/// What `get` returns for a document written with `tokens`: the stored values as f16.
pub fn stored_f16(tokens: &[f16], storage: tessera::TokenType) -> Vec<f16> {
    stored_values(tokens, storage).into_iter().map(f16::from_f32).collect()
}
