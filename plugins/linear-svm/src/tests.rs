//! Unit tests of the classifier (the solver's and the PCA's own tests are in their modules).

use super::*;
use lrid_plugin::{FeatureLayout, OwnedMatrix};

/// `n` rows of 3 one-hot columns followed by `d` continuous ones, in `classes` clusters whose
/// centres are `spread` apart along distinct directions; labels cycle through the classes.
fn clusters(n: usize, d: usize, classes: usize, spread: f64, seed: u64) -> (OwnedMatrix, Vec<u32>) {
    let cat = 3;
    let cols = cat + d;
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(n * cols);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % classes) as u32;
        let group = (i / classes) % cat;
        for g in 0..cat {
            values.push(if g == group { 1.0 } else { 0.0 });
        }
        for j in 0..d {
            let u: f64 = (0..3).map(|_| rng.next_f64()).sum::<f64>() - 1.5;
            let centre = if j % classes == label as usize {
                spread
            } else {
                0.0
            };
            values.push(u + centre + 0.05 * j as f64);
        }
        labels.push(label);
    }
    let layout = FeatureLayout {
        categorical: cat,
        points: 0,
    };
    (OwnedMatrix::new(values, n, cols, layout).unwrap(), labels)
}

fn all_rows(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

fn accuracy(model: &LinearSvm, x: &OwnedMatrix, labels: &[u32]) -> f64 {
    let k = model.n_classes();
    let p = model.predict_proba(x.view()).unwrap();
    let right = p
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, l)| argmax(row) == **l as usize)
        .count();
    right as f64 / labels.len() as f64
}

fn fit(config: Value, x: &OwnedMatrix, labels: &[u32], k: usize) -> Result<LinearSvm, String> {
    let data = LinearSvm::prepare(x.view())?;
    LinearSvm::fit(&config, &data, &all_rows(x.rows()), labels, k)
}

#[test]
fn separable_data_is_fitted_exactly_with_two_and_four_classes() {
    for k in [2, 4] {
        let (x, labels) = clusters(200, 8, k, 6.0, k as u64);
        for config in [json!({}), json!({"C": 50}), json!({"pca_components": 5})] {
            let model = fit(config.clone(), &x, &labels, k).unwrap();
            assert_eq!(model.coef().len(), if k == 2 { 1 } else { k });
            assert_eq!(accuracy(&model, &x, &labels), 1.0, "k={k} {config}");
        }
    }
}

#[test]
fn two_classes_fit_one_problem_whose_positive_side_is_class_one() {
    let (x, labels) = clusters(120, 5, 2, 1.0, 3);
    let model = fit(json!({}), &x, &labels, 2).unwrap();
    let d = model.decision_function(x.view()).unwrap();
    let p = model.predict_proba(x.view()).unwrap();
    assert_eq!(d.len(), x.rows());
    for (d, p) in d.iter().zip(p.chunks_exact(2)) {
        assert!((p[0] + p[1] - 1.0).abs() < 1e-15);
        assert!((p[1] - 1.0 / (1.0 + (-d).exp())).abs() < 1e-15);
        assert_eq!(argmax(p) == 1, *d > 0.0);
    }
    // Swapping the labels negates the problem: the same weights with the other sign.
    let swapped: Vec<u32> = labels.iter().map(|l| 1 - l).collect();
    let other = fit(json!({}), &x, &swapped, 2).unwrap();
    for (a, b) in model.coef()[0].iter().zip(&other.coef()[0]) {
        assert!((a + b).abs() < 1e-12, "{a} vs {b}");
    }
    assert!((model.intercept()[0] + other.intercept()[0]).abs() < 1e-12);
}

#[test]
fn four_classes_get_a_softmax_of_the_one_vs_rest_decisions() {
    let (x, labels) = clusters(160, 6, 4, 1.5, 4);
    let config = json!({"C": 0.5, "tol": 1e-10, "max_iter": 100000});
    let model = fit(config.clone(), &x, &labels, 4).unwrap();
    let d = model.decision_function(x.view()).unwrap();
    let p = model.predict_proba(x.view()).unwrap();
    for (d, p) in d.chunks_exact(4).zip(p.chunks_exact(4)) {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        assert_eq!(argmax(d), argmax(p));
        let z: f64 = d.iter().map(|v| v.exp()).sum();
        for (dv, pv) in d.iter().zip(p) {
            assert!((pv - dv.exp() / z).abs() < 1e-14);
        }
    }
    // Each problem is class j against the rest.
    for j in 0..4 {
        let y: Vec<u32> = labels.iter().map(|&l| u32::from(l == j)).collect();
        let binary = fit(config.clone(), &x, &y, 2).unwrap();
        let close = binary.coef()[0]
            .iter()
            .zip(&model.coef()[j as usize])
            .all(|(a, b)| (a - b).abs() < 1e-7);
        assert!(close, "problem {j}");
    }
}

