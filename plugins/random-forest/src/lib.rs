//! The built-in random forest classifier plugin (`random-forest`): scikit-learn's
//! `RandomForestClassifier`, grown on binned features and in parallel.
//!
//! In: a training matrix (rows × features, `f64`), which `prepare` bins once (quantile bins of
//! each feature, at most 255, `u8` codes, column-major) and ranks (dense ranks of each
//! feature's distinct values, row-major, and the distinct values); then fits on subsets
//! of its rows with class labels `0..n_classes` and a JSON configuration. Out: class
//! probabilities (the mean over trees of the class fractions of the leaf a row falls in), the
//! impurity-decrease feature importances of every tree (each normalised to sum 1), and the
//! model as bytes (a versioned little-endian format, [`format`]).
//!
//! Configuration keys (defaults in brackets): `n_estimators` (100); `max_features`, features
//! drawn at each split: `"sqrt"` (⌊√p⌋, the default), `"log2"` (⌊log₂ p⌋), `"all"` (p) or a
//! fraction in (0, 1] (⌊f·p⌋), at least 1; `criterion` (`"gini"` | `"entropy"`); `bootstrap`
//! (true); `max_depth` (null: unlimited); `min_samples_split` (2); `min_samples_leaf` (1);
//! `max_bins` (255, at most 255); `exact_below` (1024: nodes of at most this many samples split
//! by sorting their values instead of from histograms, [`config::DEFAULT_EXACT_BELOW`]);
//! `seed` (0; lrid sets it for every fit). Unknown keys are refused.
//!
//! Grids (`lrid analyze --grid NAME`): `"paper"`, the paper's grid, `max_features` ∈ {sqrt,
//! log2, all} × `n_estimators` ∈ {20, 50, 100, 500, 1000} (15 configurations, `max_features`
//! the outer loop); `"fast"`, scikit-learn's default forest alone, `max_features` = sqrt ×
//! `n_estimators` = 100 (1 configuration, so no inner cross-validation: on the demo corpus the
//! earlier fast grid's sqrt and log2 scored within 0.7 points of each other in every measure's
//! cross-validation, and its inner folds were 10 of every 17 fits of the main experiment).
//!
//! Semantics are scikit-learn's: each tree is grown on a bootstrap sample (n draws with
//! replacement, as integer sample weights), to full depth (a node is a leaf when pure, smaller
//! than `min_samples_split` or `2·min_samples_leaf`, at `max_depth`, or when no drawn feature
//! can split it), drawing `max_features` features per split without replacement and drawing on
//! while none of those drawn can split the node (constant features count as drawn); thresholds are midpoints between adjacent distinct
//! values of the node's samples, so prediction works on raw values. What differs: a node of
//! more than `exact_below` samples considers only thresholds at bin boundaries (between the
//! node's largest value of one bin and smallest of the next: exact for features with at most
//! `max_bins` distinct values); smaller nodes split exactly, on a copy of their samples' ranks
//! that keeps the scans of their subtree in cache; values are `f64` (scikit-learn rounds them
//! to `f32`); values closer than 1e-7 still split; the random streams differ. Trees are seeded from
//! `seed` and their index (ChaCha8, one stream per tree), so a fit is the same whatever the thread
//! count.
//!
//! Written by hand: no crate does this well. smartcore's and linfa's forests grow their trees
//! one after another, draw the feature subset once per tree rather than per split, and give no
//! probabilities.

use std::ffi::CStr;

use lrid_plugin::{Classifier, Matrix};
use rayon::prelude::*;

pub mod config;
pub mod data;
pub mod format;
mod tree;

#[cfg(test)]
mod tests;

pub use config::{Criterion, Params};
pub use data::Prepared;
use data::{Rank, Ranks};

/// A fitted random forest.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomForest {
    n_classes: usize,
    n_features: usize,
    trees: Vec<tree::Tree>,
}

/// The grids: `"paper"` (15 configurations) and `"fast"` (1).
const GRIDS: &CStr = c"{\"paper\": [\
{\"max_features\": \"sqrt\", \"n_estimators\": 20}, \
{\"max_features\": \"sqrt\", \"n_estimators\": 50}, \
{\"max_features\": \"sqrt\", \"n_estimators\": 100}, \
{\"max_features\": \"sqrt\", \"n_estimators\": 500}, \
{\"max_features\": \"sqrt\", \"n_estimators\": 1000}, \
{\"max_features\": \"log2\", \"n_estimators\": 20}, \
{\"max_features\": \"log2\", \"n_estimators\": 50}, \
{\"max_features\": \"log2\", \"n_estimators\": 100}, \
{\"max_features\": \"log2\", \"n_estimators\": 500}, \
{\"max_features\": \"log2\", \"n_estimators\": 1000}, \
{\"max_features\": \"all\", \"n_estimators\": 20}, \
{\"max_features\": \"all\", \"n_estimators\": 50}, \
{\"max_features\": \"all\", \"n_estimators\": 100}, \
{\"max_features\": \"all\", \"n_estimators\": 500}, \
{\"max_features\": \"all\", \"n_estimators\": 1000}], \
\"fast\": [\
{\"max_features\": \"sqrt\", \"n_estimators\": 100}]}";

