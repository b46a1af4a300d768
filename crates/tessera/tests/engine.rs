//! Engine behaviour through the public API: round trips, replacement,
//! deletion across flush/compaction/reopen, bad input, corruption reports,
//! and exact search against a naive f64 MaxSim.

use tessera::{CollectionConfig, Database, Document, Error, Tokens, f16};
use tessera_kernels::reference::maxsim_f64;

mod common;
use common::{Rng, files_named};

/// A centroids index small enough for test collections: 16 centroids,
/// trained from the first segment of at least 256 tokens.
fn centroids_small() -> tessera::IndexConfig {
    let centroids = tessera::CentroidParams { k: 16, min_train_tokens: 256, ..Default::default() };
    tessera::IndexConfig::Centroids { centroids }
}

fn f16_to_f32(t: &[f16]) -> Vec<f32> {
    t.iter().map(|x| x.to_f32()).collect()
}

#[test]
fn upsert_get_replace_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(1);
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", CollectionConfig::new(8)).unwrap();
        let docs: Vec<Document> = (0..20)
            .map(|i| {
                Document::new(format!("d{i}"), rng.tokens(1 + i % 5, 8))
                    .with_text(format!("text {i}"))
                    .with_payload(serde_json::json!({ "i": i }))
            })
            .collect();
        c.upsert(&docs).unwrap();
        assert_eq!(c.len(), 20);
        c.flush().unwrap();
        // Replace one flushed, delete two (one flushed, one in memtable).
        c.upsert(&[Document::new("d3", rng.tokens(2, 8))]).unwrap();
        c.upsert(&[Document::new("new", rng.tokens(3, 8))]).unwrap();
        assert_eq!(c.delete(&["d4", "new", "missing"]).unwrap(), 2);
        assert_eq!(c.len(), 19);
        let d3 = c.get("d3").unwrap().unwrap();
        assert_eq!((d3.tokens.len(), d3.text.clone()), (16, None));
        assert_eq!(c.get("d5").unwrap().unwrap().payload, Some(serde_json::json!({"i": 5})));
        assert!(c.get("d4").unwrap().is_none());
    }
    // Reopen: WAL replay restores the unflushed changes.
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), 19);
    assert!(c.get("d4").unwrap().is_none() && c.get("new").unwrap().is_none());
    assert_eq!(c.get("d3").unwrap().unwrap().tokens.len(), 16);
    c.compact().unwrap();
    let s = c.stats();
    assert_eq!((s.documents, s.segments, s.deleted_in_segments), (19, 1, 0));
    drop((c, db));
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.collection("c").unwrap().len(), 19);
}

#[test]
fn search_is_exact_against_naive_reference() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let dim = 16;
    let c = db.create_collection("c", CollectionConfig::new(dim)).unwrap();
    let mut rng = Rng(7);
    let mut stored = Vec::new();
    for batch in 0..4 {
        let docs: Vec<Document> =
            (0..50).map(|i| Document::new(format!("b{batch}-{i}"), rng.tokens(1 + (i * 7) % 30, dim))).collect();
        c.upsert(&docs).unwrap();
        if batch < 3 {
            c.flush().unwrap();
        }
    }
    c.delete(&["b0-1", "b3-2"]).unwrap();
    for i in 0..200 {
        let id = format!("b{}-{}", i / 50, i % 50);
        if let Some(d) = c.get(&id).unwrap() {
            stored.push((id, f16_to_f32(&d.tokens)));
        }
    }
    assert_eq!(stored.len(), 198);
    for qi in 0..5 {
        let q = rng.tokens(1 + qi * 3, dim);
        let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
        let mut want: Vec<(f64, &str)> = stored.iter().map(|(id, t)| (maxsim_f64(qv, t, dim), id.as_str())).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = c.search(&q, 10).unwrap();
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.id, w.1);
            assert!((g.score as f64 - w.0).abs() < 1e-3, "{} vs {}", g.score, w.0);
        }
    }
}

#[test]
fn bad_input_is_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(4)).unwrap();
    let ok = || Document::new("ok", Tokens::F32 { data: vec![0.5; 4], dim: 4 });
    type Case = (Document, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (Document::new("x", Tokens::F32 { data: vec![1.0; 6], dim: 3 }), |e| {
            matches!(e, Error::DimensionMismatch { got: 3, .. })
        }),
        (Document::new("x", Tokens::F32 { data: vec![], dim: 4 }), |e| matches!(e, Error::EmptyTensor { .. })),
        (Document::new("x", Tokens::F32 { data: vec![1.0; 6], dim: 4 }), |e| matches!(e, Error::RaggedTensor { .. })),
        (Document::new("x", Tokens::F32 { data: vec![1.0, f32::NAN, 0.0, 0.0], dim: 4 }), |e| {
            matches!(e, Error::InvalidValue { col: 1, .. })
        }),
        (Document::new("x", Tokens::F32 { data: vec![1e6, 0.0, 0.0, 0.0], dim: 4 }), |e| {
            matches!(e, Error::InvalidValue { .. })
        }),
        (Document::new("", Tokens::F32 { data: vec![1.0; 4], dim: 4 }), |e| matches!(e, Error::EmptyId)),
        (Document::new("x".repeat(513), Tokens::F32 { data: vec![1.0; 4], dim: 4 }), |e| {
            matches!(e, Error::IdTooLong { .. })
        }),
        (ok(), |e| matches!(e, Error::DuplicateId(_))),
    ];
    for (bad, is_expected) in cases {
        let err = c.upsert(&[ok(), bad]).unwrap_err();
        assert!(is_expected(&err), "unexpected error: {err}");
        assert_eq!(c.len(), 0, "nothing of a rejected batch may be applied");
    }
    assert!(matches!(db.collection("nope"), Err(Error::UnknownCollection(_))));
    assert!(matches!(db.create_collection("c", CollectionConfig::new(4)), Err(Error::CollectionExists(_))));
    assert!(matches!(db.create_collection("bad/name", CollectionConfig::new(4)), Err(Error::InvalidCollectionName(_))));
    assert!(matches!(db.create_collection("z", CollectionConfig::new(0)), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.create_collection("z", CollectionConfig::new(4097)), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.open_or_create_collection("c", CollectionConfig::new(8)), Err(Error::ConfigMismatch { .. })));
    let q = Tokens::F32 { data: vec![1.0; 8], dim: 8 };
    assert!(matches!(c.search(&q, 10), Err(Error::DimensionMismatch { .. })));
    assert!(matches!(c.search(&Tokens::F32 { data: vec![1.0; 4], dim: 4 }, 0), Err(Error::InvalidArgument(_))));
    // A second writer in this process is told so, not blamed on another process.
    let second = Database::open(dir.path()).unwrap_err();
    assert!(matches!(second, Error::Locked(..)), "{second}");
    assert!(second.to_string().contains("already open in this process"), "{second}");
    drop((c, db));
    Database::open(dir.path()).expect("open again once the first is dropped");
}

#[test]
fn collections_list_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let a = db.create_collection("a", CollectionConfig::new(2)).unwrap();
    db.create_collection("b", CollectionConfig::new(3)).unwrap();
    assert_eq!(db.list_collections(), vec!["a", "b"]);
    db.drop_collection("a").unwrap();
    // A handle held across the drop refuses writes instead of acknowledging lost ones.
    let doc = Document::new("x", Tokens::F32 { data: vec![1.0, 0.0], dim: 2 });
    assert!(matches!(a.upsert(&[doc]), Err(Error::Poisoned(_))));
    assert_eq!(db.list_collections(), vec!["b"]);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.list_collections(), vec!["b"]);
    assert_eq!(db.collection("b").unwrap().dim(), 3);
}

