//! The paper's experiments (spec §3.6–§3.10) over a [`Dataset`] with classifier plugins:
//! `main` (Fig. 2a, 2c, S1), `held-out` (Fig. 2b), `importances` (Fig. 3), `trajectory`
//! (Fig. 4, S2b), `noise` (Fig. 5). A fit that fails is recorded as a failure of its
//! classifier × measure; the others go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use lrid_plugins::Plugin;
use lrid_report::{
    Accuracy, AnalysisResults, CorpusSummary, CvScore, EarlyCurve, EarlyResult, Excluded, Failure,
    FeatureImportance, HeldOutResult, HeldOutValue, ImportanceResult, MainResult, MeasureAccuracy,
    NoiseResult, PairResult, RESULTS_FORMAT, Settings, SplitResult, SubsampleResult,
    TrajectoryResult,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::{Dataset, MeasureSet, POSITION_FEATURES, Points, shuffled, statistic_names};
use crate::protocol::{Split, TrainingSet, accuracy, balanced_splits, confusion, mean_sem, zscore};
use crate::{Error, Result};

/// The experiments `lrid analyze` knows, in the order they run.
pub const EXPERIMENTS: [&str; 6] = [
    "main",
    "held-out",
    "importances",
    "trajectory",
    "noise",
    "early",
];

/// The factors held out in Fig. 2b.
pub const HELD_OUT_FACTORS: [&str; 3] = ["architecture", "curriculum", "task"];

/// How an analysis runs.
#[derive(Debug, Clone)]
pub struct AnalysisOptions {
    pub name: String,
    /// Classifiers, by name, in report order.
    pub classifiers: Vec<Arc<Plugin>>,
    pub grid: String,
    /// Per classifier name: settings merged into each of its grid's configurations.
    pub overrides: BTreeMap<String, serde_json::Value>,
    pub experiments: Vec<String>,
    pub splits: usize,
    pub test_fraction: f64,
    pub folds: usize,
    pub seed: u64,
    pub zscore: bool,
    /// The measurement model of every experiment but `noise`.
    pub model: String,
    /// Where the corpus came from (for the settings table).
    pub server: String,
    pub where_predicate: Option<String>,
}

/// Progress of an analysis: how many units of work there are, and each one done.
pub trait Progress: Sync {
    fn total(&self, units: u64);
    fn done(&self, what: &str);
}

/// An analysis that reports nothing.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn total(&self, _: u64) {}
    fn done(&self, _: &str) {}
}

fn acc(values: Vec<f64>) -> Accuracy {
    let (mean, sem) = mean_sem(&values);
    Accuracy { mean, sem, values }
}

/// One train/test evaluation: features of `measure` over `points` (train and test may use
/// different points: Fig. 4b), z-scored on the training rows, model selected over `grid`.
struct Evaluation {
    predicted: Vec<u32>,
    /// The predictions on [`EvalSpec::more_test_points`], one vector per point set.
    more_predicted: Vec<Vec<u32>>,
    truth: Vec<u32>,
    config: serde_json::Value,
    cv: Vec<(serde_json::Value, f64)>,
    importances: Option<Vec<Vec<f64>>>,
    /// Permutation importance of each statistic of the measure: accuracy drop.
    permutation: Vec<f64>,
    seconds: f64,
}

struct Runner<'a> {
    dataset: &'a Dataset,
    options: &'a AnalysisOptions,
}

#[derive(Clone, Copy)]
struct EvalSpec<'p> {
    measure: MeasureSet,
    train_points: &'p Points,
    test_points: &'p Points,
    /// Further point sets the test rows are predicted on by the same fitted model (the
    /// train-on-one-third / test-on-another matrix fits once per training third).
    more_test_points: &'p [Points],
    /// Relabel the examples to these classes (a pair of rules); `None`: every rule.
    classes: Option<&'p [u32]>,
    want_importances: bool,
    want_permutation: bool,
}

