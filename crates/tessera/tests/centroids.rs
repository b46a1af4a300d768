//! The token-centroid index in the engine: its codebook lifecycle (trained
//! once from a large enough segment, reused after a restart and by later
//! segments, codes copied by merges, retrained when tokens drift), results
//! against exact search, refusals, and damaged files.

use std::path::{Path, PathBuf};
use tessera::{CentroidParams, CollectionConfig, Database, Document, Error, IndexConfig, SearchParams};

mod common;
use common::{Rng, files_named};

const DIM: usize = 16;

fn params(k: u32) -> CentroidParams {
    CentroidParams { k, min_train_tokens: 256, ..Default::default() }
}

fn config(p: CentroidParams) -> CollectionConfig {
    CollectionConfig { index: Some(IndexConfig::Centroids { centroids: p }), ..CollectionConfig::new(DIM) }
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    files_named(&dir.join("collections/c"), prefix)
}

fn docs(rng: &mut Rng, batch: &str, n: usize, centres: &[Vec<f32>]) -> Vec<Document> {
    (0..n).map(|i| Document::new(format!("{batch}-{i}"), rng.tokens_near(2 + i % 11, DIM, centres))).collect()
}

fn centres(rng: &mut Rng, n: usize, offset: f32) -> Vec<Vec<f32>> {
    (0..n).map(|_| (0..DIM).map(|d| rng.f() + if d == 0 { offset } else { 0.0 }).collect()).collect()
}

fn assert_all_candidates_equal_exact(c: &tessera::Collection, rng: &mut Rng, what: &str) {
    for _ in 0..5 {
        let q = rng.tokens(4, DIM);
        let exact = c.search_with(&q, &SearchParams::exact(10)).unwrap();
        let all = c.search_with(&q, &SearchParams::new(10).with_candidates(100_000)).unwrap();
        assert_eq!(all, exact, "{what}: every document a candidate must give the exact result");
    }
}

#[test]
fn small_segments_are_exact_until_a_large_one_trains_the_codebook() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config(params(16))).unwrap();
    let mut rng = Rng(1);
    // 10 documents (~65 tokens): below min_train_tokens, no codebook, no index.
    c.upsert(&docs(&mut rng, "a", 10, &[])).unwrap();
    c.flush().unwrap();
    assert!(files(dir.path(), "cbk-").is_empty() && files(dir.path(), "ivf-").is_empty());
    assert_eq!(c.stats().centroids, None);
    assert_all_candidates_equal_exact(&c, &mut rng, "no codebook yet");
    // A larger segment trains one; it gets an index, the small one still has none.
    c.upsert(&docs(&mut rng, "b", 80, &[])).unwrap();
    c.flush().unwrap();
    assert_eq!(files(dir.path(), "cbk-").len(), 1);
    assert_eq!(files(dir.path(), "ivf-").len(), 1);
    assert_eq!(c.stats().centroids, Some(16));
    assert!(c.stats().index_bytes_per_token > 0.0);
    assert_all_candidates_equal_exact(&c, &mut rng, "one indexed, one exact segment");
    // A few candidates: only live documents, scored exactly, ranked.
    let q = rng.tokens(3, DIM);
    let few = c.search_with(&q, &SearchParams::new(5).with_candidates(8).with_nprobe(2)).unwrap();
    assert_eq!(few.len(), 5);
    assert!(few.windows(2).all(|w| w[0].score >= w[1].score));
    // Compaction codes the merged rows with the same codebook.
    c.compact().unwrap();
    assert_eq!(files(dir.path(), "cbk-").len(), 1);
    assert_eq!(files(dir.path(), "ivf-").len(), 1);
    assert_all_candidates_equal_exact(&c, &mut rng, "after compaction");
}