#[test]
fn corruption_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", CollectionConfig::new(4)).unwrap();
        c.upsert(&[Document::new("a", Tokens::F32 { data: vec![0.25; 8], dim: 4 })]).unwrap();
        c.flush().unwrap();
    }
    let cdir = dir.path().join("collections/c");
    let seg = std::fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tseg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[520] ^= 0xff; // inside the token matrix
    std::fs::write(&seg, &bytes).unwrap();
    match Database::open(dir.path()) {
        Err(Error::Corrupted { file, offset, reason }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, 512);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn readers_run_concurrently_with_writes_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let dim = 8;
    let mut config = CollectionConfig::new(dim);
    config.memtable_bytes = 16 << 10;
    config.max_segments = 3;
    let c = db.create_collection("c", config).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|t| {
                let (c, stop) = (&c, &stop);
                s.spawn(move || {
                    let mut rng = Rng(100 + t);
                    let mut searches = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let hits = c.search(&rng.tokens(3, dim), 20).unwrap();
                        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "ranked");
                        let ids: std::collections::HashSet<_> = hits.iter().map(|h| &h.id).collect();
                        assert_eq!(ids.len(), hits.len(), "no id twice in one result");
                        searches += 1;
                    }
                    searches
                })
            })
            .collect();
        let mut rng = Rng(5);
        for b in 0..60 {
            let docs: Vec<Document> = (0..20)
                .map(|i| Document::new(format!("d{}", (b * 20 + i) % 700), rng.tokens(1 + i % 9, dim)))
                .collect();
            c.upsert(&docs).unwrap();
            if b % 7 == 0 {
                c.delete(&[format!("d{}", b * 3)]).unwrap();
            }
            if b % 20 == 19 {
                c.compact().unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    let n = c.len();
    drop((c, db));
    assert_eq!(Database::open(dir.path()).unwrap().collection("c").unwrap().len(), n);
}

fn two_stage_collection(dir: &std::path::Path, index: tessera::IndexConfig) -> std::sync::Arc<tessera::Collection> {
    let db = Database::open(dir).unwrap();
    let mut config = CollectionConfig::new(16);
    config.index = Some(index);
    let c = db.create_collection("c", config).unwrap();
    let mut rng = Rng(11);
    for b in 0..3 {
        let docs: Vec<Document> =
            (0..100).map(|i| Document::new(format!("d{b}-{i}"), rng.tokens(1 + (i * 5) % 17, 16))).collect();
        c.upsert(&docs).unwrap();
        if b < 2 {
            c.flush().unwrap(); // two indexed segments, one memtable
        }
    }
    c.delete(&["d0-3", "d1-4", "d2-5"]).unwrap();
    // The database handle may go: the collection keeps its files.
    c
}

#[test]
fn two_stage_equals_exact_when_candidates_cover_the_collection() {
    for index in [tessera::IndexConfig::pooled(), tessera::IndexConfig::muvera(), centroids_small()] {
        let dir = tempfile::tempdir().unwrap();
        let c = two_stage_collection(dir.path(), index.clone());
        let mut rng = Rng(3);
        for _ in 0..10 {
            let q = rng.tokens(5, 16);
            let exact = c.search_with(&q, &tessera::SearchParams::exact(10)).unwrap();
            let two = c.search_with(&q, &tessera::SearchParams::new(10).with_candidates(300)).unwrap();
            assert_eq!(exact, two, "{index:?}");
            // With few candidates results are still true MaxSim scores of live documents, ranked.
            let few = c.search_with(&q, &tessera::SearchParams::new(10).with_candidates(20)).unwrap();
            assert_eq!(few.len(), 10);
            assert!(few.windows(2).all(|w| w[0].score >= w[1].score));
            for h in &few {
                assert!(!["d0-3", "d1-4", "d2-5"].contains(&h.id.as_str()), "deleted document returned");
                let d = f16_to_f32(&c.get(&h.id).unwrap().unwrap().tokens);
                let Tokens::F32 { data, .. } = &q else { unreachable!() };
                assert!((h.score as f64 - maxsim_f64(data, &d, 16)).abs() < 1e-3);
            }
        }
    }
}

#[test]
fn restart_keeps_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let index_files = |d: &std::path::Path| -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(d.join("collections/c"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tidx"))
            .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().modified().unwrap()))
            .collect();
        v.sort();
        v
    };
    let q = Rng(9).tokens(4, 16);
    let params = tessera::SearchParams::new(10).with_candidates(40);
    let (before, files) = {
        let c = two_stage_collection(dir.path(), tessera::IndexConfig::muvera());
        c.flush().unwrap();
        (c.search_with(&q, &params).unwrap(), index_files(dir.path()))
    };
    assert_eq!(files.len(), 3, "one index per segment");
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(index_files(dir.path()), files, "reopening must not rebuild the index");
    assert_eq!(c.search_with(&q, &params).unwrap(), before);
    // Compaction builds one index for the merged segment and removes the old ones.
    c.compact().unwrap();
    assert_eq!(index_files(dir.path()).len(), 1);
    let after = c.search_with(&q, &tessera::SearchParams::new(10).with_candidates(1000)).unwrap();
    assert_eq!(after, c.search_with(&q, &tessera::SearchParams::exact(10)).unwrap());
}

/// A live document as the tests know it: id, tokens (f16 values as f32), payload.
type Known = (String, Vec<f32>, serde_json::Value);

/// 300 documents over two flushed segments and the memtable, with payloads
/// to filter on; returns the collection and every live document's (id, tokens, payload).
fn filtered_collection(
    dir: &std::path::Path,
    index: tessera::IndexConfig,
) -> (std::sync::Arc<tessera::Collection>, Vec<Known>) {
    let db = Database::open(dir).unwrap();
    let c = db.create_collection("c", CollectionConfig { index: Some(index), ..CollectionConfig::new(16) }).unwrap();
    let mut rng = Rng(21);
    let mut all = Vec::new();
    for b in 0..3 {
        let docs: Vec<Document> = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                let lang = ["en", "de", "fr"][n % 3];
                let mut p = serde_json::json!({ "i": n, "lang": lang, "meta": { "year": 2000 + n % 25 } });
                if n % 7 == 0 {
                    p["author"] = "x".into();
                }
                let text = words(&mut rng, 1 + n % 9);
                Document::new(format!("d{n}"), rng.tokens(1 + n % 13, 16)).with_payload(p).with_text(text)
            })
            .collect();
        for d in &docs {
            let Tokens::F32 { data, .. } = &d.tokens else { unreachable!() };
            let t: Vec<f32> = data.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            all.push((d.id.clone(), t, d.payload.clone().unwrap()));
        }
        c.upsert(&docs).unwrap();
        if b < 2 {
            c.flush().unwrap();
        }
    }
    c.delete(&["d5", "d150", "d250"]).unwrap();
    all.retain(|(id, _, _)| !["d5", "d150", "d250"].contains(&id.as_str()));
    (c, all)
}

#[test]
fn every_filter_operator_in_every_stage() {
    every_filter_operator_with(tessera::IndexConfig::pooled());
}

#[test]
fn every_filter_operator_in_every_stage_of_a_centroids_index() {
    every_filter_operator_with(centroids_small());
}

