//! The Slurm executor: an sbatch job-array script whose task I runs shard I of N
//! (`lrid sweep shard FILE --count N`, the index from `SLURM_ARRAY_TASK_ID`).

use std::fmt::Write;
use std::path::PathBuf;

use crate::{Error, Result, shell_quote};

/// What goes into the script.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The sweep's name (job name `lrid-<name>`).
    pub name: String,
    /// The `lrid` binary the tasks run (an absolute path on the compute nodes).
    pub lrid: PathBuf,
    /// The resolved sweep file every task reads (shared file system).
    pub sweep_file: PathBuf,
    /// The sweep's state folder: journals, worker logs, the tasks' logs (shared file system).
    pub state_dir: PathBuf,
    /// Shards in all (N).
    pub count: usize,
    /// The array indices to submit (a resubmission: only the unfinished shards).
    pub indices: Vec<usize>,
    /// Array tasks running at once (`%M`); unset: no throttle.
    pub max_parallel: Option<usize>,
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// Time limit per task, in one of Slurm's formats (`30`, `2:00:00`, `1-12`).
    pub time: Option<String>,
    /// Training processes per task.
    pub workers_per_task: usize,
    /// The daemon's address as the compute nodes reach it.
    pub server: String,
    /// A file the tasks read the bearer token from (never the token itself in the script).
    pub token_file: Option<PathBuf>,
    /// The CA file of an `https://` daemon, at the same path on the nodes (`LRID_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// `lrid train --device` of every worker.
    pub device: Option<String>,
    /// `--config` of the workers (their plugins folder).
    pub config: Option<PathBuf>,
    /// `--plugins-dir` of the workers.
    pub plugins_dir: Option<PathBuf>,
}

