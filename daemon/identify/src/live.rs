//! Live identification: the daemon's identifiers, kept in `identifiers/<name>.arrow` under the
//! data folder and listed by the SQL table `identifiers`, and the worker that identifies every
//! run as its points complete.
//!
//! The store tells the service of each completed point ([`lrid_store::PointListener`]); the
//! service queues it and returns, so ingest never waits for a classifier. One worker thread
//! takes the queue in order: it keeps, per run in progress, each layer's statistics so far (on
//! first sight of a run that already has points — a daemon restarted mid-run, an identifier
//! added mid-run — it reads them back with SQL), and for every active identifier predicts from
//! the first k points (k = the points the run has so far, at most the identifier's), with the
//! prefix model for k: each layer's probabilities, and the run's as their mean (see
//! [`lrid_classify::early`]). The rows go to the store's `identifications` table, durable
//! before the next point is taken. A classifier that fails gives a `failed: …` row; the worker
//! goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use lrid_classify::dataset::{POSITIONS, statistic_names};
use lrid_classify::early::combine_layers;
use lrid_plugins::PluginHost;
use lrid_protocol::{
    ACTION_DELETE_IDENTIFIER, ACTION_PUT_IDENTIFIER, DeleteIdentifier, IdentifierAck,
};
use lrid_server::{ActionError, ActionHandler};
use lrid_store::{IdentificationRow, PointCompleted, PointListener, Store};

use crate::identifier::{Identifier, LoadedIdentifier, check_name};
use crate::{Error, Result};

/// The SQL table of identifiers.
pub const IDENTIFIERS_TABLE: &str = "identifiers";
/// The folder of identifiers in the data folder.
pub const IDENTIFIERS_DIR: &str = "identifiers";

/// An identifier the daemon keeps: active (its models loaded) or not usable now.
#[derive(Debug, Clone)]
enum Entry {
    Active(Arc<LoadedIdentifier>),
    /// Kept on disk, not used: its classifier is not loaded (or refuses the models).
    Unavailable {
        identifier: Arc<Identifier>,
        reason: String,
    },
}

impl Entry {
    fn identifier(&self) -> &Identifier {
        match self {
            Entry::Active(l) => &l.identifier,
            Entry::Unavailable { identifier, .. } => identifier,
        }
    }

    fn status(&self) -> String {
        match self {
            Entry::Active(_) => "active".into(),
            Entry::Unavailable { reason, .. } => format!("unavailable: {reason}"),
        }
    }
}

enum Job {
    Point(PointCompleted),
    /// Answered once every job queued before it is done.
    Flush(Sender<()>),
}

/// The identifiers and the live identification worker.
pub struct IdentifyService {
    store: Arc<Store>,
    host: Arc<PluginHost>,
    dir: PathBuf,
    entries: RwLock<BTreeMap<String, Entry>>,
    queue: Mutex<Sender<Job>>,
    /// Seconds from a point's arrival in the queue to its rows being stored, last 4096.
    latencies: Mutex<Vec<f64>>,
}

impl std::fmt::Debug for IdentifyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyService")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Hands completed points to the service's queue.
struct Listener(Mutex<Sender<Job>>);

