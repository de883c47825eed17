//! What `lrid analyze` measures: the types behind `results.json` (format [`RESULTS_FORMAT`]),
//! the `analyses` table and the report. Every accuracy is a fraction in [0, 1]; every
//! mean ± s.e.m. is over the outer splits (s.e.m. = sample standard deviation / √n; 0 for one
//! split). Confusion matrices have rows = true rule, columns = predicted rule, in the order of
//! [`CorpusSummary::rules`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the `results.json` schema.
pub const RESULTS_FORMAT: u32 = 1;

/// Everything one `lrid analyze` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisResults {
    /// [`RESULTS_FORMAT`].
    pub format: u32,
    /// The analysis name (the report folder's name).
    pub name: String,
    /// When it ran (RFC 3339, UTC).
    pub created_at: String,
    pub settings: Settings,
    pub corpus: CorpusSummary,
    /// Fig. 2a, 2c, S1: every classifier × measure subset over the outer splits.
    pub main: Vec<MainResult>,
    /// Fig. 2b: trained without one value of a factor, tested on it.
    pub held_out: Vec<HeldOutResult>,
    /// Fig. 3: importances per statistic.
    pub importances: Option<ImportanceResult>,
    /// Fig. 4, S2b: trajectory subsampling.
    pub trajectory: Option<TrajectoryResult>,
    /// Fig. 5: accuracy per measurement model.
    pub noise: Vec<NoiseResult>,
    /// Early identification (beyond the paper): held-out runs identified after k points.
    #[serde(default)]
    pub early: Option<EarlyResult>,
    /// Fits that failed (a classifier that panicked or refused its configuration, …); the
    /// other results are complete without them.
    pub failures: Vec<Failure>,
    /// Wall time of the whole analysis, seconds.
    pub seconds: f64,
    /// Wall time of each experiment that ran, seconds, by name (`main` includes the
    /// importances it collects from its fits; `importances` appears alone only without `main`).
    #[serde(default)]
    pub experiment_seconds: BTreeMap<String, f64>,
}

/// The settings an analysis ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub server: String,
    /// The SQL predicate that selected the corpus (`--where`), if any.
    pub where_predicate: Option<String>,
    /// The measurement model of the main experiments (`--model`).
    pub model: String,
    /// Trajectory points per example.
    pub points: usize,
    /// `fast` or `paper`.
    pub grid: String,
    pub classifiers: Vec<String>,
    pub experiments: Vec<String>,
    /// Outer splits (10 in the paper).
    pub splits: usize,
    /// Fraction of each class held out for testing in a split (0.25).
    pub test_fraction: f64,
    /// Inner cross-validation folds (5).
    pub folds: usize,
    /// Seed of the splits and of every fit.
    pub seed: u64,
    /// Whether continuous features are z-scored on each training set.
    pub zscore: bool,
}

/// The corpus the classifiers saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusSummary {
    /// Examples (layers of closed runs) used.
    pub examples: usize,
    pub runs: usize,
    /// The learning rules, in label order (sorted).
    pub rules: Vec<String>,
    pub examples_per_rule: BTreeMap<String, usize>,
    pub runs_per_architecture: BTreeMap<String, usize>,
    pub runs_per_task: BTreeMap<String, usize>,
    /// Measurement models present in the corpus.
    pub models: Vec<String>,
    /// Feature columns of the `all` measure (3 position one-hot + 24 statistics × points).
    pub features: usize,
    /// Runs left out, with why (too few points, non-finite values, …).
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    pub run_id: String,
    pub reason: String,
}

/// Mean ± s.e.m. of accuracies over splits (or held-out values), with the values themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub mean: f64,
    pub sem: f64,
    pub values: Vec<f64>,
}

/// One outer split of one classifier × measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitResult {
    pub split: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    pub accuracy: f64,
    /// The configuration the inner cross-validation chose.
    pub config: serde_json::Value,
    /// Mean inner-CV accuracy of every configuration tried (failed ones are absent).
    pub cv: Vec<CvScore>,
    /// rows = true, columns = predicted.
    pub confusion: Vec<Vec<u64>>,
    pub fit_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScore {
    pub config: serde_json::Value,
    pub accuracy: f64,
}