impl Runner<'_> {
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        plugin: &Arc<Plugin>,
        grid: &[serde_json::Value],
        train: &[usize],
        test: &[usize],
        spec: EvalSpec<'_>,
        seed: u64,
    ) -> Result<Evaluation> {
        let started = Instant::now();
        let d = self.dataset;
        let relabel = |i: usize| -> Option<u32> {
            match spec.classes {
                None => Some(d.labels[i]),
                Some(cs) => cs.iter().position(|&c| c == d.labels[i]).map(|p| p as u32),
            }
        };
        let train: Vec<usize> = train
            .iter()
            .copied()
            .filter(|&i| relabel(i).is_some())
            .collect();
        let test: Vec<usize> = test
            .iter()
            .copied()
            .filter(|&i| relabel(i).is_some())
            .collect();
        let classes = spec.classes.map_or(d.rules.len(), <[u32]>::len);
        let (mut x_train, cols, layout) = d.matrix(&train, spec.measure, spec.train_points)?;
        let (mut x_test, test_cols, _) = d.matrix(&test, spec.measure, spec.test_points)?;
        if cols != test_cols {
            return Err(Error::InvalidArgument(format!(
                "training features ({cols}) and test features ({test_cols}) differ"
            )));
        }
        let mut x_more = Vec::new();
        for points in spec.more_test_points {
            let (x, more_cols, _) = d.matrix(&test, spec.measure, points)?;
            if more_cols != cols {
                return Err(Error::InvalidArgument(format!(
                    "training features ({cols}) and test features ({more_cols}) differ"
                )));
            }
            x_more.push(x);
        }
        if self.options.zscore {
            let mut tests: Vec<&mut Vec<f64>> = std::iter::once(&mut x_test)
                .chain(x_more.iter_mut())
                .collect();
            zscore(&mut x_train, &mut tests, cols, layout);
        }
        let y_train: Vec<u32> = train.iter().map(|&i| relabel(i).unwrap_or(0)).collect();
        let truth: Vec<u32> = test.iter().map(|&i| relabel(i).unwrap_or(0)).collect();
        let set = TrainingSet::new(plugin, x_train, cols, layout, y_train, classes)?;
        let selected = set.select(grid, self.options.folds, seed)?;
        let predicted = set.predict(&selected.model, x_test.clone())?;
        let more_predicted = x_more
            .into_iter()
            .map(|x| set.predict(&selected.model, x))
            .collect::<Result<Vec<_>>>()?;
        let importances = if spec.want_importances {
            selected.model.importances()?
        } else {
            None
        };
        let mut permutation = Vec::new();
        if spec.want_permutation {
            let base = accuracy(&predicted, &truth);
            let t = layout.points.max(1);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED);
            let rows = test.len();
            for k in 0..spec.measure.statistics().len() {
                let mut order: Vec<usize> = (0..rows).collect();
                shuffled(&mut order, &mut rng);
                let mut x = x_test.clone();
                for (r, &from) in order.iter().enumerate() {
                    for c in 0..t {
                        let j = layout.categorical + k * t + c;
                        x[r * cols + j] = x_test[from * cols + j];
                    }
                }
                let p = set.predict(&selected.model, x)?;
                permutation.push(base - accuracy(&p, &truth));
            }
        }
        Ok(Evaluation {
            predicted,
            more_predicted,
            truth,
            config: selected.config,
            cv: selected.cv,
            importances,
            permutation,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

fn failure(experiment: &str, plugin: &Plugin, measure: Option<&str>, e: &Error) -> Failure {
    Failure {
        experiment: experiment.to_string(),
        classifier: plugin.name.clone(),
        measure: measure.map(str::to_string),
        reason: e.to_string(),
    }
}

/// The random forest among the classifiers (the paper's choice for held-out, importances,
/// trajectory and noise), else the first.
fn forest(options: &AnalysisOptions) -> Option<&Arc<Plugin>> {
    options
        .classifiers
        .iter()
        .find(|p| p.name == "random-forest")
        .or_else(|| options.classifiers.first())
}

/// The classifier's grid `options.grid`, with its overrides merged into every configuration.
fn grid_of(plugin: &Plugin, options: &AnalysisOptions) -> Result<Vec<serde_json::Value>> {
    let mut grid = plugin.grid(&options.grid)?;
    if let Some(serde_json::Value::Object(extra)) = options.overrides.get(&plugin.name) {
        for config in &mut grid {
            if let Some(c) = config.as_object_mut() {
                for (k, v) in extra {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Ok(grid)
}

/// Runs `options.experiments` on `corpus` (every measurement model; the main experiments use
/// `options.model`).
pub fn analyze(
    corpus: &Dataset,
    options: &AnalysisOptions,
    progress: &dyn Progress,
) -> Result<AnalysisResults> {
    let started = Instant::now();
    for e in &options.experiments {
        if !EXPERIMENTS.contains(&e.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "unknown experiment '{e}' (known: {})",
                EXPERIMENTS.join(", ")
            )));
        }
    }
    if options.classifiers.is_empty() {
        return Err(Error::InvalidArgument("no classifier to run".into()));
    }
    let dataset = corpus.of_model(&options.model);
    if dataset.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the corpus has no examples under measurement model '{}' (models present: {})",
            options.model,
            corpus.measurement_models().join(", ")
        )));
    }
    let splits = balanced_splits(
        &dataset.labels,
        &dataset.rules,
        None,
        options.splits,
        options.test_fraction,
        options.folds,
        options.seed,
    )?;
    let runs: std::collections::BTreeSet<&str> =
        dataset.examples.iter().map(|e| e.run_id.as_str()).collect();
    let mut per_arch: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
    let mut per_task: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for e in &dataset.examples {
        let arch = e.architecture.clone().unwrap_or_else(|| "(none)".into());
        let task = e.task.clone().unwrap_or_else(|| "(none)".into());
        per_arch.entry(arch).or_default().insert(&e.run_id);
        per_task.entry(task).or_default().insert(&e.run_id);
    }
    let corpus_summary = CorpusSummary {
        examples: dataset.len(),
        runs: runs.len(),
        rules: dataset.rules.clone(),
        examples_per_rule: dataset
            .rules
            .iter()
            .cloned()
            .zip(dataset.counts())
            .collect(),
        runs_per_architecture: per_arch.into_iter().map(|(k, v)| (k, v.len())).collect(),
        runs_per_task: per_task.into_iter().map(|(k, v)| (k, v.len())).collect(),
        models: corpus.measurement_models(),
        features: dataset.feature_names(MeasureSet::All, &Points::All).len(),
        excluded: corpus
            .excluded
            .iter()
            .map(|x| Excluded {
                run_id: x.run_id.clone(),
                reason: x.reason.clone(),
            })
            .collect(),
    };
    let wants = |e: &str| options.experiments.iter().any(|x| x == e);
    let runner = Runner {
        dataset: &dataset,
        options,
    };
    let rf = forest(options).cloned();
    let n_splits = splits.len() as u64;
    let n_classifiers = options.classifiers.len() as u64;
    let pairs = (dataset.rules.len() * (dataset.rules.len() - 1) / 2) as u64;
    let mut units = 0;
    if wants("main") {
        units += n_classifiers * 4 * n_splits * (1 + pairs);
    }
    if wants("held-out") {
        units += HELD_OUT_FACTORS.len() as u64 * 4;
    }
    if wants("importances") && !wants("main") {
        units += n_splits;
    }
    if wants("trajectory") {
        units += (subsampling_plan(dataset.points).len() as u64 + 3 + 4) * n_splits;
    }
    if wants("noise") {
        units += corpus.measurement_models().len() as u64 * 4 * n_splits;
    }
    if wants("early") {
        units += EARLY_HELD_OUT.len() as u64 * dataset.points as u64;
    }
    progress.total(units);
    let mut failures = Vec::new();
    let mut main = Vec::new();
    let mut tree_importances: Vec<Vec<f64>> = Vec::new();
    let mut permutations: Vec<Vec<f64>> = Vec::new();
    let all_points = Points::All;

    // Wall time of each experiment, as it ends.
    let mut experiment_seconds = BTreeMap::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, ran: bool| {
        if ran {
            experiment_seconds.insert(name.to_string(), clock.elapsed().as_secs_f64());
        }
        clock = Instant::now();
    };

    // Main (and the importances of the forest on all measures).
    let run_main = wants("main");
    let run_importances = wants("importances") && rf.as_ref().is_some_and(|p| p.has_importances());
    for plugin in &options.classifiers {
        let grid = match grid_of(plugin, options) {
            Ok(g) => g,
            Err(e) => {
                failures.push(failure("main", plugin, None, &e));
                continue;
            }
        };
        for measure in MeasureSet::ALL {
            let is_rf_all =
                rf.as_ref().is_some_and(|r| Arc::ptr_eq(r, plugin)) && measure == MeasureSet::All;
            if !(run_main || run_importances && is_rf_all) {
                continue;
            }
            let mut split_results = Vec::new();
            let mut pair_acc: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
            let mut failed = None;
            let spec = EvalSpec {
                measure,
                train_points: &all_points,
                test_points: &all_points,
                more_test_points: &[],
                classes: None,
                want_importances: run_importances && is_rf_all,
                want_permutation: run_importances && is_rf_all,
            };
            // Splits in parallel (a fit that is parallel itself shares the cores); merged in
            // split order, so the results do not depend on the scheduling.
            let outcomes: Vec<Result<MainSplit>> = splits
                .par_iter()
                .enumerate()
                .map(|(s, split)| {
                    main_split(&runner, plugin, &grid, spec, s, split, run_main, progress)
                })
                .collect();
            for outcome in outcomes {
                let done = match outcome {
                    Ok(done) => done,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if let Some(imp) = &done.evaluation.importances {
                    tree_importances.extend(imp.iter().cloned());
                }
                if !done.evaluation.permutation.is_empty() {
                    permutations.push(done.evaluation.permutation.clone());
                }
                for (pair, outcome) in done.pairs {
                    match outcome {
                        Ok(a) => pair_acc.entry(pair).or_default().push(a),
                        Err(e) => failures.push(failure(
                            "main (pairwise)",
                            plugin,
                            Some(measure.as_str()),
                            &e,
                        )),
                    }
                }
                let ev = done.evaluation;
                split_results.push(SplitResult {
                    split: done.split,
                    train_examples: done.train_examples,
                    test_examples: ev.truth.len(),
                    accuracy: accuracy(&ev.predicted, &ev.truth),
                    config: ev.config.clone(),
                    cv: ev
                        .cv
                        .iter()
                        .map(|(config, accuracy)| CvScore {
                            config: config.clone(),
                            accuracy: *accuracy,
                        })
                        .collect(),
                    confusion: confusion(&ev.predicted, &ev.truth, dataset.rules.len()),
                    fit_seconds: ev.seconds,
                });
            }
            if let Some(e) = failed {
                failures.push(failure("main", plugin, Some(measure.as_str()), &e));
                continue;
            }
            if !run_main {
                continue;
            }
            let k = dataset.rules.len();
            let mut total = vec![vec![0u64; k]; k];
            for r in &split_results {
                for (i, row) in r.confusion.iter().enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        total[i][j] += v;
                    }
                }
            }
            main.push(MainResult {
                classifier: plugin.name.clone(),
                measure: measure.as_str().to_string(),
                accuracy: acc(split_results.iter().map(|r| r.accuracy).collect()),
                confusion: total,
                splits: split_results,
                pairwise: pair_acc
                    .into_iter()
                    .map(|((a, b), v)| PairResult {
                        a: dataset.rules[a as usize].clone(),
                        b: dataset.rules[b as usize].clone(),
                        accuracy: acc(v),
                    })
                    .collect(),
            });
        }
    }

    let importances = (run_importances && !tree_importances.is_empty()).then(|| {
        importance_result(
            rf.as_ref().map_or("", |p| p.name.as_str()),
            &tree_importances,
            &permutations,
            dataset.points,
        )
    });

    lap(
        if run_main { "main" } else { "importances" },
        run_main || run_importances,
    );

    // Held-out factors (the forest, all measures, the grid's selection on the training set).
    let mut held_out = Vec::new();
    if wants("held-out")
        && let Some(plugin) = &rf
    {
        let reference = main
            .iter()
            .find(|m| m.classifier == plugin.name && m.measure == "all")
            .map(|m| m.accuracy.mean);
        match grid_of(plugin, options) {
            Err(e) => failures.push(failure("held-out", plugin, Some("all"), &e)),
            Ok(grid) => {
                for factor in HELD_OUT_FACTORS {
                    match held_out_factor(&runner, plugin, &grid, factor) {
                        Ok(Some(values)) => held_out.push(HeldOutResult {
                            classifier: plugin.name.clone(),
                            factor: factor.to_string(),
                            accuracy: acc(values.iter().map(|v| v.accuracy).collect()),
                            values,
                            reference,
                        }),
                        Ok(None) => {}
                        Err(e) => failures.push(failure("held-out", plugin, Some("all"), &e)),
                    }
                    progress.done(&format!("held-out {factor}"));
                }
            }
        }
    }

    lap("held-out", wants("held-out") && rf.is_some());

    // Trajectory subsampling.
    let mut trajectory = None;
    if wants("trajectory")
        && let Some(plugin) = &rf
    {
        match trajectory_experiments(&runner, plugin, &splits, progress) {
            Ok(t) => trajectory = Some(t),
            Err(e) => failures.push(failure("trajectory", plugin, None, &e)),
        }
    }

    lap("trajectory", wants("trajectory") && rf.is_some());

    // Measurement models.
    let mut noise = Vec::new();
    if wants("noise")
        && let Some(plugin) = &rf
    {
        for model in corpus.measurement_models() {
            match noise_experiment(corpus, &model, plugin, options, progress) {
                Ok(r) => noise.push(r),
                Err(e) => failures.push(failure("noise", plugin, None, &e)),
            }
        }
    }

    lap("noise", wants("noise") && rf.is_some());

    // Early identification.
    let mut early = None;
    if wants("early")
        && let Some(plugin) = &rf
    {
        match early_experiment(&runner, plugin, progress) {
            Ok(e) => early = Some(e),
            Err(e) => failures.push(failure("early", plugin, Some("all"), &e)),
        }
    }

    lap("early", wants("early") && rf.is_some());

    Ok(AnalysisResults {
        format: RESULTS_FORMAT,
        name: options.name.clone(),
        created_at: now_rfc3339(),
        settings: Settings {
            server: options.server.clone(),
            where_predicate: options.where_predicate.clone(),
            model: options.model.clone(),
            points: dataset.points,
            grid: options.grid.clone(),
            classifiers: options.classifiers.iter().map(|p| p.name.clone()).collect(),
            experiments: options.experiments.clone(),
            splits: options.splits,
            test_fraction: options.test_fraction,
            folds: options.folds,
            seed: options.seed,
            zscore: options.zscore,
        },
        corpus: corpus_summary,
        main,
        held_out,
        importances,
        trajectory,
        noise,
        early,
        failures,
        seconds: started.elapsed().as_secs_f64(),
        experiment_seconds,
    })
}

