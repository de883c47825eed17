//! # lrid-protocol
//!
//! The ingest protocol between a training job (the SDK's `Recorder`) and `lrid serve`, version
//! [`PROTOCOL_VERSION`]. Everything travels over one Arrow Flight port:
//!
//! | step | Flight call | body |
//! |---|---|---|
//! | open a run | `DoAction` type [`ACTION_OPEN_RUN`] | JSON [`OpenRun`] |
//! | send a snapshot | `DoPut`, descriptor `CMD` = protobuf `Any` with type URL [`SNAPSHOT_TYPE_URL`] and a JSON [`SnapshotHeader`] as value; then record batches of one column `value` (Float32 or Float64, not null; uncompressed Arrow IPC, one batch per message): the tensor's values in C order, in as many batches as convenient | one `PutResult` once the snapshot's statistics are durable; its `app_metadata` is a JSON [`SnapshotAck`] |
//! | complete a point | `DoAction` type [`ACTION_COMPLETE_POINT`] | JSON [`CompletePoint`], optionally with the point's [`Diagnostic`]s → JSON [`PointAck`] |
//! | close a run | `DoAction` type [`ACTION_CLOSE_RUN`] | JSON [`CloseRun`] |
//! | store an analysis | `DoAction` type [`ACTION_PUT_ANALYSIS`] | an Arrow IPC stream of rows of the `analyses` table (one analysis name) → JSON `{"rows": n}` |
//! | store an identifier | `DoAction` type [`ACTION_PUT_IDENTIFIER`] | an identifier as an Arrow IPC stream (format in `lrid-identify`) → JSON [`IdentifierAck`] |
//! | delete an identifier | `DoAction` type [`ACTION_DELETE_IDENTIFIER`] | JSON [`DeleteIdentifier`] → `{}` |
//!
//! Measures (spec §1): `weight` — the layer's kernel (`weight_shape`); `act` — the layer's output
//! on evaluation examples, `examples × activation_shape` values, the examples of one evaluation
//! pass possibly spread over several snapshots; `gradavg` — one layer-wise activity change per
//! example. A point's rows become queryable when the point is completed.
//!
//! Compatibility. Every message carries `protocol`, the version its sender speaks; a daemon
//! accepts [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`] and refuses others, naming its range
//! ([`check_version`]). Fields a daemon does not know are ignored, so a new *optional* field
//! (one whose absence means what older versions did) is added without a version change and
//! without breaking older daemons; a change an older daemon must not ignore raises
//! [`PROTOCOL_VERSION`] (and a daemon that drops an old version raises the minimum).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks (and the newest a daemon of this crate accepts).
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version a daemon of this crate accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Whether a daemon of this crate accepts messages of protocol `version`; the refusal names
/// the range it speaks.
pub fn check_version(version: u32) -> Result<(), String> {
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(format!(
            "protocol version {version} is not supported; this server speaks versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}{}",
            if version > PROTOCOL_VERSION {
                " (the client is newer: upgrade the daemon)"
            } else {
                " (the client is older: upgrade the client)"
            }
        ))
    }
}

/// `DoAction` type that opens a run.
pub const ACTION_OPEN_RUN: &str = "lrid.open_run";
/// `DoAction` type that completes a trajectory point.
pub const ACTION_COMPLETE_POINT: &str = "lrid.complete_point";
/// `DoAction` type that closes a run.
pub const ACTION_CLOSE_RUN: &str = "lrid.close_run";
/// `DoAction` type that stores what `lrid analyze` measured: the body is an Arrow IPC stream of
/// rows of the `analyses` table (all of one analysis name, which replaces an earlier analysis
/// of that name); the answer is JSON `{"rows": n}` once they are durable.
pub const ACTION_PUT_ANALYSIS: &str = "lrid.put_analysis";
/// `DoAction` type that stores an identifier (live identification): the body is the
/// identifier as an Arrow IPC stream — one row per prefix length k with columns `points`,
/// `train_examples`, `accuracy`, `run_accuracy`, `mean`, `scale` (List<Float64>), `model`
/// (Binary), and its JSON description in the schema metadata key `lrid:identifier`; the answer
/// is a JSON [`IdentifierAck`] once it is durable and active.
pub const ACTION_PUT_IDENTIFIER: &str = "lrid.put_identifier";
/// `DoAction` type that deletes an identifier (JSON [`DeleteIdentifier`]); the rows it wrote
/// stay.
pub const ACTION_DELETE_IDENTIFIER: &str = "lrid.delete_identifier";
/// `Any.type_url` of a snapshot `DoPut` descriptor.
pub const SNAPSHOT_TYPE_URL: &str = "type.lrid.dev/lrid.v1.Snapshot";
/// Name of the single column of snapshot record batches.
pub const VALUE_COLUMN: &str = "value";
/// Largest gRPC message the server accepts and the SDK sends (bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Values per record batch the SDK sends (4 MiB of f32), well under [`MAX_MESSAGE_BYTES`].
pub const CHUNK_VALUES: usize = 1 << 20;

