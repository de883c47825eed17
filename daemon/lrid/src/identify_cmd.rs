//! `lrid identify`: live identification. `fit` trains an identifier on a corpus in the daemon
//! (one classifier per prefix length, fitted here, uploaded with `lrid.put_identifier`);
//! `lrid identify RUN [--follow]` prints what the daemon's identifiers conclude about a run,
//! point by point; `--runs` lists runs with their current best guess; `list` and `delete`
//! manage identifiers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lrid_classify::MeasureSet;
use lrid_protocol::{
    ACTION_DELETE_IDENTIFIER, ACTION_PUT_IDENTIFIER, DeleteIdentifier, IdentifierAck,
};
use lrid_store::IDENTIFICATION_ROWS_TABLE;

use crate::corpus::{CorpusArgs, Daemon, ServerArgs};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IdentifyArgs {
    #[command(subcommand)]
    command: Option<IdentifyCommand>,
    /// The run to show: its run-level probabilities at every point so far.
    run: Option<String>,
    /// Keep showing new points as they are identified; exit when the run is closed.
    #[arg(long, requires = "run")]
    follow: bool,
    /// Only this identifier's rows (default: every identifier's).
    #[arg(long)]
    identifier: Option<String>,
    /// List runs with their current best guess instead.
    #[arg(long, conflicts_with = "run")]
    runs: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum IdentifyCommand {
    /// Train an identifier on a corpus in the daemon and store it there.
    Fit(Box<FitArgs>),
    /// The daemon's identifiers, with their held-out accuracy by points seen.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete an identifier (the rows it wrote stay).
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
struct FitArgs {
    /// The identifier's name (letters, digits, '-', '_', '.').
    #[arg(long)]
    name: String,
    /// The classifier plugin; it must be able to save and load its models.
    #[arg(long, default_value = "random-forest")]
    classifier: String,
    /// The classifier's configuration (JSON object; default: the first of its fast grid).
    #[arg(long, value_name = "JSON")]
    classifier_config: Option<String>,
    /// The measure subset of the features: weight, act, grad, all.
    #[arg(long, default_value = "all")]
    measure: String,
    /// Fraction of each rule's runs held out to measure the accuracies (the stored models
    /// then learn from every run).
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    /// Seed of the held-out runs and of every fit.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    corpus: CorpusArgs,
}

pub fn run(args: &IdentifyArgs) -> Result<()> {
    match &args.command {
        Some(IdentifyCommand::Fit(fit)) => run_fit(fit),
        Some(IdentifyCommand::List { server }) => list(&Daemon::connect_to(server)?),
        Some(IdentifyCommand::Delete { name, server }) => {
            let daemon = Daemon::connect_to(server)?;
            let body = serde_json::to_vec(&DeleteIdentifier { name: name.clone() })?;
            daemon.action(ACTION_DELETE_IDENTIFIER, body)?;
            println!("deleted identifier '{name}' (its rows in identifications stay)");
            Ok(())
        }
        None => {
            let daemon = Daemon::connect_to(&args.server)?;
            if args.runs {
                return list_runs(&daemon, args.identifier.as_deref());
            }
            let Some(run) = &args.run else {
                bail!("name a run (lrid identify RUN), or use --runs, fit, list or delete");
            };
            show_run(&daemon, run, args.identifier.as_deref(), args.follow)
        }
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn run_fit(args: &FitArgs) -> Result<()> {
    let Some(measure) = MeasureSet::parse(&args.measure) else {
        bail!(
            "unknown measure '{}' (known: weight, act, grad, all)",
            args.measure
        );
    };
    if !(args.test_fraction >= 0.0 && args.test_fraction < 1.0) {
        bail!("--test-fraction must be in [0, 1)");
    }
    lrid_identify::identifier::check_name(&args.name)?;
    lrid_torch::init();
    let daemon = Daemon::connect(&args.corpus)?;
    let cache = crate::plugin_cache("lrid-identify-")?;
    let loaded = daemon.classifiers(cache.path())?;
    let Some(plugin) = loaded.get(&args.classifier) else {
        bail!(
            "unknown classifier '{}': the daemon at {} has loaded {}",
            args.classifier,
            daemon.url,
            if loaded.is_empty() {
                "none".to_string()
            } else {
                loaded.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    };
    let config = match &args.classifier_config {
        Some(json) => {
            let v: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--classifier-config is not valid JSON: {json}"))?;
            if !v.is_object() {
                bail!("--classifier-config must be a JSON object; got {v}");
            }
            v
        }
        None => plugin
            .grid("fast")?
            .into_iter()
            .next()
            .unwrap_or_else(|| serde_json::json!({})),
    };
    let corpus = daemon.corpus(&args.corpus, Some(&args.corpus.model))?;
    let bar = ProgressBar::new(corpus.points as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} prefix lengths, ETA {eta}")
            .expect("template"),
    );
    let options = lrid_identify::FitOptions {
        name: args.name.clone(),
        config,
        measure,
        where_predicate: args.corpus.where_predicate.clone(),
        model: args.corpus.model.clone(),
        test_fraction: args.test_fraction,
        seed: args.seed,
    };
    let started = Instant::now();
    let identifier = lrid_identify::fit(&corpus, plugin, &options, &|_| bar.inc(1))?;
    bar.finish_and_clear();
    let fitted = started.elapsed().as_secs_f64();
    let answer = daemon
        .action(ACTION_PUT_IDENTIFIER, identifier.to_ipc()?)
        .context("the daemon did not take the identifier")?;
    let ack: IdentifierAck = serde_json::from_slice(&answer)?;
    let m = &identifier.meta;
    println!(
        "identifier '{}': {} on {} examples from {} runs ({}), rules {}; fitted in {fitted:.0} s",
        ack.name,
        m.classifier,
        m.examples,
        m.runs,
        m.architectures.join(", "),
        ack.rules.join(", ")
    );
    if m.held_out_runs > 0 {
        println!(
            "held-out accuracy by points seen ({} runs held out, then refit on all):",
            m.held_out_runs
        );
        println!("{:>6} {:>8} {:>8}", "points", "layers", "runs");
        for s in &identifier.stages {
            println!(
                "{:>6} {:>7.1}% {:>7.1}%",
                s.points,
                s.accuracy * 100.0,
                s.run_accuracy * 100.0
            );
        }
    }
    println!("stored in the daemon at {}", daemon.url);
    Ok(())
}

fn list(daemon: &Daemon) -> Result<()> {
    let batches = daemon.query(
        "SELECT name, status, classifier, rules, points, examples, runs, held_out_runs, run_accuracy, model, where_predicate FROM identifiers ORDER BY name",
    )?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        println!("no identifiers (lrid identify fit --name NAME trains one)");
        return Ok(());
    }
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}

fn list_runs(daemon: &Daemon, identifier: Option<&str>) -> Result<()> {
    let filter = identifier.map_or(String::new(), |i| {
        format!(" AND identifier = {}", sql_str(i))
    });
    let sql = format!(
        "SELECT i.run_id, r.status, r.learning_rule AS label, i.identifier, i.point, i.predicted, round(i.probability, 3) AS probability \
         FROM (SELECT run_id, identifier, point, predicted, probability, row_number() OVER (PARTITION BY run_id, identifier ORDER BY point DESC) AS rn \
               FROM {IDENTIFICATION_ROWS_TABLE} WHERE layer_index IS NULL AND status = 'ok'{filter}) i \
         JOIN runs r ON i.run_id = r.run_id WHERE i.rn = 1 ORDER BY i.run_id, i.identifier"
    );
    let batches = daemon.query(&sql)?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        println!("no run has been identified yet");
        return Ok(());
    }
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}

/// A run-level identification row.
#[derive(Debug, Clone)]
struct RunRow {
    identifier: String,
    point: u32,
    seen: u32,
    predicted: Option<String>,
    probabilities: BTreeMap<String, f64>,
    status: String,
    note: Option<String>,
}

fn run_rows(batches: &[RecordBatch]) -> Vec<RunRow> {
    let mut out = Vec::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).expect("queried column");
        let identifier = col("identifier").as_string::<i32>();
        let point = col("point").as_primitive::<UInt32Type>();
        let seen = col("points_seen").as_primitive::<UInt32Type>();
        let predicted = col("predicted").as_string::<i32>();
        let map = col("probabilities").as_map();
        let status = col("status").as_string::<i32>();
        let note = col("note").as_string::<i32>();
        for i in 0..b.num_rows() {
            let mut probabilities = BTreeMap::new();
            if map.is_valid(i) {
                let entries = map.value(i);
                let keys = entries.column(0).as_string::<i32>();
                let values = entries.column(1).as_primitive::<Float64Type>();
                for j in 0..entries.len() {
                    probabilities.insert(keys.value(j).to_string(), values.value(j));
                }
            }
            out.push(RunRow {
                identifier: identifier.value(i).to_string(),
                point: point.value(i),
                seen: seen.value(i),
                predicted: predicted
                    .is_valid(i)
                    .then(|| predicted.value(i).to_string()),
                probabilities,
                status: status.value(i).to_string(),
                note: note.is_valid(i).then(|| note.value(i).to_string()),
            });
        }
    }
    out
}

fn show_run(daemon: &Daemon, run: &str, identifier: Option<&str>, follow: bool) -> Result<()> {
    let status = |daemon: &Daemon| -> Result<Option<(String, Option<String>)>> {
        let b = daemon.query(&format!(
            "SELECT status, learning_rule FROM runs WHERE run_id = {}",
            sql_str(run)
        ))?;
        Ok(b.iter().find(|b| b.num_rows() > 0).map(|b| {
            let s = b.column(0).as_string::<i32>();
            let l = b.column(1).as_string::<i32>();
            (
                s.value(0).to_string(),
                l.is_valid(0).then(|| l.value(0).to_string()),
            )
        }))
    };
    let Some((mut run_status, label)) = status(daemon)? else {
        bail!(
            "unknown run '{run}': the daemon at {} has no such run",
            daemon.url
        );
    };
    let names: BTreeSet<String> = daemon
        .query("SELECT name FROM identifiers")?
        .iter()
        .flat_map(|b| {
            let n = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| n.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(i) = identifier
        && !names.contains(i)
    {
        bail!(
            "unknown identifier '{i}' (identifiers: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    }
    let filter = identifier.map_or(String::new(), |i| {
        format!(" AND identifier = {}", sql_str(i))
    });
    println!(
        "run {run} ({run_status}{})",
        label.map_or(String::new(), |l| format!(", labelled {l}"))
    );
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    let mut rules: Vec<String> = Vec::new();
    let mut printed_header = false;
    let mut noted = false;
    let mut closed_since: Option<Instant> = None;
    let mut last_new = Instant::now();
    loop {
        let batches = daemon.query(&format!(
            "SELECT identifier, point, points_seen, predicted, probabilities, status, note FROM {IDENTIFICATION_ROWS_TABLE} \
             WHERE run_id = {} AND layer_index IS NULL{filter} ORDER BY point, identifier",
            sql_str(run)
        ))?;
        let rows: Vec<RunRow> = run_rows(&batches)
            .into_iter()
            .filter(|r| last.get(&r.identifier).is_none_or(|&p| r.point > p))
            .collect();
        if !rows.is_empty() {
            last_new = Instant::now();
        }
        for r in &rows {
            if !printed_header {
                let mut all: BTreeSet<String> = BTreeSet::new();
                for r in &rows {
                    all.extend(r.probabilities.keys().cloned());
                }
                rules = all.into_iter().collect();
                print!(
                    "{:<16} {:>5} {:>4}  {:<22}",
                    "identifier", "point", "seen", "predicted"
                );
                for rule in &rules {
                    print!(" {rule:>9}");
                }
                println!();
                printed_header = true;
            }
            print!(
                "{:<16} {:>5} {:>4}  {:<22}",
                r.identifier,
                r.point,
                r.seen,
                r.predicted.as_deref().unwrap_or("-")
            );
            for rule in &rules {
                let w = rule.len().max(9);
                match r.probabilities.get(rule) {
                    Some(p) => print!(" {p:>w$.3}"),
                    None => print!(" {:>w$}", ""),
                }
            }
            if r.status != "ok" {
                print!("  {}", r.status);
            }
            println!();
            last.insert(r.identifier.clone(), r.point);
        }
        if !noted && let Some(note) = rows.iter().find_map(|r| r.note.clone()) {
            println!("note: {note}");
            noted = true;
        }
        use std::io::Write;
        std::io::stdout().flush().ok();
        if !follow {
            if !printed_header {
                println!(
                    "no identification yet{}",
                    if names.is_empty() {
                        " (the daemon has no identifiers: lrid identify fit --name NAME)"
                    } else {
                        ""
                    }
                );
            }
            return Ok(());
        }
        if run_status == "closed" {
            // The last points' rows may still be on their way: wait until none came for a
            // second.
            let since = *closed_since.get_or_insert_with(Instant::now);
            if last_new.elapsed() > Duration::from_secs(1)
                && since.elapsed() > Duration::from_secs(1)
                || since.elapsed() > Duration::from_secs(30)
            {
                println!("run closed");
                return Ok(());
            }
        } else if let Some((s, _)) = status(daemon)? {
            run_status = s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
