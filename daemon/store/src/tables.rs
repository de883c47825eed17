//! The ingest tables (`runs`, `layers`, `observables`, `diagnostics`): Arrow schemas, row
//! building, Parquet files, and the DataFusion providers that answer SQL over the Parquet files
//! and the in-memory tail.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use lrid_stats::all_observables;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

fn utc_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// `runs`: one row per run.
pub static RUNS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("learning_rule", DataType::Utf8, true),
        Field::new("architecture", DataType::Utf8, true),
        Field::new("task", DataType::Utf8, true),
        Field::new("batch_size", DataType::UInt32, true),
        Field::new("model_seed", DataType::Int64, true),
        Field::new("data_seed", DataType::Int64, true),
        Field::new("hyperparameters", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("opened_at", utc_ms(), false),
        Field::new("closed_at", utc_ms(), true),
    ]))
});

/// `layers`: one row per layer of a run.
pub static LAYERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("layer_index", DataType::UInt32, false),
        Field::new("layer_name", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("weight_shape", DataType::Utf8, false),
        Field::new("weight_count", DataType::UInt64, false),
        Field::new("activation_shape", DataType::Utf8, false),
        Field::new("units", DataType::UInt64, false),
    ]))
});

/// Key columns of `observables`, before the 45 statistics.
const OBSERVABLE_KEYS: usize = 7;

/// `observables`: one row per run × point × layer × measurement model; the 45 statistics as
/// Float64 columns (NULL where undefined or not recorded).
pub static OBSERVABLES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("point", DataType::UInt32, false),
        Field::new("step", DataType::Int64, true),
        Field::new("layer_index", DataType::UInt32, false),
        Field::new("layer_name", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
    ];
    debug_assert_eq!(fields.len(), OBSERVABLE_KEYS);
    fields.extend(all_observables().map(|o| Field::new(o.name(), DataType::Float64, true)));
    Arc::new(Schema::new(fields))
});

/// `diagnostics`: one row per run × point × layer × diagnostic name (scalars sent with a point's
/// completion, e.g. `angle_bw`, `b_change`, `w_change`).
pub static DIAGNOSTICS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("point", DataType::UInt32, false),
        Field::new("step", DataType::Int64, true),
        Field::new("layer_index", DataType::UInt32, false),
        Field::new("layer_name", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
});

/// A `runs` row.
#[derive(Clone, Debug)]
pub(crate) struct RunRow {
    pub run_id: String,
    pub labels: lrid_protocol::RunLabels,
    pub status: &'static str,
    pub opened_at_ms: i64,
    pub closed_at_ms: Option<i64>,
}

pub(crate) fn runs_batch<'a>(rows: impl Iterator<Item = &'a RunRow>) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut rule = StringBuilder::new();
    let mut arch = StringBuilder::new();
    let mut task = StringBuilder::new();
    let mut bs = UInt32Builder::new();
    let mut ms = Int64Builder::new();
    let mut ds = Int64Builder::new();
    let mut hp = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut opened = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut closed = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for r in rows {
        id.append_value(&r.run_id);
        rule.append_option(r.labels.learning_rule.as_deref());
        arch.append_option(r.labels.architecture.as_deref());
        task.append_option(r.labels.task.as_deref());
        bs.append_option(r.labels.batch_size);
        ms.append_option(r.labels.model_seed);
        ds.append_option(r.labels.data_seed);
        hp.append_option(r.labels.hyperparameters.as_ref().map(|v| v.to_string()));
        status.append_value(r.status);
        opened.append_value(r.opened_at_ms);
        closed.append_option(r.closed_at_ms);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(rule.finish()),
        Arc::new(arch.finish()),
        Arc::new(task.finish()),
        Arc::new(bs.finish()),
        Arc::new(ms.finish()),
        Arc::new(ds.finish()),
        Arc::new(hp.finish()),
        Arc::new(status.finish()),
        Arc::new(opened.finish()),
        Arc::new(closed.finish()),
    ];
    RecordBatch::try_new(RUNS_SCHEMA.clone(), columns).expect("runs schema")
}