fn every_filter_operator_with(index: tessera::IndexConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (c, all) = filtered_collection(dir.path(), index);
    let filters = [
        r#"{"field": "lang", "eq": "de"}"#,
        r#"{"field": "lang", "in": ["fr", "xx"]}"#,
        r#"{"field": "meta.year", "range": {"gte": 2010, "lt": 2013}}"#,
        r#"{"field": "author", "exists": true}"#,
        r#"{"field": "author", "exists": false}"#,
        r#"{"and": [{"field": "lang", "eq": "en"}, {"field": "meta.year", "range": {"gt": 2020}}]}"#,
        r#"{"or": [{"field": "i", "eq": 3}, {"field": "i", "eq": 299}, {"field": "i", "eq": 5}]}"#,
        r#"{"not": {"field": "lang", "in": ["en", "de"]}}"#,
    ];
    let mut rng = Rng(77);
    for text in filters {
        let f = tessera::Filter::parse(text).unwrap();
        let q = rng.tokens(4, 16);
        let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
        let mut want: Vec<(f64, &str)> = all
            .iter()
            .filter(|(_, _, p)| f.matches(Some(p)))
            .map(|(id, t, _)| (maxsim_f64(qv, t, 16), id.as_str()))
            .collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        want.truncate(10);
        // Exact stage, two-stage covering everything, and two-stage with few candidates
        // (the filter then acts inside the graph traversal).
        for params in [
            tessera::SearchParams::exact(10),
            tessera::SearchParams::new(10).with_candidates(400),
            tessera::SearchParams::new(10).with_candidates(10),
        ] {
            let got = c.search_with(&q, &params.clone().with_filter(f.clone())).unwrap();
            assert_eq!(got.len(), want.len(), "{text}: k results whenever k documents match ({params:?})");
            for h in &got {
                assert!(f.matches(h.payload.as_ref()), "{text}: {} does not match", h.id);
            }
            if params.exact
                || params.effective_candidates(tessera::IndexKind::of(c.config().index.as_ref()), c.len()) >= 300
            {
                let ids: Vec<&str> = got.iter().map(|h| h.id.as_str()).collect();
                assert_eq!(ids, want.iter().map(|w| w.1).collect::<Vec<_>>(), "{text} {params:?}");
            }
        }
        // BM25 stage: every hit matches, and all matching documents that contain a
        // query term are found when fewer than n exist.
        let hits = c.search_text("copy network", 200, Some(&f)).unwrap();
        let texts: std::collections::HashMap<String, String> =
            all.iter().map(|(id, _, _)| (id.clone(), c.get(id).unwrap().unwrap().text.unwrap())).collect();
        let expected = all
            .iter()
            .filter(|(id, _, p)| f.matches(Some(p)) && texts[id].split(' ').any(|w| w == "copy" || w == "network"))
            .count();
        assert_eq!(hits.len(), expected.min(200), "{text}: BM25 under the filter");
        assert!(hits.iter().all(|h| f.matches(h.payload.as_ref())), "{text}: BM25 hit outside the filter");
    }
    // A filter that matches only memtable documents, and one that matches nothing.
    let f = tessera::Filter::parse(r#"{"field": "i", "range": {"gte": 290}}"#).unwrap();
    let got = c.search_with(&rng.tokens(2, 16), &tessera::SearchParams::new(20).with_filter(f)).unwrap();
    assert_eq!(got.len(), 10);
    let none = tessera::Filter::parse(r#"{"field": "lang", "eq": "zz"}"#).unwrap();
    assert!(c.search_with(&rng.tokens(2, 16), &tessera::SearchParams::new(5).with_filter(none)).unwrap().is_empty());
}

#[test]
fn rerank_scores_given_ids_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (c, all) = filtered_collection(dir.path(), tessera::IndexConfig::pooled());
    let q = Rng(8).tokens(6, 16);
    let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
    // Segment and memtable documents, a deleted one, an unknown one, a duplicate.
    let ids = ["d1", "d150", "d120", "nope", "d280", "d1", "d5", "d42"];
    let r = c.rerank(&q, &ids).unwrap();
    assert_eq!(r.missing, vec!["d150", "nope", "d5"]);
    let mut want: Vec<(f64, &str)> = ["d1", "d120", "d280", "d42"]
        .iter()
        .map(|id| (maxsim_f64(qv, &all.iter().find(|d| d.0 == *id).unwrap().1, 16), *id))
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    assert_eq!(r.hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), want.iter().map(|w| w.1).collect::<Vec<_>>());
    for (h, w) in r.hits.iter().zip(&want) {
        assert!((h.score as f64 - w.0).abs() < 1e-3);
    }
    assert!(c.rerank(&q, &["nope"]).unwrap().hits.is_empty());
    assert!(matches!(c.rerank(&q, &[""]), Err(Error::EmptyId)));
}

#[test]
fn fusion_arithmetic_matches_a_hand_checked_example() {
    use tessera::{Fusion, Source, fuse};
    let l = |v: &[(&str, f32)]| v.iter().map(|(i, s)| (i.to_string(), *s)).collect::<Vec<_>>();
    let lists =
        vec![(Source::Tensor, l(&[("a", 3.0), ("b", 2.0), ("c", 1.0)])), (Source::Ids, l(&[("c", 10.0), ("a", 0.0)]))];
    // RRF, k0 = 60: a = 1/61 + 1/62, c = 1/63 + 1/61, b = 1/62.
    let r = fuse(&lists, &Fusion::Rrf { k0: 60.0 }, &Default::default());
    let got: Vec<(&str, f64)> = r.iter().map(|x| (x.0.as_str(), x.1)).collect();
    let want = [("a", 1.0 / 61.0 + 1.0 / 62.0), ("c", 1.0 / 63.0 + 1.0 / 61.0), ("b", 1.0 / 62.0)];
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!((g.1 - w.1).abs() < 1e-12);
    }
    assert_eq!(r[0].2.iter().map(|s| (s.source, s.rank)).collect::<Vec<_>>(), [(Source::Tensor, 1), (Source::Ids, 2)]);
    // Weighted, tensor weight 2: min-max gives tensor a 1, b 0.5, c 0 and ids c 1, a 0:
    // a = 2, b = 1, c = 1 (tie broken by id).
    let w = [(Source::Tensor, 2.0)].into_iter().collect();
    let r = fuse(&lists, &Fusion::Weighted, &w);
    assert_eq!(r.iter().map(|x| (x.0.as_str(), x.1)).collect::<Vec<_>>(), [("a", 2.0), ("b", 1.0), ("c", 1.0)]);
}

#[test]
fn hybrid_queries_fuse_sources_and_rerank_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (c, all) = filtered_collection(dir.path(), tessera::IndexConfig::pooled());
    let q = Rng(31).tokens(5, 16);
    let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
    let exact = |id: &str| maxsim_f64(qv, &all.iter().find(|d| d.0 == id).unwrap().1, 16);
    // Tensor + vector + caller ids: every result is scored by exact MaxSim, and a
    // caller-supplied document enters the fused set even if the other sources miss it.
    let weak = all.iter().min_by(|a, b| exact(&a.0).total_cmp(&exact(&b.0))).unwrap().0.clone();
    let hq = tessera::HybridQuery::new(300)
        .with_tensor(q.clone())
        .with_ids(vec![weak.clone(), "nope".into()])
        .with_candidates(20);
    let hits = c.query(&hq).unwrap();
    assert!(hits.windows(2).all(|w| w[0].hit.score >= w[1].hit.score));
    for h in &hits {
        assert!((h.hit.score as f64 - exact(&h.hit.id)).abs() < 1e-3);
        assert!(!h.sources.is_empty());
    }
    let w = hits.iter().find(|h| h.hit.id == weak).expect("caller candidate present");
    assert!(w.sources.iter().any(|s| s.source == tessera::Source::Ids && s.rank == 1));
    assert!(hits.iter().all(|h| h.hit.id != "nope"));
    // Tensor alone with candidates covering the collection equals exact search.
    let hq = tessera::HybridQuery::new(10).with_tensor(q.clone()).with_candidates(400);
    let ids: Vec<String> = c.query(&hq).unwrap().into_iter().map(|h| h.hit.id).collect();
    let want: Vec<String> =
        c.search_with(&q, &tessera::SearchParams::exact(10)).unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(ids, want);
    // Ids alone: fused order is the given order, deleted and unknown ids dropped, filter applied.
    let ids = vec!["d9".to_string(), "d5".into(), "d3".into(), "zz".into(), "d4".into()];
    let got: Vec<String> =
        c.query(&tessera::HybridQuery::new(10).with_ids(ids.clone())).unwrap().into_iter().map(|h| h.hit.id).collect();
    assert_eq!(got, ["d9", "d3", "d4"]);
    let f = tessera::Filter::parse(r#"{"field": "lang", "eq": "en"}"#).unwrap(); // i % 3 == 0
    let got: Vec<String> = c
        .query(&tessera::HybridQuery::new(10).with_ids(ids).with_filter(f))
        .unwrap()
        .into_iter()
        .map(|h| h.hit.id)
        .collect();
    assert_eq!(got, ["d9", "d3"]);
    assert!(matches!(c.query(&tessera::HybridQuery::new(10)), Err(Error::InvalidArgument(_))));
}

fn words(rng: &mut Rng, n: usize) -> String {
    const VOCAB: [&str; 12] = [
        "copy",
        "files",
        "directories",
        "remove",
        "network",
        "socket",
        "print",
        "string",
        "perl",
        "python",
        "list",
        "sort",
    ];
    (0..n).map(|_| VOCAB[(rng.next() % 12) as usize]).collect::<Vec<_>>().join(" ")
}

