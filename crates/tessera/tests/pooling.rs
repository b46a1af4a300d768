//! Token pooling (`pool_factor`): what a pooled collection stores is the
//! pooling of what it was given (`tessera::pool_tokens`, itself checked
//! against a textbook greedy Ward), searches score those stored values as a
//! naive f64 MaxSim does, and the count given survives the WAL, a seal, a
//! merge and a reopen.

mod common;

use common::Rng;
use tessera::{CollectionConfig, Database, Document, Settings, Tokens, UpsertOptions, f16};
use tessera_kernels::reference::maxsim_f64;

/// Unit-length tokens (as a ColBERT model gives), rounded to f16 as the WAL keeps them.
fn unit_tokens(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let Tokens::F32 { mut data, .. } = rng.tokens(n, dim) else { unreachable!() };
    for r in data.chunks_mut(dim) {
        let l = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        r.iter_mut().for_each(|v| *v = f16::from_f32(*v / l).to_f32());
    }
    data
}

/// What a collection stores for `given` pooled by `f`: f16 of the pooled values.
fn stored(given: &[f32], dim: usize, f: u32) -> Vec<f32> {
    tessera::pool_tokens(given, dim, f).iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

#[test]
fn a_pooled_collection_stores_and_scores_the_pooled_tokens() {
    let dim = 16;
    let dir = tempfile::tempdir().unwrap();
    let config = CollectionConfig { pool_factor: 2, index: None, ..CollectionConfig::new(dim) };
    let mut rng = Rng(7);
    // id → (given values, the factor it was upserted with)
    let mut given: std::collections::BTreeMap<String, (Vec<f32>, u32)> = Default::default();
    {
        let db = Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", config).unwrap();
        for b in 0..3 {
            let docs: Vec<(Document, Vec<f32>)> = (0..40)
                .map(|i| {
                    let v = unit_tokens(&mut rng, 1 + (i * 11 + b) % 37, dim);
                    (Document::new(format!("d{b}-{i}"), Tokens::F32 { data: v.clone(), dim }), v)
                })
                .collect();
            // Batch 1 asks for its own factor: 3; batch 2 for none (1).
            let f = [None, Some(3), Some(1)][b];
            let batch: Vec<Document> = docs.iter().map(|(d, _)| d.clone()).collect();
            c.upsert_with(&batch, &UpsertOptions { pool_factor: f }).unwrap();
            for (d, v) in docs {
                given.insert(d.id, (v, f.unwrap_or(2)));
            }
            if b == 0 {
                c.flush().unwrap(); // one segment; the rest in the memtable and WAL
            }
        }
        c.delete(&["d0-4", "d1-9"]).unwrap();
        given.remove("d0-4");
        given.remove("d1-9");
        // Closed without a flush: batches 1 and 2 come back from the WAL.
    }
    let db = Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    let check = |when: &str| {
        let st = c.stats();
        let n_given: usize = given.values().map(|(v, _)| v.len() / dim).sum();
        let n_stored: usize = given.values().map(|(v, f)| tessera::pooled_len(v.len() / dim, *f)).sum();
        assert_eq!((st.given_tokens, st.tokens), (n_given, n_stored), "{when}: stats");
        for (id, (v, f)) in &given {
            let got = c.get(id).unwrap().unwrap();
            let want: Vec<f16> = stored(v, dim, *f).into_iter().map(f16::from_f32).collect();
            assert_eq!(got.tokens, want, "{when}: {id} stores its tokens pooled by {f}");
            assert_eq!(got.given_tokens, v.len() / dim, "{when}: {id}");
        }
        let mut rng = Rng(99);
        for qi in 0..5 {
            let q = unit_tokens(&mut rng, 2 + qi, dim);
            let mut want: Vec<(f64, &str)> =
                given.iter().map(|(id, (v, f))| (maxsim_f64(&q, &stored(v, dim, *f), dim), id.as_str())).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
            let hits = c.search(&Tokens::F32 { data: q.clone(), dim }, 10).unwrap();
            for (h, w) in hits.iter().zip(&want) {
                assert_eq!(h.id, w.1, "{when}");
                assert!((h.score as f64 - w.0).abs() < 1e-3, "{when}: {} vs {}", h.score, w.0);
            }
        }
    };
    check("after the WAL's replay");
    c.flush().unwrap();
    check("sealed");
    c.compact().unwrap();
    assert_eq!(c.stats().segments, 1);
    check("merged");
}

#[test]
fn pool_factor_is_a_setting_checked_at_creation_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let c = db.create_collection("c", CollectionConfig::new(4)).unwrap();
    assert_eq!(Settings::of(&c.config()).pool_factor, Some(1));
    for bad in [0, 65] {
        let e = c.update_settings(&Settings { pool_factor: Some(bad), ..Settings::default() }).unwrap_err();
        assert!(e.to_string().contains("pool_factor must be in 1..=64"), "{e}");
        let e = c.upsert_with(&[], &UpsertOptions { pool_factor: Some(bad as u32) }).unwrap_err();
        assert!(e.to_string().contains("pool_factor must be in 1..=64"), "{e}");
    }
    c.update_settings(&Settings { pool_factor: Some(4), ..Settings::default() }).unwrap();
    let doc = Document::new("a", Tokens::from_rows(&[[1.0, 0.0, 0.0, 0.0]; 9]).unwrap());
    c.upsert(&[doc]).unwrap();
    let got = c.get("a").unwrap().unwrap();
    assert_eq!((got.n_tokens, got.given_tokens), (3, 9));
    drop(c);
    drop(db);
    // The setting is kept with the collection.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.collection("c").unwrap().config().pool_factor, 4);
}
