//! The store end to end on real files: ingest, SQL over tail and Parquet, checkpoint, replay.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type};
use lrid_protocol::{
    CloseRun, CompletePoint, Diagnostic, LayerInfo, OpenRun, PROTOCOL_VERSION, Position, RunLabels,
    SnapshotHeader, SnapshotMeasure,
};
use lrid_stats::{ActivationAccumulator, MeasurementModel, weight_statistics};
use lrid_store::{Error, IdentificationRow, ModelConfig, Store, StoreConfig};

fn layer(index: u32) -> LayerInfo {
    LayerInfo {
        index,
        name: format!("conv{index}"),
        position: Position::of(index as usize, 3),
        weight_shape: vec![4, 3, 3, 3],
        activation_shape: vec![4, 5, 5],
    }
}

fn header(
    run: &str,
    point: u32,
    index: u32,
    measure: SnapshotMeasure,
    examples: u64,
    batch: u32,
) -> SnapshotHeader {
    SnapshotHeader {
        protocol: PROTOCOL_VERSION,
        run_id: run.into(),
        point,
        layer: layer(index),
        measure,
        examples,
        batch,
    }
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn open(store: &Store, run: &str) {
    store
        .open_run(&OpenRun {
            protocol: PROTOCOL_VERSION,
            run_id: run.into(),
            labels: RunLabels {
                learning_rule: Some("sgdm".into()),
                batch_size: Some(128),
                ..RunLabels::default()
            },
        })
        .unwrap();
}

/// Records a full point: weights, two activation batches, gradavg for each layer.
fn record_point(store: &Store, run: &str, point: u32) {
    record_snapshots(store, run, point);
    let ack = store
        .complete_point(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: run.into(),
            point,
            step: Some(point as i64 * 100),
            diagnostics: Vec::new(),
        })
        .unwrap();
    assert_eq!(ack.rows as usize, 3 * store.model_names().len());
}

/// The snapshots of a full point (not completed).
fn record_snapshots(store: &Store, run: &str, point: u32) {
    for l in 0..3 {
        let w = values(108, point * 10 + l);
        store
            .record(&header(run, point, l, SnapshotMeasure::Weight, 0, 0), &w)
            .unwrap();
        let a = values(3 * 100, point + l);
        store
            .record(&header(run, point, l, SnapshotMeasure::Act, 3, 0), &a)
            .unwrap();
        let a2 = values(2 * 100, point + l + 7);
        store
            .record(&header(run, point, l, SnapshotMeasure::Act, 2, 1), &a2)
            .unwrap();
        store
            .record(
                &header(run, point, l, SnapshotMeasure::Gradavg, 5, 0),
                &[0.5f32, -1.0, 2.0, 0.0, 1.5],
            )
            .unwrap();
    }
}

