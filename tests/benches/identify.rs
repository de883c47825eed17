//! Live identification benchmarks (`make bench`, or `cargo bench -p lrid-e2e --bench identify`):
//!
//! 1. Latency: from a point's completion (the SDK's acknowledgement) until its identification
//!    rows are queryable (polled in a loop through an in-process Flight SQL client, so the
//!    figure includes up to one query's round trip), for runs of 21 observed layers (ResNet-18's
//!    count) with two identifiers active; p50 and p99.
//! 2. Ingest throughput (the daemon benchmark's ResNet-like layer, GB/s) with two identifiers
//!    active against none, in the same run: the ratio.

use std::process::Command;
use std::time::{Duration, Instant};

use lrid_e2e::{Daemon, SyntheticRun, lrid_bin, plugin_lib, synthetic_runs};
use lrid_protocol::RunLabels;
use lrid_sdk::{Recorder, RecorderConfig};

const RULES: [&str; 4] = [
    "adam",
    "feedback-alignment",
    "information-alignment",
    "sgdm",
];
const POINTS: u32 = 21;
const LAYERS: u32 = 21;

fn daemon(root: &std::path::Path) -> Daemon {
    let plugins = root.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        plugin_lib("lrid_classifier_random_forest"),
        plugins.join("random-forest.so"),
    )
    .unwrap();
    Daemon::start(
        &root.join("data"),
        &["--plugins-dir", plugins.to_str().unwrap()],
    )
}

/// A corpus of 21-layer runs and two identifiers fitted on it.
fn with_identifiers(daemon: &Daemon) {
    let url = daemon.url();
    let runs: Vec<SyntheticRun> = synthetic_runs("corpus", &RULES, &["net-a", "net-b"], &[0, 1])
        .into_iter()
        .map(|r| SyntheticRun {
            layers: LAYERS,
            ..r
        })
        .collect();
    std::thread::scope(|s| {
        for chunk in runs.chunks(runs.len().div_ceil(2)) {
            let url = url.clone();
            s.spawn(move || {
                for r in chunk {
                    r.record(&url, 0..POINTS, POINTS);
                }
            });
        }
    });
    for (name, config) in [
        (
            "forest-sqrt",
            r#"{"max_features": "sqrt", "n_estimators": 100}"#,
        ),
        (
            "forest-log2",
            r#"{"max_features": "log2", "n_estimators": 100}"#,
        ),
    ] {
        let out = Command::new(lrid_bin())
            .args([
                "identify",
                "fit",
                "--name",
                name,
                "--classifier-config",
                config,
                "--server",
                &url,
                "--where",
                "starts_with(run_id, 'corpus/')",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Rows of `query` through an in-process Flight SQL client.
async fn count_rows(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    query: &str,
) -> usize {
    use futures::TryStreamExt;
    let info = client.execute(query.to_string(), None).await.unwrap();
    let mut n = 0;
    for ep in info.endpoint {
        let batches: Vec<arrow::array::RecordBatch> = client
            .do_get(ep.ticket.unwrap())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        n += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    n
}

fn latency() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(dir.path());
    with_identifiers(&daemon);
    let url = daemon.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt.block_on(lrid_e2e::flight_sql_client(&url));
    let mut samples = Vec::new();
    let mut query_ms = Vec::new();
    for (i, rule) in RULES.iter().enumerate() {
        let run = SyntheticRun {
            run_id: format!("live/{rule}"),
            rule_index: i,
            rule: rule.to_string(),
            arch: "net-a".into(),
            batch: 32,
            data_seed: 9,
            layers: LAYERS,
        };
        for p in 0..POINTS {
            // `record` returns once the point is acknowledged (completed, durable).
            run.record(&url, p..p + 1, POINTS);
            let done = Instant::now();
            let query = format!(
                "SELECT point FROM identification_rows WHERE run_id = '{}' AND point = {p} AND layer_index IS NULL",
                run.run_id
            );
            loop {
                let q = Instant::now();
                let n = rt.block_on(count_rows(&mut client, &query));
                query_ms.push(q.elapsed().as_secs_f64() * 1e3);
                if n == 2 {
                    break;
                }
                assert!(
                    done.elapsed() < Duration::from_secs(30),
                    "no rows for {query}"
                );
            }
            samples.push(done.elapsed().as_secs_f64() * 1e3);
        }
    }
    samples.sort_by(f64::total_cmp);
    query_ms.sort_by(f64::total_cmp);
    println!(
        "identification latency, {LAYERS}-layer runs, 2 identifiers (random forests, 100 trees): point acknowledged → its rows queryable (polled with Flight SQL): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} points (one poll: p50 {:.1} ms)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        samples.len(),
        percentile(&query_ms, 0.5)
    );
}

/// GB/s of one recorder sending `points` points of a ResNet-like layer.
fn ingest_gbps(daemon: &Daemon, run: &str, points: u32) -> f64 {
    let (layer, weights, acts) = lrid_e2e::resnet_like_layer();
    let labels = RunLabels {
        learning_rule: Some("sgdm".into()),
        architecture: Some("bench".into()),
        ..RunLabels::default()
    };
    let mut config = RecorderConfig::new(daemon.url());
    config.buffer_bytes = 64 << 20;
    config.pool_bytes = 64 << 20;
    let rec = Recorder::open(config, run, labels).unwrap();
    let start = Instant::now();
    for p in 0..points {
        loop {
            match rec.record_weights(p, &layer, &weights) {
                Err(lrid_sdk::Error::BufferFull { .. }) => {
                    rec.wait_for_room(weights.len() * 4).unwrap()
                }
                r => break r.unwrap(),
            }
        }
        loop {
            match rec.record_activations(p, &layer, 0, 64, &acts) {
                Err(lrid_sdk::Error::BufferFull { .. }) => {
                    rec.wait_for_room(acts.len() * 4).unwrap()
                }
                r => break r.unwrap(),
            }
        }
        rec.complete_point(p, None).unwrap();
    }
    rec.close().unwrap();
    let bytes = (weights.len() + acts.len()) as f64 * 4.0 * f64::from(points);
    bytes / 1e9 / start.elapsed().as_secs_f64()
}

fn throughput() {
    let runs = 3;
    let measure = |with: bool| -> Vec<f64> {
        let dir = tempfile::tempdir().unwrap();
        let daemon = daemon(dir.path());
        if with {
            with_identifiers(&daemon);
        }
        (0..runs)
            .map(|i| ingest_gbps(&daemon, &format!("ingest-{i}"), POINTS))
            .collect()
    };
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let none = measure(false);
    let two = measure(true);
    let (m0, m2) = (median(&none), median(&two));
    println!(
        "ingest with live identification: 1 recorder × {POINTS} points × 15.9 MB (ResNet-like layer), {runs} runs each, median GB/s: no identifiers {m0:.2} ({none:.2?}), two identifiers {m2:.2} ({two:.2?}); ratio {:.3}",
        m2 / m0
    );
}

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if run("latency") {
        latency();
    }
    if run("throughput") {
        throughput();
    }
}
