//! In-process MaxSim benchmark (wrapped by `tessera bench maxsim`) and the FMA
//! peak probe that gives the "% of peak" denominator.

use crate::{DocMatrix, Kernel, Query, f16, maxsim_pairwise, score_docs};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Measured GFLOP/s of independent f32 FMAs on the calling thread (2 flops per
/// lane per FMA), using the widest vectors of the active kernel. Runs for about
/// `duration`.
pub fn measure_fma_peak_gflops(duration: Duration) -> f64 {
    fma_peak_for(Kernel::detect(), duration)
}

/// [`measure_fma_peak_gflops`] with the vectors of a given kernel: the best
/// of 10 windows of `duration / 10` (see `time_per_run` on why the best).
///
/// # Panics
/// If the CPU cannot run `kernel`.
pub fn fma_peak_for(kernel: Kernel, duration: Duration) -> f64 {
    assert!(kernel.is_available(), "kernel {kernel:?} is not supported on this CPU");
    let window = duration / 10;
    (0..10).map(|_| fma_peak_window(kernel, window)).fold(0.0, f64::max)
}

fn fma_peak_window(kernel: Kernel, duration: Duration) -> f64 {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the caller checked that the CPU runs `kernel` (AMX implies AVX-512F).
        // AMX is measured against the f32 FMA peak of AVX-512: the unit an
        // exact f32 kernel would use (its own bf16 peak is far higher).
        Kernel::Avx512 | Kernel::Amx => return unsafe { crate::x86::fma_peak_avx512(duration) },
        // SAFETY: as above.
        Kernel::Avx2 => return unsafe { crate::x86::fma_peak_avx2(duration) },
        Kernel::Portable => {}
    }
    portable_peak(duration)
}

/// Multiply-add chains in plain Rust (vectorised by the compiler for the
/// target's baseline SIMD); a and m count as 2 flops.
fn portable_peak(duration: Duration) -> f64 {
    const L: usize = 48;
    let mul = std::hint::black_box(0.999_999f32);
    let add = std::hint::black_box(1e-7f32);
    let mut acc = [1f32; L];
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        for _ in 0..4096 {
            for a in acc.iter_mut() {
                *a = *a * mul + add;
            }
        }
        rounds += 1;
        if start.elapsed() >= duration {
            break;
        }
    }
    std::hint::black_box(acc);
    (rounds * 4096 * L as u64 * 2) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Result of [`bench_maxsim`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The blocked kernel that ran.
    pub kernel: &'static str,
    pub query_tokens: usize,
    pub doc_tokens: usize,
    pub dim: usize,
    pub docs: usize,
    pub threads: usize,
    /// Blocked kernel throughput.
    pub docs_per_s: f64,
    /// Useful flops (2 · query_tokens · doc_tokens · dim per doc, no padding) per second.
    pub gflops: f64,
    /// Pairwise baseline throughput, same data, same threads, same run.
    pub pairwise_docs_per_s: f64,
    pub pairwise_gflops: f64,
    /// `docs_per_s / pairwise_docs_per_s`.
    pub speedup_vs_pairwise: f64,
    /// Measured single-thread FMA peak times `threads`.
    pub peak_gflops: f64,
    /// `gflops / peak_gflops`.
    pub fraction_of_peak: f64,
    /// Largest |blocked − pairwise| score difference seen (sanity check).
    pub max_abs_diff: f32,
}

/// The documents one timed run scores: each once, or — when there are too
/// few to give every thread work (64 per task) — cycled until there are 256
/// per thread, so that a handful of documents measures the kernels in cache
/// on every thread.
fn score_order(docs: usize, threads: usize) -> Vec<u32> {
    let n = docs.max(256 * threads);
    (0..n).map(|i| (i % docs) as u32).collect()
}

/// A tiny deterministic generator (splitmix64).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Runs `f` once to warm up, then in 5 windows of at least `min / 5` each;
/// seconds per run in the best window. The best window, not the mean: on a
/// shared or frequency-scaling machine the mean measures the neighbours, the
/// best window what the code can do (and what kernels are compared by).
fn time_per_run(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let window = min / 5;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut runs = 0u32;
        while runs == 0 || start.elapsed() < window {
            f();
            runs += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / runs as f64);
    }
    best
}

