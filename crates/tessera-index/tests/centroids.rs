//! The token-centroid stage against naive references: candidates equal a
//! brute-force evaluation of the documented approximate score, recall of
//! the true MaxSim top-10 with a printed seed, filters, and the two file
//! formats (round trip, every flipped byte and truncation detected, lists
//! that disagree with the codes refused).

mod common;

use common::{Rng, aligned, centres, dot, rewrite_section};
use tessera_format::FormatError;
use tessera_index::centroids::{self as cx, CodebookInfo, CodebookLayout, IvfLayout, IvfSource, Probe, ResidualTables};
use tessera_kernels::CentroidPanels;

const DIM: usize = 16;

fn view(v: &[u64], len: usize) -> &[u8] {
    &bytemuck::cast_slice(v)[..len]
}

/// Documents of 3..12 tokens, each drawn around one of a few topic centres.
struct Corpus {
    tokens: Vec<f32>,
    offsets: Vec<u64>,
}

fn corpus(rng: &mut Rng, docs: usize) -> Corpus {
    corpus_of(rng, docs, 24, 0.6)
}

fn corpus_of(rng: &mut Rng, docs: usize, topics: usize, spread: f32) -> Corpus {
    let topics = centres(rng, topics, DIM);
    let mut tokens = Vec::new();
    let mut offsets = vec![0u64];
    for _ in 0..docs {
        let n = 3 + rng.below(10);
        for _ in 0..n {
            let c = &topics[rng.below(topics.len())];
            let mut v: Vec<f32> = c.iter().map(|&x| x + spread * rng.gaussian() / (DIM as f32).sqrt()).collect();
            common::normalise(&mut v);
            tokens.extend(v);
        }
        offsets.push((tokens.len() / DIM) as u64);
    }
    Corpus { tokens, offsets }
}

struct Built {
    panels: CentroidPanels,
    codes: Vec<u16>,
    file: Vec<u64>,
    len: usize,
}

fn build(c: &Corpus, k: usize) -> Built {
    let t = cx::train(&c.tokens, DIM, k, 6, 3);
    let panels = CentroidPanels::new(&t.centroids, DIM);
    let n = c.tokens.len() / DIM;
    let (mut codes32, mut sims) = (vec![0u32; n], vec![0f32; n]);
    panels.nearest(&c.tokens, &mut codes32, &mut sims);
    let codes: Vec<u16> = codes32.iter().map(|&x| x as u16).collect();
    let bytes = cx::ivf::build(&IvfSource {
        dim: DIM,
        k,
        codebook: cx::codebook::identity(&t.centroids),
        codes: &codes,
        doc_offsets: &c.offsets,
        mean_similarity: t.mean_similarity,
    })
    .unwrap();
    Built { panels, codes, len: bytes.len(), file: aligned(&bytes) }
}

/// The documented approximate score of every document, computed naively
/// from the codes: Σ_i (best probed centroid score among the document's
/// codes, else the last probed score).
fn naive_scores(c: &Corpus, b: &Built, q: &[f32], nprobe: usize) -> Vec<f32> {
    let k = b.panels.k();
    let nq = q.len() / DIM;
    let mut s = vec![0f32; nq * k];
    b.panels.scores(q, &mut s);
    let probed: Vec<Vec<usize>> = (0..nq)
        .map(|i| {
            let mut idx: Vec<usize> = (0..k).collect();
            idx.sort_by(|&a, &c| s[i * k + c].total_cmp(&s[i * k + a]).then(a.cmp(&c)));
            idx.truncate(nprobe);
            idx
        })
        .collect();
    (0..c.offsets.len() - 1)
        .map(|d| {
            let codes = &b.codes[c.offsets[d] as usize..c.offsets[d + 1] as usize];
            (0..nq)
                .map(|i| {
                    let floor = s[i * k + probed[i][probed[i].len() - 1]];
                    probed[i]
                        .iter()
                        .filter(|&&p| codes.iter().any(|&x| x as usize == p))
                        .map(|&p| s[i * k + p])
                        .fold(floor, f32::max)
                })
                .sum()
        })
        .collect()
}