/// What one split of the main experiment gives: the evaluation on all rules, and the
/// pairwise accuracies (or why a pair failed).
struct MainSplit {
    split: usize,
    train_examples: usize,
    evaluation: Evaluation,
    pairs: Vec<((u32, u32), Result<f64>)>,
}

/// One split of the main experiment: the grid's selection on the training rows, tested; then,
/// when `pairwise`, every pair of rules with the split's chosen configuration (searched again
/// when it cannot fit the two rules' smaller training set, e.g. more PCA components than
/// examples).
#[allow(clippy::too_many_arguments)]
fn main_split(
    runner: &Runner<'_>,
    plugin: &Arc<Plugin>,
    grid: &[serde_json::Value],
    spec: EvalSpec<'_>,
    s: usize,
    split: &Split,
    pairwise: bool,
    progress: &dyn Progress,
) -> Result<MainSplit> {
    let seed = runner.options.seed.wrapping_add(1000 * s as u64 + 1);
    let ev = runner.evaluate(plugin, grid, &split.train, &split.test, spec, seed)?;
    progress.done(&format!(
        "main {} {} split {s}",
        plugin.name,
        spec.measure.as_str()
    ));
    let mut pairs = Vec::new();
    let rules = if pairwise {
        runner.dataset.rules.len() as u32
    } else {
        0
    };
    for a in 0..rules {
        for b in a + 1..rules {
            let pair = [a, b];
            let spec = EvalSpec {
                classes: Some(&pair),
                want_importances: false,
                want_permutation: false,
                ..spec
            };
            let chosen = [ev.config.clone()];
            let outcome = runner
                .evaluate(plugin, &chosen, &split.train, &split.test, spec, seed)
                .or_else(|_| runner.evaluate(plugin, grid, &split.train, &split.test, spec, seed))
                .map(|p| accuracy(&p.predicted, &p.truth));
            pairs.push(((a, b), outcome));
            progress.done("pairwise");
        }
    }
    Ok(MainSplit {
        split: s,
        train_examples: split.train.len(),
        evaluation: ev,
        pairs,
    })
}

