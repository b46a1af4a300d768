//! `tessera`: drive a Tessera database from the command line.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use tessera::Database;
use tessera_cli::bulk::Result;
use tessera_cli::commands;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: late-interaction (MaxSim) vector database"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a collection from a generated corpus, search it, print hits and timings.
    Demo {
        /// Database folder; a temporary one (removed afterwards) if omitted.
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, default_value_t = 5000)]
        docs: usize,
        #[arg(long, default_value_t = 48)]
        avg_tokens: usize,
        #[arg(long, default_value_t = 128)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 16)]
        query_tokens: usize,
        #[arg(long, default_value_t = 10)]
        k: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Ingest a bulk-format folder (docs.jsonl + tokens.npy + offsets.npy).
    Ingest {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        collection: String,
        data: PathBuf,
    },
    /// Search with every query of a bulk-format folder; write a TREC run file.
    Search {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        collection: String,
        /// Folder with queries.jsonl, tokens.npy, offsets.npy.
        #[arg(long)]
        queries: PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Output run file (`-` for stdout).
        #[arg(long)]
        run: PathBuf,
    },
    /// Show collections, documents, tokens, segments and bytes on disk.
    Info {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    let stdout = &mut std::io::stdout().lock();
    match cli.cmd {
        Cmd::Demo {
            db,
            docs,
            avg_tokens,
            dim,
            queries,
            query_tokens,
            k,
            seed,
        } => {
            let tmp;
            let path = match db {
                Some(p) => p,
                None => {
                    tmp = TempDir::new()?;
                    tmp.0.clone()
                }
            };
            let db = Database::open(&path)?;
            let o = commands::DemoOptions {
                docs,
                avg_tokens,
                dim,
                queries,
                query_tokens,
                k,
                seed,
            };
            commands::demo(&db, &o, stdout)?;
        }
        Cmd::Ingest {
            db,
            collection,
            data,
        } => {
            let db = Database::open(&db)?;
            let r = commands::ingest(&db, &collection, &data, &mut std::io::stderr())?;
            let s = r.elapsed.as_secs_f64();
            writeln!(
                stdout,
                "ingested {} documents, {} tokens in {s:.2} s ({:.0} docs/s, {:.0} tokens/s)",
                r.docs,
                r.tokens,
                r.docs as f64 / s,
                r.tokens as f64 / s
            )?;
        }
        Cmd::Search {
            db,
            collection,
            queries,
            k,
            run,
        } => {
            let db = Database::open(&db)?;
            let mut out: Box<dyn Write> = if run.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&run).map_err(|e| format!("{}: {e}", run.display()))?,
                ))
            };
            let r = commands::search(&db, &collection, &queries, k, &mut out)?;
            let total: f64 = r.latencies.iter().map(|d| d.as_secs_f64()).sum();
            eprintln!(
                "{} queries, k={k}: p50 {:.2} ms, p99 {:.2} ms, {:.0} queries/s",
                r.queries,
                r.percentile(0.5).as_secs_f64() * 1e3,
                r.percentile(0.99).as_secs_f64() * 1e3,
                r.queries as f64 / total.max(1e-9)
            );
        }
        Cmd::Info { db, json } => {
            let db = Database::open(&db)?;
            commands::info(&db, stdout, json)?;
        }
    }
    Ok(())
}

/// A temporary folder removed on drop (the demo's default database).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("tessera-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
