//! The SDK's example program (`sdk/examples/record_training.rs`) trains a small tch CNN while it
//! records into a real `lrid serve`; the rows must all be there, labelled, and physically sound.

use std::process::Command;

use lrid_e2e::{Daemon, example_bin};

#[test]
fn the_example_records_a_tch_model_while_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let out = Command::new(example_bin("record_training"))
        .args(["--server", &daemon.url(), "--run-id", "cnn-1"])
        .args(["--steps", "60", "--points", "4", "--seed", "7"])
        .output()
        .expect("run the example");
    assert!(
        out.status.success(),
        "the example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 points × 3 layers recorded"));

    let runs = daemon.sql(
        "SELECT learning_rule, architecture, batch_size, status FROM runs WHERE run_id = 'cnn-1'",
    );
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["learning_rule"], "sgdm");
    assert_eq!(runs[0]["architecture"], "tiny-cnn");
    assert_eq!(runs[0]["batch_size"], 32);
    assert_eq!(runs[0]["status"], "closed");

    let layers = daemon.sql(
        "SELECT layer_name, position, weight_shape, activation_shape FROM layers WHERE run_id = 'cnn-1' ORDER BY layer_index",
    );
    let shapes: Vec<_> = layers
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l["layer_name"].as_str().unwrap(),
                l["position"].as_str().unwrap(),
                l["weight_shape"].as_str().unwrap(),
                l["activation_shape"].as_str().unwrap()
            )
        })
        .collect();
    // Kernels HWIO / [in, out], activations HWC: the statistics' layouts, not tch's.
    assert_eq!(
        shapes,
        [
            "conv1 early [3, 3, 1, 8] [16, 16, 8]",
            "conv2 middle [3, 3, 8, 16] [8, 8, 16]",
            "fc deep [256, 4] [4]"
        ]
    );

    let rows = daemon.sql(
        "SELECT point, step, layer_name, weightraw_norm, actraw_mean, actsq_kurtosis, gradavgraw_id FROM observables WHERE run_id = 'cnn-1' ORDER BY point, layer_index",
    );
    assert_eq!(rows.len(), 4 * 3);
    let steps: Vec<_> = rows
        .iter()
        .step_by(3)
        .map(|r| r["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [0, 20, 40, 60]);
    for r in &rows {
        for c in [
            "weightraw_norm",
            "actraw_mean",
            "actsq_kurtosis",
            "gradavgraw_id",
        ] {
            assert!(r[c].as_f64().is_some_and(f64::is_finite), "{c} in {r:?}");
        }
    }
    // Training moves the conv kernels.
    let norm =
        |point: usize, layer: usize| rows[point * 3 + layer]["weightraw_norm"].as_f64().unwrap();
    assert!((norm(3, 0) - norm(0, 0)).abs() > 1e-3);
    // The dense layer's activity change is Σ W / |O|; softmax cross-entropy gradients sum to zero
    // over the outputs, so SGD keeps Σ W — and this observable — constant while W changes.
    let fc: Vec<f64> = rows
        .iter()
        .filter(|r| r["layer_name"] == "fc")
        .map(|r| r["gradavgraw_id"].as_f64().unwrap())
        .collect();
    for g in &fc {
        assert!((g - fc[0]).abs() <= 1e-4 * fc[0].abs().max(1e-3), "{fc:?}");
    }
    assert!((norm(3, 2) - norm(0, 2)).abs() > 1e-3);
}