/// Labels of a run: what is known of how the network is trained. All optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunLabels {
    /// `sgdm`, `adam`, `feedback`, `information`, … when known (virtual experiments).
    pub learning_rule: Option<String>,
    pub architecture: Option<String>,
    pub task: Option<String>,
    pub batch_size: Option<u32>,
    pub model_seed: Option<i64>,
    pub data_seed: Option<i64>,
    /// Free-form hyperparameters.
    pub hyperparameters: Option<serde_json::Value>,
}

/// Opens a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenRun {
    pub protocol: u32,
    pub run_id: String,
    #[serde(default)]
    pub labels: RunLabels,
}

/// Where a layer sits in its network (spec §1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Early,
    Middle,
    Deep,
}

impl Position {
    pub fn as_str(self) -> &'static str {
        match self {
            Position::Early => "early",
            Position::Middle => "middle",
            Position::Deep => "deep",
        }
    }

    /// The spec's rule for layer `index` of `count`: thirds, the last absorbing the remainder.
    pub fn of(index: usize, count: usize) -> Position {
        let g = count / 3;
        if index < g {
            Position::Early
        } else if index < 2 * g {
            Position::Middle
        } else {
            Position::Deep
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layer of a run. The same index must always carry the same description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub index: u32,
    pub name: String,
    pub position: Position,
    /// Shape of the forward kernel.
    pub weight_shape: Vec<u64>,
    /// Shape of one example's output (all axes but the batch axis).
    pub activation_shape: Vec<u64>,
}

impl LayerInfo {
    pub fn weight_count(&self) -> u64 {
        self.weight_shape.iter().product()
    }

    pub fn units(&self) -> u64 {
        self.activation_shape.iter().product()
    }
}

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMeasure {
    Weight,
    Act,
    Gradavg,
}

impl SnapshotMeasure {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMeasure::Weight => "weight",
            SnapshotMeasure::Act => "act",
            SnapshotMeasure::Gradavg => "gradavg",
        }
    }
}

/// The descriptor of a snapshot `DoPut`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub protocol: u32,
    pub run_id: String,
    /// Trajectory point (0 = initialisation).
    pub point: u32,
    pub layer: LayerInfo,
    pub measure: SnapshotMeasure,
    /// Examples in this snapshot (`act`, `gradavg`); 0 for weights.
    #[serde(default)]
    pub examples: u64,
    /// Which batch of the evaluation pass this is (`act`, `gradavg`: 0, 1, 2, …; weights: 0).
    /// A batch is stored once: a retried snapshot is refused with AlreadyExists.
    #[serde(default)]
    pub batch: u32,
}

impl SnapshotHeader {
    /// Values the record batches must hold in total.
    pub fn expected_values(&self) -> u64 {
        match self.measure {
            SnapshotMeasure::Weight => self.layer.weight_count(),
            SnapshotMeasure::Act => self.examples * self.layer.units(),
            SnapshotMeasure::Gradavg => self.examples,
        }
    }
}

/// The acknowledgement of a snapshot: its statistics are durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAck {
    pub values: u64,
}

