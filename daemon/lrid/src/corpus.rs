//! What `lrid dataset` and `lrid analyze` share: the daemon to read from (an embedded one on
//! the data folder when none answers), the corpus read through the `classifier_examples` view,
//! and the classifier plugins the daemon has loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray};
use clap::Args;
use lrid_classify::{Dataset, EXAMPLES_VIEW};
use lrid_plugins::{Plugin, PluginHost};

use crate::config::Config;
use crate::embedded::EmbeddedDaemon;
use crate::train_cmd::server_url;

/// Which daemon to talk to.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Configuration file of the daemon (defaults: config/lrid.toml, embedded).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The daemon's address (default: `[server] listen`); when nothing answers there, an
    /// embedded daemon is started on the data folder for the command's duration.
    #[arg(long, env = "LRID_SERVER")]
    pub server: Option<String>,
    /// Bearer token, when the daemon needs one.
    #[arg(long, env = "LRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Where the corpus comes from and which examples it holds.
#[derive(Debug, Args)]
pub struct CorpusArgs {
    #[command(flatten)]
    pub daemon: ServerArgs,
    /// A SQL predicate over the columns of the classifier_examples view that selects the
    /// examples, e.g. "task = 'shapes' AND architecture <> 'knet5'".
    #[arg(long = "where", value_name = "PREDICATE")]
    pub where_predicate: Option<String>,
    /// The measurement model of the examples (the daemon's `[[store.models]]`).
    #[arg(long, default_value = "ideal")]
    pub model: String,
    /// Trajectory points of every example; runs with another number are left out.
    #[arg(long, default_value_t = 21)]
    pub points: usize,
}

/// A daemon to talk to, kept running while the command needs it.
#[derive(Debug)]
pub struct Daemon {
    pub url: String,
    pub token: Option<String>,
    pub config: Config,
    _embedded: Option<EmbeddedDaemon>,
}

impl Daemon {
    pub fn connect(args: &CorpusArgs) -> Result<Daemon> {
        Self::connect_to(&args.daemon)
    }

    pub fn connect_to(args: &ServerArgs) -> Result<Daemon> {
        let config = Config::load_or_embedded(args.config.as_deref())?;
        let server = args
            .server
            .clone()
            .unwrap_or_else(|| server_url(&config.server));
        let logs = config.store.data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let (url, embedded) = EmbeddedDaemon::unless_reachable(
            &server,
            args.config.as_deref(),
            &logs.join("embedded-daemon.log"),
        )?;
        Ok(Daemon {
            url,
            token: args.token.clone(),
            config,
            _embedded: embedded,
        })
    }

    pub fn query(&self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        runtime()?.block_on(crate::sql::query(&self.url, self.token.as_deref(), sql))
    }

    /// Runs a Flight action; its first answer.
    pub fn action(&self, kind: &str, body: Vec<u8>) -> Result<bytes::Bytes> {
        runtime()?.block_on(crate::sql::action(
            &self.url,
            self.token.as_deref(),
            kind,
            body,
        ))
    }

    /// The corpus: every example the predicate selects (every measurement model when `model`
    /// is `None`). Left-out runs are reported on stderr, one line each.
    pub fn corpus(&self, args: &CorpusArgs, model: Option<&str>) -> Result<Dataset> {
        let mut conditions = Vec::new();
        if let Some(m) = model {
            conditions.push(format!("model = '{}'", m.replace('\'', "''")));
        }
        if let Some(p) = &args.where_predicate {
            if p.trim().is_empty() {
                bail!("--where is empty: give a SQL predicate such as \"task = 'shapes'\"");
            }
            conditions.push(format!("({p})"));
        }
        let mut sql = format!("SELECT * FROM {EXAMPLES_VIEW}");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let batches = self.query(&sql).map_err(|e| match &args.where_predicate {
            Some(p) => e.context(format!(
                "the --where predicate \"{p}\" is not valid SQL over the {EXAMPLES_VIEW} view"
            )),
            None => e,
        })?;
        let dataset = Dataset::from_batches(&batches, args.points)?;
        for x in &dataset.excluded {
            eprintln!("warning: run {} left out: {}", x.run_id, x.reason);
        }
        if dataset.is_empty() {
            bail!(
                "no examples: the daemon at {} has no closed runs{}{} with {} points",
                self.url,
                model.map_or(String::new(), |m| format!(" under measurement model '{m}'")),
                args.where_predicate
                    .as_ref()
                    .map_or(String::new(), |p| format!(" matching \"{p}\"")),
                args.points
            );
        }
        Ok(dataset)
    }

    /// The classifier plugins the daemon has loaded now (loaded here from the same files), by
    /// name; `host_cache` keeps the private copies.
    pub fn classifiers(&self, host_cache: &Path) -> Result<BTreeMap<String, Arc<Plugin>>> {
        let batches = self.query(
            "SELECT name, file FROM plugins WHERE status = 'loaded' AND kind = 'classifier'",
        )?;
        let mut dirs: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for b in &batches {
            let names = b.column(0).as_string::<i32>();
            let files = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                if names.is_null(i) {
                    continue;
                }
                let file = Path::new(files.value(i));
                if !file.exists() {
                    bail!(
                        "the daemon's classifier '{}' is {}, which is not on this machine",
                        names.value(i),
                        file.display()
                    );
                }
                let dir = file
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                dirs.entry(dir)
                    .or_default()
                    .push(names.value(i).to_string());
            }
        }
        let mut out = BTreeMap::new();
        for (n, (dir, names)) in dirs.into_iter().enumerate() {
            let cache = host_cache.join(n.to_string());
            let host = PluginHost::new(&dir, &cache)?;
            host.rescan()?;
            for name in names {
                out.insert(name.clone(), host.classifier(&name)?);
            }
        }
        Ok(out)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