async fn query(store: &Store, sql: &str) -> Vec<RecordBatch> {
    store
        .session()
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

async fn count(store: &Store, sql: &str) -> i64 {
    let b = query(store, sql).await;
    b[0].column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}

#[tokio::test]
async fn values_are_the_engine_s_and_survive_checkpoint_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    open(&store, "r1");
    for p in 0..3 {
        record_point(&store, "r1", p);
    }
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 9);

    // The stored values equal the engine's on the same tensors.
    let b = query(
        &store,
        "SELECT weightraw_median, actraw_norm, gradavgsq_id FROM observables WHERE point = 1 AND layer_index = 2",
    )
    .await;
    let w =
        weight_statistics(&values(108, 12), &[4, 3, 3, 3], &MeasurementModel::IDEAL, 0).unwrap();
    let mut acc = ActivationAccumulator::new(100, MeasurementModel::IDEAL, 0).unwrap();
    acc.push(&values(300, 3), 3).unwrap();
    acc.push(&values(200, 10), 2).unwrap();
    let a = acc.finish().unwrap();
    let col = |i: usize| b[0].column(i).as_primitive::<Float64Type>().value(0);
    assert_eq!(col(0), w.get_by_name("weightraw_median").unwrap());
    assert!((col(1) - a.get_by_name("actraw_norm").unwrap()).abs() < 1e-12);
    assert_eq!(col(2), (0.25 + 1.0 + 4.0 + 0.0 + 2.25) / 5.0);

    // Long form.
    assert_eq!(
        count(&store, "SELECT count(*) FROM trajectories").await,
        9 * 45
    );

    store.checkpoint().unwrap();
    assert_eq!(store.tail_rows(), 0);
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 9);
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("observables"))
        .unwrap()
        .collect();
    assert_eq!(parts.len(), 1);

    // More after the checkpoint: some in Parquet, some in the log only, one point pending.
    record_point(&store, "r1", 3);
    store
        .record(
            &header("r1", 4, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 1),
        )
        .unwrap();
    drop(store);

    let store = Store::open(config).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 12);
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs WHERE status = 'open'").await,
        1
    );
    assert_eq!(count(&store, "SELECT count(*) FROM layers").await, 3);
    // The pending point's weights survived the restart: a second copy is refused.
    let e = store
        .record(
            &header("r1", 4, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 1),
        )
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    // A completed point stays completed.
    let e = store
        .record(
            &header("r1", 2, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 1),
        )
        .unwrap_err();
    assert!(e.to_string().contains("already complete"), "{e}");
    store
        .complete_point(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: "r1".into(),
            point: 4,
            step: None,
            diagnostics: Vec::new(),
        })
        .unwrap();
    store.checkpoint().unwrap();
    store
        .close_run(&CloseRun {
            protocol: PROTOCOL_VERSION,
            run_id: "r1".into(),
        })
        .unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(StoreConfig::test_config(dir.path()))
        .await
        .unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 13);
    assert_eq!(
        count(&store, "SELECT count(*) FROM runs WHERE status = 'closed'").await,
        1
    );
    let b = query(
        &store,
        "SELECT DISTINCT point FROM observables ORDER BY point",
    )
    .await;
    let points: Vec<u32> = b
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<UInt32Type>().values().to_vec())
        .collect();
    assert_eq!(points, [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::test_config(dir.path()))
        .await
        .unwrap();
    let e = store
        .record(
            &header("nope", 0, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 0),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)) && e.to_string().contains("unknown run 'nope'"),
        "{e}"
    );
    open(&store, "r");
    let bad = |h: SnapshotHeader, v: Vec<f32>, expect: &str| {
        let e = store.record(&h, &v).unwrap_err();
        assert!(
            e.to_string().contains(expect),
            "{e} should mention {expect}"
        );
    };
    bad(
        header("r", 0, 0, SnapshotMeasure::Weight, 0, 0),
        values(100, 0),
        "announces 108 values",
    );
    bad(
        header("r", 0, 0, SnapshotMeasure::Act, 2, 0),
        values(100, 0),
        "2 examples × 100 units",
    );
    bad(
        header("r", 0, 0, SnapshotMeasure::Act, 0, 0),
        vec![],
        "examples must be at least 1",
    );
    let mut nan = values(108, 0);
    nan[3] = f32::NAN;
    bad(
        header("r", 0, 0, SnapshotMeasure::Weight, 0, 0),
        nan,
        "1 non-finite value(s) of 108",
    );
    let mut h = header("r", 0, 0, SnapshotMeasure::Weight, 0, 0);
    h.protocol = 99;
    bad(h, values(108, 0), "protocol version 99");
    let mut h = header("r", 0, 0, SnapshotMeasure::Weight, 0, 0);
    h.layer.weight_shape = vec![4, 0, 3];
    bad(h, vec![], "no empty one");
    // After all that, the first good snapshot is accepted: nothing was half-stored.
    store
        .record(
            &header("r", 0, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 0),
        )
        .unwrap();
    // A layer described differently is refused.
    let mut h = header("r", 0, 0, SnapshotMeasure::Act, 1, 0);
    h.layer.name = "other".into();
    bad(h, values(100, 0), "was described as");
    // Duplicate weights and a duplicate activation batch.
    bad(
        header("r", 0, 0, SnapshotMeasure::Weight, 0, 0),
        values(108, 0),
        "already recorded",
    );
    store
        .record(
            &header("r", 0, 0, SnapshotMeasure::Act, 1, 0),
            &values(100, 0),
        )
        .unwrap();
    bad(
        header("r", 0, 0, SnapshotMeasure::Act, 1, 0),
        values(100, 0),
        "batch 0 of act",
    );
    // Completing an empty point, completing twice, reopening with other labels.
    let complete = |p| {
        store.complete_point(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: "r".into(),
            point: p,
            step: None,
            diagnostics: Vec::new(),
        })
    };
    assert!(
        complete(7)
            .unwrap_err()
            .to_string()
            .contains("no snapshots")
    );
    assert_eq!(complete(0).unwrap().rows, 1);
    assert!(matches!(complete(0).unwrap_err(), Error::AlreadyExists(_)));
    let e = store
        .open_run(&OpenRun {
            protocol: PROTOCOL_VERSION,
            run_id: "r".into(),
            labels: RunLabels::default(),
        })
        .unwrap_err();
    assert!(e.to_string().contains("other labels"), "{e}");
    open(&store, "r"); // same labels: a retry, accepted
    let e = store
        .open_run(&OpenRun {
            protocol: PROTOCOL_VERSION,
            run_id: "bad id!".into(),
            labels: RunLabels::default(),
        })
        .unwrap_err();
    assert!(e.to_string().contains("invalid run id"), "{e}");
    store
        .close_run(&CloseRun {
            protocol: PROTOCOL_VERSION,
            run_id: "r".into(),
        })
        .unwrap();
    let e = store
        .record(
            &header("r", 1, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 0),
        )
        .unwrap_err();
    assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 1);
}