/// Benchmarks MaxSim of one random query (`query_tokens × dim`) against `docs`
/// random f16 documents of `doc_tokens` tokens each, with `threads` rayon
/// threads: the blocked kernel ([`score_docs`]) and the pairwise baseline
/// ([`maxsim_pairwise`]) over the same data. Data come from a fixed seed.
///
/// # Panics
/// If any size is zero or the thread pool cannot be built.
pub fn bench_maxsim(query_tokens: usize, doc_tokens: usize, dim: usize, docs: usize, threads: usize) -> BenchReport {
    bench_maxsim_with(Kernel::detect(), query_tokens, doc_tokens, dim, docs, threads)
}

/// [`bench_maxsim`] with a given kernel; the peak is measured with that
/// kernel's vector width.
///
/// # Panics
/// As [`bench_maxsim`], and if the CPU cannot run `kernel`.
pub fn bench_maxsim_with(
    kernel: Kernel,
    query_tokens: usize,
    doc_tokens: usize,
    dim: usize,
    docs: usize,
    threads: usize,
) -> BenchReport {
    assert!(query_tokens > 0 && doc_tokens > 0 && dim > 0 && docs > 0 && threads > 0);
    let mut rng = SplitMix64(0x7e55_e7a0_5eed);
    let qv: Vec<f32> = (0..query_tokens * dim).map(|_| rng.next_f32()).collect();
    let tokens: Vec<f16> = (0..docs * doc_tokens * dim).map(|_| f16::from_f32(rng.next_f32())).collect();
    let offsets: Vec<u64> = (0..=docs as u64).map(|i| i * doc_tokens as u64).collect();
    let m = DocMatrix { tokens: &tokens, offsets: &offsets, dim };
    let ids = score_order(docs, threads);
    let q = Query::with_kernel(&qv, dim, kernel);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let min = Duration::from_millis(400);

    // The peak is measured before and after the kernels, and the higher kept:
    // on a shared machine either moment may be a slow one.
    let peak_before = fma_peak_for(kernel, Duration::from_millis(200));
    let mut out = vec![0f32; ids.len()];
    let blocked_s = pool.install(|| time_per_run(min, || score_docs(&q, &m, &ids, &mut out)));
    let mut base = vec![0f32; ids.len()];
    let pairwise_s = pool.install(|| {
        time_per_run(min, || {
            base.par_chunks_mut(64).zip(ids.par_chunks(64)).for_each(|(o, d)| {
                for (o, &d) in o.iter_mut().zip(d) {
                    *o = maxsim_pairwise(&q, m.doc(d));
                }
            })
        })
    });
    let max_abs_diff = out.iter().zip(&base).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);

    let flops_per_doc = 2.0 * (query_tokens * doc_tokens * dim) as f64;
    let docs_per_s = ids.len() as f64 / blocked_s;
    let pairwise_docs_per_s = ids.len() as f64 / pairwise_s;
    let gflops = docs_per_s * flops_per_doc / 1e9;
    let peak_gflops = fma_peak_for(kernel, Duration::from_millis(200)).max(peak_before) * threads as f64;
    BenchReport {
        kernel: q.kernel().name(),
        query_tokens,
        doc_tokens,
        dim,
        docs,
        threads,
        docs_per_s,
        gflops,
        pairwise_docs_per_s,
        pairwise_gflops: pairwise_docs_per_s * flops_per_doc / 1e9,
        speedup_vs_pairwise: docs_per_s / pairwise_docs_per_s,
        peak_gflops,
        fraction_of_peak: gflops / peak_gflops,
        max_abs_diff,
    }
}

/// One batch size measured by [`bench_batch`].
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub kernel: &'static str,
    /// Queries scored per pass over each document.
    pub batch: usize,
    /// Documents × queries scored per second.
    pub pairs_per_s: f64,
    /// Useful GFLOP/s (as [`BenchReport::gflops`]).
    pub gflops: f64,
    /// `pairs_per_s` over that of batch 1, measured in the same run.
    pub vs_batch_1: f64,
    /// Largest |batched − alone| score difference (0: they are bit-identical).
    pub max_abs_diff_vs_alone: f32,
}