pub(crate) fn layers_batch<'a>(
    rows: impl Iterator<Item = (&'a str, &'a lrid_protocol::LayerInfo)>,
) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut index = UInt32Builder::new();
    let mut name = StringBuilder::new();
    let mut position = StringBuilder::new();
    let mut wshape = StringBuilder::new();
    let mut wcount = UInt64Builder::new();
    let mut ashape = StringBuilder::new();
    let mut units = UInt64Builder::new();
    for (run, l) in rows {
        id.append_value(run);
        index.append_value(l.index);
        name.append_value(&l.name);
        position.append_value(l.position.as_str());
        wshape.append_value(format!("{:?}", l.weight_shape));
        wcount.append_value(l.weight_count());
        ashape.append_value(format!("{:?}", l.activation_shape));
        units.append_value(l.units());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(index.finish()),
        Arc::new(name.finish()),
        Arc::new(position.finish()),
        Arc::new(wshape.finish()),
        Arc::new(wcount.finish()),
        Arc::new(ashape.finish()),
        Arc::new(units.finish()),
    ];
    RecordBatch::try_new(LAYERS_SCHEMA.clone(), columns).expect("layers schema")
}

/// An `observables` row: keys and the 45 values (None = NULL).
#[derive(Clone, Debug)]
pub(crate) struct ObservableRow {
    pub run_id: String,
    pub point: u32,
    pub step: Option<i64>,
    pub layer_index: u32,
    pub layer_name: String,
    pub position: &'static str,
    pub model: String,
    pub values: Vec<Option<f64>>,
}

