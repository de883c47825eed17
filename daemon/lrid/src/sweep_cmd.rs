//! `lrid sweep run|shard|submit|status FILE`: the command line of virtual-experiment sweeps;
//! the plan and the executors are `lrid-sweep`'s. Here: asking the daemon what it holds of a
//! sweep and which rule versions it has loaded, starting an embedded daemon for `run`, calling
//! `sbatch` / `kubectl`.
//!
//! Resumable everywhere: a cell whose run is closed in the daemon (it completed every point) is
//! skipped; a failed or interrupted one is tried again under a new attempt id (`<cell>:a2`, …),
//! since the daemon never reopens a run's completed points.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use clap::{Args, Subcommand};
use lrid_sweep::k8s::{self, K8sOptions};
use lrid_sweep::local::{LocalExecutor, read_journals};
use lrid_sweep::slurm::{self, SlurmOptions};
use lrid_sweep::{Existing, Shard, SweepFile};

use crate::config::Config;
use crate::embedded::EmbeddedDaemon;
use crate::train_cmd::{check_reachable, server_url};

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: SweepCommand,
}

#[derive(Debug, Subcommand)]
enum SweepCommand {
    /// Run every cell of the grid that has not completed yet, here (an embedded daemon when
    /// none answers).
    Run(RunArgs),
    /// Run one shard of the grid here (what each Slurm array task or Kubernetes index runs);
    /// the index and count come from the flags or the scheduler's environment.
    Shard(ShardArgs),
    /// Submit the sweep to a cluster's scheduler: a Slurm job array (sbatch) or a Kubernetes
    /// Indexed Job (kubectl), one task per shard; only the shards with missing cells.
    Submit(Box<SubmitArgs>),
    /// Done / running / failed / pending cells per shard, from the daemon and the journals.
    Status(StatusArgs),
}

/// Flags of every command that talks to the daemon.
#[derive(Debug, Args)]
struct DaemonArgs {
    /// Configuration file of the daemon and the workers (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's address (default: `[server] listen`).
    #[arg(long, env = "LRID_SERVER")]
    server: Option<String>,
    /// Bearer token, when the daemon needs one.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Folder of the sweep's journals and worker logs (default: sweeps/<name> in the data
    /// folder).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Flags of the commands that start workers.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// Parallel training processes (overrides the file).
    #[arg(long)]
    workers: Option<usize>,
    /// Device of every worker (overrides the file): cpu, cuda, auto.
    #[arg(long)]
    device: Option<String>,
    /// Where workers find rule plugins besides the built-in ones (default: the configuration's
    /// plugins folder). Each rule's version must be the one the daemon has loaded.
    #[arg(long, value_name = "DIR")]
    plugins_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The sweep file (e.g. config/sweeps/demo.toml).
    file: PathBuf,
    #[command(flatten)]
    daemon: DaemonArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[derive(Debug, Args)]
struct ShardArgs {
    file: PathBuf,
    /// This shard (0-based); default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.
    #[arg(long)]
    index: Option<usize>,
    /// Shards in all; default: SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    count: Option<usize>,
    #[command(flatten)]
    daemon: DaemonArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("scheduler").required(true).args(["slurm", "k8s"]))]
struct SubmitArgs {
    file: PathBuf,
    /// Submit a Slurm job array with sbatch.
    #[arg(long)]
    slurm: bool,
    /// Write a Kubernetes Indexed Job and apply it with kubectl.
    #[arg(long)]
    k8s: bool,
    /// Print the script or manifest; submit and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Shards, one array task or completion index each (default: one per cell).
    #[arg(long)]
    tasks: Option<usize>,
    /// Tasks at once (Slurm's %M throttle; the Job's parallelism). Default: no throttle (Slurm),
    /// every task (Kubernetes).
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Training processes per task.
    #[arg(long, default_value_t = 1)]
    workers_per_task: usize,
    #[arg(long)]
    gpus_per_task: Option<u32>,
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm time limit per task (minutes, h:m:s, d-h:m:s).
    #[arg(long)]
    time: Option<String>,
    /// A file the tasks read the daemon's token from (Slurm; never the token itself).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Kubernetes: the container image with lrid and its plugins (deploy/Containerfile).
    #[arg(long)]
    image: Option<String>,
    /// Kubernetes namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Kubernetes Secret with the daemon's token under the key `token`.
    #[arg(long, default_value = "lrid-token")]
    token_secret: String,
    /// Kubernetes: retries of one index before it counts as failed.
    #[arg(long, default_value_t = 3)]
    backoff_limit_per_index: u32,
    /// Device of every worker: cpu, cuda, auto (default: the file's).
    #[arg(long)]
    device: Option<String>,
    /// The workers' plugins folder on the compute nodes (besides the built-in rules).
    #[arg(long, value_name = "DIR")]
    plugins_dir: Option<PathBuf>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Debug, Args)]
