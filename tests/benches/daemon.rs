//! Daemon benchmarks (`make bench`, or `cargo bench -p lrid-e2e --bench daemon`):
//!
//! 1. Ingest: f32 snapshots from SDK recorders to stored rows, over loopback, in GB/s; and the
//!    same over TLS beside plain HTTP/2 in the same run (`-- tls` alone); and until the rows are
//!    in Parquet (the daemon's final checkpoint) in the data folder beside an S3 bucket (moto's
//!    S3 server on loopback) in the same run (`-- s3` alone).
//! 2. Query: p50 latency of a trajectory query over ≥ 1 million observable rows, through Flight
//!    SQL against `lrid serve`, beside DuckDB (the venv's, from PyPI) running the same query on
//!    the same Parquet files in the same run.
//! 3. Acknowledgement latency while checkpoints run: p50/p99 of one small snapshot's round trip
//!    (recorded, acknowledged) beside a heavy ingest load, with checkpoints every 2 s vs with
//!    none; the difference is what a checkpoint adds to the p99 (target ≤ 5 ms). With
//!    `LRID_BEFORE_BIN` set to another build of `lrid`, that build is measured in the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lrid_e2e::{Daemon, S3Server};
use lrid_protocol::{
    CompletePoint, LayerInfo, OpenRun, PROTOCOL_VERSION, Position, RunLabels, SnapshotHeader,
    SnapshotMeasure,
};
use lrid_sdk::{Recorder, RecorderConfig};
use lrid_store::{Store, StoreConfig};

/// Where an ingest run sends its rows, and until when it is timed.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// Plain HTTP/2, until acknowledged (durable in the log, queryable).
    Plain,
    /// TLS (a certificate made for the run; the recorders trust its CA), until acknowledged.
    Tls,
    /// Until the rows are in Parquet in the data folder (the daemon's final checkpoint).
    Folder,
    /// Until the rows are in Parquet in the bucket (`--store s3://…`, the final checkpoint).
    S3(&'a S3Server),
}

impl Target<'_> {
    fn label(&self) -> &'static str {
        match self {
            Target::Plain => "",
            Target::Tls => " over TLS",
            Target::Folder => " into the data folder's Parquet",
            Target::S3(_) => " into S3 (moto) Parquet",
        }
    }
}

