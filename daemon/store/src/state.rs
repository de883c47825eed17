//! The ingest state machine and the [`Store`] that owns it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{TimestampMillisecondType, UInt32Type, UInt64Type};
use datafusion::prelude::{SessionConfig, SessionContext};
use lrid_protocol::{
    CloseRun, CompletePoint, Diagnostic, LayerInfo, OpenRun, PROTOCOL_VERSION, PointAck, Position,
    RunLabels, SnapshotAck, SnapshotHeader, SnapshotMeasure,
};
use lrid_stats::{
    ActivationAccumulator, Element, GradAvgAccumulator, Measure, MeasurementModel, PartialStats,
    UnitSelection, WeightObserver,
};
use serde::{Deserialize, Serialize};

use crate::files::{Files, MANIFEST, NODE_PREFIX, RemoteFiles};
use crate::identifications::{
    IDENTIFICATION_ROWS_TABLE, IDENTIFICATIONS_SCHEMA, IdentificationRow, identifications_batch,
    rules_in, view_sql,
};
use crate::tables::{
    DIAGNOSTICS_SCHEMA, DiagnosticRow, LAYERS_SCHEMA, LiveTable, OBSERVABLES_SCHEMA, ObservableRow,
    QueryView, ROW_GROUP_ROWS, RUNS_SCHEMA, RunRow, SORTED_ROW_GROUP_ROWS, TableKind,
    diagnostics_batch, layers_batch, observables_batch, runs_batch,
};
use crate::wal::{WalWriter, read_segment, segments};
use crate::{Error, Result};

/// One measurement model under which every layer is observed (spec §1.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The value of the `model` column, e.g. `ideal` or `ephys`.
    pub name: String,
    /// Fraction of units recorded; absent = all.
    #[serde(default)]
    pub unit_fraction: Option<f64>,
    /// Standard deviation of additive Gaussian noise; 0 = none.
    #[serde(default)]
    pub noise_std: f64,
    /// Seed of the recorded units and of the noise.
    #[serde(default)]
    pub seed: u64,
}

impl ModelConfig {
    /// All units, no noise.
    pub fn ideal() -> Self {
        Self {
            name: "ideal".into(),
            unit_fraction: None,
            noise_std: 0.0,
            seed: 0,
        }
    }

    fn model(&self) -> Result<MeasurementModel> {
        MeasurementModel::new(self.unit_fraction, self.noise_std, self.seed)
            .map_err(|e| Error::InvalidArgument(format!("measurement model '{}': {e}", self.name)))
    }
}

/// Configuration of the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Folder of the Parquet files and the write-ahead log.
    pub data_dir: PathBuf,
    /// Measurement models: one `observables` row per model for every point and layer.
    pub models: Vec<ModelConfig>,
    /// Checkpoint once this many rows wait in memory.
    pub flush_rows: usize,
    /// Sync the write-ahead log before acknowledging (turn off only for throwaway data).
    pub sync: bool,
    /// Extra SQL views: every `*.sql` file in this folder is run at start.
    pub queries_dir: Option<PathBuf>,
    /// Compact once a table has this many Parquet files smaller than `compact_target_bytes`
    /// (they are merged, sorted by run, point and layer); 0: never in the background.
    pub compact_min_files: usize,
    /// A compacted file holds files up to about this size.
    pub compact_target_bytes: u64,
    /// Closed Parquet files and the manifest in an object store instead of the data folder:
    /// `s3://bucket` or `s3://bucket/prefix`. This daemon writes under `prefix/node=<id>/`; the
    /// write-ahead log stays in the data folder. Credentials, region and endpoint come from the
    /// usual `AWS_*` variables or `object_store_options`.
    pub object_store: Option<String>,
    /// Options of the object store (object_store's S3 keys: `endpoint`, `region`,
    /// `allow_http`, `access_key_id`, `secret_access_key`, …), over the `AWS_*` variables.
    pub object_store_options: BTreeMap<String, String>,
    /// This daemon's folder in the object store, `node=<id>/`; absent: the id kept in the data
    /// folder (`node-id`), made up once.
    pub node_id: Option<String>,
    /// Serve SQL over every node's files in `object_store` without writing anything (no
    /// write-ahead log, no ingest); new files appear as their daemons publish them.
    pub read_only: bool,
    /// How often a read-only store looks for new files, in milliseconds.
    pub refresh_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("lrid-data"),
            models: vec![ModelConfig::ideal()],
            flush_rows: 50_000,
            sync: true,
            queries_dir: None,
            compact_min_files: 8,
            compact_target_bytes: 256 << 20,
            object_store: None,
            object_store_options: BTreeMap::new(),
            node_id: None,
            read_only: false,
            refresh_interval_ms: 2_000,
        }
    }
}

impl StoreConfig {
    /// A small configuration for tests, in `dir`.
    pub fn test_config(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            flush_rows: 1_000,
            ..Self::default()
        }
    }
}

/// The views shipped with lrid (`queries/*.sql`).
const BUILTIN_VIEWS: &[(&str, &str)] = &[
    (
        "trajectories.sql",
        include_str!("../../../queries/trajectories.sql"),
    ),
    (
        "classifier_examples.sql",
        include_str!("../../../queries/classifier_examples.sql"),
    ),
];

/// A statistic result of one measurement model in a log record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResultValue {
    /// Final values (weights): NaN as null.
    Final(Vec<Option<f64>>),
    /// Mergeable sums (activations, activity change).
    Partial(PartialStats),
    /// Not observable under this model (the activity change under unit subsampling or noise
    /// needs the layer's input gradient, which a snapshot does not carry).
    Undefined,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record {
    OpenRun {
        run: OpenRun,
        opened_at_ms: i64,
    },
    Snapshot {
        run_id: String,
        point: u32,
        layer: LayerInfo,
        measure: SnapshotMeasure,
        batches: Vec<u32>,
        results: BTreeMap<String, ResultValue>,
    },
    CompletePoint {
        run_id: String,
        point: u32,
        step: Option<i64>,
        /// Checked before they are logged; absent in logs written before diagnostics existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        diagnostics: Vec<Diagnostic>,
    },
    CloseRun {
        run_id: String,
        at_ms: i64,
    },
    /// Rows of `identifications` (checked before they are logged).
    Identifications {
        rows: Vec<IdentificationRow>,
    },
}

#[derive(Debug, Default)]
struct MeasureState {
    batches: BTreeSet<u32>,
    results: BTreeMap<String, ResultValue>,
}

#[derive(Debug, Default)]
struct PendingLayer {
    measures: BTreeMap<&'static str, MeasureState>,
}

#[derive(Debug, Default)]
struct PendingPoint {
    layers: BTreeMap<u32, PendingLayer>,
    /// Snapshots of this point being summarised right now, by (layer, measure, batch).
    in_flight: BTreeSet<(u32, &'static str, u32)>,
}

#[derive(Debug)]
struct RunState {
    row: RunRow,
    layers: BTreeMap<u32, LayerInfo>,
    pending: BTreeMap<u32, PendingPoint>,
    completed: BTreeSet<u32>,
}

/// The format of `manifest.json` this lrid writes; it reads every format up to it (a manifest
/// without `format` was written before it had a number: format 1). Format 1: the image of what
/// was pending at the checkpoint heads segment `wal_from`. Format 2: it is its own file,
/// `wal/<wal_image>.image`, so that the segment can take appends while the checkpoint writes.
pub const MANIFEST_FORMAT: u32 = 2;

fn manifest_format_1() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    #[serde(default = "manifest_format_1")]
    format: u32,
    observables: Vec<String>,
    /// `diagnostics/*.parquet`; absent in manifests written before diagnostics existed.
    #[serde(default)]
    diagnostics: Vec<String>,
    /// `identifications/*.parquet`; absent in manifests written before identification existed.
    #[serde(default)]
    identifications: Vec<String>,
    runs: Option<String>,
    layers: Option<String>,
    wal_from: u64,
    /// Format 2: the image replayed before segment `wal_from` (`wal/NNNNNNNN.image`).
    #[serde(default)]
    wal_image: Option<u64>,
    next_seq: u64,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: MANIFEST_FORMAT,
            observables: Vec::new(),
            diagnostics: Vec::new(),
            identifications: Vec::new(),
            runs: None,
            layers: None,
            wal_from: 0,
            wal_image: None,
            next_seq: 0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    runs: BTreeMap<String, RunState>,
    /// None in a read-only store.
    wal: Option<WalWriter>,
    /// Rows of completed points not yet in Parquet.
    tail: Vec<ObservableRow>,
    /// Diagnostics of completed points not yet in Parquet.
    diagnostics: Vec<DiagnosticRow>,
    /// Identifications not yet in Parquet.
    identifications: Vec<IdentificationRow>,
    manifest: Manifest,
    /// Log records appended since the last checkpoint.
    dirty: bool,
    /// Files a compaction replaced, kept until no query planned before it can still read them.
    retired: Vec<(String, std::time::Instant)>,
}