#[test]
fn a_seed_fixes_the_model_and_other_seeds_reach_the_same_optimum() {
    let (x, labels) = clusters(150, 7, 3, 0.8, 5);
    let a = fit(json!({"seed": 17}), &x, &labels, 3).unwrap();
    let b = fit(json!({"seed": 17}), &x, &labels, 3).unwrap();
    assert_eq!(a, b);
    let tight = json!({"seed": 1, "tol": 1e-10, "max_iter": 100000});
    let c = fit(tight, &x, &labels, 3).unwrap();
    let tight = json!({"seed": 2, "tol": 1e-10, "max_iter": 100000});
    let e = fit(tight, &x, &labels, 3).unwrap();
    assert_ne!(c.coef(), e.coef());
    for (rc, re) in c.coef().iter().zip(e.coef()) {
        for (p, q) in rc.iter().zip(re) {
            assert!((p - q).abs() < 1e-7, "{p} vs {q}");
        }
    }
    assert!(c.n_iter().iter().all(|&n| n < 100000));
}

#[test]
fn max_iter_caps_the_solver() {
    let (x, labels) = clusters(150, 7, 2, 0.3, 6);
    let model = fit(json!({"C": 5e6, "max_iter": 3}), &x, &labels, 2).unwrap();
    assert_eq!(model.n_iter(), &[3]);
}

#[test]
fn pca_is_fitted_on_the_training_rows_and_cached_per_subset() {
    let (x, labels) = clusters(90, 10, 3, 1.0, 7);
    let data = LinearSvm::prepare(x.view()).unwrap();
    let rows: Vec<u32> = (0..90).filter(|r| r % 4 != 1).collect();
    let sub: Vec<u32> = rows.iter().map(|&r| labels[r as usize]).collect();
    let m4 = LinearSvm::fit(&json!({"pca_components": 4}), &data, &rows, &sub, 3).unwrap();
    let m10 = LinearSvm::fit(&json!({"pca_components": 10}), &data, &rows, &sub, 3).unwrap();
    let full = pca::fit_full(x.view().values(), x.cols(), 3, &rows);
    let (p4, p10) = (m4.pca().unwrap(), m10.pca().unwrap());
    assert_eq!(p4.components, full.components[..4 * 10]);
    assert_eq!(p10.components, full.components);
    assert_eq!(p4.explained_variance, full.variances[..4]);
    assert_eq!(p4.mean, full.mean);
    assert_eq!(m4.coef()[0].len(), 3 + 4);
    assert_eq!(data.pca_cache.lock().unwrap().len(), 1);
    LinearSvm::fit(
        &json!({"pca_components": 2}),
        &data,
        &all_rows(90),
        &labels,
        3,
    )
    .unwrap();
    assert_eq!(data.pca_cache.lock().unwrap().len(), 2);
    // Many subsets: the cache stays bounded.
    for skip in 0..PCA_CACHE as u32 + 3 {
        let rows: Vec<u32> = (0..90).filter(|&r| r != skip).collect();
        let sub: Vec<u32> = rows.iter().map(|&r| labels[r as usize]).collect();
        LinearSvm::fit(&json!({"pca_components": 1}), &data, &rows, &sub, 3).unwrap();
    }
    assert_eq!(data.pca_cache.lock().unwrap().len(), PCA_CACHE);
}

