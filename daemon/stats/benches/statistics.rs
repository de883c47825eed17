//! Throughput of the 21 statistics of a measure, against a plain numpy implementation of the
//! same statistics (`tests/python/reference_stats.py`) timed in the same run.
//!
//! `cargo bench -p lrid-stats --bench statistics` (or `make bench`). Prints input GB/s on one
//! thread and on every core, numpy's GB/s, and the ratios. Set `LRID_PYTHON` to choose the
//! Python with numpy (default: the project venv).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lrid_stats::{ActivationAccumulator, MeasurementModel, weight_statistics};
use npyz::WriterBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

struct Case {
    name: &'static str,
    measure: &'static str,
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn normal(n: usize, std: f32, seed: u64, relu: bool) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).unwrap();
    (0..n)
        .map(|_| {
            let x = d.sample(&mut rng);
            if relu { x.max(0.0) } else { x }
        })
        .collect()
}

fn run_lrid(case: &Case) {
    let model = MeasurementModel::IDEAL;
    match case.measure {
        "weight" => {
            black_box(weight_statistics(&case.data, &case.shape, &model, 0).unwrap());
        }
        _ => {
            let units = case.shape[1..].iter().product();
            let mut acc = ActivationAccumulator::new(units, model, 0).unwrap();
            acc.push(&case.data, case.shape[0]).unwrap();
            black_box(acc.finish().unwrap());
        }
    }
}

/// Median wall time of `runs` runs after one warm-up.
fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn write_npy(path: &Path, case: &Case) {
    let shape: Vec<u64> = case.shape.iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(case.data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn numpy_times(cases: &[Case], dir: &Path) -> Result<Vec<f64>, String> {
    let python = std::env::var_os("LRID_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let mut specs = Vec::new();
    for c in cases {
        let p = dir.join(format!("{}.npy", c.name));
        write_npy(&p, c);
        specs.push(format!("{}:{}", c.measure, p.display()));
    }
    let out = Command::new(&python)
        .arg(root().join("tests/python/reference_stats.py"))
        .arg("--bench")
        .args(&specs)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .collect())
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported, everything runs.
    let cases = vec![
        Case {
            name: "weight_512x512x3x3",
            measure: "weight",
            shape: vec![512, 512, 3, 3],
            data: normal(512 * 512 * 9, 0.02, 1, false),
        },
        Case {
            name: "act_256x64x28x28",
            measure: "act",
            shape: vec![256, 64, 28, 28],
            data: normal(256 * 64 * 28 * 28, 1.0, 2, true),
        },
        Case {
            name: "weight_4096x4096",
            measure: "weight",
            shape: vec![4096, 4096],
            data: normal(4096 * 4096, 0.01, 3, false),
        },
    ];
    let cores = rayon::current_num_threads();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let runs = 9;
    let mut rows = Vec::new();
    for c in &cases {
        let t1 = one.install(|| time(runs, || run_lrid(c)));
        let tn = time(runs, || run_lrid(c));
        rows.push((t1, tn));
    }
    let dir = tempfile::tempdir().unwrap();
    let numpy = numpy_times(&cases, dir.path());
    println!(
        "21 statistics of one measure, f32 input; lrid median of {runs} runs, numpy median of 5 (same machine, same run)"
    );
    println!(
        "{:<20} {:>8} {:>11} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "tensor",
        "MB",
        "lrid 1 core",
        "GB/s",
        format!("lrid {cores} cores"),
        "GB/s",
        "numpy",
        "GB/s",
        "1 core/np"
    );
    for (i, (c, (t1, tn))) in cases.iter().zip(&rows).enumerate() {
        let bytes = (c.data.len() * 4) as f64;
        let gbs = |t: f64| bytes / t / 1e9;
        let (np_t, np_col, ratio) = match &numpy {
            Ok(t) => (
                format!("{:.1} ms", t[i] * 1e3),
                format!("{:.3}", gbs(t[i])),
                format!("{:.1}×", t[i] / t1.as_secs_f64()),
            ),
            Err(_) => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<20} {:>8.1} {:>11} {:>11.3} {:>11} {:>11.3} {:>11} {:>10} {:>10}",
            c.name,
            bytes / 1e6,
            format!("{:.1} ms", t1.as_secs_f64() * 1e3),
            gbs(t1.as_secs_f64()),
            format!("{:.1} ms", tn.as_secs_f64() * 1e3),
            gbs(tn.as_secs_f64()),
            np_t,
            np_col,
            ratio
        );
    }
    if let Err(e) = numpy {
        eprintln!("numpy peer not run: {e}");
        std::process::exit(1);
    }
}