/// How long files a compaction replaced stay on disk for the queries that may still read them.
const RETIRED_FILES_KEPT: std::time::Duration = std::time::Duration::from_secs(300);

/// What one [`Store::compact`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CompactReport {
    /// Files merged, per table.
    pub merged: Vec<(&'static str, usize)>,
    /// Files written.
    pub written: usize,
    pub rows: usize,
}

/// The store: ingest, durability and SQL. Share it behind an `Arc`; every method may be called
/// from many threads. Methods that write block on disk I/O: call them from blocking threads.
pub struct Store {
    config: StoreConfig,
    dir: PathBuf,
    /// Where the closed files and the manifest live (shared with the `analyses` table).
    files: Arc<Files>,
    /// A read-only store: what each node's manifest published, by node id.
    nodes: Mutex<BTreeMap<String, NodeView>>,
    models: Vec<(String, MeasurementModel)>,
    inner: Mutex<Inner>,
    view: Arc<RwLock<QueryView>>,
    ctx: SessionContext,
    selections: Mutex<HashMap<(usize, usize), UnitSelection>>,
    /// Rules with a column in the `identifications` view.
    view_rules: Mutex<Option<BTreeSet<String>>>,
    /// Told about every completed point, after it is stored.
    listeners: RwLock<Vec<Arc<dyn PointListener>>>,
    /// Held by the one checkpoint that runs at a time (never with `inner`'s lock waiting on it).
    checkpointing: Mutex<()>,
    /// In an object store: whether new files are known to be numbered after every file there
    /// (see [`Store::number_after_existing`]).
    numbered: std::sync::atomic::AtomicBool,
}

/// One writing daemon's published files, as a read-only store last read them.
#[derive(Debug)]
struct NodeView {
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    runs: Vec<RunRow>,
    layers: Vec<(String, LayerInfo)>,
}

/// A completed point, as the store tells its [`PointListener`]s.
#[derive(Debug, Clone)]
pub struct PointCompleted {
    pub run_id: String,
    pub point: u32,
    pub step: Option<i64>,
    /// The point's `observables` rows (every layer × measurement model).
    pub rows: RecordBatch,
}

/// Something to call when a point completes (e.g. live identification). Called on the ingest
/// path after the point is durable and queryable: it must return at once (hand the work to a
/// thread of its own).
pub trait PointListener: Send + Sync {
    fn point_completed(&self, event: PointCompleted);
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn measure_key(m: SnapshotMeasure) -> &'static str {
    m.as_str()
}