impl PointListener for Listener {
    fn point_completed(&self, event: PointCompleted) {
        // A send fails only when the worker is gone (the daemon is stopping).
        let _ = self.0.lock().expect("queue lock").send(Job::Point(event));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl IdentifyService {
    /// Loads the identifiers in the store's data folder, registers the `identifiers` table,
    /// and starts identifying the points the store completes from now on.
    pub async fn start(store: Arc<Store>, host: Arc<PluginHost>) -> Result<Arc<IdentifyService>> {
        let dir = store.dir().join(IDENTIFIERS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (tx, rx) = channel();
        let service = Arc::new(IdentifyService {
            store: store.clone(),
            host,
            dir: dir.clone(),
            entries: RwLock::new(BTreeMap::new()),
            queue: Mutex::new(tx.clone()),
            latencies: Mutex::new(Vec::new()),
        });
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
            .collect();
        files.sort();
        let mut rules = BTreeSet::new();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
            match Identifier::from_ipc(&bytes) {
                Ok(id) => {
                    rules.extend(id.rules().iter().cloned());
                    let entry = service.load(id);
                    if let Entry::Unavailable { reason, .. } = &entry {
                        tracing::warn!(file = %f.display(), "identifier not usable now: {reason}");
                    }
                    let name = entry.identifier().meta.name.clone();
                    service
                        .entries
                        .write()
                        .expect("entries")
                        .insert(name, entry);
                }
                Err(e) => tracing::error!(file = %f.display(), "identifier skipped: {e}"),
            }
        }
        store.add_identification_rules(&rules).await?;
        store.session().register_table(
            IDENTIFIERS_TABLE,
            Arc::new(IdentifiersTable(Arc::downgrade(&service))),
        )?;
        let worker = Worker {
            service: Arc::downgrade(&service),
            runs: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("lrid-identify".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::io(Path::new("lrid-identify thread"), e))?;
        store.add_point_listener(Arc::new(Listener(Mutex::new(tx))));
        Ok(service)
    }

    /// Loads an identifier's models into its classifier plugin.
    fn load(&self, identifier: Identifier) -> Entry {
        let name = identifier.meta.classifier.clone();
        let plugin = match self.host.classifier(&name) {
            Ok(p) => p,
            Err(e) => {
                return Entry::Unavailable {
                    identifier: Arc::new(identifier),
                    reason: format!("classifier '{name}': {e}"),
                };
            }
        };
        if !plugin.can_save() {
            return Entry::Unavailable {
                identifier: Arc::new(identifier),
                reason: format!("classifier '{name}' cannot load saved models"),
            };
        }
        match LoadedIdentifier::load(identifier.clone(), &plugin) {
            Ok(l) => Entry::Active(Arc::new(l)),
            Err(e) => Entry::Unavailable {
                identifier: Arc::new(identifier),
                reason: format!("classifier '{name}' cannot load the models: {e}"),
            },
        }
    }

    /// Stores an identifier (an Arrow IPC stream), durable and active when this returns.
    pub async fn put(&self, bytes: &[u8]) -> Result<IdentifierAck> {
        let identifier = Identifier::from_ipc(bytes)?;
        let name = identifier.meta.name.clone();
        if self.entries.read().expect("entries").contains_key(&name) {
            return Err(Error::AlreadyExists(format!(
                "an identifier named '{name}' exists; delete it first (lrid identify delete {name})"
            )));
        }
        let entry = self.load(identifier);
        if let Entry::Unavailable { reason, .. } = &entry {
            return Err(Error::InvalidArgument(format!(
                "identifier '{name}' cannot be used by this daemon: {reason}"
            )));
        }
        let path = self.dir.join(format!("{name}.arrow"));
        write_durably(&path, bytes)?;
        let id = entry.identifier();
        self.store
            .add_identification_rules(&id.rules().iter().cloned().collect())
            .await?;
        let ack = IdentifierAck {
            name: name.clone(),
            rules: id.rules().to_vec(),
            points: id.meta.points,
        };
        let mut entries = self.entries.write().expect("entries");
        if entries.contains_key(&name) {
            return Err(Error::AlreadyExists(format!(
                "an identifier named '{name}' was stored meanwhile"
            )));
        }
        entries.insert(name, entry);
        Ok(ack)
    }

    /// Deletes an identifier: it identifies nothing from now on; the rows it wrote stay.
    pub fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut entries = self.entries.write().expect("entries");
        if !entries.contains_key(name) {
            return Err(Error::NotFound(format!(
                "no identifier named '{name}' (identifiers: {})",
                list_or_none(entries.keys())
            )));
        }
        let path = self.dir.join(format!("{name}.arrow"));
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        crate::sync_dir(&self.dir)?;
        entries.remove(name);
        Ok(())
    }

    /// Waits until every point completed before this call is identified.
    pub fn flush(&self) {
        let (tx, rx) = channel();
        if self
            .queue
            .lock()
            .expect("queue lock")
            .send(Job::Flush(tx))
            .is_ok()
        {
            let _ = rx.recv();
        }
    }

    /// Seconds from a point's completion to its identification rows being stored (the last
    /// 4096 points identified).
    pub fn latencies(&self) -> Vec<f64> {
        self.latencies.lock().expect("latencies").clone()
    }

    fn active(&self) -> Vec<Arc<LoadedIdentifier>> {
        // An identifier whose classifier was not loaded at its turn is tried again.
        let retry: Vec<(String, Identifier)> = self
            .entries
            .read()
            .expect("entries")
            .iter()
            .filter_map(|(n, e)| match e {
                Entry::Unavailable { identifier, .. }
                    if self.host.classifier(&identifier.meta.classifier).is_ok() =>
                {
                    Some((n.clone(), (**identifier).clone()))
                }
                _ => None,
            })
            .collect();
        for (name, id) in retry {
            let entry = self.load(id);
            if matches!(entry, Entry::Active(_)) {
                tracing::info!(
                    identifier = name,
                    "identifier active: its classifier is loaded"
                );
                let mut entries = self.entries.write().expect("entries");
                if entries.contains_key(&name) {
                    entries.insert(name, entry);
                }
            }
        }
        self.entries
            .read()
            .expect("entries")
            .values()
            .filter_map(|e| match e {
                Entry::Active(l) => Some(l.clone()),
                Entry::Unavailable { .. } => None,
            })
            .collect()
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Writes a file durably: a temporary file, fsync, rename, fsync of the folder.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("arrow.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    crate::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[tonic::async_trait]
impl ActionHandler for IdentifyService {
    fn actions(&self) -> Vec<(String, String)> {
        vec![
            (
                ACTION_PUT_IDENTIFIER.into(),
                "Store an identifier (Arrow IPC stream; lrid identify fit)".into(),
            ),
            (
                ACTION_DELETE_IDENTIFIER.into(),
                "Delete an identifier (JSON DeleteIdentifier)".into(),
            ),
        ]
    }

    async fn do_action(&self, kind: &str, body: bytes::Bytes) -> Result<Vec<u8>, ActionError> {
        match kind {
            ACTION_PUT_IDENTIFIER => {
                let ack = self.put(&body).await.map_err(crate::action_error)?;
                Ok(serde_json::to_vec(&ack).expect("ack"))
            }
            ACTION_DELETE_IDENTIFIER => {
                let msg: DeleteIdentifier = serde_json::from_slice(&body).map_err(|e| {
                    ActionError::InvalidArgument(format!(
                        "the body of '{ACTION_DELETE_IDENTIFIER}' is not valid: {e}"
                    ))
                })?;
                self.delete(&msg.name).map_err(crate::action_error)?;
                Ok(b"{}".to_vec())
            }
            other => Err(ActionError::InvalidArgument(format!(
                "the identification service does not serve '{other}'"
            ))),
        }
    }
}

/// One layer's admissible statistics so far, by point.
#[derive(Debug, Default)]
struct LayerTrajectory {
    name: String,
    position: String,
    points: BTreeMap<u32, Vec<f64>>,
}

impl LayerTrajectory {
    /// Points 0, 1, … present without a gap.
    fn contiguous(&self) -> usize {
        self.points
            .keys()
            .enumerate()
            .take_while(|(i, p)| **p as usize == *i)
            .count()
    }
}

/// What the worker keeps of a run in progress.
#[derive(Debug, Default)]
struct RunCache {
    architecture: Option<String>,
    /// By (measurement model, layer index).
    layers: BTreeMap<(String, u32), LayerTrajectory>,
}

impl RunCache {
    /// Adds rows of the observables table (any points, layers, models).
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = |n: &str| {
            batch.column_by_name(n).ok_or_else(|| {
                Error::InvalidArgument(format!("observables rows without column '{n}'"))
            })
        };
        let cast =
            |n: &str, t: &DataType| -> Result<ArrayRef> { Ok(arrow::compute::cast(col(n)?, t)?) };
        let point = cast("point", &DataType::UInt32)?;
        let point = point.as_primitive::<UInt32Type>();
        let index = cast("layer_index", &DataType::UInt32)?;
        let index = index.as_primitive::<UInt32Type>();
        let name = cast("layer_name", &DataType::Utf8)?;
        let name = name.as_string::<i32>();
        let position = cast("position", &DataType::Utf8)?;
        let position = position.as_string::<i32>();
        let model = cast("model", &DataType::Utf8)?;
        let model = model.as_string::<i32>();
        let stats: Vec<ArrayRef> = STATISTICS
            .iter()
            .map(|s| cast(s, &DataType::Float64))
            .collect::<Result<_>>()?;
        let stats: Vec<&Float64Array> = stats
            .iter()
            .map(|a| a.as_primitive::<Float64Type>())
            .collect();
        for i in 0..batch.num_rows() {
            let layer = self
                .layers
                .entry((model.value(i).to_string(), index.value(i)))
                .or_default();
            layer.name = name.value(i).to_string();
            layer.position = position.value(i).to_string();
            layer.points.insert(
                point.value(i),
                stats
                    .iter()
                    .map(|a| if a.is_valid(i) { a.value(i) } else { f64::NAN })
                    .collect(),
            );
        }
        Ok(())
    }
}

static STATISTICS: LazyLock<Vec<String>> = LazyLock::new(statistic_names);

struct Worker {
    service: std::sync::Weak<IdentifyService>,
    runs: HashMap<String, RunCache>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("live identification cannot start: {e}");
                return;
            }
        };
        while let Ok(job) = rx.recv() {
            let Some(service) = self.service.upgrade() else {
                return;
            };
            match job {
                Job::Flush(done) => {
                    let _ = done.send(());
                }
                Job::Point(event) => {
                    let started = Instant::now();
                    match self.identify(&service, &runtime, &event) {
                        Ok(true) => {
                            let mut l = service.latencies.lock().expect("latencies");
                            if l.len() >= 4096 {
                                l.remove(0);
                            }
                            l.push(started.elapsed().as_secs_f64());
                        }
                        Ok(false) => {}
                        Err(e) => tracing::error!(
                            run_id = event.run_id,
                            point = event.point,
                            "live identification failed: {e}"
                        ),
                    }
                }
            }
        }
    }

    /// Identifies the run of `event` with every active identifier; whether rows were stored.
    fn identify(
        &mut self,
        service: &IdentifyService,
        runtime: &tokio::runtime::Runtime,
        event: &PointCompleted,
    ) -> Result<bool> {
        let identifiers = service.active();
        // Runs closed since: their trajectories are no longer needed.
        self.runs.retain(|id, _| {
            id == &event.run_id
                || service
                    .store
                    .run_labels(id)
                    .is_some_and(|(_, closed)| !closed)
        });
        if identifiers.is_empty() {
            self.runs.clear();
            return Ok(false);
        }
        if !self.runs.contains_key(&event.run_id) {
            let mut cache = RunCache {
                architecture: service
                    .store
                    .run_labels(&event.run_id)
                    .and_then(|(l, _)| l.architecture),
                ..RunCache::default()
            };
            if event.point > 0 {
                let sql = format!(
                    "SELECT point, layer_index, layer_name, position, model, {} FROM observables WHERE run_id = '{}' AND point < {}",
                    STATISTICS.join(", "),
                    event.run_id.replace('\'', "''"),
                    event.point
                );
                let batches = runtime
                    .block_on(async { service.store.session().sql(&sql).await?.collect().await })?;
                for b in &batches {
                    cache.add(b)?;
                }
            }
            self.runs.insert(event.run_id.clone(), cache);
        }
        let cache = self.runs.get_mut(&event.run_id).expect("cached run");
        cache.add(&event.rows)?;
        let at_ms = now_ms();
        let mut rows = Vec::new();
        for id in &identifiers {
            rows.extend(identify_run(id, &event.run_id, event.point, cache, at_ms));
        }
        if rows.is_empty() {
            return Ok(false);
        }
        service.store.put_identifications(rows)?;
        Ok(true)
    }
}

/// The rows of one identifier for a run at `point`: one per layer and one for the run.
fn identify_run(
    loaded: &LoadedIdentifier,
    run_id: &str,
    point: u32,
    cache: &RunCache,
    at_ms: i64,
) -> Vec<IdentificationRow> {
    let id = &loaded.identifier;
    let meta = &id.meta;
    let layers: Vec<(u32, &LayerTrajectory)> = cache
        .layers
        .iter()
        .filter(|((m, _), _)| m == &meta.model)
        .map(|((_, i), l)| (*i, l))
        .collect();
    if layers.is_empty() {
        return Vec::new();
    }
    let seen = layers
        .iter()
        .map(|(_, l)| l.contiguous())
        .min()
        .unwrap_or(0);
    // Points beyond a gap, or a point not yet reached by every layer, wait.
    if seen == 0 || point as usize >= seen {
        return Vec::new();
    }
    let k = seen.min(meta.points);
    let mut note = match &cache.architecture {
        Some(a) if !meta.architectures.contains(a) => Some(format!(
            "architecture '{a}' was not in the identifier's training corpus ({})",
            meta.architectures.join(", ")
        )),
        None => Some("the run names no architecture".to_string()),
        _ => None,
    };
    if seen > meta.points {
        let more = format!(
            "the run has more points than the identifier's corpus ({}); the first {} are used",
            meta.points, meta.points
        );
        note = Some(note.map_or(more.clone(), |n| format!("{n}; {more}")));
    }
    let row = |layer: Option<(u32, &LayerTrajectory)>,
               probabilities: Vec<(String, f64)>,
               status: String| {
        IdentificationRow {
            run_id: run_id.to_string(),
            point,
            points_seen: k as u32,
            identifier: meta.name.clone(),
            layer_index: layer.map(|(i, _)| i),
            layer_name: layer.map(|(_, l)| l.name.clone()),
            probabilities,
            status,
            note: note.clone(),
            at_ms,
        }
    };
    let stats = id.measure().statistics();
    let (cols, _) = id.layout(k);
    let mut x = Vec::with_capacity(layers.len() * cols);
    let mut usable = Vec::new();
    let mut out = Vec::new();
    for &(index, layer) in &layers {
        let mut features = Vec::with_capacity(cols);
        for p in POSITIONS {
            features.push(if layer.position == p { 1.0 } else { 0.0 });
        }
        let mut bad = None;
        for &s in &stats {
            for t in 0..k as u32 {
                let v = layer.points[&t][s];
                if !v.is_finite() && bad.is_none() {
                    bad = Some(format!(
                        "{} is {} at point {t}",
                        STATISTICS[s],
                        if v.is_nan() { "missing" } else { "not finite" }
                    ));
                }
                features.push(v);
            }
        }
        match bad {
            Some(why) => out.push(row(
                Some((index, layer)),
                Vec::new(),
                format!("failed: {why}"),
            )),
            None => {
                x.extend(features);
                usable.push((index, layer));
            }
        }
    }
    if usable.is_empty() {
        out.push(row(
            None,
            Vec::new(),
            "failed: no layer has finite statistics".into(),
        ));
        return out;
    }
    let mut z = id.zscore(k);
    z.cols = cols;
    z.apply(&mut x);
    let (_, layout) = id.layout(k);
    let probs = match loaded.models[k - 1].predict_proba(x, cols, layout) {
        Ok(p) => p,
        Err(e) => {
            out.push(row(None, Vec::new(), format!("failed: {e}")));
            return out;
        }
    };
    let n = meta.rules.len();
    let per_layer: Vec<Vec<f64>> = probs.chunks(n).map(<[f64]>::to_vec).collect();
    let named = |p: &[f64]| -> Vec<(String, f64)> {
        meta.rules
            .iter()
            .cloned()
            .zip(p.iter().map(|v| v.clamp(0.0, 1.0)))
            .collect()
    };
    for (&(index, layer), p) in usable.iter().zip(&per_layer) {
        out.push(row(Some((index, layer)), named(p), "ok".into()));
    }
    out.push(row(None, named(&combine_layers(&per_layer)), "ok".into()));
    out
}

static IDENTIFIERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        // "active", or "unavailable: <why>".
        Field::new("status", DataType::Utf8, false),
        Field::new("classifier", DataType::Utf8, false),
        Field::new("classifier_version", DataType::Utf8, false),
        Field::new("config", DataType::Utf8, false),
        Field::new("where_predicate", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, false),
        Field::new("measure", DataType::Utf8, false),
        Field::new("rules", list(DataType::Utf8), false),
        Field::new("points", DataType::UInt32, false),
        Field::new("examples", DataType::UInt64, false),
        Field::new("runs", DataType::UInt64, false),
        Field::new("held_out_runs", DataType::UInt64, false),
        Field::new("architectures", list(DataType::Utf8), false),
        // Held-out accuracy with the first k points, k = 1..points: layers, runs.
        Field::new("accuracy", list(DataType::Float64), false),
        Field::new("run_accuracy", list(DataType::Float64), false),
        Field::new("created_at", DataType::Utf8, false),
    ]))
});