fn importance_result(
    classifier: &str,
    trees: &[Vec<f64>],
    permutations: &[Vec<f64>],
    points: usize,
) -> ImportanceResult {
    let names = statistic_names();
    let mut impurity = Vec::new();
    for (p, name) in POSITION_FEATURES.iter().enumerate() {
        let v: Vec<f64> = trees.iter().map(|t| t[p]).collect();
        let (mean, sem) = mean_sem(&v);
        impurity.push(FeatureImportance {
            feature: name.to_string(),
            measure: "position".into(),
            mean,
            sem,
        });
    }
    for (k, name) in names.iter().enumerate() {
        let start = POSITION_FEATURES.len() + k * points;
        let v: Vec<f64> = trees
            .iter()
            .map(|t| t[start..start + points].iter().sum())
            .collect();
        let (mean, sem) = mean_sem(&v);
        impurity.push(FeatureImportance {
            feature: name.clone(),
            measure: MeasureSet::of_statistic(k).to_string(),
            mean,
            sem,
        });
    }
    let permutation = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let v: Vec<f64> = permutations.iter().map(|p| p[k]).collect();
            let (mean, sem) = mean_sem(&v);
            FeatureImportance {
                feature: name.clone(),
                measure: MeasureSet::of_statistic(k).to_string(),
                mean,
                sem,
            }
        })
        .collect();
    ImportanceResult {
        classifier: classifier.to_string(),
        impurity,
        permutation,
    }
}

