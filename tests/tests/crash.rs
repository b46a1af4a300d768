//! kill -9 recovery: a child process writes (upserts, deletes, flushes,
//! compactions) and is killed with SIGKILL at a random moment, many times over
//! the same database. After each kill the database must open, hold every
//! acknowledged write exactly (tokens bit for bit), and nothing else — except
//! that the one operation in flight when the child died may or may not have
//! been applied. It runs on an f16 collection and on an int8 collection with
//! binary screening codes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera::{Database, Tokens};
use tessera_e2e::{DIM, KINDS, Kind, hash, stored_f16, stored_values, tokens_for};
use tessera_kernels::reference::maxsim_f64;

/// What the parent knows: id → version of the last acknowledged upsert
/// (absent = deleted or never written).
type Model = BTreeMap<String, u64>;

enum Intent {
    Upsert(u64, Vec<String>),
    Delete(Vec<String>),
    Other,
}

fn parse(line: &str) -> Intent {
    let mut w = line.split(' ');
    match w.next() {
        Some("U") => Intent::Upsert(w.next().unwrap().parse().unwrap(), w.map(String::from).collect()),
        Some("D") => Intent::Delete(w.map(String::from).collect()),
        _ => Intent::Other,
    }
}

fn apply(model: &mut Model, intent: &Intent) {
    match intent {
        Intent::Upsert(v, ids) => ids.iter().for_each(|id| {
            model.insert(id.clone(), *v);
        }),
        Intent::Delete(ids) => ids.iter().for_each(|id| {
            model.remove(id);
        }),
        Intent::Other => {}
    }
}

/// Runs one child until killed after `delay`; returns the operation in flight (if any).
fn run_child(
    dir: &std::path::Path,
    seed: u64,
    delay: Duration,
    kind: Kind,
    model: &mut Model,
) -> (Option<Intent>, usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .args(kind.names())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crash-writer");
    let stdout = child.stdout.take().unwrap();
    let killer = {
        let id = child.id();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SIGKILL: no destructor, no flush, no goodbye.
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
        })
    };
    let mut pending: Option<Intent> = None;
    let mut acked = 0;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !line.ends_with('\n') {
            break; // cut mid-line by the kill: not acknowledged
        }
        let l = line.trim_end();
        if l == "OK" {
            let done = pending.take().expect("OK follows an intent");
            apply(model, &done);
            acked += 1;
        } else {
            assert!(pending.is_none(), "intent without OK before {l:?}");
            pending = Some(parse(l));
        }
        line.clear();
    }
    killer.join().unwrap();
    let status = child.wait().unwrap();
    if status.success() || status.code().is_some() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("crash-writer exited by itself ({status}): {err}");
    }
    (pending, acked)
}

