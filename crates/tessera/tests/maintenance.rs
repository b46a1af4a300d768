//! Background maintenance: memtables seal into segments and segments merge
//! off the write path while writes and searches go on; nothing is lost or
//! seen twice, against a model of every batch; a seal that fails (or is cut
//! short by a crash) leaves the WALs in charge.

use std::collections::BTreeMap;
use tessera::{CollectionConfig, Database, Document, SearchParams, TextConfig, f16};
use tessera_kernels::reference::maxsim_f64;

mod common;
use common::Rng;

const DIM: usize = 8;

type Model = BTreeMap<String, Vec<f16>>;

fn tokens_f16(d: &Document) -> Vec<f16> {
    let tessera::Tokens::F32 { data, .. } = &d.tokens else { unreachable!() };
    data.iter().map(|&x| f16::from_f32(x)).collect()
}

fn small_config() -> CollectionConfig {
    CollectionConfig {
        memtable_bytes: 6 << 10,
        max_segments: 4,
        index: Some(tessera::IndexConfig::pooled()),
        text: Some(TextConfig::default()),
        ..CollectionConfig::new(DIM)
    }
}

/// One batch of upserts over a pool of 500 ids (replacing documents in the
/// memtable, in a sealing memtable and in segments) or of deletes.
fn batch(rng: &mut Rng, b: usize, model: &mut Model, c: &tessera::Collection) {
    if b % 4 == 3 {
        let ids: Vec<String> = (0..4)
            .map(|_| format!("d{}", rng.next() % 500))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        c.delete(&ids).unwrap();
        for id in &ids {
            model.remove(id);
        }
    } else {
        let mut docs = BTreeMap::new();
        for _ in 0..6 {
            let id = format!("d{}", rng.next() % 500);
            let n = 1 + (rng.next() % 10) as usize;
            docs.insert(id.clone(), Document::new(id, rng.tokens(n, DIM)).with_text(format!("batch {b}")));
        }
        let docs: Vec<Document> = docs.into_values().collect();
        c.upsert(&docs).unwrap();
        for d in &docs {
            model.insert(d.id.clone(), tokens_f16(d));
        }
    }
}

fn assert_matches_model(c: &tessera::Collection, model: &Model, what: &str) {
    assert_eq!(c.len(), model.len(), "{what}: documents");
    for (id, want) in model {
        let got = c.get(id).unwrap().unwrap_or_else(|| panic!("{what}: {id} missing"));
        assert_eq!(&got.tokens, want, "{what}: {id}");
    }
    // Exact search against a naive f64 MaxSim over the model: every live
    // document once, none twice.
    let q = Rng(77).tokens(3, DIM);
    let tessera::Tokens::F32 { data: qd, .. } = &q else { unreachable!() };
    let mut want: Vec<(f64, &String)> = model
        .iter()
        .map(|(id, t)| {
            let d: Vec<f32> = t.iter().map(|x| x.to_f32()).collect();
            (maxsim_f64(qd, &d, DIM), id)
        })
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let hits = c.search_with(&q, &SearchParams::exact(model.len().max(1))).unwrap();
    assert_eq!(hits.len(), model.len(), "{what}: exact search returns every document once");
    for (h, (score, _)) in hits.iter().zip(&want) {
        assert!((h.score as f64 - score).abs() < 1e-3, "{what}: {} scored {} vs {score}", h.id, h.score);
    }
}

#[test]
fn background_seals_and_merges_lose_nothing_under_writes_and_searches() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = Rng(2026);
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", small_config()).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut searches = 0;
                let mut r = Rng(5);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let hits = c.search(&r.tokens(2, DIM), 50).unwrap();
                    let ids: std::collections::HashSet<_> = hits.iter().map(|h| &h.id).collect();
                    assert_eq!(ids.len(), hits.len(), "no document twice while memtables seal");
                    searches += 1;
                }
                searches
            });
            for b in 0..400 {
                batch(&mut rng, b, &mut model, &c);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(reader.join().unwrap() > 0);
        });
        // Seals ran in the background (this test never calls flush before here).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while c.stats().build.flushes < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let st = c.stats();
        assert!(st.build.flushes >= 3 && st.last_flush_error.is_none(), "{st:?}");
        assert!(st.segments <= 4 + 1, "merged back under max_segments (+ one sealing meanwhile): {st:?}");
        assert_matches_model(&c, &model, "while maintenance runs");
        c.flush().unwrap();
        let st = c.stats();
        assert_eq!(st.memtable_documents, 0, "flush seals everything written before it");
        assert!(st.segments <= 4, "{st:?}");
        assert_matches_model(&c, &model, "after flush");
        // Closing waits for background work; the rest is in the WAL.
        for b in 400..440 {
            batch(&mut rng, b, &mut model, &c);
        }
    }
    let db = Database::open(dir.path()).unwrap();
    assert_matches_model(&db.collection("c").unwrap(), &model, "after reopening");
}

