//! `lrid train`: trains one network with a learning-rule plugin and records its observables
//! into a running daemon.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lrid_plugins::PluginHost;
use lrid_sdk::{Recorder, RecorderConfig, RunLabels};
use lrid_trainer::{Arch, TaskName, TrainConfig, TrainReport, defaults};

use crate::config::Config;

#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Architecture: knet4, knet4-lrn, knet5, knet5-lrn, alexnet, alexnet-lrn, resnet18-v1,
    /// resnet18-v2, resnet34-v1, resnet34-v2.
    #[arg(long)]
    pub arch: String,
    /// Task: shapes, simclr, audio, cifar10.
    #[arg(long)]
    pub task: String,
    /// Learning rule: the name of a loaded plugin (sgdm, adam, feedback-alignment,
    /// information-alignment, …).
    #[arg(long)]
    pub rule: String,
    #[arg(long)]
    pub batch_size: usize,
    /// Seed of every weight initialiser; absent: unseeded (a seed is drawn and reported).
    #[arg(long)]
    pub model_seed: Option<i64>,
    /// Seed of the training-data order; absent: unseeded.
    #[arg(long)]
    pub data_seed: Option<i64>,
    #[arg(long, default_value_t = defaults::EPOCHS)]
    pub epochs: f64,
    /// Trajectory points, evenly spaced, initialisation included.
    #[arg(long, default_value_t = defaults::POINTS)]
    pub points: usize,
    /// cpu, cuda, cuda:N, or auto (CUDA when usable).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The daemon's address (default: `[server] listen` of the configuration).
    #[arg(long, env = "LRID_SERVER")]
    pub server: Option<String>,
    /// Bearer token, when the daemon needs one.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Configuration file (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Plugins folder (default: the daemon's, from the configuration); the built-in rules of an
    /// installed layout are found besides it.
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Refuse to train unless the rule's version is this one (sweeps pass the daemon's).
    #[arg(long)]
    pub rule_version: Option<String>,
    /// Run id (default: the factors and a random suffix).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Training-set size of generated tasks.
    #[arg(long, default_value_t = defaults::TRAIN_EXAMPLES)]
    pub train_examples: usize,
    /// Evaluation examples the observables are measured on.
    #[arg(long, default_value_t = defaults::EVAL_EXAMPLES)]
    pub eval_examples: usize,
    /// Input side (default 32).
    #[arg(long)]
    pub resolution: Option<i64>,
    /// Width multiplier of every layer's filter count.
    #[arg(long, default_value_t = defaults::WIDTH)]
    pub width: f64,
    /// Learning rate (default: the rule's base rate scaled by batch size / 128).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Classes (words) of a generated task.
    #[arg(long)]
    pub classes: Option<i64>,
    /// SimCLR's NT-Xent temperature.
    #[arg(long, default_value_t = defaults::TEMPERATURE)]
    pub temperature: f64,
    /// Folder of the CIFAR-10 binary files (task cifar10).
    #[arg(long, value_name = "DIR")]
    pub cifar_dir: Option<PathBuf>,
    /// The rule's JSON configuration (e.g. '{"alpha": 0.002}').
    #[arg(long, default_value = "{}")]
    pub rule_config: String,
    /// libtorch CPU threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Train without recording (no daemon needed): to check settings or time training alone.
    #[arg(long)]
    pub no_record: bool,
    /// Also write the final report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// The address clients use for a daemon configured by `server`: `http://` or `https://` (TLS)
/// and its listen address.
pub fn server_url(server: &lrid_server::ServerConfig) -> String {
    if server.listen.contains("://") {
        server.listen.clone()
    } else {
        format!("{}://{}", server.scheme(), server.listen)
    }
}