fn check(dir: &std::path::Path, model: &Model, pending: &Option<Intent>, storage: tessera::TokenType) {
    let stored = |id: &str, v: u64| stored_f16(&tokens_for(id, v), storage);
    let db = Database::open(dir).expect("database must open after kill -9");
    let Ok(c) = db.collection("crash") else {
        assert!(model.is_empty(), "collection lost");
        return;
    };
    let uncertain: BTreeSet<&str> = match pending {
        Some(Intent::Upsert(_, ids)) | Some(Intent::Delete(ids)) => ids.iter().map(|s| s.as_str()).collect(),
        _ => BTreeSet::new(),
    };
    let mut present = 0;
    for i in 0..400 {
        let id = format!("id{i}");
        let got = c.get(&id).unwrap();
        let want = model.get(&id);
        if uncertain.contains(id.as_str()) {
            let alt = match pending {
                Some(Intent::Upsert(v, _)) => Some(*v),
                _ => None,
            };
            let ok = match &got {
                None => want.is_none() || alt.is_none(),
                Some(d) => [want.copied(), alt].iter().flatten().any(|&v| d.tokens == stored(&id, v)),
            };
            assert!(ok, "{id}: neither the acknowledged state nor the in-flight one");
        } else {
            match (want, &got) {
                (None, None) => {}
                (Some(&v), Some(d)) => {
                    assert_eq!(d.tokens, stored(&id, v), "{id}: tokens differ from the acknowledged version {v}");
                    assert_eq!(d.text.as_deref(), Some(format!("{id} v{v}").as_str()));
                }
                (w, g) => panic!("{id}: acknowledged state {w:?}, found present={}", g.is_some()),
            }
        }
        present += got.is_some() as usize;
    }
    assert_eq!(c.len(), present, "len() counts exactly the present documents");
    // Full text agrees with the tensors: a document's text ("idN vV") is found by BM25
    // exactly when the document is present, with the version it has.
    for i in (0..400).step_by(7) {
        let id = format!("id{i}");
        let hits = c.search_text(&id, 5, None).unwrap();
        match c.get(&id).unwrap() {
            Some(d) => {
                let hit =
                    hits.iter().find(|h| h.id == id).unwrap_or_else(|| panic!("{id} present but not found by text"));
                assert_eq!(hit.text, d.text, "{id}: text index and document disagree");
            }
            None => assert!(hits.iter().all(|h| h.id != id), "{id} absent but found by text"),
        }
    }
    // Search still answers, and its scores are true MaxSim values of the stored documents.
    let q: Vec<f32> = tokens_for("query", present as u64).iter().map(|x| x.to_f32()).collect();
    let alt = match pending {
        Some(Intent::Upsert(v, _)) => Some(*v),
        _ => None,
    };
    for h in c.search(&Tokens::F32 { data: q.clone(), dim: DIM }, 5).unwrap() {
        let d = c.get(&h.id).unwrap().unwrap().tokens;
        // The version stored (acknowledged or in flight), and its values as the collection keeps them.
        let v = [model.get(&h.id).copied(), alt].into_iter().flatten().find(|&v| d == stored(&h.id, v)).unwrap();
        let values = stored_values(&tokens_for(&h.id, v), storage);
        assert!((h.score as f64 - maxsim_f64(&q, &values, DIM)).abs() < 1e-3);
    }
}

#[test]
fn kill_dash_nine_loses_no_acknowledged_write() {
    let seed0 = std::env::var("TESSERA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261127u64);
    let rounds: u64 = std::env::var("TESSERA_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    println!(
        "crash test seed {seed0}, {rounds} rounds per collection kind (TESSERA_CRASH_SEED / TESSERA_CRASH_ROUNDS to change)"
    );
    for kind in KINDS {
        kill_loop(kind, seed0, rounds);
    }
}

fn kill_loop(kind: Kind, seed0: u64, rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut total_acked = 0;
    for round in 0..rounds {
        let seed = seed0.wrapping_add(round);
        let delay = Duration::from_millis(30 + hash(&seed.to_string()) % 400);
        let (pending, acked) = run_child(dir.path(), seed, delay, kind, &mut model);
        total_acked += acked;
        check(dir.path(), &model, &pending, kind.values());
        // The in-flight operation is now settled one way or the other: adopt what the database holds.
        if let Some(Intent::Upsert(_, ids) | Intent::Delete(ids)) = &pending {
            let db = Database::open(dir.path()).unwrap();
            let c = db.collection("crash").unwrap();
            for id in ids {
                match c.get(id).unwrap() {
                    None => {
                        model.remove(id);
                    }
                    Some(d) => {
                        if let Some(Intent::Upsert(v, _)) = &pending
                            && d.tokens == stored_f16(&tokens_for(id, *v), kind.values())
                        {
                            model.insert(id.clone(), *v);
                        }
                    }
                }
            }
        }
    }
    println!(
        "{}: {rounds} kills, {total_acked} acknowledged operations checked, {} live documents at the end",
        kind.names().join(" "),
        model.len()
    );
    assert!(total_acked > rounds as usize, "the child must get work done between kills");
}