#[test]
fn a_restart_reuses_the_codebook_and_every_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(2);
    let q = rng.tokens(5, DIM);
    let p = SearchParams::new(10).with_candidates(30);
    let (before, cbk, ivf) = {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", config(params(16))).unwrap();
        for b in ["a", "b"] {
            c.upsert(&docs(&mut rng, b, 60, &[])).unwrap();
            c.flush().unwrap();
        }
        c.upsert(&docs(&mut rng, "m", 5, &[])).unwrap(); // in the WAL only
        (c.search_with(&q, &p).unwrap(), files(dir.path(), "cbk-"), files(dir.path(), "ivf-"))
    };
    assert_eq!((cbk.len(), ivf.len()), (1, 2));
    let modified =
        |v: &[PathBuf]| v.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect::<Vec<_>>();
    let stamps = (modified(&cbk), modified(&ivf));
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.search_with(&q, &p).unwrap(), before, "the same results after a restart");
    assert_eq!((files(dir.path(), "cbk-"), files(dir.path(), "ivf-")), (cbk.clone(), ivf.clone()));
    assert_eq!((modified(&cbk), modified(&ivf)), stamps, "nothing retrained or rebuilt on open");
    // The build times are the collection's since it was created.
    let trained = c.stats().build;
    assert!(trained.codebook_s > 0.0 && trained.flushes == 2, "{trained:?}");
    // A segment sealed after the restart is coded with the same codebook.
    c.upsert(&docs(&mut rng, "c", 60, &[])).unwrap();
    c.flush().unwrap();
    assert_eq!(files(dir.path(), "cbk-"), cbk);
    assert_eq!(files(dir.path(), "ivf-").len(), 3);
    let build = c.stats().build;
    assert_eq!((build.codebook_s, build.flushes), (trained.codebook_s, 3), "no training since the restart");
    assert_all_candidates_equal_exact(&c, &mut rng, "after a restart");
}

#[test]
fn merges_copy_codes_and_retrain_when_the_tokens_drift() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config(params(16))).unwrap();
    let mut rng = Rng(3);
    // The codebook is trained on tokens near one set of centres...
    let first = centres(&mut rng, 8, 0.0);
    c.upsert(&docs(&mut rng, "a", 60, &first)).unwrap();
    c.flush().unwrap();
    let original = files(dir.path(), "cbk-");
    // ...a merge of segments from the same distribution keeps it (codes are copied)...
    c.upsert(&docs(&mut rng, "b", 60, &first)).unwrap();
    c.flush().unwrap();
    c.compact().unwrap();
    assert_eq!(files(dir.path(), "cbk-"), original, "no drift, no new codebook");
    assert!(c.stats().build.codebook_s > 0.0, "the first codebook was trained in this process");
    // ...and tokens from elsewhere, merged in, make the codebook serve them
    // worse than its sample by more than `drift`: the merge retrains.
    let far = centres(&mut rng, 8, 6.0);
    for b in ["c", "d", "e"] {
        c.upsert(&docs(&mut rng, b, 80, &far)).unwrap();
        c.flush().unwrap();
    }
    c.compact().unwrap();
    let now = files(dir.path(), "cbk-");
    assert_eq!(now.len(), 1, "only the codebook in use is kept");
    assert_ne!(now, original, "the drifted merge trained a new codebook");
    assert_all_candidates_equal_exact(&c, &mut rng, "after retraining");
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_all_candidates_equal_exact(&db.collection("c").unwrap(), &mut rng, "reopened after retraining");
}

#[test]
fn search_options_that_do_not_apply_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let cen = db.create_collection("c", config(params(16))).unwrap();
    let pooled = db.create_collection("p", CollectionConfig::new(DIM)).unwrap();
    let mut rng = Rng(4);
    cen.upsert(&docs(&mut rng, "a", 60, &[])).unwrap();
    pooled.upsert(&docs(&mut rng, "a", 10, &[])).unwrap();
    let q = rng.tokens(2, DIM);
    let refused = |c: &tessera::Collection, p: SearchParams, what: &str| {
        let e = c.search_with(&q, &p).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(what)), "{what}: {e}");
    };
    refused(&pooled, SearchParams::new(5).with_nprobe(4), "nprobe");
    refused(&cen, SearchParams::new(5).with_ef(40), "ef");
    refused(&cen, SearchParams::exact(5).with_nprobe(4), "nprobe");
    refused(&cen, SearchParams::new(5).with_nprobe(0), "nprobe");
    refused(&cen, SearchParams::new(5).with_nprobe(tessera::MAX_NPROBE + 1), "nprobe");
    assert_eq!(cen.search_with(&q, &SearchParams::new(5).with_nprobe(4)).unwrap().len(), 5);
    // Bad settings at creation.
    for (p, what) in [
        (CentroidParams { k: 8, ..params(0) }, "centroids.k"),
        (CentroidParams { nprobe: 5000, ..params(0) }, "centroids.nprobe"),
        (CentroidParams { min_train_tokens: 10, ..params(0) }, "centroids.min_train_tokens"),
        (CentroidParams { drift: f32::NAN, ..params(0) }, "centroids.drift"),
    ] {
        let e = db.create_collection("bad", config(p)).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(what)), "{what}: {e}");
    }
}