fn query(rng: &mut Rng, c: &Corpus, nq: usize) -> Vec<f32> {
    // Tokens of a random document, perturbed: a query with true matches.
    let d = rng.below(c.offsets.len() - 1);
    let (a, b) = (c.offsets[d] as usize, c.offsets[d + 1] as usize);
    let mut q = Vec::new();
    for i in 0..nq {
        let t = a + i % (b - a);
        let mut v: Vec<f32> = c.tokens[t * DIM..(t + 1) * DIM].iter().map(|&x| x + 0.05 * rng.gaussian()).collect();
        common::normalise(&mut v);
        q.extend(v);
    }
    q
}

#[test]
fn candidates_equal_the_naive_approximate_ranking() {
    let mut rng = Rng::from_env("candidates_equal_the_naive_approximate_ranking", 20_261_205);
    let c = corpus(&mut rng, 400);
    let b = build(&c, 64);
    let bytes = view(&b.file, b.len);
    let ivf = IvfLayout::parse(bytes, &c.offsets).unwrap();
    for nprobe in [1, 4, 16, 64] {
        for _ in 0..10 {
            let q = query(&mut rng, &c, 5);
            let probe = Probe::new(&b.panels, &q, nprobe);
            let naive = naive_scores(&c, &b, &q, nprobe);
            let got = ivf.candidates(bytes, &probe, 30, |_| true);
            assert_eq!(got.len(), 30);
            // Every returned score is the document's naive score (up to the
            // order of f32 additions), in non-increasing order, and no document
            // left out scores clearly above the last one returned.
            for w in got.windows(2) {
                assert!(w[0].1 >= w[1].1, "nprobe {nprobe}: not best first: {got:?}");
            }
            for &(d, s) in &got {
                assert!(
                    (s - naive[d as usize]).abs() < 1e-4,
                    "nprobe {nprobe}: doc {d}: {s} vs naive {}",
                    naive[d as usize]
                );
            }
            let last = got[got.len() - 1].1;
            for (d, &s) in naive.iter().enumerate() {
                if !got.iter().any(|g| g.0 == d as u32) {
                    assert!(s <= last + 1e-4, "nprobe {nprobe}: doc {d} ({s}) left out above the last ({last})");
                }
            }
        }
    }
}

#[test]
fn recall_of_the_maxsim_top_10_against_brute_force() {
    let mut rng = Rng::from_env("recall_of_the_maxsim_top_10_against_brute_force", 7_2026);
    let c = corpus_of(&mut rng, 2000, 400, 0.3);
    let b = build(&c, 256);
    let bytes = view(&b.file, b.len);
    let ivf = IvfLayout::parse(bytes, &c.offsets).unwrap();
    let (mut found, mut total) = (0, 0);
    for _ in 0..40 {
        let q = query(&mut rng, &c, 8);
        let exact: Vec<(f32, u32)> = {
            let mut v: Vec<(f32, u32)> = (0..c.offsets.len() - 1)
                .map(|d| {
                    let doc = &c.tokens[c.offsets[d] as usize * DIM..c.offsets[d + 1] as usize * DIM];
                    let s = q
                        .chunks_exact(DIM)
                        .map(|qi| doc.chunks_exact(DIM).map(|t| dot(qi, t)).fold(f32::MIN, f32::max))
                        .sum::<f32>();
                    (s, d as u32)
                })
                .collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            v
        };
        let got = ivf.candidates(bytes, &Probe::new(&b.panels, &q, 8), 100, |_| true);
        found += exact[..10].iter().filter(|e| got.iter().any(|g| g.0 == e.1)).count();
        total += 10;
    }
    let recall = found as f64 / total as f64;
    println!("recall of the exact top-10 in 100 centroid candidates of 2000 documents: {recall:.3}");
    assert!(recall >= 0.9, "recall {recall}");
}