struct StatusArgs {
    file: PathBuf,
    /// Shards in all (default: the last submission's, else 1).
    #[arg(long)]
    count: Option<usize>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

pub fn run(args: &SweepArgs) -> Result<()> {
    match &args.command {
        SweepCommand::Run(a) => run_shard(&a.file, None, &a.daemon, &a.worker),
        SweepCommand::Shard(a) => {
            let shard = Shard::from_flags_or_env(a.index, a.count, |k| std::env::var(k).ok())?;
            run_shard(&a.file, Some(shard), &a.daemon, &a.worker)
        }
        SweepCommand::Submit(a) => submit(a),
        SweepCommand::Status(a) => status(a),
    }
}

/// The configuration, the daemon's address and the sweep's state folder.
struct SweepContext {
    server: String,
    state: PathBuf,
}

impl SweepContext {
    fn new(args: &DaemonArgs, sweep: &SweepFile) -> Result<SweepContext> {
        let config = Config::load_or_embedded(args.config.as_deref())?;
        let server = args
            .server
            .clone()
            .unwrap_or_else(|| server_url(&config.server));
        let state = args
            .state_dir
            .clone()
            .unwrap_or_else(|| config.store.data_dir.join("sweeps").join(&sweep.name));
        Ok(SweepContext { server, state })
    }
}

/// `sweep run` (shard = None: every cell, an embedded daemon when none answers) and
/// `sweep shard` (one shard, into the daemon at --server).
fn run_shard(
    file: &Path,
    shard: Option<Shard>,
    args: &DaemonArgs,
    worker: &WorkerArgs,
) -> Result<()> {
    let sweep = SweepFile::load(file)?;
    let ctx = SweepContext::new(args, &sweep)?;
    let workers = worker.workers.unwrap_or(sweep.workers).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = sweep
        .threads_per_worker
        .unwrap_or_else(|| (cores / workers).max(1) as i32);
    let device = worker.device.clone().unwrap_or(sweep.train.device.clone());
    std::fs::create_dir_all(&ctx.state)
        .with_context(|| format!("cannot create {}", ctx.state.display()))?;
    let (server, embedded) = match shard {
        // A shard runs on a cluster node: it records into the central daemon or fails.
        Some(_) => {
            check_reachable(&ctx.server)?;
            (ctx.server.clone(), None)
        }
        None => EmbeddedDaemon::unless_reachable(
            &ctx.server,
            args.config.as_deref(),
            &ctx.state.join("daemon.log"),
        )?,
    };
    let token = args.token.as_deref();
    // Every rule must be loaded by the daemon (its plugins folder is watched, so a library
    // dropped there while it runs counts); workers load their own copy of the same version.
    let versions = daemon_rules(&server, token, &sweep.rule_names())?;
    let existing = existing_runs(&server, token, &sweep.name)?.0;

    let cells = match shard {
        Some(s) => sweep.shard_cells(s),
        None => sweep.cells(),
    };
    let mut pending = sweep.pending(&cells, &existing);
    for (spec, _) in &mut pending {
        spec.rule_version = versions.get(&spec.rule).cloned();
    }
    let skipped = cells.len() - pending.len();
    let what = match shard {
        Some(s) => format!(
            "sweep {} shard {}/{}: {} runs in the shard",
            sweep.name,
            s.index,
            s.count,
            cells.len()
        ),
        None => format!("sweep {}: {} runs in the grid", sweep.name, cells.len()),
    };
    eprintln!(
        "{what}, {skipped} already complete, {} to run with {workers} worker(s) × {threads} thread(s) on {device}, daemon {server}",
        pending.len()
    );

    let mut base_args: Vec<String> = vec![
        "--device".into(),
        device,
        "--server".into(),
        server.clone(),
        "--threads".into(),
        threads.to_string(),
        "--quiet".into(),
    ];
    if let Some(c) = &args.config {
        base_args.extend(["--config".into(), c.display().to_string()]);
    }
    if let Some(d) = &worker.plugins_dir {
        base_args.extend(["--plugins-dir".into(), d.display().to_string()]);
    }
    let journal = match shard {
        Some(s) => ctx
            .state
            .join(format!("journal-shard-{}-of-{}.jsonl", s.index, s.count)),
        None => ctx.state.join("journal.jsonl"),
    };
    let executor = LocalExecutor {
        program: std::env::current_exe()?,
        base_args,
        env: token
            .map(|t| vec![("LRID_TOKEN".to_string(), t.to_string())])
            .unwrap_or_default(),
        workers,
        logs: ctx.state.join("logs"),
        journal: journal.clone(),
        shard: shard.map(|s| format!("{}/{}", s.index, s.count)),
        quiet: worker.quiet,
    };
    let summary = executor.run(pending)?;
    drop(embedded);
    eprintln!(
        "sweep {}: {} completed, {skipped} skipped (already complete), {} failed in {:.1} s; journal {}",
        sweep.name,
        summary.completed,
        summary.failed.len(),
        summary.seconds,
        journal.display()
    );
    if !summary.failed.is_empty() {
        for (id, e, log) in &summary.failed {
            eprintln!("  {id}: {e} (log {})", log.display());
        }
        bail!(
            "{} of the sweep's runs failed; run the sweep again to retry them",
            summary.failed.len()
        );
    }
    Ok(())
}

/// Runs of this sweep already in the daemon, and the ids of those still open.
fn existing_runs(
    server: &str,
    token: Option<&str>,
    sweep: &str,
) -> Result<(Existing, Vec<String>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sql = format!(
        "SELECT run_id, status FROM runs WHERE starts_with(run_id, '{}/')",
        sweep.replace('\'', "''")
    );
    let batches = runtime.block_on(crate::sql::query(server, token, &sql))?;
    let mut rows: Vec<(String, bool)> = Vec::new();
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let status = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.push((
                ids.value(i).to_string(),
                !status.is_null(i) && status.value(i) == "closed",
            ));
        }
    }
    let open = rows
        .iter()
        .filter(|(_, closed)| !closed)
        .map(|(id, _)| id.clone())
        .collect();
    Ok((
        Existing::from_runs(rows.iter().map(|(id, c)| (id.as_str(), *c))),
        open,
    ))
}

