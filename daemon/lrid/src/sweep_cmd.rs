//! `lrid sweep run FILE`: the Cartesian grid of a sweep file (architectures × tasks × rules ×
//! batch sizes × model seeds × data seeds), each cell one `lrid train` worker process, at most
//! `workers` at a time, all recording into one daemon (an embedded one when none answers).
//!
//! Resumable: a cell whose run is closed in the daemon (it completed every point) is skipped.
//! A failed cell is written to the sweep's journal with its log and does not stop the others; a
//! later `sweep run` tries it again under a new attempt id (`<cell>:a2`, …), since the daemon
//! never reopens a run's completed points.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lrid_trainer::{Arch, TaskName};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::embedded::EmbeddedDaemon;
use crate::train_cmd::server_url;

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: SweepCommand,
}

#[derive(Debug, Subcommand)]
enum SweepCommand {
    /// Run every cell of the grid that has not completed yet.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The sweep file (e.g. config/sweeps/demo.toml).
    file: PathBuf,
    /// Configuration file of the daemon (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's address (default: `[server] listen`); when nothing answers there, an
    /// embedded daemon is started on a free loopback port for the sweep's duration.
    #[arg(long, env = "LRID_SERVER")]
    server: Option<String>,
    /// Bearer token, when the daemon needs one.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Parallel workers (overrides the file).
    #[arg(long)]
    workers: Option<usize>,
    /// Folder of the sweep's journal and worker logs (default: sweeps/<name> in the data folder).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Device of every worker (overrides the file): cpu, cuda, auto.
    #[arg(long)]
    device: Option<String>,
}

/// A seed of the grid: a number, or "unseeded" (the paper's None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Seed {
    Fixed(i64),
    Unseeded(Unseeded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Unseeded {
    Unseeded,
}

impl Seed {
    fn value(self) -> Option<i64> {
        match self {
            Seed::Fixed(s) => Some(s),
            Seed::Unseeded(_) => None,
        }
    }

    fn tag(self) -> String {
        self.value().map_or("u".into(), |s| s.to_string())
    }
}

/// One Cartesian grid; a sweep is the union of its `[[grid]]`s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grid {
    architectures: Vec<Arch>,
    tasks: Vec<TaskName>,
    rules: Vec<String>,
    batch_sizes: Vec<usize>,
    model_seeds: Vec<Seed>,
    data_seeds: Vec<Seed>,
    /// Overrides `[train] resolution` for this grid.
    resolution: Option<i64>,
    /// Overrides `[train] epochs` for this grid.
    epochs: Option<f64>,
}

/// Settings shared by every cell (the flags of `lrid train`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainSettings {
    epochs: f64,
    #[serde(default = "default_points")]
    points: usize,
    train_examples: Option<usize>,
    eval_examples: Option<usize>,
    resolution: Option<i64>,
    width: Option<f64>,
    classes: Option<i64>,
    temperature: Option<f64>,
    cifar_dir: Option<PathBuf>,
    #[serde(default = "default_device")]
    device: String,
}

fn default_points() -> usize {
    21
}

fn default_device() -> String {
    "auto".into()
}

/// Per-rule settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSettings {
    /// Base learning rate at batch size 128, scaled linearly with the batch size.
    lr: Option<f64>,
    /// The rule's JSON configuration.
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Prefix of every run id; the journal's folder name.
    name: String,
    #[serde(default = "default_workers")]
    workers: usize,
    /// libtorch threads per worker (default: the machine's cores / workers).
    threads_per_worker: Option<i32>,
    grid: Vec<Grid>,
    train: TrainSettings,
    #[serde(default)]
    rules: BTreeMap<String, RuleSettings>,
}

fn default_workers() -> usize {
    2
}

impl SweepFile {
    fn load(path: &Path) -> Result<SweepFile> {
        let value = Self::merged(path, 0)?;
        let sweep: SweepFile = value
            .try_into()
            .with_context(|| format!("{} is not a valid sweep file", path.display()))?;
        lrid_protocol::validate_run_id(&sweep.name)
            .map_err(|e| anyhow::anyhow!("{}: sweep name: {e}", path.display()))?;
        if sweep.grid.is_empty() {
            bail!("{}: no [[grid]]", path.display());
        }
        for (i, g) in sweep.grid.iter().enumerate() {
            for (what, empty) in [
                ("architectures", g.architectures.is_empty()),
                ("tasks", g.tasks.is_empty()),
                ("rules", g.rules.is_empty()),
                ("batch_sizes", g.batch_sizes.is_empty()),
                ("model_seeds", g.model_seeds.is_empty()),
                ("data_seeds", g.data_seeds.is_empty()),
            ] {
                if empty {
                    bail!("{}: grid {} has an empty {what}", path.display(), i + 1);
                }
            }
        }
        if sweep.workers == 0 {
            bail!("{}: workers must be at least 1", path.display());
        }
        if let Some(unused) = sweep.rules.keys().find(|r| !sweep.rule_names().contains(r)) {
            bail!(
                "{}: [rules.{unused}] configures a rule that no grid uses",
                path.display()
            );
        }
        Ok(sweep)
    }

