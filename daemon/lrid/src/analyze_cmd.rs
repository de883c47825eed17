//! `lrid analyze`: the paper's identification experiments (spec §3) on a corpus in the daemon,
//! with the classifier plugins the daemon has loaded. Writes `results.json`, `index.html` and
//! the figures into `--out`, stores one row per experiment × classifier × measure × split in
//! the daemon's `analyses` table, and prints a summary table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lrid_classify::{AnalysisOptions, EXPERIMENTS, Progress};
use lrid_plugins::Plugin;
use lrid_report::AnalysisResults;
use lrid_store::AnalysisRow;

use crate::corpus::{CorpusArgs, Daemon};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Classifiers to compare, by plugin name (default: random-forest and linear-svm).
    #[arg(long, value_delimiter = ',', value_name = "NAME,…")]
    classifiers: Vec<String>,
    /// A classifier's settings for every fit, as NAME=JSON (merged into each grid
    /// configuration), e.g. random-forest='{"n_estimators": 200}'. Repeatable.
    #[arg(long = "classifier-config", value_name = "NAME=JSON")]
    classifier_configs: Vec<String>,
    /// Configuration grid searched by cross-validation: fast (small, documented per
    /// classifier) or paper (spec §3.3–§3.5).
    #[arg(long, default_value = "fast", value_parser = ["fast", "paper"])]
    grid: String,
    /// Experiments to run (default: all): main, held-out, importances, trajectory, noise, early.
    #[arg(long, value_delimiter = ',', value_name = "NAME,…")]
    experiments: Vec<String>,
    /// The analysis' name (its report folder and its rows in the analyses table).
    #[arg(long, default_value = "analysis")]
    name: String,
    /// Report folder (default: reports/<name> in the data folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Outer splits.
    #[arg(long, default_value_t = 10)]
    splits: usize,
    /// Fraction of each rule's examples tested in a split.
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    /// Inner cross-validation folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the splits and of every fit.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not z-score continuous features on each training set.
    #[arg(long)]
    no_zscore: bool,
}

/// The default classifiers: the built-in ones that need no libtorch.
const DEFAULT_CLASSIFIERS: [&str; 2] = ["random-forest", "linear-svm"];

struct Bar(ProgressBar);

impl Progress for Bar {
    fn total(&self, units: u64) {
        self.0.set_length(units);
    }

    fn done(&self, what: &str) {
        self.0.set_message(what.to_string());
        self.0.inc(1);
    }
}

/// A classifier whose every configuration gets `overrides` merged in.
fn parse_overrides(specs: &[String]) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((name, json)) = spec.split_once('=') else {
            bail!("--classifier-config '{spec}' is not NAME=JSON");
        };
        let value: serde_json::Value = serde_json::from_str(json).with_context(|| {
            format!("--classifier-config for '{name}' is not valid JSON: {json}")
        })?;
        if !value.is_object() {
            bail!("--classifier-config for '{name}' must be a JSON object; got {value}");
        }
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