/// Fails fast with a clear message when nothing listens at `server`.
pub fn check_reachable(server: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let authority = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .trim_end_matches('/');
    let addrs: Vec<_> = authority
        .to_socket_addrs()
        .with_context(|| format!("'{server}' is not a daemon address (host:port)"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match std::net::TcpStream::connect_timeout(addr, Duration::from_secs(3)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "the lrid daemon at {server} is unreachable ({}); start it with `lrid serve` or pass --server",
        last.map_or("no address".into(), |e| e.to_string())
    )
}

fn seed_tag(seed: Option<i64>) -> String {
    seed.map_or("u".into(), |s| s.to_string())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let config = Config::load_or_embedded(args.config.as_deref())?;
    let arch: Arch = args.arch.parse()?;
    let task: TaskName = args.task.parse()?;
    let rule_config: serde_json::Value = serde_json::from_str(&args.rule_config)
        .with_context(|| format!("--rule-config is not JSON: {}", args.rule_config))?;
    let torch = lrid_torch::init();
    let device = torch.device(&args.device)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n.max(1));
    }
    let mut dir = args
        .plugins_dir
        .clone()
        .unwrap_or_else(|| config.plugins.dir_in(&config.store.data_dir));
    let builtin = config.plugins.builtin_dir();
    if !dir.is_dir() {
        // An installed layout needs no plugins folder for the built-in rules.
        match (&builtin, &args.plugins_dir) {
            (Some(b), None) => dir = b.clone(),
            _ => bail!(
                "the plugins folder {} does not exist (install the built-in rules with `make plugins`, or use an installed lrid: `make install`)",
                dir.display()
            ),
        }
    }
    let cache = crate::plugin_cache("lrid-train-")?;
    let host = PluginHost::new(&dir, cache.path())?.with_builtin_dir(builtin);
    host.rescan()
        .with_context(|| format!("cannot scan {}", dir.display()))?;
    let plugin = host.rule(&args.rule).with_context(|| {
        format!(
            "looked in {}{}",
            dir.display(),
            host.builtin_dir()
                .map_or(String::new(), |b| format!(" and {}", b.display()))
        )
    })?;
    if let Some(wanted) = &args.rule_version
        && &plugin.version != wanted
    {
        bail!(
            "learning rule '{}' is version {} here ({}), the daemon has version {wanted}: install the same plugins on every worker",
            args.rule,
            plugin.version,
            plugin.file.display()
        );
    }
    let mut rule = plugin.instantiate(&rule_config)?;
    // The library stays mapped; the folder of its private copy is not needed any more.
    drop(cache);

    // Unseeded runs draw their seeds here, so the stored hyperparameters reproduce the run.
    let model_seed = args.model_seed.unwrap_or_else(lrid_trainer::draw_seed);
    let data_seed = args.data_seed.unwrap_or_else(lrid_trainer::draw_seed);
    let lr = args
        .lr
        .unwrap_or_else(|| lrid_trainer::default_lr(&args.rule, args.batch_size));
    let train = TrainConfig {
        arch,
        task,
        batch_size: args.batch_size,
        model_seed: Some(model_seed),
        data_seed: Some(data_seed),
        epochs: args.epochs,
        train_examples: args.train_examples,
        points: args.points,
        eval_examples: args.eval_examples,
        resolution: args.resolution,
        width: args.width,
        lr: Some(lr),
        classes: args.classes,
        temperature: args.temperature,
        cifar_dir: args.cifar_dir.clone(),
    };
    train.validate()?;

    let rec = if args.no_record {
        None
    } else {
        Some(open_recorder(
            args,
            &config,
            &train,
            &plugin.version,
            &rule_config,
            device,
        )?)
    };
    let run_id = rec
        .as_ref()
        .map_or_else(|| "(not recorded)".to_string(), |r| r.run_id().to_string());
    let total = train.total_steps();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta}) {msg}",
        )
        .expect("template"),
    );
    bar.set_prefix(run_id.clone());
    let report = lrid_trainer::train(&train, &mut rule, device, rec.as_ref(), &mut |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {:.4}", p.loss));
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Whatever was recorded stays; the run is left open (incomplete).
            if let Some(rec) = &rec {
                rec.flush().ok();
            }
            return Err(e).with_context(|| format!("run '{run_id}' failed"));
        }
    };
    if let Some(rec) = &rec {
        rec.close()?;
    }
    print_report(&run_id, &report);
    if let Some(path) = &args.report {
        let json = serde_json::json!({"run_id": run_id, "report": report});
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Opens the run in the daemon, with the labels and hyperparameters that reproduce it.
fn open_recorder(
    args: &TrainArgs,
    config: &Config,
    train: &TrainConfig,
    rule_version: &str,
    rule_config: &serde_json::Value,
    device: tch::Device,
) -> Result<Recorder> {
    let (arch, task) = (train.arch, train.task);
    let (lr, model_seed, data_seed) = (
        train.lr.expect("resolved"),
        train.model_seed.expect("resolved"),
        train.data_seed.expect("resolved"),
    );
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| server_url(&config.server));
    check_reachable(&server)?;
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        format!(
            "{arch}.{task}.{}.b{}.m{}.d{}.{:08x}",
            args.rule,
            args.batch_size,
            seed_tag(args.model_seed),
            seed_tag(args.data_seed),
            lrid_trainer::draw_seed() as u32
        )
    });
    let labels = RunLabels {
        learning_rule: Some(args.rule.clone()),
        architecture: Some(arch.to_string()),
        task: Some(task.to_string()),
        batch_size: Some(args.batch_size as u32),
        model_seed: args.model_seed,
        data_seed: args.data_seed,
        hyperparameters: Some(serde_json::json!({
            "lr": lr,
            "epochs": args.epochs,
            "steps": train.total_steps(),
            "points": args.points,
            "train_examples": args.train_examples,
            "eval_examples": args.eval_examples,
            "resolution": args.resolution.unwrap_or(32),
            "width": args.width,
            "classes": args.classes,
            "temperature": (task == TaskName::Simclr).then_some(args.temperature),
            "l2": arch.l2(task),
            "device": format!("{device:?}"),
            "drawn_model_seed": model_seed,
            "drawn_data_seed": data_seed,
            "rule_version": rule_version,
            "rule_config": rule_config,
        })),
    };
    let mut rc = RecorderConfig::new(&server);
    rc.token = args.token.clone();
    rc.ca_file = lrid_sdk::tls::ca_file_from_env();
    rc.give_up_after = Duration::from_secs(60);
    let rec = Recorder::open(rc, &run_id, labels)?;
    // The run is open (or refused: token, duplicate id) before any training.
    rec.flush()
        .with_context(|| format!("cannot open run '{run_id}' at {server}"))?;
    Ok(rec)
}

fn print_report(run_id: &str, r: &TrainReport) {
    println!(
        "run {run_id}: {} steps, {} points, loss {:.4} → {:.4}{}, {:.1} ms/step, recording {:.2} s, total {:.1} s",
        r.steps,
        r.points,
        r.first_loss,
        r.last_loss,
        r.eval_accuracy.map_or(String::new(), |a| format!(
            ", eval accuracy {:.1}%",
            100.0 * a
        )),
        1e3 * r.step_seconds,
        r.record_seconds,
        r.total_seconds
    );
}
