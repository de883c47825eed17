//! The local executor: one `lrid train` worker process per run, at most `workers` at a time,
//! each run's outcome appended to a journal (JSON lines) with its log file.
//!
//! A failed run does not stop the others; a worker that cannot start (e.g. the binary is being
//! replaced by a build) is tried a few times, then recorded as failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, RunSpec, io, safe_name};

/// One line of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub run_id: String,
    /// `completed` or `failed`.
    pub outcome: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub log: String,
    /// The shard that ran it (`lrid sweep shard`), as `index/count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// Every entry of the journals (`journal*.jsonl`) in a sweep's state folder, in file order.
pub fn read_journals(state: &Path) -> Result<Vec<JournalEntry>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(state) {
        Ok(dir) => dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("journal") && n.ends_with(".jsonl"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(state)(e)),
    };
    files.sort();
    let mut entries = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(io(&f))?;
        // A line cut by a crash is skipped; every complete line is an entry.
        entries.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<JournalEntry>(l).ok()),
        );
    }
    Ok(entries)
}

/// How workers are started: `program` with `base_args` (`train` flags every worker gets:
/// server, device, threads, …), then the run's own; `env` added to the environment.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pub program: PathBuf,
    pub base_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workers: usize,
    /// Worker logs (`<run id>.log`).
    pub logs: PathBuf,
    /// The journal this executor appends to.
    pub journal: PathBuf,
    /// Written into every journal entry (`index/count`).
    pub shard: Option<String>,
    /// No progress bar (logs and the journal only).
    pub quiet: bool,
}

/// What a local execution did.
#[derive(Debug, Default)]
pub struct Summary {
    pub completed: usize,
    /// `(run id, why, log)` of each failed run.
    pub failed: Vec<(String, String, PathBuf)>,
    pub seconds: f64,
}

struct Worker {
    child: Child,
    run_id: String,
    log: PathBuf,
    started: Instant,
}

