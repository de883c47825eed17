//! `lrid serve` end to end: 8 concurrent recorders, queries through `lrid sql` and a Flight SQL
//! client, kill -9 and restart, every bad input of the protocol, the bearer token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Float32Array, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, FlightData, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use lrid_e2e::Daemon;
use lrid_protocol::{
    LayerInfo, OpenRun, PROTOCOL_VERSION, Position, RunLabels, SNAPSHOT_TYPE_URL, SnapshotHeader,
    SnapshotMeasure,
};
use lrid_sdk::{Recorder, RecorderConfig};
use lrid_stats::{ActivationAccumulator, GradAvgAccumulator, MeasurementModel, weight_statistics};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

const LAYERS: u32 = 3;
const POINTS: u32 = 3;

fn layer(i: u32) -> LayerInfo {
    LayerInfo {
        index: i,
        name: format!("conv{i}"),
        position: Position::of(i as usize, LAYERS as usize),
        weight_shape: vec![8, 4, 3, 3],
        activation_shape: vec![8, 6, 6],
    }
}

/// Deterministic values of a tensor, different for every (client, point, layer, kind).
fn tensor(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn seed(client: u32, point: u32, layer: u32, kind: u32) -> u64 {
    u64::from(client) << 32 | u64::from(point) << 16 | u64::from(layer) << 4 | u64::from(kind)
}

/// Records one run through the SDK: every layer, every point.
fn record_run(url: &str, client: u32, flush_each_point: bool) -> Recorder {
    let labels = RunLabels {
        learning_rule: Some(
            ["sgdm", "adam", "feedback", "information"][client as usize % 4].into(),
        ),
        architecture: Some("knet4".into()),
        batch_size: Some(128),
        ..RunLabels::default()
    };
    let rec = Recorder::open(
        RecorderConfig::new(url),
        &format!("client-{client}"),
        labels,
    )
    .unwrap();
    for p in 0..POINTS {
        for l in 0..LAYERS {
            let info = layer(l);
            rec.record_weights(p, &info, &tensor(8 * 4 * 9, seed(client, p, l, 0)))
                .unwrap();
            for batch in 0..2 {
                let examples = 4 + batch as usize;
                rec.record_activations(
                    p,
                    &info,
                    batch,
                    examples,
                    &tensor(examples * 288, seed(client, p, l, 1 + batch)),
                )
                .unwrap();
            }
            rec.record_activity_change(p, &info, 0, &tensor(9, seed(client, p, l, 5)))
                .unwrap();
        }
        rec.complete_point(p, Some(i64::from(p) * 10)).unwrap();
        if flush_each_point {
            rec.flush().unwrap();
        }
    }
    rec
}

/// What lrid-stats gives for the same tensors.
fn expected(client: u32, point: u32, l: u32) -> (f64, f64, f64) {
    let w = weight_statistics(
        &tensor(288, seed(client, point, l, 0)),
        &[8, 4, 3, 3],
        &MeasurementModel::IDEAL,
        0,
    )
    .unwrap();
    let mut a = ActivationAccumulator::new(288, MeasurementModel::IDEAL, 0).unwrap();
    for batch in 0..2u32 {
        let examples = 4 + batch as usize;
        a.push(
            &tensor(examples * 288, seed(client, point, l, 1 + batch)),
            examples,
        )
        .unwrap();
    }
    let mut g = GradAvgAccumulator::new();
    g.push(&tensor(9, seed(client, point, l, 5))).unwrap();
    (
        w.get_by_name("weightabs_median").unwrap(),
        a.finish().unwrap().get_by_name("actraw_norm").unwrap(),
        g.finish().unwrap().get_by_name("gradavgsq_id").unwrap(),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

async fn flight_sql(url: &str) -> FlightSqlServiceClient<Channel> {
    lrid_e2e::flight_sql_client(url).await
}

async fn collect(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let stream = client.do_get(ep.ticket.unwrap()).await.unwrap();
        out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    out
}

#[test]
fn eight_concurrent_clients_then_sql_and_flight_sql() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let url = daemon.url();
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || record_run(&url, c, false).close().unwrap())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    let rows = daemon.sql("SELECT count(*) AS n FROM observables");
    assert_eq!(rows[0]["n"], 8 * POINTS * LAYERS);
    let runs = daemon.sql("SELECT run_id, learning_rule, status FROM runs ORDER BY run_id");
    assert_eq!(runs.len(), 8);
    assert!(runs.iter().all(|r| r["status"] == "closed"));
    assert_eq!(runs[1]["learning_rule"], "adam");
    assert_eq!(
        daemon.sql("SELECT count(*) AS n FROM layers")[0]["n"],
        8 * LAYERS
    );

    // Values equal lrid-stats on the same tensors, through `lrid sql`.
    for c in [0u32, 5] {
        for p in [0u32, 2] {
            let got = daemon.sql(&format!(
                "SELECT weightabs_median AS w, actraw_norm AS a, gradavgsq_id AS g FROM observables \
                 WHERE run_id = 'client-{c}' AND point = {p} AND layer_index = 1"
            ));
            let (w, a, g) = expected(c, p, 1);
            let f = |k: &str| got[0][k].as_f64().unwrap();
            assert!(
                close(f("w"), w) && close(f("a"), a) && close(f("g"), g),
                "client {c} point {p}: {got:?}"
            );
        }
    }
    // The long-form view.
    let t = daemon.sql(
        "SELECT point, value FROM trajectories WHERE run_id = 'client-3' AND layer_index = 2 \
         AND statistic = 'weightabs_median' ORDER BY point",
    );
    assert_eq!(t.len(), POINTS as usize);
    assert!(close(t[2]["value"].as_f64().unwrap(), expected(3, 2, 2).0));

    // The same through a Flight SQL client: a statement, a prepared statement with a
    // parameter, and the metadata calls ADBC and JDBC make.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = flight_sql(&url).await;
        let info = client.execute("SELECT run_id, point, weightabs_median FROM observables WHERE layer_index = 0 ORDER BY run_id, point".into(), None).await.unwrap();
        let batches = collect(&mut client, info).await;
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), (8 * POINTS) as usize);

        let mut stmt = client
            .prepare("SELECT weightabs_median FROM observables WHERE run_id = $1 AND point = 1 AND layer_index = 2".into(), None)
            .await
            .unwrap();
        let params = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, false)])),
            vec![Arc::new(arrow::array::StringArray::from(vec!["client-6"]))],
        )
        .unwrap();
        stmt.set_parameters(params).unwrap();
        let info = stmt.execute().await.unwrap();
        let batches = collect(&mut client, info).await;
        let v = batches[0].column(0).as_primitive::<Float64Type>().value(0);
        assert!(close(v, expected(6, 1, 2).0));
        stmt.close().await.unwrap();

        let info = client.get_catalogs().await.unwrap();
        let catalogs = collect(&mut client, info).await;
        assert!(catalogs.iter().any(|b| b.num_rows() > 0));
        let tables = client
            .get_tables(arrow_flight::sql::CommandGetTables {
                include_schema: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let tables = collect(&mut client, tables).await;
        let names: Vec<String> = tables
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("table_name").unwrap().as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.value(i).to_string())
            })
            .collect();
        for t in ["runs", "layers", "observables", "diagnostics", "trajectories"] {
            assert!(names.iter().any(|n| n == t), "{t} in {names:?}");
        }
        let info = client.get_sql_info(vec![arrow_flight::sql::SqlInfo::FlightSqlServerName]).await.unwrap();
        assert_eq!(collect(&mut client, info).await[0].num_rows(), 1);
        let schemas = client.get_db_schemas(Default::default()).await.unwrap();
        assert!(!collect(&mut client, schemas).await.is_empty());
        let e = client.execute("SELECT nope FROM observables".into(), None).await.unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    });
}

