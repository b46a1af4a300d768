//! The `tessera` binary end to end: demo, ingest → info → search on a
//! generated bulk-format folder (checked against a naive f64 MaxSim), and
//! clear errors for malformed input.

use std::path::Path;
use tessera::Tokens;
use tessera_cli::synth;
use tessera_kernels::reference::maxsim_f64;

mod common;
use common::{json_lines, ok, tessera};

fn f32s(t: &Tokens) -> Vec<f32> {
    match t {
        Tokens::F32 { data, .. } => data.iter().map(|&x| tessera::f16::from_f32(x).to_f32()).collect(),
        Tokens::F16 { data, .. } => data.iter().map(|x| x.to_f32()).collect(),
    }
}

#[test]
fn demo_runs_and_finds_the_source_documents() {
    let out = ok(&["demo", "--docs", "400", "--queries", "20", "--dim", "32"]);
    assert!(out.contains("source document ranked first for"), "{out}");
    let line = out.lines().find(|l| l.starts_with("source document ranked first")).unwrap();
    let found: usize = line.split_whitespace().nth(5).unwrap().split('/').next().unwrap().parse().unwrap();
    assert!(found >= 18, "{line}");
}

#[test]
fn ingest_info_search_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, qdir, db) = (tmp.path().join("data"), tmp.path().join("queries"), tmp.path().join("db"));
    let dim = 24;
    let c = synth::corpus(300, 12, dim, 8, 5, 3);
    synth::write_bulk(&data, "docs.jsonl", &c.docs).unwrap();
    // Query text names the source document's number, which BM25 finds as a token.
    let queries: Vec<_> = c
        .queries
        .iter()
        .enumerate()
        .map(|(i, (t, src))| tessera::Document::new(format!("q{i}"), t.clone()).with_text(format!("document {src}")))
        .collect();
    synth::write_bulk(&qdir, "queries.jsonl", &queries).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let out = ok(&["ingest", "--db", &s(&db), "--collection", "c", &s(&data)]);
    assert!(out.contains("ingested 300 documents"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", &s(&db), "--json"])).unwrap();
    let col = &info["collections"][0];
    assert_eq!(
        (col["name"].as_str(), col["documents"].as_u64(), col["dim"].as_u64()),
        (Some("c"), Some(300), Some(dim as u64))
    );
    let total_tokens: usize = c.docs.iter().map(|d| f32s(&d.tokens).len() / dim).sum();
    assert_eq!(col["tokens"].as_u64(), Some(total_tokens as u64));
    assert_eq!((col["given_tokens"].as_u64(), col["pooled_ratio"].as_f64()), (Some(total_tokens as u64), Some(1.0)));
    // --pool-factor: a pooled collection keeps 1 + ⌈(n − 1) / 3⌉ of each document's n tokens, and says so.
    let out = ok(&["ingest", "--db", &s(&db), "--collection", "p", "--pool-factor", "3", "--index", "none", &s(&data)]);
    assert!(out.contains("ingested 300 documents"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", &s(&db), "--json"])).unwrap();
    let p = info["collections"].as_array().unwrap().iter().find(|c| c["name"] == "p").unwrap();
    let pooled: usize = c.docs.iter().map(|d| tessera::pooled_len(f32s(&d.tokens).len() / dim, 3)).sum();
    assert_eq!((p["tokens"].as_u64(), p["given_tokens"].as_u64()), (Some(pooled as u64), Some(total_tokens as u64)));
    assert!((p["pooled_ratio"].as_f64().unwrap() - pooled as f64 / total_tokens as f64).abs() < 1e-9);
    assert!(ok(&["info", "--db", &s(&db)]).contains("c "));
    // The kernel in use: calibrated, or what TESSERA_KERNEL names; a bad name is refused.
    let k = &info["kernel"];
    if std::env::var_os("TESSERA_KERNEL").is_none() {
        assert_eq!(k["chosen_by"], "calibration");
    }
    assert!(k["available"].as_array().unwrap().iter().any(|a| a == "portable"), "{k}");
    let forced = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["info", "--db", &s(&db), "--json"])
        .env("TESSERA_KERNEL", "portable")
        .output()
        .unwrap();
    let forced: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(
        (forced["kernel"]["kernel"].as_str(), forced["kernel"]["chosen_by"].as_str()),
        (Some("portable-blocked"), Some("TESSERA_KERNEL"))
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["info", "--db", &s(&db)])
        .env("TESSERA_KERNEL", "avx9000")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("TESSERA_KERNEL: unknown kernel"), "{bad:?}");

    let run = tmp.path().join("run.txt");
    let (db_s, q_s, run_s) = (s(&db), s(&qdir), s(&run));
    let search = |extra: &[&str]| {
        let mut args =
            vec!["search", "--db", &db_s, "--collection", "c", "--queries", &q_s, "--k", "7", "--run", &run_s];
        args.extend_from_slice(extra);
        ok(&args);
        std::fs::read_to_string(&run).unwrap()
    };
    // A payload filter (synth payloads carry "shard": i % 4): every hit is in shard 1.
    let filtered = search(&["--filter", r#"{"field": "shard", "eq": 1}"#]);
    assert_eq!(filtered.lines().count(), 8 * 7);
    for l in filtered.lines() {
        let doc: usize = l.split(' ').nth(2).unwrap().trim_start_matches("doc-").parse().unwrap();
        assert_eq!(doc % 4, 1, "{l}");
    }
    // BM25 alone: the top hit holds the query's rare term (the number; "document" is in
    // every text), and the source document is among the hits. Hybrid returns k ranked hits.
    let bm25 = search(&["--bm25-only"]);
    let text_of = |id: &str| c.docs.iter().find(|d| d.id == id).unwrap().text.clone().unwrap();
    for (i, (_, src)) in c.queries.iter().enumerate() {
        let lines: Vec<&str> = bm25.lines().filter(|l| l.starts_with(&format!("q{i} "))).collect();
        let first = lines[0].split(' ').nth(2).unwrap();
        assert!(text_of(first).split(' ').any(|w| w == src.to_string()), "{}", lines[0]);
        assert!(lines.iter().any(|l| l.split(' ').nth(2) == Some(&format!("doc-{src:06}"))), "q{i}");
    }
    let hybrid = search(&["--bm25", "--candidates", "20"]);
    assert_eq!(hybrid.lines().count(), 8 * 7);
    let exact = search(&["--exact"]);
    // Two-stage with at least as many candidates as documents gives the exact ranking.
    assert_eq!(search(&["--candidates", "300"]), exact);
    // Queries sent in engine batches (default 32, or 3: a last partial batch) give
    // the run of one query at a time.
    for args in [&["--exact"][..], &[], &["--candidates", "20"]] {
        let alone = search(&[args, &["--batch", "1"]].concat());
        assert_eq!(search(args), alone, "{args:?}");
        assert_eq!(search(&[args, &["--batch", "3"]].concat()), alone, "{args:?}");
    }
    for bad in [&["--batch", "0"][..], &["--batch", "2000"]] {
        let args = [&["search", "--db", &db_s, "--collection", "c", "--queries", &q_s, "--run", "-"][..], bad].concat();
        let o = tessera(&args);
        assert!(String::from_utf8_lossy(&o.stderr).contains("--batch must be"), "{bad:?}");
    }
    let args =
        ["search", "--db", &db_s, "--collection", "c", "--queries", &q_s, "--run", "-", "--bm25-only", "--batch", "4"];
    assert_eq!(tessera(&args).status.code(), Some(2), "--batch with --bm25-only is refused");
    let run = exact;
    for (i, q) in queries.iter().enumerate() {
        let qv = f32s(&q.tokens);
        let mut want: Vec<(f64, &str)> =
            c.docs.iter().map(|d| (maxsim_f64(&qv, &f32s(&d.tokens), dim), d.id.as_str())).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got: Vec<Vec<&str>> =
            run.lines().map(|l| l.split(' ').collect::<Vec<_>>()).filter(|f| f[0] == format!("q{i}")).collect();
        assert_eq!(got.len(), 7);
        for (r, (f, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!((f[1], f[3], f[5]), ("Q0", (r + 1).to_string().as_str(), "tessera"));
            assert_eq!(f[2], w.1, "query q{i} rank {}", r + 1);
            assert!((f[4].parse::<f64>().unwrap() - w.0).abs() < 1e-3);
        }
    }
}

#[test]
fn malformed_input_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let c = synth::corpus(5, 4, 8, 0, 1, 1);
    synth::write_bulk(&data, "docs.jsonl", &c.docs).unwrap();
    let db = tmp.path().join("db");
    let jsonl = data.join("docs.jsonl");
    let good = std::fs::read_to_string(&jsonl).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[2] = "{\"id\": \"broken\", ";
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let o = tessera(&["ingest", "--db", &s(&db), "--collection", "c", &s(&data)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("docs.jsonl:3"), "{err}");

    // One record too few for offsets.npy.
    std::fs::write(&jsonl, good.lines().take(4).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let o = tessera(&["ingest", "--db", &s(&db), "--collection", "c", &s(&data)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 records but the offsets describe 5 documents"));

    // Missing tokens file, unknown collection, wrong dim.
    std::fs::remove_file(data.join("tokens.npy")).unwrap();
    let o = tessera(&["ingest", "--db", &s(&db), "--collection", "c", &s(&data)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokens.npy"));
    let o = tessera(&["search", "--db", &s(&db), "--collection", "nope", "--queries", &s(&data), "--run", "-"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown collection \"nope\""));
}

/// The metrics reproduce the reference-quality table of the evaluation data's
/// README (computed independently when the data set was made) from its exact run.
#[test]
fn metrics_match_the_evaldata_reference_table() {
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/evaldata/debdocs");
    if !data.join("qrels.tsv").exists() {
        println!("SKIPPED: ../shared/evaldata not present");
        return;
    }
    use tessera_cli::eval::{evaluate, read_qrels, read_run};
    let qrels = read_qrels(&data.join("qrels.tsv")).unwrap();
    let run = read_run(&data.join("exact_top100.run")).unwrap();
    let at = |k| evaluate(&run, &qrels, k);
    let close = |a: f64, b: f64| (a - b).abs() < 0.0015;
    assert_eq!(at(10).queries, 824);
    assert!(close(at(1).hit_rate, 0.552), "{:?}", at(1));
    assert!(close(at(5).hit_rate, 0.810), "{:?}", at(5));
    assert!(close(at(10).hit_rate, 0.871) && close(at(10).mrr, 0.661) && close(at(10).ndcg, 0.711), "{:?}", at(10));
    assert!(close(at(100).hit_rate, 0.956) && close(at(100).recall, 0.954), "{:?}", at(100));
}

#[test]
fn storage_and_screening_are_set_at_creation_and_checked_after() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, qdir, db) = (tmp.path().join("data"), tmp.path().join("queries"), tmp.path().join("db"));
    let dim = 24;
    let c = synth::corpus(300, 12, dim, 8, 5, 3);
    synth::write_bulk(&data, "docs.jsonl", &c.docs).unwrap();
    let queries: Vec<_> =
        c.queries.iter().enumerate().map(|(i, (t, _))| tessera::Document::new(format!("q{i}"), t.clone())).collect();
    synth::write_bulk(&qdir, "queries.jsonl", &queries).unwrap();
    let (db_s, data_s, q_s) = (db.to_str().unwrap(), data.to_str().unwrap(), qdir.to_str().unwrap());
    let ingest = |name: &str, extra: &[&str]| {
        let mut args = vec!["ingest", "--db", db_s, "--collection", name, data_s];
        args.extend_from_slice(extra);
        tessera(&args)
    };
    assert!(ingest("q", &["--storage", "int8", "--screening", "binary", "--index", "none"]).status.success());
    assert!(ingest("plain", &[]).status.success());
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", db_s, "--json"])).unwrap();
    let by_name = |n: &str| info["collections"].as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone();
    let (q, plain) = (by_name("q"), by_name("plain"));
    assert_eq!((q["storage"].as_str(), q["screening"].as_str()), (Some("int8"), Some("binary")));
    assert_eq!(q["bytes_per_token"].as_u64(), Some(dim as u64 + 4 + 8));
    assert_eq!((plain["storage"].as_str(), plain["bytes_per_token"].as_u64()), (Some("f16"), Some(2 * dim as u64)));
    // Residual storage takes a centroids index: asked without one, it is refused, naming it.
    let o = ingest("r", &["--storage", "residual2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("residual2") && err.contains("centroids"), "{err}");
    // Background builds on one thread (the default is every core); none is refused.
    let o = ingest("r", &["--storage", "residual2", "--index", "centroids", "--build-threads", "0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--build-threads"));
    assert!(ingest("r", &["--storage", "residual2", "--index", "centroids", "--build-threads", "1"]).status.success());
    // A collection made from a bulk folder is told how many tokens it will hold.
    let settings: serde_json::Value =
        serde_json::from_str(&ok(&["settings", "--db", db_s, "--collection", "r"])).unwrap();
    let given: usize = c.docs.iter().map(|d| d.tokens.n_tokens()).sum();
    assert_eq!(settings["expected_tokens"].as_u64(), Some(given as u64), "{settings}");
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", db_s, "--json"])).unwrap();
    let r = info["collections"].as_array().unwrap().iter().find(|c| c["name"] == "r").unwrap().clone();
    assert_eq!((r["storage"].as_str(), r["bytes_per_token"].as_u64()), (Some("residual2"), Some(2 + dim as u64 / 4)));
    assert_eq!(r["keep"].as_str(), Some("none"));
    let o = ingest("r", &["--keep", "f16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--keep f16 applies only when"), "{err}");
    assert!(ingest("rk", &["--storage", "residual4", "--index", "centroids", "--keep", "f16"]).status.success());
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", db_s, "--json"])).unwrap();
    let rk = info["collections"].as_array().unwrap().iter().find(|c| c["name"] == "rk").unwrap().clone();
    assert_eq!(rk["keep"].as_str(), Some("f16"));
    let per_token = rk["bytes_on_disk"].as_f64().unwrap() / rk["tokens"].as_f64().unwrap();
    assert!((rk["disk_bytes_per_token"].as_f64().unwrap() - per_token).abs() < 1e-9, "{rk}");
    // An explicit setting that disagrees with the existing collection is refused, not ignored.
    for (flag, value) in [("--storage", "f16"), ("--screening", "none"), ("--index", "pooled")] {
        let o = ingest("q", &[flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(&format!("{flag} {value} applies only when")), "{err}");
    }
    // Agreeing or absent settings ingest again (replacing every document).
    assert!(ingest("q", &["--storage", "int8"]).status.success());
    let run = tmp.path().join("run.txt");
    let search = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "search",
            "--db",
            db_s,
            "--collection",
            name,
            "--queries",
            q_s,
            "--k",
            "7",
            "--run",
            run.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = tessera(&args);
        (
            o.status.success(),
            std::fs::read_to_string(&run).unwrap_or_default(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok_exact, exact, _) = search("q", &["--exact"]);
    assert!(ok_exact && exact.lines().count() == 8 * 7);
    // A rerank covering the collection screens nothing away: the exact ranking.
    let (ok_all, all, _) = search("q", &["--rerank", "1000"]);
    assert!(ok_all);
    assert_eq!(all, exact);
    let (ok_few, few, _) = search("q", &["--rerank", "10"]);
    assert!(ok_few && few.lines().count() == 8 * 7);
    let (refused, _, err) = search("plain", &["--rerank", "10"]);
    assert!(!refused && err.contains("screening"), "{err}");
    let (refused, _, err) = search("q", &["--rerank", "10", "--exact"]);
    assert!(!refused && err.contains("rerank applies to two-stage search, not to exact search"), "{err}");
    // The bench grid: one row per candidates × rerank, each naming its rerank.
    let out = ok(&[
        "bench",
        "search",
        "--db",
        db_s,
        "--collection",
        "q",
        "--queries",
        q_s,
        "--candidates",
        "50",
        "--rerank",
        "10,1000",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!((rows[1]["rerank"].as_u64(), rows[2]["rerank"].as_u64()), (Some(10), Some(1000)));
    assert_eq!(rows[2]["recall_at_k"].as_f64(), Some(1.0), "rerank ≥ the collection is exact");
}

#[test]
fn centroids_index_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, qdir, db) = (tmp.path().join("data"), tmp.path().join("queries"), tmp.path().join("db"));
    let dim = 16;
    // 3,000 documents of ~24 tokens: over the 65,536 tokens that train a codebook.
    let c = synth::corpus(3000, 24, dim, 6, 5, 9);
    synth::write_bulk(&data, "docs.jsonl", &c.docs).unwrap();
    let queries: Vec<_> =
        c.queries.iter().enumerate().map(|(i, (t, _))| tessera::Document::new(format!("q{i}"), t.clone())).collect();
    synth::write_bulk(&qdir, "queries.jsonl", &queries).unwrap();
    let (db_s, data_s, q_s) = (db.to_str().unwrap(), data.to_str().unwrap(), qdir.to_str().unwrap());
    for extra in [&[][..], &["--index", "pooled"][..]] {
        let mut args = vec!["ingest", "--db", db_s, "--collection", "p", data_s, "--centroids", "256"];
        args.extend_from_slice(extra);
        let o = tessera(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        let says = "centroids_k does not apply to a collection with index pooled";
        assert!(!o.status.success() && err.contains(says), "--centroids needs --index centroids: {err}");
    }
    let out = ok(&["ingest", "--db", db_s, "--collection", "c", data_s, "--index", "centroids", "--centroids", "256"]);
    assert!(out.contains("training codebooks"), "{out}");
    ok(&["ingest", "--db", db_s, "--collection", "p", data_s]);
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", db_s, "--json"])).unwrap();
    let cen = info["collections"].as_array().unwrap().iter().find(|c| c["name"] == "c").unwrap().clone();
    assert_eq!((cen["index"].as_str(), cen["centroids"].as_u64()), (Some("centroids"), Some(256)));
    assert!(cen["index_bytes_per_token"].as_f64().unwrap() > 0.0);
    let run = |name: &str, file: &str, extra: &[&str]| {
        let path = tmp.path().join(file);
        let p = path.to_str().unwrap().to_string();
        let mut args = vec!["search", "--db", db_s, "--collection", name, "--queries", q_s, "--k", "10", "--run", &p];
        args.extend_from_slice(extra);
        let o = tessera(&args);
        (
            o.status.success(),
            std::fs::read_to_string(&path).unwrap_or_default(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Issue #30 item 17: the settings, shown and changed by `tessera settings`;
    // those fixed at creation refused; an ingest into the collection that
    // asks for other settings refused, pointing at the command.
    let settings = |extra: &[&str]| {
        let mut args = vec!["settings", "--db", db_s, "--collection", "c"];
        args.extend_from_slice(extra);
        let o = tessera(&args);
        let out: Option<serde_json::Value> = serde_json::from_slice(&o.stdout).ok();
        (o.status.success(), out, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (_, now, _) = settings(&[]);
    let now = now.unwrap();
    assert_eq!((now["centroids_k"].as_u64(), now["min_train_tokens"].as_u64()), (Some(256), Some(65536)), "{now}");
    let (done, changed, err) = settings(&["--max-segments", "8", "--drift", "0.1"]);
    let changed = changed.unwrap_or_else(|| panic!("{err}"));
    assert!(
        done && changed["max_segments"] == 8 && (changed["drift"].as_f64().unwrap() - 0.1).abs() < 1e-6,
        "{changed}"
    );
    assert_eq!(settings(&[]).1.unwrap(), changed, "stored");
    let (done, _, err) = settings(&["--centroids-k", "64"]);
    assert!(!done && err.contains("centroids_k is fixed when the collection is created"), "{err}");
    let (done, _, err) = settings(&["--memtable-bytes", "12"]);
    assert!(!done && err.contains("memtable_bytes must be in 4096..="), "{err}");
    let o = tessera(&["ingest", "--db", db_s, "--collection", "c", data_s, "--max-segments", "9"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("another max_segments") && err.contains("tessera settings"), "{err}");
    let small = tmp.path().join("small");
    synth::write_bulk(&small, "docs.jsonl", &c.docs[..40]).unwrap();
    let small_s = small.to_str().unwrap();
    let args = ["--index", "centroids", "--min-train-tokens", "300", "--memtable-bytes", "1048576", "--hnsw-m", "8"];
    let o = tessera(&[&["ingest", "--db", db_s, "--collection", "s", small_s][..], &args[..]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("hnsw_m does not apply to a collection with index centroids"), "{err}");
    ok(&[&["ingest", "--db", db_s, "--collection", "s", small_s][..], &args[..6]].concat());
    let s = serde_json::from_str::<serde_json::Value>(&ok(&["settings", "--db", db_s, "--collection", "s"])).unwrap();
    assert_eq!((s["min_train_tokens"].as_u64(), s["memtable_bytes"].as_u64()), (Some(300), Some(1 << 20)), "{s}");

    let (ok_exact, exact, said_exact) = run("c", "exact.run", &["--exact"]);
    let (ok_all, all, said_all) = run("c", "all.run", &["--nprobe", "4", "--candidates", "100000"]);
    assert!(ok_exact && ok_all);
    assert_eq!(all, exact, "every document a candidate: the exact ranking");
    assert!(said_exact.contains("k=10, exact:") && said_all.contains("two-stage, 100000 candidates"), "{said_all}");
    let (_, _, said) = run("c", "default.run", &[]);
    let docs = cen["documents"].as_u64().unwrap() as f64;
    let want = (2.5 * docs.sqrt()).ceil().max(256.0) as usize; // max(256, 8·10, 2.5·√documents)
    assert!(said.contains(&format!("two-stage, {want} candidates")), "the default for k and size: {said}");
    let (refused, _, err) = run("p", "x.run", &["--nprobe", "4"]);
    assert!(!refused && err.contains("nprobe"), "{err}");
    let (refused, _, err) = run("c", "x.run", &["--ef", "64"]);
    assert!(!refused && err.contains("ef applies"), "{err}");
    // The bench grid over nprobe, and against a stored exact run.
    let bench = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "bench",
            "search",
            "--db",
            db_s,
            "--collection",
            "c",
            "--queries",
            q_s,
            "--candidates",
            "50",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_lines(&args)
    };
    let rows = bench(&["--nprobe", "2,8"]);
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[1]["nprobe"].as_u64(), rows[2]["nprobe"].as_u64()), (Some(2), Some(8)));
    assert_eq!(rows[1]["scored"].as_u64(), Some(50));
    let exact_path = tmp.path().join("exact.run");
    let rows_from_file = bench(&["--nprobe", "2,8", "--exact-run", exact_path.to_str().unwrap()]);
    assert_eq!(rows_from_file.len(), 2, "no exact row when the exact run is given");
    let recall = |r: &serde_json::Value| r["recall_at_k"].as_f64().unwrap();
    // (Equal up to the order of a floating-point sum over the queries.)
    assert!((recall(&rows_from_file[1]) - recall(&rows[2])).abs() < 1e-9, "the same recall against the stored run");
}

/// Issue #16, fault 7 and read-only opening: `info`, `search` and `bench
/// search` read a database another process holds open to write (here this
/// test, as `tessera serve` would), change no file — a torn WAL tail is left
/// for the writer — and a missing `--db` is an error that creates nothing.
#[test]
fn read_commands_write_nothing_and_run_beside_a_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, qdir) = (tmp.path().join("db"), tmp.path().join("queries"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let c = synth::corpus(40, 6, 8, 4, 3, 9);
    synth::write_bulk(
        &qdir,
        "queries.jsonl",
        &c.queries
            .iter()
            .enumerate()
            .map(|(i, (t, _))| tessera::Document::new(format!("q{i}"), t.clone()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let writer = tessera::Database::open(&db).unwrap();
    let col = writer.create_collection("c", tessera::CollectionConfig::new(8)).unwrap();
    col.upsert(&c.docs).unwrap(); // in the WAL only
    let cdir = db.join("collections/c");
    let wal = std::fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap();
    let mut torn = std::fs::read(&wal).unwrap();
    torn.extend_from_slice(&[9, 9]);
    std::fs::write(&wal, &torn).unwrap();
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--db", &s(&db), "--json"])).unwrap();
    assert_eq!(info["collections"][0]["documents"].as_u64(), Some(40), "{info}");
    let run = tmp.path().join("exact.run");
    let args = ["search", "--db", &s(&db), "--collection", "c", "--queries", &s(&qdir), "--exact", "--run", &s(&run)];
    ok(&args);
    assert!(std::fs::read_to_string(&run).unwrap().lines().count() > 0);
    ok(&["bench", "search", "--db", &s(&db), "--collection", "c", "--queries", &s(&qdir), "--candidates", "5"]);
    // A flag that would be ignored is refused: --fusion without --bm25.
    let o = tessera(&[&args[..], &["--fusion", "weighted"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--bm25"), "{o:?}");
    assert_eq!(std::fs::read(&wal).unwrap(), torn, "the torn tail is left for the writer");
    let missing = tmp.path().join("missing");
    let o = tessera(&["info", "--db", &s(&missing)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no database"));
    assert!(!missing.exists(), "nothing created");
    drop((col, writer));
}

/// Issue #16, CLI sharp edges: every subcommand's every flag and argument
/// has help text (`--help` shows a description beside or under each).
#[test]
fn every_flag_has_help() {
    let mut missing = Vec::new();
    let top = common::ok(&["--help"]);
    let mut commands: Vec<Vec<String>> = Vec::new();
    let subcommands = |help: &str| -> Vec<String> {
        let list = help.split("Commands:").nth(1).unwrap_or("").split("\n\n").next().unwrap_or("");
        list.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| *c != "help").map(String::from).collect()
    };
    for c in subcommands(&top) {
        let help = common::ok(&[&c, "--help"]);
        let subs = subcommands(&help);
        if subs.is_empty() {
            commands.push(vec![c]);
        } else {
            commands.extend(subs.into_iter().map(|s| vec![c.clone(), s]));
        }
    }
    assert!(commands.len() >= 14, "{commands:?}");
    for c in &commands {
        let mut args: Vec<&str> = c.iter().map(String::as_str).collect();
        args.push("--help");
        let help = common::ok(&args);
        let lines: Vec<&str> = help.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            let is_item =
                (2..=6).contains(&indent) && (t.starts_with("--") || t.starts_with('<') || t.starts_with("-"));
            if !is_item || t.starts_with("-h, --help") {
                continue;
            }
            // Beside it (two spaces after the name), or on the next, deeper-indented line.
            let beside = t.split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty() && !d.trim().starts_with('['));
            let under = lines.get(i + 1).is_some_and(|n| n.len() - n.trim_start().len() > 6 && !n.trim().is_empty());
            if !beside && !under {
                missing.push(format!("tessera {}: {t}", c.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help:\n{}", missing.join("\n"));
}