pub fn run(args: &AnalyzeArgs) -> Result<()> {
    if args.splits == 0 || args.folds < 2 {
        bail!("--splits must be at least 1 and --folds at least 2");
    }
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        bail!("--test-fraction must be between 0 and 1 (exclusive)");
    }
    let experiments: Vec<String> = if args.experiments.is_empty() {
        EXPERIMENTS.iter().map(|s| s.to_string()).collect()
    } else {
        args.experiments.clone()
    };
    for e in &experiments {
        if !EXPERIMENTS.contains(&e.as_str()) {
            bail!(
                "unknown experiment '{e}' (known: {})",
                EXPERIMENTS.join(", ")
            );
        }
    }
    let overrides = parse_overrides(&args.classifier_configs)?;
    lrid_torch::init();
    let daemon = Daemon::connect(&args.corpus)?;
    let cache = crate::plugin_cache("lrid-analyze-")?;
    let loaded = daemon.classifiers(cache.path())?;
    let wanted: Vec<String> = if args.classifiers.is_empty() {
        DEFAULT_CLASSIFIERS.iter().map(|s| s.to_string()).collect()
    } else {
        args.classifiers.clone()
    };
    let mut classifiers: Vec<Arc<Plugin>> = Vec::new();
    for name in &wanted {
        match loaded.get(name) {
            Some(p) => classifiers.push(p.clone()),
            None => bail!(
                "unknown classifier '{name}': the daemon at {} has loaded {} (drop a classifier's .so into its plugins folder; `lrid sql \"SELECT * FROM plugins\"` lists them)",
                daemon.url,
                if loaded.is_empty() {
                    "none".to_string()
                } else {
                    loaded.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
    for name in overrides.keys() {
        if !wanted.contains(name) {
            bail!("--classifier-config names '{name}', which is not among --classifiers");
        }
    }
    let corpus = daemon.corpus(&args.corpus, None)?;
    let options = AnalysisOptions {
        name: args.name.clone(),
        classifiers,
        grid: args.grid.clone(),
        overrides,
        experiments,
        splits: args.splits,
        test_fraction: args.test_fraction,
        folds: args.folds,
        seed: args.seed,
        zscore: !args.no_zscore,
        model: args.corpus.model.clone(),
        server: daemon.url.clone(),
        where_predicate: args.corpus.where_predicate.clone(),
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} fits, {elapsed} elapsed, ETA {eta} {msg}",
        )
        .expect("template"),
    );
    let results = lrid_classify::analyze(&corpus, &options, &Bar(bar.clone()))?;
    bar.finish_and_clear();
    let out = args.out.clone().unwrap_or_else(|| {
        daemon
            .config
            .store
            .data_dir
            .join("reports")
            .join(&args.name)
    });
    lrid_report::report::write_report(&results, &out)
        .with_context(|| format!("cannot write the report into {}", out.display()))?;
    let rows = store_rows(&daemon, &results)?;
    print!("{}", lrid_report::report::summary_table(&results));
    let parts: Vec<String> = results
        .experiment_seconds
        .iter()
        .map(|(e, s)| format!("{e} {s:.0} s"))
        .collect();
    let parts = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    };
    println!(
        "{} examples from {} runs; {rows} rows in the analyses table (analysis '{}'); {:.0} s{parts}",
        results.corpus.examples, results.corpus.runs, results.name, results.seconds,
    );
    println!("report: {}", out.join("index.html").display());
    Ok(())
}

/// Stores the results in the daemon's `analyses` table; the number of rows.
fn store_rows(daemon: &Daemon, results: &AnalysisResults) -> Result<usize> {
    let rows = analysis_rows(results);
    let created = chrono_ms(&results.created_at);
    let batch = lrid_store::analyses_batch(&results.name, created, &rows);
    let mut body = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut body, &batch.schema())?;
        w.write(&batch)?;
        w.finish()?;
    }
    let answer = daemon
        .action(lrid_protocol::ACTION_PUT_ANALYSIS, body)
        .context("cannot store the analysis in the daemon")?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["rows"].as_u64().unwrap_or(0) as usize)
}

fn chrono_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or(0, |t| t.timestamp_millis())
}

