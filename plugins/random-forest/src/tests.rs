use lrid_plugin::{Classifier, FeatureLayout, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::data::{MAX_BINS, group};
use crate::tree::LEAF;
use crate::{Prepared, RandomForest};

/// A row-major data set.
struct Set {
    x: Vec<f64>,
    y: Vec<u32>,
    rows: usize,
    cols: usize,
}

impl Set {
    fn view(&self) -> Matrix<'_> {
        Matrix::new(&self.x, self.rows, self.cols, FeatureLayout::default()).unwrap()
    }
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.random::<f64>().max(1e-300);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `classes` classes; feature 0 carries the label (class mean `shift·class`), the rest are noise.
fn blobs(rows: usize, cols: usize, classes: u32, shift: f64, seed: u64) -> Set {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(rows * cols);
    let mut y = Vec::with_capacity(rows);
    for i in 0..rows {
        let c = i as u32 % classes;
        y.push(c);
        for j in 0..cols {
            let mean = if j == 0 { shift * f64::from(c) } else { 0.0 };
            x.push(mean + gaussian(&mut rng));
        }
    }
    Set { x, y, rows, cols }
}

/// Small integer features (at most 30 distinct values each): binning is lossless.
fn small_integers(rows: usize, cols: usize, seed: u64) -> Set {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(rows * cols);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f64> = (0..cols)
            .map(|_| f64::from(rng.random_range(0..30u32)))
            .collect();
        let noisy = rng.random_range(0..10) == 0;
        let c = if noisy {
            rng.random_range(0..3)
        } else {
            u32::from(row[0] + row[1] > 30.0) + u32::from(row[2] > 20.0)
        };
        x.extend(row);
        y.push(c);
    }
    Set { x, y, rows, cols }
}

fn fit(config: Value, data: &Prepared, set: &Set, rows: &[u32], k: usize) -> RandomForest {
    let labels: Vec<u32> = rows.iter().map(|&r| set.y[r as usize]).collect();
    RandomForest::fit(&config, data, rows, &labels, k).unwrap()
}