#[test]
fn bm25_is_the_same_across_segments_and_memtable_and_respects_deletes_and_filters() {
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Database::open(da.path()).unwrap(), Database::open(db_.path()).unwrap());
    let (ca, cb) = (
        a.create_collection("c", CollectionConfig::new(4)).unwrap(),
        b.create_collection("c", CollectionConfig::new(4)).unwrap(),
    );
    let mut rng = Rng(99);
    let docs: Vec<Document> = (0..300)
        .map(|i| {
            let n = 1 + (rng.next() % 15) as usize;
            Document::new(format!("t{i}"), rng.tokens(1, 4))
                .with_text(words(&mut rng, n))
                .with_payload(serde_json::json!({ "odd": i % 2 == 1 }))
        })
        .collect();
    // A: two segments and a memtable. B: one compacted segment.
    for (i, chunk) in docs.chunks(100).enumerate() {
        ca.upsert(chunk).unwrap();
        if i < 2 {
            ca.flush().unwrap();
        }
    }
    cb.upsert(&docs).unwrap();
    cb.compact().unwrap();
    for q in ["copy files", "network socket perl", "sort list of strings", "python"] {
        let (ra, rb) = (ca.search_text(q, 20, None).unwrap(), cb.search_text(q, 20, None).unwrap());
        assert_eq!(ra.len(), 20, "{q}");
        for (x, y) in ra.iter().zip(&rb) {
            assert!((x.score - y.score).abs() < 1e-4, "{q}: {} {} vs {} {}", x.id, x.score, y.id, y.score);
        }
        let ids = |r: &[tessera::SearchHit]| {
            r.iter().map(|h| (h.id.clone(), (h.score * 1e3).round() as i64)).collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(ids(&ra), ids(&rb), "{q}: same documents with the same scores");
        for h in &ra {
            let text = h.text.as_deref().unwrap();
            assert!(q.split(' ').any(|w| text.contains(w.trim_end_matches('s'))), "{q}: {text}");
        }
    }
    // Deleted documents are never returned; a filter applies.
    let top = ca.search_text("copy", 5, None).unwrap();
    ca.delete(&[top[0].id.clone(), top[1].id.clone()]).unwrap();
    let after = ca.search_text("copy", 50, None).unwrap();
    assert!(after.iter().all(|h| h.id != top[0].id && h.id != top[1].id));
    let odd = tessera::Filter::parse(r#"{"field": "odd", "eq": true}"#).unwrap();
    let hits = ca.search_text("copy files", 30, Some(&odd)).unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h.payload.as_ref().unwrap()["odd"] == true));
    assert!(ca.search_text("zzzz", 5, None).unwrap().is_empty());
    // Hybrid: text + tensor sources, reranked by MaxSim.
    let q = tessera::HybridQuery::new(5).with_tensor(rng.tokens(2, 4)).with_text("network socket").with_candidates(50);
    let hits = ca.query(&q).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().any(|h| h.sources.iter().any(|s| s.source == tessera::Source::Text)));
}

#[test]
fn get_many_reads_one_snapshot_and_can_leave_tokens_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(9);
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(4)).unwrap();
    let docs: Vec<Document> = (0..6).map(|i| Document::new(format!("d{i}"), rng.tokens(1 + i, 4))).collect();
    c.upsert(&docs[..3]).unwrap();
    c.flush().unwrap();
    c.upsert(&docs[3..]).unwrap();
    let ids = ["d0", "nope", "d4", "d0"];
    let full = c.get_many(&ids, true).unwrap();
    let bare = c.get_many(&ids, false).unwrap();
    for ((id, f), b) in ids.iter().zip(&full).zip(&bare) {
        assert_eq!(f.as_ref(), c.get(id).unwrap().as_ref());
        match (f, b) {
            (Some(f), Some(b)) => {
                assert!(b.tokens.is_empty());
                assert_eq!((b.n_tokens, f.n_tokens), (f.tokens.len() / 4, f.tokens.len() / 4));
            }
            (None, None) => assert_eq!(*id, "nope"),
            _ => panic!("{id}: found with tokens but not without"),
        }
    }
    assert!(matches!(c.get_many(&[""], false), Err(Error::EmptyId)));
}

#[test]
fn query_values_beyond_f16_range_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(2)).unwrap();
    c.upsert(&[Document::new("a", Tokens::F32 { data: vec![1.0, 1.0], dim: 2 })]).unwrap();
    for bad in [3e38f32, 70000.0, f32::NAN, f32::INFINITY] {
        let q = Tokens::F32 { data: vec![bad, 0.0], dim: 2 };
        assert!(matches!(c.search(&q, 1), Err(Error::InvalidValue { .. })), "{bad}");
    }
    assert!(c.search(&Tokens::F32 { data: vec![65504.0, 0.0], dim: 2 }, 1).is_ok());
}

#[test]
fn concurrent_creates_of_one_name_and_drops_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(Database::open(dir.path()).unwrap());
    // Racing creators of one name: exactly one wins, the others see it exists.
    let results: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || db.create_collection("same", CollectionConfig::new(4)).map(|_| ()))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, Error::CollectionExists(_))));
    // Drop, then create again; a held handle refuses writes.
    let held = db.collection("same").unwrap();
    db.drop_collection("same").unwrap();
    assert!(matches!(
        held.upsert(&[Document::new("x", Tokens::F32 { data: vec![1.0; 4], dim: 4 })]),
        Err(Error::Poisoned(_))
    ));
    assert!(matches!(db.drop_collection("same"), Err(Error::UnknownCollection(_))));
    db.create_collection("same", CollectionConfig::new(4)).unwrap();
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.list_collections(), ["same"]);
}

/// The values an int8 collection stores for f16 input `t`: an independent
/// naive per-token quantisation (scale = max |x| / 127, code = round(x / scale)).
fn naive_int8(t: &[f32], dim: usize) -> Vec<f32> {
    t.chunks(dim)
        .flat_map(|r| {
            let max = r.iter().map(|x| x.abs()).fold(0.0, f32::max);
            let s = max / 127.0;
            r.iter().map(move |&x| if max == 0.0 { 0.0 } else { (x / s).round() * s })
        })
        .collect()
}

/// The ±1 MaxSim of the signs of the input values (x > 0 ↦ +1), naively.
fn naive_screen(q: &[f32], d: &[f32], dim: usize) -> i64 {
    let sign = |x: f32| if x > 0.0 { 1i64 } else { -1 };
    q.chunks(dim)
        .map(|qi| {
            d.chunks(dim).map(|dj| qi.iter().zip(dj).map(|(a, b)| sign(*a) * sign(*b)).sum::<i64>()).max().unwrap()
        })
        .sum()
}