/// One row per experiment × classifier × measure × variant × split (failures included).
pub fn analysis_rows(r: &AnalysisResults) -> Vec<AnalysisRow> {
    let ok = || "ok".to_string();
    let mut rows = Vec::new();
    let per_value = |rows: &mut Vec<AnalysisRow>, base: AnalysisRow, values: &[f64]| {
        for (s, v) in values.iter().enumerate() {
            rows.push(AnalysisRow {
                split: Some(s as u32),
                value: Some(*v),
                ..base.clone()
            });
        }
    };
    for m in &r.main {
        for s in &m.splits {
            rows.push(AnalysisRow {
                experiment: "main".into(),
                classifier: m.classifier.clone(),
                measure: Some(m.measure.clone()),
                split: Some(s.split as u32),
                value: Some(s.accuracy),
                train_examples: Some(s.train_examples as u64),
                test_examples: Some(s.test_examples as u64),
                config: Some(s.config.to_string()),
                status: ok(),
                ..Default::default()
            });
        }
        for p in &m.pairwise {
            let base = AnalysisRow {
                experiment: "main-pairwise".into(),
                classifier: m.classifier.clone(),
                measure: Some(m.measure.clone()),
                variant: Some(format!("pair={}/{}", p.a, p.b)),
                status: ok(),
                ..Default::default()
            };
            per_value(&mut rows, base, &p.accuracy.values);
        }
    }
    for h in &r.held_out {
        for v in &h.values {
            rows.push(AnalysisRow {
                experiment: "held-out".into(),
                classifier: h.classifier.clone(),
                measure: Some("all".into()),
                variant: Some(format!("{}={}", h.factor, v.value)),
                value: Some(v.accuracy),
                train_examples: Some(v.train_examples as u64),
                test_examples: Some(v.test_examples as u64),
                status: ok(),
                ..Default::default()
            });
        }
    }
    if let Some(imp) = &r.importances {
        for (kind, list) in [
            ("impurity", &imp.impurity),
            ("permutation", &imp.permutation),
        ] {
            for f in list {
                rows.push(AnalysisRow {
                    experiment: "importances".into(),
                    classifier: imp.classifier.clone(),
                    measure: Some(f.measure.clone()),
                    variant: Some(format!("{kind}:{}", f.feature)),
                    value: Some(f.mean),
                    status: ok(),
                    ..Default::default()
                });
            }
        }
    }
    if let Some(t) = &r.trajectory {
        for s in &t.subsampling {
            let base = AnalysisRow {
                experiment: "trajectory".into(),
                classifier: t.classifier.clone(),
                measure: Some(s.measure.clone()),
                variant: Some(format!("period={},count={}", s.period, s.count)),
                status: ok(),
                ..Default::default()
            };
            per_value(&mut rows, base, &s.accuracy.values);
        }
        let thirds = ["early", "middle", "late"];
        for (i, row) in t.thirds.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                let base = AnalysisRow {
                    experiment: "trajectory".into(),
                    classifier: t.classifier.clone(),
                    measure: Some("all".into()),
                    variant: Some(format!("train={},test={}", thirds[i], thirds[j])),
                    status: ok(),
                    ..Default::default()
                };
                per_value(&mut rows, base, &a.values);
            }
        }
        for m in &t.time_averaged {
            let base = AnalysisRow {
                experiment: "trajectory".into(),
                classifier: t.classifier.clone(),
                measure: Some(m.measure.clone()),
                variant: Some("time-averaged".into()),
                status: ok(),
                ..Default::default()
            };
            per_value(&mut rows, base, &m.accuracy.values);
        }
    }
    for n in &r.noise {
        for m in &n.per_measure {
            let base = AnalysisRow {
                experiment: "noise".into(),
                classifier: n.classifier.clone(),
                measure: Some(m.measure.clone()),
                variant: Some(format!("model={}", n.model)),
                status: ok(),
                ..Default::default()
            };
            per_value(&mut rows, base, &m.accuracy.values);
        }
    }
    if let Some(e) = &r.early {
        for c in &e.curves {
            for (k, a) in c.accuracy.iter().enumerate() {
                rows.push(AnalysisRow {
                    experiment: "early".into(),
                    classifier: e.classifier.clone(),
                    measure: Some("all".into()),
                    variant: Some(format!("held-out={},points={}", c.held_out, k + 1)),
                    value: a.is_finite().then_some(*a),
                    status: ok(),
                    ..Default::default()
                });
            }
        }
    }
    for f in &r.failures {
        rows.push(AnalysisRow {
            experiment: f.experiment.clone(),
            classifier: f.classifier.clone(),
            measure: f.measure.clone(),
            status: format!("failed: {}", f.reason),
            ..Default::default()
        });
    }
    rows
}
