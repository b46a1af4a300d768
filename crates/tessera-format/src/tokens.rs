//! The element types a segment's token matrix can be stored in, and the
//! screening codes stored beside it. These are data of the format: a segment
//! header names its token type and screening, and the byte sizes of its
//! TOKENS, SCALES and CODES sections follow from them. The arithmetic on each
//! type lives in `tessera-kernels` (one trait impl per type).
//!
//! ```text
//! token_type  name  TOKENS row      SCALES per token
//!          1  f16   dim × 2 bytes   none (empty section)
//!          2  int8  dim × 1 byte    one f32: row r holds round(x / scale) ∈ [-127, 127]
//!          3  residual2  u16 centroid code + ⌈dim/4⌉ bytes (2-bit buckets)   none
//!          4  residual4  u16 centroid code + ⌈dim/2⌉ bytes (4-bit buckets)   none
//!
//! A residual token's value is its centroid in the collection's codebook
//! plus, per dimension, the value its bucket stands for (the codebook's
//! tables): only segments of version 3 store them.
//!
//! screening   name    CODES per token
//!         0   none    none (empty section)
//!         1   binary  ⌈dim / 64⌉ u64 words: bit k % 64 of word k / 64 is set iff value k > 0
//! ```

/// `id` (the value a segment header stores) and `from_id` of a fieldless
/// `#[repr(u16)]` enum, with its names (see [`named!`](crate::named)).
macro_rules! named_ids {
    ($t:ident, $what:literal, [$($v:path => $name:literal),*]) => {
        $crate::named!($t, $what, [$($v => $name),*]);

        impl $t {
            pub fn id(self) -> u16 {
                self as u16
            }

            pub fn from_id(id: u16) -> Option<Self> {
                Self::ALL.into_iter().find(|t| t.id() == id)
            }
        }
    };
}

/// How a segment stores token values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u16)]
pub enum TokenType {
    /// IEEE binary16, as given.
    #[default]
    F16 = 1,
    /// Per-token symmetric int8: value ≈ scale × code, scale = max |x| / 127.
    Int8 = 2,
    /// A centroid code and a 2-bit residual bucket per dimension.
    Residual2 = 3,
    /// A centroid code and a 4-bit residual bucket per dimension.
    Residual4 = 4,
}

named_ids!(TokenType, "storage", [
    TokenType::F16 => "f16",
    TokenType::Int8 => "int8",
    TokenType::Residual2 => "residual2",
    TokenType::Residual4 => "residual4"
]);

impl TokenType {
    /// Bytes of one token row in the TOKENS section.
    pub fn row_bytes(self, dim: usize) -> usize {
        match self {
            TokenType::F16 => dim * 2,
            TokenType::Int8 => dim,
            TokenType::Residual2 | TokenType::Residual4 => 2 + (dim * self.residual_bits() as usize).div_ceil(8),
        }
    }

    /// Bytes per token in the SCALES section.
    pub fn scale_bytes(self) -> usize {
        match self {
            TokenType::Int8 => 4,
            _ => 0,
        }
    }

    /// Bits per dimension of a residual type's buckets; 0 for the others.
    pub fn residual_bits(self) -> u32 {
        match self {
            TokenType::Residual2 => 2,
            TokenType::Residual4 => 4,
            _ => 0,
        }
    }

    /// Whether tokens of this type are read through a codebook.
    pub fn is_residual(self) -> bool {
        self.residual_bits() > 0
    }
}

/// Codes stored beside the tokens for a cheap screening stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u16)]
pub enum Screening {
    #[default]
    None = 0,
    /// One sign bit per dimension.
    Binary = 1,
}

named_ids!(Screening, "screening", [Screening::None => "none", Screening::Binary => "binary"]);

impl Screening {
    /// u64 words of one token's code.
    pub fn code_words(self, dim: usize) -> usize {
        match self {
            Screening::None => 0,
            Screening::Binary => dim.div_ceil(64),
        }
    }
}

/// Bytes one token costs in a segment's TOKENS, SCALES and CODES sections.
pub fn bytes_per_token(t: TokenType, s: Screening, dim: usize) -> usize {
    t.row_bytes(dim) + t.scale_bytes() + s.code_words(dim) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip_and_sizes_follow_the_spec() {
        for t in TokenType::ALL {
            assert_eq!((TokenType::from_id(t.id()), TokenType::from_name(t.name())), (Some(t), Some(t)));
        }
        for s in Screening::ALL {
            assert_eq!((Screening::from_id(s.id()), Screening::from_name(s.name())), (Some(s), Some(s)));
        }
        assert_eq!((TokenType::from_id(0), TokenType::from_name("int4"), Screening::from_id(9)), (None, None, None));
        assert_eq!(bytes_per_token(TokenType::F16, Screening::None, 128), 256);
        assert_eq!(bytes_per_token(TokenType::Int8, Screening::None, 128), 132);
        assert_eq!(bytes_per_token(TokenType::Int8, Screening::Binary, 128), 148);
        assert_eq!(bytes_per_token(TokenType::F16, Screening::Binary, 65), 130 + 16);
        assert_eq!(bytes_per_token(TokenType::Residual2, Screening::None, 128), 34);
        assert_eq!(bytes_per_token(TokenType::Residual4, Screening::None, 128), 66);
        assert_eq!(bytes_per_token(TokenType::Residual2, Screening::None, 3), 3);
        assert_eq!(bytes_per_token(TokenType::Residual4, Screening::None, 3), 4);
    }
}
