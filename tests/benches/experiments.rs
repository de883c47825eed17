//! Virtual-experiment benchmarks (`make bench`, or `cargo bench -p lrid-e2e --bench experiments`):
//!
//! 1. Recording overhead: the same training run (ResNet-18 v1 at width 0.25, 32×32 shapes,
//!    SGDM, 21 trajectory points) with recording off and on, alternated, in one process; the
//!    daemon runs beside it on the same cores. Prints the wall time of each and the overhead.
//!    `LRID_BENCH_EPOCHS` sets the run length (default 20 epochs of 2048 images = 1280 steps,
//!    64 steps between points; a point costs about one and a half training steps: a forward
//!    pass of the evaluation set and one backward pass for every layer's activity change).
//!    `LRID_BENCH_ROUNDS` repeats the off/on pair (default 1).
//! 2. The demo sweep (`config/sweeps/demo.toml`) with an embedded daemon: wall time and runs
//!    per hour on this machine.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use lrid_e2e::{Daemon, lrid_bin, plugin_lib};
use lrid_plugins::PluginHost;
use lrid_sdk::{Recorder, RecorderConfig, RunLabels};
use lrid_trainer::{Arch, TaskName, TrainConfig};

fn overhead(dir: &Path) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_lib("lrid_rule_sgdm"), plugins.join("sgdm.so")).unwrap();
    let host = PluginHost::new(&plugins, dir.join("cache")).unwrap();
    host.rescan().unwrap();
    let epochs: f64 = std::env::var("LRID_BENCH_EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(20.0);
    let rounds: usize = std::env::var("LRID_BENCH_ROUNDS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(1);
    let config = TrainConfig {
        arch: Arch::ResNet18V1,
        task: TaskName::Shapes,
        batch_size: 32,
        model_seed: Some(0),
        data_seed: Some(0),
        epochs,
        train_examples: 2048,
        points: 21,
        eval_examples: 64,
        resolution: Some(32),
        width: 0.25,
        lr: Some(0.025),
        ..TrainConfig::default()
    };
    let daemon = Daemon::start(&dir.join("data"), &[]);
    println!(
        "recording overhead: {} {} width {} at {}², batch {}, {} steps, {} points (the daemon on the same cores)",
        config.arch,
        config.task,
        config.width,
        config.resolution.unwrap(),
        config.batch_size,
        config.total_steps(),
        config.points
    );
    let mut off = Vec::new();
    let mut on = Vec::new();
    for round in 0..rounds {
        for record in [false, true] {
            let mut rule = host
                .rule("sgdm")
                .unwrap()
                .instantiate(&serde_json::json!({}))
                .unwrap();
            let rec = record.then(|| {
                Recorder::open(
                    RecorderConfig::new(daemon.url()),
                    &format!("bench-{round}"),
                    RunLabels::default(),
                )
                .unwrap()
            });
            let t = Instant::now();
            let report = lrid_trainer::train(
                &config,
                &mut rule,
                tch::Device::Cpu,
                rec.as_ref(),
                &mut |_| {},
            )
            .unwrap();
            if let Some(r) = &rec {
                r.close().unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "  round {round} recording {:<3}: {secs:6.2} s, {:5.1} ms/step, measuring+queueing {:.2} s",
                if record { "on" } else { "off" },
                1e3 * report.step_seconds,
                report.record_seconds
            );
            if record {
                on.push(secs)
            } else {
                off.push(secs)
            }
        }
    }
    let min = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (off, on) = (min(&off), min(&on));
    println!(
        "  best of {rounds}: off {off:.2} s, on {on:.2} s → overhead {:+.1}% (target ≤ 5%)",
        100.0 * (on / off - 1.0)
    );
}

fn demo_sweep(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = dir.join("demo-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for lib in [
        "sgdm",
        "adam",
        "feedback_alignment",
        "information_alignment",
    ] {
        std::fs::copy(
            plugin_lib(&format!("lrid_rule_{lib}")),
            plugins.join(format!("{lib}.so")),
        )
        .unwrap();
    }
    let config = dir.join("demo.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[store]\ndata_dir = \"{}\"\n[plugins]\ndir = \"{}\"\n",
            dir.join("demo-data").display(),
            plugins.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new(lrid_bin())
        .args(["sweep", "run"])
        .arg(root.join("config/sweeps/demo.toml"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let runs: f64 = text
        .lines()
        .find_map(|l| {
            l.split(" completed")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    println!(
        "demo sweep: {runs} runs in {secs:.1} s on {} core(s) → {:.0} runs/hour (target ≤ 600 s)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        runs * 3600.0 / secs
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref().is_none_or(|o| "overhead".contains(o)) {
        overhead(dir.path());
    }
    if only.as_deref().is_none_or(|o| "demo".contains(o)) {
        demo_sweep(dir.path());
    }
}
