//! The daemon's `plugins` SQL table: what its plugin host has loaded right now (one row per
//! loaded version) and the files it refused, read at every query, so a library dropped into the
//! watched folder shows up as soon as it is loaded.

use std::sync::{Arc, LazyLock};

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use lrid_plugins::PluginHost;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("version", DataType::Utf8, true),
        // The file in the plugins folder.
        Field::new("file", DataType::Utf8, false),
        Field::new("content_hash", DataType::UInt64, true),
        // "loaded", or "refused: <why>".
        Field::new("status", DataType::Utf8, false),
    ]))
});

/// `plugins`, backed by the live plugin host.
#[derive(Debug)]
pub struct PluginsTable(pub Arc<PluginHost>);

impl PluginsTable {
    fn batch(&self) -> datafusion::error::Result<RecordBatch> {
        let loaded = self.0.list();
        let refused = self.0.refused();
        let mut name = Vec::new();
        let mut kind = Vec::new();
        let mut version = Vec::new();
        let mut file = Vec::new();
        let mut hash = Vec::new();
        let mut status = Vec::new();
        for p in &loaded {
            name.push(Some(p.name.clone()));
            kind.push(Some(p.kind.to_string()));
            version.push(Some(p.version.clone()));
            // Absolute, so that a client in another folder can load the same file.
            let path = std::fs::canonicalize(&p.file).unwrap_or_else(|_| p.file.clone());
            file.push(path.display().to_string());
            hash.push(Some(p.content_hash));
            status.push("loaded".to_string());
        }
        for (f, why) in &refused {
            name.push(None);
            kind.push(None);
            version.push(None);
            file.push(f.display().to_string());
            hash.push(None);
            status.push(format!("refused: {why}"));
        }
        Ok(RecordBatch::try_new(
            SCHEMA.clone(),
            vec![
                Arc::new(StringArray::from(name)),
                Arc::new(StringArray::from(kind)),
                Arc::new(StringArray::from(version)),
                Arc::new(StringArray::from(file)),
                Arc::new(UInt64Array::from(hash)),
                Arc::new(StringArray::from(status)),
            ],
        )?)
    }
}

#[async_trait::async_trait]
impl TableProvider for PluginsTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
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
        MemTable::try_new(SCHEMA.clone(), vec![vec![self.batch()?]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