#[tokio::test]
async fn one_row_per_measurement_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::test_config(dir.path());
    config.models.push(ModelConfig {
        name: "ephys".into(),
        unit_fraction: Some(0.1),
        noise_std: 0.01,
        seed: 3,
    });
    let store: Arc<Store> = Store::open(config).await.unwrap();
    open(&store, "m");
    record_point(&store, "m", 0);
    let b = query(&store, "SELECT model, count(*), count(gradavgraw_id), count(actraw_mean) FROM observables GROUP BY model ORDER BY model").await;
    let models = b[0].column(0).as_string::<i32>();
    assert_eq!((models.value(0), models.value(1)), ("ephys", "ideal"));
    let n = |c: usize, r: usize| {
        b[0].column(c)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(r)
    };
    assert_eq!((n(1, 0), n(1, 1)), (3, 3));
    assert_eq!(
        n(2, 0),
        0,
        "gradavg is not observable from scalars under subsampling"
    );
    assert_eq!(n(2, 1), 3);
    assert_eq!(n(3, 0), 3);
}

fn diagnostic(layer_index: u32, name: &str, value: f64) -> Diagnostic {
    Diagnostic {
        layer_index,
        name: name.into(),
        value,
    }
}

/// Completes `point` of `run` with `diagnostics`.
fn complete_with(
    store: &Store,
    run: &str,
    point: u32,
    diagnostics: Vec<Diagnostic>,
) -> Result<u64, Error> {
    store
        .complete_point(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: run.into(),
            point,
            step: Some(point as i64 * 10),
            diagnostics,
        })
        .map(|a| a.rows)
}

/// The `diagnostics` table as (point, step, layer_index, layer_name, name, value) tuples.
async fn diagnostics(store: &Store) -> Vec<(u32, i64, u32, String, String, f64)> {
    let b = query(
        store,
        "SELECT point, step, layer_index, layer_name, name, value FROM diagnostics ORDER BY run_id, point, layer_index, name",
    )
    .await;
    let mut rows = Vec::new();
    for b in &b {
        for i in 0..b.num_rows() {
            rows.push((
                b.column(0).as_primitive::<UInt32Type>().value(i),
                b.column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(i),
                b.column(2).as_primitive::<UInt32Type>().value(i),
                b.column(3).as_string::<i32>().value(i).to_string(),
                b.column(4).as_string::<i32>().value(i).to_string(),
                b.column(5).as_primitive::<Float64Type>().value(i),
            ));
        }
    }
    rows
}