/// `0-3`, `1,4-6`: Slurm's array syntax for sorted indices.
fn ranges(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Slurm's `--time` formats: minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s.
fn check_time(t: &str) -> Result<()> {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let numbers = |s: &[&str]| {
        s.iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    let ok = days.is_none_or(|d| numbers(&[d]))
        && numbers(&parts)
        && parts.len() <= 3
        && (days.is_none() || t != "unlimited");
    if t == "infinite" || t == "unlimited" || ok {
        Ok(())
    } else {
        Err(Error::Option(format!(
            "--time {t:?} is not a Slurm time limit (minutes, h:m:s, d-h, d-h:m:s)"
        )))
    }
}

/// The sbatch script. Refuses options Slurm would refuse, naming them.
pub fn script(o: &SlurmOptions) -> Result<String> {
    if o.count == 0 {
        return Err(Error::Option(
            "--tasks must be at least 1 (got 0)".to_string(),
        ));
    }
    if o.indices.is_empty() {
        return Err(Error::Option("no array task to submit".to_string()));
    }
    if let Some(&bad) = o.indices.iter().find(|&&i| i >= o.count) {
        return Err(Error::Option(format!(
            "array index {bad} is out of range for {} task(s)",
            o.count
        )));
    }
    if o.max_parallel == Some(0) {
        return Err(Error::Option("--max-parallel must be at least 1".into()));
    }
    if o.gpus_per_task == Some(0) || o.cpus_per_task == Some(0) {
        return Err(Error::Option(
            "--gpus-per-task and --cpus-per-task must be at least 1 when given".into(),
        ));
    }
    if let Some(t) = &o.time {
        check_time(t)?;
    }
    if let Some(p) = &o.partition
        && (p.is_empty() || p.chars().any(|c| c.is_whitespace() || c == '\''))
    {
        return Err(Error::Option(format!(
            "--partition {p:?} is not a partition name"
        )));
    }
    let mut s = String::new();
    let w = &mut s;
    let logs = o.state_dir.join("slurm");
    let throttle = o.max_parallel.map_or(String::new(), |m| format!("%{m}"));
    writeln!(w, "#!/bin/bash").unwrap();
    writeln!(
        w,
        "# lrid sweep '{}': {} array task(s), task I runs shard I of {} (`lrid sweep shard`).",
        o.name,
        o.indices.len(),
        o.count
    )
    .unwrap();
    writeln!(
        w,
        "# Written by `lrid sweep submit --slurm`; submit it again to run only what is missing."
    )
    .unwrap();
    writeln!(w, "#SBATCH --job-name=lrid-{}", o.name.replace('/', "-")).unwrap();
    writeln!(w, "#SBATCH --array={}{throttle}", ranges(&o.indices)).unwrap();
    writeln!(w, "#SBATCH --output={}/%x-%A_%a.log", logs.display()).unwrap();
    writeln!(w, "#SBATCH --open-mode=append").unwrap();
    // Preempted or failed nodes requeue the task; a requeued shard resumes (completed runs are
    // skipped, an interrupted one is retried under a new attempt id).
    writeln!(w, "#SBATCH --requeue").unwrap();
    writeln!(w, "#SBATCH --ntasks=1").unwrap();
    if let Some(p) = &o.partition {
        writeln!(w, "#SBATCH --partition={p}").unwrap();
    }
    if let Some(g) = o.gpus_per_task {
        writeln!(w, "#SBATCH --gpus-per-task={g}").unwrap();
    }
    if let Some(c) = o.cpus_per_task {
        writeln!(w, "#SBATCH --cpus-per-task={c}").unwrap();
    }
    if let Some(t) = &o.time {
        writeln!(w, "#SBATCH --time={t}").unwrap();
    }
    writeln!(w, "set -euo pipefail").unwrap();
    writeln!(w, "export LRID_SERVER={}", shell_quote(&o.server)).unwrap();
    match &o.token_file {
        Some(f) => {
            let f = shell_quote(&f.display().to_string());
            writeln!(
                w,
                "# The daemon's token, read from a file on the node (never written here)."
            )
            .unwrap();
            writeln!(w, "LRID_TOKEN=\"$(cat {f})\"").unwrap();
            writeln!(w, "export LRID_TOKEN").unwrap();
        }
        None => writeln!(
            w,
            "# LRID_TOKEN, when the daemon needs one, comes from the submitting environment."
        )
        .unwrap(),
    }
    if let Some(ca) = &o.ca_file {
        writeln!(w, "# The CA that signed the daemon's TLS certificate.").unwrap();
        writeln!(
            w,
            "export LRID_CA_FILE={}",
            shell_quote(&ca.display().to_string())
        )
        .unwrap();
    }
    let mut cmd = vec![
        shell_quote(&o.lrid.display().to_string()),
        "sweep".into(),
        "shard".into(),
        shell_quote(&o.sweep_file.display().to_string()),
        "--count".into(),
        o.count.to_string(),
        "--workers".into(),
        o.workers_per_task.max(1).to_string(),
        "--state-dir".into(),
        shell_quote(&o.state_dir.display().to_string()),
    ];
    for (flag, value) in [
        ("--device", o.device.clone()),
        (
            "--config",
            o.config.as_ref().map(|p| p.display().to_string()),
        ),
        (
            "--plugins-dir",
            o.plugins_dir.as_ref().map(|p| p.display().to_string()),
        ),
    ] {
        if let Some(v) = value {
            cmd.push(flag.into());
            cmd.push(shell_quote(&v));
        }
    }
    writeln!(w, "exec {}", cmd.join(" ")).unwrap();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> SlurmOptions {
        SlurmOptions {
            name: "paper".into(),
            lrid: "/opt/lrid/bin/lrid".into(),
            sweep_file: "/shared/sweeps/paper/sweep.toml".into(),
            state_dir: "/shared/sweeps/paper".into(),
            count: 64,
            indices: (0..64).collect(),
            max_parallel: Some(8),
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            cpus_per_task: Some(8),
            time: Some("12:00:00".into()),
            workers_per_task: 2,
            server: "http://head-node:50051".into(),
            token_file: Some("/home/me/.lrid token".into()),
            ca_file: None,
            device: Some("cuda".into()),
            config: None,
            plugins_dir: None,
        }
    }

    #[test]
    fn the_script_matches_its_golden_file() {
        crate::assert_golden("sweep/paper.sbatch", &script(&options()).unwrap());
    }

    #[test]
    fn array_ranges_and_bad_options() {
        assert_eq!(ranges(&[0, 1, 2, 3]), "0-3");
        assert_eq!(ranges(&[1, 4, 5, 6, 9]), "1,4-6,9");
        let mut o = options();
        o.indices = vec![3];
        o.max_parallel = Some(2);
        assert!(script(&o).unwrap().contains("#SBATCH --array=3%2\n"));
        // An https:// daemon: the tasks trust its CA through the environment.
        o.server = "https://head-node:50051".into();
        o.ca_file = Some("/shared/tls/lrid ca.pem".into());
        let text = script(&o).unwrap();
        assert!(
            text.contains("\nexport LRID_CA_FILE='/shared/tls/lrid ca.pem'\n"),
            "{text}"
        );
        for (edit, expect) in [
            (
                Box::new(|o: &mut SlurmOptions| o.count = 0) as Box<dyn Fn(&mut SlurmOptions)>,
                "at least 1 (got 0)",
            ),
            (
                Box::new(|o| o.indices = vec![64]),
                "index 64 is out of range",
            ),
            (Box::new(|o| o.max_parallel = Some(0)), "--max-parallel"),
            (Box::new(|o| o.gpus_per_task = Some(0)), "--gpus-per-task"),
            (
                Box::new(|o| o.time = Some("two hours".into())),
                "is not a Slurm time limit",
            ),
            (
                Box::new(|o| o.partition = Some("a b".into())),
                "not a partition name",
            ),
        ] {
            let mut o = options();
            edit(&mut o);
            let e = script(&o).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
        for ok in ["30", "1:30", "2:00:00", "1-12", "1-12:30:00", "infinite"] {
            check_time(ok).unwrap();
        }
    }
}