#[test]
fn kill_9_during_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    // Acknowledged: every point of client 0 (flush waits for each acknowledgement).
    record_run(&daemon.url(), 0, true).close().unwrap();
    // In flight: client 1 streams while the daemon dies.
    let url = daemon.url();
    let writer = std::thread::spawn(move || {
        let mut config = RecorderConfig::new(url);
        config.give_up_after = Duration::from_secs(1);
        let rec = Recorder::open(config, "client-1", RunLabels::default()).unwrap();
        let mut acked = 0;
        for p in 0..50u32 {
            for l in 0..LAYERS {
                rec.record_weights(p, &layer(l), &tensor(288, seed(1, p, l, 0)))
                    .unwrap();
            }
            if rec.complete_point(p, None).is_err() || rec.flush().is_err() {
                break;
            }
            acked = p + 1;
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    let acked = writer.join().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let n = |q: &str| daemon.sql(q)[0]["n"].as_u64().unwrap();
    assert_eq!(
        n("SELECT count(*) AS n FROM observables WHERE run_id = 'client-0'"),
        u64::from(POINTS * LAYERS)
    );
    let stored = n("SELECT count(DISTINCT point) AS n FROM observables WHERE run_id = 'client-1'");
    assert!(
        stored >= u64::from(acked),
        "{acked} points acknowledged, {stored} stored"
    );
    let (w, _, _) = expected(0, 2, 1);
    let got = daemon.sql("SELECT weightabs_median AS w FROM observables WHERE run_id = 'client-0' AND point = 2 AND layer_index = 1");
    assert!(close(got[0]["w"].as_f64().unwrap(), w));
}

fn snapshot_header(run: &str, point: u32, values: u64) -> SnapshotHeader {
    SnapshotHeader {
        protocol: PROTOCOL_VERSION,
        run_id: run.into(),
        point,
        layer: LayerInfo {
            index: 0,
            name: "fc".into(),
            position: Position::Deep,
            weight_shape: vec![values],
            activation_shape: vec![1],
        },
        measure: SnapshotMeasure::Weight,
        examples: 0,
        batch: 0,
    }
}

fn descriptor(header: &SnapshotHeader) -> FlightDescriptor {
    let any = arrow_flight::sql::Any {
        type_url: SNAPSHOT_TYPE_URL.into(),
        value: serde_json::to_vec(header).unwrap().into(),
    };
    FlightDescriptor::new_cmd(any.encode_to_vec())
}

/// A DoPut of `batches` under `descriptor`; the first response or the status.
async fn put(
    client: &mut FlightServiceClient<Channel>,
    descriptor: FlightDescriptor,
    batches: Vec<RecordBatch>,
) -> Result<(), tonic::Status> {
    let schema = batches[0].schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map(|r| r.unwrap());
    let mut acks = client.do_put(stream).await?.into_inner();
    acks.try_next()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no ack"))?;
    Ok(())
}

fn f32_batch(values: Vec<f32>) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Float32,
            false,
        )])),
        vec![Arc::new(Float32Array::from(values))],
    )
    .unwrap()
}

