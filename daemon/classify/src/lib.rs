//! # lrid-classify
//!
//! Identification: which learning rule trained a network, from its observables (spec §2–§3).
//! In: rows of the `classifier_examples` view (Arrow record batches, one row per layer of a
//! closed run under one measurement model, the 24 admissible statistics as trajectories) and
//! classifier plugins loaded by the plugin host. Out: a [`Dataset`] (labels, metadata, feature
//! matrices; also as one record batch for `lrid dataset export`), and the paper's experiments
//! run on it ([`analyze`]) as an [`AnalysisResults`](lrid_report::AnalysisResults).
//!
//! The protocol ([`protocol`]): ten category-balanced 75/25 outer splits; continuous features
//! z-scored on each training set; each classifier's configuration grid searched by stratified
//! 5-fold cross-validation on the training set; the best configuration refit and tested. A
//! training matrix is prepared by the plugin once and shared by every configuration and fold.

pub mod dataset;
pub mod early;
pub mod experiments;
pub mod protocol;

pub use dataset::{Dataset, EXAMPLES_VIEW, Example, MeasureSet, Points};
pub use experiments::{AnalysisOptions, EXPERIMENTS, Progress, Quiet, analyze};

/// Errors of identification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a corpus that cannot be split, an unknown experiment, …
    #[error("{0}")]
    InvalidArgument(String),
    /// A classifier plugin failed or refused a call.
    #[error(transparent)]
    Plugin(#[from] lrid_plugins::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
