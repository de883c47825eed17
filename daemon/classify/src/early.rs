//! Early identification: classifiers that see only the first `k` points of each layer's
//! trajectory (a real early prediction, not a full-trajectory model fed zeros), and the
//! run-level decision that combines a run's layers. Shared by `lrid identify fit` (one model
//! per prefix length, kept by the daemon) and the `early` experiment of `lrid analyze` (the
//! fraction of held-out runs identified after `k` points).
//!
//! **Run-level probabilities** are the mean of the run's layer probabilities (a soft vote, each
//! layer one vote): robust to a few confidently wrong layers, where a product of probabilities
//! (layers as independent evidence) lets one layer veto every other.

use std::collections::BTreeMap;
use std::sync::Arc;

use lrid_plugin::FeatureLayout;
use lrid_plugins::{ClassifierModel, Plugin, argmax};

use crate::dataset::{Dataset, MeasureSet, Points};
use crate::protocol::{ZScore, with_seed};
use crate::{Error, Result};

/// The mean of layer probability rows: the run's probabilities.
pub fn combine_layers(layers: &[Vec<f64>]) -> Vec<f64> {
    let Some(first) = layers.first() else {
        return Vec::new();
    };
    let mut out = vec![0.0; first.len()];
    for p in layers {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    let n = layers.len() as f64;
    out.iter_mut().for_each(|o| *o /= n);
    out
}

/// A classifier fitted on the first `k` points of every training example.
#[derive(Debug)]
pub struct PrefixModel {
    /// Points seen (0..k).
    pub k: usize,
    pub measure: MeasureSet,
    pub zscore: ZScore,
    pub model: ClassifierModel,
    pub cols: usize,
    pub layout: FeatureLayout,
    pub train_examples: usize,
}

impl PrefixModel {
    /// Fits `plugin` with `config` on examples `rows` of `dataset`, points `0..k`, continuous
    /// features z-scored over those rows.
    pub fn fit(
        dataset: &Dataset,
        rows: &[usize],
        measure: MeasureSet,
        k: usize,
        plugin: &Arc<Plugin>,
        config: &serde_json::Value,
        seed: u64,
    ) -> Result<PrefixModel> {
        if rows.is_empty() {
            return Err(Error::InvalidArgument(
                "no training examples for an early classifier".into(),
            ));
        }
        let points = Points::Range { start: 0, len: k };
        let (mut x, cols, layout) = dataset.matrix(rows, measure, &points)?;
        let zscore = ZScore::fit(&x, cols, layout);
        zscore.apply(&mut x);
        let labels: Vec<u32> = rows.iter().map(|&i| dataset.labels[i]).collect();
        let data = plugin.prepare(x, cols, layout)?;
        let all: Vec<u32> = (0..rows.len() as u32).collect();
        let model = data.fit(&with_seed(config, seed), &all, &labels, dataset.rules.len())?;
        Ok(PrefixModel {
            k,
            measure,
            zscore,
            model,
            cols,
            layout,
            train_examples: rows.len(),
        })
    }

    /// Probabilities (one row per example, classes in label order) of examples `rows` of
    /// `dataset`, from their first `k` points.
    pub fn predict_rows(&self, dataset: &Dataset, rows: &[usize]) -> Result<Vec<Vec<f64>>> {
        let points = Points::Range {
            start: 0,
            len: self.k,
        };
        let (x, cols, _) = dataset.matrix(rows, self.measure, &points)?;
        self.predict_matrix(x, cols)
    }

    /// Probabilities of the raw (not yet z-scored) feature rows `x`.
    pub fn predict_matrix(&self, mut x: Vec<f64>, cols: usize) -> Result<Vec<Vec<f64>>> {
        if cols != self.cols {
            return Err(Error::InvalidArgument(format!(
                "the early classifier for {} point(s) takes {} features; got {cols}",
                self.k, self.cols
            )));
        }
        self.zscore.apply(&mut x);
        let flat = self.model.predict_proba(x, cols, self.layout)?;
        let classes = self.model.n_classes().max(1);
        Ok(flat.chunks(classes).map(<[f64]>::to_vec).collect())
    }
}

/// The examples of each run among `rows`, by run id.
pub fn runs_of(dataset: &Dataset, rows: &[usize]) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in rows {
        out.entry(dataset.examples[i].run_id.clone())
            .or_default()
            .push(i);
    }
    out
}

/// Held-out runs identified by `model`: (right, total) over the runs of `rows`, each run's
/// decision the argmax of its combined layer probabilities.
pub fn runs_right(
    dataset: &Dataset,
    rows: &[usize],
    model: &PrefixModel,
) -> Result<(usize, usize)> {
    let probs = model.predict_rows(dataset, rows)?;
    let at: BTreeMap<usize, usize> = rows.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let mut right = 0;
    let runs = runs_of(dataset, rows);
    for members in runs.values() {
        let layer_probs: Vec<Vec<f64>> = members.iter().map(|i| probs[at[i]].clone()).collect();
        let run = combine_layers(&layer_probs);
        if argmax(&run) == dataset.labels[members[0]] {
            right += 1;
        }
    }
    Ok((right, runs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_combine_by_their_mean() {
        let run = combine_layers(&[vec![0.9, 0.1], vec![0.2, 0.8], vec![0.7, 0.3]]);
        assert!((run[0] - 0.6).abs() < 1e-12 && (run[1] - 0.4).abs() < 1e-12);
        assert!(combine_layers(&[]).is_empty());
    }
}
