use std::time::Instant;

use lrid_plugin::{FeatureLayout, OwnedMatrix};
use rand_distr::{Distribution, Normal};
use serde_json::{Value, json};

use super::*;

const POINTS: usize = 21;
const CATEGORICAL: usize = 3;

/// `n` rows of 4 classes (row i has class i % 4): 3 one-hot columns (a random depth group),
/// then `stats` trajectories of 21 points. Statistics 0–7 rise with a class-dependent slope
/// (class c: c − 1.5 over the trajectory) from a random N(0, 0.2²) offset; the others are that
/// offset alone; every value carries N(0, 0.2²) noise.
fn synthetic(n: usize, stats: usize, seed: u64) -> (OwnedMatrix, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.2).unwrap();
    let offsets = Normal::new(0.0, 0.2).unwrap();
    let cols = CATEGORICAL + stats * POINTS;
    let mut values = Vec::with_capacity(n * cols);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 4) as u32;
        let group = rng.random_range(0..CATEGORICAL);
        values.extend((0..CATEGORICAL).map(|g| if g == group { 1.0 } else { 0.0 }));
        for k in 0..stats {
            let offset: f64 = offsets.sample(&mut rng);
            let slope = if k < 8 { f64::from(class) - 1.5 } else { 0.0 };
            for t in 0..POINTS {
                let x = t as f64 / (POINTS - 1) as f64;
                values.push(offset + slope * x + noise.sample(&mut rng));
            }
        }
        labels.push(class);
    }
    let layout = FeatureLayout {
        categorical: CATEGORICAL,
        points: POINTS,
    };
    (OwnedMatrix::new(values, n, cols, layout).unwrap(), labels)
}

fn grid(name: &str) -> Vec<Value> {
    let grids: Value = serde_json::from_str(GRIDS.to_str().unwrap()).unwrap();
    grids[name].as_array().unwrap().clone()
}

fn fast() -> Value {
    grid("fast")[0].clone()
}

fn with(config: &Value, key: &str, value: Value) -> Value {
    let mut c = config.clone();
    c[key] = value;
    c
}

fn accuracy(p: &[f64], labels: &[u32], classes: usize) -> f64 {
    let right = p
        .chunks(classes)
        .zip(labels)
        .filter(|(row, l)| {
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            best == **l as usize
        })
        .count();
    right as f64 / labels.len() as f64
}