/// Rows predicted together: every tree is walked for a block of rows while it is in cache.
const PREDICT_BLOCK: usize = 64;

impl RandomForest {
    /// Fits a forest with checked parameters on rows `rows` of `data` (see
    /// [`Classifier::fit`]).
    pub fn fit_params(
        params: &Params,
        data: &Prepared,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String> {
        if rows.len() != labels.len() {
            return Err(format!("{} rows but {} labels", rows.len(), labels.len()));
        }
        if rows.is_empty() {
            return Err("cannot fit a random forest on no rows".into());
        }
        if n_classes == 0 {
            return Err("cannot fit a random forest with 0 classes".into());
        }
        if let Some(r) = rows.iter().find(|&&r| r as usize >= data.rows) {
            return Err(format!(
                "row {r} is not in the prepared matrix of {} rows",
                data.rows
            ));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(format!("label {l} is not below the {n_classes} classes"));
        }
        let bins = data.bins(params.max_bins);
        let xlogx: Vec<f64> = match params.criterion {
            Criterion::Gini => Vec::new(),
            Criterion::Entropy => (0..=rows.len())
                .map(|c| {
                    if c == 0 {
                        0.0
                    } else {
                        c as f64 * (c as f64).ln()
                    }
                })
                .collect(),
        };
        let trees = match &data.ranks {
            Ranks::U16(ranks) => {
                grow_all(params, data, ranks, &bins, &xlogx, rows, labels, n_classes)
            }
            Ranks::U32(ranks) => {
                grow_all(params, data, ranks, &bins, &xlogx, rows, labels, n_classes)
            }
        };
        Ok(Self {
            n_classes,
            n_features: data.cols,
            trees,
        })
    }

    /// The number of trees.
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// The number of feature columns the forest was fitted on.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The total number of nodes of all trees.
    pub fn n_nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}

/// Grows the trees of a forest in parallel.
#[allow(clippy::too_many_arguments)]
fn grow_all<R: Rank>(
    params: &Params,
    data: &Prepared,
    ranks: &[R],
    bins: &data::Bins<'_>,
    xlogx: &[f64],
    rows: &[u32],
    labels: &[u32],
    n_classes: usize,
) -> Vec<tree::Tree> {
    let ctx = tree::Ctx {
        ranks,
        values: &data.values,
        value_start: &data.value_start,
        codes: &bins.codes,
        n_bins: &bins.n_bins,
        multi: &bins.multi,
        n_data: data.rows,
        n_features: data.cols,
        n_classes,
        params,
        xlogx,
    };
    (0..params.n_estimators)
        .into_par_iter()
        .map(|t| tree::grow(&ctx, rows, labels, t))
        .collect()
}

impl Classifier for RandomForest {
    type Data = Prepared;
    const GRIDS: &'static CStr = GRIDS;
    const CAN_SAVE: bool = true;
    const HAS_IMPORTANCES: bool = true;

    fn prepare(x: Matrix<'_>) -> Result<Prepared, String> {
        Prepared::new(x)
    }

    fn fit(
        config: &serde_json::Value,
        data: &Prepared,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String> {
        let params = Params::from_config(config, data.cols)?;
        Self::fit_params(&params, data, rows, labels, n_classes)
    }

    fn predict_proba(&self, x: Matrix<'_>) -> Result<Vec<f64>, String> {
        if x.cols() != self.n_features {
            return Err(format!(
                "the forest was fitted on {} features; the matrix has {}",
                self.n_features,
                x.cols()
            ));
        }
        let k = self.n_classes;
        let mut out = vec![0.0; x.rows() * k];
        let n_trees = self.trees.len() as f64;
        out.par_chunks_mut(PREDICT_BLOCK * k)
            .enumerate()
            .for_each(|(block, out)| {
                let r0 = block * PREDICT_BLOCK;
                let rows: Vec<&[f64]> = (r0..r0 + out.len() / k).map(|i| x.row(i)).collect();
                for tree in &self.trees {
                    tree.accumulate(&rows, k, out);
                }
                for o in out.iter_mut() {
                    *o /= n_trees;
                }
            });
        Ok(out)
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn save(&self) -> Result<Vec<u8>, String> {
        Ok(format::save(self))
    }

    fn load(bytes: &[u8]) -> Result<Self, String> {
        format::load(bytes)
    }

    fn importances(&self) -> Result<Vec<Vec<f64>>, String> {
        Ok(self.trees.iter().map(|t| t.importances.clone()).collect())
    }
}

lrid_plugin::export_classifier!(RandomForest, name = "random-forest", version = "1.0.0");