#[test]
fn int8_and_screened_collections_against_naive_reference() {
    use tessera::{Screening, TokenType};
    let dim = 24;
    let kinds = [
        (TokenType::Int8, Screening::None, Some(tessera::IndexConfig::pooled())),
        (TokenType::Int8, Screening::Binary, None),
        (TokenType::F16, Screening::Binary, Some(tessera::IndexConfig::pooled())),
        (TokenType::Int8, Screening::Binary, Some(tessera::IndexConfig::muvera())),
        (TokenType::Int8, Screening::Binary, Some(centroids_small())),
        (TokenType::F16, Screening::None, Some(centroids_small())),
    ];
    for (storage, screening, index) in kinds {
        let what = format!("{storage:?}/{screening:?}/{}", tessera::IndexKind::of(index.as_ref()));
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let config = CollectionConfig { storage, screening, index, ..CollectionConfig::new(dim) };
        let c = db.create_collection("c", config).unwrap();
        assert_eq!(c.stats().bytes_per_token, tessera_format_bytes(storage, screening, dim));
        let mut rng = Rng(41);
        // id → (f16-rounded input values, in a segment?)
        let mut input: std::collections::BTreeMap<String, (Vec<f32>, bool)> = Default::default();
        for b in 0..4 {
            let docs: Vec<Document> =
                (0..60).map(|i| Document::new(format!("d{b}-{i}"), rng.tokens(1 + (i * 7) % 19, dim))).collect();
            for d in &docs {
                let Tokens::F32 { data, .. } = &d.tokens else { unreachable!() };
                let v = data.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                input.insert(d.id.clone(), (v, b < 3));
            }
            c.upsert(&docs).unwrap();
            if b < 3 {
                c.flush().unwrap(); // three segments, one memtable
            }
        }
        c.delete(&["d0-3", "d2-5", "d3-7"]).unwrap();
        for id in ["d0-3", "d2-5", "d3-7"] {
            input.remove(id);
        }
        let stored = |v: &[f32]| if storage == TokenType::Int8 { naive_int8(v, dim) } else { v.to_vec() };
        for (id, (v, _)) in input.iter().step_by(13) {
            let got = c.get(id).unwrap().unwrap();
            let want: Vec<f16> = stored(v).into_iter().map(f16::from_f32).collect();
            assert_eq!(got.tokens, want, "{what}: {id}");
        }
        for qi in 0..6 {
            let q = rng.tokens(1 + qi * 2, dim);
            let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
            let mut want: Vec<(f64, &str)> =
                input.iter().map(|(id, (v, _))| (maxsim_f64(qv, &stored(v), dim), id.as_str())).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            let exact = c.search_with(&q, &tessera::SearchParams::exact(10)).unwrap();
            for (g, w) in exact.iter().zip(&want) {
                assert_eq!(g.id, w.1, "{what}");
                assert!((g.score as f64 - w.0).abs() < 1e-3, "{what}: {} vs {}", g.score, w.0);
            }
            // Candidates and rerank covering the collection: two-stage equals exact.
            let mut all = tessera::SearchParams::new(10).with_candidates(1000);
            if screening == Screening::Binary {
                all = all.with_rerank(1000);
            }
            assert_eq!(c.search_with(&q, &all).unwrap(), exact, "{what}");
            if screening == Screening::None {
                let e = c.search_with(&q, &tessera::SearchParams::new(10).with_rerank(20)).unwrap_err();
                assert!(matches!(e, Error::InvalidArgument(_)), "{what}: rerank without screening: {e}");
                continue;
            }
            // Screened: segment rows keep the best `r` by the codes (memtable rows are
            // scored exactly); the hits are the exact top-k of what was kept. Unsaid,
            // `r` is max(64, 4·k): 80 at k = 20.
            for (k, r) in [(10, Some(12)), (20, None)] {
                let mut p = tessera::SearchParams::new(k).with_candidates(1000);
                if let Some(r) = r {
                    p = p.with_rerank(r);
                }
                let r = r.unwrap_or(64.max(4 * k));
                let got = c.search_with(&q, &p).unwrap();
                let mut screen: Vec<i64> =
                    input.values().filter(|(_, seg)| *seg).map(|(v, _)| naive_screen(qv, v, dim)).collect();
                screen.sort_by(|a, b| b.cmp(a));
                let thr = screen[r - 1];
                let kept = |id: &str, strict: bool| {
                    let (v, seg) = &input[id];
                    let s = naive_screen(qv, v, dim);
                    !seg || if strict { s > thr } else { s >= thr }
                };
                assert_eq!(got.len(), k, "{what}");
                assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
                for h in &got {
                    assert!(kept(&h.id, false), "{what}: {} was screened out (k {k}, rerank {r})", h.id);
                    assert!((h.score as f64 - maxsim_f64(qv, &stored(&input[&h.id].0), dim)).abs() < 1e-3);
                }
                let last = got.last().unwrap().score as f64;
                for (id, (v, _)) in &input {
                    if kept(id, true) && !got.iter().any(|h| &h.id == id) {
                        assert!(
                            maxsim_f64(qv, &stored(v), dim) <= last + 1e-3,
                            "{what}: {id} kept but missed (k {k}, rerank {r})"
                        );
                    }
                }
            }
            for bad in [
                tessera::SearchParams::exact(10).with_rerank(20),
                tessera::SearchParams::new(10).with_rerank(0),
                tessera::SearchParams::new(10).with_rerank(tessera::MAX_K + 1),
            ] {
                assert!(matches!(c.search_with(&q, &bad), Err(Error::InvalidArgument(_))), "{what}: {bad:?}");
            }
        }
        // The settings survive a reopen; a collection of other settings is not mistaken for it.
        drop(c);
        drop(db);
        let db = Database::open(dir.path()).unwrap();
        let c = db.collection("c").unwrap();
        assert_eq!((c.config().storage, c.config().screening), (storage, screening));
        assert_eq!(c.len(), input.len());
    }
}

fn tessera_format_bytes(t: tessera::TokenType, s: tessera::Screening, dim: usize) -> usize {
    let row = if t == tessera::TokenType::Int8 { dim + 4 } else { dim * 2 };
    row + if s == tessera::Screening::Binary { dim.div_ceil(64) * 8 } else { 0 }
}

/// Issue #16, fault 8: `hnsw.m` in 129..=256 passed validation and then
/// panicked at the first flush (the builder takes at most 128), poisoning the
/// collection. Creation now refuses what the builder does not take.
#[test]
fn hnsw_m_beyond_what_the_builder_takes_is_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let with_m = |m: usize| {
        let hnsw = tessera::HnswParams { m, ..Default::default() };
        let ix = tessera::IndexConfig::Vector { encoder: tessera::EncoderConfig::Pooled, hnsw };
        CollectionConfig { index: Some(ix), ..CollectionConfig::new(4) }
    };
    for m in [129, 200, 256, 1] {
        match db.create_collection(&format!("m{m}"), with_m(m)) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("hnsw.m"), "{msg}"),
            other => panic!("m = {m}: expected InvalidArgument, got {other:?}"),
        }
    }
    let c = db.create_collection("m128", with_m(128)).unwrap();
    let mut rng = Rng(5);
    c.upsert(&(0..50).map(|i| Document::new(format!("d{i}"), rng.tokens(3, 4))).collect::<Vec<_>>()).unwrap();
    c.flush().unwrap();
    assert_eq!(c.search(&rng.tokens(2, 4), 5).unwrap().len(), 5);
}

