//! MaxSim kernels.
//!
//! MaxSim of a query `Q` (`nq × dim`) against a document `D` (`nd × dim`) is
//!
//! ```text
//! score(Q, D) = Σ_{i < nq} max_{j < nd} ⟨Q_i, D_j⟩
//! ```
//!
//! Documents are stored as f16 or int8 (or f32) row-major token matrices; all
//! arithmetic is f32 with f32 accumulation (int8 rows are widened times their scale). This crate owns that arithmetic and nothing else.
//!
//! | module | owns |
//! |---|---|
//! | [`reference`] | scalar f64 MaxSim, the oracle for tests |
//! | `kernel` | the fast single-document kernel, the multi-query batch over one document, the pairwise baseline, and the run-time choice of kernel (calibrated, or `TESSERA_KERNEL`) |
//! | `x86` | the AVX2 and AVX-512 micro-kernels (x86-64 only) |
//! | `amx` | MaxSim on AMX-BF16 tiles, values split into bf16 limbs (x86-64 with AMX) |
//! | `vnni` | int8 MaxSim with AVX-512 VNNI / AVX-VNNI integer dot products, the query in two int8 limbs |
//! | [`bench`] | in-process benchmark and FMA peak probe |
//! | [`batch`] | scoring many documents of one f32/f16 matrix in parallel, top-k |
//! | [`repr`] | stored token types (f16, int8, residual2/4): one [`TokenRepr`] impl each, typed views ([`Repr`]: a type and its codebook), top-k over a segment's tokens |
//! | [`residual`] | residual tokens (a centroid code and 2- or 4-bit per-dimension buckets): their tables, coding, decoding (portable, AVX2, AVX-512) and MaxSim |
//! | [`codes`] | 1-bit sign codes and the Hamming MaxSim that screens candidates with them |
//! | [`centroids`] | tokens against a codebook: every centroid's dot product, the nearest centroid (token-centroid index) |
//! | [`topk`] | the bounded top-k collector shared with the engine |

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod batch;
pub mod bench;
pub mod centroids;
pub mod codes;
mod kernel;
pub mod reference;
pub mod repr;
pub mod residual;
pub mod topk;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use batch::{DocMatrix, score_docs, top_k};
pub use bench::{
    BatchRow, BenchReport, bench_batch, bench_maxsim, bench_maxsim_with, fma_peak_for, measure_fma_peak_gflops,
};
pub use centroids::CentroidPanels;
pub use codes::{CodeKernel, CodeQuery, hamming_maxsim};
pub use half::f16;
pub use kernel::{
    Calibration, Int8Kernel, KERNEL_ENV, Kernel, Query, QueryBatch, calibrate, kernel_name, maxsim, maxsim_batch,
    maxsim_int8, maxsim_int8_batch, maxsim_int8_batch_with, maxsim_int8_with, maxsim_pairwise,
};
pub use repr::{
    Codec, EncodedTokens, Repr, Screening, StoredRows, TokenMatrix, TokenRepr, TokenType, decode_stored, maxsim_stored,
    maxsim_stored_batch,
};
pub use topk::{Hit, TopK};

/// What another crate's AMX code shares with the MaxSim kernel's: the tile
/// configuration and bf16 rounding.
#[cfg(target_arch = "x86_64")]
pub mod amx_tiles {
    pub use crate::amx::{CONFIG, Ctile, TileConfig, bf16};
}

/// Whether this CPU runs AMX-BF16 tiles (with AVX-512 BF16) and the OS let
/// this process use them (asked once): what the encoder's AMX linear layers
/// need.
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return amx::has_amx();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Asks the CPU to bring the cache line holding `x` into its caches: a
/// hint with no effect on any result (nothing on other architectures). For
/// walks that would otherwise wait on one random read after another.
#[inline(always)]
pub fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults; `x`
    // is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// An element type that token matrices may be stored in.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// Converts `src` to f32 into `dst` (`dst.len() == src.len()`).
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
}

impl Element for f32 {
    #[inline]
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl Element for f16 {
    #[inline]
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}