pub(crate) fn observables_batch(rows: &[ObservableRow]) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut point = UInt32Builder::new();
    let mut step = Int64Builder::new();
    let mut index = UInt32Builder::new();
    let mut name = StringBuilder::new();
    let mut position = StringBuilder::new();
    let mut model = StringBuilder::new();
    let mut values: Vec<Float64Builder> = (0..45)
        .map(|_| Float64Builder::with_capacity(rows.len()))
        .collect();
    for r in rows {
        id.append_value(&r.run_id);
        point.append_value(r.point);
        step.append_option(r.step);
        index.append_value(r.layer_index);
        name.append_value(&r.layer_name);
        position.append_value(r.position);
        model.append_value(&r.model);
        for (b, v) in values.iter_mut().zip(&r.values) {
            b.append_option(v.filter(|x| !x.is_nan()));
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(point.finish()),
        Arc::new(step.finish()),
        Arc::new(index.finish()),
        Arc::new(name.finish()),
        Arc::new(position.finish()),
        Arc::new(model.finish()),
    ];
    columns.extend(values.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(OBSERVABLES_SCHEMA.clone(), columns).expect("observables schema")
}

/// A `diagnostics` row.
#[derive(Clone, Debug)]
pub(crate) struct DiagnosticRow {
    pub run_id: String,
    pub point: u32,
    pub step: Option<i64>,
    pub layer_index: u32,
    pub layer_name: String,
    pub name: String,
    pub value: f64,
}

pub(crate) fn diagnostics_batch(rows: &[DiagnosticRow]) -> RecordBatch {
    let mut id = StringBuilder::new();
    let mut point = UInt32Builder::new();
    let mut step = Int64Builder::new();
    let mut index = UInt32Builder::new();
    let mut layer = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut value = Float64Builder::with_capacity(rows.len());
    for r in rows {
        id.append_value(&r.run_id);
        point.append_value(r.point);
        step.append_option(r.step);
        index.append_value(r.layer_index);
        layer.append_value(&r.layer_name);
        name.append_value(&r.name);
        value.append_value(r.value);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(point.finish()),
        Arc::new(step.finish()),
        Arc::new(index.finish()),
        Arc::new(layer.finish()),
        Arc::new(name.finish()),
        Arc::new(value.finish()),
    ];
    RecordBatch::try_new(DIAGNOSTICS_SCHEMA.clone(), columns).expect("diagnostics schema")
}

/// Row groups of the Parquet files of the ingest path (256k rows: few, large row groups).
pub(crate) const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Row groups of files sorted by run (compaction): 32k rows, so that the row groups'
/// statistics let a query of one run skip all but a few.
pub(crate) const SORTED_ROW_GROUP_ROWS: usize = 32 * 1024;

/// How every Parquet file of the store is written: zstd level 1, `row_group_rows` per group.
pub(crate) fn writer_properties(row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1")))
        .set_max_row_group_row_count(Some(row_group_rows))
        .build()
}

/// Writes a Parquet file durably in a folder: a temporary file beside it, synced, renamed.
pub(crate) fn write_parquet_rows(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<()> {
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let props = writer_properties(row_group_rows);
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    let file = writer.into_inner()?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    crate::wal::sync_dir(dir)
}

/// Reads a whole Parquet file (optionally only some columns).
pub(crate) fn read_parquet(path: &Path, columns: Option<&[&str]>) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    crate::files::parquet_batches(file, columns)
}

/// What queries see: the persisted `observables` and `diagnostics` files (paths, or URLs of an
/// object store registered with the session) and the tails not yet
/// persisted, the current `runs` and `layers`. Swapped atomically, so a row is never seen twice
/// or missed.
#[derive(Debug, Clone)]
pub(crate) struct QueryView {
    pub files: Vec<String>,
    pub tail: Vec<RecordBatch>,
    pub diagnostics_files: Vec<String>,
    pub diagnostics_tail: Vec<RecordBatch>,
    pub identifications_files: Vec<String>,
    pub identifications_tail: Vec<RecordBatch>,
    pub runs: RecordBatch,
    /// One batch of every layer at the last full refresh, then one per layer added since.
    pub layers: Vec<RecordBatch>,
}

impl QueryView {
    pub(crate) fn empty() -> Self {
        Self {
            files: Vec::new(),
            tail: Vec::new(),
            diagnostics_files: Vec::new(),
            diagnostics_tail: Vec::new(),
            identifications_files: Vec::new(),
            identifications_tail: Vec::new(),
            runs: RecordBatch::new_empty(RUNS_SCHEMA.clone()),
            layers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TableKind {
    Runs,
    Layers,
    Observables,
    Diagnostics,
    Identifications,
}

/// A live table of the store for DataFusion.
#[derive(Debug)]
pub(crate) struct LiveTable {
    pub kind: TableKind,
    pub view: Arc<RwLock<QueryView>>,
    /// The Parquet table of the last file list seen: a file never changes once listed, so its
    /// footer and statistics, cached inside the `ListingTable`, stay valid until the list does.
    parquet: Mutex<Option<(Vec<String>, Arc<ListingTable>)>>,
}

impl LiveTable {
    pub(crate) fn new(kind: TableKind, view: Arc<RwLock<QueryView>>) -> Self {
        Self {
            kind,
            view,
            parquet: Mutex::new(None),
        }
    }

    /// The `ListingTable` over exactly `files` (no directory listing or listing cache can hide
    /// a file written since), reused while the list is the same.
    fn parquet_table(&self, files: &[String]) -> datafusion::error::Result<Arc<ListingTable>> {
        let mut cached = self.parquet.lock().expect("parquet table lock");
        if let Some((list, table)) = cached.as_ref()
            && list.as_slice() == files
        {
            return Ok(table.clone());
        }
        let urls = files
            .iter()
            .map(ListingTableUrl::parse)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema());
        let table = Arc::new(ListingTable::try_new(config)?);
        *cached = Some((files.to_vec(), table.clone()));
        Ok(table)
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        match self.kind {
            TableKind::Runs => RUNS_SCHEMA.clone(),
            TableKind::Layers => LAYERS_SCHEMA.clone(),
            TableKind::Observables => OBSERVABLES_SCHEMA.clone(),
            TableKind::Diagnostics => DIAGNOSTICS_SCHEMA.clone(),
            TableKind::Identifications => crate::IDENTIFICATIONS_SCHEMA.clone(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes row groups with them; DataFusion still applies every filter after.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let view = self.view.read().expect("query view lock").clone();
        let schema = self.schema();
        let memory = |batches: Vec<RecordBatch>| MemTable::try_new(schema.clone(), vec![batches]);
        match self.kind {
            TableKind::Runs => {
                memory(vec![view.runs])?
                    .scan(state, projection, filters, limit)
                    .await
            }
            TableKind::Layers => {
                memory(view.layers)?
                    .scan(state, projection, filters, limit)
                    .await
            }
            TableKind::Observables | TableKind::Diagnostics | TableKind::Identifications => {
                let (files, tail) = match self.kind {
                    TableKind::Observables => (view.files, view.tail),
                    TableKind::Diagnostics => (view.diagnostics_files, view.diagnostics_tail),
                    _ => (view.identifications_files, view.identifications_tail),
                };
                let mut plans = Vec::new();
                if !files.is_empty() {
                    let table = self.parquet_table(&files)?;
                    plans.push(table.scan(state, projection, filters, limit).await?);
                }
                if !tail.is_empty() || plans.is_empty() {
                    plans.push(
                        memory(tail)?
                            .scan(state, projection, filters, limit)
                            .await?,
                    );
                }
                UnionExec::try_new(plans)
            }
        }
    }
}