/// The diagnostics of point `p` in the test below: layers 0 and 2.
fn diagnostics_of(p: u32) -> Vec<Diagnostic> {
    vec![
        diagnostic(2, "w_change", 0.5 * p as f64),
        diagnostic(0, "angle_bw", 90.0 - p as f64),
        diagnostic(0, "b_change", 0.0),
    ]
}

fn expected_rows(points: std::ops::Range<u32>) -> Vec<(u32, i64, u32, String, String, f64)> {
    let mut rows = Vec::new();
    for p in points {
        let step = p as i64 * 10;
        rows.push((
            p,
            step,
            0,
            "conv0".into(),
            "angle_bw".into(),
            90.0 - p as f64,
        ));
        rows.push((p, step, 0, "conv0".into(), "b_change".into(), 0.0));
        rows.push((
            p,
            step,
            2,
            "conv2".into(),
            "w_change".into(),
            0.5 * p as f64,
        ));
    }
    rows
}

#[tokio::test]
async fn diagnostics_are_queryable_at_completion_and_survive_replay_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    assert!(diagnostics(&store).await.is_empty());
    open(&store, "d");
    record_snapshots(&store, "d", 0);
    assert_eq!(complete_with(&store, "d", 0, diagnostics_of(0)).unwrap(), 3);
    // Queryable the moment the point completes; layer names come from the run's layers.
    assert_eq!(diagnostics(&store).await, expected_rows(0..1));
    assert_eq!(store.tail_rows(), 3 + 3);
    // A point without diagnostics adds none.
    record_point(&store, "d", 1);
    assert_eq!(diagnostics(&store).await, expected_rows(0..1));

    // A restart replays them from the log.
    drop(store);
    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(diagnostics(&store).await, expected_rows(0..1));

    // A checkpoint writes them to Parquet, listed in the manifest, and queries still see them.
    store.checkpoint().unwrap();
    assert_eq!(store.tail_rows(), 0);
    assert_eq!(diagnostics(&store).await, expected_rows(0..1));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("diagnostics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["diagnostics"], serde_json::json!(files));

    // More after the checkpoint (in the log only), then a restart: Parquet and log together.
    record_snapshots(&store, "d", 2);
    complete_with(&store, "d", 2, diagnostics_of(2)).unwrap();
    let mut expected = expected_rows(0..1);
    expected.extend(expected_rows(2..3));
    assert_eq!(diagnostics(&store).await, expected);
    drop(store);
    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(diagnostics(&store).await, expected);
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(config).await.unwrap();
    assert_eq!(diagnostics(&store).await, expected);
    assert_eq!(
        std::fs::read_dir(dir.path().join("diagnostics"))
            .unwrap()
            .count(),
        2
    );
    // The file is plain Parquet of the table's schema, sorted by run, layer, point, name.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM diagnostics WHERE name = 'angle_bw' AND layer_name = 'conv0'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn bad_diagnostics_are_refused_with_a_message_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::test_config(dir.path()))
        .await
        .unwrap();
    open(&store, "b");
    record_snapshots(&store, "b", 0);
    let long = "x".repeat(65);
    let cases = [
        (
            vec![diagnostic(7, "angle_bw", 1.0)],
            "diagnostic \"angle_bw\" of layer 7 at point 0 of run 'b': the run has no layer 7 (layers with snapshots: 0, 1, 2)",
        ),
        (vec![diagnostic(0, "", 1.0)], "the name is empty"),
        (
            vec![diagnostic(0, &long, 1.0)],
            "the name has 65 characters; at most 64 are allowed",
        ),
        (
            vec![diagnostic(1, "w_change", f64::NAN)],
            "diagnostic \"w_change\" of layer 1 at point 0 of run 'b': the value is NaN; it must be finite",
        ),
        (
            vec![diagnostic(1, "w_change", f64::INFINITY)],
            "the value is inf",
        ),
        (
            vec![
                diagnostic(1, "w_change", 1.0),
                diagnostic(2, "w_change", 1.0),
                diagnostic(1, "w_change", 2.0),
            ],
            "diagnostic \"w_change\" of layer 1 at point 0 of run 'b': given twice",
        ),
    ];
    for (bad, message) in cases {
        let e = complete_with(&store, "b", 0, bad).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains(message), "{e} should say {message}");
    }
    // Nothing was stored: the point still completes, and 64 characters are fine.
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 0);
    assert!(diagnostics(&store).await.is_empty());
    let name = "y".repeat(64);
    complete_with(
        &store,
        "b",
        0,
        vec![diagnostic(1, "w_change", 1.0), diagnostic(1, &name, -2.0)],
    )
    .unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM diagnostics").await, 2);
}