/// FNV-1a over the parts: a stable noise draw per snapshot.
fn draw_id(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn check_protocol(protocol: u32) -> Result<()> {
    lrid_protocol::check_version(protocol).map_err(Error::InvalidArgument)
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, replaying its write-ahead log.
    pub async fn open(config: StoreConfig) -> Result<Arc<Store>> {
        let models = config
            .models
            .iter()
            .map(|m| Ok((m.name.clone(), m.model()?)))
            .collect::<Result<Vec<_>>>()?;
        if models.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one measurement model is needed (e.g. name = \"ideal\")".into(),
            ));
        }
        let names: BTreeSet<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
        if names.len() != models.len() {
            return Err(Error::InvalidArgument(
                "measurement model names must be distinct".into(),
            ));
        }
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let files = store_files(&config, &dir)?;
        let read_only = config.read_only;
        // A read-only store has no manifest of its own: it reads every node's (below).
        let manifest: Manifest = if read_only {
            Manifest::default()
        } else {
            match files.read_manifest()? {
                Some(bytes) => parse_manifest(&bytes, &files.location(MANIFEST))?,
                None => Manifest {
                    wal_from: 1,
                    next_seq: 1,
                    ..Manifest::default()
                },
            }
        };
        let wal_dir = dir.join("wal");
        let mut runs: BTreeMap<String, RunState> = BTreeMap::new();
        let (wal, replay) = if read_only {
            (None, Vec::new())
        } else {
            // In an object store, files the manifest does not name are removed only once this
            // daemon has replaced the manifest (proving the node is its own).
            let keep_unlisted = files.remote().is_some();
            remove_orphans(&files, &wal_dir, &manifest, &[], keep_unlisted)?;
            let (rows, layers) = load_runs_and_layers(&files, "", &manifest)?;
            for row in rows {
                runs.insert(
                    row.run_id.clone(),
                    RunState {
                        row,
                        layers: BTreeMap::new(),
                        pending: BTreeMap::new(),
                        completed: BTreeSet::new(),
                    },
                );
            }
            for (run, layer) in layers {
                if let Some(r) = runs.get_mut(&run) {
                    r.layers.insert(layer.index, layer);
                }
            }
            for f in &manifest.observables {
                let rel = format!("observables/{f}");
                for b in files.read_parquet(&rel, Some(&["run_id", "point"]))? {
                    let ids = b.column(0).as_string::<i32>();
                    let points = b.column(1).as_primitive::<UInt32Type>();
                    for i in 0..b.num_rows() {
                        if let Some(r) = runs.get_mut(ids.value(i)) {
                            r.completed.insert(points.value(i));
                        }
                    }
                }
            }
            let existing = segments(&wal_dir)?;
            let replay: Vec<u64> = existing
                .iter()
                .copied()
                .filter(|&s| s >= manifest.wal_from)
                .collect();
            let next_segment = existing
                .last()
                .map_or(manifest.wal_from, |s| s + 1)
                .max(manifest.wal_from);
            (
                Some(WalWriter::create(&wal_dir, next_segment, config.sync)?),
                replay,
            )
        };
        let view = Arc::new(RwLock::new(QueryView::empty()));
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_information_schema(true)
                .with_default_catalog_and_schema("lrid", "public"),
        );
        if let Some(remote) = files.remote() {
            let (object_store, root) = remote.store();
            let url = datafusion::execution::object_store::ObjectStoreUrl::parse(root)?;
            ctx.register_object_store(url.as_ref(), object_store.clone());
        }
        let store = Store {
            dir: dir.clone(),
            files: Arc::new(files),
            nodes: Mutex::new(BTreeMap::new()),
            models,
            inner: Mutex::new(Inner {
                runs,
                wal,
                tail: Vec::new(),
                diagnostics: Vec::new(),
                identifications: Vec::new(),
                manifest,
                dirty: !replay.is_empty(),
                retired: Vec::new(),
            }),
            view: view.clone(),
            ctx,
            selections: Mutex::new(HashMap::new()),
            view_rules: Mutex::new(None),
            listeners: RwLock::new(Vec::new()),
            checkpointing: Mutex::new(()),
            numbered: std::sync::atomic::AtomicBool::new(false),
            config,
        };
        {
            let mut inner = store.inner.lock().expect("store lock");
            let mut replayed = 0usize;
            // Format 2: what was pending at the last checkpoint, then the segments after it.
            if let Some(image) = inner.manifest.wal_image {
                for record in crate::wal::read_image::<Record>(&wal_dir, image)? {
                    store.apply(&mut inner, record)?;
                    replayed += 1;
                }
            }
            for (i, &seq) in replay.iter().enumerate() {
                let last = i + 1 == replay.len();
                for record in read_segment::<Record>(&wal_dir, seq, last)? {
                    store.apply(&mut inner, record)?;
                    replayed += 1;
                }
            }
            if replayed > 0 {
                tracing::info!(
                    replayed,
                    segments = replay.len(),
                    "replayed the write-ahead log"
                );
            }
            store.refresh_view(&inner, true);
        }
        for (name, kind) in [
            ("runs", TableKind::Runs),
            ("layers", TableKind::Layers),
            ("observables", TableKind::Observables),
            ("diagnostics", TableKind::Diagnostics),
            (IDENTIFICATION_ROWS_TABLE, TableKind::Identifications),
        ] {
            store
                .ctx
                .register_table(name, Arc::new(LiveTable::new(kind, view.clone())))?;
        }
        store.ctx.register_table(
            "analyses",
            Arc::new(crate::analyses::AnalysesTable {
                files: store.files.clone(),
                every_node: store.config.read_only,
            }),
        )?;
        let mut views: Vec<(String, String)> = BUILTIN_VIEWS
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        if let Some(qdir) = &store.config.queries_dir {
            let mut files: Vec<PathBuf> = std::fs::read_dir(qdir)
                .map_err(|e| Error::io(qdir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
                views.push((f.display().to_string(), text));
            }
        }
        for (name, sql) in views {
            store.ctx.sql(&sql).await.map_err(|e| {
                Error::InvalidArgument(format!("the view in {name} does not load: {e}"))
            })?;
        }
        let mut rules = BTreeSet::new();
        {
            let inner = store.inner.lock().expect("store lock");
            for f in &inner.manifest.identifications {
                let rel = format!("identifications/{f}");
                for b in store.files.read_parquet(&rel, Some(&["probabilities"]))? {
                    rules.extend(rules_in(&b));
                }
            }
            if !inner.identifications.is_empty() {
                rules.extend(rules_in(&identifications_batch(&inner.identifications)));
            }
        }
        store.add_identification_rules(&rules).await?;
        let store = Arc::new(store);
        if read_only {
            let s = store.clone();
            let rules = tokio::task::spawn_blocking(move || s.refresh_nodes())
                .await
                .expect("refresh task")?;
            store.add_identification_rules(&rules).await?;
            tokio::spawn(poll_nodes(
                Arc::downgrade(&store),
                std::time::Duration::from_millis(store.config.refresh_interval_ms.max(50)),
            ));
        }
        Ok(store)
    }

    /// The SQL context: tables `runs`, `layers`, `observables`, `diagnostics` and the views.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// The folder of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the measurement models, in configuration order.
    /// Stores the rows of one analysis (batches of [`crate::ANALYSES_SCHEMA`]) durably,
    /// replacing an earlier analysis of the same name; the number of rows stored.
    pub fn put_analysis(&self, batches: &[RecordBatch]) -> Result<usize> {
        self.writable()?;
        crate::analyses::put(&self.files, batches)
    }

    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Rows (observables, diagnostics, identifications) waiting in memory for the next
    /// checkpoint.
    pub fn tail_rows(&self) -> usize {
        let inner = self.inner.lock().expect("store lock");
        inner.tail.len() + inner.diagnostics.len() + inner.identifications.len()
    }

    /// Opens a run. Opening it again with the same labels is a no-op (a client's retry).
    pub fn open_run(&self, msg: &OpenRun) -> Result<()> {
        self.writable()?;
        check_protocol(msg.protocol)?;
        lrid_protocol::validate_run_id(&msg.run_id).map_err(Error::InvalidArgument)?;
        let mut inner = self.inner.lock().expect("store lock");
        if let Some(run) = inner.runs.get(&msg.run_id) {
            if run.row.status == "closed" {
                return Err(Error::AlreadyExists(format!(
                    "run '{}' exists and is closed; open a new run id",
                    msg.run_id
                )));
            }
            if run.row.labels != msg.labels {
                return Err(Error::AlreadyExists(format!(
                    "run '{}' is already open with other labels",
                    msg.run_id
                )));
            }
            return Ok(());
        }
        let record = Record::OpenRun {
            run: msg.clone(),
            opened_at_ms: now_ms(),
        };
        self.commit(&mut inner, record)?;
        self.refresh_runs(&inner);
        Ok(())
    }

    /// Summarises one snapshot and stores its contribution durably. The values are the tensor
    /// of `header.measure` in C order.
    pub fn record<T: Element>(&self, header: &SnapshotHeader, values: &[T]) -> Result<SnapshotAck> {
        self.writable()?;
        let batch = self.validate_snapshot(header, values.len())?;
        let key = (header.layer.index, measure_key(header.measure), batch);
        // Reserve the snapshot, so that a duplicate is refused while this one is summarised.
        {
            let mut inner = self.inner.lock().expect("store lock");
            let run = self.open_run_state(&mut inner, &header.run_id)?;
            if run.completed.contains(&header.point) {
                return Err(Error::AlreadyExists(format!(
                    "point {} of run '{}' is already complete",
                    header.point, header.run_id
                )));
            }
            if let Some(known) = run.layers.get(&header.layer.index)
                && *known != header.layer
            {
                return Err(Error::InvalidArgument(format!(
                    "layer {} of run '{}' was described as {:?} before; this snapshot says {:?}",
                    header.layer.index, header.run_id, known, header.layer
                )));
            }
            let pending = run.pending.entry(header.point).or_default();
            let seen = pending
                .layers
                .get(&header.layer.index)
                .and_then(|l| l.measures.get(key.1))
                .is_some_and(|m| m.batches.contains(&batch));
            if seen || pending.in_flight.contains(&key) {
                return Err(Error::AlreadyExists(match header.measure {
                    SnapshotMeasure::Weight => format!(
                        "the weights of layer {} at point {} of run '{}' are already recorded",
                        header.layer.index, header.point, header.run_id
                    ),
                    m => format!(
                        "batch {batch} of {} of layer {} at point {} of run '{}' is already recorded",
                        m.as_str(),
                        header.layer.index,
                        header.point,
                        header.run_id
                    ),
                }));
            }
            pending.in_flight.insert(key);
        }
        let results = self.summarise(header, batch, values);
        let mut inner = self.inner.lock().expect("store lock");
        let release = |inner: &mut Inner| {
            if let Some(p) = inner
                .runs
                .get_mut(&header.run_id)
                .and_then(|r| r.pending.get_mut(&header.point))
            {
                p.in_flight.remove(&key);
            }
        };
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                release(&mut inner);
                return Err(e);
            }
        };
        release(&mut inner);
        let new_layer = !inner.runs[&header.run_id]
            .layers
            .contains_key(&header.layer.index);
        self.commit(
            &mut inner,
            Record::Snapshot {
                run_id: header.run_id.clone(),
                point: header.point,
                layer: header.layer.clone(),
                measure: header.measure,
                batches: vec![batch],
                results,
            },
        )?;
        if new_layer {
            let batch = layers_batch(std::iter::once((header.run_id.as_str(), &header.layer)));
            self.view
                .write()
                .expect("query view lock")
                .layers
                .push(batch);
        }
        Ok(SnapshotAck {
            values: values.len() as u64,
        })
    }

    fn validate_snapshot(&self, h: &SnapshotHeader, len: usize) -> Result<u32> {
        check_protocol(h.protocol)?;
        lrid_protocol::validate_run_id(&h.run_id).map_err(Error::InvalidArgument)?;
        let what = format!(
            "{} snapshot of layer {} ({}) at point {} of run '{}'",
            h.measure.as_str(),
            h.layer.index,
            h.layer.name,
            h.point,
            h.run_id
        );
        if h.layer.name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{what}: the layer has no name"
            )));
        }
        for (axes, shape) in [
            ("weight_shape", &h.layer.weight_shape),
            ("activation_shape", &h.layer.activation_shape),
        ] {
            if shape.is_empty() || shape.contains(&0) {
                return Err(Error::InvalidArgument(format!(
                    "{what}: {axes} {shape:?} must have at least one axis and no empty one"
                )));
            }
        }
        match h.measure {
            SnapshotMeasure::Weight if h.examples != 0 => {
                return Err(Error::InvalidArgument(format!(
                    "{what}: weights have no examples, got examples = {}",
                    h.examples
                )));
            }
            SnapshotMeasure::Act | SnapshotMeasure::Gradavg if h.examples == 0 => {
                return Err(Error::InvalidArgument(format!(
                    "{what}: examples must be at least 1"
                )));
            }
            _ => {}
        }
        if h.measure == SnapshotMeasure::Weight && h.batch != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what}: a weight snapshot is one batch (batch 0), got batch {}",
                h.batch
            )));
        }
        let expected = h.expected_values();
        if expected != len as u64 {
            let detail = match h.measure {
                SnapshotMeasure::Weight => format!("shape {:?}", h.layer.weight_shape),
                SnapshotMeasure::Act => format!(
                    "{} examples × {} units ({:?})",
                    h.examples,
                    h.layer.units(),
                    h.layer.activation_shape
                ),
                SnapshotMeasure::Gradavg => format!("{} examples", h.examples),
            };
            return Err(Error::InvalidArgument(format!(
                "{what}: the header announces {expected} values ({detail}) but {len} arrived"
            )));
        }
        Ok(h.batch)
    }

    fn open_run_state<'a>(&self, inner: &'a mut Inner, run_id: &str) -> Result<&'a mut RunState> {
        match inner.runs.get_mut(run_id) {
            None => Err(Error::NotFound(format!(
                "unknown run '{run_id}': open it first"
            ))),
            Some(r) if r.row.status == "closed" => Err(Error::FailedPrecondition(format!(
                "run '{run_id}' is closed"
            ))),
            Some(r) => Ok(r),
        }
    }

    fn selection(&self, units: usize, model: usize) -> UnitSelection {
        let mut cache = self.selections.lock().expect("selection cache lock");
        cache
            .entry((units, model))
            .or_insert_with(|| self.models[model].1.selection(units, 0))
            .clone()
    }

    fn summarise<T: Element>(
        &self,
        h: &SnapshotHeader,
        batch: u32,
        values: &[T],
    ) -> Result<BTreeMap<String, ResultValue>> {
        let draw = draw_id(&[
            h.run_id.as_bytes(),
            &h.point.to_le_bytes(),
            &h.layer.index.to_le_bytes(),
            h.measure.as_str().as_bytes(),
            &batch.to_le_bytes(),
        ]);
        let shape: Vec<usize> = h.layer.weight_shape.iter().map(|&d| d as usize).collect();
        let units = h.layer.units() as usize;
        let mut out = BTreeMap::new();
        for (i, (name, model)) in self.models.iter().enumerate() {
            let value = match h.measure {
                SnapshotMeasure::Weight => {
                    let observer =
                        WeightObserver::with_selection(*model, self.selection(values.len(), i));
                    let stats = observer.observe(values, &shape, draw)?;
                    ResultValue::Final(
                        stats
                            .values()
                            .iter()
                            .map(|v| (!v.is_nan()).then_some(*v))
                            .collect(),
                    )
                }
                SnapshotMeasure::Act => {
                    let mut acc = ActivationAccumulator::with_selection(
                        self.selection(units, i),
                        *model,
                        draw,
                    );
                    acc.push(values, h.examples as usize)?;
                    ResultValue::Partial(acc.partial())
                }
                SnapshotMeasure::Gradavg if model.is_ideal() => {
                    let mut acc = GradAvgAccumulator::new();
                    acc.push(values)?;
                    ResultValue::Partial(acc.partial())
                }
                SnapshotMeasure::Gradavg => ResultValue::Undefined,
            };
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// Completes a point: its rows are stored durably and become queryable.
    pub fn complete_point(&self, msg: &CompletePoint) -> Result<PointAck> {
        self.writable()?;
        check_protocol(msg.protocol)?;
        let mut inner = self.inner.lock().expect("store lock");
        let run = self.open_run_state(&mut inner, &msg.run_id)?;
        if run.completed.contains(&msg.point) {
            return Err(Error::AlreadyExists(format!(
                "point {} of run '{}' is already complete",
                msg.point, msg.run_id
            )));
        }
        match run.pending.get(&msg.point) {
            Some(p) if !p.in_flight.is_empty() => {
                return Err(Error::FailedPrecondition(format!(
                    "{} snapshot(s) of point {} of run '{}' are still being stored; complete the point once they are acknowledged",
                    p.in_flight.len(),
                    msg.point,
                    msg.run_id
                )));
            }
            Some(p) if !p.layers.is_empty() => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "point {} of run '{}' has no snapshots to complete",
                    msg.point, msg.run_id
                )));
            }
        }
        check_diagnostics(msg, &run.layers)?;
        let before = inner.tail.len();
        let diagnostics_before = inner.diagnostics.len();
        // The rows first: a point whose statistics cannot be finished is refused before it is
        // logged, so that a replay never meets a record it cannot apply.
        let (rows, diagnostics) = self.completion(
            &inner,
            &msg.run_id,
            msg.point,
            msg.step,
            msg.diagnostics.clone(),
        )?;
        wal_of(&mut inner)?.append(&[Record::CompletePoint {
            run_id: msg.run_id.clone(),
            point: msg.point,
            step: msg.step,
            diagnostics: msg.diagnostics.clone(),
        }])?;
        inner.dirty = true;
        finish_completion(&mut inner, &msg.run_id, msg.point, rows, diagnostics);
        let rows = (inner.tail.len() - before) as u64;
        // Publish only the new rows: queries see them at once, nothing is rebuilt.
        let batch = observables_batch(&inner.tail[before..]);
        let diagnostics = (inner.diagnostics.len() > diagnostics_before)
            .then(|| diagnostics_batch(&inner.diagnostics[diagnostics_before..]));
        {
            let mut view = self.view.write().expect("query view lock");
            view.tail.push(batch.clone());
            view.diagnostics_tail.extend(diagnostics);
        }
        drop(inner);
        let listeners = self.listeners.read().expect("listeners lock").clone();
        for l in listeners {
            l.point_completed(PointCompleted {
                run_id: msg.run_id.clone(),
                point: msg.point,
                step: msg.step,
                rows: batch.clone(),
            });
        }
        Ok(PointAck { rows })
    }

    /// Calls `listener` after every completed point from now on.
    pub fn add_point_listener(&self, listener: Arc<dyn PointListener>) {
        self.listeners
            .write()
            .expect("listeners lock")
            .push(listener);
    }

    /// A run's labels and whether it is closed; `None` for an unknown run.
    pub fn run_labels(&self, run_id: &str) -> Option<(RunLabels, bool)> {
        let inner = self.inner.lock().expect("store lock");
        inner
            .runs
            .get(run_id)
            .map(|r| (r.row.labels.clone(), r.row.status == "closed"))
    }

    /// Stores identification rows durably (logged before this returns) and makes them
    /// queryable. Every row is checked first: a bad row stores none of them.
    pub fn put_identifications(&self, rows: Vec<IdentificationRow>) -> Result<()> {
        self.writable()?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("store lock");
        for r in &rows {
            r.check().map_err(Error::InvalidArgument)?;
            if !inner.runs.contains_key(&r.run_id) {
                return Err(Error::NotFound(format!(
                    "identification of unknown run '{}'",
                    r.run_id
                )));
            }
        }
        let batch = identifications_batch(&rows);
        self.commit(&mut inner, Record::Identifications { rows })?;
        self.view
            .write()
            .expect("query view lock")
            .identifications_tail
            .push(batch);
        Ok(())
    }

    /// Gives every rule of `rules` a column in the `identifications` view (rebuilt when one is
    /// new; columns are never taken away while the daemon runs).
    pub async fn add_identification_rules(&self, rules: &BTreeSet<String>) -> Result<()> {
        let mut rebuild = false;
        loop {
            // The view is built outside the lock; a concurrent call that widened the set
            // meanwhile makes this one build again with the wider set.
            let all = {
                let mut known = self.view_rules.lock().expect("view rules lock");
                if !rebuild
                    && let Some(k) = known.as_ref()
                    && rules.iter().all(|r| k.contains(r))
                {
                    return Ok(());
                }
                let mut all = known.clone().unwrap_or_default();
                all.extend(rules.iter().cloned());
                *known = Some(all.clone());
                all
            };
            self.ctx.sql(&view_sql(&all)).await?;
            if self.view_rules.lock().expect("view rules lock").as_ref() == Some(&all) {
                return Ok(());
            }
            rebuild = true;
        }
    }

    /// Closes a run; points not completed are dropped. Closing twice is a no-op.
    pub fn close_run(&self, msg: &CloseRun) -> Result<()> {
        self.writable()?;
        check_protocol(msg.protocol)?;
        let mut inner = self.inner.lock().expect("store lock");
        match inner.runs.get(&msg.run_id) {
            None => {
                return Err(Error::NotFound(format!("unknown run '{}'", msg.run_id)));
            }
            Some(r) if r.row.status == "closed" => return Ok(()),
            Some(_) => {}
        }
        self.commit(
            &mut inner,
            Record::CloseRun {
                run_id: msg.run_id.clone(),
                at_ms: now_ms(),
            },
        )?;
        self.refresh_runs(&inner);
        Ok(())
    }

    /// Appends a record to the log (durably), then applies it.
    fn commit(&self, inner: &mut Inner, record: Record) -> Result<()> {
        wal_of(inner)?.append(std::slice::from_ref(&record))?;
        inner.dirty = true;
        self.apply(inner, record)
    }

    /// Applies a logged record to the in-memory state (at ingest and at replay).
    fn apply(&self, inner: &mut Inner, record: Record) -> Result<()> {
        match record {
            Record::OpenRun { run, opened_at_ms } => {
                inner
                    .runs
                    .entry(run.run_id.clone())
                    .or_insert_with(|| RunState {
                        row: RunRow {
                            run_id: run.run_id.clone(),
                            labels: run.labels.clone(),
                            status: "open",
                            opened_at_ms,
                            closed_at_ms: None,
                        },
                        layers: BTreeMap::new(),
                        pending: BTreeMap::new(),
                        completed: BTreeSet::new(),
                    });
            }
            Record::Snapshot {
                run_id,
                point,
                layer,
                measure,
                batches,
                results,
            } => {
                let Some(run) = inner.runs.get_mut(&run_id) else {
                    return Err(Error::Corrupt(format!(
                        "the log holds a snapshot of unknown run '{run_id}'"
                    )));
                };
                let index = layer.index;
                run.layers.entry(index).or_insert(layer);
                let state = run
                    .pending
                    .entry(point)
                    .or_default()
                    .layers
                    .entry(index)
                    .or_default()
                    .measures
                    .entry(measure_key(measure))
                    .or_default();
                state.batches.extend(batches);
                for (model, value) in results {
                    match (state.results.get_mut(&model), value) {
                        (Some(ResultValue::Partial(a)), ResultValue::Partial(b)) => a.merge(&b)?,
                        (_, v) => {
                            state.results.insert(model, v);
                        }
                    }
                }
            }
            Record::CompletePoint {
                run_id,
                point,
                step,
                diagnostics,
            } => {
                let (rows, diagnostics) =
                    self.completion(inner, &run_id, point, step, diagnostics)?;
                finish_completion(inner, &run_id, point, rows, diagnostics);
            }
            Record::Identifications { rows } => inner.identifications.extend(rows),
            Record::CloseRun { run_id, at_ms } => {
                if let Some(run) = inner.runs.get_mut(&run_id) {
                    if !run.pending.is_empty() {
                        tracing::warn!(
                            run_id,
                            points = run.pending.len(),
                            "run closed with points never completed; they are dropped"
                        );
                    }
                    run.pending.clear();
                    run.row.status = "closed";
                    run.row.closed_at_ms = Some(at_ms);
                }
            }
        }
        Ok(())
    }

    /// The rows a point's completion adds (observables and diagnostics), from the state
    /// before it; nothing changes.
    fn completion(
        &self,
        inner: &Inner,
        run_id: &str,
        point: u32,
        step: Option<i64>,
        diagnostics: Vec<Diagnostic>,
    ) -> Result<(Vec<ObservableRow>, Vec<DiagnosticRow>)> {
        let Some(run) = inner.runs.get(run_id) else {
            return Err(Error::Corrupt(format!(
                "the log completes a point of unknown run '{run_id}'"
            )));
        };
        let empty = PendingPoint::default();
        let pending = run.pending.get(&point).unwrap_or(&empty);
        let rows = self.rows(run_id, point, step, &run.layers, pending)?;
        let diagnostics = diagnostics
            .into_iter()
            .map(|d| {
                let layer = run.layers.get(&d.layer_index).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "the log holds a diagnostic of unknown layer {} of run '{run_id}'",
                        d.layer_index
                    ))
                })?;
                Ok(DiagnosticRow {
                    run_id: run_id.to_string(),
                    point,
                    step,
                    layer_index: d.layer_index,
                    layer_name: layer.name.clone(),
                    name: d.name,
                    value: d.value,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, diagnostics))
    }

    /// The rows of a completed point: one per layer × model.
    fn rows(
        &self,
        run_id: &str,
        point: u32,
        step: Option<i64>,
        layers: &BTreeMap<u32, LayerInfo>,
        pending: &PendingPoint,
    ) -> Result<Vec<ObservableRow>> {
        let mut rows = Vec::new();
        for (index, layer) in &pending.layers {
            let info = &layers[index];
            for (model, _) in &self.models {
                let mut values = Vec::with_capacity(45);
                for (measure, key) in [
                    (Measure::Weight, "weight"),
                    (Measure::Act, "act"),
                    (Measure::GradAvg, "gradavg"),
                ] {
                    let n = measure.observable_count();
                    match layer.measures.get(key).and_then(|m| m.results.get(model)) {
                        Some(ResultValue::Final(v)) => values.extend(v.iter().copied()),
                        Some(ResultValue::Partial(p)) => values.extend(
                            p.finish()?
                                .values()
                                .iter()
                                .map(|v| (!v.is_nan()).then_some(*v)),
                        ),
                        Some(ResultValue::Undefined) | None => {
                            values.extend(std::iter::repeat_n(None, n))
                        }
                    }
                }
                rows.push(ObservableRow {
                    run_id: run_id.to_string(),
                    point,
                    step,
                    layer_index: *index,
                    layer_name: info.name.clone(),
                    position: info.position.as_str(),
                    model: model.clone(),
                    values,
                });
            }
        }
        Ok(rows)
    }

    /// Publishes the `runs` table (after a run is opened or closed).
    fn refresh_runs(&self, inner: &Inner) {
        let runs = runs_batch(inner.runs.values().map(|r| &r.row));
        self.view.write().expect("query view lock").runs = runs;
    }

    /// Points queries at the Parquet files `manifest` names.
    fn publish_files(&self, view: &mut QueryView, manifest: &Manifest) {
        let files = |sub: &str, names: &[String]| {
            names
                .iter()
                .map(|f| self.files.location(&format!("{sub}/{f}")))
                .collect::<Vec<_>>()
        };
        view.files = files("observables", &manifest.observables);
        view.diagnostics_files = files("diagnostics", &manifest.diagnostics);
        view.identifications_files = files("identifications", &manifest.identifications);
    }

    /// Publishes runs, layers and files to queries; `tail` also replaces the tail rows (after a
    /// replay or a checkpoint — a completed point only appends its own rows).
    fn refresh_view(&self, inner: &Inner, tail: bool) {
        let runs = runs_batch(inner.runs.values().map(|r| &r.row));
        let layers =
            vec![layers_batch(inner.runs.iter().flat_map(|(id, r)| {
                r.layers.values().map(move |l| (id.as_str(), l))
            }))];
        let mut view = self.view.write().expect("query view lock");
        view.runs = runs;
        view.layers = layers;
        self.publish_files(&mut view, &inner.manifest);
        if tail {
            view.tail = if inner.tail.is_empty() {
                Vec::new()
            } else {
                vec![observables_batch(&inner.tail)]
            };
            view.diagnostics_tail = if inner.diagnostics.is_empty() {
                Vec::new()
            } else {
                vec![diagnostics_batch(&inner.diagnostics)]
            };
            view.identifications_tail = if inner.identifications.is_empty() {
                Vec::new()
            } else {
                vec![identifications_batch(&inner.identifications)]
            };
        }
    }

    /// Moves the rows in memory to new Parquet files, rewrites `runs` and `layers`, and moves
    /// the log on to a new segment, without holding up ingest or queries while files are
    /// written (InfluxDB 3's persister):
    ///
    /// 1. under the store lock, with no file I/O: the log switches to a segment created
    ///    beforehand, the rows in memory are taken out (queries keep seeing them: the query view
    ///    is not touched), and what is still pending (open runs, points not completed) and the
    ///    `runs` / `layers` rows are copied;
    /// 2. without the lock: the Parquet files, the pending image (`wal/NNNNNNNN.image`) and the
    ///    manifest, which names the new files and is replaced last (atomically);
    /// 3. under the lock again: queries switch to the new files and the rows that arrived
    ///    meanwhile, in one step (no row is seen twice or missed); then, without it, files the
    ///    manifest no longer names are removed.
    ///
    /// Nothing is lost if the process dies at any step: until the manifest is replaced, the
    /// previous one names the previous files and the segments from which the log replays, the
    /// new segment included. If a write fails, the rows go back to memory for the next try.
    pub fn checkpoint(&self) -> Result<()> {
        if self.config.read_only {
            return Ok(());
        }
        let _one = self.checkpointing.lock().expect("checkpoint lock");
        if self
            .inner
            .lock()
            .expect("store lock")
            .nothing_to_checkpoint()
        {
            return Ok(());
        }
        self.number_after_existing()?;
        let wal_dir = self.dir.join("wal");
        // The next segment, created (header, fsync) before the store lock is taken.
        let (segment, seq) = {
            let mut inner = self.inner.lock().expect("store lock");
            if inner.nothing_to_checkpoint() {
                return Ok(());
            }
            (wal_of(&mut inner)?.seq + 1, inner.manifest.next_seq)
        };
        let wal = WalWriter::create(&wal_dir, segment, self.config.sync)?;

        // 1. Swap, under the lock.
        let (taken, published, runs, layers, image, mut manifest) = {
            let mut inner = self.inner.lock().expect("store lock");
            inner.wal = Some(wal);
            inner.dirty = false;
            let taken = (
                std::mem::take(&mut inner.tail),
                std::mem::take(&mut inner.diagnostics),
                std::mem::take(&mut inner.identifications),
            );
            // The query view's batches of the rows taken (they are published in order, under
            // this lock): dropped from the view when the files that hold them are published.
            let published = {
                let view = self.view.read().expect("query view lock");
                (
                    view.tail.len(),
                    view.diagnostics_tail.len(),
                    view.identifications_tail.len(),
                )
            };
            let runs: Vec<RunRow> = inner.runs.values().map(|r| r.row.clone()).collect();
            let layers: Vec<(String, LayerInfo)> = inner
                .runs
                .iter()
                .flat_map(|(id, r)| r.layers.values().map(move |l| (id.clone(), l.clone())))
                .collect();
            (
                taken,
                published,
                runs,
                layers,
                pending_image(&inner.runs),
                inner.manifest.clone(),
            )
        };

        // 2. Write, without the lock.
        let written =
            self.write_checkpoint(seq, segment, &taken, &runs, &layers, &image, &mut manifest);

        // 3. Publish (or give the rows back), under the lock.
        let mut inner = self.inner.lock().expect("store lock");
        if let Err(e) = written {
            let (mut tail, mut diagnostics, mut identifications) = taken;
            tail.append(&mut inner.tail);
            diagnostics.append(&mut inner.diagnostics);
            identifications.append(&mut inner.identifications);
            (inner.tail, inner.diagnostics, inner.identifications) =
                (tail, diagnostics, identifications);
            inner.dirty = true;
            // The next try writes files of new names (an object store's files are created,
            // never replaced); what this one wrote is removed as unlisted later.
            inner.manifest.next_seq = inner.manifest.next_seq.max(seq + 1);
            return Err(e);
        }
        inner.manifest = manifest.clone();
        let retired = inner.still_retired();
        // The new files replace the taken rows' batches in one step: O(1), nothing rebuilt.
        {
            let mut view = self.view.write().expect("query view lock");
            self.publish_files(&mut view, &manifest);
            view.tail.drain(..published.0);
            view.diagnostics_tail.drain(..published.1);
            view.identifications_tail.drain(..published.2);
        }
        drop(inner);
        remove_orphans(&self.files, &wal_dir, &manifest, &retired, false)?;
        tracing::debug!(rows = taken.0.len(), seq, "checkpoint");
        Ok(())
    }

    /// Step 2 of [`Store::checkpoint`]: the files, then the manifest (last, atomically).
    #[allow(clippy::too_many_arguments)]
    fn write_checkpoint(
        &self,
        seq: u64,
        segment: u64,
        (tail, diagnostics, identifications): &(
            Vec<ObservableRow>,
            Vec<DiagnosticRow>,
            Vec<IdentificationRow>,
        ),
        runs: &[RunRow],
        layers: &[(String, LayerInfo)],
        image: &[Record],
        manifest: &mut Manifest,
    ) -> Result<()> {
        let part = format!("part-{seq:08}.parquet");
        if !tail.is_empty() {
            let batch = sort_by(
                &observables_batch(tail),
                &["run_id", "layer_index", "point", "model"],
            )?;
            self.files.write_parquet(
                &format!("observables/{part}"),
                &OBSERVABLES_SCHEMA,
                &[batch],
                ROW_GROUP_ROWS,
            )?;
            manifest.observables.push(part.clone());
        }
        if !diagnostics.is_empty() {
            let batch = sort_by(
                &diagnostics_batch(diagnostics),
                &["run_id", "layer_index", "point", "name"],
            )?;
            self.files.write_parquet(
                &format!("diagnostics/{part}"),
                &DIAGNOSTICS_SCHEMA,
                &[batch],
                ROW_GROUP_ROWS,
            )?;
            manifest.diagnostics.push(part.clone());
        }
        if !identifications.is_empty() {
            let batch = sort_by(
                &identifications_batch(identifications),
                &["run_id", "identifier", "point"],
            )?;
            self.files.write_parquet(
                &format!("identifications/{part}"),
                &IDENTIFICATIONS_SCHEMA,
                &[batch],
                ROW_GROUP_ROWS,
            )?;
            manifest.identifications.push(part);
        }
        let runs_name = format!("runs-{seq:08}.parquet");
        self.files.write_parquet(
            &format!("runs/{runs_name}"),
            &RUNS_SCHEMA,
            &[runs_batch(runs.iter())],
            ROW_GROUP_ROWS,
        )?;
        let layers_name = format!("layers-{seq:08}.parquet");
        self.files.write_parquet(
            &format!("layers/{layers_name}"),
            &LAYERS_SCHEMA,
            &[layers_batch(layers.iter().map(|(id, l)| (id.as_str(), l)))],
            ROW_GROUP_ROWS,
        )?;
        crate::wal::write_image(&self.dir.join("wal"), segment, image)?;
        manifest.runs = Some(runs_name);
        manifest.layers = Some(layers_name);
        manifest.wal_from = segment;
        manifest.wal_image = Some(segment);
        manifest.next_seq = seq + 1;
        manifest.format = MANIFEST_FORMAT;
        self.write_manifest(manifest)
    }

    /// Replaces the manifest (atomically; in an object store only over the version this
    /// daemon read or wrote last).
    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        self.files
            .write_manifest(serde_json::to_vec_pretty(manifest).expect("manifest"))
    }
}

