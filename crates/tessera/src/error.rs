//! The engine's error type: one enum, with corruption kept distinct from I/O.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corrupted file {file} at byte {offset}: {reason}")]
    Corrupted { file: PathBuf, offset: u64, reason: String },
    #[error("{file}: unsupported format version {major}.{minor} (this build reads {supported}.x)")]
    UnsupportedVersion { file: PathBuf, major: u16, minor: u16, supported: u16 },
    #[error("wrong dimension{}: got {got}, the collection has dim {expected}", at(.id))]
    DimensionMismatch { id: Option<String>, expected: usize, got: usize },
    #[error("empty tensor{}: at least one token is required", at(.id))]
    EmptyTensor { id: Option<String> },
    #[error("invalid value{} at token {row}, component {col}: {value} (values must be finite and within f16 range ±65504)", at(.id))]
    InvalidValue { id: Option<String>, row: usize, col: usize, value: f32 },
    #[error("tensor{} has {len} values, not a multiple of dim {dim}", at(.id))]
    RaggedTensor { id: Option<String>, len: usize, dim: usize },
    #[error("duplicate id {0:?} within one batch")]
    DuplicateId(String),
    #[error("id is empty")]
    EmptyId,
    #[error("id is {len} bytes; the limit is {max}")]
    IdTooLong { len: usize, max: usize },
    #[error("payload of {id:?} is invalid: {reason}")]
    InvalidPayload { id: String, reason: String },
    #[error("batch is {bytes} bytes encoded; the limit is {max}")]
    BatchTooLarge { bytes: usize, max: usize },
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("collection {0:?} already exists")]
    CollectionExists(String),
    #[error("invalid collection name {0:?}: use 1-64 characters from A-Z a-z 0-9 _ -")]
    InvalidCollectionName(String),
    #[error("collection {name:?} exists with a different configuration: {reason}")]
    ConfigMismatch { name: String, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The database holds a writer already: another process's, or a
    /// `Database` of this process (the second field says which).
    #[error("database {0} is already open {1}")]
    Locked(PathBuf, &'static str),
    #[error("{0} is opened read-only: it takes no writes")]
    ReadOnly(PathBuf),
    #[error("no database at {0} (a read-only open does not create one)")]
    NoDatabase(PathBuf),
    #[error("collection {0:?} accepts no more writes (it was dropped, or a write failed); reopen the database")]
    Poisoned(String),
    #[error("full-text index: {0}")]
    Text(String),
    #[error("the search ran past its deadline and was stopped")]
    DeadlineExceeded,
    #[error("{0} exists: a backup or restore writes only to a new (or empty) folder")]
    DestinationExists(PathBuf),
    /// A collection kept changing while a backup copied it: its name and how many times it was taken.
    #[error("collection {0:?} kept changing during the backup ({1} tries): try again")]
    Changing(String, usize),
    #[error(
        "collection {0:?} was replaced by a reindex (a new version with the new model's tokens): get it from the database again"
    )]
    Replaced(String),
    #[error("collection {0:?} is being reindexed already")]
    Reindexing(String),
}

impl From<tessera_format::names::UnknownName> for Error {
    fn from(e: tessera_format::names::UnknownName) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// What kind of failure an [`Error`] is: the one classification every
/// interface maps to its own codes (HTTP status, gRPC code, Python class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input was refused (nothing was written).
    InvalidInput,
    /// A batch over the size limit.
    TooLarge,
    /// No such collection.
    NotFound,
    /// The collection exists (perhaps with another configuration).
    AlreadyExists,
    /// A file failed verification, or has a version this build cannot read.
    Corruption,
    /// The file system (or the full-text index underneath) failed.
    Io,
    /// The database is open elsewhere, or the collection refuses writes.
    Unavailable,
    /// A search ran past its deadline and was stopped.
    Timeout,
}

impl Error {
    /// The id of the document an input error is about, when it names one.
    pub fn document_id(&self) -> Option<&str> {
        match self {
            Error::DimensionMismatch { id, .. }
            | Error::EmptyTensor { id }
            | Error::InvalidValue { id, .. }
            | Error::RaggedTensor { id, .. } => id.as_deref(),
            Error::DuplicateId(id) | Error::InvalidPayload { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        use Error as E;
        match self {
            E::DimensionMismatch { .. }
            | E::EmptyTensor { .. }
            | E::InvalidValue { .. }
            | E::RaggedTensor { .. }
            | E::DuplicateId(_)
            | E::EmptyId
            | E::IdTooLong { .. }
            | E::InvalidPayload { .. }
            | E::InvalidCollectionName(_)
            | E::InvalidArgument(_) => ErrorKind::InvalidInput,
            E::BatchTooLarge { .. } => ErrorKind::TooLarge,
            E::UnknownCollection(_) | E::NoDatabase(_) => ErrorKind::NotFound,
            E::CollectionExists(_) | E::ConfigMismatch { .. } | E::DestinationExists(_) | E::Reindexing(_) => {
                ErrorKind::AlreadyExists
            }
            E::Corrupted { .. } | E::UnsupportedVersion { .. } => ErrorKind::Corruption,
            E::Io { .. } | E::Text(_) => ErrorKind::Io,
            E::Poisoned(_) | E::Locked(..) | E::ReadOnly(_) | E::Changing(..) | E::Replaced(_) => {
                ErrorKind::Unavailable
            }
            E::DeadlineExceeded => ErrorKind::Timeout,
        }
    }
}

fn at(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" in document {id:?}")).unwrap_or_default()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn format(file: impl Into<PathBuf>) -> impl FnOnce(tessera_format::FormatError) -> Error {
        let file = file.into();
        move |e| match e {
            tessera_format::FormatError::Corrupted { offset, reason } => Error::Corrupted { file, offset, reason },
            tessera_format::FormatError::UnsupportedVersion { major, minor, supported } => {
                Error::UnsupportedVersion { file, major, minor, supported }
            }
        }
    }
}