/// Completes a trajectory point: its rows become queryable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletePoint {
    pub protocol: u32,
    pub run_id: String,
    pub point: u32,
    /// Training step of the point, if known.
    #[serde(default)]
    pub step: Option<i64>,
    /// Scalars of the point beside the observables (rows of the `diagnostics` table), e.g. the
    /// angle between a layer's feedback and forward kernels. Optional: absent in JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

/// One named scalar of one layer at a trajectory point (a row of the `diagnostics` table).
/// The server refuses a layer the run has no snapshot of, an empty name or one over
/// [`MAX_DIAGNOSTIC_NAME`] characters, a non-finite value, and a (layer, name) given twice.
///
/// Names lrid's virtual experiments record: `w_change` = ‖W − W₀‖ / ‖W₀‖ (every layer),
/// `b_change` = ‖B − B₀‖ / ‖B₀‖ and `angle_bw` = the angle in degrees between the flattened
/// feedback kernel B and forward kernel W (rules with feedback weights); W₀, B₀ at
/// initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub layer_index: u32,
    pub name: String,
    pub value: f64,
}

/// Longest diagnostic name (characters).
pub const MAX_DIAGNOSTIC_NAME: usize = 64;

impl Diagnostic {
    /// Checks what can be checked of one diagnostic alone: a name of 1 to
    /// [`MAX_DIAGNOSTIC_NAME`] characters and a finite value.
    pub fn validate(&self) -> Result<(), String> {
        let chars = self.name.chars().count();
        if chars == 0 {
            return Err("the name is empty".into());
        }
        if chars > MAX_DIAGNOSTIC_NAME {
            return Err(format!(
                "the name has {chars} characters; at most {MAX_DIAGNOSTIC_NAME} are allowed"
            ));
        }
        if !self.value.is_finite() {
            return Err(format!("the value is {}; it must be finite", self.value));
        }
        Ok(())
    }
}

/// The answer to [`CompletePoint`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointAck {
    /// Rows stored (layers × measurement models).
    pub rows: u64,
}

/// Closes a run; points not completed are dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloseRun {
    pub protocol: u32,
    pub run_id: String,
}