impl Store {
    /// In an object store, before this process writes its first file (under the checkpoint
    /// lock): files left by a checkpoint that died between its files and its manifest keep
    /// their names (files are created, never replaced), so new files are numbered after every
    /// file of the node. Listing the bucket here, not at start, lets a daemon start while its
    /// bucket refuses; a checkpoint then fails and tries again.
    fn number_after_existing(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.files.remote().is_none() || self.numbered.load(Ordering::Acquire) {
            return Ok(());
        }
        let next = next_free_seq(&self.files)?;
        let mut inner = self.inner.lock().expect("store lock");
        inner.manifest.next_seq = inner.manifest.next_seq.max(next);
        self.numbered.store(true, Ordering::Release);
        Ok(())
    }
}

impl Inner {
    /// No log record and no row since the last checkpoint.
    fn nothing_to_checkpoint(&self) -> bool {
        !self.dirty
            && self.tail.is_empty()
            && self.diagnostics.is_empty()
            && self.identifications.is_empty()
    }

    /// The retired files still kept; forgets those kept long enough (the caller removes them).
    fn still_retired(&mut self) -> Vec<String> {
        self.retired
            .retain(|(_, at)| at.elapsed() < RETIRED_FILES_KEPT);
        self.retired.iter().map(|(p, _)| p.clone()).collect()
    }
}

