//! Online backup and restore: a backup taken while writers go on (flushes and
//! merges included) restores to exactly the state after the batches it says
//! it holds, checked against a model that replays the same batches.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tessera::{CollectionConfig, Database, Document, Error, StoredDocument, TextConfig, f16};

mod common;
use common::{Rng, files_named};

const DIM: usize = 8;

/// One write batch, as the model replays it.
enum Batch {
    Upsert(Vec<Document>),
    Delete(Vec<String>),
}

/// What a document should read back as: f16 tokens, text and payload.
type Model = BTreeMap<String, (Vec<f16>, Option<String>, Option<serde_json::Value>)>;

fn model_after(batches: &[Batch]) -> Model {
    let mut m = Model::new();
    for b in batches {
        match b {
            Batch::Upsert(docs) => {
                for d in docs {
                    let tessera::Tokens::F32 { data, .. } = &d.tokens else { unreachable!() };
                    let tokens = data.iter().map(|&x| f16::from_f32(x)).collect();
                    m.insert(d.id.clone(), (tokens, d.text.clone(), d.payload.clone()));
                }
            }
            Batch::Delete(ids) => {
                for id in ids {
                    m.remove(id);
                }
            }
        }
    }
    m
}

fn read_back(d: StoredDocument) -> (Vec<f16>, Option<String>, Option<serde_json::Value>) {
    (d.tokens, d.text, d.payload)
}

