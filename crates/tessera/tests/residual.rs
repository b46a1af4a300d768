//! Residual storage (`residual2`, `residual4`) in the engine, checked from
//! the files: every stored token is the centroid its segment row names plus,
//! per dimension, the weight of the bucket its residual to that centroid
//! falls in (recomputed here from the tokens given and the codebook file's
//! cutoffs), and searches score those values as a naive f64 MaxSim does —
//! through a seal before the codebook (f16), the seal that trains it, WAL
//! replay, merges that copy rows or code them again, a retraining that
//! leaves segments on their codebook until merged, and reopening. With a
//! kept copy (`keep`), exact scores and `get` read the copy (f16 as given,
//! or int8 by a naive per-token quantisation), a search's screened
//! candidates are scored from it, and a token coded again is coded from it.

mod common;

use common::{Rng, files_named};
use std::collections::BTreeMap;
use std::path::Path;
use tessera::{
    CentroidParams, CollectionConfig, Database, Document, IndexConfig, Keep, Screening, SearchParams, Tokens,
};
use tessera::{TokenType, f16};
use tessera_format::segment::SegmentLayout;
use tessera_index::centroids::CodebookLayout;
use tessera_kernels::reference::maxsim_f64;

const DIM: usize = 16;

fn config(storage: TokenType, screening: Screening) -> CollectionConfig {
    let p = CentroidParams { k: 16, min_train_tokens: 256, ..Default::default() };
    CollectionConfig {
        storage,
        screening,
        index: Some(IndexConfig::Centroids { centroids: p }),
        ..CollectionConfig::new(DIM)
    }
}

/// A file's bytes in 8-byte-aligned storage (as a memory map is).
fn aligned(path: &Path) -> (Vec<u64>, usize) {
    let bytes = std::fs::read(path).unwrap();
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(&bytes);
    (v, bytes.len())
}

/// A codebook file's centroids, cutoffs, weights and bits.
struct Book {
    centroids: Vec<f32>,
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    bits: usize,
}

/// What the test knows of a document: the values it was last coded from
/// (the f16 values given, or when its codebook changed, the values it had
/// before — its kept copy's when there is one), the codebook it is coded
/// with, the values stored, and its kept copy's values.
#[derive(Clone)]
struct Known {
    source: Vec<f32>,
    codebook: Option<u32>,
    stored: Vec<f32>,
    kept: Vec<f32>,
}

impl Known {
    /// What exact scores and `get` read: the kept copy of residual rows, else the stored values.
    fn exact(&self, keep: Keep) -> &[f32] {
        if keep != Keep::None && self.codebook.is_some() { &self.kept } else { &self.stored }
    }
}

/// The model: by live document id, and the collection's kept copy.
#[derive(Default)]
struct Model(BTreeMap<String, Known>, Keep);

/// Naive per-token int8 (scale = max |x| / 127, code = round(x / scale)), dequantised.
fn int8_values(v: &[f32]) -> Vec<f32> {
    v.chunks(DIM)
        .flat_map(|t| {
            let scale = t.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            t.iter().map(move |&x| if scale == 0.0 { 0.0 } else { (x / scale).round().clamp(-127.0, 127.0) * scale })
        })
        .collect()
}

impl Model {
    fn add(&mut self, id: String, given: &[f32]) {
        let v: Vec<f32> = given.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let kept = if self.1 == Keep::Int8 { int8_values(&v) } else { v.clone() };
        self.0.insert(id, Known { source: v.clone(), codebook: None, stored: v, kept });
    }

