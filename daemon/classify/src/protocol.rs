//! The evaluation protocol of spec §3.1–§3.2: category-balanced outer splits, feature-wise
//! z-scoring on each training set, stratified inner folds, model selection over a grid by
//! cross-validation, refit, test.

use std::sync::Arc;

use lrid_plugin::FeatureLayout;
use lrid_plugins::{ClassifierData, ClassifierModel, Plugin};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::shuffled;
use crate::{Error, Result};

/// One outer split: indices of training and test examples (sorted, disjoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// `n_splits` category-balanced splits (spec §3.1) of the examples `pool` (all when `None`):
/// in each, every class gives `test_per_class` test examples and `train_per_class` training
/// examples (all the rest of the smallest class: the training set is balanced too). One seeded
/// generator draws every split in order: for each class (label order) a permutation of its
/// examples gives the test examples, then a permutation of the rest gives the training ones.
pub fn balanced_splits(
    labels: &[u32],
    rules: &[String],
    pool: Option<&[usize]>,
    n_splits: usize,
    test_fraction: f64,
    folds: usize,
    seed: u64,
) -> Result<Vec<Split>> {
    let pool: Vec<usize> = pool.map_or_else(|| (0..labels.len()).collect(), <[usize]>::to_vec);
    let per_class: Vec<Vec<usize>> = (0..rules.len())
        .map(|c| {
            pool.iter()
                .copied()
                .filter(|&i| labels[i] as usize == c)
                .collect()
        })
        .collect();
    let smallest = per_class.iter().map(Vec::len).min().unwrap_or(0);
    let test_per_class = ((smallest as f64) * test_fraction).floor() as usize;
    let train_per_class = smallest.saturating_sub(test_per_class);
    // Each class needs a test example and one training example per inner fold.
    let needed = ((folds.max(1) as f64) / (1.0 - test_fraction)).ceil() as usize;
    let needed = needed.max(folds + 1);
    if rules.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "the corpus has {} learning rule{} ({}); telling rules apart needs at least two",
            rules.len(),
            if rules.len() == 1 { "" } else { "s" },
            if rules.is_empty() {
                "none".to_string()
            } else {
                rules.join(", ")
            }
        )));
    }
    if test_per_class == 0 || train_per_class < folds {
        let counts: Vec<String> = rules
            .iter()
            .zip(&per_class)
            .map(|(r, v)| format!("{r} {}", v.len()))
            .collect();
        return Err(Error::InvalidArgument(format!(
            "too few examples for the splits: {} (examples per rule); each rule needs at least {needed} for a {:.0}/{:.0} split with {folds} inner folds",
            counts.join(", "),
            (1.0 - test_fraction) * 100.0,
            test_fraction * 100.0
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut splits = Vec::with_capacity(n_splits);
    for _ in 0..n_splits {
        let mut test = Vec::new();
        let mut rest: Vec<Vec<usize>> = Vec::new();
        for members in &per_class {
            let mut m = members.clone();
            shuffled(&mut m, &mut rng);
            test.extend_from_slice(&m[..test_per_class]);
            let mut r = m[test_per_class..].to_vec();
            r.sort_unstable();
            rest.push(r);
        }
        let mut train = Vec::new();
        for mut r in rest {
            shuffled(&mut r, &mut rng);
            train.extend_from_slice(&r[..train_per_class]);
        }
        test.sort_unstable();
        train.sort_unstable();
        debug_assert!(test.iter().all(|t| train.binary_search(t).is_err()));
        splits.push(Split { train, test });
    }
    Ok(splits)
}

/// Stratified `k`-fold cross-validation without shuffling (spec §3.2): within each class, in
/// index order, consecutive blocks form the folds (the first `n mod k` folds of a class one
/// larger). Returns, for each fold, the positions (into `labels`) of its held-out examples.
pub fn stratified_folds(labels: &[u32], k: usize) -> Vec<Vec<usize>> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut folds = vec![Vec::new(); k];
    for c in 0..classes {
        let members: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        let (base, extra) = (members.len() / k, members.len() % k);
        let mut at = 0;
        for (f, fold) in folds.iter_mut().enumerate() {
            let size = base + usize::from(f < extra);
            fold.extend_from_slice(&members[at..at + size]);
            at += size;
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    folds
}

/// Feature-wise z-scoring (spec §2): each continuous column's mean and population standard
/// deviation over the training rows; `(x − mean) / max(std, 1e-5)`. Categorical (one-hot)
/// columns are left as they are. Kept, so that later rows (a live run's) are scaled alike.
#[derive(Debug, Clone, PartialEq)]
pub struct ZScore {
    /// Columns in all (categorical ones first).
    pub cols: usize,
    /// Leading categorical columns, left as they are.
    pub categorical: usize,
    /// Per continuous column.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl ZScore {
    /// Smallest scale: a constant column is centred, not blown up.
    pub const MIN_SCALE: f64 = 1e-5;

    /// The statistics of the rows of `x` (row-major, `cols` columns).
    pub fn fit(x: &[f64], cols: usize, layout: FeatureLayout) -> ZScore {
        let rows = x.len() / cols.max(1);
        let categorical = layout.categorical.min(cols);
        let (mut mean, mut scale) = (Vec::new(), Vec::new());
        for j in categorical..cols {
            if rows == 0 {
                mean.push(0.0);
                scale.push(1.0);
                continue;
            }
            let m = (0..rows).map(|i| x[i * cols + j]).sum::<f64>() / rows as f64;
            let var = (0..rows)
                .map(|i| (x[i * cols + j] - m).powi(2))
                .sum::<f64>()
                / rows as f64;
            mean.push(m);
            scale.push(var.sqrt().max(Self::MIN_SCALE));
        }
        ZScore {
            cols,
            categorical,
            mean,
            scale,
        }
    }

    /// Scales the rows of `x` in place.
    pub fn apply(&self, x: &mut [f64]) {
        for row in x.chunks_mut(self.cols.max(1)) {
            for (j, v) in row.iter_mut().enumerate().skip(self.categorical) {
                let c = j - self.categorical;
                *v = (*v - self.mean[c]) / self.scale[c];
            }
        }
    }
}

/// [`ZScore`] fitted on `train` and applied to it and to every matrix of `others`.
pub fn zscore(train: &mut [f64], others: &mut [&mut Vec<f64>], cols: usize, layout: FeatureLayout) {
    let z = ZScore::fit(train, cols, layout);
    z.apply(train);
    for m in others.iter_mut() {
        z.apply(m);
    }
}

/// A configuration with lrid's seed set.
pub fn with_seed(config: &serde_json::Value, seed: u64) -> serde_json::Value {
    let mut c = config.clone();
    if let Some(o) = c.as_object_mut() {
        o.insert(
            lrid_plugin::classifier::CONFIG_SEED.to_string(),
            serde_json::json!(seed),
        );
    }
    c
}

/// Rows `rows` of a row-major matrix.
pub fn select_rows(x: &[f64], cols: usize, rows: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend_from_slice(&x[r * cols..(r + 1) * cols]);
    }
    out
}

/// Fraction of `predicted` equal to `truth`.
pub fn accuracy(predicted: &[u32], truth: &[u32]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// Confusion counts: rows = true, columns = predicted.
pub fn confusion(predicted: &[u32], truth: &[u32], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for (&p, &t) in predicted.iter().zip(truth) {
        if (t as usize) < classes && (p as usize) < classes {
            m[t as usize][p as usize] += 1;
        }
    }
    m
}

/// A training matrix prepared by a classifier, with what selection needs.
#[derive(Debug)]
pub struct TrainingSet<'a> {
    pub plugin: &'a Arc<Plugin>,
    pub data: ClassifierData,
    /// The (normalised) training matrix, row-major.
    pub x: Vec<f64>,
    pub cols: usize,
    pub layout: FeatureLayout,
    pub labels: Vec<u32>,
    pub classes: usize,
}

/// The model selection's outcome: the refit model, its configuration, every configuration's
/// mean fold accuracy.
#[derive(Debug)]
pub struct Selected {
    pub model: ClassifierModel,
    pub config: serde_json::Value,
    pub cv: Vec<(serde_json::Value, f64)>,
}

impl<'a> TrainingSet<'a> {
    /// Prepares `x` (rows of `labels`) for `plugin`.
    pub fn new(
        plugin: &'a Arc<Plugin>,
        x: Vec<f64>,
        cols: usize,
        layout: FeatureLayout,
        labels: Vec<u32>,
        classes: usize,
    ) -> Result<Self> {
        let data = plugin.prepare(x.clone(), cols, layout)?;
        Ok(Self {
            plugin,
            data,
            x,
            cols,
            layout,
            labels,
            classes,
        })
    }

    fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Fits `config` on the training rows `rows` (positions in this set).
    pub fn fit(
        &self,
        config: &serde_json::Value,
        rows: &[usize],
        seed: u64,
    ) -> Result<ClassifierModel> {
        let r: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
        let y: Vec<u32> = rows.iter().map(|&i| self.labels[i]).collect();
        Ok(self
            .data
            .fit(&with_seed(config, seed), &r, &y, self.classes)?)
    }

    /// Predicted classes of a matrix with this set's columns.
    pub fn predict(&self, model: &ClassifierModel, x: Vec<f64>) -> Result<Vec<u32>> {
        Ok(model.predict(x, self.cols, self.layout)?)
    }

    /// Model selection (spec §3.2): every configuration of `grid` scored by stratified
    /// `folds`-fold cross-validation (a configuration whose fit fails is skipped), the best mean
    /// (the first on ties) refit on every row. A grid of one configuration is fitted directly.
    pub fn select(&self, grid: &[serde_json::Value], folds: usize, seed: u64) -> Result<Selected> {
        let all: Vec<usize> = (0..self.rows()).collect();
        if grid.len() <= 1 {
            let config = grid
                .first()
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            let model = self.fit(&config, &all, seed)?;
            return Ok(Selected {
                model,
                config,
                cv: Vec::new(),
            });
        }
        let fold_sets = stratified_folds(&self.labels, folds);
        // Every (configuration, fold) fit at once: a classifier that fits on one thread (the
        // SVM) uses every core, one that is parallel itself (the forest) shares them.
        let jobs: Vec<(usize, usize)> = (0..grid.len())
            .flat_map(|c| (0..fold_sets.len()).map(move |f| (c, f)))
            .collect();
        let outcomes: Vec<Result<f64>> = jobs
            .par_iter()
            .map(|&(c, f)| {
                let held = &fold_sets[f];
                let fit_rows: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|i| held.binary_search(i).is_err())
                    .collect();
                let model = self.fit(&grid[c], &fit_rows, seed.wrapping_add(f as u64 + 1))?;
                let pred = self.predict(&model, select_rows(&self.x, self.cols, held))?;
                let truth: Vec<u32> = held.iter().map(|&i| self.labels[i]).collect();
                Ok(accuracy(&pred, &truth))
            })
            .collect();
        let mut scores = Vec::new();
        let mut last_error = None;
        for (c, config) in grid.iter().enumerate() {
            let mut total = 0.0;
            let mut failed = None;
            for (f, outcome) in outcomes[c * fold_sets.len()..(c + 1) * fold_sets.len()]
                .iter()
                .enumerate()
            {
                match outcome {
                    Ok(a) => total += a,
                    Err(e) => {
                        tracing::debug!(%config, fold = f, "configuration skipped: {e}");
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                None => scores.push((config.clone(), total / fold_sets.len() as f64)),
                Some(e) => last_error = Some(Error::InvalidArgument(e)),
            }
        }
        let Some(best) = scores
            .iter()
            .enumerate()
            .fold(None::<(usize, f64)>, |best, (i, (_, s))| match best {
                Some((_, b)) if *s <= b => best,
                _ => Some((i, *s)),
            })
            .map(|(i, _)| scores[i].0.clone())
        else {
            return Err(last_error.unwrap_or_else(|| {
                Error::InvalidArgument("the configuration grid is empty".into())
            }));
        };
        let model = self.fit(&best, &all, seed)?;
        Ok(Selected {
            model,
            config: best,
            cv: scores,
        })
    }
}

/// Mean and s.e.m. (sample standard deviation / √n; 0 for fewer than two values).
pub fn mean_sem(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn splits_are_balanced_disjoint_and_deterministic_for_a_seed() {
        // 3 classes of 40, 50, 60 examples, interleaved.
        let labels: Vec<u32> = (0..150)
            .map(|i| {
                if i < 40 {
                    0
                } else if i < 90 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let s = balanced_splits(&labels, &rules(3), None, 10, 0.25, 5, 7).unwrap();
        assert_eq!(s.len(), 10);
        for split in &s {
            for c in 0..3u32 {
                let count = |v: &[usize]| v.iter().filter(|&&i| labels[i] == c).count();
                assert_eq!(count(&split.test), 10, "10 = 25 % of the smallest class");
                assert_eq!(count(&split.train), 30, "the rest of the smallest class");
            }
            assert!(split.test.iter().all(|t| !split.train.contains(t)));
            assert!(split.test.windows(2).all(|w| w[0] < w[1]));
        }
        assert_ne!(s[0], s[1], "splits differ from each other");
        assert_eq!(
            s,
            balanced_splits(&labels, &rules(3), None, 10, 0.25, 5, 7).unwrap()
        );
        assert_ne!(
            s,
            balanced_splits(&labels, &rules(3), None, 10, 0.25, 5, 8).unwrap()
        );
    }

    #[test]
    fn too_few_examples_or_one_rule_are_refused_with_counts() {
        let labels = vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1];
        let e = balanced_splits(&labels, &rules(2), None, 10, 0.25, 5, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("too few examples") && e.contains("r0 3") && e.contains("r1 7"),
            "{e}"
        );
        assert!(e.contains("at least 7"), "{e}");
        let e = balanced_splits(&[0, 0, 0], &rules(1), None, 10, 0.25, 5, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 learning rule (r0)"), "{e}");
    }

    #[test]
    fn stratified_folds_are_consecutive_blocks_per_class() {
        let labels = vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0];
        let folds = stratified_folds(&labels, 3);
        // class 0 at 0,2,4,6,8,9,10 (7 → 3,2,2); class 1 at 1,3,5,7 (4 → 2,1,1)
        assert_eq!(folds[0], vec![0, 1, 2, 3, 4]);
        assert_eq!(folds[1], vec![5, 6, 8]);
        assert_eq!(folds[2], vec![7, 9, 10]);
    }

    #[test]
    fn zscore_uses_training_statistics_and_leaves_categorical_columns() {
        let layout = FeatureLayout {
            categorical: 1,
            points: 0,
        };
        let mut train = vec![1.0, 2.0, 0.0, 4.0];
        let mut test = vec![1.0, 6.0];
        zscore(&mut train, &mut [&mut test], 2, layout);
        assert_eq!(train, vec![1.0, -1.0, 0.0, 1.0]);
        assert_eq!(test, vec![1.0, 3.0]);
    }

    #[test]
    fn mean_and_sem() {
        let (m, s) = mean_sem(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sem(&[0.5]), (0.5, 0.0));
    }
}
