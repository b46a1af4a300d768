//! Compatibility: databases written by each released format version, stored in
//! `storage-format/fixtures/`, are opened and read on every run; deliberately
//! damaged copies must be refused (or, for a torn WAL tail, repaired).
//!
//! Regenerate the current version's fixtures (only when adding a new format
//! version, never to make this pass; older versions' fixtures are frozen, this
//! build cannot write them): `TESSERA_WRITE_FIXTURES=1 cargo test -p tessera-e2e --test compat`
//! (it writes `v2.1/` and `v3.0/`).

use std::path::{Path, PathBuf};
use tessera::{CollectionConfig, Database, Document, Error, Screening, TokenType, Tokens, f16};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../storage-format/fixtures")
}

/// The documents of the v1 fixture: exact f16 values, so equality is exact.
fn golden_doc(i: usize) -> Document {
    let data: Vec<f16> = (0..(i + 1) * 4).map(|j| f16::from_f32((j as f32 - 3.0) * 0.25 + i as f32)).collect();
    Document::new(format!("doc-{i}"), Tokens::F16 { data, dim: 4 })
        .with_text(format!("text {i}"))
        .with_payload(serde_json::json!({ "i": i }))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Fixture layout: doc-0..doc-4 flushed into one segment, doc-1 deleted
/// (deletion vector), then doc-5 upserted and doc-2 deleted in the WAL only.
/// v1: `db` (no index), `db-index` (a pooled HNSW index per segment),
/// `db-text` (and BM25). v2 (segments with a token type): `db-f16` (pooled
/// index, text), `db-int8-binary` (int8 tokens, binary screening codes,
/// pooled index, text).
fn write_fixture(dir: &Path, config: CollectionConfig) {
    write_layout(dir, config, golden_doc, 5, [1, 2]);
}

/// The fixtures' layout of `doc(0 .. n)`: flushed into one segment, doc
/// `deleted[0]` deleted (a deletion vector), then doc `n` upserted and doc
/// `deleted[1]` deleted in the WAL only.
fn write_layout(dir: &Path, config: CollectionConfig, doc: fn(usize) -> Document, n: usize, deleted: [usize; 2]) {
    let db = Database::open(dir).unwrap();
    let c = db.create_collection("golden", config).unwrap();
    c.upsert(&(0..n).map(doc).collect::<Vec<_>>()).unwrap();
    c.flush().unwrap();
    c.delete(&[doc(deleted[0]).id]).unwrap();
    c.flush().unwrap();
    c.upsert(&[doc(n)]).unwrap();
    c.delete(&[doc(deleted[1]).id]).unwrap();
    drop(db);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

fn file_with_prefix(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

fn v1_copy() -> (tempfile::TempDir, PathBuf) {
    copy_of("v1", "db")
}

fn v1_copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    copy_of("v1", name)
}

fn copy_of(version: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join(version).join(name), tmp.path());
    let cdir = tmp.path().join("collections/golden");
    (tmp, cdir)
}

#[test]
fn v1_database_opens_with_its_exact_contents() {
    for name in ["db", "db-index", "db-text"] {
        check_contents("v1", name, TokenType::F16);
    }
}

fn v2_configs() -> [(&'static str, CollectionConfig); 2] {
    let base = CollectionConfig {
        index: Some(tessera::IndexConfig::pooled()),
        text: Some(tessera::TextConfig::default()),
        ..CollectionConfig::new(4)
    };
    [
        ("db-f16", base.clone()),
        ("db-int8-binary", CollectionConfig { storage: TokenType::Int8, screening: Screening::Binary, ..base }),
    ]
}

#[test]
fn v2_databases_open_with_their_exact_contents() {
    for (name, config) in v2_configs() {
        check_contents("v2", name, config.storage);
        let (tmp, cdir) = copy_of("v2", name);
        let seg = std::fs::read(file_with_prefix(&cdir, "seg-")).unwrap();
        let header = |at: usize| u16::from_le_bytes([seg[at], seg[at + 1]]);
        assert_eq!((header(8), header(48), header(50)), (2, config.storage as u16, config.screening as u16));
        let db = Database::open(tmp.path()).unwrap();
        let c = db.collection("golden").unwrap();
        assert_eq!((c.config().storage, c.config().screening), (config.storage, config.screening));
        if config.screening == Screening::Binary {
            // Screened search over the fixture's codes: the segment's three rows are
            // screened to the rerank count, the memtable's doc-5 is scored exactly.
            let q = Tokens::F32 { data: vec![1.0, 0.0, 0.0, 0.0], dim: 4 };
            let hits = c.search_with(&q, &tessera::SearchParams::new(4).with_rerank(4)).unwrap();
            assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["doc-5", "doc-4", "doc-3", "doc-0"]);
        }
    }
}

/// The stored values of golden document `i` in a collection of `storage`,
/// as `get` returns them: f16 as written; int8 by a naive per-token
/// quantisation (code = round(x / (max|x| / 127))), dequantised to f16.
fn golden_stored(i: usize, storage: TokenType) -> Vec<f16> {
    let want = golden_doc(i);
    let Tokens::F16 { data, .. } = &want.tokens else { unreachable!() };
    match storage {
        TokenType::F16 => data.clone(),
        TokenType::Int8 => data
            .chunks(4)
            .flat_map(|t| {
                let s = t.iter().map(|x| x.to_f32().abs()).fold(0.0, f32::max) / 127.0;
                t.iter().map(move |x| f16::from_f32(if s == 0.0 { 0.0 } else { (x.to_f32() / s).round() * s }))
            })
            .collect(),
        TokenType::Residual2 | TokenType::Residual4 => unreachable!("the golden f16/int8 layouts are not residual"),
    }
}

fn check_contents(version: &str, name: &str, storage: TokenType) {
    let (tmp, _) = copy_of(version, name);
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("golden").unwrap();
    assert_eq!(c.dim(), 4);
    assert_eq!(c.len(), 4);
    for i in 0..6 {
        let got = c.get(&format!("doc-{i}")).unwrap();
        if i == 1 || i == 2 {
            assert!(got.is_none(), "doc-{i} was deleted");
            continue;
        }
        let d = got.unwrap();
        let want = golden_doc(i);
        assert_eq!(d.tokens, golden_stored(i, storage), "{version}/{name}: doc-{i}");
        assert_eq!((d.text, d.payload), (want.text, want.payload));
    }
    let q = Tokens::F32 { data: vec![1.0, 0.0, 0.0, 0.0], dim: 4 };
    for params in [tessera::SearchParams::exact(10), tessera::SearchParams::new(10).with_candidates(2)] {
        let hits = c.search_with(&q, &params).unwrap();
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["doc-5", "doc-4", "doc-3", "doc-0"]);
    }
    if name != "db" && name != "db-index" {
        // Full text from the segment's index (doc-0, doc-3, doc-4) and the WAL-replayed memtable (doc-5).
        for i in [0, 3, 4, 5] {
            let hits = c.search_text(&format!("text {i}"), 1, None).unwrap();
            assert_eq!(hits[0].id, format!("doc-{i}"));
        }
        assert!(c.search_text("1", 5, None).unwrap().is_empty(), "deleted doc-1 is not found");
    }
}