impl Store {
    /// Whether a table has enough small files for [`Store::compact`] to run in the background
    /// (`compact_min_files`).
    pub fn needs_compaction(&self) -> bool {
        if self.config.compact_min_files == 0 || self.config.read_only {
            return false;
        }
        let manifest = self.inner.lock().expect("store lock").manifest.clone();
        [
            ("observables", &manifest.observables),
            ("diagnostics", &manifest.diagnostics),
        ]
        .iter()
        .any(|(sub, files)| {
            self.small_files(sub, files).len() >= self.config.compact_min_files.max(2)
        })
    }

    /// The files of `names` (in `sub`) smaller than the compaction target, in order.
    fn small_files(&self, sub: &str, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| {
                self.files
                    .size(&format!("{sub}/{n}"))
                    .is_ok_and(|len| len < self.config.compact_target_bytes)
            })
            .cloned()
            .collect()
    }

    /// Merges the small Parquet files of `observables` and `diagnostics` (those under
    /// `compact_target_bytes`) into files sorted by run, point and layer, so that a trajectory
    /// query reads few row groups. Like a checkpoint it writes outside the store lock and swaps
    /// the manifest and the query view in one step: a query sees the old files or the new
    /// ones, never both, never neither; the old files stay on disk for a while
    /// ([`RETIRED_FILES_KEPT`]) for queries planned before the swap. Runs beside ingest and
    /// queries; waits for a running checkpoint (and a checkpoint for it).
    pub fn compact(&self) -> Result<CompactReport> {
        if self.config.read_only {
            return Ok(CompactReport::default());
        }
        let _one = self.checkpointing.lock().expect("checkpoint lock");
        self.number_after_existing()?;
        let mut manifest = self.inner.lock().expect("store lock").manifest.clone();
        let compacted = self.compact_files(&mut manifest);
        if compacted.is_err() {
            // The next try writes files of new names (see `checkpoint`).
            let mut inner = self.inner.lock().expect("store lock");
            inner.manifest.next_seq = inner.manifest.next_seq.max(manifest.next_seq);
        }
        compacted
    }

    /// [`Store::compact`]'s work, under the checkpoint lock; `manifest` is the current one.
    fn compact_files(&self, manifest: &mut Manifest) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let mut replaced: Vec<String> = Vec::new();
        for (sub, schema, keys) in [
            (
                "observables",
                &*OBSERVABLES_SCHEMA,
                &["run_id", "point", "layer_index", "model"][..],
            ),
            (
                "diagnostics",
                &*DIAGNOSTICS_SCHEMA,
                &["run_id", "point", "layer_index", "name"][..],
            ),
        ] {
            let names = match sub {
                "observables" => manifest.observables.clone(),
                _ => manifest.diagnostics.clone(),
            };
            let small = self.small_files(sub, &names);
            if small.len() < 2 {
                continue;
            }
            // Runs of small files up to the target size, one output each.
            let mut groups: Vec<Vec<String>> = vec![Vec::new()];
            let mut size = 0u64;
            for name in &small {
                let len = self.files.size(&format!("{sub}/{name}"))?;
                if size + len > self.config.compact_target_bytes
                    && !groups.last().expect("a group").is_empty()
                {
                    groups.push(Vec::new());
                    size = 0;
                }
                size += len;
                groups.last_mut().expect("a group").push(name.clone());
            }
            let mut merged_away: Vec<String> = Vec::new();
            let mut written: Vec<String> = Vec::new();
            for group in groups.into_iter().filter(|g| g.len() >= 2) {
                let mut batches = Vec::new();
                for name in &group {
                    batches.extend(self.files.read_parquet(&format!("{sub}/{name}"), None)?);
                }
                let all = arrow::compute::concat_batches(schema, &batches)?;
                report.rows += all.num_rows();
                let sorted = sort_by(&all, keys)?;
                let name = format!("part-{:08}.parquet", manifest.next_seq);
                manifest.next_seq += 1;
                self.files.write_parquet(
                    &format!("{sub}/{name}"),
                    schema,
                    &[sorted],
                    SORTED_ROW_GROUP_ROWS,
                )?;
                report.written += 1;
                replaced.extend(group.iter().map(|n| format!("{sub}/{n}")));
                merged_away.extend(group);
                written.push(name);
            }
            if merged_away.is_empty() {
                continue;
            }
            report.merged.push((
                if sub == "observables" {
                    "observables"
                } else {
                    "diagnostics"
                },
                merged_away.len(),
            ));
            let mut kept: Vec<String> = names
                .into_iter()
                .filter(|n| !merged_away.contains(n))
                .collect();
            kept.extend(written);
            match sub {
                "observables" => manifest.observables = kept,
                _ => manifest.diagnostics = kept,
            }
        }
        if report.written == 0 {
            return Ok(report);
        }
        manifest.format = MANIFEST_FORMAT;
        self.write_manifest(manifest)?;
        let mut inner = self.inner.lock().expect("store lock");
        inner.manifest = manifest.clone();
        let now = std::time::Instant::now();
        inner
            .retired
            .extend(replaced.iter().map(|p| (p.clone(), now)));
        let retired = inner.still_retired();
        {
            let mut view = self.view.write().expect("query view lock");
            self.publish_files(&mut view, manifest);
        }
        drop(inner);
        remove_orphans(
            &self.files,
            &self.dir.join("wal"),
            manifest,
            &retired,
            false,
        )?;
        tracing::info!(merged = ?report.merged, written = report.written, rows = report.rows, "compacted");
        Ok(report)
    }
}