    fn remove(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// Reads every segment file: each live document's stored values (the
    /// newest file holding it), each residual row checked against a naive
    /// coding of what it was coded from, which changes only with its
    /// codebook. Returns the segments' token types, newest first.
    fn read(&mut self, dir: &Path) -> Vec<TokenType> {
        let cdir = dir.join("collections/c");
        let mut books = BTreeMap::new();
        for f in files_named(&cdir, "cbk-") {
            let (v, n) = aligned(&f);
            let b = &bytemuck::cast_slice::<u64, u8>(&v)[..n];
            let l = CodebookLayout::parse(b).unwrap();
            let t = l.residual_tables(b).expect("a residual collection's codebook has tables");
            let book = Book {
                centroids: l.centroids(b).to_vec(),
                cutoffs: t.cutoffs.to_vec(),
                weights: t.weights.to_vec(),
                bits: t.bits as usize,
            };
            books.insert(l.crc, book);
        }
        let (mut seen, mut types) = (std::collections::BTreeSet::new(), Vec::new());
        // A replaced or deleted row's id may be in an older file too: each
        // id is read from the newest file that holds it.
        for f in files_named(&cdir, "seg-").iter().rev() {
            let (v, n) = aligned(f);
            let b = &bytemuck::cast_slice::<u64, u8>(&v)[..n];
            let l = SegmentLayout::parse(b).unwrap();
            types.push(l.token_type);
            for d in 0..l.n_docs {
                let id = l.id(b, d).to_string();
                let Some(known) = self.0.get_mut(&id).filter(|_| seen.insert(id.clone())) else { continue };
                let rows = l.doc_rows(b, d).rows;
                if l.codebook != known.codebook {
                    // First coded from the f16 rows; coded again from the
                    // kept copy, or without one from the values it had.
                    if known.codebook.is_some() {
                        known.source = if self.1 == Keep::None { known.stored.clone() } else { known.kept.clone() };
                    }
                    known.codebook = l.codebook;
                }
                known.stored = match l.codebook {
                    None => bytemuck::cast_slice::<u8, f16>(rows).iter().map(|x| x.to_f32()).collect(),
                    Some(identity) => decode_checked(&books[&identity], l.token_type, rows, &known.source, &id),
                };
            }
        }
        types
    }
}

/// Residual rows' values, each bucket checked to be the count of its
/// dimension's cutoffs at or below the residual of `source` to the row's centroid.
fn decode_checked(book: &Book, t: TokenType, rows: &[u8], source: &[f32], id: &str) -> Vec<f32> {
    let (nb, rb) = (1usize << book.bits, t.row_bytes(DIM));
    let mut vals = Vec::new();
    for (i, row) in rows.chunks(rb).enumerate() {
        let code = u16::from_le_bytes([row[0], row[1]]) as usize;
        for k in 0..DIM {
            let bucket = (row[2 + k * book.bits / 8] >> (k * book.bits % 8)) as usize & (nb - 1);
            let c = book.centroids[code * DIM + k];
            let r = source[i * DIM + k] - c;
            let naive = book.cutoffs[k * (nb - 1)..(k + 1) * (nb - 1)].iter().filter(|&&u| u <= r).count();
            assert_eq!(bucket, naive, "{id} token {i} dim {k}: the bucket of its residual");
            vals.push(c + book.weights[k * nb + bucket]);
        }
    }
    vals
}

/// Exact and all-candidate searches rank and score the stored values as a
/// naive f64 MaxSim does (memtable documents: their f16 values), and `get`
/// gives them. Returns the segments' token types, newest first.
fn check(c: &tessera::Collection, dir: &Path, model: &mut Model, when: &str) -> Vec<TokenType> {
    let types = model.read(dir);
    let keep = model.1;
    let kept_files = files_named(&dir.join("collections/c"), "keep-").len();
    let residual_segments = types.iter().filter(|t| t.is_residual()).count();
    assert_eq!(
        kept_files,
        if keep == Keep::None { 0 } else { residual_segments },
        "{when}: a copy per residual segment"
    );
    for (id, k) in &model.0 {
        let got = c.get(id).unwrap().unwrap();
        let want: Vec<f16> = k.exact(keep).iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(got.tokens, want, "{when}: get({id}) gives the values exact scores read");
    }
    assert_eq!(c.len(), model.0.len(), "{when}");
    let mut rng = Rng(99);
    for qi in 0..4 {
        let Tokens::F32 { data: q, .. } = rng.tokens(2 + qi, DIM) else { unreachable!() };
        let mut want: Vec<(f64, &str)> =
            model.0.iter().map(|(id, k)| (maxsim_f64(&q, k.exact(keep), DIM), id.as_str())).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let query = Tokens::F32 { data: q.clone(), dim: DIM };
        let mut all = SearchParams::new(10).with_candidates(100_000);
        if c.config().screens() {
            all = all.with_rerank(100_000);
        }
        for p in [SearchParams::exact(10), all] {
            let hits = c.search_with(&query, &p).unwrap();
            assert_eq!(hits.len(), 10);
            for (h, w) in hits.iter().zip(&want) {
                assert_eq!(h.id, w.1, "{when}: {p:?}");
                assert!((h.score as f64 - w.0).abs() < 1e-4 * (1.0 + w.0.abs()), "{when}: {} vs {}", h.score, w.0);
            }
        }
        // Screened to a few: each is scored exactly (from the copy), best first.
        if keep != Keep::None {
            let few = c.search_with(&query, &SearchParams::new(5).with_candidates(40).with_rerank(12)).unwrap();
            assert_eq!(few.len(), 5);
            assert!(few.windows(2).all(|w| w[0].score >= w[1].score), "{when}");
            for h in &few {
                let w = maxsim_f64(&q, model.0[&h.id].exact(keep), DIM);
                assert!((h.score as f64 - w).abs() < 1e-4 * (1.0 + w.abs()), "{when}: {} {} vs {w}", h.id, h.score);
            }
        }
    }
    types
}

fn batch(rng: &mut Rng, name: &str, n: usize, centres: &[Vec<f32>], model: &mut Model) -> Vec<Document> {
    (0..n)
        .map(|i| {
            let t = rng.tokens_near(2 + i % 11, DIM, centres);
            let Tokens::F32 { data, .. } = &t else { unreachable!() };
            model.add(format!("{name}-{i}"), data);
            Document::new(format!("{name}-{i}"), t)
        })
        .collect()
}

#[test]
fn residual_collections_store_and_score_their_coded_tokens() {
    let kinds = [
        (TokenType::Residual2, Screening::None, Keep::None),
        (TokenType::Residual4, Screening::Binary, Keep::None),
        (TokenType::Residual2, Screening::None, Keep::F16),
        (TokenType::Residual4, Screening::None, Keep::Int8),
    ];
    for (storage, screening, keep) in kinds {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(5);
        let mut model = Model(BTreeMap::new(), keep);
        {
            let db = Database::open(dir.path()).unwrap();
            let c = db.create_collection("c", CollectionConfig { keep, ..config(storage, screening) }).unwrap();
            // Below min_train_tokens: sealed as f16, no codebook.
            c.upsert(&batch(&mut rng, "a", 10, &[], &mut model)).unwrap();
            c.flush().unwrap();
            assert_eq!(check(&c, dir.path(), &mut model, "before a codebook"), [TokenType::F16]);
            // The seal that trains the codebook writes its segment as residual.
            c.upsert(&batch(&mut rng, "b", 80, &[], &mut model)).unwrap();
            c.flush().unwrap();
            assert_eq!(files_named(&dir.path().join("collections/c"), "cbk-").len(), 1);
            let types = check(&c, dir.path(), &mut model, "trained");
            assert_eq!(types.iter().filter(|t| **t == storage).count(), 1, "{types:?}");
            assert_eq!(types.len(), 2, "the f16 copy of the training segment is gone: {types:?}");
            // Sealed with the codebook: coded straight away.
            c.upsert(&batch(&mut rng, "c", 40, &[], &mut model)).unwrap();
            c.flush().unwrap();
            c.delete(&["b-3", "c-7"]).unwrap();
            model.remove("b-3");
            model.remove("c-7");
            c.upsert(&batch(&mut rng, "m", 12, &[], &mut model)).unwrap(); // the WAL only
        }
        let db = Database::open(dir.path()).unwrap();
        let c = db.collection("c").unwrap();
        check(&c, dir.path(), &mut model, "reopened, the WAL replayed");
        c.flush().unwrap();
        c.compact().unwrap();
        assert_eq!(c.stats().segments, 1);
        assert_eq!(check(&c, dir.path(), &mut model, "merged"), [storage]);
        let st = c.stats();
        assert_eq!(st.bytes_per_token, storage.row_bytes(DIM) + screening.code_words(DIM) * 8);
    }
}

#[test]
fn a_retrained_codebook_leaves_residual_segments_on_theirs_until_merged() {
    for keep in [Keep::None, Keep::F16, Keep::Int8] {
        retrained(keep);
    }
}

/// Coded again from the kept copy when there is one: the model checks each
/// bucket against the values it was coded from.
fn retrained(keep: Keep) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c =
        db.create_collection("c", CollectionConfig { keep, ..config(TokenType::Residual4, Screening::None) }).unwrap();
    let mut rng = Rng(3);
    let mut model = Model(BTreeMap::new(), keep);
    let near: Vec<Vec<f32>> = (0..8).map(|_| (0..DIM).map(|_| rng.f()).collect()).collect();
    let far: Vec<Vec<f32>> =
        (0..8).map(|_| (0..DIM).map(|d| rng.f() + if d == 0 { 6.0 } else { 0.0 }).collect()).collect();
    c.upsert(&batch(&mut rng, "a", 60, &near, &mut model)).unwrap();
    c.flush().unwrap();
    c.upsert(&batch(&mut rng, "keep", 60, &near, &mut model)).unwrap();
    c.flush().unwrap();
    let first = files_named(&dir.path().join("collections/c"), "cbk-");
    check(&c, dir.path(), &mut model, "one codebook");
    // Drifted tokens, merged as segments are sealed (at most 2 kept): a
    // merge of them retrains the codebook; what it did not merge stays on
    // the first (every state checked: the model follows each coding).
    let max_segments = |n| tessera::Settings { max_segments: Some(n), ..Default::default() };
    let mut both = false;
    for b in ["x", "y", "z", "w"] {
        c.upsert(&batch(&mut rng, b, 80, &far, &mut model)).unwrap();
        c.flush().unwrap();
        check(&c, dir.path(), &mut model, &format!("{b} sealed"));
        c.update_settings(&max_segments(2)).unwrap();
        c.flush().unwrap();
        c.update_settings(&max_segments(16)).unwrap();
        check(&c, dir.path(), &mut model, &format!("{b} merged"));
        let books = files_named(&dir.path().join("collections/c"), "cbk-");
        both |= books.len() == 2 && books.iter().any(|b| first.contains(b));
    }
    assert!(both, "a merge of drifted tokens trained a new codebook while a segment kept the first");
    c.compact().unwrap();
    assert_eq!(files_named(&dir.path().join("collections/c"), "cbk-").len(), 1, "merged: one codebook in use");
    check(&c, dir.path(), &mut model, "compacted");
    let n_given: usize = model.0.values().map(|k| k.stored.len() / DIM).sum();
    assert_eq!(c.stats().tokens, n_given, "no token is lost by coding again");
    drop(c);
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    check(&db.collection("c").unwrap(), dir.path(), &mut model, "reopened");
}