#[test]
fn segments_with_many_deleted_rows_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(DIM)).unwrap();
    let mut rng = Rng(4);
    let docs: Vec<Document> = (0..200).map(|i| Document::new(format!("d{i}"), rng.tokens(3, DIM))).collect();
    c.upsert(&docs).unwrap();
    c.flush().unwrap();
    let ids: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    c.delete(&ids[..40]).unwrap();
    c.flush().unwrap();
    assert_eq!(c.stats().deleted_in_segments, 40, "20% deleted: below the share that rewrites");
    c.delete(&ids[40..]).unwrap();
    // 30% deleted: the next maintenance (here the flush) rewrites the segment.
    c.flush().unwrap();
    let st = c.stats();
    assert_eq!((st.deleted_in_segments, st.documents, st.build.merges), (0, 140, 1), "{st:?}");
}

/// The on-disk state of a crash in the middle of a seal: the manifest names
/// the frozen memtable's WAL before the current one. It is produced here by a
/// seal that cannot write its segment (the file name is taken).
#[test]
fn a_failed_seal_keeps_every_write_and_a_restart_replays_both_wals() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("collections/c");
    let mut model = Model::new();
    let mut rng = Rng(8);
    let config = CollectionConfig { memtable_bytes: 1 << 30, ..small_config() };
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", config).unwrap();
        for b in 0..20 {
            batch(&mut rng, b, &mut model, &c);
        }
        // The next seal takes one file id for the new WAL, then the next for the segment.
        let m = std::fs::read(cdir.join("MANIFEST")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&m[32..]).unwrap();
        let next = body["next_file_id"].as_u64().unwrap();
        let blocker = cdir.join(format!("seg-{:016}.tmp", next + 1));
        std::fs::create_dir(&blocker).unwrap();
        let err = c.flush().unwrap_err();
        assert!(err.to_string().contains(&format!("{:016}", next + 1)), "{err}");
        // Writes go on, into the new WAL.
        for b in 20..40 {
            batch(&mut rng, b, &mut model, &c);
        }
        assert_matches_model(&c, &model, "after the failed seal");
        let m = std::fs::read(cdir.join("MANIFEST")).unwrap();
        assert_eq!(u16::from_le_bytes([m[8], m[9]]), 2, "a manifest naming older WALs is version 2.0");
        let body: serde_json::Value = serde_json::from_slice(&m[32..]).unwrap();
        assert_eq!(body["older_wals"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(c.stats().segments, 0);
    }
    // A restart (as after a crash mid-seal) replays the older WAL, then the current one.
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    assert_matches_model(&c, &model, "after a restart");
    assert!(std::fs::read_dir(&cdir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    c.flush().unwrap();
    assert_matches_model(&c, &model, "sealed after the restart");
    let m = std::fs::read(cdir.join("MANIFEST")).unwrap();
    assert_eq!(u16::from_le_bytes([m[8], m[9]]), 1, "back to version 1.0 once sealed");
    assert_eq!(common::files_named(&cdir, "wal-").len(), 1);
}

/// A collection left unwritten for its quiet period has its memtable sealed
/// in the background (a two-stage search then uses the segment's candidate
/// index); with the period off it stays in the memtable; a reopened database
/// starts with the default period.
#[test]
fn a_quiet_collection_seals_its_memtable() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(23);
    {
        let db = Database::open(dir.path()).unwrap();
        db.set_seal_idle(Some(Duration::from_millis(100)));
        let c = db.create_collection("quiet", CollectionConfig::new(8)).unwrap();
        assert_eq!(c.seal_idle(), Some(Duration::from_millis(100)), "a new collection takes the database's period");
        let docs: Vec<Document> = (0..20).map(|i| Document::new(format!("d{i}"), rng.tokens(3, 8))).collect();
        c.upsert(&docs).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.stats().memtable_documents > 0 {
            assert!(Instant::now() < deadline, "not sealed 20 s after the last write");
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = c.stats();
        assert_eq!((s.documents, s.segments, s.memtable_documents), (20, 1, 0));

        db.set_seal_idle(None);
        let off = db.create_collection("off", CollectionConfig::new(8)).unwrap();
        off.upsert(&docs).unwrap();
        c.upsert(&docs[..3]).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(off.stats().memtable_documents, 20, "no period: the memtable stays");
        assert_eq!(c.stats().memtable_documents, 3, "the period was turned off for every collection");
    }
    let db = Database::open(dir.path()).unwrap();
    let off = db.collection("off").unwrap();
    assert_eq!(off.seal_idle(), Some(tessera::DEFAULT_SEAL_IDLE));
    // Documents replayed from the WAL are sealed once the period passes, with no write.
    assert_eq!(off.stats().memtable_documents, 20);
    db.set_seal_idle(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while off.stats().memtable_documents > 0 {
        assert!(Instant::now() < deadline, "the replayed memtable was not sealed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ro = Database::open_read_only(dir.path());
    assert!(ro.is_ok());
    assert_eq!(ro.unwrap().collection("off").unwrap().seal_idle(), None, "a reader never seals");
}