#[test]
fn filters_apply_inside_and_every_document_when_candidates_cover_all() {
    let mut rng = Rng::new(11);
    let c = corpus(&mut rng, 120);
    let b = build(&c, 32);
    let bytes = view(&b.file, b.len);
    let ivf = IvfLayout::parse(bytes, &c.offsets).unwrap();
    let q = query(&mut rng, &c, 4);
    // nprobe 1: few documents are reached; asking for all fills up with the rest.
    let probe = Probe::new(&b.panels, &q, 1);
    let all = ivf.candidates(bytes, &probe, 1000, |_| true);
    let mut ids: Vec<u32> = all.iter().map(|x| x.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..120).collect::<Vec<_>>(), "n ≥ documents returns every document once");
    let even = ivf.candidates(bytes, &probe, 1000, |d| d % 2 == 0);
    assert_eq!(even.len(), 60);
    assert!(even.iter().all(|x| x.0 % 2 == 0), "a filtered-out document was returned");
    let top = ivf.candidates(bytes, &Probe::new(&b.panels, &q, 8), 5, |d| d % 3 == 1);
    assert_eq!(top.len(), 5);
    assert!(top.iter().all(|x| x.0 % 3 == 1));
    assert!(ivf.candidates(bytes, &probe, 10, |_| false).is_empty());
}

#[test]
fn lists_hold_each_document_once_per_centroid_it_uses() {
    let mut rng = Rng::new(4);
    let c = corpus(&mut rng, 50);
    let b = build(&c, 16);
    let bytes = view(&b.file, b.len);
    let ivf = IvfLayout::parse(bytes, &c.offsets).unwrap();
    assert_eq!(ivf.codes(bytes), &b.codes[..]);
    for code in 0..16 {
        let want: Vec<u32> = (0..50u32)
            .filter(|&d| {
                b.codes[c.offsets[d as usize] as usize..c.offsets[d as usize + 1] as usize].contains(&(code as u16))
            })
            .collect();
        assert_eq!(ivf.list(bytes, code), &want[..], "list {code}");
    }
}

/// Offsets of bytes no checksum covers: the padding between sections.
fn padding(bytes: &[u8], sections: usize) -> Vec<std::ops::Range<usize>> {
    let mut covered: Vec<(usize, usize)> = (0..sections)
        .map(|i| {
            let e = &bytes[128 + 32 * i..];
            let off = u64::from_le_bytes(e[..8].try_into().unwrap()) as usize;
            (off, off + u64::from_le_bytes(e[8..16].try_into().unwrap()) as usize)
        })
        .collect();
    covered.insert(0, (0, 384));
    covered.windows(2).map(|w| w[0].1..w[1].0).collect()
}

fn every_flip_and_cut_refused(bytes: &[u8], sections: usize, parse: impl Fn(&[u8]) -> bool) {
    let pad = padding(bytes, sections);
    let mut buf = aligned(bytes);
    let len = bytes.len();
    for i in 0..len {
        if pad.iter().any(|r| r.contains(&i)) {
            continue;
        }
        bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[i] ^= 0x10;
        assert!(!parse(view(&buf, len)), "flip at byte {i} not detected");
        bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[i] ^= 0x10;
    }
    for cut in 0..len {
        assert!(!parse(view(&buf, cut)), "truncation to {cut} not detected");
    }
    assert!(parse(view(&buf, len)));
}