/// The multi-query kernel ([`crate::maxsim_batch`]) at each batch size in
/// `batches`, in one run: `docs` random f16 documents of `doc_tokens` tokens
/// against batches of distinct random queries of `query_tokens` tokens, with
/// `threads` threads and the given kernel. With many documents they stream
/// from memory, and a batch pays that traffic once for all its queries.
/// Batch 1 is always measured (first), as the ratios' denominator.
///
/// # Panics
/// If any size is zero, the CPU cannot run `kernel`, or the pool cannot be built.
pub fn bench_batch(
    kernel: Kernel,
    query_tokens: usize,
    doc_tokens: usize,
    dim: usize,
    docs: usize,
    threads: usize,
    batches: &[usize],
) -> Vec<BatchRow> {
    assert!(query_tokens > 0 && doc_tokens > 0 && dim > 0 && docs > 0 && threads > 0);
    assert!(batches.iter().all(|&b| b > 0), "batch sizes must be at least 1");
    let mut batches = batches.to_vec();
    batches.push(1);
    batches.sort_unstable();
    batches.dedup();
    let mut rng = SplitMix64(0x0ba7_c4ed);
    let most = batches.iter().copied().max().unwrap_or(1);
    let queries: Vec<Query> = (0..most)
        .map(|_| Query::with_kernel(&(0..query_tokens * dim).map(|_| rng.next_f32()).collect::<Vec<_>>(), dim, kernel))
        .collect();
    let tokens: Vec<f16> = (0..docs * doc_tokens * dim).map(|_| f16::from_f32(rng.next_f32())).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let min = Duration::from_millis(400);
    let flops_per_pair = 2.0 * (query_tokens * doc_tokens * dim) as f64;
    let mut rows: Vec<BatchRow> = Vec::new();
    for &b in &batches {
        let refs: Vec<&Query> = queries[..b].iter().collect();
        let batch = crate::QueryBatch::new(&refs);
        let ids = score_order(docs, threads);
        let mut out = vec![0f32; ids.len() * b];
        let doc = |i: u32| &tokens[i as usize * doc_tokens * dim..(i as usize + 1) * doc_tokens * dim];
        let s = pool.install(|| {
            time_per_run(min, || {
                out.par_chunks_mut(64 * b).zip(ids.par_chunks(64)).for_each(|(o, d)| {
                    for (o, &d) in o.chunks_exact_mut(b).zip(d) {
                        crate::maxsim_batch(&batch, doc(d), o);
                    }
                })
            })
        });
        // The first documents scored one query at a time, against the batch.
        let check = docs.min(64);
        let diff = (0..check)
            .flat_map(|i| (0..b).map(move |j| (i, j)))
            .map(|(i, j)| {
                let alone = crate::maxsim(&queries[j], &tokens[i * doc_tokens * dim..(i + 1) * doc_tokens * dim]);
                (alone - out[i * b + j]).abs()
            })
            .fold(0f32, f32::max);
        let pairs_per_s = (ids.len() * b) as f64 / s;
        let base = rows.first().map_or(pairs_per_s, |r| r.pairs_per_s);
        rows.push(BatchRow {
            kernel: kernel.name(),
            batch: b,
            pairs_per_s,
            gflops: pairs_per_s * flops_per_pair / 1e9,
            vs_batch_1: pairs_per_s / base,
            max_abs_diff_vs_alone: diff,
        });
    }
    rows
}

/// One stored representation measured by [`bench_storage`].
#[derive(Debug, Clone)]
pub struct StorageRow {
    /// `f16`, `int8` (exact MaxSim), `binary` (screening score over the sign
    /// codes), or `residual2` / `residual4` (decoded a block at a time, then
    /// the f32 kernel: the residual kernel ahead of the engine storing them).
    pub repr: &'static str,
    pub kernel: &'static str,
    /// Bytes a token costs in that representation (rows + scales, or codes).
    pub bytes_per_token: usize,
    pub docs_per_s: f64,
    /// Token bytes read per second.
    pub gb_per_s: f64,
    /// `docs_per_s` over f16's, measured in the same run.
    pub vs_f16: f64,
}

