//! # lrid-identify
//!
//! Identifiers and live identification: which learning rule trains a network *while* it
//! trains. In: a corpus ([`lrid_classify::Dataset`]) and a classifier plugin → an
//! [`Identifier`] (one model per prefix length k = 1…points, fitted by `lrid identify fit`,
//! carried to the daemon as an Arrow IPC stream and kept in its data folder); then, in the
//! daemon, every completed point of every run (from the store, whoever sent it) → rows of the
//! `identifications` table: per layer and per run, the probability of each rule given the
//! points so far. Out also: the `identifiers` SQL table and the Flight actions
//! `lrid.put_identifier` and `lrid.delete_identifier`.

pub mod identifier;
pub mod live;

use std::path::{Path, PathBuf};

pub use identifier::{FitOptions, Identifier, IdentifierMeta, LoadedIdentifier, fit};
pub use live::{IDENTIFIERS_TABLE, IdentifyService};

/// Errors of identification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed identifier or request, a corpus that cannot train one (→ InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// An identifier that does not exist (→ NotFound).
    #[error("{0}")]
    NotFound(String),
    /// An identifier name in use (→ AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Classify(#[from] lrid_classify::Error),
    #[error(transparent)]
    Plugin(#[from] lrid_plugins::Error),
    #[error(transparent)]
    Store(#[from] lrid_store::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place where an identification error becomes an action error (and so a Flight
/// status).
pub fn action_error(e: Error) -> lrid_server::ActionError {
    use lrid_server::ActionError as A;
    match e {
        Error::InvalidArgument(m) => A::InvalidArgument(m),
        Error::NotFound(m) => A::NotFound(m),
        Error::AlreadyExists(m) => A::AlreadyExists(m),
        Error::Classify(e @ lrid_classify::Error::InvalidArgument(_)) => {
            A::InvalidArgument(e.to_string())
        }
        Error::Plugin(e) => A::InvalidArgument(e.to_string()),
        Error::Store(lrid_store::Error::InvalidArgument(m)) => A::InvalidArgument(m),
        Error::Store(lrid_store::Error::NotFound(m)) => A::NotFound(m),
        e @ (Error::Classify(_)
        | Error::Store(_)
        | Error::Arrow(_)
        | Error::DataFusion(_)
        | Error::Io { .. }) => A::Internal(e.to_string()),
    }
}

/// Syncs a folder (after a rename or a removal in it).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}