/// The version of each rule the daemon has loaded; an error naming the rules it lacks.
fn daemon_rules(
    server: &str,
    token: Option<&str>,
    rules: &[String],
) -> Result<HashMap<String, String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let batches = runtime.block_on(crate::sql::query(
        server,
        token,
        "SELECT name, version FROM plugins WHERE status = 'loaded' AND kind = 'learning-rule'",
    ))?;
    let mut loaded: HashMap<String, String> = HashMap::new();
    for b in &batches {
        let names = b.column(0).as_string::<i32>();
        let versions = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            loaded.insert(names.value(i).to_string(), versions.value(i).to_string());
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

/// What the last submission of a sweep was (for `status`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Submitted {
    scheduler: String,
    count: usize,
    indices: Vec<usize>,
    job: Option<String>,
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

fn submit(args: &SubmitArgs) -> Result<()> {
    let sweep = SweepFile::load(&args.file)?;
    let ctx = SweepContext::new(&args.daemon, &sweep)?;
    let state = absolute(&ctx.state)?;
    let cells = sweep.cells().len();
    let count = args.tasks.unwrap_or(cells);
    Shard::new(0, count)?;
    if count > cells {
        bail!(
            "--tasks {count} is more than the sweep's {cells} cells: some tasks would have nothing to run"
        );
    }
    let token = args.daemon.token.as_deref();
    // The shards that still have a cell to run, from the daemon (a resubmission submits only
    // those). A dry run without a daemon shows every shard.
    let reachable = check_reachable(&ctx.server);
    let indices: Vec<usize> = match &reachable {
        Ok(()) => {
            daemon_rules(&ctx.server, token, &sweep.rule_names())?;
            let existing = existing_runs(&ctx.server, token, &sweep.name)?.0;
            sweep.unfinished_shards(count, &existing)
        }
        Err(e) if args.dry_run => {
            eprintln!("{e:#}: showing every shard");
            (0..count).collect()
        }
        Err(e) => bail!(
            "{e:#}; the tasks record into that daemon, so it must answer before they are submitted"
        ),
    };
    if indices.is_empty() {
        eprintln!(
            "sweep {}: every cell is complete in the daemon at {}; nothing to submit",
            sweep.name, ctx.server
        );
        return Ok(());
    }
    let sweep_file = state.join("sweep.toml");
    let (text, ext) = if args.slurm {
        for (flag, given) in [
            ("--image", args.image.is_some()),
            ("--namespace", args.namespace.is_some()),
        ] {
            if given {
                bail!("{flag} is a Kubernetes option; --slurm does not use it");
            }
        }
        let options = SlurmOptions {
            name: sweep.name.clone(),
            lrid: std::env::current_exe()?,
            sweep_file: sweep_file.clone(),
            state_dir: state.clone(),
            count,
            indices: indices.clone(),
            max_parallel: args.max_parallel,
            partition: args.partition.clone(),
            gpus_per_task: args.gpus_per_task,
            cpus_per_task: args.cpus_per_task,
            time: args.time.clone(),
            workers_per_task: args.workers_per_task,
            server: ctx.server.clone(),
            token_file: args.token_file.as_deref().map(absolute).transpose()?,
            // --ca-file / LRID_CA_FILE of this command (the same path on the nodes).
            ca_file: lrid_sdk::tls::ca_file_from_env()
                .as_deref()
                .map(absolute)
                .transpose()?,
            device: args.device.clone(),
            config: args.daemon.config.as_deref().map(absolute).transpose()?,
            plugins_dir: args.plugins_dir.as_deref().map(absolute).transpose()?,
        };
        (slurm::script(&options)?, "sbatch")
    } else {
        for (flag, given) in [
            ("--partition", args.partition.is_some()),
            ("--time", args.time.is_some()),
            ("--token-file", args.token_file.is_some()),
            ("--plugins-dir", args.plugins_dir.is_some()),
        ] {
            if given {
                bail!("{flag} is a Slurm option; --k8s does not use it");
            }
        }
        let options = K8sOptions {
            name: sweep.name.clone(),
            sweep_toml: sweep.resolved_toml(),
            count,
            parallelism: args.max_parallel.unwrap_or(count),
            backoff_limit_per_index: args.backoff_limit_per_index,
            image: args.image.clone().unwrap_or_default(),
            namespace: args.namespace.clone(),
            gpus_per_task: args.gpus_per_task,
            cpus_per_task: args.cpus_per_task,
            workers_per_task: args.workers_per_task,
            server: ctx.server.clone(),
            token_secret: args.token_secret.clone(),
            device: args.device.clone(),
        };
        (k8s::manifest(&options)?, "k8s.yaml")
    };
    if args.dry_run {
        print!("{text}");
        return Ok(());
    }
    std::fs::create_dir_all(state.join("slurm"))
        .with_context(|| format!("cannot create {}", state.display()))?;
    std::fs::write(&sweep_file, sweep.resolved_toml())
        .with_context(|| format!("cannot write {}", sweep_file.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let written = state.join(format!("submit-{stamp}.{ext}"));
    std::fs::write(&written, &text)
        .with_context(|| format!("cannot write {}", written.display()))?;
    let job = if args.slurm {
        let out = Command::new("sbatch")
            .arg("--parsable")
            .arg(&written)
            .output()
            .context("cannot run sbatch (is Slurm's client installed and on PATH?)")?;
        if !out.status.success() {
            bail!(
                "sbatch refused {}: {}",
                written.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        println!(
            "submitted job array {id}: {} task(s) of {count} ({}), script {}",
            indices.len(),
            if indices.len() == count {
                "all".to_string()
            } else {
                format!("only the unfinished: {indices:?}")
            },
            written.display()
        );
        Some(id)
    } else {
        let out = Command::new("kubectl")
            .args(["apply", "-f"])
            .arg(&written)
            .output()
            .with_context(|| {
                format!(
                    "cannot run kubectl (is it installed and on PATH?); the manifest is in {}",
                    written.display()
                )
            })?;
        if !out.status.success() {
            bail!(
                "kubectl refused {}: {}",
                written.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
        None
    };
    let submitted = Submitted {
        scheduler: if args.slurm { "slurm" } else { "k8s" }.into(),
        count,
        indices,
        job,
    };
    std::fs::write(
        state.join("submitted.json"),
        serde_json::to_vec_pretty(&submitted)?,
    )
    .with_context(|| format!("cannot write {}", state.display()))?;
    Ok(())
}

fn status(args: &StatusArgs) -> Result<()> {
    let sweep = SweepFile::load(&args.file)?;
    let ctx = SweepContext::new(&args.daemon, &sweep)?;
    let count = match args.count {
        Some(c) => c,
        None => std::fs::read(ctx.state.join("submitted.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Submitted>(&b).ok())
            .map_or(1, |s| s.count),
    };
    Shard::new(0, count)?;
    check_reachable(&ctx.server)?;
    let (existing, open) = existing_runs(&ctx.server, args.daemon.token.as_deref(), &sweep.name)?;
    let journals = read_journals(&ctx.state)?;
    let shards = lrid_sweep::status(&sweep, count, &existing, &open, &journals);
    println!(
        "{:>6} {:>6} {:>6} {:>8} {:>7} {:>8}",
        "shard", "cells", "done", "running", "failed", "pending"
    );
    for s in &shards {
        println!(
            "{:>6} {:>6} {:>6} {:>8} {:>7} {:>8}",
            s.index, s.cells, s.done, s.running, s.failed, s.pending
        );
    }
    let sum = |f: fn(&lrid_sweep::ShardStatus) -> usize| shards.iter().map(f).sum::<usize>();
    println!(
        "{:>6} {:>6} {:>6} {:>8} {:>7} {:>8}",
        "all",
        sum(|s| s.cells),
        sum(|s| s.done),
        sum(|s| s.running),
        sum(|s| s.failed),
        sum(|s| s.pending)
    );
    Ok(())
}
