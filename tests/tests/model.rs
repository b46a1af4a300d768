//! Model-based test: random sequences of upsert / delete / flush / compact /
//! reopen / search run against the engine and against an in-memory reference
//! that computes MaxSim naively (f64); after every step the two must agree.
//! Each sequence runs on an f16 collection, an int8 collection with binary
//! screening codes (the reference quantises independently) and a residual2
//! collection with a kept f16 copy (what exact scores and `get` read).

use proptest::prelude::*;
use std::collections::BTreeMap;
use tessera::{Database, Tokens};
use tessera_e2e::{DIM, KINDS, Kind, doc_for, stored_f16, stored_values, tokens_for};
use tessera_kernels::reference::maxsim_f64;

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(u8, u64)>),
    Delete(Vec<u8>),
    Flush,
    Compact,
    Reopen,
    Search(u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec((0u8..24, 0u64..1000), 1..6).prop_map(Op::Upsert),
        2 => prop::collection::vec(0u8..24, 1..4).prop_map(Op::Delete),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        2 => (0u64..1000, 1usize..8).prop_map(|(s, k)| Op::Search(s, k)),
    ]
}

fn f32s(t: &[tessera::f16]) -> Vec<f32> {
    t.iter().map(|x| x.to_f32()).collect()
}

fn run(ops: Vec<Op>, kind: Kind) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let storage = kind.values();
    let mut config = kind.config();
    let config_screens = config.screens();
    config.memtable_bytes = 4 << 10; // automatic flushes
    config.max_segments = 2; // automatic merges
    let mut db = Some(Database::open(dir.path()).unwrap());
    db.as_ref().unwrap().create_collection("m", config).unwrap();
    let mut model: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        let c = db.as_ref().unwrap().collection("m").unwrap();
        match &op {
            Op::Upsert(items) => {
                // Later duplicates in one batch are rejected by the engine; keep the first.
                let mut seen = std::collections::BTreeSet::new();
                let items: Vec<_> = items.iter().filter(|(i, _)| seen.insert(*i)).collect();
                let docs: Vec<_> = items.iter().map(|(i, v)| doc_for(&format!("k{i}"), *v)).collect();
                c.upsert(&docs).unwrap();
                for (i, v) in items {
                    model.insert(format!("k{i}"), *v);
                }
            }
            Op::Delete(ids) => {
                let ids: std::collections::BTreeSet<String> = ids.iter().map(|i| format!("k{i}")).collect();
                let ids: Vec<String> = ids.into_iter().collect();
                let existed = c.delete(&ids).unwrap();
                let want = ids.iter().filter(|id| model.remove(*id).is_some()).count();
                prop_assert_eq!(existed, want);
            }
            Op::Flush => c.flush().unwrap(),
            Op::Compact => c.compact().unwrap(),
            Op::Reopen => {
                drop(c);
                drop(db.take()); // release the lock before reopening
                db = Some(Database::open(dir.path()).unwrap());
            }
            Op::Search(seed, k) => {
                let q = f32s(&tokens_for("q", *seed));
                let got = c.search(&Tokens::F32 { data: q.clone(), dim: DIM }, *k).unwrap();
                let stored = |id: &str, v: u64| stored_values(&tokens_for(id, v), storage);
                let mut want: Vec<f64> = model.iter().map(|(id, v)| maxsim_f64(&q, &stored(id, *v), DIM)).collect();
                want.sort_by(|a, b| b.total_cmp(a));
                want.truncate(*k);
                prop_assert_eq!(got.len(), want.len());
                for (h, w) in got.iter().zip(&want) {
                    // Ranked scores agree, and each hit's score is its document's true MaxSim.
                    prop_assert!((h.score as f64 - w).abs() < 1e-3, "{} vs {}", h.score, w);
                    let v = model.get(&h.id).expect("hit is a live document");
                    let own = maxsim_f64(&q, &stored(&h.id, *v), DIM);
                    prop_assert!((h.score as f64 - own).abs() < 1e-3);
                }
                // Screened to fewer than the documents (codes, or residual rows
                // before a kept copy): still live documents at their true
                // MaxSim, best first (which ones depends on the screening).
                if config_screens {
                    let p = tessera::SearchParams::new(*k).with_rerank((*k).max(2));
                    let few = c.search_with(&Tokens::F32 { data: q.clone(), dim: DIM }, &p).unwrap();
                    prop_assert_eq!(few.len(), got.len());
                    prop_assert!(few.windows(2).all(|w| w[0].score >= w[1].score));
                    for h in &few {
                        let v = model.get(&h.id).expect("hit is a live document");
                        let own = maxsim_f64(&q, &stored(&h.id, *v), DIM);
                        prop_assert!((h.score as f64 - own).abs() < 1e-3, "{} {} vs {own}", h.id, h.score);
                    }
                }
            }
        }
        let c = db.as_ref().unwrap().collection("m").unwrap();
        prop_assert_eq!(c.len(), model.len(), "after {:?}", op);
        for i in 0..24 {
            let id = format!("k{i}");
            let got = c.get(&id).unwrap();
            match model.get(&id) {
                None => prop_assert!(got.is_none(), "{} should be absent after {:?}", id, op),
                Some(v) => {
                    let d = got.expect("present");
                    prop_assert_eq!(&d.tokens, &stored_f16(&tokens_for(&id, *v), storage));
                    prop_assert_eq!(d.text, Some(format!("{id} v{v}")));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_reference_model(ops in prop::collection::vec(op(), 1..40)) {
        for kind in KINDS {
            run(ops.clone(), kind)?;
        }
    }
}