/// Writes `n` batches to collection `name`: upserts over a pool of ids (so
/// documents are replaced, in the memtable and in segments) and deletes,
/// recording each batch; the batch written as sequence number s is
/// `log[s - 1]`.
fn write_batches(db: &Database, name: &str, seed: u64, n: usize, log: &Mutex<Vec<Batch>>, done: &AtomicU64) {
    let c = db.collection(name).unwrap();
    let mut rng = Rng(seed);
    for b in 0..n {
        let batch = if b % 5 == 4 {
            Batch::Delete(
                (0..3)
                    .map(|_| format!("d{}", rng.next() % 400))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            )
        } else {
            Batch::Upsert(
                (0..8)
                    .map(|i| {
                        let id = format!("d{}", (b * 8 + i + (rng.next() % 3) as usize) % 400);
                        let n = 1 + (rng.next() % 12) as usize;
                        let d = Document::new(id.clone(), rng.tokens(n, DIM))
                            .with_text(format!("batch {b} word{}", rng.next() % 50))
                            .with_payload(serde_json::json!({ "b": b, "i": i }));
                        // Ids unique within the batch: the later replaces the earlier.
                        (id, d)
                    })
                    .collect::<BTreeMap<_, _>>()
                    .into_values()
                    .collect(),
            )
        };
        // Written under the log's lock, so the log's order is the sequence order.
        let mut log = log.lock().unwrap();
        match &batch {
            Batch::Upsert(docs) => c.upsert(docs).unwrap(),
            Batch::Delete(ids) => drop(c.delete(ids).unwrap()),
        }
        log.push(batch);
        assert_eq!(c.last_seq(), log.len() as u64);
        drop(log);
        // Seals also happen in the background as memtables fill; these make sure.
        if b % 40 == 39 {
            c.flush().unwrap();
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn backups_under_concurrent_writes_restore_to_their_point() {
    let root = tempfile::tempdir().unwrap();
    let db_dir = root.path().join("db");
    let db = Database::open(&db_dir).unwrap();
    let mut small = CollectionConfig::new(DIM);
    small.memtable_bytes = 8 << 10;
    small.max_segments = 3;
    let indexed = CollectionConfig {
        index: Some(tessera::IndexConfig::pooled()),
        text: Some(TextConfig::default()),
        ..small.clone()
    };
    db.create_collection("indexed", indexed).unwrap();
    db.create_collection("plain", small).unwrap();
    let names = ["indexed", "plain"];
    let logs = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
    let done = [AtomicU64::new(0), AtomicU64::new(0)];
    let n = 240;
    let finished = AtomicBool::new(false);
    let mut backups = Vec::new();
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|i| {
                let (db, log, done) = (&db, &logs[i], &done[i]);
                s.spawn(move || write_batches(db, names[i], 7 + i as u64, n, log, done))
            })
            .collect();
        let (finished, done) = (&finished, &done);
        let backer = s.spawn(|| {
            while done.iter().any(|d| d.load(Ordering::Relaxed) < 20) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let mut out = Vec::new();
            // Up to 12 backups, spread over the writes.
            while (!finished.load(Ordering::Relaxed) && out.len() < 12) || out.is_empty() {
                let dest = root.path().join(format!("backup-{}", out.len()));
                out.push(tessera::backup(&db_dir, &dest).unwrap());
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            out
        });
        for w in writers {
            w.join().unwrap();
        }
        finished.store(true, Ordering::Relaxed);
        backups = backer.join().unwrap();
    });
    let logs: Vec<Vec<Batch>> = logs.into_iter().map(|l| l.into_inner().unwrap()).collect();
    let stats = db.collection("indexed").unwrap().stats();
    assert!(
        stats.build.flushes > 2 && stats.build.merges > 0,
        "flushes and merges happened: {:?} {:?}",
        stats.build,
        stats.last_flush_error
    );
    let mut mid_write = 0;
    for (b, report) in backups.iter().enumerate() {
        let restored = root.path().join(format!("restored-{b}"));
        let r = tessera::restore(&report.path, &restored).unwrap();
        assert_eq!(r.collections.len(), 2);
        let rdb = Database::open(&restored).unwrap();
        for (i, name) in names.iter().enumerate() {
            let taken = report.collections.iter().find(|c| c.name == *name).unwrap();
            assert_eq!(r.collections[i].seq, taken.seq, "restore reports the backup's point");
            let seq = taken.seq as usize;
            mid_write += (seq > 0 && seq < n) as usize;
            let model = model_after(&logs[i][..seq]);
            let c = rdb.collection(name).unwrap();
            assert_eq!((c.len(), taken.documents), (model.len(), model.len()), "{name} in backup {b} at seq {seq}");
            for (id, want) in &model {
                let got = c.get(id).unwrap().unwrap_or_else(|| panic!("{id} missing from {name} at seq {seq}"));
                assert_eq!(&read_back(got), want, "{id} in {name} at seq {seq}");
            }
            // The restored database takes writes and shares no file with the backup.
            c.upsert(&[Document::new("after-restore", Rng(1).tokens(2, DIM))]).unwrap();
            c.compact().unwrap();
        }
        drop(rdb);
        let again = Database::open_read_only(&report.path).unwrap();
        for c in &report.collections {
            assert_eq!(again.collection(&c.name).unwrap().len(), c.documents, "backup unchanged by restore");
        }
    }
    let tries = backups.iter().flat_map(|b| &b.collections).map(|c| c.tries).max().unwrap();
    println!("{} backups, {mid_write} collection copies taken mid-write, at most {tries} tries", backups.len());
    assert!(mid_write > 0, "at least one backup was taken while its collection was being written");
    let linked = backups.iter().flat_map(|b| &b.collections).any(|c| c.linked > 0);
    assert!(linked, "same file system: immutable files are hard-linked");
}

#[test]
fn backup_and_restore_refuse_what_they_cannot_do_whole() {
    let root = tempfile::tempdir().unwrap();
    let db_dir = root.path().join("db");
    {
        let db = Database::open(&db_dir).unwrap();
        let c = db.create_collection("c", CollectionConfig::new(DIM)).unwrap();
        let mut rng = Rng(3);
        c.upsert(&(0..30).map(|i| Document::new(format!("d{i}"), rng.tokens(3, DIM))).collect::<Vec<_>>()).unwrap();
        c.flush().unwrap();
        c.upsert(&[Document::new("in-wal", rng.tokens(2, DIM))]).unwrap();
    }
    let no_partial = |parent: &Path| {
        let left: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "no partial folder is left: {left:?}");
    };
    // Not a database; a destination that is not empty.
    assert!(matches!(tessera::backup(&root.path().join("nothing"), &root.path().join("x")), Err(Error::NoDatabase(_))));
    let full = root.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    assert!(matches!(tessera::backup(&db_dir, &full), Err(Error::DestinationExists(_))));
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");
    // Not inside the database (it would no longer open), however the path is spelled.
    for inside in [db_dir.join("bk"), db_dir.join("collections/new/bk"), root.path().join("x/../db/bk")] {
        let e = tessera::backup(&db_dir, &inside).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("inside the database"), "{e}");
        assert!(!inside.exists());
    }
    // An empty destination folder is fine.
    let bk = root.path().join("bk");
    std::fs::create_dir(&bk).unwrap();
    let report = tessera::backup(&db_dir, &bk).unwrap();
    assert_eq!((report.collections[0].documents, report.collections[0].seq), (31, 2));
    assert!(matches!(tessera::restore(&bk, &full), Err(Error::DestinationExists(_))));
    let e = tessera::restore(&bk, &bk.join("again")).unwrap_err();
    assert!(e.to_string().contains("inside the database"), "{e}");
    // A damaged backup is refused, and nothing is restored.
    let seg = files_named(&bk.join("collections/c"), "seg-").pop().unwrap();
    // The segment is a hard link: damage a copy, not the database's file.
    let mut bytes = std::fs::read(&seg).unwrap();
    std::fs::remove_file(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let target = root.path().join("restored");
    assert!(matches!(tessera::restore(&bk, &target), Err(Error::Corrupted { .. })));
    assert!(!target.exists());
    no_partial(root.path());
    // Restoring from a database open for writing is refused (a copy of it
    // would not be consistent), and leaves nothing.
    {
        let _writer = Database::open(&db_dir).unwrap();
        let e = tessera::restore(&db_dir, &target).unwrap_err();
        assert!(e.to_string().contains("open for writing"), "{e}");
        assert!(!target.exists());
    }
    // Staging folders of backups whose process is gone are removed by the
    // next backup there; one of a running process (this one) is not.
    let stale = root.path().join(".old.partial-4194999-17");
    let live = root.path().join(format!(".new.partial-{}-18", std::process::id()));
    for d in [&stale, &live] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
    }
    tessera::backup(&db_dir, &root.path().join("bk2")).unwrap();
    assert!(!stale.exists() && live.exists());
    std::fs::remove_dir_all(&live).unwrap();
    // A backup of a damaged database fails and leaves nothing: it is
    // verified before it takes its name.
    let seg = files_named(&db_dir.join("collections/c"), "seg-").pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::remove_file(&seg).unwrap();
    std::fs::write(&seg, &bytes).unwrap();
    let bad = root.path().join("bk-of-damaged");
    assert!(matches!(tessera::backup(&db_dir, &bad), Err(Error::Corrupted { .. })));
    assert!(!bad.exists());
    no_partial(root.path());
    std::fs::write(&seg, original).unwrap();
    // The database itself is untouched by all of this.
    let db = Database::open(&db_dir).unwrap();
    assert_eq!(db.collection("c").unwrap().len(), 31);
}

