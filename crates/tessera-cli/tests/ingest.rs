//! `tessera ingest` end to end: every input format lands exactly, bad records
//! are reported by file:line and skipped or abort without writing their batch,
//! an interrupted ingest resumes, and a re-run is idempotent.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use tessera::{Database, Document, Tokens, f16};
use tessera_cli::synth;

fn tessera(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("run tessera");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ingest(db: &Path, input: &str, extra: &[&str], stdin: Option<&str>) -> Output {
    let mut args = vec!["ingest", "--db", db.to_str().unwrap(), "--collection", "c", input];
    args.extend_from_slice(extra);
    tessera(&args, stdin)
}

fn f16s(t: &Tokens) -> Vec<f16> {
    match t {
        Tokens::F32 { data, .. } => data.iter().map(|&x| f16::from_f32(x)).collect(),
        Tokens::F16 { data, .. } => data.clone(),
    }
}

/// Every document is stored with exactly its tokens (as f16), text and payload, and nothing else is.
fn assert_holds_exactly(db: &Path, docs: &[Document]) {
    let db = Database::open(db).unwrap();
    let c = db.collection("c").unwrap();
    assert_eq!(c.len(), docs.len());
    for d in docs {
        let got = c.get(&d.id).unwrap().unwrap_or_else(|| panic!("{} missing", d.id));
        assert_eq!(got.tokens, f16s(&d.tokens), "{}", d.id);
        assert_eq!((&got.text, &got.payload), (&d.text, &d.payload), "{}", d.id);
    }
}

fn jsonl_line(d: &Document) -> String {
    let rows: Vec<Vec<f32>> =
        f16s(&d.tokens).chunks(d.tokens.dim()).map(|r| r.iter().map(|x| x.to_f32()).collect()).collect();
    let mut v = serde_json::json!({ "id": d.id, "tokens": rows });
    if let Some(t) = &d.text {
        v["text"] = t.clone().into();
    }
    if let Some(p) = &d.payload {
        v["payload"] = p.clone();
    }
    v.to_string()
}

fn corpus(n: usize) -> Vec<Document> {
    synth::corpus(n, 6, 16, 0, 1, 7).docs
}

#[test]
fn every_input_format_lands_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(60);
    // Bulk folder with .npy files.
    let npy = tmp.path().join("npy");
    synth::write_bulk(&npy, "docs.jsonl", &docs).unwrap();
    let db = tmp.path().join("db-npy");
    assert!(ingest(&db, npy.to_str().unwrap(), &[], None).status.success());
    assert_holds_exactly(&db, &docs);

    // Bulk folder with tokens.safetensors (tokens F32, offsets I64).
    let st = tmp.path().join("st");
    synth::write_bulk(&st, "docs.jsonl", &docs).unwrap();
    std::fs::remove_file(st.join("tokens.npy")).unwrap();
    std::fs::remove_file(st.join("offsets.npy")).unwrap();
    let tokens: Vec<f32> = docs.iter().flat_map(|d| f16s(&d.tokens)).map(|x| x.to_f32()).collect();
    let mut offsets = vec![0i64];
    for d in &docs {
        offsets.push(offsets.last().unwrap() + (f16s(&d.tokens).len() / 16) as i64);
    }
    let (tb, ob): (Vec<u8>, Vec<u8>) =
        (bytemuck::cast_slice(&tokens).to_vec(), bytemuck::cast_slice(&offsets).to_vec());
    let views = [
        (
            "tokens",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![tokens.len() / 16, 16], &tb).unwrap(),
        ),
        ("offsets", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![offsets.len()], &ob).unwrap()),
    ];
    std::fs::write(st.join("tokens.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let db = tmp.path().join("db-st");
    let o = ingest(&db, st.to_str().unwrap(), &[], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_holds_exactly(&db, &docs);

    // JSONL with inline tokens, from a file and from stdin.
    let text: String = docs.iter().map(|d| jsonl_line(d) + "\n").collect();
    let file = tmp.path().join("docs.jsonl");
    std::fs::write(&file, &text).unwrap();
    let db = tmp.path().join("db-jsonl");
    assert!(ingest(&db, file.to_str().unwrap(), &[], None).status.success());
    assert_holds_exactly(&db, &docs);
    let db = tmp.path().join("db-stdin");
    let o = ingest(&db, "-", &[], Some(&text));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_holds_exactly(&db, &docs);
    // Idempotent re-run: the same documents, once each.
    assert!(ingest(&db, "-", &[], Some(&text)).status.success());
    assert_holds_exactly(&db, &docs);
}

#[test]
fn bad_records_are_named_and_skipped_or_abort_their_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(12);
    let mut lines: Vec<String> = docs.iter().map(jsonl_line).collect();
    lines[4] = "{\"id\": \"broken\", \"tokens\": [[1.0, 2.0".into(); // line 5: truncated JSON
    lines[8] = serde_json::json!({ "id": "short", "tokens": [[1.0, 2.0]] }).to_string(); // line 9: wrong dim
    let file = tmp.path().join("docs.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let good: Vec<Document> =
        docs.iter().enumerate().filter(|(i, _)| *i != 4 && *i != 8).map(|(_, d)| d.clone()).collect();

    // abort (default), batches of 3: lines 1-3 are written, the batch of line 5 (lines 4-6) is not.
    let db = tmp.path().join("db-abort");
    let o = ingest(&db, file.to_str().unwrap(), &["--batch-docs", "3"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("docs.jsonl:5"), "{err}");
    assert_holds_exactly(&db, &docs[..3]);

    // skip: everything but the two bad lines, each reported.
    let db = tmp.path().join("db-skip");
    let o = ingest(&db, file.to_str().unwrap(), &["--batch-docs", "3", "--on-error", "skip"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipped") && err.contains("docs.jsonl:5") && err.contains("docs.jsonl:9"), "{err}");
    assert!(err.contains("wrong dimension"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 bad records skipped"));
    assert_holds_exactly(&db, &good);
}

#[test]
fn an_interrupted_ingest_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(40);
    let data = tmp.path().join("data");
    synth::write_bulk(&data, "docs.jsonl", &docs).unwrap();
    // Break record 25 so the first run stops in its third batch of 10.
    let jsonl = data.join("docs.jsonl");
    let good = std::fs::read_to_string(&jsonl).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[24] = "{not json";
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let db = tmp.path().join("db");
    let o = ingest(&db, data.to_str().unwrap(), &["--batch-docs", "10"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_holds_exactly(&db, &docs[..20]);
    // Repaired input, --resume: passes over the 20 acknowledged records and writes the rest.
    std::fs::write(&jsonl, &good).unwrap();
    let o = ingest(&db, data.to_str().unwrap(), &["--batch-docs", "10", "--resume"], None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("ingested 20 documents") && out.contains("resumed after 20 records"), "{out}");
    assert_holds_exactly(&db, &docs);
    assert!(!db.join("ingest-checkpoints/c.json").exists(), "a finished ingest leaves no checkpoint");
}

#[test]
fn kill_dash_nine_then_resume_completes_the_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = synth::corpus(3000, 24, 64, 0, 1, 5).docs;
    let data = tmp.path().join("data");
    synth::write_bulk(&data, "docs.jsonl", &docs).unwrap();
    let db = tmp.path().join("db");
    let args =
        ["ingest", "--db", db.to_str().unwrap(), "--collection", "c", data.to_str().unwrap(), "--batch-docs", "50"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
    let o = ingest(&db, data.to_str().unwrap(), &["--batch-docs", "50", "--resume"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_holds_exactly(&db, &docs);
}

/// Issue #16, fault 3: a repeated id inside one batch used to abort the ingest
/// (even with `--on-error skip`), so whether a file ingested depended on where
/// batch boundaries fell. The later record replaces the earlier one at every
/// batch size.
#[test]
fn a_repeated_id_is_replaced_by_its_later_record_at_every_batch_size() {
    let docs = corpus(6);
    // Input: d0 d1 d2(as d0, v2) d3 d4(as d0, v3) d5(as d1, v2)
    let mut input = docs.clone();
    input[2].id = docs[0].id.clone();
    input[4].id = docs[0].id.clone();
    input[5].id = docs[1].id.clone();
    let jsonl: String = input.iter().map(|d| jsonl_line(d) + "\n").collect();
    // What must be stored: each id's last record.
    let want = vec![input[3].clone(), input[4].clone(), input[5].clone()];
    for batch in ["1", "2", "3", "4", "512"] {
        for on_error in ["abort", "skip"] {
            let tmp = tempfile::tempdir().unwrap();
            let o = ingest(tmp.path(), "-", &["--batch-docs", batch, "--on-error", on_error], Some(&jsonl));
            assert!(o.status.success(), "batch {batch}: {}", String::from_utf8_lossy(&o.stderr));
            assert_holds_exactly(tmp.path(), &want);
        }
    }
}

/// Issue #16, fault 6: a numeric id is stored as its exact decimal text; one
/// beyond 64 bits (which JSON parsing turns into a float, so distinct ids
/// would collide) is refused by line, and never stored.
#[test]
fn numeric_ids_keep_their_exact_text_or_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let row = "[[0.5, 0.25, 0.0, 0.0]]";
    let ok_ids = ["18446744073709551615", "-9223372036854775808", "7"];
    let mut input: String = ok_ids.iter().map(|id| format!("{{\"id\": {id}, \"tokens\": {row}}}\n")).collect();
    let db = tmp.path().join("db");
    let o = ingest(&db, "-", &[], Some(&input));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    {
        let c = Database::open(&db).unwrap().collection("c").unwrap();
        for id in ok_ids {
            assert!(c.get(id).unwrap().is_some(), "{id} stored under its exact text");
        }
    }
    // Two ids beyond u64 that differ in their last digit.
    input = ["12345678901234567890123", "12345678901234567890124", "1.5"]
        .iter()
        .map(|id| format!("{{\"id\": {id}, \"tokens\": {row}}}\n"))
        .collect();
    let file = tmp.path().join("ids.jsonl");
    std::fs::write(&file, &input).unwrap();
    let o = ingest(&db, file.to_str().unwrap(), &["--on-error", "skip"], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ids.jsonl:1") && err.contains("ids.jsonl:3"), "named by line: {err}");
    assert_eq!(err.matches("is not an integer within 64 bits").count(), 3, "{err}");
    let c = Database::open(&db).unwrap().collection("c").unwrap();
    assert_eq!(c.len(), ok_ids.len(), "nothing stored under a float's text");
}
