//! # lrid-stats
//!
//! The observable statistics of Nayebi et al. (NeurIPS 2020), spec §1: tensors of a layer
//! (weights, activations on an evaluation set, per-example layer-wise activity change) flow in
//! as `&[f32]` or `&[f64]`; the 45 named statistics flow out as [`MeasureStats`]
//! (21 for weights, 21 for activations, 3 for the activity change).
//!
//! * Weights: every statistic over the whole kernel ([`weight_statistics`]); `norm` is the
//!   Frobenius norm of the whole kernel.
//! * Activations: statistics per example over its units, averaged over examples. The
//!   [`ActivationAccumulator`] takes an evaluation pass in as many batches as it arrives in and
//!   merges; the result equals the one on the whole set.
//! * Layer-wise activity change: per-example scalars averaged ([`GradAvgAccumulator`]).
//! * A [`MeasurementModel`] (unit subsampling, Gaussian noise) is applied before the statistics.
//!
//! Everything accumulates in f64. Variance is the population variance, skew is Pearson's second
//! coefficient 3(mean − median)/σ, kurtosis is not excess, and quantiles follow TensorFlow's
//! "nearest" percentile rule. A constant group has variance 0 and NaN skew and kurtosis.
//! Non-finite inputs are refused with an error that says how many and where.

mod element;
mod group;
mod measurement;
mod names;
mod observe;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use element::Element;
pub use group::{FunctionStats, GroupStats, Scratch, nearest_rank, summarize};
pub use measurement::{MeasurementModel, NoiseSource, NoiseStream, UnitSelection};
pub use names::{
    Function, Measure, Observable, Statistic, admissible_observables, all_observables,
};
pub use observe::{
    ActivationAccumulator, GradAvgAccumulator, MeasureStats, PartialStats, WeightObserver,
    weight_statistics,
};

/// Errors of the statistics engine.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("{measure} tensor is empty: statistics need at least one value")]
    Empty { measure: Measure },

    #[error("{measure} values do not match their shape: {detail}")]
    ShapeMismatch { measure: Measure, detail: String },

    #[error(
        "{measure} tensor has {count} non-finite value(s) of {total} ({nan} NaN, {infinite} infinite); first at {first}"
    )]
    NonFinite {
        measure: Measure,
        count: usize,
        nan: usize,
        infinite: usize,
        total: usize,
        first: String,
    },

    #[error("invalid measurement model: {0}")]
    InvalidModel(String),

    #[error("cannot merge accumulators: {0}")]
    Merge(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
