//! `tessera`: drive a Tessera database from the command line.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use tessera::Database;
use tessera_cli::args::named;
use tessera_cli::bulk::Result;
use tessera_cli::commands;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: late-interaction (MaxSim) vector database")]
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
        /// Documents to generate (clustered random tokens).
        #[arg(long, default_value_t = 5000)]
        docs: usize,
        /// Mean tokens per document.
        #[arg(long, default_value_t = 48)]
        avg_tokens: usize,
        /// Token dimension.
        #[arg(long, default_value_t = 128)]
        dim: usize,
        /// Queries, each made from a document's tokens with noise.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Tokens per query.
        #[arg(long, default_value_t = 16)]
        query_tokens: usize,
        /// Results per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Seed of the generated corpus.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// A ColBERT model folder (docs/ENCODER.md): the demo then also builds a collection
        /// bound to it from a dozen passages given as text and answers text queries.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Ingest a bulk-format folder (docs.jsonl + tokens.npy + offsets.npy).
    Ingest {
        /// Database folder (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Collection to write (created with the flags below if missing).
        #[arg(long)]
        collection: String,
        /// A bulk folder (docs.jsonl + tokens.npy + offsets.npy, or + tokens.safetensors),
        /// a JSONL file with inline "tokens", or `-` for JSONL on standard input.
        data: PathBuf,
        /// Candidate index of a new collection: pooled (the default), muvera, centroids
        /// (token-level k-means centroids with inverted lists), or none (every search exact,
        /// or screened with --screening binary).
        #[arg(long, value_parser = named::<tessera::IndexKind>())]
        index: Option<tessera::IndexKind>,
        /// How a new collection stores token values: f16 (the default), int8 (per-token
        /// scale, about half the bytes), or residual2 / residual4 (with --index centroids:
        /// a centroid code and a 2- or 4-bit residual per dimension, 34 / 66 bytes a token
        /// at dim 128).
        #[arg(long, value_parser = named::<tessera::TokenType>())]
        storage: Option<tessera::TokenType>,
        /// Codes a new collection stores beside its tokens to screen candidates before the
        /// exact rerank: none (the default) or binary (one sign bit per dimension).
        #[arg(long, value_parser = named::<tessera::Screening>())]
        screening: Option<tessera::Screening>,
        /// Residual storage: a full-precision copy of the tokens kept cold beside the
        /// residual rows, which exact scores read (the final candidates of a search, exact
        /// search, rerank, get): none (the default), int8 or f16.
        #[arg(long, value_parser = named::<tessera::Keep>())]
        keep: Option<tessera::Keep>,
        /// What to do with a bad record: abort (nothing of its batch is written) or skip it.
        #[arg(long, value_enum, default_value = "abort")]
        on_error: tessera_cli::ingest::OnError,
        /// Continue after the last batch an interrupted ingest of the same input acknowledged.
        #[arg(long)]
        resume: bool,
        /// Documents per write batch (each is one WAL append + fsync).
        #[arg(long, default_value_t = 512)]
        batch_docs: usize,
        /// Threads that seal and merge segments in the background while the ingest writes
        /// (building candidate indexes, coding tokens). Default: every core, as an ingest serves
        /// no searches (unlike a server, which builds on half of them)
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        build_threads: Option<u16>,
        /// A model directory (sentence-transformers / PyLate layout, docs/ENCODER.md): JSONL
        /// records without "tokens" have their "text" encoded as documents, and a collection
        /// this creates is bound to it (a bound collection's own model is the default).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Tunable settings of a new collection (an existing one must have those given;
        /// `tessera settings` changes them).
        #[command(flatten)]
        settings: tessera_cli::args::SettingsArgs,
    },
    /// Encode the "text" of every JSONL record with a model into a new bulk folder
    /// (docs.jsonl or queries.jsonl, tokens.npy, offsets.npy), ready for ingest or search.
    Encode {
        /// The model directory (sentence-transformers / PyLate layout, docs/ENCODER.md).
        #[arg(long)]
        model: PathBuf,
        /// JSONL records with a "text" (`-` for standard input).
        input: PathBuf,
        /// The bulk folder to write (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Encode as queries (the model's query rules) and write queries.jsonl.
        #[arg(long)]
        queries: bool,
    },
    /// Re-encode every document's text with another model (a fine-tuned one, say) into a new
    /// version of the collection, built beside the old one and swapped in when complete
    /// (a crash at any point leaves one consistent version); the collection is then bound to
    /// the new model. Every document needs its text.
    Reindex {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// Collection to re-encode.
        #[arg(long)]
        collection: String,
        /// The new model's directory (sentence-transformers / PyLate layout, docs/ENCODER.md);
        /// its output dimension must be the collection's.
        #[arg(long)]
        model: PathBuf,
        /// One JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// Search with every query of a bulk-format folder; write a TREC run file.
    Search {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// Collection to search.
        #[arg(long)]
        collection: String,
        /// Folder with queries.jsonl, tokens.npy, offsets.npy (with --model: queries.jsonl
        /// alone, its texts encoded).
        #[arg(long, required_unless_present = "query", conflicts_with = "query")]
        queries: Option<PathBuf>,
        /// One query text, encoded by --model or the collection's bound model; prints the
        /// hits (id, score, text).
        #[arg(long, conflicts_with = "bm25_only")]
        query: Option<String>,
        /// A model directory (docs/ENCODER.md) that encodes the query texts (default: the
        /// collection's bound model).
        #[arg(long, conflicts_with = "bm25_only")]
        model: Option<PathBuf>,
        /// Results per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Output run file (`-` for stdout).
        #[arg(long, required_unless_present = "query")]
        run: Option<PathBuf>,
        #[command(flatten)]
        stage: StageArgs,
        /// Evaluate the run just written against these judgments (as `tessera eval`).
        #[arg(long)]
        qrels: Option<PathBuf>,
        /// Tensor search: queries per engine batch (the multi-query kernel scores a
        /// batch in one pass over the documents it shares); 1 searches one by one.
        /// Default 32. --bm25 and --bm25-only take each query's own text and run one by one.
        #[arg(long, conflicts_with_all = ["bm25", "bm25_only"])]
        batch: Option<usize>,
    },
    /// Show a collection's tunable settings as JSON, or change those given (memtable-bytes,
    /// max-segments, max-batch-bytes, pool-factor, default-nprobe, min-train-tokens, drift, expected-tokens; the others
    /// are fixed at creation). Not beside a server: use its `POST .../settings` then.
    Settings {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// The collection.
        #[arg(long)]
        collection: String,
        #[command(flatten)]
        settings: tessera_cli::args::SettingsArgs,
    },
    /// Merge a collection's segments into one, dropping deleted documents.
    Compact {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// Collection to compact.
        #[arg(long)]
        collection: String,
    },
    /// Benchmarks (one JSON line per run).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Show collections, documents, tokens, segments and bytes on disk.
    Info {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hit-Rate@K, MRR@K, nDCG@K, Recall@K of a TREC run against qrels (and recall against an exact run).
    Eval(tessera_cli::eval_cmd::EvalArgs),
    /// Hard negatives for fine-tuning: retrieve, drop positives, sample a rank range (JSONL out).
    MineNegatives(tessera_cli::mine::MineArgs),
    /// Fit the default ranking of a collection's hybrid queries (MaxSim and BM25 fused in the
    /// final order) on relevance judgments, cross-validated; write it into the collection.
    Tune(tessera_cli::tune::TuneArgs),
    /// Dump headers, counts and checksums of segments, deletion vectors, WALs, HNSW indexes,
    /// codebooks, full-text indexes and manifests, verify them all, and open each collection
    /// read-only as the engine does (exit code 1 if anything is corrupt or refused; a torn WAL
    /// tail or a quarantine file of one is reported as DAMAGED: the database opens, a batch is lost).
    Inspect(tessera_cli::inspect::InspectArgs),
    /// Write a consistent copy of a database to a new folder while it stays open and written
    /// (by `tessera serve` or an ingest): each collection as of one point between write
    /// batches. Immutable files are hard-linked when OUT is on the same file system (put it on
    /// another disk to survive losing this one). The copy is verified before this returns.
    Backup {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// Folder to write the backup to; must not exist (or be empty).
        #[arg(long)]
        out: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make a new database from a backup (verified first; the backup is not changed).
    Restore {
        /// The backup folder (written by `tessera backup` or the server's POST /backup).
        #[arg(long)]
        from: PathBuf,
        /// Folder of the new database; must not exist (or be empty).
        #[arg(long)]
        db: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve a database over HTTP (JSON) and gRPC until ctrl-c or SIGTERM
    /// (then drain requests in flight, flush and exit 0). See docs/SERVER.md.
    Serve(tessera_cli::serve::ServeArgs),
}

/// How the search runs: two-stage (coarse candidates, exact rerank), exact,
/// hybrid (--bm25) or BM25 alone. The flags are the engine's search options
/// (`tessera::SearchOptions`, as the HTTP API names them) and are refused
/// where they do not go together by the engine, in the words of every
/// interface; --bm25 (each query's own text) and --bm25-only are the CLI's.
#[derive(clap::Args)]
struct StageArgs {
    /// Candidates the candidate stage hands to the exact MaxSim rerank (with --bm25: per
    /// source, and fused candidates reranked). Default: max(256, 8·k, 2.5·√documents), with
    /// 6·k instead of 8·k for token centroids.
    #[arg(long, conflicts_with_all = ["exact", "bm25_only"])]
    candidates: Option<usize>,
    /// HNSW beam width of a pooled or muvera index (default: the number of candidates).
    #[arg(long, conflicts_with = "bm25_only")]
    ef: Option<usize>,
    /// Centroids probed per query token of a centroids index (default: the collection's, automatic: round(√K/2) within 8..=256 for K centroids).
    #[arg(long, conflicts_with = "bm25_only")]
    nprobe: Option<usize>,
    /// Screened search (collections with --screening binary): how many of the candidates,
    /// ranked by their codes, the exact MaxSim scores (default max(64, 4·k); at least k; a
    /// value ≥ --candidates skips the screening).
    #[arg(long, conflicts_with = "bm25_only")]
    rerank: Option<usize>,
    /// Score every document exactly (no coarse stage, no screening).
    #[arg(long)]
    exact: bool,
    /// Payload filter, as JSON: {"field": "lang", "eq": "en"}, in, range, exists, and/or/not
    /// (see docs/FILTERS.md).
    #[arg(long)]
    filter: Option<String>,
    /// Hybrid: also recall candidates by BM25 of each query's `text`, fuse with the
    /// two-stage MaxSim candidates, rerank the fused set by exact MaxSim.
    #[arg(long)]
    bm25: bool,
    /// BM25 of each query's `text` alone (no tensors).
    #[arg(long, conflicts_with_all = ["exact", "bm25"])]
    bm25_only: bool,
    /// How --bm25 fuses the candidate lists: rrf (reciprocal rank, k0 = 60; the default) or
    /// weighted (min-max scores). Only with --bm25.
    #[arg(long, value_parser = named::<tessera::FusionKind>())]
    fusion: Option<tessera::FusionKind>,
    #[command(flatten)]
    rank: tessera_cli::args::RankArgs,
}

impl StageArgs {
    /// The engine's options of these flags (with --bm25, each query adds its text).
    fn options(&self, k: usize) -> Result<tessera::SearchOptions> {
        let mut o = tessera::SearchOptions::new(k);
        (o.candidates, o.ef, o.nprobe, o.rerank, o.exact) =
            (self.candidates, self.ef, self.nprobe, self.rerank, self.exact);
        if let Some(f) = &self.filter {
            o.filter = Some(tessera::Filter::checked_json(f)?);
        }
        o.fusion = self.fusion;
        (o.rank, o.rank_norm) = (self.rank.rank, self.rank.rank_norm);
        o.rank_weights = self.rank.rank_weights.iter().copied().collect();
        Ok(o)
    }

    fn mode(&self, k: usize) -> Result<commands::SearchMode> {
        if self.fusion.is_some() && !self.bm25 {
            return Err("--fusion applies to a hybrid search: give it with --bm25".into());
        }
        if self.rank.given() && !self.bm25 {
            return Err("--rank, --rank-norm and --rank-weight order a hybrid search: give them with --bm25".into());
        }
        let options = self.options(k)?;
        Ok(if self.bm25_only {
            let filter = options.filter.as_ref().map(tessera::Filter::from_json).transpose()?;
            commands::SearchMode::Text { k, filter }
        } else {
            commands::SearchMode::Options { options, bm25: self.bm25 }
        })
    }
}

/// The random data of the kernel benchmarks.
#[derive(clap::Args)]
struct Shape {
    /// Tokens of the random query.
    #[arg(long, default_value_t = 32)]
    query_tokens: usize,
    /// Tokens of each random document.
    #[arg(long, default_value_t = 200)]
    doc_tokens: usize,
    /// Token dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Random documents (more than the caches hold measures streaming from memory).
    #[arg(long, default_value_t = 20000)]
    docs: usize,
    /// Threads scoring the documents.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl Shape {
    fn checked(&self) -> Result<(usize, usize, usize, usize, usize)> {
        let v = (self.query_tokens, self.doc_tokens, self.dim, self.docs, self.threads);
        if [v.0, v.1, v.2, v.3, v.4].contains(&0) {
            return Err("every size must be at least 1".into());
        }
        Ok(v)
    }
}

/// Which kernels a benchmark runs.
#[derive(clap::Args)]
struct KernelChoice {
    /// Run this kernel (e.g. avx512, avx2, portable) instead of the default.
    #[arg(long, conflicts_with = "all")]
    kernel: Option<String>,
    /// Run every kernel this CPU has, one JSON line each ("default": true on the chosen one).
    #[arg(long)]
    all: bool,
}

impl KernelChoice {
    fn kernels(&self) -> Result<Vec<tessera_kernels::Kernel>> {
        use tessera_kernels::Kernel;
        Ok(match (&self.kernel, self.all) {
            (Some(name), _) => vec![Kernel::from_name(name)?],
            (None, true) => Kernel::available(),
            (None, false) => vec![Kernel::detect()],
        })
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Load test of a running server's search route: QPS and p50/p99 latency
    /// at each number of concurrent clients.
    Serve(tessera_cli::serve::LoadArgs),
    /// The MaxSim kernel on random f16 documents: throughput, GFLOP/s, and in
    /// the same run the naive pairwise loop and the measured FMA peak.
    Maxsim {
        #[command(flatten)]
        shape: Shape,
        #[command(flatten)]
        kernels: KernelChoice,
        /// Multi-query batch sizes to measure instead (comma-separated): one
        /// JSON line each, queries × documents per second and the ratio to batch 1.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        batch: Vec<usize>,
    },
    /// Stored representations in one run: exact MaxSim over f16, int8, residual2 and
    /// residual4 copies of the same random documents (residual: the kernel, decoded a
    /// block at a time) and the screening score over their sign codes (one
    /// JSON line each: docs/s, GB/s of token bytes, ratio to f16).
    Storage(Shape),
    /// Write latency while the collection flushes and merges: one client writing batches of
    /// new documents as fast as it can into a new collection (p50/p99/max per batch, JSON).
    Writes(tessera_cli::bench_writes::WritesArgs),
    /// The built-in encoder: documents/s and tokens/s encoding a JSONL's texts as documents,
    /// and the latency of encoding each query text alone (p50/p99), at each thread count.
    Encode(tessera_cli::text::EncodeBench),
    /// Two-stage search against exact search on a collection: recall@k of the
    /// exact top-k, MRR@10 / nDCG@10 with --qrels, latency, QPS at 1 and 2 threads.
    Search {
        /// Database folder.
        #[arg(long)]
        db: PathBuf,
        /// Collection to measure.
        #[arg(long)]
        collection: String,
        /// Folder with queries.jsonl, tokens.npy, offsets.npy.
        #[arg(long)]
        queries: PathBuf,
        /// Results per query (recall is of the exact top-k).
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Candidate counts to measure (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [50usize, 100, 200, 400])]
        candidates: Vec<usize>,
        /// Screened collections: rerank counts to measure with each candidate count
        /// (comma-separated; a value ≥ the candidates is plain two-stage search).
        #[arg(long, value_delimiter = ',')]
        rerank: Vec<usize>,
        /// HNSW beam width (pooled and muvera indexes; default: the candidates).
        #[arg(long)]
        ef: Option<usize>,
        /// Centroids indexes: nprobe values to measure with each candidate count
        /// (comma-separated; default: the collection's).
        #[arg(long, value_delimiter = ',')]
        nprobe: Vec<usize>,
        /// Relevance judgments (BEIR tsv or TREC qrels) for MRR@10 and nDCG@10.
        #[arg(long)]
        qrels: Option<PathBuf>,
        /// Measure recall against this TREC run (from `tessera search --exact`) instead of
        /// running exact search in the bench (no exact row then).
        #[arg(long)]
        exact_run: Option<PathBuf>,
        /// One JSON object per setting instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    // What the engine logs (a torn WAL tail cut on open) reaches stderr;
    // `serve` sets up its own logging, which may be JSON.
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        tessera_server::init_logging(false);
    }
    let stdout = &mut std::io::stdout().lock();
    match cli.cmd {
        Cmd::Demo { db, docs, avg_tokens, dim, queries, query_tokens, k, seed, model } => {
            let tmp;
            let path = match db {
                Some(p) => p,
                None => {
                    tmp = TempDir::new()?;
                    tmp.0.clone()
                }
            };
            if let Some(m) = &model {
                // A model that does not load is refused before anything is built.
                tessera::load_model(m)?;
            }
            let db = Database::open(&path)?;
            let o = commands::DemoOptions { docs, avg_tokens, dim, queries, query_tokens, k, seed, model };
            commands::demo(&db, &o, stdout)?;
        }
        Cmd::Ingest {
            db,
            collection,
            data,
            index,
            storage,
            screening,
            keep,
            on_error,
            resume,
            batch_docs,
            build_threads,
            model,
            settings,
        } => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            tessera::set_build_threads(build_threads.map_or(cores, usize::from))?;
            let index = index.map(tessera::IndexKind::config);
            let settings = settings.settings();
            let db = Database::open(&db)?;
            let opts = tessera_cli::ingest::IngestOptions {
                index,
                storage,
                screening,
                keep,
                on_error,
                resume,
                batch_docs,
                model,
                settings,
            };
            let r = tessera_cli::ingest::ingest(&db, &collection, &data, &opts, &mut std::io::stderr())?;
            let s = r.elapsed.as_secs_f64();
            writeln!(
                stdout,
                "ingested {} documents, {} tokens in {s:.2} s ({:.0} docs/s, {:.0} tokens/s); {} bad records skipped{}{}",
                r.docs,
                r.tokens,
                r.docs as f64 / s,
                r.tokens as f64 / s,
                r.skipped,
                if r.resumed_after > 0 {
                    format!("; resumed after {} records", r.resumed_after)
                } else {
                    String::new()
                },
                if r.encoded > 0 {
                    format!("; {} texts encoded, {} cut at the model's document length", r.encoded, r.truncated)
                } else {
                    String::new()
                }
            )?;
            let b = r.build;
            writeln!(
                stdout,
                "time: {:.2} s in {} flushes and {:.2} s in {} merges, of which {:.2} s candidate index ({:.2} s training codebooks) and {:.2} s full text; the rest ({:.2} s) reading, validating, converting and the WAL",
                b.flush_s,
                b.flushes,
                b.merge_s,
                b.merges,
                b.index_s,
                b.codebook_s,
                b.text_s,
                (s - b.flush_s - b.merge_s).max(0.0)
            )?;
        }
        Cmd::Search { db, collection, queries, query, model, k, run, stage, qrels, batch } => {
            let batch = batch.unwrap_or(commands::DEFAULT_SEARCH_BATCH);
            if !(1..=tessera::MAX_BATCH).contains(&batch) {
                return Err(format!("--batch must be in 1..={}", tessera::MAX_BATCH).into());
            }
            if let Some(run) = &run {
                tessera_cli::eval_cmd::check_search_run(run, qrels.as_deref())?;
            } else if qrels.is_some() {
                return Err("--qrels evaluates a run file: give --run".into());
            }
            let db = Database::open_read_only(&db)?;
            let c = db.collection(&collection)?;
            let has_tokens =
                |dir: &std::path::Path| dir.join("tokens.npy").exists() || dir.join("tokens.safetensors").exists();
            // Query texts are encoded by --model, else by the collection's bound model.
            let texts = query.is_some() || queries.as_deref().is_some_and(|d| !has_tokens(d));
            let model = match &model {
                Some(m) => Some(tessera::load_model(m)?),
                None if texts => Some(c.text_model().map_err(|e| format!("{e} (or give --model DIR)"))?),
                None => None,
            };
            let source = match (&queries, &query, &model) {
                (_, Some(text), Some(m)) => commands::Queries::One(text, m),
                (Some(dir), None, Some(_)) if has_tokens(dir) => {
                    return Err(format!(
                        "{}: has query tokens, and --model would encode the texts instead: drop one of them",
                        dir.display()
                    )
                    .into());
                }
                (Some(dir), None, Some(m)) => commands::Queries::Texts(dir, m),
                (Some(dir), None, None) => commands::Queries::Folder(dir),
                _ => return Err("give --queries FOLDER or --query TEXT".into()),
            };
            // Refused options leave an existing run file as it was.
            let mode = stage.mode(k)?;
            mode.check(&c)?;
            let mut hits = Vec::new();
            let mut out: Box<dyn Write> = match &run {
                None => Box::new(&mut hits),
                Some(run) if run.as_os_str() == "-" => Box::new(std::io::stdout()),
                Some(run) => Box::new(commands::CreatedOnWrite::new(run)),
            };
            let r = commands::search(&db, &collection, &source, &mode, batch, &mut out)?;
            drop(out);
            let total: f64 = r.latencies.iter().map(|d| d.as_secs_f64()).sum();
            let per = if r.batch > 1 { format!(" per batch of up to {}", r.batch) } else { String::new() };
            eprintln!(
                "{} queries, k={k}, {}: p50 {:.2} ms, p99 {:.2} ms{per}, {:.0} queries/s",
                r.queries,
                r.stage,
                r.percentile(0.5).as_secs_f64() * 1e3,
                r.percentile(0.99).as_secs_f64() * 1e3,
                r.queries as f64 / total.max(1e-9)
            );
            if run.is_none() {
                commands::print_hits(&*db.collection(&collection)?, &hits, stdout)?;
            }
            if let (Some(q), Some(run)) = (qrels, &run) {
                tessera_cli::eval_cmd::after_search(run, &q, k, stdout)?;
            }
        }
        Cmd::Encode { model, input, out, queries } => {
            let model = tessera::load_model(&model)?;
            let kind = if queries { tessera_cli::text::Kind::Query } else { tessera_cli::text::Kind::Document };
            let r = tessera_cli::text::encode_file(&model, &input, &out, kind)?;
            let s = r.elapsed.as_secs_f64();
            writeln!(
                stdout,
                "encoded {} texts into {} tokens of dim {} in {s:.2} s ({:.0} texts/s, {:.0} tokens/s); {} texts cut at the model's {} length",
                r.texts,
                r.tokens,
                model.dim(),
                r.texts as f64 / s,
                r.tokens as f64 / s,
                r.truncated,
                if queries { "query" } else { "document" },
            )?;
        }
        Cmd::Reindex { db, collection, model, json } => {
            tessera_cli::text::reindex(&db, &collection, &model, stdout, json)?
        }
        Cmd::Bench { what: BenchCmd::Encode(args) } => {
            for line in tessera_cli::text::bench(&args)? {
                writeln!(stdout, "{line}")?;
            }
        }
        Cmd::Bench { what: BenchCmd::Storage(shape) } => {
            let (query_tokens, doc_tokens, dim, docs, threads) = shape.checked()?;
            for r in tessera_kernels::bench::bench_storage(query_tokens, doc_tokens, dim, docs, threads) {
                let v = serde_json::json!({
                    "bench": "storage", "repr": r.repr, "kernel": r.kernel, "bytes_per_token": r.bytes_per_token,
                    "query_tokens": query_tokens, "doc_tokens": doc_tokens, "dim": dim, "docs": docs,
                    "threads": threads, "docs_per_s": r.docs_per_s.round(),
                    "gb_per_s": (r.gb_per_s * 100.0).round() / 100.0, "vs_f16": (r.vs_f16 * 100.0).round() / 100.0,
                });
                writeln!(stdout, "{v}")?;
            }
        }
        Cmd::Bench { what: BenchCmd::Maxsim { shape, kernels, batch } } => {
            let (query_tokens, doc_tokens, dim, docs, threads) = shape.checked()?;
            let chosen = tessera_kernels::Kernel::detect();
            for k in kernels.kernels()? {
                if !batch.is_empty() {
                    if batch.contains(&0) {
                        return Err("batch sizes must be at least 1".into());
                    }
                    let rows = tessera_kernels::bench_batch(k, query_tokens, doc_tokens, dim, docs, threads, &batch);
                    for r in rows {
                        let v = serde_json::json!({
                            "bench": "maxsim_batch", "kernel": r.kernel, "default": k == chosen, "batch": r.batch,
                            "query_tokens": query_tokens, "doc_tokens": doc_tokens, "dim": dim, "docs": docs,
                            "threads": threads, "pairs_per_s": r.pairs_per_s.round(),
                            "gflops": (r.gflops * 100.0).round() / 100.0,
                            "vs_batch_1": (r.vs_batch_1 * 100.0).round() / 100.0,
                            "max_abs_diff_vs_alone": r.max_abs_diff_vs_alone,
                        });
                        writeln!(stdout, "{v}")?;
                    }
                    continue;
                }
                let r = tessera_kernels::bench_maxsim_with(k, query_tokens, doc_tokens, dim, docs, threads);
                let v = serde_json::json!({
                    "bench": "maxsim", "kernel": r.kernel, "default": k == chosen,
                    "query_tokens": r.query_tokens, "doc_tokens": r.doc_tokens,
                    "dim": r.dim, "docs": r.docs, "threads": r.threads,
                    "docs_per_s": r.docs_per_s.round(), "gflops": (r.gflops * 100.0).round() / 100.0,
                    "pairwise_docs_per_s": r.pairwise_docs_per_s.round(),
                    "pairwise_gflops": (r.pairwise_gflops * 100.0).round() / 100.0,
                    "speedup_vs_pairwise": (r.speedup_vs_pairwise * 100.0).round() / 100.0,
                    "fma_peak_gflops": (r.peak_gflops * 100.0).round() / 100.0,
                    "fraction_of_peak": (r.fraction_of_peak * 1000.0).round() / 1000.0,
                    "max_abs_diff_vs_pairwise": r.max_abs_diff,
                });
                writeln!(stdout, "{v}")?;
            }
        }
        Cmd::Bench {
            what:
                BenchCmd::Search { db, collection, queries, k, candidates, rerank, ef, nprobe, qrels, exact_run, json },
        } => {
            let db = Database::open_read_only(&db)?;
            let o = tessera_cli::bench::SearchBench {
                collection,
                queries,
                k,
                candidates,
                rerank,
                ef,
                nprobe,
                qrels,
                exact_run,
            };
            tessera_cli::bench::search(&db, &o, json, stdout)?;
        }
        Cmd::Settings { db, collection, settings } => {
            let db = Database::open(&db)?;
            let c = db.collection(&collection)?;
            let s = settings.settings();
            let now = if s.given().is_empty() { tessera::Settings::of(&c.config()) } else { c.update_settings(&s)? };
            writeln!(stdout, "{}", serde_json::to_string(&now)?)?;
        }
        Cmd::Compact { db, collection } => {
            let db = Database::open(&db)?;
            let c = db.collection(&collection)?;
            let t = std::time::Instant::now();
            c.compact()?;
            let st = c.stats();
            writeln!(
                stdout,
                "compacted {collection} in {:.2} s: {} documents in {} segment(s)",
                t.elapsed().as_secs_f64(),
                st.documents,
                st.segments
            )?;
        }
        Cmd::Info { db, json } => {
            let db = Database::open_read_only(&db)?;
            commands::info(&db, stdout, json)?;
        }
        Cmd::Backup { db, out, json } => commands::backup_report(&tessera::backup(&db, &out)?, "backup", stdout, json)?,
        Cmd::Restore { from, db, json } => {
            commands::backup_report(&tessera::restore(&from, &db)?, "restored", stdout, json)?
        }
        Cmd::Eval(a) => tessera_cli::eval_cmd::eval(&a, stdout)?,
        Cmd::MineNegatives(a) => tessera_cli::mine::run(&a, stdout)?,
        Cmd::Tune(a) => tessera_cli::tune::run(&a, stdout)?,
        Cmd::Inspect(a) => tessera_cli::inspect::run(&a, stdout)?,
        Cmd::Serve(a) => tessera_cli::serve::serve(&a)?,
        Cmd::Bench { what: BenchCmd::Serve(a) } => tessera_cli::serve::load(&a, stdout)?,
        Cmd::Bench { what: BenchCmd::Writes(a) } => tessera_cli::bench_writes::run(&a, stdout)?,
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