#[test]
fn importances_are_the_mean_absolute_effective_input_weights() {
    let (x, labels) = clusters(120, 6, 3, 1.0, 8);
    for config in [json!({}), json!({"pca_components": 3})] {
        let model = fit(config.clone(), &x, &labels, 3).unwrap();
        let members = model.importances().unwrap();
        assert_eq!(members.len(), 1);
        let imp = &members[0];
        assert_eq!(imp.len(), x.cols());
        // The decision function is linear in the input: a unit step along column j moves
        // decision k by problem k's effective weight of column j.
        let base = x.view().row(0).to_vec();
        let d0 = model
            .decision_function(Matrix::new(&base, 1, x.cols(), x.view().layout()).unwrap())
            .unwrap();
        for (j, want) in imp.iter().enumerate() {
            let mut moved = base.clone();
            moved[j] += 1.0;
            let m = Matrix::new(&moved, 1, x.cols(), x.view().layout()).unwrap();
            let d1 = model.decision_function(m).unwrap();
            let got: f64 =
                d1.iter().zip(&d0).map(|(a, b)| (a - b).abs()).sum::<f64>() / d0.len() as f64;
            assert!(
                (got - want).abs() < 1e-10,
                "{config} column {j}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn a_saved_model_loads_back_with_identical_probabilities() {
    for (k, config) in [
        (2, json!({})),
        (4, json!({"C": 50})),
        (2, json!({"pca_components": 3})),
        (4, json!({"pca_components": 7, "C": 5e3})),
    ] {
        let (x, labels) = clusters(100, 8, k, 0.7, 9);
        let model = fit(config.clone(), &x, &labels, k).unwrap();
        let bytes = model.save().unwrap();
        let loaded = LinearSvm::load(&bytes).unwrap();
        assert_eq!(loaded.n_classes(), k);
        assert_eq!(
            loaded.predict_proba(x.view()).unwrap(),
            model.predict_proba(x.view()).unwrap(),
            "{config}"
        );
        assert_eq!(loaded.importances(), model.importances());
        assert_eq!(loaded.save().unwrap(), bytes);
        // The documented schema.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "format",
                "classes",
                "categorical",
                "coef",
                "intercept",
                "pca"
            ]
        );
        assert_eq!(v["format"], 1);
        assert_eq!(v["classes"], k);
        assert_eq!(v["categorical"], 3);
        let problems = if k == 2 { 1 } else { k };
        assert_eq!(v["coef"].as_array().unwrap().len(), problems);
        assert_eq!(v["intercept"].as_array().unwrap().len(), problems);
        match config.get("pca_components").and_then(Value::as_u64) {
            None => {
                assert!(v["pca"].is_null());
                assert_eq!(v["coef"][0].as_array().unwrap().len(), 3 + 8);
            }
            Some(n) => {
                let n = n as usize;
                assert_eq!(v["coef"][0].as_array().unwrap().len(), 3 + n);
                assert_eq!(v["pca"]["mean"].as_array().unwrap().len(), 8);
                let comps = v["pca"]["components"].as_array().unwrap();
                assert_eq!(comps.len(), n);
                assert!(comps.iter().all(|c| c.as_array().unwrap().len() == 8));
                assert_eq!(v["pca"]["explained_variance"].as_array().unwrap().len(), n);
            }
        }
    }
}

#[test]
fn bad_saved_bytes_are_refused() {
    let (x, labels) = clusters(60, 4, 3, 1.0, 10);
    let good: Value = serde_json::from_slice(
        &fit(json!({"pca_components": 2}), &x, &labels, 3)
            .unwrap()
            .save()
            .unwrap(),
    )
    .unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\x00\x01 not json".to_vec(), "must be JSON"),
        (b"[1, 2]".to_vec(), "JSON object"),
        (edit(&|v| v["format"] = json!(2)), "format 2"),
        (edit(&|v| v["classes"] = json!(1)), "at least 2"),
        (edit(&|v| v["classes"] = json!(2)), "coefficient rows"),
        (edit(&|v| v["coef"][1] = json!([1.0])), "same length"),
        (edit(&|v| v["coef"][0][0] = json!("x")), "finite number"),
        (edit(&|v| v["intercept"] = json!([0.0])), "coefficient rows"),
        (edit(&|v| v["extra"] = json!(0)), "unknown key 'extra'"),
        (
            edit(&|v| v["pca"]["mean"] = json!([0.0])),
            "inconsistent PCA",
        ),
        (
            edit(&|v| v["pca"]["explained_variance"] = json!([1.0])),
            "inconsistent PCA",
        ),
        (edit(&|v| v["pca"] = json!(3)), "null or an object"),
        (
            edit(&|v| {
                v.as_object_mut().unwrap().remove("pca");
            }),
            "'pca' is missing",
        ),
        (
            edit(&|v| {
                v.as_object_mut().unwrap().remove("categorical");
            }),
            "'categorical'",
        ),
    ];
    for (bytes, want) in cases {
        let e = LinearSvm::load(&bytes).unwrap_err();
        assert!(e.contains(want), "{e} (wanted '{want}')");
    }
    // The untouched model loads.
    LinearSvm::load(&serde_json::to_vec(&good).unwrap()).unwrap();
}