#[test]
fn residual_storage_needs_a_centroids_index_and_keep_a_residual_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for index in [None, Some(IndexConfig::pooled())] {
        let cfg = CollectionConfig { storage: TokenType::Residual2, index, ..CollectionConfig::new(DIM) };
        let e = db.create_collection("c", cfg).unwrap_err().to_string();
        assert!(e.contains("residual2") && e.contains("centroids"), "{e}");
    }
    let cfg = CollectionConfig { keep: Keep::F16, ..config(TokenType::Int8, Screening::None) };
    let e = db.create_collection("c", cfg).unwrap_err().to_string();
    assert!(e.contains("keep f16 applies to residual storage"), "{e}");
    let cfg = CollectionConfig { keep: Keep::Int8, ..config(TokenType::Residual2, Screening::Binary) };
    let e = db.create_collection("c", cfg).unwrap_err().to_string();
    assert!(e.contains("keep int8") && e.contains("screening binary"), "{e}");
    // rerank applies to a kept copy's screening (and not without one).
    let c = db
        .create_collection("k", CollectionConfig { keep: Keep::F16, ..config(TokenType::Residual2, Screening::None) });
    let q = Tokens::F32 { data: vec![0.5; DIM], dim: DIM };
    assert!(c.unwrap().search_with(&q, &SearchParams::new(3).with_rerank(8)).is_ok());
    let c = db.create_collection("n", config(TokenType::Residual2, Screening::None)).unwrap();
    let e = c.search_with(&q, &SearchParams::new(3).with_rerank(8)).unwrap_err().to_string();
    assert!(e.contains("rerank applies"), "{e}");
}

