//! bench before and after changing a kernel
//!
//! `cargo bench -p tessera-kernels`: single-threaded MaxSim of one query against
//! 2,000 random f16 documents, for every kernel this CPU runs and the pairwise
//! baseline, at 32 × 200 × 128 and at the real data's average shape 11 × 218 × 128.
//! Throughput is in documents; GFLOP/s = docs/s · 2·nq·nd·dim / 1e9. The
//! single-core FMA peak (the "% of peak" denominator) is printed first.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tessera_kernels::{Kernel, Query, f16, maxsim, maxsim_pairwise};

const DOCS: usize = 2000;

fn data(nq: usize, nd: usize, dim: usize) -> (Vec<f32>, Vec<f16>) {
    let mut s = 0x5eed_u64;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let q = (0..nq * dim).map(|_| next()).collect();
    let d = (0..DOCS * nd * dim).map(|_| f16::from_f32(next())).collect();
    (q, d)
}

fn bench(c: &mut Criterion) {
    for k in Kernel::available() {
        let peak = tessera_kernels::fma_peak_for(k, Duration::from_millis(500));
        eprintln!("single-core FMA peak ({} vectors): {peak:.1} GFLOP/s", k.name());
    }
    for (nq, nd, dim) in [(32usize, 200usize, 128usize), (11, 218, 128)] {
        let (qv, docs) = data(nq, nd, dim);
        let mut g = c.benchmark_group(format!("maxsim_{nq}x{nd}x{dim}_f16"));
        g.throughput(Throughput::Elements(DOCS as u64));
        g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for k in Kernel::available() {
            let q = Query::with_kernel(&qv, dim, k);
            g.bench_function(format!("blocked/{}", k.name()), |b| {
                b.iter(|| docs.chunks_exact(nd * dim).map(|d| maxsim(&q, black_box(d))).sum::<f32>())
            });
        }
        let q = Query::new(&qv, dim);
        g.bench_function("pairwise", |b| {
            b.iter(|| docs.chunks_exact(nd * dim).map(|d| maxsim_pairwise(&q, black_box(d))).sum::<f32>())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