/// Applies a point's completion whose rows [`Store::completion`] made: cannot fail.
fn finish_completion(
    inner: &mut Inner,
    run_id: &str,
    point: u32,
    rows: Vec<ObservableRow>,
    diagnostics: Vec<DiagnosticRow>,
) {
    if let Some(run) = inner.runs.get_mut(run_id) {
        run.pending.remove(&point);
        run.completed.insert(point);
    }
    inner.tail.extend(rows);
    inner.diagnostics.extend(diagnostics);
}

/// What a replay needs of the runs still open: their opening and every pending snapshot.
fn pending_image(runs: &BTreeMap<String, RunState>) -> Vec<Record> {
    let mut image = Vec::new();
    for (id, run) in runs {
        if run.row.status == "closed" {
            continue;
        }
        image.push(Record::OpenRun {
            run: OpenRun {
                protocol: PROTOCOL_VERSION,
                run_id: id.clone(),
                labels: run.row.labels.clone(),
            },
            opened_at_ms: run.row.opened_at_ms,
        });
        for (point, p) in &run.pending {
            for (index, layer) in &p.layers {
                for (key, m) in &layer.measures {
                    image.push(Record::Snapshot {
                        run_id: id.clone(),
                        point: *point,
                        layer: run.layers[index].clone(),
                        measure: measure_from_key(key),
                        batches: m.batches.iter().copied().collect(),
                        results: m.results.clone(),
                    });
                }
            }
        }
    }
    image
}

