//! Child process of the crash test: writes to a database until it is killed.
//!
//! Usage: `crash-writer DIR SEED [STORAGE SCREENING]` (default f16 none). Before each operation it prints an intent
//! line, after it returns `OK`; the parent kills it with SIGKILL at a random
//! moment and then checks every acknowledged write:
//!
//! ```text
//! U <version> <id> <id> ...   upsert these ids with tokens_for(id, version)
//! D <id> <id> ...             delete these ids
//! F | C                       flush | compact
//! OK                          the previous operation returned successfully
//! ```

use std::io::Write;
use tessera::{CollectionConfig, Database};
use tessera_e2e::{DIM, Kind, doc_for, hash};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, seed): (&str, u64) = (&args[1], args[2].parse().expect("seed"));
    let db = Database::open(dir).expect("open");
    let mut config = match args.get(3..6) {
        Some(names) => Kind::parse(names).config(),
        None => CollectionConfig::new(DIM),
    };
    config.memtable_bytes = 24 << 10; // flush often
    config.max_segments = 3; // merge often
    let c = db.open_or_create_collection("crash", config).expect("collection");
    let mut out = std::io::stdout().lock();
    let mut r = seed;
    let mut next = |n: u64| {
        r = hash(&r.to_string());
        r % n
    };
    for step in 0u64.. {
        let version = seed * 1_000_000 + step;
        match next(20) {
            0 => {
                writeln!(out, "F").unwrap();
                out.flush().unwrap();
                c.flush().expect("flush");
            }
            1 => {
                writeln!(out, "C").unwrap();
                out.flush().unwrap();
                c.compact().expect("compact");
            }
            2..=4 => {
                let ids: std::collections::BTreeSet<String> =
                    (0..1 + next(4)).map(|_| format!("id{}", next(400))).collect();
                let ids: Vec<String> = ids.into_iter().collect();
                writeln!(out, "D {}", ids.join(" ")).unwrap();
                out.flush().unwrap();
                c.delete(&ids).expect("delete");
            }
            _ => {
                let ids: std::collections::BTreeSet<String> =
                    (0..1 + next(8)).map(|_| format!("id{}", next(400))).collect();
                let docs: Vec<_> = ids.iter().map(|id| doc_for(id, version)).collect();
                writeln!(out, "U {version} {}", ids.into_iter().collect::<Vec<_>>().join(" ")).unwrap();
                out.flush().unwrap();
                c.upsert(&docs).expect("upsert");
            }
        }
        writeln!(out, "OK").unwrap();
        out.flush().unwrap();
    }
}