/// Fig. 2b for one factor: `None` when the corpus has fewer than two of its values.
fn held_out_factor(
    runner: &Runner<'_>,
    plugin: &Arc<Plugin>,
    grid: &[serde_json::Value],
    factor: &str,
) -> Result<Option<Vec<HeldOutValue>>> {
    let d = runner.dataset;
    let values: std::collections::BTreeSet<String> =
        d.examples.iter().filter_map(|e| e.factor(factor)).collect();
    if values.len() < 2 {
        return Ok(None);
    }
    let values: Vec<String> = values.into_iter().collect();
    let out = values
        .into_par_iter()
        .map(|value| {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..d.len())
                .partition(|&i| d.examples[i].factor(factor).as_deref() == Some(&value));
            let spec = EvalSpec {
                measure: MeasureSet::All,
                train_points: &Points::All,
                test_points: &Points::All,
                more_test_points: &[],
                classes: None,
                want_importances: false,
                want_permutation: false,
            };
            let ev = runner.evaluate(plugin, grid, &train, &test, spec, runner.options.seed)?;
            Ok(HeldOutValue {
                value,
                train_examples: train.len(),
                test_examples: test.len(),
                accuracy: accuracy(&ev.predicted, &ev.truth),
                confusion: confusion(&ev.predicted, &ev.truth, d.rules.len()),
            })
        })
        .collect::<Vec<Result<_>>>()
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(out))
}

