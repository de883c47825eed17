//! The protocol with a real classifier plugin built by the workspace (k-nearest neighbours):
//! model selection picks the configuration with the best mean fold accuracy, computed here
//! independently, fold by fold.

use std::path::PathBuf;
use std::sync::Arc;

use lrid_classify::protocol::{TrainingSet, accuracy, select_rows, stratified_folds};
use lrid_plugin::FeatureLayout;
use lrid_plugins::PluginHost;

fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

#[test]
fn cross_validation_picks_the_configuration_with_the_best_mean_fold_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let host = Arc::new(PluginHost::new(&plugins, tmp.path().join("cache")).unwrap());
    std::fs::copy(built("lrid_classifier_knn"), plugins.join("knn.so")).unwrap();
    host.rescan().unwrap();
    let knn = host.classifier("knn").unwrap();

    // Two noisy interleaved classes in 2-D: k matters.
    let mut state = 12345u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n = 60;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let class = (i % 2) as u32;
        x.push(f64::from(class) * 0.8 + uniform() * 1.5);
        x.push(uniform());
        y.push(class);
    }
    let layout = FeatureLayout::default();
    let set = TrainingSet::new(&knn, x.clone(), 2, layout, y.clone(), 2).unwrap();
    let grid: Vec<serde_json::Value> = [1, 3, 7, 15]
        .iter()
        .map(|k| serde_json::json!({ "k": k }))
        .collect();
    let selected = set.select(&grid, 5, 0).unwrap();

    // Independently: every configuration's mean accuracy over the stratified folds.
    let folds = stratified_folds(&y, 5);
    let mut means = Vec::new();
    for config in &grid {
        let mut total = 0.0;
        for held in &folds {
            let train: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
            let model = set.fit(config, &train, 0).unwrap();
            let pred = set.predict(&model, select_rows(&x, 2, held)).unwrap();
            let truth: Vec<u32> = held.iter().map(|&i| y[i]).collect();
            total += accuracy(&pred, &truth);
        }
        means.push(total / folds.len() as f64);
    }
    let best = (0..grid.len()).fold(0, |b, i| if means[i] > means[b] { i } else { b });
    assert_eq!(selected.config, grid[best], "fold means {means:?}");
    assert_eq!(selected.cv.len(), grid.len());
    for ((config, mean), (want, m)) in selected.cv.iter().zip(grid.iter().zip(&means)) {
        assert_eq!(config, want);
        assert!((mean - m).abs() < 1e-12, "{mean} vs {m}");
    }
    // Not a degenerate grid: the configurations really differ.
    assert!(
        means.iter().any(|m| (m - means[best]).abs() > 1e-9),
        "{means:?}"
    );

    // A configuration that fails in every fold is skipped; the others still compete.
    let mut with_bad = grid.clone();
    with_bad.insert(0, serde_json::json!({ "k": 0 }));
    let again = set.select(&with_bad, 5, 0).unwrap();
    assert_eq!(again.config, grid[best]);
    assert_eq!(again.cv.len(), grid.len());
    // Only failing configurations: the error says why.
    let e = set
        .select(
            &[
                serde_json::json!({ "k": 0 }),
                serde_json::json!({ "k": -1 }),
            ],
            5,
            0,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("'k'"), "{e}");
}
