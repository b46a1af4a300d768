//! The refusal table (`tests/refusals/search_options.json`) through `tessera
//! search`: each row the CLI can spell (its query always has tokens; `text`
//! is `--bm25` with the query's text, and rank and fusion flags need it; it
//! has no flags for ids, vector, rerank_only, weights, rrf_k0 or timeout_ms)
//! is refused with the table's message, or answered with the hits the engine
//! gives for the same options. The server's and Python's tests run the same table.

use serde_json::Value;
use tessera::{CollectionConfig, Database, Document, PlanDefaults, SearchOptions, Tokens};
use tessera_cli::synth;

mod common;
use common::{ok, tessera};

const DIM: usize = 4;

/// The flags of a row's options, or `None` if the CLI cannot spell them.
fn flags(options: &Value, tokens: bool) -> Option<Vec<String>> {
    let o = options.as_object().unwrap();
    if !tokens
        || (o.contains_key("rank")
            || o.contains_key("rank_norm")
            || o.contains_key("rank_weights")
            || o.contains_key("fusion"))
            && !o.contains_key("text")
    {
        return None;
    }
    let mut out = Vec::new();
    for (key, v) in o {
        let flag = format!("--{}", key.replace('_', "-"));
        match key.as_str() {
            "candidates" | "ef" | "nprobe" | "rerank" => out.extend([flag, v.to_string()]),
            "exact" => out.push(flag),
            "filter" => out.extend([flag, v.to_string()]),
            "text" => {
                assert_eq!(v, "apple", "the query's text is apple");
                out.push("--bm25".into());
            }
            "fusion" | "rank" | "rank_norm" => out.extend([flag, v.as_str().unwrap().to_string()]),
            "rank_weights" => {
                for (s, w) in v.as_object().unwrap() {
                    out.extend(["--rank-weight".into(), format!("{s}={w}")]);
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

#[test]
fn every_row_the_cli_can_spell_gets_the_table_answer() {
    let table: Value = serde_json::from_str(include_str!("../../../tests/refusals/search_options.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (dbp, qdir) = (tmp.path().join("db"), tmp.path().join("q"));
    let mut rng = tessera::SplitMix64::new(9);
    let mut tokens = |n: usize| {
        let rows: Vec<Vec<f32>> =
            (0..n).map(|_| (0..DIM).map(|_| (rng.next_u64() % 2000) as f32 / 1000.0 - 1.0).collect()).collect();
        Tokens::from_rows(&rows).unwrap()
    };
    {
        let db = Database::open(&dbp).unwrap();
        let c = db.create_collection("c", CollectionConfig::new(DIM)).unwrap();
        let docs: Vec<Document> = (0..20)
            .map(|i| {
                Document::new(format!("d{i}"), tokens(3))
                    .with_text(format!("apple pie {i}"))
                    .with_payload(serde_json::json!({"n": i % 3}))
            })
            .collect();
        c.upsert(&docs).unwrap();
        c.flush().unwrap();
    }
    let query = tokens(2);
    synth::write_bulk(&qdir, "queries.jsonl", &[Document::new("q0", query.clone()).with_text("apple")]).unwrap();
    let (db_arg, q_arg) = (dbp.to_str().unwrap(), qdir.to_str().unwrap());
    let mut spelled = 0;
    for row in table["rows"].as_array().unwrap() {
        let Some(flags) = flags(&row["options"], row["tokens"].as_bool().unwrap()) else { continue };
        spelled += 1;
        let mut args =
            vec!["search", "--db", db_arg, "--collection", "c", "--queries", q_arg, "--run", "-", "--k", "3"];
        args.extend(flags.iter().map(String::as_str));
        let o = tessera(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        match row["refused"].as_str() {
            Some(says) => assert!(!o.status.success() && err.contains(says), "{row}: {err}"),
            None => {
                assert_eq!(ok(&args), String::from_utf8_lossy(&o.stdout), "{row}: the same run twice");
                let mut options: SearchOptions = serde_json::from_value(row["options"].clone()).unwrap();
                options.k = Some(3);
                let db = Database::open_read_only(&dbp).unwrap();
                let c = db.collection("c").unwrap();
                let plan = options.plan(&c, true, &PlanDefaults::default()).unwrap();
                let want: Vec<String> = match c.execute(&plan, Some(&query)).unwrap() {
                    tessera::SearchResults::Hybrid(h) => h.into_iter().map(|h| h.hit.id).collect(),
                    tessera::SearchResults::TwoStage(h) | tessera::SearchResults::Exact(h) => {
                        h.into_iter().map(|h| h.id).collect()
                    }
                };
                let got: Vec<String> = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
                    .collect();
                assert_eq!(got, want, "{row}");
            }
        }
    }
    assert!(spelled >= 14, "the CLI spells {spelled} rows");
    // A refused search leaves an existing run file as it was.
    let run = tmp.path().join("kept.run");
    std::fs::write(&run, "kept\n").unwrap();
    let o = tessera(&[
        "search",
        "--db",
        db_arg,
        "--collection",
        "c",
        "--queries",
        q_arg,
        "--run",
        run.to_str().unwrap(),
        "--exact",
        "--bm25",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("apply to a tensor-only search"));
    assert_eq!(std::fs::read_to_string(&run).unwrap(), "kept\n");
}