/// Refuses diagnostics of a point that do not name a layer of the run, have an empty or too long
/// name, a non-finite value, or repeat a (layer, name).
fn check_diagnostics(msg: &CompletePoint, layers: &BTreeMap<u32, LayerInfo>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for d in &msg.diagnostics {
        let what = format!(
            "diagnostic {:?} of layer {} at point {} of run '{}'",
            d.name, d.layer_index, msg.point, msg.run_id
        );
        let bad = |why: String| Err(Error::InvalidArgument(format!("{what}: {why}")));
        if !layers.contains_key(&d.layer_index) {
            let known: Vec<String> = layers.keys().map(u32::to_string).collect();
            return bad(format!(
                "the run has no layer {} (layers with snapshots: {})",
                d.layer_index,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        if let Err(why) = d.validate() {
            return bad(why);
        }
        if !seen.insert((d.layer_index, d.name.as_str())) {
            return bad("given twice".into());
        }
    }
    Ok(())
}

fn measure_from_key(key: &str) -> SnapshotMeasure {
    match key {
        "weight" => SnapshotMeasure::Weight,
        "act" => SnapshotMeasure::Act,
        _ => SnapshotMeasure::Gradavg,
    }
}

/// The rows of `batch` sorted by the key columns `keys`.
fn sort_by(batch: &RecordBatch, keys: &[&str]) -> Result<RecordBatch> {
    let columns: Vec<SortColumn> = keys
        .iter()
        .map(|c| SortColumn {
            values: batch.column_by_name(c).expect("key column").clone(),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Deletes files of interrupted or superseded checkpoints.
/// Removes the files of the tables and the log that `manifest` does not name, but for
/// `retired` (files a compaction replaced that a running query may still read).
fn remove_orphans(
    files: &Files,
    wal_dir: &Path,
    manifest: &Manifest,
    retired: &[String],
    keep_unlisted: bool,
) -> Result<()> {
    let set = |names: &[String]| names.iter().cloned().collect::<BTreeSet<_>>();
    if !keep_unlisted {
        files.remove_unlisted(
            &[
                ("observables", set(&manifest.observables)),
                ("diagnostics", set(&manifest.diagnostics)),
                ("identifications", set(&manifest.identifications)),
                ("runs", manifest.runs.iter().cloned().collect()),
                ("layers", manifest.layers.iter().cloned().collect()),
            ],
            retired,
        )?;
    }
    for seq in segments(wal_dir)? {
        if seq < manifest.wal_from {
            let p = crate::wal::segment_path(wal_dir, seq);
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    for seq in crate::wal::images(wal_dir)? {
        if Some(seq) != manifest.wal_image {
            let p = crate::wal::image_path(wal_dir, seq);
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// The table folders of a store, each holding files numbered by checkpoint sequence
/// (`part-NNNNNNNN.parquet`, `runs-NNNNNNNN.parquet`, …).
const TABLE_FOLDERS: [&str; 5] = [
    "observables",
    "diagnostics",
    "identifications",
    "runs",
    "layers",
];

/// One past the highest sequence number of any file in the table folders (1 if none).
fn next_free_seq(files: &Files) -> Result<u64> {
    let mut next = 1;
    for sub in TABLE_FOLDERS {
        for rel in files.list_parquet(sub, false)? {
            let seq = rel
                .rsplit(['-', '/'])
                .next()
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(seq) = seq {
                next = next.max(seq + 1);
            }
        }
    }
    Ok(next)
}

/// Parses a manifest, refusing a newer format than this lrid reads (nothing is changed).
fn parse_manifest(bytes: &[u8], location: &str) -> Result<Manifest> {
    let corrupt = |e: serde_json::Error| Error::Corrupt(format!("{location}: {e}"));
    // The format first: a newer manifest may not parse as this version's.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
    if format > u64::from(MANIFEST_FORMAT) {
        return Err(Error::NewerFormat(format!(
            "{location} is manifest format {format}; this lrid ({}) reads formats 1 to {MANIFEST_FORMAT}: run a newer lrid on this data folder (nothing was changed)",
            env!("CARGO_PKG_VERSION")
        )));
    }
    serde_json::from_value(value).map_err(corrupt)
}

/// A `layers` row: the run and the layer.
type RunLayer = (String, LayerInfo);

/// The `runs` and `layers` rows a manifest names (`base`: the node's folder, or "").
fn load_runs_and_layers(
    files: &Files,
    base: &str,
    manifest: &Manifest,
) -> Result<(Vec<RunRow>, Vec<RunLayer>)> {
    let rel = |sub: &str, f: &str| {
        if base.is_empty() {
            format!("{sub}/{f}")
        } else {
            format!("{base}/{sub}/{f}")
        }
    };
    let runs = match &manifest.runs {
        Some(f) => load_runs(files, &rel("runs", f))?,
        None => Vec::new(),
    };
    let layers = match &manifest.layers {
        Some(f) => load_layers(files, &rel("layers", f))?,
        None => Vec::new(),
    };
    Ok((runs, layers))
}

fn load_runs(files: &Files, rel: &str) -> Result<Vec<RunRow>> {
    let mut rows = Vec::new();
    for b in files.read_parquet(rel, None)? {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let (id, rule, arch, task, hp, status) = (s(0), s(1), s(2), s(3), s(7), s(8));
        let bs = b.column(4).as_primitive::<UInt32Type>().clone();
        let ms = b
            .column(5)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let ds = b
            .column(6)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let opened = b
            .column(9)
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let closed = b
            .column(10)
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let opt_s =
            |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            rows.push(RunRow {
                run_id: id.value(i).to_string(),
                labels: RunLabels {
                    learning_rule: opt_s(&rule, i),
                    architecture: opt_s(&arch, i),
                    task: opt_s(&task, i),
                    batch_size: bs.is_valid(i).then(|| bs.value(i)),
                    model_seed: ms.is_valid(i).then(|| ms.value(i)),
                    data_seed: ds.is_valid(i).then(|| ds.value(i)),
                    hyperparameters: opt_s(&hp, i).and_then(|t| serde_json::from_str(&t).ok()),
                },
                status: if status.value(i) == "closed" {
                    "closed"
                } else {
                    "open"
                },
                opened_at_ms: opened.value(i),
                closed_at_ms: closed.is_valid(i).then(|| closed.value(i)),
            });
        }
    }
    Ok(rows)
}

fn load_layers(files: &Files, rel: &str) -> Result<Vec<(String, LayerInfo)>> {
    let mut out = Vec::new();
    let location = files.location(rel);
    for b in files.read_parquet(rel, None)? {
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let (id, name, position, wshape, ashape) = (s(0), s(2), s(3), s(4), s(6));
        let index = b.column(1).as_primitive::<UInt32Type>().clone();
        let _ = b.column(5).as_primitive::<UInt64Type>();
        let parse = |t: &str| -> Result<Vec<u64>> {
            serde_json::from_str(t)
                .map_err(|e| Error::Corrupt(format!("{location}: shape {t:?}: {e}")))
        };
        for i in 0..b.num_rows() {
            let position: Position =
                serde_json::from_value(serde_json::Value::String(position.value(i).to_string()))
                    .map_err(|e| Error::Corrupt(format!("{location}: {e}")))?;
            out.push((
                id.value(i).to_string(),
                LayerInfo {
                    index: index.value(i),
                    name: name.value(i).to_string(),
                    position,
                    weight_shape: parse(wshape.value(i))?,
                    activation_shape: parse(ashape.value(i))?,
                },
            ));
        }
    }
    Ok(out)
}

/// The log of a writing store.
fn wal_of(inner: &mut Inner) -> Result<&mut WalWriter> {
    inner.wal.as_mut().ok_or_else(read_only_error)
}

fn read_only_error() -> Error {
    Error::FailedPrecondition(
        "this daemon is read-only (lrid serve --read-only): it serves SQL over the object store and takes no ingest; record to a writing daemon".into(),
    )
}

/// What the data folder says of the object store it belongs to (`node.json`), so that its
/// write-ahead log is never replayed into another node's files.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct NodeFile {
    object_store: String,
    node_id: String,
}

/// Where the store's closed files live, by the configuration: the data folder, an object
/// store under `node=<id>/` (the id kept in `node.json`), or, read-only, every node.
fn store_files(config: &StoreConfig, dir: &Path) -> Result<Files> {
    let node_file = dir.join("node.json");
    let kept: Option<NodeFile> = if node_file.exists() {
        let text = std::fs::read(&node_file).map_err(|e| Error::io(&node_file, e))?;
        Some(
            serde_json::from_slice(&text)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", node_file.display())))?,
        )
    } else {
        None
    };
    let Some(url) = &config.object_store else {
        if config.read_only {
            return Err(Error::InvalidArgument(
                "a read-only store serves an object store's files: give one (lrid serve --read-only --store s3://bucket/prefix)".into(),
            ));
        }
        if let Some(k) = kept {
            return Err(Error::InvalidArgument(format!(
                "the data folder {} belongs to node {:?} of {}: its write-ahead log holds that node's data; set [store] object_store = {:?} (or use another data folder)",
                dir.display(),
                k.node_id,
                k.object_store,
                k.object_store
            )));
        }
        return Ok(Files::Local(dir.to_path_buf()));
    };
    crate::files::split_url(url)?;
    if config.read_only {
        return Ok(Files::Remote(RemoteFiles::s3(
            url,
            &config.object_store_options,
            "",
        )?));
    }
    if dir.join(MANIFEST).exists() {
        return Err(Error::InvalidArgument(format!(
            "the data folder {} holds a local store ({MANIFEST}): a daemon writing to {url} needs a data folder of its own",
            dir.display()
        )));
    }
    let node_id = match (&config.node_id, kept) {
        (Some(id), Some(k)) if *id != k.node_id || *url != k.object_store => {
            return Err(Error::InvalidArgument(format!(
                "[store] node_id = {id:?} in {url}, but the data folder {} belongs to node {:?} of {} (its write-ahead log is that node's): use those or another data folder",
                dir.display(),
                k.node_id,
                k.object_store
            )));
        }
        (None, Some(k)) if *url != k.object_store => {
            return Err(Error::InvalidArgument(format!(
                "[store] object_store = {url:?}, but the data folder {} belongs to node {:?} of {} (its write-ahead log is that node's): use that store or another data folder",
                dir.display(),
                k.node_id,
                k.object_store
            )));
        }
        (_, Some(k)) => k.node_id,
        (id, None) => {
            let id = match id {
                Some(id) => id.clone(),
                None => format!(
                    "{:012x}",
                    draw_id(&[
                        &now_ms().to_le_bytes(),
                        &std::process::id().to_le_bytes(),
                        dir.as_os_str().as_encoded_bytes(),
                    ]) & 0xffff_ffff_ffff
                ),
            };
            crate::files::check_node_id(&id)?;
            let text = serde_json::to_vec_pretty(&NodeFile {
                object_store: url.clone(),
                node_id: id.clone(),
            })
            .expect("node file");
            std::fs::write(&node_file, text).map_err(|e| Error::io(&node_file, e))?;
            crate::wal::sync_dir(dir)?;
            id
        }
    };
    crate::files::check_node_id(&node_id)?;
    Ok(Files::Remote(RemoteFiles::s3(
        url,
        &config.object_store_options,
        &format!("{NODE_PREFIX}{node_id}"),
    )?))
}

impl Store {
    /// Refuses a write to a read-only store.
    fn writable(&self) -> Result<()> {
        if self.config.read_only {
            return Err(read_only_error());
        }
        Ok(())
    }

    /// This daemon's node id in its object store (None: the data folder holds the files).
    pub fn node_id(&self) -> Option<String> {
        match self.files.as_ref() {
            Files::Remote(_) if !self.config.read_only => {
                let text = std::fs::read(self.dir.join("node.json")).ok()?;
                serde_json::from_slice::<NodeFile>(&text)
                    .ok()
                    .map(|n| n.node_id)
            }
            _ => None,
        }
    }

    /// Where the closed files are: the data folder, or the object store's URL.
    pub fn location(&self) -> String {
        self.files.describe()
    }

    /// A read-only store: reads every node's manifest, and where one changed, its `runs` and
    /// `layers`; then points queries at every node's files in one step. The rules named by
    /// the identification files of the nodes that changed (for the `identifications` view).
    fn refresh_nodes(&self) -> Result<BTreeSet<String>> {
        let remote = self.files.remote().expect("a read-only store is remote");
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let ids = remote.nodes()?;
        let mut changed = nodes.len() != nodes.keys().filter(|k| ids.contains(k)).count();
        nodes.retain(|k, _| ids.contains(k));
        let mut rules = BTreeSet::new();
        for id in &ids {
            let base = format!("{NODE_PREFIX}{id}");
            let rel = format!("{base}/{MANIFEST}");
            let Some((bytes, _)) = remote.get(&rel)? else {
                continue;
            };
            if nodes.get(id).is_some_and(|n| n.manifest_bytes == bytes) {
                continue;
            }
            let manifest = parse_manifest(&bytes, &remote.url(&rel))?;
            let (runs, layers) = load_runs_and_layers(&self.files, &base, &manifest)?;
            for f in &manifest.identifications {
                let rel = format!("{base}/identifications/{f}");
                for b in self.files.read_parquet(&rel, Some(&["probabilities"]))? {
                    rules.extend(rules_in(&b));
                }
            }
            nodes.insert(
                id.clone(),
                NodeView {
                    manifest_bytes: bytes.to_vec(),
                    manifest,
                    runs,
                    layers,
                },
            );
            changed = true;
        }
        if changed {
            let located = |sub: &str, pick: fn(&Manifest) -> &Vec<String>| {
                nodes
                    .iter()
                    .flat_map(|(id, n)| {
                        pick(&n.manifest).iter().map(move |f| {
                            self.files.location(&format!("{NODE_PREFIX}{id}/{sub}/{f}"))
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let runs = runs_batch(nodes.values().flat_map(|n| n.runs.iter()));
            let layers = layers_batch(
                nodes
                    .values()
                    .flat_map(|n| n.layers.iter().map(|(id, l)| (id.as_str(), l))),
            );
            let mut view = self.view.write().expect("query view lock");
            view.runs = runs;
            view.layers = vec![layers];
            view.files = located("observables", |m| &m.observables);
            view.diagnostics_files = located("diagnostics", |m| &m.diagnostics);
            view.identifications_files = located("identifications", |m| &m.identifications);
            tracing::info!(nodes = nodes.len(), "read the object store's manifests");
        }
        Ok(rules)
    }
}

/// A read-only store's loop: reads the nodes' manifests every `interval` until the store is
/// dropped; a failed read is logged and tried again.
async fn poll_nodes(store: std::sync::Weak<Store>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(s) = store.upgrade() else {
            return;
        };
        let refreshed = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.refresh_nodes()).await
        };
        match refreshed {
            Ok(Ok(rules)) => {
                if let Err(e) = s.add_identification_rules(&rules).await {
                    tracing::warn!("identification rules: {e}");
                }
            }
            Ok(Err(e)) => tracing::warn!("reading the object store: {e}"),
            Err(e) => tracing::warn!("object store refresh task: {e}"),
        }
    }
}
