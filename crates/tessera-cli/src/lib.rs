//! The `tessera` command line: library side, so tests and benches can reuse
//! the bulk-format reader, the synthetic corpus and the commands.
//!
//! | module | owns |
//! |---|---|
//! | [`bulk`] | reading the bulk data format (JSONL + tokens.npy + offsets.npy) |
//! | [`synth`] | synthetic clustered corpora and .npy/bulk writers |
//! | [`commands`] | demo, ingest, search, info |
//! | [`eval`] | retrieval metrics over TREC runs and qrels |
//! | [`eval_cmd`] | `tessera eval` (and `search --qrels`): metric tables and JSON |
//! | [`mine`] | `tessera mine-negatives`: hard negatives for fine-tuning |
//! | [`inspect`] | `tessera inspect`: headers, counts and checksums of a collection's files |
//! | [`ingest`] | `tessera ingest`: batching, validation, progress, --on-error, --resume |
//! | [`serve`] | `tessera serve` (the query server) and `tessera bench serve` (its load test) |
//! | [`tune`] | `tessera tune`: the weights of a collection's fused ranking, fitted on judgments |
//! | [`bench`] | `tessera bench search`: two-stage against exact search, quality and latency in one run |
//! | [`bench_writes`] | `tessera bench writes`: write latency while memtables seal and segments merge |
//! | [`text`] | texts through the built-in encoder: `tessera encode`, and `--model` of ingest and search |
//! | [`args`] | arguments several commands share (named settings, the rank of hybrid search) |

pub mod args;
pub mod bench;
pub mod bench_writes;
pub mod bulk;
pub mod commands;
pub mod eval;
pub mod eval_cmd;
pub mod ingest;
pub mod inspect;
pub mod mine;
pub mod serve;
pub mod synth;
pub mod text;
pub mod tune;