#[test]
fn every_flipped_byte_and_truncation_is_detected() {
    let mut rng = Rng::new(5);
    let c = corpus(&mut rng, 12);
    let b = build(&c, 4);
    let ivf_bytes = view(&b.file, b.len).to_vec();
    every_flip_and_cut_refused(&ivf_bytes, 3, |x| IvfLayout::parse(x, &c.offsets).is_ok());
    let t = cx::train(&c.tokens, DIM, 4, 2, 1);
    let info =
        CodebookInfo { dim: DIM, k: 4, sample_tokens: 0, iterations: 2, seed: 1, mean_similarity: t.mean_similarity };
    let cb = cx::codebook::write(&t, &info, None).unwrap();
    every_flip_and_cut_refused(&cb, 3, |x| CodebookLayout::parse(x).is_ok());
    let buf = aligned(&cb);
    let layout = CodebookLayout::parse(view(&buf, cb.len())).unwrap();
    assert_eq!(layout.info, info);
    assert_eq!(layout.centroids(view(&buf, cb.len())), &t.centroids[..]);
    assert_eq!(layout.crc, cx::codebook::identity(&t.centroids));
    assert_eq!((layout.bits, layout.residual_tables(view(&buf, cb.len()))), (0, None));
    // Version 1.1 with residual tables (2 bits: 3 cutoffs and 4 weights per dimension).
    let cutoffs: Vec<f32> = (0..DIM * 3).map(|i| (i % 3) as f32 * 0.1 - 0.1).collect();
    let weights: Vec<f32> = (0..DIM * 4).map(|i| (i % 4) as f32 * 0.1 - 0.15).collect();
    let tables = ResidualTables { bits: 2, cutoffs: &cutoffs, weights: &weights };
    let cb = cx::codebook::write(&t, &info, Some(&tables)).unwrap();
    every_flip_and_cut_refused(&cb, 3, |x| CodebookLayout::parse(x).is_ok());
    let buf = aligned(&cb);
    let layout = CodebookLayout::parse(view(&buf, cb.len())).unwrap();
    assert_eq!((layout.minor, layout.bits), (1, 2));
    assert_eq!(layout.residual_tables(view(&buf, cb.len())), Some(tables));
    // Tables that do not fit are refused when written.
    let mut unordered = cutoffs.clone();
    unordered.swap(0, 2);
    for (bits, c, w) in
        [(3, &cutoffs, &weights), (2, &unordered, &weights), (2, &cutoffs, &cutoffs), (4, &cutoffs, &weights)]
    {
        let bad = ResidualTables { bits, cutoffs: c, weights: w };
        assert!(cx::codebook::write(&t, &info, Some(&bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn lists_that_disagree_with_the_codes_are_refused() {
    let mut rng = Rng::new(8);
    let c = corpus(&mut rng, 30);
    let b = build(&c, 8);
    let bytes = view(&b.file, b.len);
    // The same file against another segment's document offsets.
    let mut other = c.offsets.clone();
    other[1] = other[2]; // document 1's tokens counted as document 0's
    let err = IvfLayout::parse(bytes, &other).unwrap_err();
    assert!(matches!(err, FormatError::Corrupted { .. }), "{err:?}");
    let fewer = &c.offsets[..c.offsets.len() - 1];
    assert!(IvfLayout::parse(bytes, fewer).is_err());
    // A code ≥ k with every checksum recomputed.
    let mut buf = b.file.clone();
    let raw = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..b.len];
    rewrite_section(raw, 128, 60, &9u16.to_le_bytes()); // the first of CODES
    let err = IvfLayout::parse(view(&buf, b.len), &c.offsets).unwrap_err();
    assert!(matches!(err, FormatError::Corrupted { ref reason, .. } if reason.contains("≥ k")), "{err:?}");
}

#[test]
fn bad_build_input_is_an_error_not_a_panic() {
    let src = |codes: &'static [u16], off: &'static [u64], k| IvfSource {
        dim: 4,
        k,
        codebook: 0,
        codes,
        doc_offsets: off,
        mean_similarity: 1.0,
    };
    assert!(cx::ivf::build(&src(&[0, 1], &[0, 2], 2)).is_ok());
    assert!(cx::ivf::build(&src(&[0, 2], &[0, 2], 2)).is_err(), "code ≥ k");
    assert!(cx::ivf::build(&src(&[0, 1], &[0, 1], 2)).is_err(), "offsets short of the codes");
    assert!(cx::ivf::build(&src(&[0, 1], &[0, 2], 0)).is_err(), "k = 0");
    let info = CodebookInfo { dim: 4, k: 1, sample_tokens: 1, iterations: 1, seed: 0, mean_similarity: 0.0 };
    let t = |c: Vec<f32>, offsets: Vec<u32>| cx::Trained {
        centroids: c,
        groups: vec![1.0; 4],
        group_offsets: offsets,
        mean_similarity: 0.0,
    };
    assert!(cx::codebook::write(&t(vec![1.0; 4], vec![0, 1]), &info, None).is_ok());
    assert!(cx::codebook::write(&t(vec![f32::NAN; 4], vec![0, 1]), &info, None).is_err(), "NaN");
    assert!(cx::codebook::write(&t(vec![1.0; 4], vec![0, 2]), &info, None).is_err(), "offsets past k");
    assert!(cx::codebook::write(&t(vec![1.0; 4], vec![0]), &info, None).is_err(), "no group");
}

#[test]
fn auto_k_grows_with_the_square_root_of_the_tokens() {
    assert_eq!(cx::auto_k(1000), 256);
    assert_eq!(cx::auto_k(567_867), 4096);
    assert_eq!(cx::auto_k(11_357_340), 16384);
    assert_eq!(cx::auto_k(usize::MAX >> 8), 65536);
    let p = cx::CentroidParams::default();
    assert_eq!(p.k_for(2000, 2000), 125, "never fewer than 16 sample tokens per centroid");
    assert_eq!(p.k_for(250_000, 11_357_340), 15_625, "the collection's size, as far as the sample allows");
    assert_eq!(p.k_for(600_000, 11_357_340), 16384);
    assert_eq!((cx::auto_nprobe(256), cx::auto_nprobe(4096), cx::auto_nprobe(16384)), (8, 32, 64));
    assert_eq!(cx::CentroidParams { nprobe: 5, ..p }.nprobe_for(16384), 5);
    // Outgrown when the collection wants twice the centroids (and a sample could train them).
    assert!(!p.outgrown(4096, 600_000, 567_867) && p.outgrown(2048, 600_000, 567_867));
    assert!(!p.outgrown(2048, 20_000, 567_867), "a sample of 20k tokens trains at most 1,250");
    assert!(!cx::CentroidParams { k: 2048, ..p }.outgrown(2048, 600_000, 11_357_340), "a fixed k never grows");
    // Expected tokens size the first codebook for them: growing to them retrains nothing.
    let e = cx::CentroidParams { expected_tokens: 567_867, ..p };
    assert_eq!((p.k_for(257_857, 257_857), e.k_for(257_857, 257_857)), (2048, 4096));
    assert!(p.outgrown(2048, 567_867, 567_867) && !e.outgrown(4096, 567_867, 567_867));
    assert!(e.outgrown(4096, 2_000_000, 2_400_000), "past them, a collection grows its codebook again");
}

#[test]
fn a_hierarchical_codebook_partitions_its_centroids_and_codes_near_the_best() {
    let mut rng = Rng::from_env("a_hierarchical_codebook_partitions_its_centroids_and_codes_near_the_best", 31);
    let c = corpus_of(&mut rng, 4000, 300, 0.4);
    let n = c.tokens.len() / DIM;
    let k = 1600; // > FLAT_MAX: 40 groups
    assert!(k > cx::FLAT_MAX);
    let t = cx::train(&c.tokens, DIM, k, 4, 5);
    assert_eq!(t.centroids.len(), k * DIM);
    let g = t.groups.len() / DIM;
    assert_eq!(g, 40);
    assert_eq!((t.group_offsets[0], t.group_offsets[g]), (0, k as u32));
    assert!(t.group_offsets.windows(2).all(|w| w[0] < w[1]), "every group non-empty");
    // Routed coding against brute force over every centroid.
    let q = cx::Quantizer::new(&t.centroids, &t.groups, &t.group_offsets, DIM);
    let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
    q.nearest(&c.tokens, &mut codes, &mut sims);
    let (mut best, mut bsims) = (vec![0u32; n], vec![0f32; n]);
    CentroidPanels::new(&t.centroids, DIM).nearest(&c.tokens, &mut best, &mut bsims);
    let same = codes.iter().zip(&best).filter(|(a, b)| a == b).count() as f64 / n as f64;
    let loss: f64 = sims.iter().zip(&bsims).map(|(a, b)| (b - a) as f64).sum::<f64>() / n as f64;
    println!("routed coding: {same:.3} of tokens get the nearest centroid; mean similarity lost {loss:.5}");
    assert!(same >= 0.9, "routed coding found the nearest centroid for {same:.3} of tokens");
    assert!(loss < 0.01, "mean similarity lost to routing: {loss}");
    for (i, (&code, &s)) in codes.iter().zip(&sims).enumerate() {
        assert!(s <= bsims[i] + 1e-6 && (code as usize) < k, "token {i}: routed code better than brute force?");
    }
}
