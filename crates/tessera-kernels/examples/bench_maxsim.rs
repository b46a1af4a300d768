//! Quick throughput report for every kernel this CPU runs:
//! `cargo run --release -p tessera-kernels --example bench_maxsim [nq nd dim docs threads]`.

use tessera_kernels::{Kernel, bench_maxsim_with};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("usize argument")).collect();
    let g = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    for k in Kernel::available() {
        let r = bench_maxsim_with(k, g(0, 32), g(1, 200), g(2, 128), g(3, 2000), g(4, 1));
        println!(
            "{:28} {}x{}x{} threads={}: {:>9.0} docs/s {:6.1} GFLOP/s | pairwise {:6.1} GFLOP/s ({:.1}x) | peak {:6.1} GFLOP/s -> {:.0}% | diff {:e}",
            r.kernel,
            r.query_tokens,
            r.doc_tokens,
            r.dim,
            r.threads,
            r.docs_per_s,
            r.gflops,
            r.pairwise_gflops,
            r.speedup_vs_pairwise,
            r.peak_gflops,
            100.0 * r.fraction_of_peak,
            r.max_abs_diff
        );
    }
}