/// One ingest run: GB/s, and CPU seconds per GB of the recording process and of the daemon.
fn ingest(
    threads: usize,
    points: u32,
    in_flight: usize,
    buffer_mb: usize,
    target: Target<'_>,
) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let tls = matches!(target, Target::Tls);
    let pki = tls.then(|| lrid_e2e::make_pki(dir.path(), "bench"));
    let data = dir.path().join("data");
    let mut daemon = match (&pki, target) {
        (Some(pki), _) => Daemon::start(
            &data,
            &[
                "--tls-cert",
                pki.cert.to_str().unwrap(),
                "--tls-key",
                pki.key.to_str().unwrap(),
            ],
        ),
        (None, Target::S3(s3)) => {
            let prefix = format!("s3://lrid-bench/{}", std::process::id());
            // One node per run (the temporary folder's name, without its leading dot).
            let node = dir
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches('.')
                .to_string();
            Daemon::start_with_env(&data, &["--store", &prefix, "--node-id", &node], &s3.env())
        }
        (None, _) => Daemon::start(&data, &[]),
    };
    let (layer, weights, acts) = lrid_e2e::resnet_like_layer();
    let bytes_per_point = (weights.len() + acts.len()) * 4;
    let cpu_before = (
        cpu_seconds("self"),
        cpu_seconds(&daemon.child.id().to_string()),
    );
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (layer, weights, acts, url) = (&layer, &weights, &acts, daemon.url());
            let ca = pki.as_ref().map(|p| p.ca.clone());
            s.spawn(move || {
                let mut config = RecorderConfig::new(url);
                config.ca_file = ca;
                config.buffer_bytes = buffer_mb << 20;
                config.pool_bytes = config.buffer_bytes.min(256 << 20);
                config.snapshots_in_flight = in_flight;
                let rec =
                    Recorder::open(config, &format!("bench-{t}"), RunLabels::default()).unwrap();
                // What a job that would rather wait than skip does on a full buffer.
                let wait =
                    |r: lrid_sdk::Result<()>,
                     bytes: usize,
                     again: &dyn Fn() -> lrid_sdk::Result<()>| match r {
                        Err(lrid_sdk::Error::BufferFull { .. }) => {
                            rec.wait_for_room(bytes).unwrap();
                            again().unwrap();
                        }
                        r => r.unwrap(),
                    };
                for p in 0..points {
                    let w = || rec.record_weights(p, layer, weights);
                    wait(w(), weights.len() * 4, &w);
                    let a = || rec.record_activations(p, layer, 0, 64, acts);
                    wait(a(), acts.len() * 4, &a);
                    rec.complete_point(p, None).unwrap();
                }
                rec.close().unwrap();
            });
        }
    });
    let total = (bytes_per_point * threads * points as usize) as f64;
    let rows = if tls {
        // `Daemon::sql` speaks plain HTTP/2; the recorders' acknowledgements were checked.
        (threads * points as usize) as u64
    } else {
        daemon.sql("SELECT count(*) AS n FROM observables")[0]["n"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows, (threads * points as usize) as u64);
    // The daemon's CPU up to the acknowledgements (its process ends below in some targets).
    let daemon_cpu = cpu_seconds(&daemon.child.id().to_string()) - cpu_before.1;
    if matches!(target, Target::Folder | Target::S3(_)) {
        // SIGTERM: the final checkpoint writes every row to Parquet before the daemon exits.
        assert!(
            daemon.stop().success(),
            "the daemon's final checkpoint failed"
        );
    }
    let secs = start.elapsed().as_secs_f64();
    let client_cpu = cpu_seconds("self") - cpu_before.0;
    let gb = total / 1e9;
    (gb / secs, client_cpu / gb, daemon_cpu / gb)
}

/// Runs one configuration `runs` times; prints each run; returns the median GB/s.
fn ingest_runs(
    runs: usize,
    threads: usize,
    points: u32,
    in_flight: usize,
    buffer_mb: usize,
    target: Target<'_>,
) -> f64 {
    let bytes_per_point = (512 * 512 * 9 + 64 * 512 * 49) * 4;
    let gb = (bytes_per_point * threads * points as usize) as f64 / 1e9;
    println!(
        "ingest{}: {threads} recorder(s) × {points} points × {:.1} MB, {in_flight} snapshot(s) in flight, {buffer_mb} MB buffer each = {gb:.2} GB per run (SDK → acknowledged, durable, queryable rows)",
        target.label(),
        bytes_per_point as f64 / 1e6,
    );
    let mut results: Vec<(f64, f64, f64)> = (0..runs)
        .map(|_| {
            let r = ingest(threads, points, in_flight, buffer_mb, target);
            println!(
                "        {:.2} GB/s   CPU per GB: SDK (the recording process) {:.2} s + daemon {:.2} s = {:.2} core-s/GB",
                r.0,
                r.1,
                r.2,
                r.1 + r.2
            );
            r
        })
        .collect();
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (min, median, max) = (results[0].0, results[runs / 2].0, results[runs - 1].0);
    println!("        → median {median:.2} GB/s (min {min:.2}, max {max:.2} of {runs} runs)");
    median
}