#[test]
fn default_candidates_scale_with_k_and_the_collection() {
    use tessera::IndexKind::{Centroids, Pooled};
    assert_eq!(SearchParams::new(10).effective_candidates(Pooled, 2600), tessera::DEFAULT_CANDIDATES);
    assert_eq!(SearchParams::new(100).effective_candidates(Pooled, 2600), 100 * tessera::CANDIDATES_PER_K);
    assert_eq!(SearchParams::new(100).effective_candidates(Centroids, 2600), 100 * tessera::CENTROID_CANDIDATES_PER_K);
    assert_eq!(SearchParams::new(10).effective_candidates(Centroids, 52_000), 571, "2.5·√documents");
    assert_eq!(SearchParams::new(100).with_candidates(50).effective_candidates(Pooled, 9), 100, "never fewer than k");
    assert_eq!(tessera::default_candidates(Centroids, tessera::MAX_K, 0), tessera::MAX_K);
    assert_eq!(tessera::default_candidates(Pooled, 10, usize::MAX), tessera::MAX_K);
    // Screened collections: the exact stage's rows scale with k too.
    assert_eq!((tessera::default_rerank(10), tessera::default_rerank(100)), (64, 400));
}

#[test]
fn damaged_centroid_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", config(params(16))).unwrap();
        c.upsert(&docs(&mut Rng(5), "a", 60, &[])).unwrap();
        c.flush().unwrap();
    }
    for prefix in ["cbk-", "ivf-"] {
        let f = files(dir.path(), prefix).pop().unwrap();
        let good = std::fs::read(&f).unwrap();
        let mut bad = good.clone();
        let at = bad.len() - 3;
        bad[at] ^= 0x40;
        std::fs::write(&f, &bad).unwrap();
        match Database::open(dir.path()).and_then(|db| db.collection("c")) {
            Err(Error::Corrupted { file, .. }) => assert_eq!(file, f, "{prefix}"),
            other => panic!("{prefix}: expected corruption, got {other:?}"),
        }
        std::fs::write(&f, &good).unwrap();
    }
    // A codebook swapped for another one: the segment's index names the one it was coded with.
    let other = tempfile::tempdir().unwrap();
    {
        let db = Database::open(other.path()).unwrap();
        let c = db.create_collection("c", config(CentroidParams { seed: 9, ..params(16) })).unwrap();
        c.upsert(&docs(&mut Rng(6), "a", 60, &[])).unwrap();
        c.flush().unwrap();
    }
    let ours = files(dir.path(), "cbk-").pop().unwrap();
    std::fs::copy(files(other.path(), "cbk-").pop().unwrap(), &ours).unwrap();
    match Database::open(dir.path()).and_then(|db| db.collection("c")) {
        Err(Error::Corrupted { file, reason, .. }) => {
            assert!(file.to_string_lossy().contains("ivf-") && reason.contains("codebook"), "{file:?}: {reason}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn segments_left_on_an_outgrown_codebook_are_coded_again_with_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    // Automatic k: 256 centroids for the first segment (≥ 4,096 tokens), 512
    // once the collection has grown past 8,192 tokens and a merge outputs as many.
    let c = db.create_collection("c", CollectionConfig { max_segments: 2, ..config(params(0)) }).unwrap();
    let mut rng = Rng(4);
    let spots = centres(&mut rng, 64, 0.0);
    let batch = |rng: &mut Rng, b: &str| docs(rng, b, 640, &spots); // ≈ 4,400 tokens
    c.upsert(&batch(&mut rng, "a")).unwrap();
    c.flush().unwrap();
    let first = files(dir.path(), "cbk-");
    assert_eq!(c.stats().centroids, Some(256));
    // The third segment makes a merge of the two smallest; its output, in a
    // collection grown past 8,192 tokens, trains 512 centroids. The first
    // segment is not merged: it is coded again with them.
    for b in ["b", "c"] {
        c.upsert(&batch(&mut rng, b)).unwrap();
        c.flush().unwrap();
    }
    let now = files(dir.path(), "cbk-");
    assert_eq!(c.stats().centroids, Some(512));
    assert_eq!(now.len(), 1, "only the new codebook is in use: every segment is coded with it");
    assert_ne!(now, first);
    assert_eq!(files(dir.path(), "ivf-").len(), 2, "one index per segment");
    assert_eq!(c.stats().segments, 2);
    assert_all_candidates_equal_exact(&c, &mut rng, "after coding again");
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(files(dir.path(), "cbk-"), now, "nothing coded again on open");
    assert_all_candidates_equal_exact(&db.collection("c").unwrap(), &mut rng, "reopened");
}

#[test]
fn a_segment_keeps_its_codebook_when_a_drifted_one_would_serve_it_worse() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig { max_segments: 2, ..config(params(16)) }).unwrap();
    let mut rng = Rng(5);
    let first = centres(&mut rng, 8, 0.0);
    c.upsert(&docs(&mut rng, "a", 120, &first)).unwrap();
    c.flush().unwrap();
    let original = files(dir.path(), "cbk-");
    // The two small segments from elsewhere are merged and retrain the
    // codebook on their drifted tokens, which serves the first segment's
    // tokens worse than its own: it keeps its own.
    let far = centres(&mut rng, 8, 6.0);
    for b in ["b", "c"] {
        c.upsert(&docs(&mut rng, b, 40, &far)).unwrap();
        c.flush().unwrap();
    }
    let now = files(dir.path(), "cbk-");
    assert_eq!(now.len(), 2, "two codebooks in use");
    assert!(now.contains(&original[0]), "the first segment's codebook is kept");
    assert_eq!(files(dir.path(), "ivf-").len(), 2);
    assert_all_candidates_equal_exact(&c, &mut rng, "two codebooks");
    // Not tried again on the next round of maintenance, nor after a restart
    // beyond one try (the pair is remembered per process).
    c.flush().unwrap();
    assert_eq!(files(dir.path(), "cbk-"), now);
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    db.collection("c").unwrap().flush().unwrap();
    assert_eq!(files(dir.path(), "cbk-"), now);
}

#[test]
fn a_codebook_retrained_at_a_merge_learns_from_the_whole_collection() {
    use tessera_index::centroids::CodebookLayout;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig { max_segments: 2, ..config(params(0)) }).unwrap();
    let mut rng = Rng(6);
    let spots = centres(&mut rng, 64, 0.0);
    for b in ["a", "b", "c"] {
        c.upsert(&docs(&mut rng, b, 640, &spots)).unwrap();
        c.flush().unwrap();
    }
    // The merge of "b" and "c" outgrew the first codebook: the new one
    // (512 centroids, up to 64 sample tokens each) sampled every token of
    // the collection, "a"'s too — not the merge's output alone.
    let cbk = files(dir.path(), "cbk-");
    assert_eq!(cbk.len(), 1);
    let info = CodebookLayout::parse(&std::fs::read(&cbk[0]).unwrap()).unwrap().info;
    let tokens = c.stats().tokens as u64;
    assert_eq!(info.k, 512);
    assert_eq!(info.sample_tokens, tokens.min(512 * 64), "sampled from all {tokens} tokens");
    assert_all_candidates_equal_exact(&c, &mut rng, "after retraining on the whole collection");
}