/// A classifier on one measure subset (`weight`, `act`, `grad`, `all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MainResult {
    pub classifier: String,
    pub measure: String,
    pub accuracy: Accuracy,
    /// Summed over splits; rows = true, columns = predicted.
    pub confusion: Vec<Vec<u64>>,
    pub splits: Vec<SplitResult>,
    /// Fig. S1: two-rule classifiers (the split's examples of those two rules, the split's
    /// chosen configuration — the grid searched again where it cannot fit them), one entry per
    /// pair.
    pub pairwise: Vec<PairResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairResult {
    pub a: String,
    pub b: String,
    pub accuracy: Accuracy,
}

/// Fig. 2b: one factor (architecture, curriculum, task); one entry per held-out value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutResult {
    pub classifier: String,
    /// `architecture`, `curriculum` (batch size × data seed) or `task`.
    pub factor: String,
    /// Accuracy on each held-out value.
    pub values: Vec<HeldOutValue>,
    /// Mean ± s.e.m. across the held-out values.
    pub accuracy: Accuracy,
    /// The same classifier's main accuracy on all measures (the red line of Fig. 2b).
    pub reference: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutValue {
    pub value: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub accuracy: f64,
    pub confusion: Vec<Vec<u64>>,
}

/// Fig. 3: importances of the `all`-measure random forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportanceResult {
    pub classifier: String,
    /// Per statistic (summed over the trajectory) and per position feature: impurity (Gini)
    /// importances, mean ± s.e.m. over every tree of every split.
    pub impurity: Vec<FeatureImportance>,
    /// Permutation importances on the test sets (accuracy drop when a statistic's whole
    /// trajectory is permuted across test examples), mean ± s.e.m. over splits.
    pub permutation: Vec<FeatureImportance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureImportance {
    /// A statistic name (e.g. `weightabs_median`) or a position feature (`grp_id0`).
    pub feature: String,
    /// `weight`, `act`, `grad` or `position`.
    pub measure: String,
    pub mean: f64,
    pub sem: f64,
}

/// Fig. 4 and S2b.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryResult {
    pub classifier: String,
    /// Fig. 4a: `count` samples `period` points apart (random start per example).
    pub subsampling: Vec<SubsampleResult>,
    /// Fig. 4b: train on one third of the trajectory, test on a third; `thirds[i][j]` = train
    /// on third i (early, middle, late), test on third j.
    pub thirds: Vec<Vec<Accuracy>>,
    /// Fig. S2b: each statistic's trajectory replaced by its mean over time, per measure.
    pub time_averaged: Vec<MeasureAccuracy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsampleResult {
    pub measure: String,
    pub period: usize,
    pub count: usize,
    /// count / points.
    pub proportion: f64,
    pub accuracy: Accuracy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureAccuracy {
    pub measure: String,
    pub accuracy: Accuracy,
}

/// Fig. 5: one measurement model of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseResult {
    pub classifier: String,
    pub model: String,
    /// The model's unit fraction and noise std when known (from the daemon's configuration).
    pub unit_fraction: Option<f64>,
    pub noise_std: Option<f64>,
    /// The rules compared (FA vs IA where both exist, else all).
    pub rules: Vec<String>,
    pub per_measure: Vec<MeasureAccuracy>,
}

/// Early identification: classifiers that see only the first k points of each layer (one per
/// k), run-level decisions (the mean of a run's layer probabilities), on runs held out of
/// training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyResult {
    pub classifier: String,
    pub curves: Vec<EarlyCurve>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyCurve {
    /// What was held out in turn: `seeds` (every run of one model seed × data seed
    /// combination) or `architecture` (every run of one architecture).
    pub held_out: String,
    /// The values held out in turn.
    pub groups: Vec<String>,
    /// Held-out runs, all groups together.
    pub runs: usize,
    /// For k = 1..points: the fraction of held-out runs whose run-level prediction is right.
    pub accuracy: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub experiment: String,
    pub classifier: String,
    pub measure: Option<String>,
    pub reason: String,
}

/// The measure subsets of spec §1.5, in report order.
pub const MEASURES: [&str; 4] = ["weight", "act", "grad", "all"];
