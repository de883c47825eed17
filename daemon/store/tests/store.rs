//! The store end to end on real files: ingest, SQL over tail and Parquet, checkpoint, replay.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt32Type};
use lrid_protocol::{
    CloseRun, CompletePoint, LayerInfo, OpenRun, PROTOCOL_VERSION, Position, RunLabels,
    SnapshotHeader, SnapshotMeasure,
};
use lrid_stats::{ActivationAccumulator, MeasurementModel, weight_statistics};
use lrid_store::{Error, ModelConfig, Store, StoreConfig};

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
    let ack = store
        .complete_point(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: run.into(),
            point,
            step: Some(point as i64 * 100),
        })
        .unwrap();
    assert_eq!(ack.rows as usize, 3 * store.model_names().len());
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
