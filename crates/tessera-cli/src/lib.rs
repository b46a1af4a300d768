//! The `tessera` command line: library side, so tests and benches can reuse
//! the bulk-format reader, the synthetic corpus and the commands.
//!
//! | module | owns |
//! |---|---|
//! | [`bulk`] | reading the bulk data format (JSONL + tokens.npy + offsets.npy) |
//! | [`synth`] | synthetic clustered corpora and .npy/bulk writers |
//! | [`commands`] | demo, ingest, search, info |
//! | [`eval`] | retrieval metrics over TREC runs and qrels |

pub mod bench;
pub mod bulk;
pub mod commands;
pub mod eval;
pub mod synth;