#[test]
fn the_3d_form_puts_the_repeated_one_hot_channels_in_front() {
    // 2 rows, 2 categorical columns, 2 statistics of 3 points.
    let layout = FeatureLayout {
        categorical: 2,
        points: 3,
    };
    let values: Vec<f64> = (0..16).map(f64::from).collect();
    let x = Matrix::new(&values, 2, 8, layout).unwrap();
    let shape = Shape::of(x).unwrap();
    assert_eq!((shape.channels(), shape.statistics()), (4, 2));
    let ncl = shape.to_ncl(x);
    assert_eq!(
        ncl[..12],
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
    assert_eq!(ncl[12..15], [8.0, 8.0, 8.0]);
    assert_eq!(ncl.len(), 24);
}

#[test]
fn separable_trajectories_are_learned() {
    let (x, labels) = synthetic(700, 24, 1);
    let train: Vec<u32> = (0..525).collect();
    let data = Conv1d::prepare(x.view()).unwrap();
    assert_eq!(data.shape().channels(), 27);
    let start = Instant::now();
    let model = Conv1d::fit(&fast(), &data, &train, &labels[..525], 4).unwrap();
    eprintln!(
        "fast config on 525 × 27 × 21: fitted in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let test = x.select_rows(&(525..700).collect::<Vec<u32>>());
    let p = model.predict_proba(test.view()).unwrap();
    assert_eq!(p.len(), 175 * 4);
    let acc = accuracy(&p, &labels[525..], 4);
    eprintln!("test accuracy {acc:.3}");
    assert!(acc >= 0.95, "test accuracy {acc}");
    for row in p.chunks(4) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
        assert!(row.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }
}

#[test]
fn every_pooling_and_a_full_batch_train() {
    let (x, labels) = synthetic(200, 5, 2);
    let data = Conv1d::prepare(x.view()).unwrap();
    let rows: Vec<u32> = (0..200).collect();
    for pool in ["none", "max", "avg"] {
        // batch 512 ≥ 200 rows: one full batch per epoch.
        let config = json!({"pool": pool, "kernel_size": 21, "stride": 4, "epochs": 3,
                            "batch_size": 512, "num_filters": 40, "weight_decay": 0.0});
        let m = Conv1d::fit(&config, &data, &rows, &labels, 4).unwrap();
        let p = m.predict_proba(x.view()).unwrap();
        assert_eq!(p.len(), 800);
        assert!(p.iter().all(|v| v.is_finite()));
    }
    // Stride 4 with kernel 2: L = ⌊19 / 4⌋ + 1 = 5 values per filter when flattened.
    let config = json!({"pool": "none", "kernel_size": 2, "stride": 4});
    let m = Conv1d::fit(&config, &data, &rows, &labels, 4).unwrap();
    assert_eq!(m.weights()[2].len(), 4 * 20 * 5);
}

#[test]
fn fits_are_deterministic_and_models_round_trip() {
    let (x, labels) = synthetic(120, 4, 3);
    let data = Conv1d::prepare(x.view()).unwrap();
    let rows: Vec<u32> = (0..100).collect();
    let config = with(&fast(), "epochs", json!(20));
    let config = with(&config, "seed", json!(7));
    let a = Conv1d::fit(&config, &data, &rows, &labels[..100], 4).unwrap();
    let b = Conv1d::fit(&config, &data, &rows, &labels[..100], 4).unwrap();
    assert_eq!(a, b);
    let c = Conv1d::fit(
        &with(&config, "seed", json!(8)),
        &data,
        &rows,
        &labels[..100],
        4,
    )
    .unwrap();
    assert_ne!(a, c);

    // Concurrent fits give the same models (no shared random state).
    let models: Vec<Conv1d> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Conv1d::fit(&config, &data, &rows, &labels[..100], 4).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(models.iter().all(|m| *m == a));

    let bytes = a.save().unwrap();
    assert_eq!(&bytes[..8], format::MAGIC);
    let back = Conv1d::load(&bytes).unwrap();
    assert_eq!(back, a);
    assert_eq!(
        back.predict_proba(x.view()).unwrap(),
        a.predict_proba(x.view()).unwrap()
    );
    assert_eq!(back.config().seed, 7);

    assert!(Conv1d::load(b"LRIDC1D").unwrap_err().contains("magic"));
    let e = Conv1d::load(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        Conv1d::load(&longer)
            .unwrap_err()
            .contains("after its weights")
    );
    let mut newer = bytes.clone();
    newer[8] = 2;
    assert!(Conv1d::load(&newer).unwrap_err().contains("format 2"));
}

#[test]
fn bad_configurations_are_refused() {
    let (x, labels) = synthetic(40, 2, 4);
    let data = Conv1d::prepare(x.view()).unwrap();
    let rows: Vec<u32> = (0..40).collect();
    let fit = |config: Value| Conv1d::fit(&config, &data, &rows, &labels, 4).unwrap_err();
    let e = fit(json!({"filters": 3}));
    assert!(e.contains("unknown configuration key 'filters'"), "{e}");
    let e = fit(json!({"kernel_size": 30}));
    assert!(
        e.contains("kernel_size 30") && e.contains("21 points"),
        "{e}"
    );
    let e = fit(json!({"pool": "foo"}));
    assert!(e.contains("'pool'") && e.contains("foo"), "{e}");
    let e = fit(json!({"stride": 0}));
    assert!(e.contains("'stride' must be at least 1"), "{e}");
    let e = fit(json!({"lr": -1.0}));
    assert!(e.contains("'lr'"), "{e}");
    let e = fit(json!({"weight_decay": "x"}));
    assert!(e.contains("'weight_decay' must be a number"), "{e}");
    let e = fit(json!([1]));
    assert!(e.contains("JSON object"), "{e}");
    let e = Conv1d::fit(&json!({}), &data, &[40], &[0], 4).unwrap_err();
    assert!(e.contains("row 40"), "{e}");
}

#[test]
fn matrices_without_trajectories_are_refused() {
    let flat = FeatureLayout {
        categorical: 3,
        points: 0,
    };
    let values = vec![0.0; 2 * 10];
    let flat_x = Matrix::new(&values, 2, 10, flat).unwrap();
    let e = Conv1d::prepare(flat_x).unwrap_err();
    assert!(e.contains("needs trajectories"), "{e}");

    // A model refuses a matrix of another layout.
    let (x, labels) = synthetic(40, 2, 5);
    let data = Conv1d::prepare(x.view()).unwrap();
    let rows: Vec<u32> = (0..40).collect();
    let m = Conv1d::fit(&json!({"epochs": 1}), &data, &rows, &labels, 4).unwrap();
    let e = m.predict_proba(flat_x).unwrap_err();
    assert!(e.contains("needs trajectories"), "{e}");
    let (y, _) = synthetic(4, 3, 5);
    let e = m.predict_proba(y.view()).unwrap_err();
    assert!(e.contains("fitted on 45 columns"), "{e}");
}

#[test]
fn the_grids_are_the_papers_and_a_fast_one() {
    let paper = grid("paper");
    assert_eq!(paper.len(), 720);
    let mut seen = std::collections::BTreeSet::new();
    for c in &paper {
        let config = Config::from_json(c).unwrap();
        assert_eq!(config.epochs, 400);
        assert!(config.out_len(21).is_ok());
        seen.insert(c.to_string());
    }
    assert_eq!(seen.len(), 720);
    let first = Config::from_json(&paper[0]).unwrap();
    assert_eq!((first.kernel_size, first.lr), (1, 1e-3));
    let fast = grid("fast");
    assert!(!fast.is_empty() && fast.len() <= 2);
    for c in &fast {
        Config::from_json(c).unwrap();
    }
    let vtable = lrid_plugin::classifier::vtable::<Conv1d>();
    assert_eq!(vtable.capabilities, lrid_plugin::CAP_SAVE);
    assert_eq!(unsafe { CStr::from_ptr(vtable.grids) }, GRIDS);
}