/// Kept copies are files of the collection like the others: a backup holds
/// them and a restored database reads them; one no manifest names (a seal
/// that crashed) is removed on open; a backup or a restore of a damaged copy
/// is refused (opening does not read the rows, so they verify them).
#[test]
fn kept_copies_are_backed_up_and_leftovers_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model(BTreeMap::new(), Keep::Int8);
    let mut rng = Rng(9);
    let cdir = dir.path().join("db/collections/c");
    {
        let db = Database::open(dir.path().join("db")).unwrap();
        let cfg = CollectionConfig { keep: Keep::Int8, ..config(TokenType::Residual4, Screening::None) };
        let c = db.create_collection("c", cfg).unwrap();
        c.upsert(&batch(&mut rng, "a", 80, &[], &mut model)).unwrap();
        c.flush().unwrap();
        let r = tessera::backup(&dir.path().join("db"), &dir.path().join("bk")).unwrap();
        assert_eq!(r.collections[0].documents, 80);
    }
    tessera::restore(&dir.path().join("bk"), &dir.path().join("restored")).unwrap();
    let restored = Database::open(dir.path().join("restored")).unwrap();
    let c = restored.collection("c").unwrap();
    for (id, k) in &model.0 {
        let want: Vec<f16> = k.kept.iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(c.get(id).unwrap().unwrap().tokens, want, "{id}: the restored copy");
    }
    drop((c, restored));
    for leftover in ["keep-0000000000000999.tkeep", "keep-0000000000000998.tmp"] {
        std::fs::write(cdir.join(leftover), b"half written").unwrap();
    }
    drop(Database::open(dir.path().join("db")).unwrap());
    assert_eq!(files_named(&cdir, "keep-").len(), 1, "leftovers removed, the copy kept");
    let keep = files_named(&cdir, "keep-").pop().unwrap();
    let mut b = std::fs::read(&keep).unwrap();
    let at = u64::from_le_bytes(b[128..136].try_into().unwrap()) as usize;
    b[at + 20] ^= 1;
    std::fs::write(&keep, b).unwrap();
    let refused = |e: tessera::Error| matches!(&e, tessera::Error::Corrupted { file, .. } if file.file_name() == keep.file_name());
    assert!(refused(tessera::backup(&dir.path().join("db"), &dir.path().join("bk2")).unwrap_err()), "backup");
    let bk = dir.path().join("bk/collections/c");
    std::fs::copy(&keep, bk.join(keep.file_name().unwrap())).unwrap();
    assert!(refused(tessera::restore(&dir.path().join("bk"), &dir.path().join("r2")).unwrap_err()), "restore");
}