/// How runs are held out in the early experiment: a factor of [`Example`]s.
pub const EARLY_HELD_OUT: [&str; 2] = ["seeds", "architecture"];

/// The value of an early held-out factor for an example.
fn early_group(e: &crate::Example, factor: &str) -> Option<String> {
    let seed = |s: Option<i64>| s.map_or("unseeded".to_string(), |v| v.to_string());
    match factor {
        "seeds" => Some(format!("m{}/d{}", seed(e.model_seed), seed(e.data_seed))),
        other => e.factor(other),
    }
}

/// Early identification: for each held-out factor with two or more values, every value in
/// turn is left out of training; classifiers on the first k points (k = 1..points, the
/// classifier's first configuration of the grid) identify the left-out runs.
fn early_experiment(
    runner: &Runner<'_>,
    plugin: &Arc<Plugin>,
    progress: &dyn Progress,
) -> Result<EarlyResult> {
    let d = runner.dataset;
    let config = grid_of(plugin, runner.options)?.remove(0);
    let mut curves = Vec::new();
    for factor in EARLY_HELD_OUT {
        let groups: std::collections::BTreeSet<String> = d
            .examples
            .iter()
            .filter_map(|e| early_group(e, factor))
            .collect();
        if groups.len() < 2 {
            for _ in 0..d.points {
                progress.done(&format!("early {factor} (one value: skipped)"));
            }
            continue;
        }
        let mut right = vec![0usize; d.points];
        let mut runs = 0;
        let mut members: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for g in &groups {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..d.len())
                .partition(|&i| early_group(&d.examples[i], factor).as_ref() == Some(g));
            // Every rule must be in training for its runs to be identifiable.
            let trained: std::collections::BTreeSet<u32> =
                train.iter().map(|&i| d.labels[i]).collect();
            if trained.len() == d.rules.len() {
                members.push((train, test));
            }
        }
        // Every (prefix length, held-out group) at once.
        let jobs: Vec<(usize, usize)> = (1..=d.points)
            .flat_map(|k| (0..members.len()).map(move |m| (k, m)))
            .collect();
        let outcomes = jobs
            .par_iter()
            .map(|&(k, m)| {
                let (train, test) = &members[m];
                let model = crate::early::PrefixModel::fit(
                    d,
                    train,
                    MeasureSet::All,
                    k,
                    plugin,
                    &config,
                    runner.options.seed,
                )?;
                let right = crate::early::runs_right(d, test, &model)?;
                if m + 1 == members.len() {
                    progress.done(&format!("early {factor} k={k}"));
                }
                Ok(right)
            })
            .collect::<Vec<Result<(usize, usize)>>>()
            .into_iter()
            .collect::<Result<Vec<(usize, usize)>>>()?;
        for (&(k, _), (ok, n)) in jobs.iter().zip(outcomes) {
            right[k - 1] += ok;
            if k == 1 {
                runs += n;
            }
        }
        curves.push(EarlyCurve {
            held_out: factor.to_string(),
            groups: groups.into_iter().collect(),
            runs,
            accuracy: right
                .iter()
                .map(|&r| {
                    if runs == 0 {
                        f64::NAN
                    } else {
                        r as f64 / runs as f64
                    }
                })
                .collect(),
        });
    }
    Ok(EarlyResult {
        classifier: plugin.name.clone(),
        curves,
    })
}

