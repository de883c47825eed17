//! # lrid
//!
//! The `lrid` command line. In: arguments, files named on them, `RUST_LOG`. Out: results on
//! stdout, logs on stderr, and on failure one line `error: …` with a non-zero exit status.
//!
//! # Architecture
//!
//! ```text
//!                                   lrid sweep run|shard|submit (lrid-sweep: plan → shards →
//!                                   local pool | Slurm array | Kubernetes Indexed Job)
//!                                        │ each shard: lrid sweep shard
//!  training job (SDK, pyarrow)           ▼
//!        │ Flight DoPut/DoAction    lrid train workers (lrid-trainer, rule plugins via
//!        │                          lrid-plugins: plugins folder + installed built-ins)
//!        ▼                                               │ SDK
//!  lrid serve: lrid-server ◄─────────────────────────────┘
//!        │ snapshots → lrid-stats (incremental statistics)
//!        ▼
//!  lrid-store: WAL (local) → Parquet (runs, layers, observables, analyses) + DataFusion
//!        │   Parquet + manifest in the data folder, or Arc<dyn ObjectStore>: s3://…/node=<id>/
//!        │   (lrid serve --read-only --store s3://…: SQL over every node's files)
//!        │ Flight SQL (lrid sql, ADBC, JDBC, pyarrow)
//!        ▼
//!  classifier_examples view ──► lrid dataset export (Parquet)
//!        │
//!        ▼
//!  lrid analyze: lrid-classify (dataset, splits, CV, experiments)
//!        │ classifier plugins via lrid-plugins (Arrow C Data Interface)
//!        ▼
//!  lrid-report: results.json, index.html + SVG figures;  rows → `analyses` (lrid.put_analysis)
//!
//!  lrid identify fit: lrid-identify (one classifier per prefix length k) ──► lrid.put_identifier
//!        ▼
//!  lrid serve: every completed point (lrid-store PointListener) ──► identify worker thread
//!        │ first k points of each layer → probabilities per layer and per run
//!        ▼
//!  lrid-store: `identifications` (WAL → Parquet) ◄── lrid identify RUN --follow, SQL
//! ```

mod analyze_cmd;
mod config;
mod corpus;
mod dataset_cmd;
mod embedded;
mod identify_cmd;
mod npy;
mod plugins_cmd;
mod plugins_table;
mod serve;
mod sql;
mod stats_cmd;
mod sweep_cmd;
mod train_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lrid: identify which learning rule trains a neural network from its observables.
#[derive(Debug, Parser)]
#[command(name = "lrid", disable_version_flag = true)]
struct Cli {
    /// Print the versions of lrid and libtorch, and whether CUDA is usable.
    #[arg(short = 'V', long)]
    version: bool,

    /// The CA file (PEM) that signed an https:// daemon's certificate; without it, the
    /// system's roots. Processes this one starts (sweep workers) inherit it.
    #[arg(long, global = true, value_name = "FILE", env = "LRID_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every observable statistic of one measure of a tensor stored as .npy.
    Stats(stats_cmd::StatsArgs),
    /// Run the daemon: Arrow Flight ingest and Flight SQL on one port.
    Serve(serve::ServeArgs),
    /// Run a SQL query on a running daemon.
    Sql(sql::SqlArgs),
    /// List the plugins of the plugins folder (name, kind, version, file) and refused files.
    Plugins(plugins_cmd::PluginsArgs),
    /// Train one network with a learning-rule plugin, recording its observables into a daemon.
    Train(Box<train_cmd::TrainArgs>),
    /// Virtual experiments: run a sweep file's grid of training runs (resumable).
    Sweep(sweep_cmd::SweepArgs),
    /// The classifiers' dataset (one example per layer of a closed run): export it.
    Dataset(dataset_cmd::DatasetArgs),
    /// Identify learning rules: the paper's classifier experiments on the daemon's corpus,
    /// with a report.
    Analyze(Box<analyze_cmd::AnalyzeArgs>),
    /// Live identification: fit identifiers, and see what they conclude about running jobs.
    Identify(Box<identify_cmd::IdentifyArgs>),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    if let Some(ca) = &cli.ca_file {
        // SAFETY: no other thread exists yet (tracing's set-up starts none); every client of
        // this process and the processes it starts read the CA file from the environment.
        unsafe { std::env::set_var(lrid_sdk::tls::CA_FILE_ENV, ca) };
    }
    let result = if cli.version {
        // Load libtorch's CUDA part (when it exists) before asking about devices. Commands that
        // train call `lrid_torch::init` first thing too; `stats` never touches libtorch.
        let torch = lrid_torch::init();
        println!("lrid {}", env!("CARGO_PKG_VERSION"));
        println!(
            "torch {} ({})",
            torch.version,
            torch
                .lib_dir
                .as_ref()
                .map_or("location unknown".into(), |d| d.display().to_string())
        );
        println!("cuda {}", torch.cuda_summary());
        Ok(())
    } else {
        match cli.command {
            Some(Command::Stats(args)) => stats_cmd::run(&args),
            Some(Command::Serve(args)) => serve::run(&args),
            Some(Command::Sql(args)) => sql::run(&args),
            Some(Command::Plugins(args)) => plugins_cmd::run(&args),
            Some(Command::Train(args)) => train_cmd::run(&args),
            Some(Command::Sweep(args)) => sweep_cmd::run(&args),
            Some(Command::Dataset(args)) => dataset_cmd::run(&args),
            Some(Command::Analyze(args)) => analyze_cmd::run(&args),
            Some(Command::Identify(args)) => identify_cmd::run(&args),
            None => {
                use clap::CommandFactory;
                Cli::command().print_help().ok();
                println!();
                Ok(())
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A temporary folder for the plugin host's private copies of libraries in a one-shot command
/// (`lrid train`, `lrid plugins`); removed when dropped, on every exit path. The copies
/// themselves are unlinked as soon as they are mapped.
fn plugin_cache(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temporary folder for plugin libraries")
}
