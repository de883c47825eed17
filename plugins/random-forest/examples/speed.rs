//! A speed check to run by hand: fits a forest on a synthetic 4-class set shaped like the
//! paper's (20,736 × 507 by default: 16 informative features with class-dependent Gaussian
//! means, the rest noise) and prints prepare, fit and predict seconds and test accuracy.
//!
//! ```sh
//! cargo run --release -p lrid-classifier-random-forest --example speed -- \
//!     [--rows 20736] [--test 5184] [--cols 507] [--trees 100] [--max-features sqrt] \
//!     [--exact-below 1024] [--npy DIR]
//! ```
//!
//! `--npy DIR` also writes `x_train.npy`, `y_train.npy`, `x_test.npy`, `y_test.npy` there for
//! `examples/sklearn_speed.py`, which times scikit-learn on the same data.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use lrid_classifier_random_forest::RandomForest;
use lrid_plugin::{Classifier, FeatureLayout, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: u32 = 4;
const INFORMATIVE: usize = 16;

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random::<f64>().max(1e-300);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `rows` rows; the class means of the informative features come from `means`.
fn synthetic(
    rows: usize,
    cols: usize,
    means: &[f64],
    rng: &mut ChaCha8Rng,
) -> (Vec<f64>, Vec<u32>) {
    let mut x = Vec::with_capacity(rows * cols);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let c = rng.random_range(0..CLASSES);
        y.push(c);
        for j in 0..cols {
            let mean = if j < INFORMATIVE {
                means[c as usize * INFORMATIVE + j]
            } else {
                0.0
            };
            x.push(mean + gaussian(rng));
        }
    }
    (x, y)
}

/// CPU seconds this process has used (all threads; Linux), for timing on a busy machine.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn write_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let num = |name: &str, default: &str| -> usize {
        arg(name, default)
            .parse()
            .unwrap_or_else(|_| panic!("{name} takes a number"))
    };
    let rows = num("--rows", "20736");
    let test_rows = num("--test", "5184");
    let cols = num("--cols", "507");
    let trees = num("--trees", "100");
    let max_features = arg("--max-features", "sqrt");
    let exact_below = num(
        "--exact-below",
        &lrid_classifier_random_forest::config::DEFAULT_EXACT_BELOW.to_string(),
    );

    let mut rng = ChaCha8Rng::seed_from_u64(2020);
    let means: Vec<f64> = (0..CLASSES as usize * INFORMATIVE)
        .map(|_| 0.35 * gaussian(&mut rng))
        .collect();
    let (x, y) = synthetic(rows, cols, &means, &mut rng);
    let (xt, yt) = synthetic(test_rows, cols, &means, &mut rng);
    let npy = arg("--npy", "");
    if !npy.is_empty() {
        let dir = Path::new(&npy);
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| e.to_string();
        write_npy(
            &dir.join("x_train.npy"),
            "<f8",
            &format!("{rows}, {cols}"),
            &f64_bytes(&x),
        )
        .map_err(io)?;
        write_npy(
            &dir.join("y_train.npy"),
            "<u4",
            &format!("{rows},"),
            &u32_bytes(&y),
        )
        .map_err(io)?;
        write_npy(
            &dir.join("x_test.npy"),
            "<f8",
            &format!("{test_rows}, {cols}"),
            &f64_bytes(&xt),
        )
        .map_err(io)?;
        write_npy(
            &dir.join("y_test.npy"),
            "<u4",
            &format!("{test_rows},"),
            &u32_bytes(&yt),
        )
        .map_err(io)?;
        println!("wrote the data set to {}", dir.display());
    }
    let train = Matrix::new(&x, rows, cols, FeatureLayout::default())?;
    let test = Matrix::new(&xt, test_rows, cols, FeatureLayout::default())?;
    println!(
        "{rows} × {cols}, {CLASSES} classes, {trees} trees, max_features {max_features}, \
         exact_below {exact_below}, {} threads",
        rayon::current_num_threads()
    );

    let (t, c) = (Instant::now(), cpu_s());
    let data = RandomForest::prepare(train)?;
    let (prepare_s, prepare_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
    let all: Vec<u32> = (0..rows as u32).collect();
    let config = serde_json::json!({
        "n_estimators": trees, "max_features": max_features, "exact_below": exact_below, "seed": 1,
    });
    let (t, c) = (Instant::now(), cpu_s());
    let model = RandomForest::fit(&config, &data, &all, &y, CLASSES as usize)?;
    let (fit_s, fit_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
    let (t, c) = (Instant::now(), cpu_s());
    let p = model.predict_proba(test)?;
    let (predict_s, predict_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
    let k = CLASSES as usize;
    let hits = p
        .chunks(k)
        .zip(&yt)
        .filter(|(p, y)| (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])) == Some(**y as usize))
        .count();
    println!(
        "wall (cpu) seconds: prepare {prepare_s:.3} ({prepare_cpu:.2}), fit {fit_s:.3} \
         ({fit_cpu:.2}), predict {predict_s:.3} ({predict_cpu:.2}) for {test_rows} rows; \
         {} nodes, test accuracy {:.4}",
        model.n_nodes(),
        hits as f64 / test_rows as f64
    );
    Ok(())
}