/// User + system CPU seconds of process `pid` ("self" for this one) so far, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces) closing with ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name), in clock ticks.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// Writes `rows` observable rows straight through the store (weights only, small kernels).
fn build_store(dir: &std::path::Path, runs: u32, layers: u32, points: u32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = StoreConfig::test_config(dir);
    config.sync = false; // a throwaway data set
    config.flush_rows = 1 << 30;
    let store = rt.block_on(Store::open(config)).unwrap();
    let w: Vec<f32> = (0..64).map(|i| i as f32 / 64.0 - 0.5).collect();
    for r in 0..runs {
        let run_id = format!("run-{r:04}");
        store
            .open_run(&OpenRun {
                protocol: PROTOCOL_VERSION,
                run_id: run_id.clone(),
                labels: RunLabels::default(),
            })
            .unwrap();
        for p in 0..points {
            for l in 0..layers {
                let header = SnapshotHeader {
                    protocol: PROTOCOL_VERSION,
                    run_id: run_id.clone(),
                    point: p,
                    layer: LayerInfo {
                        index: l,
                        name: format!("layer{l}"),
                        position: Position::of(l as usize, layers as usize),
                        weight_shape: vec![8, 8],
                        activation_shape: vec![8],
                    },
                    measure: SnapshotMeasure::Weight,
                    examples: 0,
                    batch: 0,
                };
                let mut v = w.clone();
                v[0] = (r * 1000 + p * 10 + l) as f32 * 1e-6;
                store.record(&header, &v).unwrap();
            }
            store
                .complete_point(&CompletePoint {
                    protocol: PROTOCOL_VERSION,
                    run_id: run_id.clone(),
                    point: p,
                    step: None,
                    diagnostics: Vec::new(),
                })
                .unwrap();
        }
        // A checkpoint every 10 runs: 100 files, as a daemon that ran for a while leaves them.
        if r % 10 == 9 {
            store.checkpoint().unwrap();
        }
    }
    store.checkpoint().unwrap();
}

fn query_latency() {
    let (runs, layers, points) = (1000, 48, 21);
    let rows = runs * layers * points;
    // LRID_BENCH_DIR keeps the data set between runs (built once when the folder is absent).
    let tmp;
    let dir = match std::env::var_os("LRID_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().to_path_buf()
        }
    };
    if !dir.join("manifest.json").exists() {
        let t = Instant::now();
        build_store(&dir, runs, layers, points);
        println!(
            "query: built {rows} observable rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let files = |dir: &std::path::Path| {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        manifest["observables"].as_array().unwrap().len()
    };
    let before = files(&dir);
    let (lrid_before, duck_before) = query_latencies(&dir, points);
    // Compacted (what the daemon does in the background once 8 small files have piled up).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(Store::open(StoreConfig::test_config(&dir)))
        .unwrap();
    let t = Instant::now();
    let report = store.compact().unwrap();
    let compact_secs = t.elapsed().as_secs_f64();
    drop(store);
    let (lrid_after, duck_after) = query_latencies(&dir, points);
    for (when, n, lrid, duck) in [
        ("before compaction", before, lrid_before, duck_before),
        ("after compaction", files(&dir), lrid_after, duck_after),
    ] {
        println!(
            "query: trajectory of one layer of one run over {rows} rows ({runs} runs) in {n} file(s), {when}: lrid (Flight SQL, loopback) p50 {:.2} ms, DuckDB (in-process, same Parquet files) p50 {:.2} ms, ratio {:.2}× (target ≤ 1.0× after compaction)",
            lrid * 1e3,
            duck * 1e3,
            lrid / duck
        );
    }
    println!(
        "query: compaction merged {:?} into {} file(s) ({} rows) in {compact_secs:.1} s",
        report.merged, report.written, report.rows
    );
}

