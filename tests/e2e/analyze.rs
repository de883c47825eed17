//! Identification end to end: a labelled corpus recorded into a real daemon through the SDK;
//! `lrid dataset export`; `lrid analyze` with the built-in classifier plugins the daemon loaded
//! (results.json, the HTML report with every figure, the `analyses` table); a classifier dropped
//! into the running daemon's plugins folder used without a restart; bad inputs, each refused
//! with one clear line; a failing classifier fails its own results only.

use std::path::Path;
use std::time::{Duration, Instant};

use lrid_e2e::{Daemon, lrid, plugin_lib, record_synthetic_corpus, text};

const RULES: [&str; 4] = [
    "adam",
    "feedback-alignment",
    "information-alignment",
    "sgdm",
];

/// A daemon whose plugins folder holds the two built-in classifiers, with the corpus recorded.
fn daemon_with_corpus(root: &Path) -> Daemon {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (lib, name) in [
        ("lrid_classifier_random_forest", "random-forest"),
        ("lrid_classifier_linear_svm", "linear-svm"),
    ] {
        std::fs::copy(plugin_lib(lib), plugins.join(format!("{name}.so"))).unwrap();
    }
    let daemon = Daemon::start(
        &root.join("data"),
        &["--plugins-dir", plugins.to_str().unwrap()],
    );
    let runs = record_synthetic_corpus(&daemon.url(), "corpus", &RULES, 21);
    assert_eq!(runs.len(), 32);
    daemon
}