async fn action(
    client: &mut FlightServiceClient<Channel>,
    kind: &str,
    body: serde_json::Value,
) -> Result<(), tonic::Status> {
    let a = Action {
        r#type: kind.into(),
        body: serde_json::to_vec(&body).unwrap().into(),
    };
    let mut s = client.do_action(a).await?.into_inner();
    while s.message().await?.is_some() {}
    Ok(())
}

#[test]
fn every_bad_input_gets_a_precise_status_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(daemon.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightServiceClient::new(channel).max_encoding_message_size(256 << 20);
        let expect = |r: Result<(), tonic::Status>, code: Code, text: &str| {
            let s = r.expect_err(text);
            assert_eq!(s.code(), code, "{text}: {s:?}");
            assert!(
                s.message().contains(text),
                "{:?} should mention {text:?}",
                s.message()
            );
        };

        // Unknown run.
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("ghost", 0, 4)),
                vec![f32_batch(vec![1.0; 4])],
            )
            .await,
            Code::NotFound,
            "unknown run 'ghost'",
        );
        action(
            &mut client,
            "lrid.open_run",
            serde_json::to_value(OpenRun {
                protocol: PROTOCOL_VERSION,
                run_id: "r".into(),
                labels: RunLabels::default(),
            })
            .unwrap(),
        )
        .await
        .unwrap();
        // Wrong schema: two columns, a wrong name.
        let two = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("value", DataType::Float32, false),
                Field::new("x", DataType::Float32, false),
            ])),
            vec![
                Arc::new(Float32Array::from(vec![1.0; 4])),
                Arc::new(Float32Array::from(vec![1.0; 4])),
            ],
        )
        .unwrap();
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![two],
            )
            .await,
            Code::InvalidArgument,
            "one column named 'value'",
        );
        // Wrong dtype.
        let ints = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Int32,
                false,
            )])),
            vec![Arc::new(Int32Array::from(vec![1; 4]))],
        )
        .unwrap();
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![ints],
            )
            .await,
            Code::InvalidArgument,
            "Float32 or Float64",
        );
        // Length mismatch, both ways.
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![f32_batch(vec![1.0; 3])],
            )
            .await,
            Code::InvalidArgument,
            "announces 4 values",
        );
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![f32_batch(vec![1.0; 5])],
            )
            .await,
            Code::InvalidArgument,
            "more values arrived",
        );
        // Non-finite values.
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![f32_batch(vec![1.0, f32::NAN, 2.0, f32::INFINITY])],
            )
            .await,
            Code::InvalidArgument,
            "2 non-finite value(s) of 4",
        );
        // Garbage bytes as the descriptor, and an unknown command type.
        expect(
            put(
                &mut client,
                FlightDescriptor::new_cmd(vec![0xff, 0x13, 0x37, 0x00, 0x42]),
                vec![f32_batch(vec![1.0])],
            )
            .await,
            Code::InvalidArgument,
            "",
        );
        let other = arrow_flight::sql::Any {
            type_url: "type.example/Other".into(),
            value: vec![1, 2].into(),
        };
        expect(
            put(
                &mut client,
                FlightDescriptor::new_cmd(other.encode_to_vec()),
                vec![f32_batch(vec![1.0])],
            )
            .await,
            Code::InvalidArgument,
            "is not supported",
        );
        let bad_json = arrow_flight::sql::Any {
            type_url: SNAPSHOT_TYPE_URL.into(),
            value: b"{not json".to_vec().into(),
        };
        expect(
            put(
                &mut client,
                FlightDescriptor::new_cmd(bad_json.encode_to_vec()),
                vec![f32_batch(vec![1.0])],
            )
            .await,
            Code::InvalidArgument,
            "not valid JSON",
        );
        // Oversized message: one 80 MiB batch in one message.
        let mut big = snapshot_header("r", 0, 20 << 20);
        big.layer.name = "big".into();
        let data = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(usize::MAX)
            .with_flight_descriptor(Some(descriptor(&big)))
            .build(futures::stream::iter([Ok(f32_batch(vec![0.5; 20 << 20]))]))
            .map(|r| r.unwrap());
        let r: Result<(), tonic::Status> = async {
            let mut acks = client.do_put(data).await?.into_inner();
            acks.try_next().await?;
            Ok(())
        }
        .await;
        let s = r.unwrap_err();
        assert!(
            matches!(
                s.code(),
                Code::ResourceExhausted
                    | Code::OutOfRange
                    | Code::Internal
                    | Code::Unknown
                    | Code::Cancelled
            ),
            "{s:?}"
        );
        // A client that disconnects mid-stream: descriptor and one batch, then gone.
        {
            let channel = tonic::transport::Endpoint::from_shared(daemon.url())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut c2 = FlightServiceClient::new(channel);
            let mut h = snapshot_header("r", 0, 8);
            h.layer.name = "fc".into();
            let first: Vec<FlightData> = FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(descriptor(&h)))
                .build(futures::stream::iter([Ok(f32_batch(vec![1.0; 4]))]))
                .try_collect()
                .await
                .unwrap();
            let stream = futures::stream::iter(first).chain(futures::stream::pending());
            let call = tokio::spawn(async move { c2.do_put(stream).await.map(|_| ()) });
            tokio::time::sleep(Duration::from_millis(200)).await;
            call.abort();
            let _ = call.await;
        }
        // Unknown action, bad action body, protocol version.
        expect(
            action(&mut client, "lrid.nope", serde_json::json!({})).await,
            Code::InvalidArgument,
            "unknown action 'lrid.nope'",
        );
        expect(
            action(
                &mut client,
                "lrid.complete_point",
                serde_json::json!({"run_id": "r"}),
            )
            .await,
            Code::InvalidArgument,
            "not valid",
        );
        let mut v2 = snapshot_header("r", 0, 4);
        v2.protocol = 2;
        expect(
            put(&mut client, descriptor(&v2), vec![f32_batch(vec![1.0; 4])]).await,
            Code::InvalidArgument,
            "protocol version 2",
        );

        // After all that: the daemon serves, nothing was half-stored, a good snapshot works.
        put(
            &mut client,
            descriptor(&snapshot_header("r", 0, 4)),
            vec![f32_batch(vec![1.0, 2.0]), f32_batch(vec![3.0, 4.0])],
        )
        .await
        .unwrap();
        action(
            &mut client,
            "lrid.complete_point",
            serde_json::json!({"protocol": 1, "run_id": "r", "point": 0}),
        )
        .await
        .unwrap();
        // Duplicate point.
        expect(
            put(
                &mut client,
                descriptor(&snapshot_header("r", 0, 4)),
                vec![f32_batch(vec![1.0; 4])],
            )
            .await,
            Code::AlreadyExists,
            "already complete",
        );
        expect(
            action(
                &mut client,
                "lrid.complete_point",
                serde_json::json!({"protocol": 1, "run_id": "r", "point": 0}),
            )
            .await,
            Code::AlreadyExists,
            "already complete",
        );
    });
    let rows = daemon.sql("SELECT point, weightraw_mean AS m FROM observables WHERE run_id = 'r'");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["m"].as_f64().unwrap(), 2.5);
}