/// p50 (s) of the trajectory query through `lrid serve` and through DuckDB on `dir`'s files.
fn query_latencies(dir: &std::path::Path, points: u32) -> (f64, f64) {
    let daemon = Daemon::start(dir, &[]);
    let query = "SELECT point, weightraw_median FROM observables WHERE run_id = 'run-0421' AND layer_index = 7 ORDER BY point";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut times = rt.block_on(async {
        let mut client = lrid_e2e::flight_sql_client(&daemon.url()).await;
        let mut times = Vec::new();
        for i in 0..32 {
            let start = Instant::now();
            let info = client.execute(query.into(), None).await.unwrap();
            let mut n = 0;
            for ep in info.endpoint {
                let batches: Vec<_> = client
                    .do_get(ep.ticket.unwrap())
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                n += batches
                    .iter()
                    .map(|b: &arrow::array::RecordBatch| b.num_rows())
                    .sum::<usize>();
            }
            assert_eq!(n, points as usize);
            if i >= 2 {
                times.push(start.elapsed());
            }
        }
        times
    });
    times.sort();
    let lrid_p50 = times[times.len() / 2].as_secs_f64();
    let python = std::env::var("LRID_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_string()
    });
    // DuckDB reads exactly the files the manifest names.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<String> = manifest["observables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("'{}/observables/{}'", dir.display(), f.as_str().unwrap()))
        .collect();
    let script = format!(
        "import duckdb, time, statistics\n\
         con = duckdb.connect()\n\
         q = \"\"\"{}\"\"\".replace('FROM observables', \"FROM read_parquet([{}])\")\n\
         ts = []\n\
         for i in range(32):\n    t = time.perf_counter(); r = con.execute(q).fetchall(); ts.append(time.perf_counter() - t)\n    assert len(r) == {points}\n\
         print(statistics.median(ts[2:]))\n",
        query,
        files.join(", ")
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "DuckDB (pip install duckdb into the venv; make bench does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (lrid_p50, duck)
}