#[tokio::test]
async fn a_log_and_a_manifest_written_before_diagnostics_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    open(&store, "old");
    record_point(&store, "old", 0);
    store.checkpoint().unwrap();
    record_snapshots(&store, "old", 1);
    drop(store);
    // An older lrid completed point 1: its record has no `diagnostics` field.
    let wal = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let json = br#"{"type":"complete_point","run_id":"old","point":1,"step":7}"#;
    let mut bytes = std::fs::read(last).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("diagnostics"));
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(json).to_le_bytes());
    bytes.extend_from_slice(json);
    std::fs::write(last, bytes).unwrap();
    // And its manifest did not list diagnostics files.
    let path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest
        .as_object_mut()
        .unwrap()
        .remove("diagnostics")
        .unwrap();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 6);
    assert_eq!(
        count(&store, "SELECT count(*) FROM observables WHERE step = 7").await,
        3
    );
    assert!(diagnostics(&store).await.is_empty());
    // Diagnostics work from there on, through a checkpoint and a restart.
    record_snapshots(&store, "old", 2);
    complete_with(&store, "old", 2, vec![diagnostic(1, "w_change", 0.25)]).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let store = Store::open(config).await.unwrap();
    assert_eq!(
        diagnostics(&store).await,
        vec![(2, 20, 1, "conv1".to_string(), "w_change".to_string(), 0.25)]
    );
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 9);
}

fn identification(run: &str, point: u32, layer: Option<u32>, p_sgdm: f64) -> IdentificationRow {
    IdentificationRow {
        run_id: run.into(),
        point,
        points_seen: point + 1,
        identifier: "id".into(),
        layer_index: layer,
        layer_name: layer.map(|l| format!("conv{l}")),
        probabilities: vec![
            ("sgdm".into(), p_sgdm),
            ("feedback-alignment".into(), 1.0 - p_sgdm),
        ],
        status: "ok".into(),
        note: None,
        at_ms: 1_700_000_000_000 + i64::from(point),
    }
}

/// (point, layer, predicted, p_sgdm, p_feedback_alignment) of the `identifications` view.
async fn identifications(store: &Store) -> Vec<(u32, Option<u32>, String, f64, f64)> {
    let mut out = Vec::new();
    for b in query(
        store,
        "SELECT point, layer_index, predicted, p_sgdm, p_feedback_alignment FROM identifications ORDER BY point, layer_index NULLS LAST",
    )
    .await
    {
        let point = b.column(0).as_primitive::<UInt32Type>();
        let layer = b.column(1).as_primitive::<UInt32Type>();
        let predicted = b.column(2).as_string::<i32>();
        let sgdm = b.column(3).as_primitive::<Float64Type>();
        let fa = b.column(4).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                point.value(i),
                layer.is_valid(i).then(|| layer.value(i)),
                predicted.value(i).to_string(),
                sgdm.value(i),
                fa.value(i),
            ));
        }
    }
    out
}

