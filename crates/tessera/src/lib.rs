//! Tessera's embedded engine.
//!
//! A [`Database`] is a folder of [`Collection`]s. A collection stores
//! documents — an external id, a token tensor (`n × dim`, stored as f16),
//! optional text and a JSON payload — and ranks them against a query tensor
//! by MaxSim: `Σ_i max_j ⟨q_i, d_j⟩`.
//!
//! | module | owns |
//! |---|---|
//! | `database` | the folder of collections, its lock, create/drop |
//! | `collection` | writer, snapshots, flush, compaction, recovery; `collection/recovery` (opening, WAL replay), `collection/maintenance` (seals and merges off the write path), `collection/seal` (writing a segment and its indexes), `collection/merge_policy` (when and what merges), `collection/model` (the bound model) and `collection/stats` |
//! | `centroids` | the token-centroid index's lifecycle: training codebooks, coding a sealed segment, re-coding |
//! | `codebook` | a codebook file and a segment's centroid index file, loaded and verified |
//! | `search` | the search pipeline over a snapshot (one `Searcher`: coarse, screening, exact), rerank of given ids |
//! | `snapshot` | what a read sees, where a document lives in it, ranked results |
//! | `filter` | the payload filter language |
//! | `text` | BM25 full-text search over the snapshot |
//! | `hybrid` | hybrid queries: candidate sources, fusion, exact rerank |
//! | `mine` | hard-negative mining for training sets |
//! | `pool` | token pooling: a document's tokens clustered (Ward) into 1 + ⌈(n − 1) / f⌉ stored tokens (the first kept) |
//! | `recall` | the recall curve of two-stage search against exact, on the collection's own documents |
//! | `model` | collections bound to a model (tessera-encoder): text upserts and text queries |
//! | `rank` | the final order of a hybrid query (MaxSim, or a linear fusion of signals) and a collection's default `Ranking` |
//! | `backup` | online backup and restore of a whole database |
//! | `reindex` | re-encoding a collection with another model, built beside the old version, then swapped |
//! | `scan` | listing and counting documents without a query (filter, id order, pages) |
//! | `idle` | sealing the memtable of a collection that has gone quiet |
//! | `kernels` | which MaxSim kernels the process uses, and the `TESSERA_KERNEL` check |
//! | `fsutil` | the file-system steps crash safety rests on (fsync, atomic replace) |
//! | `request` | a search's options as every interface names them (`SearchOptions`), read once into a `SearchPlan` |
//! | `wire` | reading values as the interfaces send them: JSON Schema integers, size-bounded JSON |
//! | `wal`, `memtable`, `segment`, `manifest` | the storage pieces |
//! | `doc`, `config`, `error` | the API's types |
//!
//! ```no_run
//! use tessera::{CollectionConfig, Database, Document, Tokens};
//! let db = Database::open("/tmp/db")?;
//! let c = db.create_collection("docs", CollectionConfig::new(2))?;
//! c.upsert(&[Document::new("a", Tokens::from_rows(&[[1.0, 0.0], [0.0, 1.0]])?)])?;
//! let hits = c.search(&Tokens::from_rows(&[[1.0, 0.0]])?, 10)?;
//! assert_eq!(hits[0].id, "a");
//! # Ok::<(), tessera::Error>(())
//! ```

mod backup;
mod centroids;
mod codebook;
mod collection;
mod config;
mod database;
mod doc;
mod error;
mod filter;
mod fsutil;
mod hybrid;
mod idle;
mod kernels;
mod manifest;
mod memtable;
mod mine;
mod model;
mod pool;
pub mod rank;
mod recall;
mod reindex;
mod request;
mod scan;
mod search;
mod segment;
mod snapshot;
mod text;
mod wal;
pub mod wire;

pub use backup::{BackupReport, CollectionBackup, backup, refuse_inside, remove_stale_stages, restore};
pub use collection::{Collection, CollectionStats, SegmentSize, set_build_threads};
pub use config::{
    CentroidParams, CollectionConfig, Durability, EncoderConfig, HnswParams, IndexConfig, IndexKind, Keep, Language,
    MAX_DIM, MAX_ID_BYTES, MAX_SEGMENTS, MEMTABLE_BYTES, Screening, Settings, TextConfig, TextKind, TokenType,
};
pub use database::{DEFAULT_SEAL_IDLE, Database, valid_name};
pub use doc::{Document, StoredDocument, Tokens, UpsertOptions};
pub use error::{Error, ErrorKind, Result};
pub use filter::{Filter, MAX_FILTER_VALUES};
pub use half::f16;
pub use hybrid::{Fusion, FusionKind, HybridHit, HybridQuery, Source, SourceRank, fuse};
pub use kernels::{KernelInfo, check_kernel_env, kernel_info};
pub use manifest::BuildTimes;
pub use mine::{MineParams, Mined, Sampling, SplitMix64};
pub use model::{
    Encoder, ModelBinding, ModelIdentity, TextKindOf, TokensFilled, collection_dim, encode_missing, encode_texts,
    load_model, needs_tokens,
};
pub use pool::{BLOCK as POOL_BLOCK, MAX_POOL_FACTOR, pool_tokens, pooled_len, ward_groups};
pub use rank::{Component, Norm, Rank, RankKind, Ranking, Signal, Signals};
pub use recall::{
    Curve, CurvePoint, CurveRequest, MAX_CURVE_QUERY_TOKENS, MAX_CURVE_SAMPLE, MAX_CURVE_SETTINGS, share_kept,
};
pub use reindex::{ReindexProgress, ReindexReport};
pub use request::{PlanDefaults, SearchOptions, SearchPlan, SearchResults};
pub use scan::{MAX_SCAN_LIMIT, ScanPage};
pub use search::{
    CANDIDATES_PER_K, CENTROID_CANDIDATES_PER_K, DEFAULT_CANDIDATES, DEFAULT_RERANK, MAX_BATCH, MAX_BATCH_TOKENS,
    MAX_K, MAX_NPROBE, RERANK_PER_K, Reranked, SearchParams, default_candidates, default_rerank,
};
pub use snapshot::SearchHit;
pub use tessera_format::names::{Named, UnknownName};
