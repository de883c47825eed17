//! The `analyses` table: what `lrid analyze` measured, one row per experiment × classifier ×
//! measure × variant × split, kept beside the data so it can be queried with SQL. An analysis
//! arrives whole (the Flight action `lrid.put_analysis`), is validated, and is written as one
//! Parquet file `analyses/<analysis name hash>.parquet` (temporary file, fsync, rename, fsync
//! of the folder; or one put into the object store, under the daemon's `node=<id>/`) before it
//! is acknowledged; an analysis of the same name replaces the earlier one's rows. Queries read
//! the folder at every scan (a read-only store: every node's), so new analyses appear at once.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::files::Files;
use crate::{Error, Result};

/// `analyses`: one row per experiment × classifier × measure × variant × split.
pub static ANALYSES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // The analysis name (`lrid analyze --name`).
        Field::new("analysis", DataType::Utf8, false),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        // main, main-pairwise, held-out, importances, trajectory, noise.
        Field::new("experiment", DataType::Utf8, false),
        Field::new("classifier", DataType::Utf8, false),
        // weight, act, grad, all (NULL where it does not apply).
        Field::new("measure", DataType::Utf8, true),
        // What distinguishes rows of one experiment: "architecture=knet5",
        // "period=2,count=3", "train=early,test=late", "model=ideal", "pair=adam/sgdm", a
        // statistic's name for importances.
        Field::new("variant", DataType::Utf8, true),
        // The outer split (NULL for a summary over splits or a held-out value).
        Field::new("split", DataType::UInt32, true),
        // Accuracy in [0, 1] (or the importance for `importances` rows).
        Field::new("value", DataType::Float64, true),
        Field::new("train_examples", DataType::UInt64, true),
        Field::new("test_examples", DataType::UInt64, true),
        // The chosen configuration (JSON).
        Field::new("config", DataType::Utf8, true),
        // "ok", or "failed: <why>".
        Field::new("status", DataType::Utf8, false),
    ]))
});

/// A row of `analyses`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalysisRow {
    pub experiment: String,
    pub classifier: String,
    pub measure: Option<String>,
    pub variant: Option<String>,
    pub split: Option<u32>,
    pub value: Option<f64>,
    pub train_examples: Option<u64>,
    pub test_examples: Option<u64>,
    pub config: Option<String>,
    pub status: String,
}

/// Rows of one analysis as a batch of [`ANALYSES_SCHEMA`].
pub fn analyses_batch(analysis: &str, created_at_ms: i64, rows: &[AnalysisRow]) -> RecordBatch {
    let mut name = StringBuilder::new();
    let mut created = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut experiment = StringBuilder::new();
    let mut classifier = StringBuilder::new();
    let mut measure = StringBuilder::new();
    let mut variant = StringBuilder::new();
    let mut split = UInt32Builder::new();
    let mut value = Float64Builder::new();
    let mut train = UInt64Builder::new();
    let mut test = UInt64Builder::new();
    let mut config = StringBuilder::new();
    let mut status = StringBuilder::new();
    for r in rows {
        name.append_value(analysis);
        created.append_value(created_at_ms);
        experiment.append_value(&r.experiment);
        classifier.append_value(&r.classifier);
        measure.append_option(r.measure.as_deref());
        variant.append_option(r.variant.as_deref());
        split.append_option(r.split);
        value.append_option(r.value.filter(|v| v.is_finite()));
        train.append_option(r.train_examples);
        test.append_option(r.test_examples);
        config.append_option(r.config.as_deref());
        status.append_value(&r.status);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(name.finish()),
        Arc::new(created.finish()),
        Arc::new(experiment.finish()),
        Arc::new(classifier.finish()),
        Arc::new(measure.finish()),
        Arc::new(variant.finish()),
        Arc::new(split.finish()),
        Arc::new(value.finish()),
        Arc::new(train.finish()),
        Arc::new(test.finish()),
        Arc::new(config.finish()),
        Arc::new(status.finish()),
    ];
    RecordBatch::try_new(ANALYSES_SCHEMA.clone(), columns).expect("analyses schema")
}

/// The file of analysis `name` (FNV-1a of the name: any name makes a safe file name).
fn file_of(name: &str) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("analyses/analysis-{h:016x}.parquet")
}

/// Validates the rows of one analysis and stores them durably, replacing an earlier analysis
/// of the same name. Returns the number of rows stored.
pub(crate) fn put(files: &Files, batches: &[RecordBatch]) -> Result<usize> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Err(Error::InvalidArgument(
            "an analysis needs at least one row".into(),
        ));
    }
    let expected = ANALYSES_SCHEMA.clone();
    let mut name: Option<String> = None;
    for b in batches {
        let got = b.schema();
        let same = got.fields().len() == expected.fields().len()
            && got
                .fields()
                .iter()
                .zip(expected.fields())
                .all(|(a, e)| a.name() == e.name() && a.data_type() == e.data_type());
        if !same {
            return Err(Error::InvalidArgument(format!(
                "an analysis must have the columns of the analyses table ({}); got ({})",
                describe(&expected),
                describe(&got)
            )));
        }
        for (i, field) in expected.fields().iter().enumerate() {
            if !field.is_nullable() && b.column(i).null_count() > 0 {
                return Err(Error::InvalidArgument(format!(
                    "analysis column '{}' must not be NULL",
                    field.name()
                )));
            }
        }
        let names = b
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("validated Utf8");
        for n in names.iter().flatten() {
            match &name {
                None if n.is_empty() => {
                    return Err(Error::InvalidArgument(
                        "an analysis needs a non-empty name".into(),
                    ));
                }
                None => name = Some(n.to_string()),
                Some(m) if m != n => {
                    return Err(Error::InvalidArgument(format!(
                        "one call stores one analysis; got rows of '{m}' and '{n}'"
                    )));
                }
                _ => {}
            }
        }
    }
    let name = name.expect("at least one row");
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| b.clone().with_schema(expected.clone()))
        .collect::<Result<_, _>>()?;
    files.replace_parquet(&file_of(&name), &expected, &batches)?;
    Ok(rows)
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `analyses`, read from its folder at every scan.
#[derive(Debug)]
pub(crate) struct AnalysesTable {
    pub files: Arc<Files>,
    /// A read-only store: every node's analyses.
    pub every_node: bool,
}

impl AnalysesTable {
    fn batches(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for f in self.files.list_parquet("analyses", self.every_node)? {
            for b in self.files.read_parquet(&f, None)? {
                out.push(b.with_schema(ANALYSES_SCHEMA.clone())?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for AnalysesTable {
    fn schema(&self) -> SchemaRef {
        ANALYSES_SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batches = self
            .batches()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(ANALYSES_SCHEMA.clone(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}