impl LocalExecutor {
    /// Runs every `(spec, run id)`, `workers` at a time; returns when all have ended.
    pub fn run(&self, pending: Vec<(RunSpec, String)>) -> Result<Summary> {
        std::fs::create_dir_all(&self.logs).map_err(io(&self.logs))?;
        let mut journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.journal)
            .map_err(io(&self.journal))?;
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(pending.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} sweep [{elapsed_precise}] {bar:30} {pos}/{len} runs, ETA {eta} {msg}",
            )
            .expect("template"),
        );
        let started = Instant::now();
        let mut summary = Summary::default();
        let mut record = |entry: JournalEntry, bar: &ProgressBar| -> Result<()> {
            let line = serde_json::to_string(&entry).expect("a journal entry serialises");
            writeln!(journal, "{line}").map_err(io(&self.journal))?;
            if let Some(e) = &entry.error {
                bar.println(format!("failed: {} — {e}", entry.run_id));
            }
            Ok(())
        };
        let mut queue = pending.into_iter();
        let mut running: Vec<Worker> = Vec::new();
        loop {
            while running.len() < self.workers.max(1) {
                let Some((spec, run_id)) = queue.next() else {
                    break;
                };
                let log = self.logs.join(format!("{}.log", safe_name(&run_id)));
                let mut attempt = self.spawn(&spec, &run_id, &log);
                for _ in 0..4 {
                    if attempt.is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    attempt = self.spawn(&spec, &run_id, &log);
                }
                match attempt {
                    Ok(child) => running.push(Worker {
                        child,
                        run_id,
                        log,
                        started: Instant::now(),
                    }),
                    Err(e) => {
                        let error = e.to_string();
                        record(self.entry(&run_id, Some(error.clone()), 0.0, &log), &bar)?;
                        summary.failed.push((run_id, error, log));
                        bar.inc(1);
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut i = 0;
            while i < running.len() {
                let status = running[i].child.try_wait().map_err(|source| Error::Spawn {
                    run_id: running[i].run_id.clone(),
                    source,
                })?;
                let Some(status) = status else {
                    i += 1;
                    continue;
                };
                let w = running.swap_remove(i);
                let error = (!status.success()).then(|| last_error(&w.log, status));
                let seconds = w.started.elapsed().as_secs_f64();
                record(self.entry(&w.run_id, error.clone(), seconds, &w.log), &bar)?;
                match error {
                    None => summary.completed += 1,
                    Some(e) => summary.failed.push((w.run_id, e, w.log)),
                }
                bar.inc(1);
                bar.set_message(format!(
                    "({} running, {} failed)",
                    running.len(),
                    summary.failed.len()
                ));
            }
        }
        bar.finish_and_clear();
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    fn entry(&self, run_id: &str, error: Option<String>, seconds: f64, log: &Path) -> JournalEntry {
        JournalEntry {
            run_id: run_id.to_string(),
            outcome: if error.is_none() {
                "completed"
            } else {
                "failed"
            }
            .into(),
            seconds,
            error,
            log: log.display().to_string(),
            shard: self.shard.clone(),
        }
    }

    fn spawn(&self, spec: &RunSpec, run_id: &str, log: &Path) -> Result<Child> {
        let out = std::fs::File::create(log).map_err(io(log))?;
        let err = out.try_clone().map_err(io(log))?;
        let mut args = spec.train_args(run_id);
        args.extend(self.base_args.iter().cloned());
        Command::new(&self.program)
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                run_id: run_id.to_string(),
                source,
            })
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

    fn spec() -> RunSpec {
        RunSpec {
            cell: "s/knet4/shapes/sgdm/b8/m0/d0".into(),
            arch: "knet4".into(),
            task: "shapes".into(),
            rule: "sgdm".into(),
            batch_size: 8,
            model_seed: Some(0),
            data_seed: None,
            epochs: 1.0,
            points: 3,
            train_examples: 16,
            eval_examples: 4,
            resolution: None,
            width: 1.0,
            classes: None,
            temperature: 1.0,
            cifar_dir: None,
            lr: None,
            rule_config: None,
            rule_version: Some("1.0.0".into()),
        }
    }

    /// A stand-in worker: a shell script that fails for run ids containing "bad" with an
    /// `error:` line, and writes its arguments otherwise.
    #[test]
    fn runs_are_journalled_with_their_outcome_and_the_worker_s_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("worker.sh");
        std::fs::write(
            &program,
            "#!/bin/sh\ncase \"$*\" in *bad*) echo 'error: it broke'; exit 1;; esac\necho \"$@\" \"$EXTRA\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exec = LocalExecutor {
            program,
            base_args: vec!["--quiet".into()],
            env: vec![("EXTRA".into(), "from-env".into())],
            workers: 2,
            logs: dir.path().join("logs"),
            journal: dir.path().join("journal-shard-1-of-2.jsonl"),
            shard: Some("1/2".into()),
            quiet: true,
        };
        let pending = vec![
            (spec(), "s/a".to_string()),
            (spec(), "s/bad".to_string()),
            (spec(), "s/c:a2".to_string()),
        ];
        let summary = exec.run(pending).unwrap();
        assert_eq!(summary.completed, 2);
        assert_eq!(summary.failed.len(), 1);
        assert_eq!(summary.failed[0].1, "it broke");
        let entries = read_journals(dir.path()).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e.shard.as_deref() == Some("1/2")));
        let log = std::fs::read_to_string(dir.path().join("logs/s_c_a2.log")).unwrap();
        assert!(log.starts_with("train --arch knet4"), "{log}");
        assert!(log.contains("--run-id s/c:a2") && log.contains("--quiet from-env"));
        assert!(!log.contains("--data-seed"), "unseeded: no flag: {log}");
        assert!(log.contains("--rule-version 1.0.0"), "{log}");
    }
}