/// A kept copy is opened without reading its rows; a damaged document is
/// refused, naming the file and the offset of its rows, when a search, a
/// `get` or a merge reads it — the others still read.
#[test]
fn a_damaged_kept_copy_is_refused_when_its_rows_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model(BTreeMap::new(), Keep::F16);
    let mut rng = Rng(8);
    {
        let db = Database::open(dir.path()).unwrap();
        let cfg = CollectionConfig { keep: Keep::F16, ..config(TokenType::Residual2, Screening::None) };
        let c = db.create_collection("c", cfg).unwrap();
        c.upsert(&batch(&mut rng, "a", 80, &[], &mut model)).unwrap();
        c.flush().unwrap();
    }
    let keep = files_named(&dir.path().join("collections/c"), "keep-").pop().unwrap();
    let mut b = std::fs::read(&keep).unwrap();
    let at = u64::from_le_bytes(b[128..136].try_into().unwrap()) as usize; // TOKENS: document row 0
    b[at + 3] ^= 0x40;
    std::fs::write(&keep, b).unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    let is_damage = |e: tessera::Error| matches!(&e, tessera::Error::Corrupted { file, offset, .. } if *file == keep && *offset == at as u64);
    let first = c.scan(None, None, 1, false).unwrap().documents[0].id.clone();
    assert!(is_damage(c.get(&first).unwrap_err()), "get of the damaged document");
    let other = c.scan(None, Some(&first), 1, false).unwrap().documents[0].id.clone();
    assert!(c.get(&other).unwrap().is_some(), "another document still reads");
    let q = Tokens::F32 { data: vec![0.5; DIM], dim: DIM };
    assert!(is_damage(c.search_with(&q, &SearchParams::exact(5)).unwrap_err()), "exact search reads every copy");
    c.upsert(&batch(&mut rng, "b", 80, &[], &mut model)).unwrap();
    c.flush().unwrap();
    assert!(is_damage(c.compact().unwrap_err()), "a merge reads the copy");
}