#[tokio::test]
async fn identifications_are_durable_queryable_with_a_column_per_rule_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    open(&store, "r");
    // The view exists before any identifier, without rule columns.
    assert_eq!(
        count(&store, "SELECT count(*) FROM identifications").await,
        0
    );
    let rules = ["sgdm".to_string(), "feedback-alignment".to_string()]
        .into_iter()
        .collect();
    store.add_identification_rules(&rules).await.unwrap();
    store
        .put_identifications(vec![
            identification("r", 0, Some(0), 0.75),
            identification("r", 0, None, 0.25),
        ])
        .unwrap();
    let want = vec![
        (0, Some(0), "sgdm".to_string(), 0.75, 0.25),
        (0, None, "feedback-alignment".to_string(), 0.25, 0.75),
    ];
    assert_eq!(identifications(&store).await, want, "queryable at once");

    // Replayed from the log after a restart, then moved to Parquet by a checkpoint.
    drop(store);
    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(identifications(&store).await, want, "replayed");
    store.checkpoint().unwrap();
    assert!(
        std::fs::read_dir(dir.path().join("identifications"))
            .unwrap()
            .count()
            == 1
    );
    // The view's rule columns come back from the Parquet files alone.
    drop(store);
    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(identifications(&store).await, want, "from Parquet");
    store
        .put_identifications(vec![identification("r", 1, None, 0.9)])
        .unwrap();
    drop(store);
    let store = Store::open(config).await.unwrap();
    let mut more = want.clone();
    more.push((1, None, "sgdm".to_string(), 0.9, 1.0 - 0.9));
    assert_eq!(
        identifications(&store).await,
        more,
        "Parquet and log together"
    );

    // Bad rows are refused whole, naming the fault; nothing is stored.
    let e = store
        .put_identifications(vec![
            identification("r", 2, None, 0.5),
            identification("nope", 2, None, 0.5),
        ])
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)) && e.to_string().contains("unknown run 'nope'"),
        "{e}"
    );
    let e = store
        .put_identifications(vec![identification("r", 2, None, 1.5)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in [0, 1]"), "{e}");
    assert_eq!(identifications(&store).await, more);
}

#[tokio::test]
async fn the_manifest_carries_its_format_and_a_newer_one_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::test_config(dir.path()))
        .await
        .unwrap();
    store
        .open_run(&OpenRun {
            protocol: PROTOCOL_VERSION,
            run_id: "r".into(),
            labels: RunLabels::default(),
        })
        .unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let path = dir.path().join("manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(manifest["format"], 2);
    // A manifest from before the format had a number is format 1.
    let mut older = manifest.clone();
    older.as_object_mut().unwrap().remove("format");
    std::fs::write(&path, older.to_string()).unwrap();
    drop(
        Store::open(StoreConfig::test_config(dir.path()))
            .await
            .unwrap(),
    );
    // A newer one (with a field this version does not know) is refused, and left as it is.
    let mut newer = manifest.clone();
    newer["format"] = 3.into();
    newer["compacted"] = serde_json::json!([]);
    let text = newer.to_string();
    std::fs::write(&path, &text).unwrap();
    let e = Store::open(StoreConfig::test_config(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NewerFormat(_)), "{e}");
    assert!(
        e.to_string()
            .contains("is manifest format 3; this lrid (0.1.0) reads formats 1 to 2"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_run_beside_ingest_and_queries_see_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    open(&store, "r1");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpoints = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.checkpoint().unwrap();
                n += 1;
            }
            n
        })
    };
    // Every acknowledged point is queryable at once, never twice, whatever the checkpoint is
    // doing; a pending point's snapshots survive the checkpoints that run meanwhile.
    for p in 0..40 {
        record_snapshots(&store, "r1", p);
        store
            .complete_point(&CompletePoint {
                protocol: PROTOCOL_VERSION,
                run_id: "r1".into(),
                point: p,
                step: None,
                diagnostics: Vec::new(),
            })
            .unwrap();
        let rows = count(&store, "SELECT count(*) FROM observables").await;
        assert_eq!(rows, 3 * (p as i64 + 1), "after point {p}");
        let distinct = count(
            &store,
            "SELECT count(*) FROM (SELECT DISTINCT point, layer_index FROM observables)",
        )
        .await;
        assert_eq!(distinct, rows);
    }
    store
        .record(
            &header("r1", 40, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 1),
        )
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = checkpoints.join().unwrap();
    assert!(n >= 2, "{n} checkpoints ran");
    drop(store);
    let store = Store::open(config).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 120);
    let e = store
        .record(
            &header("r1", 40, 0, SnapshotMeasure::Weight, 0, 0),
            &values(108, 1),
        )
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
}