/// `search_batch` answers each query as `search_with` does alone, for every
/// storage, screening and index kind, exact and two-stage, with and without a
/// filter, over segments, deletes and the memtable; a bad query gets its own
/// error without stopping the others; bad parameters and oversize batches are
/// refused as a whole.
#[test]
fn search_batch_equals_one_query_at_a_time() {
    use tessera::{IndexConfig, Screening, SearchParams, TokenType};
    let dim = 32;
    let kinds = [
        (TokenType::F16, Screening::None, Some(IndexConfig::pooled())),
        (TokenType::F16, Screening::None, None),
        (TokenType::Int8, Screening::Binary, None),
        (TokenType::Int8, Screening::Binary, Some(IndexConfig::muvera())),
        (TokenType::F16, Screening::None, Some(centroids_small())),
    ];
    for (storage, screening, index) in kinds {
        let what = format!("{storage:?}/{screening:?}/{}", tessera::IndexKind::of(index.as_ref()));
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let c = db
            .create_collection("c", CollectionConfig { storage, screening, index, ..CollectionConfig::new(dim) })
            .unwrap();
        let mut rng = Rng(77);
        for b in 0..4 {
            let docs: Vec<Document> = (0..80)
                .map(|i| {
                    Document::new(format!("d{b}-{i}"), rng.tokens(1 + (i * 5) % 23, dim))
                        .with_payload(serde_json::json!({ "i": i }))
                })
                .collect();
            c.upsert(&docs).unwrap();
            if b < 3 {
                c.flush().unwrap();
            }
        }
        c.delete(&["d0-1", "d1-2", "d3-3"]).unwrap();
        // 41 queries (two groups of the kernel), of 1 to 40 tokens, one repeated
        // (so that two queries share every candidate).
        let mut queries: Vec<Tokens> = (0..40).map(|i| rng.tokens(1 + (i * 7) % 40, dim)).collect();
        queries.push(queries[3].clone());
        let filter = tessera::Filter::parse(r#"{"field": "i", "range": {"gte": 20}}"#).unwrap();
        let mut params = vec![
            SearchParams::exact(10),
            SearchParams::new(10),
            SearchParams::new(5).with_candidates(30),
            SearchParams::exact(7).with_filter(filter.clone()),
            SearchParams::new(10).with_candidates(40).with_filter(filter),
        ];
        if screening == Screening::Binary {
            params.push(SearchParams::new(10).with_candidates(100).with_rerank(15));
        }
        for p in &params {
            let got = c.search_batch(&queries, p).unwrap();
            assert_eq!(got.len(), queries.len());
            for (i, (q, g)) in queries.iter().zip(got).enumerate() {
                assert_eq!(g.unwrap(), c.search_with(q, p).unwrap(), "{what} {p:?} query {i}");
            }
        }
        // Bad queries answer with their own error; the rest are searched.
        let mut mixed = queries[..3].to_vec();
        mixed.insert(1, rng.tokens(2, dim + 1));
        mixed.push(Tokens::F32 { data: vec![f32::NAN; dim], dim });
        mixed.push(Tokens::F32 { data: vec![], dim });
        let got = c.search_batch(&mixed, &params[1]).unwrap();
        assert_eq!(got.len(), 6);
        for i in [1, 4, 5] {
            let e = got[i].as_ref().unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::DimensionMismatch { .. }
                        | Error::InvalidValue { .. }
                        | Error::InvalidArgument(_)
                        | Error::EmptyTensor { .. }
                ),
                "{what} {i}: {e:?}"
            );
        }
        for (i, q) in [(0, &queries[0]), (2, &queries[1]), (3, &queries[2])] {
            assert_eq!(got[i].as_ref().unwrap(), &c.search_with(q, &params[1]).unwrap(), "{what} {i}");
        }
        assert!(c.search_batch(&[], &params[0]).unwrap().is_empty());
        // Refused as a whole: bad parameters, too many queries, too many tokens.
        let e = c.search_batch(&queries, &SearchParams::new(0)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let many = vec![rng.tokens(1, dim); tessera::MAX_BATCH + 1];
        let e = c.search_batch(&many, &params[0]).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let long = vec![rng.tokens(tessera::MAX_BATCH_TOKENS / 2 + 1, dim); 2];
        let e = c.search_batch(&long, &params[0]).unwrap_err();
        assert!(e.to_string().contains("tokens"), "{e}");
        if screening == Screening::None {
            let e = c.search_batch(&queries, &SearchParams::new(10).with_rerank(20)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }
}

/// Issue #16 (fault 7 and read-only opening): a reader opens a database that
/// a writer holds, sees its data and searches it like the writer, changes
/// no file (a torn WAL tail is skipped, not cut) and refuses every write;
/// a missing database is an error, not created.
#[test]
fn read_only_opening_beside_a_writer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    assert!(matches!(Database::open_read_only(&missing), Err(Error::NoDatabase(_))));
    assert!(!missing.exists(), "a read-only open created nothing");
    let mut rng = Rng(5);
    let writer = Database::open(dir.path()).unwrap();
    let c = writer.create_collection("c", CollectionConfig::new(8)).unwrap();
    let docs: Vec<Document> = (0..30).map(|i| Document::new(format!("d{i}"), rng.tokens(1 + i % 4, 8))).collect();
    c.upsert(&docs[..20]).unwrap();
    c.flush().unwrap();
    c.upsert(&docs[20..]).unwrap(); // in the WAL only
    // A torn tail: half a frame header after the last whole batch.
    let cdir = dir.path().join("collections/c");
    let wal = files_named(&cdir, "wal-").pop().unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&wal, &bytes).unwrap();
    let listing = |d: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = (listing(dir.path()), listing(&cdir));

    let reader = Database::open_read_only(dir.path()).expect("a reader beside the writer");
    let r = reader.collection("c").unwrap();
    assert_eq!(r.len(), 30);
    let q = rng.tokens(3, 8);
    assert_eq!(r.search(&q, 10).unwrap(), c.search(&q, 10).unwrap(), "the writer's results");
    for d in &docs {
        assert_eq!(r.get(&d.id).unwrap().map(|g| g.tokens), c.get(&d.id).unwrap().map(|g| g.tokens));
    }
    let refused = |e: Error| assert!(matches!(e, Error::ReadOnly(_)), "{e}");
    refused(r.upsert(&[Document::new("x", rng.tokens(1, 8))]).unwrap_err());
    refused(r.delete(&["d1"]).unwrap_err());
    refused(r.flush().unwrap_err());
    refused(r.compact().unwrap_err());
    refused(reader.create_collection("n", CollectionConfig::new(8)).unwrap_err());
    refused(reader.drop_collection("c").unwrap_err());
    drop((r, reader));
    assert_eq!((listing(dir.path()), listing(&cdir)), before, "the reader changed no file");
    // The writer's own open is what repairs the tail.
    drop((c, writer));
    let writer = Database::open(dir.path()).unwrap();
    assert_eq!(writer.collection("c").unwrap().len(), 30);
    assert_eq!(std::fs::read(&wal).unwrap().len(), bytes.len() - 3, "the writer cut the torn tail");
}

/// Issue #30 item 15: a flipped bit in the WAL's last frame (an acknowledged
/// batch) reads as a torn tail, which opening cuts; the cut is not silent:
/// it is counted in the collection's stats, and its bytes are kept in a
/// quarantine file (the WAL's header, then exactly the bytes cut) whose
/// batch reads as the one that was lost. A later tail cut at the same offset
/// gets a file of its own; zero fill is cut and counted, but not kept.
#[test]
fn a_torn_wal_tail_is_cut_counted_and_kept_in_quarantine() {
    use tessera_format::wal;
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collections/c");
    let mut rng = Rng(15);
    let docs: Vec<Document> = (0..10).map(|i| Document::new(format!("d{i}"), rng.tokens(1 + i % 3, 8))).collect();
    {
        let db = Database::open(dir.path()).unwrap();
        db.set_seal_idle(None);
        let c = db.create_collection("c", CollectionConfig::new(8)).unwrap();
        for batch in [&docs[..4], &docs[4..7], &docs[7..]] {
            c.upsert(batch).unwrap();
        }
        let st = c.stats();
        assert_eq!((st.wal_tails_cut, st.quarantine.len()), (0, 0));
    }
    let wal_path = files_named(&cdir, "wal-").pop().unwrap();
    let whole = std::fs::read(&wal_path).unwrap();
    let frames = wal::scan(&whole).frames;
    let (last_at, last_payload) = *frames.last().unwrap();
    let (last_seq, _) = wal::decode_batch(last_payload, 8, 0).unwrap();
    let mut flipped = whole.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    std::fs::write(&wal_path, &flipped).unwrap();

    // No background seal: the WAL under test stays the current one.
    let reopen = || {
        let db = Database::open(dir.path()).unwrap();
        db.set_seal_idle(None);
        db.collection("c").unwrap()
    };
    let c = reopen();
    assert_eq!(c.len(), 7, "the last batch is cut");
    assert!(c.get("d7").unwrap().is_none() && c.get("d6").unwrap().is_some());
    assert_eq!(std::fs::read(&wal_path).unwrap(), whole[..last_at as usize], "the WAL ends at its last good frame");
    let st = c.stats();
    assert_eq!(st.wal_tails_cut, 1);
    let wal_id = wal::decode_header(&whole).unwrap().1;
    assert_eq!(st.quarantine, [format!("torn-{wal_id:016}-{last_at:016}.log")]);
    let kept = std::fs::read(cdir.join(&st.quarantine[0])).unwrap();
    assert_eq!(kept[..wal::HEADER_LEN], whole[..wal::HEADER_LEN], "the WAL's header");
    assert_eq!(kept[wal::HEADER_LEN..], flipped[last_at as usize..], "exactly the bytes cut");
    let lost = wal::read_torn(&kept[wal::HEADER_LEN..], 8);
    assert_eq!((lost.seq, lost.ops), (Some(last_seq), Some((3, 0))), "the lost batch, as its bytes read");
    drop(c);

    // Reopened: nothing more is cut; the quarantine file stays.
    let c = reopen();
    let st = c.stats();
    assert_eq!((c.len(), st.wal_tails_cut, st.quarantine.len()), (7, 0, 1));
    // Two of them written again (a batch with the lost one's sequence
    // number), torn again at the same offset: a second file.
    c.upsert(&docs[7..9]).unwrap();
    drop(c);
    let mut again = std::fs::read(&wal_path).unwrap();
    *again.last_mut().unwrap() ^= 0x10;
    std::fs::write(&wal_path, &again).unwrap();
    let c = reopen();
    let st = c.stats();
    assert_eq!((c.len(), st.wal_tails_cut), (7, 1));
    let first = format!("torn-{wal_id:016}-{last_at:016}.log");
    let second = format!("torn-{wal_id:016}-{last_at:016}.2.log");
    assert_eq!(st.quarantine, vec![second.clone(), first.clone()]);
    assert_eq!(std::fs::read(cdir.join(&first)).unwrap(), kept, "the first file is kept as it was");
    assert_eq!(std::fs::read(cdir.join(&second)).unwrap()[wal::HEADER_LEN..], again[last_at as usize..]);
    // Zero fill after the last frame: cut and counted, nothing kept.
    c.upsert(&docs[7..]).unwrap();
    drop(c);
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal_path).unwrap();
    std::io::Write::write_all(&mut f, &[0u8; 64]).unwrap();
    drop(f);
    let c = reopen();
    let st = c.stats();
    assert_eq!((c.len(), st.wal_tails_cut, st.quarantine.len()), (10, 1, 2));
}