    /// The file's TOML with its `base` (another sweep file, relative to this one) under it:
    /// tables merge key by key, anything else (a grid list, a number) is replaced.
    fn merged(path: &Path, depth: usize) -> Result<toml::Table> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the sweep file {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid sweep file", path.display()))?;
        let Some(base) = table.remove("base") else {
            return Ok(table);
        };
        let Some(base) = base.as_str() else {
            bail!("{}: base must be a file name", path.display());
        };
        if depth >= 4 {
            bail!("{}: more than 4 levels of base files", path.display());
        }
        let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
        let mut merged = Self::merged(&base_path, depth + 1)
            .with_context(|| format!("{}: its base {base}", path.display()))?;
        fn merge(into: &mut toml::Table, from: toml::Table) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        merge(&mut merged, table);
        Ok(merged)
    }

    /// Every rule of every grid, once.
    fn rule_names(&self) -> Vec<String> {
        let mut rules: Vec<String> = Vec::new();
        for r in self.grid.iter().flat_map(|g| &g.rules) {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
        rules
    }

    /// Every cell, in grid order (a cell listed by two grids runs once).
    fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = Vec::new();
        for g in &self.grid {
            for &arch in &g.architectures {
                for &task in &g.tasks {
                    for rule in &g.rules {
                        for &batch_size in &g.batch_sizes {
                            for &model_seed in &g.model_seeds {
                                for &data_seed in &g.data_seeds {
                                    let cell = Cell {
                                        arch,
                                        task,
                                        rule: rule.clone(),
                                        batch_size,
                                        model_seed,
                                        data_seed,
                                        resolution: g.resolution.or(self.train.resolution),
                                        epochs: g.epochs.unwrap_or(self.train.epochs),
                                    };
                                    if !cells.iter().any(|c| c.id("") == cell.id("")) {
                                        cells.push(cell);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        cells
    }
}

#[derive(Debug, Clone)]
struct Cell {
    arch: Arch,
    task: TaskName,
    rule: String,
    batch_size: usize,
    model_seed: Seed,
    data_seed: Seed,
    resolution: Option<i64>,
    epochs: f64,
}

impl Cell {
    fn id(&self, sweep: &str) -> String {
        format!(
            "{sweep}/{}/{}/{}/b{}/m{}/d{}",
            self.arch,
            self.task,
            self.rule,
            self.batch_size,
            self.model_seed.tag(),
            self.data_seed.tag()
        )
    }
}

/// One line of the journal.
#[derive(Debug, Serialize)]
struct JournalEntry<'a> {
    run_id: &'a str,
    outcome: &'a str,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    log: String,
}

/// Runs (and attempt counts) of this sweep already in the daemon, by cell id: (closed, attempts).
fn existing_runs(
    server: &str,
    token: Option<&str>,
    sweep: &str,
) -> Result<HashMap<String, (bool, u32)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sql = format!(
        "SELECT run_id, status FROM runs WHERE starts_with(run_id, '{}/')",
        sweep.replace('\'', "''")
    );
    let batches = runtime.block_on(crate::sql::query(server, token, &sql))?;
    let mut runs: HashMap<String, (bool, u32)> = HashMap::new();
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let status = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            let id = ids.value(i);
            let cell = id.split_once(":a").map_or(id, |(c, _)| c);
            let entry = runs.entry(cell.to_string()).or_default();
            entry.0 |= !status.is_null(i) && status.value(i) == "closed";
            entry.1 += 1;
        }
    }
    Ok(runs)
}

struct Worker {
    child: Child,
    run_id: String,
    log: PathBuf,
    started: Instant,
}

fn safe_name(run_id: &str) -> String {
    run_id.replace(['/', ':'], "_")
}

pub fn run(args: &SweepArgs) -> Result<()> {
    match &args.command {
        SweepCommand::Run(a) => run_sweep(a),
    }
}

fn run_sweep(args: &RunArgs) -> Result<()> {
    let sweep = SweepFile::load(&args.file)?;
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    let workers = args.workers.unwrap_or(sweep.workers).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = sweep
        .threads_per_worker
        .unwrap_or_else(|| (cores / workers).max(1) as i32);
    let device = args.device.clone().unwrap_or(sweep.train.device.clone());
    let state = args
        .state_dir
        .clone()
        .unwrap_or_else(|| config.store.data_dir.join("sweeps").join(&sweep.name));
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let server = args
        .server
        .clone()
        .unwrap_or_else(|| server_url(&config.server.listen));
    let (server, embedded) = EmbeddedDaemon::unless_reachable(
        &server,
        args.config.as_deref(),
        &state.join("daemon.log"),
    )?;
    // Every rule must be loaded by the daemon (its plugins folder is watched, so a library
    // dropped there while it runs counts); workers load the same files.
    let rule_dirs = daemon_rules(&server, args.token.as_deref(), &sweep.rule_names())?;
    let existing = existing_runs(&server, args.token.as_deref(), &sweep.name)?;

    let cells = sweep.cells();
    let mut pending = Vec::new();
    for cell in &cells {
        let id = cell.id(&sweep.name);
        match existing.get(&id) {
            Some((true, _)) => {}
            Some((false, attempts)) => {
                pending.push((cell.clone(), format!("{id}:a{}", attempts + 1)))
            }
            None => pending.push((cell.clone(), id)),
        }
    }
    let skipped = cells.len() - pending.len();
    eprintln!(
        "sweep {}: {} runs in the grid, {skipped} already complete, {} to run with {workers} worker(s) × {threads} thread(s) on {device}, daemon {server}",
        sweep.name,
        cells.len(),
        pending.len()
    );

    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("journal.jsonl"))
        .with_context(|| format!("cannot open the journal in {}", state.display()))?;
    let bar = ProgressBar::new(pending.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} sweep [{elapsed_precise}] {bar:30} {pos}/{len} runs, ETA {eta} {msg}",
        )
        .expect("template"),
    );
    let started = Instant::now();
    let mut queue = pending.into_iter();
    let mut running: Vec<Worker> = Vec::new();
    let (mut done, mut failed) = (0usize, Vec::<(String, String, PathBuf)>::new());
    loop {
        while running.len() < workers {
            let Some((cell, run_id)) = queue.next() else {
                break;
            };
            let log = logs.join(format!("{}.log", safe_name(&run_id)));
            let spawn = Spawn {
                server: &server,
                args,
                device: &device,
                threads,
                plugins_dir: &rule_dirs[&cell.rule],
            };
            // A worker that cannot start (e.g. the lrid binary is being replaced by a build)
            // is tried a few times, then recorded as a failed run; the sweep and the workers
            // already running go on.
            let mut attempt = spawn.worker(&sweep, &cell, &run_id, &log);
            for _ in 0..4 {
                if attempt.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
                attempt = spawn.worker(&sweep, &cell, &run_id, &log);
            }
            let child = match attempt {
                Ok(child) => child,
                Err(e) => {
                    let error = format!("{e:#}");
                    let entry = JournalEntry {
                        run_id: &run_id,
                        outcome: "failed",
                        seconds: 0.0,
                        error: Some(error.clone()),
                        log: log.display().to_string(),
                    };
                    writeln!(journal, "{}", serde_json::to_string(&entry)?)?;
                    bar.println(format!("failed: {run_id} — {error}"));
                    failed.push((run_id, error, log));
                    bar.inc(1);
                    continue;
                }
            };
            running.push(Worker {
                child,
                run_id,
                log,
                started: Instant::now(),
            });
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let w = running.swap_remove(i);
            let seconds = w.started.elapsed().as_secs_f64();
            let error = (!status.success()).then(|| last_error(&w.log, status));
            let entry = JournalEntry {
                run_id: &w.run_id,
                outcome: if error.is_none() {
                    "completed"
                } else {
                    "failed"
                },
                seconds,
                error: error.clone(),
                log: w.log.display().to_string(),
            };
            writeln!(journal, "{}", serde_json::to_string(&entry)?)?;
            match error {
                None => done += 1,
                Some(e) => {
                    bar.println(format!("failed: {} — {e}", w.run_id));
                    failed.push((w.run_id, e, w.log));
                }
            }
            bar.inc(1);
            bar.set_message(format!(
                "({} running, {} failed)",
                running.len(),
                failed.len()
            ));
        }
    }
    bar.finish_and_clear();
    drop(embedded);
    eprintln!(
        "sweep {}: {done} completed, {skipped} skipped (already complete), {} failed in {:.1} s; journal {}",
        sweep.name,
        failed.len(),
        started.elapsed().as_secs_f64(),
        state.join("journal.jsonl").display()
    );
    if !failed.is_empty() {
        for (id, e, log) in &failed {
            eprintln!("  {id}: {e} (log {})", log.display());
        }
        bail!(
            "{} of the sweep's runs failed; run the sweep again to retry them",
            failed.len()
        );
    }
    Ok(())
}

/// Which folder each rule's library is in, as the daemon has loaded it.
fn daemon_rules(
    server: &str,
    token: Option<&str>,
    rules: &[String],
) -> Result<HashMap<String, PathBuf>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let batches = runtime.block_on(crate::sql::query(
        server,
        token,
        "SELECT name, file FROM plugins WHERE status = 'loaded' AND kind = 'learning-rule'",
    ))?;
    let mut loaded: HashMap<String, PathBuf> = HashMap::new();
    for b in &batches {
        let names = b.column(0).as_string::<i32>();
        let files = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            let dir = Path::new(files.value(i))
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            loaded.insert(names.value(i).to_string(), dir);
        }
    }
    let missing: Vec<&str> = rules
        .iter()
        .filter(|r| !loaded.contains_key(*r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let mut names: Vec<&str> = loaded.keys().map(String::as_str).collect();
        names.sort_unstable();
        bail!(
            "learning rule(s) {} are not loaded by the daemon at {server} (loaded: {}); put their .so into its plugins folder (`lrid sql \"SELECT * FROM plugins\"` shows it and refused files)",
            missing.join(", "),
            names.join(", ")
        );
    }
    Ok(loaded)
}

