//! Residual storage (`residual2`, `residual4`) in the engine, checked from
//! the files: every stored token is the centroid its segment row names plus,
//! per dimension, the weight of the bucket its residual to that centroid
//! falls in (recomputed here from the tokens given and the codebook file's
//! cutoffs), and searches score those values as a naive f64 MaxSim does —
//! through a seal before the codebook (f16), the seal that trains it, WAL
//! replay, merges that copy rows or code them again, a retraining that
//! leaves segments on their codebook until merged, and reopening.

mod common;

use common::{Rng, files_named};
use std::collections::BTreeMap;
use std::path::Path;
use tessera::{CentroidParams, CollectionConfig, Database, Document, IndexConfig, Screening, SearchParams, Tokens};
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
/// before), the codebook it is coded with, and the values stored.
#[derive(Clone)]
struct Known {
    source: Vec<f32>,
    codebook: Option<u32>,
    stored: Vec<f32>,
}

/// The model: by live document id.
#[derive(Default)]
struct Model(BTreeMap<String, Known>);

impl Model {
    fn add(&mut self, id: String, given: &[f32]) {
        let v: Vec<f32> = given.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        self.0.insert(id, Known { source: v.clone(), codebook: None, stored: v });
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
                    known.source = known.stored.clone();
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
    for (id, k) in &model.0 {
        let got = c.get(id).unwrap().unwrap();
        let want: Vec<f16> = k.stored.iter().map(|&v| f16::from_f32(v)).collect();
        assert_eq!(got.tokens, want, "{when}: get({id}) gives the stored values");
    }
    assert_eq!(c.len(), model.0.len(), "{when}");
    let mut rng = Rng(99);
    for qi in 0..4 {
        let Tokens::F32 { data: q, .. } = rng.tokens(2 + qi, DIM) else { unreachable!() };
        let mut want: Vec<(f64, &str)> =
            model.0.iter().map(|(id, k)| (maxsim_f64(&q, &k.stored, DIM), id.as_str())).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let query = Tokens::F32 { data: q.clone(), dim: DIM };
        let mut all = SearchParams::new(10).with_candidates(100_000);
        if c.config().screening != Screening::None {
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
    for (storage, screening) in [(TokenType::Residual2, Screening::None), (TokenType::Residual4, Screening::Binary)] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(5);
        let mut model = Model::default();
        {
            let db = Database::open(dir.path()).unwrap();
            let c = db.create_collection("c", config(storage, screening)).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", config(TokenType::Residual4, Screening::None)).unwrap();
    let mut rng = Rng(3);
    let mut model = Model::default();
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
fn residual_storage_needs_a_centroids_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for index in [None, Some(IndexConfig::pooled())] {
        let cfg = CollectionConfig { storage: TokenType::Residual2, index, ..CollectionConfig::new(DIM) };
        let e = db.create_collection("c", cfg).unwrap_err().to_string();
        assert!(e.contains("residual2") && e.contains("centroids"), "{e}");
    }
}