/// A linear rank over the fused candidates against a reference computed here:
/// naive f64 MaxSim, the text source's BM25 scores with its lowest as the
/// floor, z-scores by hand. Then the collection's default ranking: used by a
/// query that gives no rank, kept across a restart, refused read-only.
#[test]
fn linear_rank_against_an_independent_reference_and_the_default_ranking() {
    use tessera::{Norm, Rank, Ranking, Signal};
    let dir = tempfile::tempdir().unwrap();
    let (c, all) = filtered_collection(dir.path(), tessera::IndexConfig::pooled());
    let q = Rng(77).tokens(3, 16);
    let Tokens::F32 { data: qv, .. } = &q else { unreachable!() };
    let maxsim = |id: &str| maxsim_f64(qv, &all.iter().find(|d| d.0 == id).unwrap().1, 16);
    let (text, n, w) = ("copy files network", 60, 0.7);
    let rank = Rank::linear(Norm::ZScore, [(Signal::MaxSim, 1.0), (Signal::Bm25, w)]);
    let hq = tessera::HybridQuery::new(10).with_tensor(q.clone()).with_text(text).with_candidates(n);
    let hits = c.query(&hq.clone().with_rank(rank.clone())).unwrap();
    // The candidates are the fused set of the two sources (RRF, tested elsewhere).
    let tensor = c.search_with(&q, &tessera::SearchParams::new(n).with_candidates(n)).unwrap();
    let bm25 = c.search_text(text, n, None).unwrap();
    let list = |h: &[tessera::SearchHit]| h.iter().map(|h| (h.id.clone(), h.score)).collect::<Vec<_>>();
    let lists = [(tessera::Source::Tensor, list(&tensor)), (tessera::Source::Text, list(&bm25))];
    let mut fused = tessera::fuse(&lists, &tessera::Fusion::Rrf { k0: 60.0 }, &Default::default());
    fused.truncate(n);
    let floor = bm25.iter().map(|h| h.score as f64).fold(f64::INFINITY, f64::min);
    let m: Vec<f64> = fused.iter().map(|f| maxsim(&f.0)).collect();
    let b: Vec<f64> =
        fused.iter().map(|f| bm25.iter().find(|h| h.id == f.0).map_or(floor, |h| h.score as f64)).collect();
    let z = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        v.iter().map(|x| (x - mean) / sd).collect::<Vec<_>>()
    };
    let (zm, zb) = (z(&m), z(&b));
    let mut want: Vec<(String, f64)> =
        fused.iter().enumerate().map(|(i, f)| (f.0.clone(), zm[i] + w * zb[i])).collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_eq!(hits.len(), 10);
    for (i, h) in hits.iter().enumerate() {
        let r = want.iter().find(|x| x.0 == h.hit.id).expect("a fused candidate");
        assert!((h.hit.score as f64 - r.1).abs() < 1e-3, "{}: {} vs {}", h.hit.id, h.hit.score, r.1);
        assert!((h.hit.score as f64 - want[i].1).abs() < 1e-3, "rank {i}: {} vs reference {:?}", h.hit.score, want[i]);
        let parts: f64 = h.components.iter().map(|c| c.weight * c.normalized).sum();
        assert!((parts - h.hit.score as f64).abs() < 1e-3, "the components add up to the score");
        let b = h.components.iter().find(|c| c.signal == Signal::Bm25).unwrap();
        assert_eq!(b.raw.is_none(), !bm25.iter().any(|x| x.id == h.hit.id), "raw BM25 only where returned");
    }
    // The vector source's similarity as a signal: raw where the source returned the hit.
    let vq = hq.clone().with_vector_source();
    let vector = c.query(&vq.clone().with_rank(Rank::MaxSim)).unwrap();
    let vhits =
        c.query(&vq.with_rank(Rank::linear(Norm::MinMax, [(Signal::MaxSim, 1.0), (Signal::Vector, 0.5)]))).unwrap();
    for h in &vhits {
        let v = h.components.iter().find(|c| c.signal == Signal::Vector).expect("a vector component");
        let listed = h.sources.iter().find(|s| s.source == tessera::Source::Vector).map(|s| s.score);
        assert_eq!(v.raw, listed);
        let parts: f64 = h.components.iter().map(|c| c.weight * c.normalized).sum();
        assert!((parts - h.hit.score as f64).abs() < 1e-4);
    }
    assert!(vector.iter().all(|h| h.components.is_empty()), "a MaxSim rank has no components");
    // The rank is checked against the query's sources.
    for bad in [
        hq.clone().with_rank(Rank::linear(Norm::ZScore, [(Signal::Vector, 1.0)])),
        hq.clone().with_rank(Rank::linear(Norm::MinMax, [(Signal::MaxSim, 0.0)])),
        tessera::HybridQuery::new(10).with_tensor(q.clone()).with_candidates(n).with_rank(rank.clone()),
        tessera::HybridQuery::new(10).with_text(text).with_rank(Rank::linear(Norm::ZScore, [(Signal::Bm25, 1.0)])),
    ] {
        assert!(matches!(c.query(&bad), Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    // Default: MaxSim order; once set, a query without rank takes it, and its candidates.
    let ids = |h: &[tessera::HybridHit]| h.iter().map(|h| h.hit.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&c.query(&hq).unwrap()), ids(&c.query(&hq.clone().with_rank(Rank::MaxSim)).unwrap()));
    let default = c.hybrid_candidates(10);
    c.set_ranking(Ranking { rank: rank.clone(), candidates: Some(n) }).unwrap();
    assert_eq!(c.query(&hq).unwrap(), hits);
    assert_eq!(c.hybrid_candidates(10), n);
    let mut opts = tessera::SearchOptions::new(10);
    opts.text = Some(text.into());
    let plan = opts.plan(&c, true, &tessera::PlanDefaults::default()).unwrap();
    let tessera::SearchResults::Hybrid(via_request) = c.execute(&plan, Some(&q)).unwrap() else { panic!("hybrid") };
    assert_eq!(via_request, hits, "a flat request without rank or candidates takes the ranking's");
    assert!(c.set_ranking(Ranking { rank: Rank::linear(Norm::ZScore, []), candidates: None }).is_err());
    drop(c);
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.ranking(), Ranking { rank: rank.clone(), candidates: Some(n) }, "kept across a restart");
    assert_eq!(c.query(&hq).unwrap(), hits);
    drop((c, db));
    let ro = Database::open_read_only(dir.path()).unwrap();
    assert!(matches!(ro.collection("c").unwrap().set_ranking(Ranking::default()), Err(Error::ReadOnly(_))));
    drop(ro);
    let c = Database::open(dir.path()).unwrap().collection("c").unwrap();
    c.set_ranking(Ranking::default()).unwrap();
    assert_eq!(c.hybrid_candidates(10), default);
    // Mining with the fused ranking: its order, MaxSim scores.
    let p = tessera::MineParams {
        range: (1, 10),
        per_query: 10,
        require_text: false,
        candidates: n,
        rank: Some(rank),
        ..Default::default()
    };
    let mined = c.mine_negatives_with("q", &q, Some(text), &[] as &[&str], &p).unwrap();
    let order: Vec<&str> = hits.iter().map(|h| h.hit.id.as_str()).collect();
    assert_eq!(mined.negatives.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), order);
    for h in &mined.negatives {
        assert!((h.score as f64 - maxsim(&h.id)).abs() < 1e-3);
    }
}

/// Issue #16, deadlines: a search past its deadline stops with
/// DeadlineExceeded (single, batch, hybrid); with time to spare it answers
/// exactly what it answers without a deadline.
#[test]
fn a_search_past_its_deadline_stops_with_deadline_exceeded() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = filtered_collection(dir.path(), tessera::IndexConfig::pooled());
    let q = Rng(5).tokens(4, 16);
    let past = Instant::now();
    let later = Instant::now() + Duration::from_secs(600);
    for p in [tessera::SearchParams::exact(10), tessera::SearchParams::new(10)] {
        let e = c.search_with(&q, &p.clone().with_deadline(past)).unwrap_err();
        assert!(matches!(e, Error::DeadlineExceeded) && e.kind() == tessera::ErrorKind::Timeout, "{e}");
        assert_eq!(c.search_with(&q, &p.clone().with_deadline(later)).unwrap(), c.search_with(&q, &p).unwrap());
        let batch = [q.clone(), Rng(6).tokens(3, 16)];
        assert!(matches!(c.search_batch(&batch, &p.clone().with_deadline(past)), Err(Error::DeadlineExceeded)));
    }
    let mut h = tessera::HybridQuery::new(5).with_tensor(q.clone()).with_text("copy files");
    h.deadline = Some(past);
    assert!(matches!(c.query(&h), Err(Error::DeadlineExceeded)));
    let without = c.query(&tessera::HybridQuery::new(5).with_tensor(q.clone()).with_text("copy files")).unwrap();
    h.deadline = Some(later);
    assert_eq!(c.query(&h).unwrap(), without);
}