/// `identifiers`, read from the service at every query.
#[derive(Debug)]
struct IdentifiersTable(std::sync::Weak<IdentifyService>);

impl IdentifiersTable {
    fn batch(&self) -> datafusion::error::Result<RecordBatch> {
        let entries: Vec<Entry> = self
            .0
            .upgrade()
            .map(|s| {
                s.entries
                    .read()
                    .expect("entries")
                    .values()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let strings = |f: &dyn Fn(&Entry) -> Option<String>| -> ArrayRef {
            Arc::new(entries.iter().map(f).collect::<StringArray>())
        };
        let str_lists = |f: &dyn Fn(&Identifier) -> Vec<String>| -> ArrayRef {
            let mut b = ListBuilder::new(StringBuilder::new());
            for e in &entries {
                for v in f(e.identifier()) {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            Arc::new(b.finish())
        };
        let float_lists = |f: &dyn Fn(&Identifier) -> Vec<f64>| -> ArrayRef {
            let mut b = ListBuilder::new(Float64Builder::new());
            for e in &entries {
                for v in f(e.identifier()) {
                    b.values().append_option(v.is_finite().then_some(v));
                }
                b.append(true);
            }
            Arc::new(b.finish())
        };
        let m = |e: &Entry| e.identifier().meta.clone();
        let columns: Vec<ArrayRef> = vec![
            strings(&|e| Some(m(e).name)),
            strings(&|e| Some(e.status())),
            strings(&|e| Some(m(e).classifier)),
            strings(&|e| Some(m(e).classifier_version)),
            strings(&|e| Some(m(e).config.to_string())),
            strings(&|e| m(e).where_predicate),
            strings(&|e| Some(m(e).model)),
            strings(&|e| Some(m(e).measure)),
            str_lists(&|i| i.meta.rules.clone()),
            Arc::new(UInt32Array::from_iter_values(
                entries.iter().map(|e| m(e).points as u32),
            )),
            Arc::new(UInt64Array::from_iter_values(
                entries.iter().map(|e| m(e).examples as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                entries.iter().map(|e| m(e).runs as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                entries.iter().map(|e| m(e).held_out_runs as u64),
            )),
            str_lists(&|i| i.meta.architectures.clone()),
            float_lists(&|i| i.stages.iter().map(|s| s.accuracy).collect()),
            float_lists(&|i| i.stages.iter().map(|s| s.run_accuracy).collect()),
            strings(&|e| Some(m(e).created_at)),
        ];
        Ok(RecordBatch::try_new(IDENTIFIERS_SCHEMA.clone(), columns)?)
    }
}

#[async_trait::async_trait]
impl TableProvider for IdentifiersTable {
    fn schema(&self) -> SchemaRef {
        IDENTIFIERS_SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        MemTable::try_new(IDENTIFIERS_SCHEMA.clone(), vec![vec![self.batch()?]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