/// Exact MaxSim over f16 and int8 copies of the same random documents, and
/// the screening score over their sign codes, in one run: `docs` documents of
/// `doc_tokens` tokens scored against one query with `threads` threads.
/// With few documents they stay in cache; with many they stream from memory.
///
/// # Panics
/// If any size is zero or the thread pool cannot be built.
pub fn bench_storage(
    query_tokens: usize,
    doc_tokens: usize,
    dim: usize,
    docs: usize,
    threads: usize,
) -> Vec<StorageRow> {
    use crate::{CodeQuery, EncodedTokens, Screening, TokenMatrix, TokenType};
    assert!(query_tokens > 0 && doc_tokens > 0 && dim > 0 && docs > 0 && threads > 0);
    let mut rng = SplitMix64(0x5707_a6e5);
    let qv: Vec<f32> = (0..query_tokens * dim).map(|_| rng.next_f32() - 0.5).collect();
    let values: Vec<f16> = (0..docs * doc_tokens * dim).map(|_| f16::from_f32(rng.next_f32() - 0.5)).collect();
    let offsets: Vec<u64> = (0..=docs as u64).map(|i| i * doc_tokens as u64).collect();
    let ids: Vec<u32> = (0..docs as u32).collect();
    let (q, cq) = (Query::new(&qv, dim), CodeQuery::new(&qv, dim));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
    let min = Duration::from_millis(400);
    let mut rows = Vec::new();
    let mut f16_rate = 0.0;
    // (Residual rows are measured below, with a codebook.)
    for t in TokenType::ALL.into_iter().filter(|t| !t.is_residual()) {
        let e = EncodedTokens::encode(t, Screening::Binary, &values, dim);
        let m = TokenMatrix {
            repr: crate::Repr::plain(t),
            screening: Screening::Binary,
            dim,
            rows: &e.rows,
            scales: &e.scales,
            codes: &e.codes,
            offsets: &offsets,
        };
        let bpt = t.row_bytes(dim) + t.scale_bytes();
        if t == TokenType::F16 {
            let s = pool.install(|| time_per_run(min, || drop(std::hint::black_box(m.top_k(&q, &ids, 10)))));
            f16_rate = docs as f64 / s;
            rows.push((t.name(), q.kernel().name(), bpt, f16_rate));
        } else {
            // Every int8 kernel this CPU has, the default first.
            for k in crate::Int8Kernel::available(dim) {
                let score = |d: u32| {
                    let doc = m.doc(d);
                    crate::maxsim_int8_with(&q, bytemuck::cast_slice(doc.rows), doc.scales, k)
                };
                let s = pool.install(|| {
                    time_per_run(min, || drop(std::hint::black_box(crate::repr::top_k_by(&ids, 10, score))))
                });
                rows.push((t.name(), k.name(), bpt, docs as f64 / s));
            }

            let s = pool.install(|| time_per_run(min, || drop(std::hint::black_box(m.screen_top_k(&cq, &ids, 10)))));
            rows.push(("binary", cq.kernel().name(), Screening::Binary.code_words(dim) * 8, docs as f64 / s));
        }
    }
    // Residual rows (the kernel alone: centroid codes spread over 1,024
    // random unit centroids, tables from the residuals; the codes' quality
    // does not change the work).
    {
        let k = 1024;
        let centroids: Vec<f32> = (0..k * dim).map(|_| rng.next_f32() - 0.5).collect();
        // Rows widened one at a time: no f32 copy of the whole data.
        let row = |t: usize| values[t * dim..(t + 1) * dim].iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
        let n_rows = values.len() / dim;
        let code_of = |t: usize| (t.wrapping_mul(2_654_435_761) % k) as u16;
        let sample: Vec<f32> = (0..n_rows.min(20_000))
            .flat_map(|t| {
                let c = &centroids[code_of(t) as usize * dim..][..dim];
                row(t).iter().zip(c).map(|(a, b)| a - b).collect::<Vec<_>>()
            })
            .collect();
        for bits in crate::residual::BITS {
            let (cutoffs, weights) = crate::residual::train_tables(&sample, dim, bits);
            let weights_by_bucket = crate::residual::by_bucket(&weights, dim, bits);
            let codec = crate::residual::Codec {
                bits,
                dim,
                centroids: &centroids,
                cutoffs: &cutoffs,
                weights: &weights,
                weights_by_bucket: &weights_by_bucket,
            };
            let mut stored = Vec::new();
            for t in 0..n_rows {
                codec.encode_row(&row(t), code_of(t), &mut stored);
            }
            let rb = crate::residual::row_bytes(bits, dim);
            let score = |d: u32| {
                let d = d as usize;
                codec.maxsim(&q, &stored[d * doc_tokens * rb..(d + 1) * doc_tokens * rb])
            };
            let s = pool
                .install(|| time_per_run(min, || drop(std::hint::black_box(crate::repr::top_k_by(&ids, 10, score)))));
            let name = if bits == 2 { "residual2" } else { "residual4" };
            rows.push((name, q.kernel().name(), rb, docs as f64 / s));
        }
    }
    rows.into_iter()
        .map(|(repr, kernel, bytes_per_token, docs_per_s)| StorageRow {
            repr,
            kernel,
            bytes_per_token,
            docs_per_s,
            gb_per_s: docs_per_s * (doc_tokens * bytes_per_token) as f64 / 1e9,
            vs_f16: docs_per_s / f16_rate,
        })
        .collect()
}