/// `scan` against a model of the live documents kept beside the writes:
/// every page in id order across segments (some deleted from, some
/// replaced) and the memtable, the filter's matches counted, across a
/// reopen and a compaction.
#[test]
fn scan_lists_the_live_documents_a_filter_matches_in_id_order() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(17);
    let mut live: BTreeMap<String, i64> = BTreeMap::new();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(8)).unwrap();
    for round in 0..4 {
        let docs: Vec<Document> = (0..40)
            .map(|_| {
                let (id, n) = (format!("d{}", (rng.next() % 90)), (rng.next() % 1000) as i64);
                live.insert(id.clone(), n);
                let len = 1 + (rng.next() % 4) as usize;
                let tokens = rng.tokens(len, 8);
                (id.clone(), Document::new(id, tokens).with_payload(serde_json::json!({ "n": n })))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        c.upsert(&docs).unwrap();
        let gone: Vec<String> = (0..6).map(|_| format!("d{}", (rng.next() % 90))).collect();
        c.delete(&gone).unwrap();
        for g in &gone {
            live.remove(g);
        }
        if round < 3 {
            c.flush().unwrap();
        }
    }
    let check = |c: &tessera::Collection, live: &BTreeMap<String, i64>| {
        let filter = tessera::Filter::parse(r#"{"field": "n", "range": {"gte": 300, "lt": 800}}"#).unwrap();
        for (f, keep) in
            [(None, &(|_: i64| true) as &dyn Fn(i64) -> bool), (Some(&filter), &|n: i64| (300..800).contains(&n))]
        {
            let want: Vec<&String> = live.iter().filter(|(_, n)| keep(**n)).map(|(id, _)| id).collect();
            for limit in [1, 7, 1000] {
                let (mut seen, mut after) = (Vec::new(), None::<String>);
                loop {
                    let p = c.scan(f, after.as_deref(), limit, limit == 7).unwrap();
                    for d in &p.documents {
                        assert_eq!(d.payload, Some(serde_json::json!({ "n": live[&d.id] })));
                        assert_eq!(d.tokens.len(), if limit == 7 { d.n_tokens * 8 } else { 0 });
                    }
                    seen.extend(p.documents.into_iter().map(|d| d.id));
                    match p.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                assert_eq!(seen.iter().collect::<Vec<_>>(), want, "limit {limit}");
            }
            assert_eq!(c.count(f).unwrap(), want.len());
            // A page may start after an id that is not there.
            let p = c.scan(f, Some("d5"), 3, false).unwrap();
            let from: Vec<&String> = want.iter().copied().filter(|id| id.as_str() > "d5").take(3).collect();
            assert_eq!(p.documents.iter().map(|d| &d.id).collect::<Vec<_>>(), from);
        }
        let p = c.scan(None, None, 0, false).unwrap();
        assert_eq!((p.documents.len(), p.next), (0, None));
        assert!(matches!(c.scan(None, None, tessera::MAX_SCAN_LIMIT + 1, false), Err(Error::InvalidArgument(_))));
    };
    check(&c, &live);
    drop((c, db));
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    check(&c, &live);
    c.compact().unwrap();
    check(&c, &live);
}

/// Issue #30 item 17: a collection's tunable settings, set at creation and
/// changed later. Each change is stored (a reopen keeps it) and acts: a
/// codebook threshold lowered trains a codebook at the next seal, a smaller
/// memtable or segment bound seals and merges in the background. Settings
/// fixed at creation, of another index kind, or out of bounds are refused
/// by name and change nothing; a read-only database refuses any change.
#[test]
fn settings_are_set_at_creation_changed_later_and_checked() {
    use tessera::Settings;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(17);
    let base = CollectionConfig { index: Some(tessera::IndexConfig::centroids()), ..CollectionConfig::new(8) };
    let asked = Settings { min_train_tokens: Some(1 << 20), centroids_k: Some(16), ..Settings::default() };
    let config = asked.apply(&base, true).unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.set_seal_idle(None);
    let c = db.create_collection("c", config).unwrap();
    let now = Settings::of(&c.config());
    assert_eq!((now.min_train_tokens, now.centroids_k, now.memtable_bytes), (Some(1 << 20), Some(16), Some(64 << 20)));
    assert_eq!((now.hnsw_m, now.default_nprobe), (None, Some(0)), "only the centroids index's own settings");

    // Above the threshold no codebook is trained; lowered, the next seal trains one.
    let docs: Vec<Document> = (0..40).map(|i| Document::new(format!("d{i}"), rng.tokens(30, 8))).collect();
    c.upsert(&docs[..20]).unwrap();
    c.flush().unwrap();
    assert_eq!(c.stats().centroids, None);
    let changed = c.update_settings(&Settings { min_train_tokens: Some(256), ..Settings::default() }).unwrap();
    assert_eq!(changed, Settings { min_train_tokens: Some(256), ..now });
    c.upsert(&docs[20..]).unwrap();
    c.flush().unwrap();
    assert!(c.stats().centroids.is_some(), "trained at the seal after the threshold came down");

    // Refused by name, and nothing changes.
    let before = c.config();
    for (s, what) in [
        (Settings { centroids_k: Some(32), ..Settings::default() }, "centroids_k is fixed"),
        (Settings { train_iterations: Some(3), ..Settings::default() }, "train_iterations is fixed"),
        (Settings { hnsw_m: Some(8), ..Settings::default() }, "hnsw_m is fixed"),
        (Settings { memtable_bytes: Some(10), ..Settings::default() }, "memtable_bytes must be in"),
        (Settings { max_segments: Some(0), ..Settings::default() }, "max_segments must be in"),
        (Settings { max_batch_bytes: Some(1 << 40), ..Settings::default() }, "max_batch_bytes must be in"),
        (Settings { default_nprobe: Some(5000), ..Settings::default() }, "default_nprobe"),
        (Settings { min_train_tokens: Some(10), ..Settings::default() }, "min_train_tokens"),
        (Settings { drift: Some(f32::NAN), ..Settings::default() }, "drift"),
        (Settings { drift: Some(0.1), max_segments: Some(0), ..Settings::default() }, "max_segments"),
    ] {
        let e = c.update_settings(&s).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument(m) if m.contains(what)), "{what}: {e}");
    }
    assert_eq!(c.config(), before, "a refused change changes nothing");
    let pooled = Settings { default_nprobe: Some(8), ..Settings::default() };
    let e = pooled.apply(&CollectionConfig::new(8), true).unwrap_err();
    assert!(e.to_string().contains("default_nprobe does not apply to a collection with index pooled"), "{e}");

    // Smaller bounds act in the background: the memtable is sealed, segments merged.
    for i in 0..3 {
        c.upsert(&[Document::new(format!("s{i}"), rng.tokens(4, 8))]).unwrap();
        c.flush().unwrap();
    }
    c.upsert(&[Document::new("m", rng.tokens(400, 8))]).unwrap(); // 6,400 bytes of tokens
    assert!(c.stats().segments >= 4 && c.stats().memtable_documents == 1);
    c.update_settings(&Settings { memtable_bytes: Some(4 << 10), max_segments: Some(2), ..Settings::default() })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.stats().segments > 2 || c.stats().memtable_documents > 0 {
        assert!(std::time::Instant::now() < deadline, "not sealed and merged: {:?}", c.stats());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(c.len(), 44);
    let kept = Settings::of(&c.config());
    drop((c, db));

    // Stored: a reopen has them; a read-only database refuses a change.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(Settings::of(&db.collection("c").unwrap().config()), kept);
    drop(db);
    let ro = Database::open_read_only(dir.path()).unwrap();
    let e = ro.collection("c").unwrap().update_settings(&Settings { max_segments: Some(5), ..Settings::default() });
    assert!(matches!(e, Err(Error::ReadOnly(_))), "{e:?}");
}