/// Collections dropped while backups run are in a backup or out of it, and
/// never make it fail (a backup synced the folder of a collection it had
/// just left out, and failed).
#[test]
fn backups_beside_collections_being_dropped_never_fail() {
    let root = tempfile::tempdir().unwrap();
    let db_dir = root.path().join("db");
    let db = Database::open(&db_dir).unwrap();
    let mut rng = Rng(5);
    let keep = db.create_collection("keep", CollectionConfig::new(DIM)).unwrap();
    keep.upsert(&[Document::new("k", rng.tokens(2, DIM))]).unwrap();
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(6);
            while !stop.load(Ordering::Relaxed) {
                let c = db.create_collection("churn", CollectionConfig::new(DIM)).unwrap();
                c.upsert(&[Document::new("x", rng.tokens(2, DIM))]).unwrap();
                drop(c);
                db.drop_collection("churn").unwrap();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut i = 0;
        while std::time::Instant::now() < deadline {
            let out = root.path().join(format!("bk-{i}"));
            let r = tessera::backup(&db_dir, &out);
            stop.store(r.is_err(), Ordering::Relaxed);
            let r = r.unwrap_or_else(|e| panic!("backup {i}: {e}"));
            assert!(r.collections.iter().any(|c| c.name == "keep" && c.documents == 1));
            std::fs::remove_dir_all(&out).unwrap();
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!("{i} backups beside {} creates and drops", rounds.load(Ordering::Relaxed));
    });
}