/// (period, count) pairs of Fig. 4a: periods 1, the middle one and 5 (when they fit), counts
/// 1, 2, 3, 5 and every count up to the largest that fits at each period.
pub fn subsampling_plan(points: usize) -> Vec<(usize, usize)> {
    let mut plan = Vec::new();
    let max_period = (points.saturating_sub(1) / 4).clamp(1, 5);
    let mut periods = vec![1, max_period.div_ceil(2).max(1), max_period];
    periods.dedup();
    for period in periods {
        let most = points.saturating_sub(1) / period + 1;
        let mut counts: Vec<usize> = [1, 2, 3, 5, most]
            .into_iter()
            .filter(|&c| c <= most)
            .collect();
        counts.dedup();
        plan.extend(counts.into_iter().map(|c| (period, c)));
    }
    plan
}

fn trajectory_experiments(
    runner: &Runner<'_>,
    plugin: &Arc<Plugin>,
    splits: &[Split],
    progress: &dyn Progress,
) -> Result<TrajectoryResult> {
    let d = runner.dataset;
    // One configuration (the grid's first): these experiments compare feature sets, and the
    // full protocol would multiply their cost by the grid and the folds.
    let grid = vec![grid_of(plugin, runner.options)?.remove(0)];
    let seed = runner.options.seed;
    // Accuracies of one fit on `train_points`, tested on `test_points` (one per set).
    let eval_on = |measure: MeasureSet,
                   train_points: &Points,
                   test_points: &[Points],
                   split: &Split|
     -> Result<Vec<f64>> {
        let (first, more) = test_points.split_first().expect("a test point set");
        let spec = EvalSpec {
            measure,
            train_points,
            test_points: first,
            more_test_points: more,
            classes: None,
            want_importances: false,
            want_permutation: false,
        };
        let ev = runner.evaluate(plugin, &grid, &split.train, &split.test, spec, seed)?;
        Ok(std::iter::once(&ev.predicted)
            .chain(&ev.more_predicted)
            .map(|p| accuracy(p, &ev.truth))
            .collect())
    };
    let eval = |measure: MeasureSet, train_points: &Points, test_points: &Points, split: &Split| {
        eval_on(
            measure,
            train_points,
            std::slice::from_ref(test_points),
            split,
        )
        .map(|a| a[0])
    };
    let mut subsampling = Vec::new();
    for (period, count) in subsampling_plan(d.points) {
        let points = Points::Sparse {
            period,
            count,
            seed,
        };
        let values = splits
            .par_iter()
            .map(|split| {
                let a = eval(MeasureSet::All, &points, &points, split)?;
                progress.done(&format!("trajectory period {period} count {count}"));
                Ok(a)
            })
            .collect::<Vec<Result<f64>>>()
            .into_iter()
            .collect::<Result<Vec<f64>>>()?;
        subsampling.push(SubsampleResult {
            measure: "all".into(),
            period,
            count,
            proportion: count as f64 / d.points as f64,
            accuracy: acc(values),
        });
    }
    let third = d.points / 3;
    let thirds_points: Vec<Points> = (0..3)
        .map(|i| Points::Range {
            start: i * third,
            len: third,
        })
        .collect();
    let per_split = splits
        .par_iter()
        .map(|split| {
            // One fit per training third, tested on each third (the fit does not depend on
            // the test features: 3 fits instead of 9, the same accuracies).
            let mut m = [[0.0; 3]; 3];
            for (i, train_points) in thirds_points.iter().enumerate() {
                let row = eval_on(MeasureSet::All, train_points, &thirds_points, split)?;
                m[i].copy_from_slice(&row);
                progress.done("trajectory thirds");
            }
            Ok(m)
        })
        .collect::<Vec<Result<[[f64; 3]; 3]>>>()
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let mut thirds = vec![vec![Vec::new(); 3]; 3];
    for m in per_split {
        for (i, row) in m.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                thirds[i][j].push(*a);
            }
        }
    }
    let mut time_averaged = Vec::new();
    for measure in MeasureSet::ALL {
        let values = splits
            .par_iter()
            .map(|split| {
                let a = eval(measure, &Points::Mean, &Points::Mean, split)?;
                progress.done("trajectory time-averaged");
                Ok(a)
            })
            .collect::<Vec<Result<f64>>>()
            .into_iter()
            .collect::<Result<Vec<f64>>>()?;
        time_averaged.push(MeasureAccuracy {
            measure: measure.as_str().to_string(),
            accuracy: acc(values),
        });
    }
    Ok(TrajectoryResult {
        classifier: plugin.name.clone(),
        subsampling,
        thirds: thirds
            .into_iter()
            .map(|row| row.into_iter().map(acc).collect())
            .collect(),
        time_averaged,
    })
}

