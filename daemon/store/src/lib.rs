//! # lrid-store
//!
//! The daemon's durable state. In: ingest messages of the lrid protocol ([`lrid_protocol`]) —
//! runs opened and closed, layer snapshots (tensor values), trajectory points completed (with
//! optional per-layer diagnostics). Out: the tables `runs`, `layers`, `observables` (one row per
//! run × point × layer × measurement model, the 45 statistics as columns) and `diagnostics` (one
//! row per run × point × layer × diagnostic name, e.g. the angle between feedback and forward
//! kernels), queryable with SQL through DataFusion while ingest goes on, and as Parquet files any
//! tool can read. Also in: identification rows from the daemon's live identification (table
//! `identifications`, durable the same way); out: every completed point to the
//! [`PointListener`]s.
//!
//! Statistics are computed as snapshots arrive (activation batches merge incrementally); raw
//! tensors are never kept. Each accepted snapshot's contribution is appended to a write-ahead
//! log and synced before it is acknowledged, so a crash at any moment loses nothing
//! acknowledged: restart replays the log. A checkpoint moves completed rows to Parquet, writes
//! the image of what is still pending and moves the log on to a new segment, writing its files
//! outside the store lock ([`Store::checkpoint`]). Small Parquet files are merged in the
//! background into files sorted by run, point and layer ([`Store::compact`]).
//!
//! On disk, under the data folder:
//!
//! ```text
//! manifest.json                    which files are current (replaced atomically)
//! observables/part-NNNNNNNN.parquet  observable rows, sorted by run, layer, point
//! diagnostics/part-NNNNNNNN.parquet  diagnostic rows, sorted by run, layer, point, name
//! identifications/part-NNNNNNNN.parquet  what live identification concluded, by run
//! runs/runs-NNNNNNNN.parquet       every run (rewritten at each checkpoint)
//! layers/layers-NNNNNNNN.parquet   every layer
//! analyses/analysis-<hash>.parquet what `lrid analyze` measured (table `analyses`)
//! wal/NNNNNNNN.wal                 write-ahead log segments
//! wal/NNNNNNNN.image               what was pending at the last checkpoint (replayed first)
//! ```
//!
//! e.g. DuckDB: `SELECT * FROM 'lrid-data/observables/*.parquet'`.
//!
//! With `[store] object_store = "s3://bucket/prefix"` the same tables and `manifest.json` live
//! in the object store under `prefix/node=<id>/` (one folder per writing daemon; Parquet files
//! are created, never replaced; the manifest is replaced by conditional put; `analyses/` beside
//! them), while `wal/` and `node.json` (which node this folder's log belongs to) stay in the
//! data folder. A read-only store (`read_only`) serves the union of every node's files and re-reads
//! their manifests every `refresh_interval_ms`.

mod analyses;
mod files;
mod identifications;
mod state;
mod tables;
mod wal;

use std::path::{Path, PathBuf};

pub use analyses::{ANALYSES_SCHEMA, AnalysisRow, analyses_batch};
pub use files::NODE_PREFIX;
pub use identifications::{
    IDENTIFICATION_ROWS_TABLE, IDENTIFICATIONS_SCHEMA, IDENTIFICATIONS_VIEW, IdentificationRow,
    probability_column,
};
pub use state::{CompactReport, ModelConfig, PointCompleted, PointListener, Store, StoreConfig};
pub use tables::{DIAGNOSTICS_SCHEMA, LAYERS_SCHEMA, OBSERVABLES_SCHEMA, RUNS_SCHEMA};

/// Errors of the store. The server maps each kind to one Flight status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or inconsistent (→ InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// A run that does not exist (→ NotFound).
    #[error("{0}")]
    NotFound(String),
    /// Something that exists already: a point completed, a run opened with other labels
    /// (→ AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request does not fit the current state: a closed run (→ FailedPrecondition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The tensor's values cannot be summarised (non-finite values, …) (→ InvalidArgument).
    #[error("{0}")]
    Stats(#[from] lrid_stats::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An object store refused or failed a call (wrong credentials, missing bucket, network).
    /// (`cause` is explained in one line by the message, not chained after it.)
    #[error("{location}: {}", crate::files::explain(cause))]
    ObjectStore {
        location: String,
        cause: Box<object_store::Error>,
    },
    #[error("the store's files are damaged: {0}")]
    Corrupt(String),
    /// A file written by a newer lrid, in a format this one does not read (nothing is changed).
    #[error("{0}")]
    NewerFormat(String),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
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