/// How workers are started.
struct Spawn<'a> {
    server: &'a str,
    args: &'a RunArgs,
    device: &'a str,
    threads: i32,
    plugins_dir: &'a Path,
}

impl Spawn<'_> {
    fn worker(&self, sweep: &SweepFile, cell: &Cell, run_id: &str, log: &Path) -> Result<Child> {
        let (server, args, device, threads) = (self.server, self.args, self.device, self.threads);
        let t = &sweep.train;
        let rule = sweep.rules.get(&cell.rule).cloned().unwrap_or_default();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("train")
            .args(["--arch", cell.arch.name()])
            .args(["--task", cell.task.name()])
            .args(["--rule", &cell.rule])
            .args(["--batch-size", &cell.batch_size.to_string()])
            .args(["--epochs", &cell.epochs.to_string()])
            .args(["--points", &t.points.to_string()])
            .args(["--device", device])
            .args(["--server", server])
            .args(["--run-id", run_id])
            .args(["--threads", &threads.to_string()])
            .arg("--plugins-dir")
            .arg(self.plugins_dir)
            .arg("--quiet");
        if let Some(s) = cell.model_seed.value() {
            cmd.args(["--model-seed", &s.to_string()]);
        }
        if let Some(s) = cell.data_seed.value() {
            cmd.args(["--data-seed", &s.to_string()]);
        }
        if let Some(c) = &args.config {
            cmd.arg("--config").arg(c);
        }
        let optional = [
            ("--train-examples", t.train_examples.map(|v| v.to_string())),
            ("--eval-examples", t.eval_examples.map(|v| v.to_string())),
            ("--resolution", cell.resolution.map(|v| v.to_string())),
            ("--width", t.width.map(|v| v.to_string())),
            ("--classes", t.classes.map(|v| v.to_string())),
            ("--temperature", t.temperature.map(|v| v.to_string())),
            (
                "--lr",
                rule.lr
                    .map(|base| (base * cell.batch_size as f64 / 128.0).to_string()),
            ),
            ("--rule-config", rule.config.map(|c| c.to_string())),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                cmd.args([flag, &v]);
            }
        }
        if let Some(dir) = &t.cifar_dir {
            cmd.arg("--cifar-dir").arg(dir);
        }
        if let Some(token) = &args.token {
            cmd.env("LRID_TOKEN", token);
        }
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the worker of {run_id}"))
    }
}