#[test]
fn damaged_v1_index_is_refused_with_file_and_offset() {
    let (tmp, cdir) = v1_copy_of("db-index");
    let ix = file_with_prefix(&cdir, "hnsw-");
    let mut b = std::fs::read(&ix).unwrap();
    b[384 + 1] ^= 0x04; // a stored vector: the first section follows the 384-byte header
    std::fs::write(&ix, b).unwrap();
    match Database::open(tmp.path()) {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (ix, 384)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn damaged_v1_segment_is_refused_with_file_and_offset() {
    let (tmp, cdir) = v1_copy();
    let seg = file_with_prefix(&cdir, "seg-");
    let mut b = std::fs::read(&seg).unwrap();
    b[600] ^= 0x01; // a token value
    std::fs::write(&seg, b).unwrap();
    match Database::open(tmp.path()) {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (seg, 512)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn truncated_v1_segment_is_refused() {
    let (tmp, cdir) = v1_copy();
    let seg = file_with_prefix(&cdir, "seg-");
    let b = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &b[..b.len() - 3]).unwrap();
    assert!(matches!(Database::open(tmp.path()), Err(Error::Corrupted { .. })));
}

#[test]
fn torn_v1_wal_tail_is_cut_and_corrupt_middle_is_refused() {
    // A torn append (half a frame) is cut: the database opens with every complete batch.
    let (tmp, cdir) = v1_copy();
    let wal = file_with_prefix(&cdir, "wal-");
    let good = std::fs::read(&wal).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&wal, &torn).unwrap();
    {
        let db = Database::open(tmp.path()).unwrap();
        assert_eq!(db.collection("golden").unwrap().len(), 4);
    }
    assert_eq!(std::fs::read(&wal).unwrap(), good, "the torn tail was cut back to the last good frame");

    // A damaged first frame followed by a good one is corruption, not a torn tail.
    let mut bad = good.clone();
    bad[32 + 8 + 2] ^= 0xff;
    std::fs::write(&wal, &bad).unwrap();
    match Database::open(tmp.path()) {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (wal, 32)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn damaged_v1_manifest_and_deletion_vector_are_refused() {
    for prefix in ["MANIFEST", "del-"] {
        let (tmp, cdir) = v1_copy();
        let f = file_with_prefix(&cdir, prefix);
        let mut b = std::fs::read(&f).unwrap();
        let at = b.len() - 2;
        b[at] ^= 0x20;
        std::fs::write(&f, b).unwrap();
        match Database::open(tmp.path()) {
            Err(Error::Corrupted { file, .. }) => assert_eq!(file, f),
            other => panic!("{prefix}: expected Corrupted, got {other:?}"),
        }
    }
}

#[test]
fn damaged_v2_scales_and_codes_are_refused_with_file_and_offset() {
    // Sections 11 (SCALES) and 12 (CODES): a flipped byte fails the section's
    // checksum, reported at the section's start; a damaged section table entry
    // is reported at the entry.
    for (section, entry_field) in [(10usize, 0usize), (11, 0), (10, 20), (11, 8)] {
        let (tmp, cdir) = copy_of("v2", "db-int8-binary");
        let seg = file_with_prefix(&cdir, "seg-");
        let mut b = std::fs::read(&seg).unwrap();
        let entry = 64 + 32 * section;
        let start = u64::from_le_bytes(b[entry..entry + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(b[entry + 8..entry + 16].try_into().unwrap()) as usize;
        assert!(len > 0, "section {} is present", section + 1);
        let want_offset = if entry_field == 0 {
            b[start + len / 2] ^= 0x08;
            start
        } else {
            // Damage the entry and fix the header checksum so that the table itself is checked.
            b[entry + entry_field] ^= 0x01;
            b[44..48].fill(0);
            let crc = crc32fast_hash(&b[..512]);
            b[44..48].copy_from_slice(&crc.to_le_bytes());
            // A wrong kind is reported at the kind field, a wrong range at the entry.
            if entry_field == 20 { entry + 20 } else { entry }
        };
        std::fs::write(&seg, b).unwrap();
        match Database::open(tmp.path()) {
            Err(Error::Corrupted { file, offset, .. }) => {
                assert_eq!((file, offset as usize), (seg, want_offset), "section {}", section + 1)
            }
            other => panic!("section {}: expected Corrupted, got {other:?}", section + 1),
        }
    }
}

/// CRC-32 (IEEE), bitwise: an independent check of the header checksum the format uses.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// The documents of the centroids fixture: 48 documents of 3..10 tokens
/// (320+ tokens: enough to train its codebook of 16 centroids), exact f16
/// values.
fn centroid_doc(i: usize) -> Document {
    let n = 3 + i % 8;
    let data: Vec<f16> = (0..n * 4)
        .map(|j| f16::from_f32(((i * 7 + j * 3) % 17) as f32 * 0.125 - 1.0 + (j % 4) as f32 * 0.25))
        .collect();
    Document::new(format!("c-{i}"), Tokens::F16 { data, dim: 4 }).with_payload(serde_json::json!({ "i": i }))
}

fn centroid_config() -> CollectionConfig {
    let centroids = tessera::CentroidParams { k: 16, min_train_tokens: 256, ..Default::default() };
    CollectionConfig {
        index: Some(tessera::IndexConfig::Centroids { centroids }),
        text: None,
        ..CollectionConfig::new(4)
    }
}

/// v2 `db-centroids` (written by the build that made v2: a collection with a
/// centroids index): c-0..c-47 flushed (the codebook is trained from that
/// segment: `cbk-`, `ivf-` files), c-5 deleted (deletion vector), then c-48
/// upserted and c-7 deleted in the WAL.
#[test]
fn v2_centroids_database_opens_searches_and_keeps_its_codebook() {
    let (tmp, cdir) = copy_of("v2", "db-centroids");
    let names = || {
        let mut v: Vec<String> =
            std::fs::read_dir(&cdir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let before = names();
    assert!(before.iter().any(|n| n.starts_with("cbk-")) && before.iter().any(|n| n.starts_with("ivf-")), "{before:?}");
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("golden").unwrap();
    assert_eq!(*c.config(), centroid_config());
    assert_eq!(c.len(), 47);
    assert_eq!(c.stats().centroids, Some(16));
    for i in [0, 5, 7, 30, 48] {
        let got = c.get(&format!("c-{i}")).unwrap();
        if i == 5 || i == 7 {
            assert!(got.is_none(), "c-{i} was deleted");
            continue;
        }
        let Tokens::F16 { data, .. } = centroid_doc(i).tokens else { unreachable!() };
        assert_eq!(got.unwrap().tokens, data, "c-{i}");
    }
    // Every document a candidate: the exact result; a few candidates: true scores, ranked.
    for q in [[1.0f32, 0.0, 0.0, 0.0], [0.2, -0.5, 0.7, 0.1]] {
        let q = Tokens::F32 { data: q.to_vec(), dim: 4 };
        let exact = c.search_with(&q, &tessera::SearchParams::exact(10)).unwrap();
        assert_eq!(c.search_with(&q, &tessera::SearchParams::new(10).with_candidates(1000)).unwrap(), exact);
        let few = c.search_with(&q, &tessera::SearchParams::new(5).with_candidates(8).with_nprobe(2)).unwrap();
        assert!(few.len() == 5 && few.windows(2).all(|w| w[0].score >= w[1].score));
    }
    assert_eq!(names(), before, "opening and searching rebuild or retrain nothing");
    // A segment sealed now is coded with the fixture's codebook.
    c.upsert(&(49..60).map(centroid_doc).collect::<Vec<_>>()).unwrap();
    c.flush().unwrap();
    let cbk: Vec<String> = names().into_iter().filter(|n| n.starts_with("cbk-")).collect();
    assert_eq!(cbk, before.iter().filter(|n| n.starts_with("cbk-")).cloned().collect::<Vec<_>>());
}

/// v2.1 `db-pooled` (segments 2.1, WAL 1.1): the golden layout in a
/// collection with `pool_factor` 2 — segments with a GIVEN_TOKENS section
/// and a pooled upsert in the WAL (doc-5, given 6 tokens, keeps 1 + ⌈5 / 2⌉ = 4).
fn pooled_config() -> CollectionConfig {
    CollectionConfig { pool_factor: 2, ..CollectionConfig::new(4) }
}

/// A golden document's tokens as a pooled collection stores them: pooled
/// by 2 (`pool_tokens`, checked against a greedy Ward in the engine's
/// tests), as f16.
fn golden_pooled(i: usize) -> Vec<f16> {
    let Tokens::F16 { data, .. } = golden_doc(i).tokens else { unreachable!() };
    let x: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
    tessera::pool_tokens(&x, 4, 2).into_iter().map(f16::from_f32).collect()
}

#[test]
fn v2_1_pooled_database_opens_with_its_exact_contents() {
    let out = fixtures().join("v2.1/db-pooled");
    if std::env::var_os("TESSERA_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_dir_all(&out);
        write_fixture(&out, pooled_config());
    }
    let (tmp, cdir) = copy_of("v2.1", "db-pooled");
    let seg = std::fs::read(file_with_prefix(&cdir, "seg-")).unwrap();
    let half = |at: usize| u16::from_le_bytes([seg[at], seg[at + 1]]);
    assert_eq!((half(8), half(10), u32::from_le_bytes(seg[40..44].try_into().unwrap())), (2, 1, 13));
    let wal = std::fs::read(file_with_prefix(&cdir, "wal-")).unwrap();
    assert_eq!((u16::from_le_bytes([wal[8], wal[9]]), u16::from_le_bytes([wal[10], wal[11]])), (1, 1));
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("golden").unwrap();
    assert_eq!(*c.config(), pooled_config());
    let mut given = 0;
    let mut stored = 0;
    for i in [0, 3, 4, 5] {
        let d = c.get(&format!("doc-{i}")).unwrap().unwrap();
        assert_eq!(d.tokens, golden_pooled(i), "doc-{i}");
        assert_eq!((d.n_tokens, d.given_tokens), (tessera::pooled_len(i + 1, 2), i + 1), "doc-{i}");
        (given, stored) = (given + d.given_tokens, stored + d.n_tokens);
    }
    assert!(c.get("doc-1").unwrap().is_none() && c.get("doc-2").unwrap().is_none());
    let st = c.stats();
    assert_eq!((st.given_tokens, st.tokens), (given, stored));
    // Scores are MaxSim over the stored (pooled) values, as a naive f64 sum gives them.
    let q = [0.3f32, -0.2, 0.9, 0.1];
    let hits = c.search_with(&Tokens::F32 { data: q.to_vec(), dim: 4 }, &tessera::SearchParams::exact(10)).unwrap();
    for h in &hits {
        let i: usize = h.id["doc-".len()..].parse().unwrap();
        let best = golden_pooled(i)
            .chunks(4)
            .map(|t| t.iter().zip(&q).map(|(a, b)| a.to_f32() as f64 * *b as f64).sum::<f64>())
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((h.score as f64 - best).abs() < 1e-3, "{}: {} vs {best}", h.id, h.score);
    }
    assert_eq!(hits.len(), 4);
}

/// GIVEN_TOKENS (section 13) damaged: a flipped byte fails its checksum
/// (reported at the section's start); a count below the stored rows, with
/// the checksums made right, is refused at its entry.
#[test]
fn damaged_v2_1_given_tokens_are_refused_with_file_and_offset() {
    for fix_crc in [false, true] {
        let (tmp, cdir) = copy_of("v2.1", "db-pooled");
        let seg = file_with_prefix(&cdir, "seg-");
        let mut b = std::fs::read(&seg).unwrap();
        let entry = 64 + 32 * 12;
        let start = u64::from_le_bytes(b[entry..entry + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(b[entry + 8..entry + 16].try_into().unwrap()) as usize;
        assert_eq!(len, 3 * 4, "a given count for each of the segment's 3 documents (doc-1 merged away)");
        let want = if fix_crc {
            b[start + 4..start + 8].copy_from_slice(&1u32.to_le_bytes());
            let crc = crc32fast_hash(&b[start..start + len]);
            b[entry + 16..entry + 20].copy_from_slice(&crc.to_le_bytes());
            b[44..48].fill(0);
            let crc = crc32fast_hash(&b[..512]);
            b[44..48].copy_from_slice(&crc.to_le_bytes());
            start + 4
        } else {
            b[start + 1] ^= 0x10;
            start
        };
        std::fs::write(&seg, b).unwrap();
        match Database::open(tmp.path()) {
            Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset as usize), (seg, want)),
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }
}

/// v3.0 `db-residual2` / `db-residual4` (segments 3.0, codebooks 1.1): the
/// centroids fixture's layout (c-0..c-47 flushed: the seal trains the
/// codebook, with residual tables, and writes its segment as residual; c-5
/// deleted; c-48 upserted and c-7 deleted in the WAL) in collections
/// storing residual tokens (residual4 with binary screening; residual2
/// with a kept f16 copy, `keep-N.tkeep`).
fn residual_configs() -> [(&'static str, CollectionConfig); 3] {
    let base = centroid_config();
    [
        ("db-residual2", CollectionConfig { storage: TokenType::Residual2, ..base.clone() }),
        (
            "db-residual4",
            CollectionConfig { storage: TokenType::Residual4, screening: Screening::Binary, ..base.clone() },
        ),
        ("db-residual2-keep", CollectionConfig { storage: TokenType::Residual2, keep: tessera::Keep::F16, ..base }),
    ]
}

fn le(b: &[u8], at: usize, n: usize) -> usize {
    (0..n).map(|i| (b[at + i] as usize) << (8 * i)).sum()
}

/// Section `i` of a sectioned file whose table is at `table`.
fn section(b: &[u8], table: usize, i: usize) -> &[u8] {
    let (at, len) = (le(b, table + 32 * i, 8), le(b, table + 32 * i + 8, 8));
    &b[at..at + len]
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The values a residual fixture stores, by document id, read from its
/// files by hand (SPEC.md: "Segment", "Codebook file", "Residual tokens"):
/// each token `centroid[code][k] + weights[k][bucket_k]`.
fn residual_values(cdir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let cb = std::fs::read(file_with_prefix(cdir, "cbk-")).unwrap();
    let (dim, k, bits) = (le(&cb, 12, 4), le(&cb, 16, 8), cb[68] as usize);
    let (centroids, weights) = (f32s(section(&cb, 128, 0)), f32s(section(&cb, 128, 4)));
    assert_eq!((centroids.len(), weights.len()), (k * dim, dim << bits));
    let seg = std::fs::read(file_with_prefix(cdir, "seg-")).unwrap();
    assert_eq!(le(&seg, 52, 4) as u32, crc32fast_hash(section(&cb, 128, 0)), "the header names the codebook");
    let (n_docs, row) = (le(&seg, 16, 8), 2 + (dim * bits).div_ceil(8));
    let (tokens, doc_off, id_off, ids) =
        (section(&seg, 64, 0), section(&seg, 64, 1), section(&seg, 64, 2), section(&seg, 64, 3));
    let mut out = std::collections::BTreeMap::new();
    for d in 0..n_docs {
        let id = std::str::from_utf8(&ids[le(id_off, 8 * d, 8)..le(id_off, 8 * d + 8, 8)]).unwrap();
        let mut v = Vec::new();
        for r in tokens[le(doc_off, 8 * d, 8) * row..le(doc_off, 8 * d + 8, 8) * row].chunks(row) {
            let code = le(r, 0, 2);
            for j in 0..dim {
                let bucket = (r[2 + j * bits / 8] >> (j * bits % 8)) as usize & ((1 << bits) - 1);
                v.push(centroids[code * dim + j] + weights[(j << bits) + bucket]);
            }
        }
        out.insert(id.to_string(), v);
    }
    out
}

#[test]
fn v3_residual_databases_open_with_their_exact_contents() {
    for (name, config) in residual_configs() {
        let out = fixtures().join("v3.0").join(name);
        if std::env::var_os("TESSERA_WRITE_FIXTURES").is_some() {
            let _ = std::fs::remove_dir_all(&out);
            write_layout(&out, config.clone(), centroid_doc, 48, [5, 7]);
        }
        let (tmp, cdir) = copy_of("v3.0", name);
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(&cdir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = names();
        let seg = std::fs::read(file_with_prefix(&cdir, "seg-")).unwrap();
        let half = |at: usize| le(&seg, at, 2);
        assert_eq!((half(8), half(10), half(48)), (3, 0, config.storage as usize), "{name}");
        let cb = std::fs::read(file_with_prefix(&cdir, "cbk-")).unwrap();
        assert_eq!((le(&cb, 10, 2), cb[68] as u32), (1, config.storage.residual_bits()), "{name}");
        let stored = residual_values(&cdir);
        let db = Database::open(tmp.path()).unwrap();
        let c = db.collection("golden").unwrap();
        assert_eq!(*c.config(), config);
        assert_eq!(c.len(), 47);
        for i in 0..49 {
            let got = c.get(&format!("c-{i}")).unwrap();
            if i == 5 || i == 7 {
                assert!(got.is_none(), "{name}: c-{i} was deleted");
                continue;
            }
            let Tokens::F16 { data, .. } = centroid_doc(i).tokens else { unreachable!() };
            let want: Vec<f16> = match stored.get(&format!("c-{i}")) {
                // A kept copy holds the values given, which `get` reads.
                Some(v) if config.keep == tessera::Keep::None => v.iter().map(|&x| f16::from_f32(x)).collect(),
                _ => data.clone(), // c-48: in the WAL, f16
            };
            assert_eq!(got.unwrap().tokens, want, "{name}: c-{i}");
        }
        // Exact search scores the stored values as a naive f64 MaxSim does;
        // every document a candidate gives the exact result.
        for q in [[1.0f32, 0.0, 0.0, 0.0], [0.2, -0.5, 0.7, 0.1]] {
            let query = Tokens::F32 { data: q.to_vec(), dim: 4 };
            let exact = c.search_with(&query, &tessera::SearchParams::exact(47)).unwrap();
            assert_eq!(exact.len(), 47);
            for h in &exact {
                let v = match stored.get(&h.id) {
                    Some(v) if config.keep == tessera::Keep::None => v.clone(),
                    _ => {
                        let i: usize = h.id["c-".len()..].parse().unwrap();
                        let Tokens::F16 { data, .. } = centroid_doc(i).tokens else { unreachable!() };
                        data.iter().map(|x| x.to_f32()).collect()
                    }
                };
                let best = v
                    .chunks(4)
                    .map(|t| t.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>())
                    .fold(f64::NEG_INFINITY, f64::max);
                assert!((h.score as f64 - best).abs() < 1e-4, "{name} {}: {} vs {best}", h.id, h.score);
            }
            let mut all = tessera::SearchParams::new(47).with_candidates(1000);
            if config.screens() {
                all = all.with_rerank(1000);
            }
            assert_eq!(c.search_with(&query, &all).unwrap(), exact, "{name}");
        }
        assert_eq!(names(), before, "{name}: opening and searching rewrite nothing");
    }
}

/// Residual segments damaged where only the cross-file checks can tell (the
/// checksums made right): a code past the codebook's centroids, a header
/// naming another codebook; and a codebook whose tables are damaged or
/// whose bits no longer fit its sections.
#[test]
fn damaged_v3_residual_files_are_refused_with_file_and_offset() {
    let fix_header = |b: &mut [u8], crc_at: usize, len: usize| {
        b[crc_at..crc_at + 4].fill(0);
        let crc = crc32fast_hash(&b[..len]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    };
    type Damage = fn(&mut Vec<u8>) -> usize;
    let code_past_k: Damage = |b| {
        let at = le(b, 64, 8); // TOKENS: the first row's code
        b[at..at + 2].copy_from_slice(&16u16.to_le_bytes());
        let crc = crc32fast_hash(section(b, 64, 0));
        b[64 + 16..64 + 20].copy_from_slice(&crc.to_le_bytes());
        at
    };
    let other_codebook: Damage = |b| {
        b[52] ^= 1;
        52
    };
    for (what, damage) in [("a code past k", code_past_k), ("another codebook", other_codebook)] {
        let (tmp, cdir) = copy_of("v3.0", "db-residual2");
        let seg = file_with_prefix(&cdir, "seg-");
        let mut b = std::fs::read(&seg).unwrap();
        let want = damage(&mut b);
        fix_header(&mut b, 44, 512);
        std::fs::write(&seg, b).unwrap();
        match Database::open(tmp.path()) {
            Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset as usize), (seg, want), "{what}"),
            other => panic!("{what}: expected Corrupted, got {other:?}"),
        }
    }
    // The kept copy: opened without reading its rows; a flipped byte of a
    // document's rows is refused when they are read, at their offset.
    let (tmp, cdir) = copy_of("v3.0", "db-residual2-keep");
    let keep = file_with_prefix(&cdir, "keep-");
    let mut b = std::fs::read(&keep).unwrap();
    let at = le(&b, 128, 8); // TOKENS: the first document's rows
    b[at + 5] ^= 0x08;
    std::fs::write(&keep, b).unwrap();
    let db = Database::open(tmp.path()).unwrap();
    let c = db.collection("golden").unwrap();
    match c.get("c-0") {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset as usize), (keep, at)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(c.get("c-1").unwrap().is_some(), "the other documents read");
    drop((c, db));
    // A copy naming another segment's rows (its header checksum made right) is refused on open.
    let (tmp, cdir) = copy_of("v3.0", "db-residual2-keep");
    let keep = file_with_prefix(&cdir, "keep-");
    let mut b = std::fs::read(&keep).unwrap();
    b[56] ^= 1;
    fix_header(&mut b, 44, 384);
    std::fs::write(&keep, b).unwrap();
    match Database::open(tmp.path()).and_then(|db| db.collection("golden")) {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (keep, 56)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // A residual collection whose current codebook has no tables of its bits
    // (another collection's, of 4 bits) is refused when opened, naming the codebook.
    let (tmp, cdir) = copy_of("v3.0", "db-residual2");
    let cbk = file_with_prefix(&cdir, "cbk-");
    let (_other, odir) = copy_of("v3.0", "db-residual4");
    std::fs::copy(file_with_prefix(&odir, "cbk-"), &cbk).unwrap();
    match Database::open(tmp.path()).and_then(|db| db.collection("golden")) {
        Err(Error::Corrupted { file, offset, .. }) => assert_eq!((file, offset), (cbk, 68)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // The codebook: a flipped weight (its checksum), or 4 bits where its sections hold 2.
    for bits_too in [false, true] {
        let (tmp, cdir) = copy_of("v3.0", "db-residual2");
        let cbk = file_with_prefix(&cdir, "cbk-");
        let mut b = std::fs::read(&cbk).unwrap();
        if bits_too {
            b[68] = 4;
            fix_header(&mut b, 60, 384);
        } else {
            let at = le(&b, 128 + 32 * 4, 8);
            b[at + 1] ^= 0x20;
        }
        std::fs::write(&cbk, b).unwrap();
        match Database::open(tmp.path()) {
            Err(Error::Corrupted { file, .. }) => assert_eq!(file, cbk, "bits changed: {bits_too}"),
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }
}
