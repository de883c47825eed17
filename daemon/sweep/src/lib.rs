//! # lrid-sweep
//!
//! Virtual-experiment sweeps as a library. In: a sweep file (TOML: the Cartesian grids of
//! architectures × tasks × rules × batch sizes × seeds, the training settings every run gets,
//! per-rule learning rates and configurations), what the daemon already holds of the sweep
//! ([`Existing`]), and the rule versions the daemon has loaded. Out: run specs ([`RunSpec`],
//! serialisable, each with a stable run id), their partition into shards ([`Shard`]), and the
//! executors that run them:
//!
//! - [`local::LocalExecutor`]: `lrid train` worker processes, at most N at a time, with a
//!   journal of outcomes (what `lrid sweep run` and `lrid sweep shard` use);
//! - [`slurm::script`]: an sbatch job-array script, one array task per shard;
//! - [`k8s::manifest`]: a Kubernetes Indexed Job (one completion index per shard) and the
//!   ConfigMap that carries the sweep file.
//!
//! Every executor runs the same command per shard (`lrid sweep shard FILE --index I --count
//! N`), so a cell runs the same way on a laptop, under Slurm or on Kubernetes, and resumes the
//! same way: a cell whose run the daemon holds closed is skipped, an unfinished one is retried
//! under a new attempt id. No daemon or server code is linked here: the caller asks the daemon.

pub mod k8s;
pub mod local;
mod plan;
pub mod slurm;
mod status;

use std::path::PathBuf;

pub use plan::{Cell, Existing, RuleSettings, RunSpec, Seed, Shard, SweepFile, TrainSettings};
pub use status::{ShardStatus, status};

/// Errors of planning and running sweeps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid sweep file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Shard(String),
    #[error("{0}")]
    Option(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the worker of {run_id}: {source}")]
    Spawn {
        run_id: String,
        source: std::io::Error,
    },
    #[error("cannot write the manifest: {0}")]
    Yaml(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `run_id` with the characters that cannot be in a file name replaced (log file names).
pub fn safe_name(run_id: &str) -> String {
    run_id.replace(['/', ':'], "_")
}

/// Quotes `s` for a POSIX shell (single quotes; a quote inside is closed, escaped, reopened).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Test helper: `got` equals the golden file `deploy/<relative>` (`LRID_BLESS=1` rewrites it).
#[cfg(test)]
fn assert_golden(relative: &str, got: &str) {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(relative);
    if std::env::var_os("LRID_BLESS").is_some() {
        std::fs::write(&golden, got).unwrap();
    }
    assert_eq!(
        got,
        std::fs::read_to_string(&golden).unwrap(),
        "set LRID_BLESS=1 to rewrite {}",
        golden.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_keeps_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