fn noise_experiment(
    corpus: &Dataset,
    model: &str,
    plugin: &Arc<Plugin>,
    options: &AnalysisOptions,
    progress: &dyn Progress,
) -> Result<NoiseResult> {
    let mut d = corpus.of_model(model);
    // FA vs IA where both exist (spec §3.10), else every rule.
    let fa_ia = ["feedback-alignment", "information-alignment"];
    if fa_ia.iter().all(|r| d.rules.iter().any(|x| x == r)) {
        let keep: Vec<usize> = (0..d.len())
            .filter(|&i| fa_ia.contains(&d.examples[i].learning_rule.as_str()))
            .collect();
        d = d.subset(&keep);
    }
    let splits = balanced_splits(
        &d.labels,
        &d.rules,
        None,
        options.splits,
        options.test_fraction,
        options.folds,
        options.seed,
    )?;
    let grid = vec![grid_of(plugin, options)?.remove(0)];
    let runner = Runner {
        dataset: &d,
        options,
    };
    let mut per_measure = Vec::new();
    let all: Vec<usize> = (0..d.len()).collect();
    for measure in MeasureSet::ALL {
        // A measure not observable under this model (the activity change outside `ideal`).
        if d.unavailable_in(&all, measure).is_some() {
            for _ in &splits {
                progress.done(&format!(
                    "noise {model} {} (not observable)",
                    measure.as_str()
                ));
            }
            continue;
        }
        let spec = EvalSpec {
            measure,
            train_points: &Points::All,
            test_points: &Points::All,
            more_test_points: &[],
            classes: None,
            want_importances: false,
            want_permutation: false,
        };
        let values = splits
            .par_iter()
            .map(|split| {
                let ev = runner.evaluate(
                    plugin,
                    &grid,
                    &split.train,
                    &split.test,
                    spec,
                    options.seed,
                )?;
                progress.done(&format!("noise {model} {}", measure.as_str()));
                Ok(accuracy(&ev.predicted, &ev.truth))
            })
            .collect::<Vec<Result<f64>>>()
            .into_iter()
            .collect::<Result<Vec<f64>>>()?;
        per_measure.push(MeasureAccuracy {
            measure: measure.as_str().to_string(),
            accuracy: acc(values),
        });
    }
    Ok(NoiseResult {
        classifier: plugin.name.clone(),
        model: model.to_string(),
        unit_fraction: None,
        noise_std: None,
        rules: d.rules.clone(),
        per_measure,
    })
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subsampling_plan_fits_the_trajectory() {
        let plan = subsampling_plan(21);
        assert!(plan.contains(&(1, 1)) && plan.contains(&(1, 21)) && plan.contains(&(5, 5)));
        assert!(plan.contains(&(3, 7)));
        for (p, c) in plan {
            assert!((c - 1) * p < 21);
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
