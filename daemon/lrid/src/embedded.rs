//! A daemon started by a command that needs one (`lrid sweep`, `lrid analyze`, `lrid dataset`)
//! when none answers at its `--server`: `lrid serve` on a free loopback port, stopped
//! gracefully (SIGTERM: checkpoint, then exit) when the command ends.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::train_cmd::check_reachable;

impl std::fmt::Debug for EmbeddedDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDaemon")
            .field("url", &self.url)
            .finish()
    }
}

/// What `lrid serve`'s first line says when the port serves TLS.
pub const TLS_MARK: &str = "TLS: https://";

/// A daemon started for one command; stopped (gracefully) when dropped.
pub struct EmbeddedDaemon {
    child: Child,
    pub url: String,
}

impl EmbeddedDaemon {
    /// `server` when a daemon answers there; else a daemon started on a free loopback port
    /// (its log in `log`) and its address.
    pub fn unless_reachable(
        server: &str,
        config: Option<&Path>,
        log: &Path,
    ) -> Result<(String, Option<EmbeddedDaemon>)> {
        if check_reachable(server).is_ok() {
            return Ok((server.to_string(), None));
        }
        eprintln!("no daemon at {server}: starting an embedded one");
        let daemon = EmbeddedDaemon::start(config, log)?;
        Ok((daemon.url.clone(), Some(daemon)))
    }

    /// Starts `lrid serve` on a free loopback port with the configuration `config`.
    pub fn start(config: Option<&Path>, log: &Path) -> Result<EmbeddedDaemon> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve").args(["--listen", "127.0.0.1:0"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start the embedded daemon")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .strip_prefix("lrid serve listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        match addr {
            Some(addr) => {
                // The configuration may make it serve TLS; its first line says so.
                let scheme = if line.contains(TLS_MARK) {
                    "https"
                } else {
                    "http"
                };
                Ok(EmbeddedDaemon {
                    child,
                    url: format!("{scheme}://{addr}"),
                })
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                bail!(
                    "the embedded daemon did not start: {}",
                    log_text.lines().last().unwrap_or("no output")
                )
            }
        }
    }
}

impl Drop for EmbeddedDaemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon checkpoints to Parquet, then exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