#[test]
fn a_token_is_required_when_set_and_shutdown_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &["--token", "s3cret"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = flight_sql(&daemon.url()).await;
        let e = client.execute("SELECT 1".into(), None).await.unwrap_err();
        assert!(
            e.to_string().contains("Unauthenticated") || e.to_string().contains("Bearer"),
            "{e}"
        );
        client.set_header("authorization", "Bearer wrong");
        assert!(client.execute("SELECT 1".into(), None).await.is_err());
        client.set_header("authorization", "Bearer s3cret");
        let info = client
            .execute("SELECT 1 AS one".into(), None)
            .await
            .unwrap();
        assert_eq!(collect(&mut client, info).await[0].num_rows(), 1);
    });
    let mut config = RecorderConfig::new(daemon.url());
    config.token = Some("s3cret".into());
    let rec = Recorder::open(config, "tok", RunLabels::default()).unwrap();
    rec.record_weights(0, &layer(0), &tensor(288, 1)).unwrap();
    rec.complete_point(0, None).unwrap();
    rec.flush().unwrap();
    // SIGTERM: a clean exit, and the rows are in Parquet for any tool.
    assert!(daemon.stop().success());
    let parts: Vec<_> = std::fs::read_dir(dir.path().join("observables"))
        .unwrap()
        .collect();
    assert_eq!(parts.len(), 1);
}