/// p50 and p99 (ms) of a probe's snapshot acknowledgements while `writers` recorders load the
/// daemon `bin`, which checkpoints every `checkpoint_ms`.
fn ack_latency(
    bin: &std::path::Path,
    checkpoint_ms: u64,
    seconds: f64,
) -> (f64, f64, f64, usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lrid.toml");
    std::fs::write(
        &config,
        // Eight measurement models: every snapshot gives eight rows, so the rows a checkpoint
        // writes pile up quickly (tens of thousands a second).
        format!(
            "[server]\ncheckpoint_interval_ms = {checkpoint_ms}\n{}",
            (0..8)
                .map(|i| format!(
                    "[[store.models]]\nname = \"m{i}\"\nnoise_std = {}\n",
                    i as f64 * 0.1
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_installed(
        bin,
        dir.path(),
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let layer = |index: u32| LayerInfo {
        index,
        name: format!("conv{index}"),
        position: Position::Middle,
        weight_shape: vec![3, 3, 8, 8],
        activation_shape: vec![4, 4, 8],
    };
    let weights: Vec<f32> = (0..576).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut latencies = std::thread::scope(|s| {
        // The load: points of 200 small layers each, as fast as the daemon takes them.
        for w in 0..2 {
            let (url, stop, weights) = (daemon.url(), &stop, &weights);
            s.spawn(move || {
                let rec = Recorder::open(
                    RecorderConfig::new(url),
                    &format!("load-{w}"),
                    RunLabels::default(),
                )
                .unwrap();
                // Two points a second each: a steady load the machine keeps up with (about half
                // of what it can take), so that the probe measures waiting, not an overload.
                let start = Instant::now();
                let mut p = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let due = start + Duration::from_millis(500 * u64::from(p));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    for l in 0..200 {
                        rec.record_weights(p, &layer(l), weights).unwrap();
                    }
                    rec.complete_point(p, None).unwrap();
                    rec.flush().unwrap();
                    p += 1;
                }
                rec.close().unwrap();
            });
        }
        let probe = s.spawn(|| {
            let rec = Recorder::open(
                RecorderConfig::new(daemon.url()),
                "probe",
                RunLabels::default(),
            )
            .unwrap();
            rec.flush().unwrap();
            // Open loop (no coordinated omission): probe k is due at start + k·5 ms, and its
            // latency counts from then, so a stall delays every probe due during it.
            let mut latencies = Vec::new();
            let start = Instant::now();
            let mut p = 0;
            while start.elapsed().as_secs_f64() < seconds {
                let due = start + Duration::from_millis(5 * u64::from(p));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                rec.record_weights(p, &layer(0), &weights).unwrap();
                rec.flush().unwrap();
                latencies.push(due.elapsed().as_secs_f64() * 1e3);
                rec.complete_point(p, None).unwrap();
                p += 1;
            }
            rec.close().unwrap();
            latencies
        });
        let latencies = probe.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        latencies
    });
    let files = std::fs::read_dir(dir.path().join("data/observables")).map_or(0, |d| d.count());
    let rows = daemon.sql("SELECT count(*) AS n FROM observables")[0]["n"]
        .as_u64()
        .unwrap();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0), files, rows)
}

fn ack_latencies() {
    let mut bins = vec![("this build", lrid_e2e::lrid_bin())];
    if let Some(before) = std::env::var_os("LRID_BEFORE_BIN") {
        bins.push(("LRID_BEFORE_BIN", before.into()));
    }
    println!(
        "ack latency: one small snapshot recorded and acknowledged every 5 ms for 15 s (latency from when it was due), beside 2 recorders loading the daemon with two 200-layer points a second each (8 measurement models: 1,600 rows a point)"
    );
    for (name, bin) in bins {
        let (p50_none, p99_none, max_none, _, _) = ack_latency(&bin, 3_600_000, 15.0);
        let (p50, p99, max, files, rows) = ack_latency(&bin, 2_000, 15.0);
        println!(
            "  {name} ({}): no checkpoints p50 {p50_none:.2} ms p99 {p99_none:.2} ms max {max_none:.1} ms; checkpoints every 2 s ({rows} rows into {files} Parquet files) p50 {p50:.2} ms p99 {p99:.2} ms max {max:.1} ms → a checkpoint adds {:+.2} ms to the p99 (target ≤ 5 ms)",
            bin.display(),
            p99 - p99_none
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `-- query` or `-- ingest` runs one part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if run("ingest") {
        // A buffer that holds the whole run (every snapshot is queued at once, into fresh
        // memory), and one that holds a few points (the job waits for room, buffers are
        // reused: the steady state of a job that records faster than the network).
        // In flight: 1 (each snapshot waits for the previous one's acknowledgement) and the
        // SDK's default. Three runs of each: this machine's speed varies between runs.
        let default = RecorderConfig::new("http://127.0.0.1:1").snapshots_in_flight;
        for buffer_mb in [1024, 64] {
            for in_flight in [1, default] {
                ingest_runs(3, 1, 60, in_flight, buffer_mb, Target::Plain);
                ingest_runs(3, 4, 20, in_flight, buffer_mb, Target::Plain);
            }
        }
    }
    if run("ingest") || run("tls") {
        // What TLS costs: plain HTTP/2 and TLS in turn, the SDK's defaults, 64 MB buffers.
        let default = RecorderConfig::new("http://127.0.0.1:1").snapshots_in_flight;
        for threads in [1, 4] {
            let points = if threads == 1 { 60 } else { 20 };
            let plain = ingest_runs(3, threads, points, default, 64, Target::Plain);
            let tls = ingest_runs(3, threads, points, default, 64, Target::Tls);
            println!(
                "        → {threads} recorder(s): TLS {tls:.2} GB/s vs plain {plain:.2} GB/s: ratio {:.2}",
                tls / plain
            );
        }
    }
    if run("ingest") || run("s3") {
        // Object storage: the same load timed until its rows are in Parquet, in the data folder
        // and in an S3 bucket (moto's server on loopback), in turn.
        let s3 = S3Server::start("lrid-bench");
        let default = RecorderConfig::new("http://127.0.0.1:1").snapshots_in_flight;
        for threads in [1, 4] {
            let points = if threads == 1 { 60 } else { 20 };
            let folder = ingest_runs(3, threads, points, default, 64, Target::Folder);
            let bucket = ingest_runs(3, threads, points, default, 64, Target::S3(&s3));
            println!(
                "        → {threads} recorder(s): S3 {bucket:.2} GB/s vs data folder {folder:.2} GB/s: ratio {:.2}",
                bucket / folder
            );
        }
    }
    if run("query") {
        query_latency();
    }
    if run("ack") {
        ack_latencies();
    }
}