#[tokio::test]
async fn a_checkpoint_that_cannot_write_loses_nothing_and_the_next_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::test_config(dir.path());
    let store = Store::open(config.clone()).await.unwrap();
    open(&store, "r1");
    for p in 0..3 {
        record_point(&store, "r1", p);
    }
    store.checkpoint().unwrap();
    for p in 3..6 {
        record_point(&store, "r1", p);
    }
    store
        .record(
            &header("r1", 6, 1, SnapshotMeasure::Weight, 0, 0),
            &values(108, 6),
        )
        .unwrap();
    // The `runs` folder becomes a file: the checkpoint fails after writing the observables.
    let runs = dir.path().join("runs");
    std::fs::rename(&runs, dir.path().join("runs.aside")).unwrap();
    std::fs::write(&runs, b"in the way").unwrap();
    let e = store.checkpoint().unwrap_err();
    assert!(e.to_string().contains("runs"), "{e}");
    assert_eq!(store.tail_rows(), 9, "the rows went back to memory");
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 18);
    // More ingest after the failure goes on; then the process ends (as after a crash).
    record_point(&store, "r1", 7);
    drop(store);
    std::fs::remove_file(&runs).unwrap();
    std::fs::rename(dir.path().join("runs.aside"), &runs).unwrap();

    let store = Store::open(config.clone()).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 21);
    // The half-written checkpoint's Parquet file was an orphan: removed.
    assert_eq!(
        std::fs::read_dir(dir.path().join("observables"))
            .unwrap()
            .count(),
        1
    );
    let e = store
        .record(
            &header("r1", 6, 1, SnapshotMeasure::Weight, 0, 0),
            &values(108, 6),
        )
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    store.checkpoint().unwrap();
    assert_eq!(store.tail_rows(), 0);
    drop(store);
    let store = Store::open(config).await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 21);
    let images: Vec<String> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".image"))
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
}

/// Every observable row of runs other than `late`, sorted, as text: to compare the table before
/// and after a change of files.
async fn all_rows(store: &Store) -> Vec<String> {
    let batches = query(
        store,
        "SELECT * FROM observables WHERE run_id <> 'late' ORDER BY run_id, point, layer_index, model",
    )
    .await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_beside_ingest_and_queries_changes_no_row_and_merges_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::test_config(dir.path());
    config.compact_min_files = 4;
    let store = Store::open(config.clone()).await.unwrap();
    for r in 0..6 {
        let run = format!("r{r}");
        open(&store, &run);
        for p in 0..3 {
            record_point(&store, &run, p);
        }
        store.checkpoint().unwrap();
    }
    let parquet = |sub: &str| {
        std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".parquet")
            })
            .count()
    };
    assert_eq!(parquet("observables"), 6);
    assert!(store.needs_compaction());
    let before = all_rows(&store).await;
    assert_eq!(count(&store, "SELECT count(*) FROM observables").await, 54);

    // Compaction in a thread, while a run is recorded and queries run: every query sees every
    // acknowledged row exactly once.
    let compaction = {
        let store = store.clone();
        std::thread::spawn(move || store.compact().unwrap())
    };
    open(&store, "late");
    for p in 0..5 {
        record_point(&store, "late", p);
        let n = count(&store, "SELECT count(*) FROM observables").await;
        assert_eq!(n, 54 + 3 * (p as i64 + 1));
    }
    let report = compaction.join().unwrap();
    assert_eq!(report.merged, [("observables", 6)]);
    assert_eq!((report.written, report.rows), (1, 54));
    assert!(!store.needs_compaction());
    assert_eq!(
        all_rows(&store).await,
        before,
        "the same rows, the same values"
    );
    // One compacted file (the replaced ones stay a while for running queries).
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["observables"].as_array().unwrap().len(), 1);
    assert_eq!(parquet("observables"), 7);
    store.checkpoint().unwrap();
    drop(store);

    // After a restart: the same rows, and the replaced files are gone.
    let store = Store::open(config).await.unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM observables").await,
        54 + 15
    );
    assert_eq!(all_rows(&store).await, before);
    assert_eq!(parquet("observables"), 2);
    // The compacted file is sorted by run, point and layer.
    let b = query(
        &store,
        "SELECT count(*) FROM observables WHERE run_id = 'r3' AND point = 1",
    )
    .await;
    assert_eq!(
        b[0].column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        3
    );
}