fn wait_for_plugin(daemon: &Daemon, name: &str) {
    let started = Instant::now();
    loop {
        let rows = daemon.sql(&format!(
            "SELECT status FROM plugins WHERE name = '{name}' AND status = 'loaded'"
        ));
        if !rows.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} was not loaded: {:?}",
            daemon.sql("SELECT * FROM plugins")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn analyze_reports_every_experiment_stores_its_rows_and_uses_a_classifier_dropped_in() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = daemon_with_corpus(tmp.path());
    let url = daemon.url();

    // The plugins table lists the classifiers.
    let kinds = daemon.sql("SELECT name, kind FROM plugins ORDER BY name");
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds.iter().all(|r| r["kind"] == "classifier"), "{kinds:?}");

    // The dataset: what the classifiers see.
    let export = tmp.path().join("dataset.parquet");
    let out = lrid(&[
        "dataset",
        "export",
        "--server",
        &url,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("96 examples × 507 features"),
        "{}",
        text(&out)
    );

    let report = tmp.path().join("report");
    let out = lrid(&[
        "analyze",
        "--server",
        &url,
        "--name",
        "e2e",
        "--out",
        report.to_str().unwrap(),
        "--splits",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(
        printed.contains("random-forest") && printed.contains("linear-svm"),
        "{printed}"
    );
    assert!(printed.contains("index.html"), "{printed}");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["format"], 1);
    assert_eq!(results["corpus"]["examples"], 96);
    assert_eq!(results["corpus"]["rules"], serde_json::json!(RULES));
    let main = results["main"].as_array().unwrap();
    assert_eq!(main.len(), 8, "2 classifiers × 4 measures");
    for m in main {
        assert_eq!(m["splits"].as_array().unwrap().len(), 3);
        assert_eq!(m["pairwise"].as_array().unwrap().len(), 6);
        let acc = m["accuracy"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{m}");
        if m["classifier"] == "random-forest" && m["measure"] == "all" {
            // The rules drift apart over the trajectory: well above chance (25 %).
            assert!(acc > 0.6, "random forest on all measures: {acc}");
        }
    }
    let factors: Vec<&str> = results["held_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["factor"].as_str().unwrap())
        .collect();
    // One task only: it cannot be held out.
    assert_eq!(factors, ["architecture", "curriculum"]);
    assert!(results["importances"]["impurity"].as_array().unwrap().len() == 27);
    assert!(
        !results["trajectory"]["subsampling"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(results["noise"].as_array().unwrap().len(), 1);
    // Early identification: runs held out by seed combination and by architecture, one
    // accuracy per prefix length, rising to the end (the synthetic rules drift apart).
    let curves = results["early"]["curves"].as_array().unwrap();
    let held: Vec<&str> = curves
        .iter()
        .map(|c| c["held_out"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["seeds", "architecture"]);
    for c in curves {
        let acc: Vec<f64> = c["accuracy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(acc.len(), 21);
        assert_eq!(c["runs"], 32, "every run is held out once: {c}");
        assert!(acc[20] > acc[0], "identification improves with points: {c}");
    }
    assert_eq!(
        results["failures"].as_array().unwrap().len(),
        0,
        "{results}"
    );
    // Each experiment's wall time, and the whole analysis lasted at least their sum.
    let timed = results["experiment_seconds"].as_object().unwrap();
    let names: Vec<&str> = timed.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["early", "held-out", "main", "noise", "trajectory"],
        "{results}"
    );
    let sum: f64 = timed.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(sum > 0.0 && sum <= results["seconds"].as_f64().unwrap() + 1e-6);
    assert!(
        printed.contains("main ") && printed.contains(" s, "),
        "{printed}"
    );

    // The page holds every figure inline, and each figure is a file too.
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    for figure in [
        "main_accuracy.svg",
        "confusion_random-forest_all.svg",
        "pairwise_random-forest.svg",
        "held_out.svg",
        "importances.svg",
        "permutation_importances.svg",
        "subsampling.svg",
        "thirds.svg",
        "time_averaged.svg",
        "noise.svg",
        "early.svg",
    ] {
        assert!(report.join(figure).exists(), "{figure} missing");
        assert!(html.contains(figure), "{figure} not in the page");
    }
    assert!(html.matches("<svg").count() >= 10);

    // The analyses table, queryable beside the data.
    let rows = daemon.sql(
        "SELECT experiment, count(*) AS n FROM analyses WHERE analysis = 'e2e' GROUP BY experiment ORDER BY experiment",
    );
    let experiments: Vec<&str> = rows
        .iter()
        .map(|r| r["experiment"].as_str().unwrap())
        .collect();
    assert_eq!(
        experiments,
        [
            "early",
            "held-out",
            "importances",
            "main",
            "main-pairwise",
            "noise",
            "trajectory"
        ]
    );
    let main_rows = daemon.sql(
        "SELECT count(*) AS n FROM analyses WHERE analysis = 'e2e' AND experiment = 'main' AND status = 'ok'",
    );
    assert_eq!(
        main_rows[0]["n"], 24,
        "2 classifiers × 4 measures × 3 splits"
    );

    // A classifier that is not built in, dropped into the running daemon, used at once.
    std::fs::copy(
        plugin_lib("lrid_classifier_knn"),
        tmp.path().join("plugins").join("knn.so"),
    )
    .unwrap();
    wait_for_plugin(&daemon, "knn");
    let knn_out = tmp.path().join("knn");
    let analyze_knn = || {
        lrid(&[
            "analyze",
            "--server",
            &url,
            "--name",
            "knn",
            "--classifiers",
            "knn",
            "--experiments",
            "main",
            "--splits",
            "2",
            "--out",
            knn_out.to_str().unwrap(),
        ])
    };
    let out = analyze_knn();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("knn"), "{}", text(&out));
    let n = daemon
        .sql("SELECT count(*) AS n FROM analyses WHERE analysis = 'knn' AND classifier = 'knn' AND experiment = 'main'");
    assert_eq!(n[0]["n"], 8, "4 measures × 2 splits");
    let all = daemon.sql("SELECT count(*) AS n FROM analyses WHERE analysis = 'knn'");
    assert_eq!(all[0]["n"], 56, "and 6 pairs × 4 measures × 2 splits");
    // Re-running an analysis of the same name replaces its rows.
    let out = analyze_knn();
    assert!(out.status.success(), "{}", text(&out));
    let n = daemon.sql("SELECT count(*) AS n FROM analyses WHERE analysis = 'knn'");
    assert_eq!(n[0]["n"], 56, "replaced, not added");
}

#[test]
fn bad_inputs_are_refused_with_one_clear_line_and_a_failing_classifier_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = daemon_with_corpus(tmp.path());
    let url = daemon.url();
    let bad_out = tmp.path().join("bad");
    let refused = |args: &[&str], expect: &[&str]| {
        let mut all = vec!["analyze", "--server", url.as_str(), "--splits", "2"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", bad_out.to_str().unwrap()]);
        let out = lrid(&all);
        let t = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {t}");
        let last = t.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{args:?}: {t}");
        for e in expect {
            assert!(last.contains(e), "{args:?}: expected '{e}' in: {last}");
        }
    };
    refused(
        &["--classifiers", "nope"],
        &["unknown classifier 'nope'", "linear-svm, random-forest"],
    );
    refused(
        &["--classifier-config", "random-forest={\"n_estimators\": "],
        &["random-forest", "not valid JSON"],
    );
    refused(&["--where", "task = "], &["--where", "not valid SQL"]);
    refused(
        &["--where", "learning_rule = 'sgdm'"],
        &["1 learning rule (sgdm)", "at least two"],
    );
    refused(
        &[
            "--where",
            "architecture = 'net-a' AND batch_size = 32 AND data_seed = 0",
        ],
        &["too few examples", "adam 3", "at least"],
    );
    refused(&["--experiments", "bogus"], &["unknown experiment 'bogus'"]);
    refused(&["--model", "ephys"], &["no examples", "'ephys'"]);

    // A classifier that panics (or errors) in fit: its results are failures with the reason,
    // the random forest's are complete, the command succeeds.
    std::fs::copy(
        plugin_lib("lrid_testing_failing_classifier"),
        tmp.path().join("plugins").join("failing.so"),
    )
    .unwrap();
    wait_for_plugin(&daemon, "testing-failing");
    let report = tmp.path().join("failing");
    let out = lrid(&[
        "analyze",
        "--server",
        &url,
        "--name",
        "failing",
        "--classifiers",
        "random-forest,testing-failing",
        "--experiments",
        "main",
        "--splits",
        "2",
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let failures = results["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 4, "one per measure: {failures:?}");
    for f in failures {
        assert_eq!(f["classifier"], "testing-failing");
        assert!(
            f["reason"]
                .as_str()
                .unwrap()
                .contains("panicked: deliberate panic in fit"),
            "{f}"
        );
    }
    assert_eq!(results["main"].as_array().unwrap().len(), 4);
    let failed = daemon.sql(
        "SELECT count(*) AS n FROM analyses WHERE analysis = 'failing' AND starts_with(status, 'failed: ')",
    );
    assert_eq!(failed[0]["n"], 4);
    // The daemon is still serving.
    assert_eq!(daemon.sql("SELECT count(*) AS n FROM runs")[0]["n"], 32);
}