#[test]
fn a_non_loopback_listen_needs_a_token_from_a_file_or_the_environment_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "0.0.0.0:0", "--data-dir", data];
        args.extend_from_slice(extra);
        let mut cmd = lrid_e2e::lrid_command(&args);
        cmd.env_remove("LRID_TOKEN");
        cmd
    };
    // No token: refused at start, saying why and what to do.
    let out = serve(&[]).output().unwrap();
    assert!(!out.status.success());
    let said = lrid_e2e::text(&out);
    assert!(
        said.contains("refusing to listen on 0.0.0.0:0 without a token")
            && said.contains("LRID_TOKEN")
            && said.contains("--insecure"),
        "{said}"
    );
    // An empty token file is refused too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = serve(&["--token-file", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(lrid_e2e::text(&out).contains("is empty"));
    // A token file: it serves, and calls need the token.
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let mut daemon = Daemon::start_at(
        std::path::Path::new(data),
        "0.0.0.0:0",
        &["--token-file", file.to_str().unwrap()],
    );
    let port = daemon.url().rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let without = lrid_e2e::lrid_command(&["sql", "--server", &url, "SELECT 1"])
        .env_remove("LRID_TOKEN")
        .output()
        .unwrap();
    assert!(!without.status.success());
    let said = lrid_e2e::text(&without);
    assert!(
        said.contains("needs 'authorization: Bearer <token>' (Unauthenticated)"),
        "{said}"
    );
    let with = lrid_e2e::lrid_command(&["sql", "--server", &url, "SELECT 1 AS one"])
        .env("LRID_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(with.status.success(), "{}", lrid_e2e::text(&with));
    assert!(daemon.stop().success());
    // The token from the environment.
    let mut daemon = {
        // LRID_TOKEN set for the child only.
        let mut child = serve(&[])
            .env("LRID_TOKEN", "env-token")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("lrid serve listening on 0.0.0.0:"),
            "{line}"
        );
        child
    };
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // --insecure: it serves without a token.
    let mut daemon = Daemon::start_at(std::path::Path::new(data), "0.0.0.0:0", &["--insecure"]);
    assert!(daemon.stop().success());
}

