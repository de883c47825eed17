//! Records tensors stored as `.npy` files (float32, C order, in the statistics' layouts) into
//! `lrid serve` with the Rust SDK. The Python client's tests record the same tensors with
//! `lrid.Recorder` and check that both give the same rows; it is also the shortest complete use
//! of [`Recorder`] without libtorch.
//!
//! ```text
//! cargo run --release -p lrid-sdk --example record_npy -- manifest.json
//! ```
//!
//! The manifest (JSON): `server`, `run_id`, optional `labels` (the protocol's `RunLabels`),
//! `layers` (the protocol's `LayerInfo`s) and `points`: `[{"point": 0, "step": 0, "snapshots":
//! [{"layer": 0, "measure": "weight" | "act" | "gradavg", "file": "w.npy", "batch": 0}]}]`.
//! For `act` the first axis of the array is the examples. Every file is read once, before the
//! run is opened; the program prints the bytes it recorded and the seconds from opening the run
//! to its acknowledged close (what the Python client's benchmark compares with).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use lrid_sdk::{LayerInfo, Recorder, RecorderConfig, RunLabels, SnapshotMeasure};
use serde::Deserialize;

#[derive(Parser, Debug)]
struct Args {
    /// The manifest (relative file names are read beside it).
    manifest: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    server: String,
    run_id: String,
    #[serde(default)]
    labels: RunLabels,
    layers: Vec<LayerInfo>,
    points: Vec<Point>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Point {
    point: u32,
    step: Option<i64>,
    snapshots: Vec<Snapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    layer: u32,
    measure: SnapshotMeasure,
    file: PathBuf,
    #[serde(default)]
    batch: u32,
}

/// The values and shape of a float32 `.npy` file.
fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<u64>), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| format!("{} is not a .npy file: {e}", path.display()))?;
    let shape = npy.shape().to_vec();
    let values = npy
        .into_vec::<f32>()
        .map_err(|e| format!("{}: expected float32 values: {e}", path.display()))?;
    Ok((values, shape))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.manifest)
        .map_err(|e| format!("cannot read {}: {e}", args.manifest.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a manifest: {e}", args.manifest.display()))?;
    let dir = args.manifest.parent().unwrap_or(Path::new("."));
    let mut tensors: HashMap<&Path, (Vec<f32>, Vec<u64>)> = HashMap::new();
    for s in manifest.points.iter().flat_map(|p| &p.snapshots) {
        if !tensors.contains_key(s.file.as_path()) {
            tensors.insert(&s.file, read_npy(&dir.join(&s.file))?);
        }
    }
    let start = Instant::now();
    let mut bytes = 0usize;
    let rec = Recorder::open(
        RecorderConfig::new(manifest.server),
        &manifest.run_id,
        manifest.labels,
    )
    .map_err(|e| e.to_string())?;
    for p in &manifest.points {
        for s in &p.snapshots {
            let layer = manifest
                .layers
                .iter()
                .find(|l| l.index == s.layer)
                .ok_or_else(|| format!("point {}: no layer {} in `layers`", p.point, s.layer))?;
            let (values, shape) = &tensors[s.file.as_path()];
            bytes += size_of_val(values.as_slice());
            let sent = match s.measure {
                SnapshotMeasure::Weight => rec.record_weights(p.point, layer, values),
                SnapshotMeasure::Act => {
                    let examples = shape.first().copied().unwrap_or(0) as usize;
                    rec.record_activations(p.point, layer, s.batch, examples, values)
                }
                SnapshotMeasure::Gradavg => {
                    rec.record_activity_change(p.point, layer, s.batch, values)
                }
            };
            sent.map_err(|e| e.to_string())?;
        }
        rec.complete_point(p.point, p.step)
            .map_err(|e| e.to_string())?;
    }
    rec.close().map_err(|e| e.to_string())?;
    println!(
        "recorded {bytes} bytes in {:.6} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