/// The worker's `error: …` line, else its exit status.
fn last_error(log: &Path, status: std::process::ExitStatus) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: ").map(str::to_string))
        })
        .unwrap_or_else(|| format!("the worker exited with {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> SweepFile {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../config/sweeps/{name}.toml"));
        SweepFile::load(&path).unwrap()
    }

    #[test]
    fn the_demo_sweep_has_every_rule_on_two_networks() {
        let demo = shipped("demo");
        let cells = demo.cells();
        assert_eq!(
            demo.rule_names(),
            [
                "sgdm",
                "adam",
                "feedback-alignment",
                "information-alignment"
            ]
        );
        assert_eq!(cells.len(), 2 * 4 * 2 * 2 * 2);
        assert_eq!(
            cells[0].id("demo"),
            "demo/resnet18-v1/shapes/sgdm/b32/mu/du"
        );
    }

    #[test]
    fn the_live_demo_inherits_the_demo_s_training_and_the_study_covers_the_design() {
        let demo = shipped("demo");
        let live = shipped("demo-live");
        assert_eq!(live.name, "demo-live");
        assert_eq!(live.cells().len(), 4, "one run per rule");
        assert_eq!(live.train.epochs, demo.train.epochs);
        assert_eq!(live.train.width, demo.train.width);
        assert_eq!(
            live.rules["information-alignment"].config,
            demo.rules["information-alignment"].config
        );
        assert!(live.cells().iter().all(|c| c.model_seed == Seed::Fixed(7)));
        let study = shipped("study");
        let cells = study.cells();
        assert_eq!(cells.len(), 352);
        let archs: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.arch.name()).collect();
        assert_eq!(archs.len(), 10, "all ten architectures: {archs:?}");
    }

    #[test]
    fn a_base_file_is_merged_under_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "name = \"b\"\nworkers = 3\n[[grid]]\narchitectures = [\"knet4\"]\ntasks = [\"shapes\"]\nrules = [\"sgdm\"]\nbatch_sizes = [8]\nmodel_seeds = [0]\ndata_seeds = [0]\n[train]\nepochs = 2\nwidth = 0.5\n[rules.sgdm]\nlr = 0.3\n",
        )
        .unwrap();
        let child = dir.path().join("child.toml");
        std::fs::write(
            &child,
            "base = \"base.toml\"\nname = \"c\"\n[train]\nepochs = 4\n",
        )
        .unwrap();
        let s = SweepFile::load(&child).unwrap();
        assert_eq!((s.name.as_str(), s.workers), ("c", 3));
        assert_eq!((s.train.epochs, s.train.width), (4.0, Some(0.5)));
        assert_eq!(s.rules["sgdm"].lr, Some(0.3));
        std::fs::write(&child, "base = \"missing.toml\"\nname = \"c\"\n").unwrap();
        let e = format!("{:#}", SweepFile::load(&child).unwrap_err());
        assert!(
            e.contains("its base missing.toml") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&child, "base = \"child.toml\"\nname = \"c\"\n").unwrap();
        let e = format!("{:#}", SweepFile::load(&child).unwrap_err());
        assert!(e.contains("more than 4 levels"), "{e}");
    }

    #[test]
    fn the_paper_sweep_is_the_paper_s_1056_runs() {
        let paper = shipped("paper");
        let cells = paper.cells();
        assert_eq!(cells.len(), 1056);
        let knets = cells
            .iter()
            .filter(|c| c.arch.name().starts_with("knet"))
            .count();
        assert_eq!(knets, 4 * 4 * 3 * 2 * 2);
        assert!(cells.iter().all(|c| c.resolution
            == Some(if c.arch.name().starts_with("knet") {
                32
            } else {
                64
            })));
    }

    #[test]
    fn bad_sweep_files_are_refused_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let write = |body: &str| {
            let p = dir.path().join("s.toml");
            std::fs::write(&p, body).unwrap();
            SweepFile::load(&p).map(|_| ()).unwrap_err().to_string()
                + &format!("{:#}", SweepFile::load(&p).map(|_| ()).unwrap_err())
        };
        let grid = "[[grid]]\narchitectures = [\"knet4\"]\ntasks = [\"shapes\"]\nrules = [\"sgdm\"]\nbatch_sizes = [8]\nmodel_seeds = [0]\ndata_seeds = [\"unseeded\"]\n[train]\nepochs = 1\n";
        assert!(write(&format!("name = \"a b\"\n{grid}")).contains("invalid run id"));
        assert!(write(&format!("name = \"s\"\n{}", grid.replace("knet4", "vgg"))).contains("vgg"));
        assert!(
            write(&format!(
                "name = \"s\"\n{}",
                grid.replace("\"unseeded\"", "\"never\"")
            ))
            .contains("data_seeds")
        );
        assert!(
            write(&format!("name = \"s\"\n{}", grid.replace("[8]", "[]")))
                .contains("empty batch_sizes")
        );
        assert!(
            write(&format!("name = \"s\"\n{grid}[rules.adam]\nlr = 1\n")).contains("[rules.adam]")
        );
        assert!(write(&format!("name = \"s\"\nworkers = 0\n{grid}")).contains("workers"));
    }
}