/// Checks a run id: 1–128 characters of `[A-Za-z0-9._:/-]`.
pub fn validate_run_id(run_id: &str) -> Result<(), String> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid run id {run_id:?}: use 1 to 128 characters among letters, digits and . _ : / -"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_range_of_versions_is_accepted_and_others_are_refused_naming_it() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        assert!(check_version(MIN_PROTOCOL_VERSION).is_ok());
        let e = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert!(
            e.contains("speaks versions 1 to 1") && e.contains("upgrade the daemon"),
            "{e}"
        );
        let e = check_version(0).unwrap_err();
        assert!(e.contains("upgrade the client"), "{e}");
    }

    #[test]
    fn optional_fields_an_older_daemon_does_not_know_are_ignored() {
        let json = r#"{"protocol": 1, "run_id": "r", "labels": {"task": "shapes", "optimizer_state": "new"}, "priority": 3}"#;
        let open: OpenRun = serde_json::from_str(json).unwrap();
        assert_eq!(open.labels.task.as_deref(), Some("shapes"));
        let json = r#"{"protocol": 1, "run_id": "r", "point": 2, "step": 7, "wall_time": 1.5}"#;
        let done: CompletePoint = serde_json::from_str(json).unwrap();
        assert_eq!((done.point, done.step), (2, Some(7)));
        // A field this version knows, with the wrong type, is still refused.
        let bad = r#"{"protocol": 1, "run_id": "r", "point": "two"}"#;
        assert!(serde_json::from_str::<CompletePoint>(bad).is_err());
    }

    use super::*;

    #[test]
    fn positions_follow_the_thirds_rule() {
        let p: Vec<_> = (0..4).map(|i| Position::of(i, 4)).collect();
        assert_eq!(
            p,
            [
                Position::Early,
                Position::Middle,
                Position::Deep,
                Position::Deep
            ]
        );
        // ResNet-18: 22 layers → 7 early, 7 middle, 8 deep.
        let r: Vec<_> = (0..22).map(|i| Position::of(i, 22)).collect();
        assert_eq!(r.iter().filter(|&&x| x == Position::Early).count(), 7);
        assert_eq!(r.iter().filter(|&&x| x == Position::Deep).count(), 8);
    }

    #[test]
    fn headers_round_trip_and_count_values() {
        let h = SnapshotHeader {
            protocol: PROTOCOL_VERSION,
            run_id: "r1".into(),
            point: 3,
            layer: LayerInfo {
                index: 0,
                name: "conv1".into(),
                position: Position::Early,
                weight_shape: vec![32, 3, 5, 5],
                activation_shape: vec![32, 32, 32],
            },
            measure: SnapshotMeasure::Act,
            examples: 10,
            batch: 0,
        };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotHeader>(&json).unwrap(), h);
        assert_eq!(h.expected_values(), 10 * 32 * 32 * 32);
        assert!(serde_json::from_str::<SnapshotHeader>(r#"{"protocol":1}"#).is_err());
    }

    #[test]
    fn diagnostics_are_optional_on_the_wire() {
        let old = r#"{"protocol":1,"run_id":"r","point":2,"step":5}"#;
        let msg: CompletePoint = serde_json::from_str(old).unwrap();
        assert!(msg.diagnostics.is_empty());
        assert_eq!(serde_json::to_string(&msg).unwrap(), old);
        let with = CompletePoint {
            diagnostics: vec![Diagnostic {
                layer_index: 1,
                name: "angle_bw".into(),
                value: 42.5,
            }],
            ..msg
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains(r#""diagnostics":[{"layer_index":1,"name":"angle_bw","value":42.5}]"#)
        );
        assert_eq!(serde_json::from_str::<CompletePoint>(&json).unwrap(), with);
    }

    /// The Python client (`sdk/python`) states the wire constants again, in Python: each must
    /// equal its Rust twin here.
    #[test]
    fn the_python_client_speaks_the_same_wire_constants() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../python/src/lrid/_protocol.py"
        );
        let text = std::fs::read_to_string(path).expect("sdk/python/src/lrid/_protocol.py");
        let python = |name: &str| -> String {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} is not defined in {path}"));
            line.split_once(" = ").unwrap().1.trim().to_string()
        };
        let quoted = |v: &str| format!("\"{v}\"");
        assert_eq!(python("PROTOCOL_VERSION"), PROTOCOL_VERSION.to_string());
        assert_eq!(python("ACTION_OPEN_RUN"), quoted(ACTION_OPEN_RUN));
        assert_eq!(
            python("ACTION_COMPLETE_POINT"),
            quoted(ACTION_COMPLETE_POINT)
        );
        assert_eq!(python("ACTION_CLOSE_RUN"), quoted(ACTION_CLOSE_RUN));
        assert_eq!(python("SNAPSHOT_TYPE_URL"), quoted(SNAPSHOT_TYPE_URL));
        assert_eq!(python("VALUE_COLUMN"), quoted(VALUE_COLUMN));
        assert_eq!(python("MAX_MESSAGE_BYTES"), "64 * 1024 * 1024");
        assert_eq!(MAX_MESSAGE_BYTES, 64 * 1024 * 1024);
        assert_eq!(python("CHUNK_VALUES"), "1 << 20");
        assert_eq!(CHUNK_VALUES, 1 << 20);
        assert_eq!(
            python("MAX_DIAGNOSTIC_NAME"),
            MAX_DIAGNOSTIC_NAME.to_string()
        );
    }

    #[test]
    fn run_ids_are_checked() {
        assert!(validate_run_id("sweep/knet4-sgdm-0:1").is_ok());
        assert!(validate_run_id("").is_err());
        assert!(validate_run_id("a b").is_err());
        assert!(validate_run_id(&"x".repeat(129)).is_err());
    }
}

/// The answer to [`ACTION_PUT_IDENTIFIER`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentifierAck {
    pub name: String,
    /// The rules it tells apart, in class order.
    pub rules: Vec<String>,
    /// Prefix lengths it has a model for (1..=points).
    pub points: usize,
}

/// The body of [`ACTION_DELETE_IDENTIFIER`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeleteIdentifier {
    pub name: String,
}