/// The code and text of a recorder's error, for the refusals the daemon sends back.
fn rejected(e: lrid_sdk::Error) -> (Code, String, String) {
    match e {
        lrid_sdk::Error::Rejected {
            what,
            code,
            message,
        } => (code, what, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn the_recorder_reports_each_snapshot_the_daemon_refuses_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--token", "s3cret"]);
    // A wrong token: the opening and the snapshot are refused (before the daemon reads the
    // snapshot's values), each reported once, in order.
    let mut config = RecorderConfig::new(daemon.url());
    config.token = Some("wrong".into());
    let rec = Recorder::open(config.clone(), "denied", RunLabels::default()).unwrap();
    rec.record_weights(0, &layer(0), &tensor(288, 1)).unwrap();
    let (code, what, _) = rejected(rec.flush().unwrap_err());
    assert_eq!(
        (code, what.as_str()),
        (Code::Unauthenticated, "opening run 'denied'")
    );
    let (code, what, message) = rejected(rec.flush().unwrap_err());
    assert_eq!(code, Code::Unauthenticated, "{what}: {message}");
    assert!(what.contains("weight snapshot of layer 0"), "{what}");
    rec.flush().unwrap();

    // The right token: a snapshot with non-finite values and a repeated one are refused, with
    // the daemon's reasons; the good snapshots around them are stored.
    config.token = Some("s3cret".into());
    let rec = Recorder::open(config, "mixed", RunLabels::default()).unwrap();
    let mut bad = tensor(288, 2);
    bad[5] = f32::NAN;
    rec.record_weights(0, &layer(0), &bad).unwrap();
    let (code, _, message) = rejected(rec.flush().unwrap_err());
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("non-finite"), "{message}");
    let good = tensor(288, 3);
    rec.record_weights(0, &layer(0), &good).unwrap();
    rec.record_weights(0, &layer(1), &tensor(288, 4)).unwrap();
    rec.flush().unwrap();
    rec.record_weights(0, &layer(1), &tensor(288, 4)).unwrap();
    let (code, what, message) = rejected(rec.flush().unwrap_err());
    assert_eq!(code, Code::AlreadyExists, "{what}: {message}");
    assert!(what.contains("layer 1"), "{what}");
    rec.complete_point(0, None).unwrap();
    rec.close().unwrap();
    let rows = daemon.sql(
        "SELECT layer_index AS l, weightraw_mean AS m FROM observables \
         WHERE run_id = 'mixed' ORDER BY layer_index",
    );
    assert_eq!(rows.len(), 2);
    let want = weight_statistics(&good, &[8, 4, 3, 3], &MeasurementModel::IDEAL, 0)
        .unwrap()
        .get_by_name("weightraw_mean")
        .unwrap();
    assert_eq!(rows[0]["l"].as_i64(), Some(0));
    assert!(close(rows[0]["m"].as_f64().unwrap(), want), "{rows:?}");
}

#[test]
fn a_snapshot_of_several_chunks_is_joined_in_order() {
    // 2.5 chunks of weights and 1.5 chunks of activations whose examples straddle the chunk
    // boundary: a dropped or doubled chunk changes the weight quantiles, a reordered one the
    // per-example activation statistics.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let weights = tensor(lrid_protocol::CHUNK_VALUES * 5 / 2, 77);
    let big = LayerInfo {
        index: 0,
        name: "big".into(),
        position: Position::Early,
        weight_shape: vec![weights.len() as u64],
        activation_shape: vec![lrid_protocol::CHUNK_VALUES as u64 * 3 / 4],
    };
    let acts = tensor(lrid_protocol::CHUNK_VALUES * 3 / 2, 78);
    let rec = Recorder::open(
        RecorderConfig::new(daemon.url()),
        "big",
        RunLabels::default(),
    )
    .unwrap();
    rec.record_weights(0, &big, &weights).unwrap();
    rec.record_activations(0, &big, 0, 2, &acts).unwrap();
    rec.complete_point(0, None).unwrap();
    rec.close().unwrap();
    let w = weight_statistics(&weights, &[weights.len()], &MeasurementModel::IDEAL, 0).unwrap();
    let mut a = ActivationAccumulator::new(
        lrid_protocol::CHUNK_VALUES * 3 / 4,
        MeasurementModel::IDEAL,
        0,
    )
    .unwrap();
    a.push(&acts, 2).unwrap();
    let a = a.finish().unwrap();
    let rows = daemon.sql(
        "SELECT weightraw_median, weightraw_thirdquartile, actraw_median, actraw_skew FROM observables WHERE run_id = 'big'",
    );
    assert_eq!(rows.len(), 1);
    for (column, want) in [
        (
            "weightraw_median",
            w.get_by_name("weightraw_median").unwrap(),
        ),
        (
            "weightraw_thirdquartile",
            w.get_by_name("weightraw_thirdquartile").unwrap(),
        ),
        ("actraw_median", a.get_by_name("actraw_median").unwrap()),
        ("actraw_skew", a.get_by_name("actraw_skew").unwrap()),
    ] {
        let got = rows[0][column].as_f64().unwrap();
        assert!(close(got, want), "{column}: {got} vs {want}");
    }
}

/// The daemon is down when the job starts recording: the recorder buffers up to its bound,
/// refuses what does not fit at once (nothing is dropped silently), says it is retrying, and
/// delivers everything once the daemon comes up; `wait_for_room` waits for the buffer to drain.
#[test]
fn a_recorder_outlasts_a_daemon_that_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let info = layer(0);
    let n = 8 * 4 * 9;
    let mut config = RecorderConfig::new(format!("http://127.0.0.1:{port}"));
    config.buffer_bytes = 3 * n * 4;
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    let rec = Recorder::open(config, "late", RunLabels::default()).unwrap();
    for p in 0..3 {
        rec.record_weights(p, &info, &tensor(n, seed(9, p, 0, 0)))
            .unwrap();
    }
    let started = Instant::now();
    let full = rec.record_weights(3, &info, &tensor(n, seed(9, 3, 0, 0)));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "BufferFull must not block"
    );
    match full {
        Err(lrid_sdk::Error::BufferFull {
            needed,
            used,
            capacity,
        }) => assert_eq!((needed, used, capacity), (n * 4, 3 * n * 4, 3 * n * 4)),
        other => panic!("expected BufferFull, got {other:?}"),
    }
    assert!(full.unwrap_err().to_string().contains("buffer is full"));
    // More than the whole buffer can never fit.
    assert!(matches!(
        rec.wait_for_room(4 * n * 4),
        Err(lrid_sdk::Error::BufferFull { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(rec.status(), lrid_sdk::SenderStatus::Retrying { .. }) {
        assert!(
            Instant::now() < deadline,
            "the recorder never said it retries"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon comes up on the address the recorder keeps trying.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_at(dir.path(), &format!("127.0.0.1:{port}"), &[]);
    rec.wait_for_room(n * 4).unwrap();
    rec.record_weights(3, &info, &tensor(n, seed(9, 3, 0, 0)))
        .unwrap();
    for p in 0..4 {
        rec.complete_point(p, None).unwrap();
    }
    rec.close().unwrap();
    assert_eq!(rec.status(), lrid_sdk::SenderStatus::Connected);
    let rows = daemon.sql(
        "SELECT point, weightraw_mean AS m FROM observables WHERE run_id = 'late' ORDER BY point",
    );
    assert_eq!(rows.len(), 4);
    for (p, row) in rows.iter().enumerate() {
        let w = weight_statistics(
            &tensor(n, seed(9, p as u32, 0, 0)),
            &info
                .weight_shape
                .iter()
                .map(|&d| d as usize)
                .collect::<Vec<_>>(),
            &MeasurementModel::IDEAL,
            0,
        )
        .unwrap();
        let want = w.get_by_name("weightraw_mean").unwrap();
        assert!(close(row["m"].as_f64().unwrap(), want), "point {p}");
    }
}