#[test]
fn bad_configurations_are_refused() {
    let (x, labels) = clusters(30, 4, 2, 1.0, 11);
    let cases = [
        (json!({"gamma": 1}), "unknown configuration key 'gamma'"),
        (json!({"C": 0}), "C must be a positive"),
        (json!({"C": -1.5}), "C must be a positive"),
        (json!({"C": "big"}), "'C' must be a number"),
        (json!({"tol": 0}), "tol must be a positive"),
        (json!({"max_iter": 0}), "max_iter must be at least 1"),
        (
            json!({"max_iter": 1.5}),
            "'max_iter' must be a non-negative integer",
        ),
        (json!({"pca_components": 0}), "at least 1"),
        (json!({"pca_components": 5}), "min(30, 4) = 4"),
        (json!({"seed": -1}), "'seed' must be a non-negative integer"),
        (json!([1]), "must be a JSON object"),
    ];
    for (config, want) in cases {
        let e = fit(config.clone(), &x, &labels, 2).unwrap_err();
        assert!(e.contains(want), "{config}: {e}");
    }
    // More components than training rows.
    let data = LinearSvm::prepare(x.view()).unwrap();
    let e = LinearSvm::fit(
        &json!({"pca_components": 4}),
        &data,
        &[0, 1, 2],
        &[0, 1, 0],
        2,
    )
    .unwrap_err();
    assert!(e.contains("min(3, 4) = 3"), "{e}");
    assert!(
        fit(
            json!({"pca_components": 4, "C": 1, "seed": 3}),
            &x,
            &labels,
            2
        )
        .is_ok()
    );
    assert!(fit(json!({"pca_components": null}), &x, &labels, 2).is_ok());
    let e = fit(json!({}), &x, &labels, 1).unwrap_err();
    assert!(e.contains("at least 2 classes"), "{e}");
    let e = LinearSvm::fit(&json!({}), &data, &[0, 99], &[0, 1], 2).unwrap_err();
    assert!(e.contains("row 99"), "{e}");
}

#[test]
fn predicting_needs_the_fitted_column_count() {
    let (x, labels) = clusters(30, 4, 2, 1.0, 12);
    let model = fit(json!({}), &x, &labels, 2).unwrap();
    let (other, _) = clusters(5, 5, 2, 1.0, 12);
    let e = model.predict_proba(other.view()).unwrap_err();
    assert!(e.contains("7 feature columns; this matrix has 8"), "{e}");
    let empty = OwnedMatrix::new(Vec::new(), 0, 7, x.view().layout()).unwrap();
    assert!(model.predict_proba(empty.view()).unwrap().is_empty());
}

#[test]
fn the_grids_are_the_papers_and_a_fast_one_and_every_configuration_parses() {
    let grids: Value = serde_json::from_str(GRIDS.to_str().unwrap()).unwrap();
    let cs = [1.0, 50.0, 500.0, 5e3, 5e4, 5e5, 5e6];
    let mut paper: Vec<(Option<usize>, f64)> = cs.iter().map(|&c| (None, c)).collect();
    for n in [10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 600] {
        paper.extend(cs.iter().map(|&c| (Some(n), c)));
    }
    let fast: Vec<(Option<usize>, f64)> = vec![(None, 1.0)];
    for (name, want) in [("paper", paper), ("fast", fast)] {
        let got: Vec<(Option<usize>, f64)> = grids[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let c = Config::parse(c).unwrap();
                (c.pca_components, c.c)
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(grids.as_object().unwrap().len(), 2);
    assert_eq!(grids["paper"].as_array().unwrap().len(), 84);
}

#[test]
fn the_plugin_exports_a_classifier_that_saves_and_has_importances() {
    let info = unsafe { &*__lrid_plugin_export::lrid_plugin_entry() };
    assert_eq!(info.kind, lrid_plugin::KIND_CLASSIFIER);
    assert_eq!(
        unsafe { CStr::from_ptr(info.name) }.to_str().unwrap(),
        "linear-svm"
    );
    assert!(info.torch_version.is_null());
    let vtable = unsafe { &*(info.vtable as *const lrid_plugin::ClassifierVTable) };
    assert_eq!(
        vtable.capabilities,
        lrid_plugin::CAP_SAVE | lrid_plugin::CAP_IMPORTANCES
    );
    assert_eq!(unsafe { CStr::from_ptr(vtable.grids) }, GRIDS);
}