fn all_rows(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

fn accuracy(model: &RandomForest, set: &Set) -> f64 {
    let p = model.predict_proba(set.view()).unwrap();
    let k = model.n_classes();
    let hits = p
        .chunks(k)
        .zip(&set.y)
        .filter(|(p, y)| {
            let best = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            best == **y as usize
        })
        .count();
    hits as f64 / set.rows as f64
}

#[test]
fn binned_split_finding_grows_the_same_trees_as_the_exact_scan() {
    let set = small_integers(400, 6, 1);
    let data = Prepared::new(set.view()).unwrap();
    assert!(data.multi.iter().all(|&m| !m));
    let rows: Vec<u32> = (0..400).filter(|r| r % 5 != 0).collect();
    for extra in [
        json!({}),
        json!({"criterion": "entropy"}),
        json!({"min_samples_leaf": 3, "max_features": "all"}),
        json!({"bootstrap": false, "max_features": 0.5, "max_depth": 6}),
    ] {
        let mut binned = json!({"n_estimators": 12, "seed": 7, "exact_below": 0});
        let mut exact = json!({"n_estimators": 12, "seed": 7, "exact_below": 1_000_000});
        for (key, v) in extra.as_object().unwrap() {
            binned[key] = v.clone();
            exact[key] = v.clone();
        }
        let a = fit(binned, &data, &set, &rows, 3);
        let b = fit(exact, &data, &set, &rows, 3);
        assert!(a.n_nodes() > 12 * 3, "{extra}: the trees split");
        assert_eq!(a, b, "{extra}");
    }
}

#[test]
fn small_subtrees_grow_the_same_on_a_copy_of_their_ranks() {
    // Continuous features (bins hold several values) and small integer ones (one value a bin).
    let mut set = blobs(1500, 6, 3, 0.7, 20);
    for (i, v) in set.x.iter_mut().enumerate() {
        if i % 6 >= 4 {
            *v = (*v * 3.0).round();
        }
    }
    let data = Prepared::new(set.view()).unwrap();
    assert_eq!(data.multi, [true, true, true, true, false, false]);
    let labels = set.y.clone();
    for config in [
        json!({"n_estimators": 8, "exact_below": 1_000_000}),
        json!({"n_estimators": 8, "exact_below": 300, "criterion": "entropy"}),
        json!({"n_estimators": 8, "exact_below": 64, "min_samples_leaf": 2, "max_bins": 40}),
    ] {
        let mut params = crate::Params::from_config(&config, 6).unwrap();
        let copied = RandomForest::fit_params(&params, &data, &all_rows(1500), &labels, 3);
        params.local_copy = false;
        let in_place = RandomForest::fit_params(&params, &data, &all_rows(1500), &labels, 3);
        assert_eq!(copied.unwrap(), in_place.unwrap(), "{config}");
    }
}

#[test]
fn binned_thresholds_reproduce_the_training_partition() {
    // Continuous features (far more distinct values than bins), random labels: a single fully
    // grown tree on all rows must memorise them, which needs every binned split's raw threshold
    // to send the training rows where the histogram did.
    let mut set = blobs(3000, 5, 4, 0.0, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for y in &mut set.y {
        *y = rng.random_range(0..4);
    }
    let data = Prepared::new(set.view()).unwrap();
    assert!(data.multi.iter().all(|&m| m));
    assert!(data.n_bins.iter().all(|&b| b as usize == MAX_BINS));
    let config = json!({"n_estimators": 1, "bootstrap": false, "max_features": "all",
        "exact_below": 0});
    let model = fit(config, &data, &set, &all_rows(3000), 4);
    assert_eq!(accuracy(&model, &set), 1.0);
    // The same with coarse bins.
    let config = json!({"n_estimators": 1, "bootstrap": false, "max_features": "all",
        "exact_below": 0, "max_bins": 8});
    let model = fit(config, &data, &set, &all_rows(3000), 4);
    assert_eq!(accuracy(&model, &set), 1.0);
    // And exact scans of multi-valued bins.
    let config = json!({"n_estimators": 1, "bootstrap": false, "max_features": "all",
        "exact_below": 100_000});
    let model = fit(config, &data, &set, &all_rows(3000), 4);
    assert_eq!(accuracy(&model, &set), 1.0);
}

#[test]
fn quantile_bins_are_ordered_and_at_most_max_bins() {
    let set = blobs(5000, 3, 2, 1.0, 4);
    let data = Prepared::new(set.view()).unwrap();
    for f in 0..3 {
        let values = &data.values[data.value_start[f]..data.value_start[f + 1]];
        let col: Vec<f64> = (0..5000)
            .map(|i| values[data.rank(f, i) as usize])
            .collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]));
        let codes = &data.codes[f * 5000..(f + 1) * 5000];
        let mut pairs: Vec<(f64, u8)> = col.iter().copied().zip(codes.iter().copied()).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            pairs.windows(2).all(|w| w[0].1 <= w[1].1),
            "codes follow values"
        );
        let counts = &data.bin_counts[f * MAX_BINS..f * MAX_BINS + data.n_bins[f] as usize];
        assert_eq!(counts.iter().sum::<u32>(), 5000);
        // About equal rows per bin.
        assert!(
            counts.iter().all(|&c| c <= 2 * 5000 / MAX_BINS as u32 + 1),
            "{counts:?}"
        );
    }
    for max_bins in [2, 3, 16, 100] {
        let bins = data.bins(max_bins);
        assert!(bins.n_bins.iter().all(|&b| b as usize == max_bins));
        assert!(bins.codes.iter().all(|&c| (c as usize) < max_bins));
    }
    // Heavy values: still at most max_bins groups.
    let counts = [1000, 1, 1, 1, 500, 1, 1, 1, 1, 1, 1, 3000, 1, 1];
    for max_bins in 2..counts.len() {
        let ends = group(&counts, max_bins);
        assert!(ends.len() <= max_bins, "{max_bins}: {ends:?}");
        assert_eq!(*ends.last().unwrap(), counts.len());
        assert!(ends.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn a_fit_is_deterministic_for_a_seed_whatever_the_threads() {
    let set = blobs(600, 20, 3, 0.8, 5);
    let data = Prepared::new(set.view()).unwrap();
    let rows = all_rows(600);
    let a = fit(
        json!({"n_estimators": 30, "seed": 11}),
        &data,
        &set,
        &rows,
        3,
    );
    let b = fit(
        json!({"n_estimators": 30, "seed": 11}),
        &data,
        &set,
        &rows,
        3,
    );
    assert_eq!(a, b);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = pool.install(|| {
        fit(
            json!({"n_estimators": 30, "seed": 11}),
            &data,
            &set,
            &rows,
            3,
        )
    });
    assert_eq!(a, c);
    let d = fit(
        json!({"n_estimators": 30, "seed": 12}),
        &data,
        &set,
        &rows,
        3,
    );
    assert_ne!(a, d);
    assert_ne!(
        a.predict_proba(set.view()).unwrap(),
        d.predict_proba(set.view()).unwrap()
    );
}

#[test]
fn probabilities_are_distributions() {
    let set = blobs(500, 10, 4, 0.5, 6);
    let data = Prepared::new(set.view()).unwrap();
    let model = fit(json!({"n_estimators": 25}), &data, &set, &all_rows(250), 4);
    let test = blobs(300, 10, 4, 0.5, 7);
    let p = model.predict_proba(test.view()).unwrap();
    assert_eq!(p.len(), 300 * 4);
    for row in p.chunks(4) {
        assert!(row.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{row:?}");
    }
    let wrong = blobs(3, 9, 4, 0.5, 8);
    let e = model.predict_proba(wrong.view()).unwrap_err();
    assert!(e.contains("10 features") && e.contains("has 9"), "{e}");
}

#[test]
fn pure_data_grows_single_leaves_without_importance() {
    let mut set = blobs(200, 5, 1, 0.0, 9);
    set.y.fill(2);
    let data = Prepared::new(set.view()).unwrap();
    let model = fit(json!({"n_estimators": 5}), &data, &set, &all_rows(200), 3);
    assert_eq!(model.n_nodes(), 5);
    for tree in &model.trees {
        assert_eq!(tree.nodes[0].feature, LEAF);
        assert_eq!(tree.values, vec![0.0, 0.0, 1.0]);
    }
    let p = model.predict_proba(set.view()).unwrap();
    assert!(p.chunks(3).all(|r| r == [0.0, 0.0, 1.0]));
    let imp = model.importances().unwrap();
    assert_eq!(imp.len(), 5);
    assert!(
        imp.iter()
            .all(|t| t.len() == 5 && t.iter().all(|&v| v == 0.0))
    );
}

#[test]
fn constant_features_make_a_leaf() {
    // Mixed labels but no feature varies: no split exists.
    let set = Set {
        x: vec![1.0; 40],
        y: (0..20).map(|i| i % 2).collect(),
        rows: 20,
        cols: 2,
    };
    let data = Prepared::new(set.view()).unwrap();
    let model = fit(
        json!({"n_estimators": 3, "bootstrap": false}),
        &data,
        &set,
        &all_rows(20),
        2,
    );
    assert_eq!(model.n_nodes(), 3);
    let p = model.predict_proba(set.view()).unwrap();
    assert!(p.iter().all(|&v| v == 0.5));
}

#[test]
fn a_separable_set_is_classified_perfectly() {
    let train = blobs(1200, 8, 4, 20.0, 10);
    let test = blobs(400, 8, 4, 20.0, 11);
    let data = Prepared::new(train.view()).unwrap();
    for config in [
        json!({"n_estimators": 50}),
        json!({"n_estimators": 50, "max_features": "log2", "criterion": "entropy"}),
        // Only feature 0 separates the classes: a tree that draws it rarely splits on noise
        // (with 30 features, scikit-learn: ~0.68 test accuracy for one tree, ~0.97 for 10).
        json!({"n_estimators": 50, "exact_below": 0}),
    ] {
        let model = fit(config.clone(), &data, &train, &all_rows(1200), 4);
        assert_eq!(accuracy(&model, &test), 1.0, "{config}");
    }
}

#[test]
fn a_noisy_set_is_learned() {
    let train = blobs(2000, 40, 3, 1.5, 12);
    let test = blobs(1000, 40, 3, 1.5, 13);
    let data = Prepared::new(train.view()).unwrap();
    let model = fit(
        json!({"n_estimators": 100}),
        &data,
        &train,
        &all_rows(2000),
        3,
    );
    // Bayes accuracy with class means 1.5 apart in one feature: ~0.72.
    let acc = accuracy(&model, &test);
    assert!(acc > 0.62, "{acc}");
}

#[test]
fn the_informative_feature_gets_most_importance() {
    let set = blobs(1000, 8, 3, 3.0, 14);
    let data = Prepared::new(set.view()).unwrap();
    for criterion in ["gini", "entropy"] {
        let model = fit(
            json!({"n_estimators": 40, "criterion": criterion, "max_features": "all"}),
            &data,
            &set,
            &all_rows(1000),
            3,
        );
        let imp = model.importances().unwrap();
        assert_eq!(imp.len(), 40);
        for tree in &imp {
            assert_eq!(tree.len(), 8);
            assert!((tree.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(tree.iter().all(|&v| v >= -1e-12));
        }
        let mean: Vec<f64> = (0..8)
            .map(|f| imp.iter().map(|t| t[f]).sum::<f64>() / 40.0)
            .collect();
        assert!(mean[0] > 0.5, "{criterion}: {mean:?}");
        assert!(
            mean[1..].iter().all(|&v| v < mean[0] / 4.0),
            "{criterion}: {mean:?}"
        );
    }
}

#[test]
fn a_saved_model_loads_with_identical_probabilities() {
    let set = blobs(500, 12, 3, 1.0, 15);
    let data = Prepared::new(set.view()).unwrap();
    let model = fit(json!({"n_estimators": 20}), &data, &set, &all_rows(500), 3);
    let bytes = model.save().unwrap();
    let loaded = RandomForest::load(&bytes).unwrap();
    assert_eq!(loaded, model);
    assert_eq!(
        loaded.predict_proba(set.view()).unwrap(),
        model.predict_proba(set.view()).unwrap()
    );
    assert_eq!(loaded.importances().unwrap(), model.importances().unwrap());
    assert_eq!(loaded.save().unwrap(), bytes);
}

#[test]
fn corrupt_or_short_bytes_are_refused() {
    let set = blobs(100, 4, 2, 1.0, 16);
    let data = Prepared::new(set.view()).unwrap();
    let model = fit(json!({"n_estimators": 3}), &data, &set, &all_rows(100), 2);
    let bytes = model.save().unwrap();
    // Every prefix is refused.
    for n in 0..bytes.len() {
        let e = RandomForest::load(&bytes[..n]).unwrap_err();
        assert!(
            e.contains("truncated") || e.contains("magic") || e.contains("corrupt"),
            "{n}: {e}"
        );
    }
    let e = RandomForest::load(b"not a forest at all").unwrap_err();
    assert!(e.contains("not a saved lrid random forest"), "{e}");
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        RandomForest::load(&longer)
            .unwrap_err()
            .contains("after its last tree")
    );
    let mut version = bytes.clone();
    version[8..12].copy_from_slice(&7u32.to_le_bytes());
    assert!(
        RandomForest::load(&version)
            .unwrap_err()
            .contains("version 7")
    );
    // The root's left child pointing back at the root (a loop).
    let mut looped = bytes.clone();
    let root = 8 + 16 + 8;
    assert_ne!(
        u32::from_le_bytes(looped[root..root + 4].try_into().unwrap()),
        LEAF
    );
    looped[root + 4..root + 8].copy_from_slice(&0u32.to_le_bytes());
    let e = RandomForest::load(&looped).unwrap_err();
    assert!(
        e.contains("node 0 of tree 0") && e.contains("corrupt"),
        "{e}"
    );
    // A node count far beyond the bytes.
    let mut huge = bytes;
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        RandomForest::load(&huge)
            .unwrap_err()
            .contains("do not fit")
    );
}

#[test]
fn bad_configurations_are_refused() {
    let set = blobs(50, 4, 2, 1.0, 17);
    let data = Prepared::new(set.view()).unwrap();
    let rows = all_rows(50);
    let labels: Vec<u32> = set.y.clone();
    for (config, message) in [
        (json!({"n_trees": 5}), "unknown configuration key 'n_trees'"),
        (json!({"max_features": "foo"}), "got \"foo\""),
        (json!({"max_features": 1.5}), "(0, 1]"),
        (json!({"max_features": 0}), "(0, 1]"),
        (json!({"max_features": true}), "max_features"),
        (
            json!({"n_estimators": 0}),
            "'n_estimators' must be at least 1",
        ),
        (json!({"n_estimators": -3}), "non-negative integer"),
        (json!({"criterion": "mse"}), "\"gini\" or \"entropy\""),
        (json!({"bootstrap": "yes"}), "true or false"),
        (json!({"max_depth": 0}), "'max_depth' must be at least 1"),
        (json!({"min_samples_split": 1}), "at least 2"),
        (json!({"min_samples_leaf": 0}), "at least 1"),
        (json!({"max_bins": 256}), "2..=255"),
        (json!({"max_bins": 1}), "2..=255"),
        (json!({"seed": -1}), "'seed'"),
        (json!([1, 2]), "JSON object"),
    ] {
        let e = RandomForest::fit(&config, &data, &rows, &labels, 2).unwrap_err();
        assert!(e.contains(message), "{config}: {e}");
    }
    let e = RandomForest::fit(&json!({}), &data, &[0, 50], &[0, 1], 2).unwrap_err();
    assert!(e.contains("row 50"), "{e}");
    let e = RandomForest::fit(&json!({}), &data, &[0, 1], &[0, 2], 2).unwrap_err();
    assert!(e.contains("label 2"), "{e}");
    let e = RandomForest::fit(&json!({}), &data, &[], &[], 2).unwrap_err();
    assert!(e.contains("no rows"), "{e}");
}

#[test]
fn max_features_follows_scikit_learn() {
    use crate::Params;
    let mf = |v: Value, p: usize| {
        Params::from_config(&json!({"max_features": v}), p)
            .unwrap()
            .max_features
    };
    assert_eq!(mf(json!("sqrt"), 507), 22);
    assert_eq!(mf(json!("log2"), 507), 8);
    assert_eq!(mf(json!("all"), 507), 507);
    assert_eq!(mf(json!(0.1), 507), 50);
    assert_eq!(mf(json!(0.0001), 507), 1);
    assert_eq!(mf(json!(1), 507), 507);
    assert_eq!(mf(Value::Null, 16), 4);
    assert_eq!(mf(json!("log2"), 1), 1);
    assert_eq!(mf(json!("sqrt"), 3), 1);
}

#[test]
fn the_grids_are_the_papers_and_a_fast_one() {
    let grids: Value = serde_json::from_str(RandomForest::GRIDS.to_str().unwrap()).unwrap();
    let paper = grids["paper"].as_array().unwrap();
    assert_eq!(paper.len(), 15);
    let mut expected = Vec::new();
    for mf in ["sqrt", "log2", "all"] {
        for n in [20, 50, 100, 500, 1000] {
            expected.push(json!({"max_features": mf, "n_estimators": n}));
        }
    }
    assert_eq!(paper, &expected);
    assert_eq!(
        grids["fast"],
        json!([{"max_features": "sqrt", "n_estimators": 100}])
    );
    for config in paper {
        crate::Params::from_config(config, 507).unwrap();
    }
}
