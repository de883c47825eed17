//! Where the store's closed files live. In: names relative to the store
//! (`observables/part-00000003.parquet`, `manifest.json`, …) with record batches or bytes. Out:
//! the same read back, file sizes, and the location a query reads each file from.
//!
//! Two places behind one type, [`Files`]:
//! - the data folder (the default): files are written beside their final name, synced and
//!   renamed into place, the manifest likewise, exactly as lrid always did;
//! - an object store (`[store] object_store = "s3://bucket/prefix"`), through the object_store
//!   crate (`Arc<dyn ObjectStore>`): a writing daemon keeps its files under its own prefix
//!   `prefix/node=<id>/` and replaces its manifest with conditional puts (create if absent, else
//!   only if it is still the version this daemon last wrote), so two daemons never overwrite
//!   each other's manifest. A read-only daemon reads every `node=*/` under the prefix.
//!
//! Object-store calls run on a small runtime of their own, so the store's synchronous methods
//! can wait for them from any thread (a blocking thread of the server, a test's async body).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Result};

/// The prefix of a daemon's own folder in an object store: `node=<id>/`.
pub const NODE_PREFIX: &str = "node=";

/// The manifest's name, in the data folder or under a node's prefix.
pub(crate) const MANIFEST: &str = "manifest.json";

/// The store's closed files: the data folder or an object store.
#[derive(Debug)]
pub(crate) enum Files {
    Local(PathBuf),
    Remote(RemoteFiles),
}

/// An object store and the prefix under which this store's names live.
pub(crate) struct RemoteFiles {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: the URL queries reach the store under.
    root: String,
    /// The prefix inside the bucket (no slashes at its ends; may be empty).
    prefix: String,
    io: IoRuntime,
    /// The version of the manifest this daemon read or wrote last (None: there is none yet).
    manifest_version: Mutex<Option<UpdateVersion>>,
}

impl std::fmt::Debug for RemoteFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteFiles({})", self.url(""))
    }
}

/// A small runtime for object-store calls, shut down without waiting when dropped (it may be
/// dropped inside another runtime).
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lrid-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io(Path::new("<object store runtime>"), e))?;
        Ok(Self(Some(rt)))
    }

    /// Runs `f` on this runtime and waits for it (callable from any thread, async or not).
    fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.0.as_ref().expect("runtime").spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the object store runtime is running")
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Splits `s3://bucket/a/b` into (`s3://bucket`, `a/b`).
pub(crate) fn split_url(url: &str) -> Result<(String, String)> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "[store] object_store = {url:?}: {why} (expected s3://bucket or s3://bucket/prefix)"
        ))
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("only s3:// URLs are supported"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    Ok((
        format!("s3://{bucket}"),
        prefix.trim_matches('/').to_string(),
    ))
}

/// Checks a node id: it becomes a path segment `node=<id>`.
pub(crate) fn check_node_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::InvalidArgument(format!(
            "node id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

impl RemoteFiles {
    /// The S3 store of `url` (`s3://bucket/prefix`) with `options` (object_store's S3 keys,
    /// e.g. `endpoint`, `region`, `allow_http`, `access_key_id`) over the `AWS_*` variables;
    /// names live under `prefix/sub` (`sub` may be empty).
    pub(crate) fn s3(url: &str, options: &BTreeMap<String, String>, sub: &str) -> Result<Self> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let (root, prefix) = split_url(url)?;
        let mut builder = AmazonS3Builder::from_env().with_url(&root);
        for (key, value) in options {
            let k: AmazonS3ConfigKey = key.parse().map_err(|_| {
                Error::InvalidArgument(format!(
                    "[store.object_store_options] {key:?} is not an S3 option (e.g. endpoint, region, allow_http, access_key_id, secret_access_key)"
                ))
            })?;
            builder = builder.with_config(k, value);
        }
        let store = builder
            .build()
            .map_err(|e| Error::InvalidArgument(format!("[store] object_store = {url:?}: {e}")))?;
        let prefix = [prefix.as_str(), sub]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        Self::new(Arc::new(store), root, prefix)
    }

    pub(crate) fn new(store: Arc<dyn ObjectStore>, root: String, prefix: String) -> Result<Self> {
        Ok(Self {
            store,
            root,
            prefix,
            io: IoRuntime::new()?,
            manifest_version: Mutex::new(None),
        })
    }

    /// The store (to register with DataFusion) and its root URL (`s3://bucket`).
    pub(crate) fn store(&self) -> (&Arc<dyn ObjectStore>, &str) {
        (&self.store, &self.root)
    }

    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/rel`.
    pub(crate) fn url(&self, rel: &str) -> String {
        let p = self.path(rel);
        format!("{}/{}", self.root, p.as_ref())
    }

    fn error(&self, rel: &str, e: object_store::Error) -> Error {
        Error::ObjectStore {
            location: self.url(rel),
            cause: Box::new(e),
        }
    }

    /// The object's bytes; None if there is none.
    pub(crate) fn get(&self, rel: &str) -> Result<Option<(Bytes, UpdateVersion)>> {
        let (store, path) = (self.store.clone(), self.path(rel));
        let got = self.io.run(async move {
            let r = store.get(&path).await?;
            let version = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            Ok::<_, object_store::Error>((r.bytes().await?, version))
        });
        match got {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(rel, e)),
        }
    }

    fn put(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<UpdateVersion> {
        let (store, path) = (self.store.clone(), self.path(rel));
        let put = self.io.run(async move {
            store
                .put_opts(&path, PutPayload::from(bytes), PutOptions::from(mode))
                .await
        });
        put.map(|r| UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })
        .map_err(|e| self.error(rel, e))
    }

    fn size(&self, rel: &str) -> Result<u64> {
        let (store, path) = (self.store.clone(), self.path(rel));
        self.io
            .run(async move { store.head(&path).await })
            .map(|m| m.size)
            .map_err(|e| self.error(rel, e))
    }

    /// Names (relative) of every object under `sub/`.
    pub(crate) fn list(&self, sub: &str) -> Result<Vec<String>> {
        let (store, path) = (self.store.clone(), self.path(sub));
        let listed = self
            .io
            .run(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await })
            .map_err(|e| self.error(sub, e))?;
        let base = self.path("");
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref();
                let base = base.as_ref();
                let rel = if base.is_empty() {
                    full
                } else {
                    full.strip_prefix(base)?.trim_start_matches('/')
                };
                Some(rel.to_string())
            })
            .collect())
    }

    /// The folders `node=<id>` directly under the prefix: the ids.
    pub(crate) fn nodes(&self) -> Result<Vec<String>> {
        let (store, path) = (self.store.clone(), self.path(""));
        let listed = self
            .io
            .run(async move {
                let p = (!path.as_ref().is_empty()).then_some(path);
                store.list_with_delimiter(p.as_ref()).await
            })
            .map_err(|e| self.error("", e))?;
        let mut nodes: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix(NODE_PREFIX).map(String::from))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path(rel));
        match self.io.run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(rel, e)),
        }
    }
}

/// An object store's error in one line: what the usual causes mean, the request, and the S3
/// error's code and message (the response body is XML; its text is left out).
pub(crate) fn explain(e: &object_store::Error) -> String {
    let text = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let between = |open: &str, close: &str| {
        let from = text.find(open)? + open.len();
        let len = text[from..].find(close)?;
        Some(text[from..from + len].to_string())
    };
    let code = between("<Code>", "</Code>");
    let why = match code.as_deref() {
        Some("NoSuchBucket") => "the bucket does not exist",
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            "the credentials are refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        }
        Some("AccessDenied") => "access denied (the credentials may not do this here)",
        _ => "",
    };
    let request = between("Error performing ", " in ").map(|r| format!("{r} failed"));
    let parts: Vec<String> = match (code, request) {
        (Some(code), request) => [
            (!why.is_empty()).then(|| why.to_string()),
            request,
            Some(match between("<Message>", "</Message>") {
                Some(m) => format!("{code}: {m}"),
                None => code,
            }),
        ]
        .into_iter()
        .flatten()
        .collect(),
        // Not an S3 error response (a connection refused, a precondition, …): its own words.
        (None, _) => vec![text.chars().take(300).collect()],
    };
    parts.join(": ")
}

/// Encodes batches as a Parquet file (zstd level 1, row groups of `row_group_rows`).
fn parquet_bytes(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    row_group_rows: usize,
) -> Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(
        Vec::new(),
        schema.clone(),
        Some(crate::tables::writer_properties(row_group_rows)),
    )?;
    for b in batches {
        writer.write(b)?;
    }
    Ok(writer.into_inner()?)
}

/// Reads a Parquet file's bytes or an open file (optionally only some columns: from a file,
/// only their column chunks are read).
pub(crate) fn parquet_batches<R: parquet::file::reader::ChunkReader + 'static>(
    reader: R,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(reader)?;
    if let Some(columns) = columns {
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            columns.iter().copied(),
        );
        builder = builder.with_projection(mask);
    }
    Ok(builder.build()?.collect::<Result<Vec<_>, _>>()?)
}

impl Files {
    /// Where a query reads `rel` from: an absolute path, or `s3://bucket/…`.
    pub(crate) fn location(&self, rel: &str) -> String {
        match self {
            Files::Local(dir) => dir.join(rel).to_string_lossy().into_owned(),
            Files::Remote(r) => r.url(rel),
        }
    }

    /// Where the files are, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Files::Local(dir) => dir.display().to_string(),
            Files::Remote(r) => r.url(""),
        }
    }

    pub(crate) fn remote(&self) -> Option<&RemoteFiles> {
        match self {
            Files::Local(_) => None,
            Files::Remote(r) => Some(r),
        }
    }

    /// Writes a Parquet file durably under `rel` (a new name: in an object store it is created,
    /// never replaced).
    pub(crate) fn write_parquet(
        &self,
        rel: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        row_group_rows: usize,
    ) -> Result<()> {
        self.put_parquet(rel, schema, batches, row_group_rows, false)
    }

    /// Writes a Parquet file durably under `rel`, replacing the one of that name (an analysis
    /// stored again under its name).
    pub(crate) fn replace_parquet(
        &self,
        rel: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<()> {
        self.put_parquet(rel, schema, batches, crate::tables::ROW_GROUP_ROWS, true)
    }

    fn put_parquet(
        &self,
        rel: &str,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        row_group_rows: usize,
        replace: bool,
    ) -> Result<()> {
        match self {
            Files::Local(dir) => {
                crate::tables::write_parquet_rows(&dir.join(rel), schema, batches, row_group_rows)
            }
            // Created, never replaced: a file of another daemon under the same node id is
            // refused, not overwritten.
            Files::Remote(r) => {
                let bytes = parquet_bytes(schema, batches, row_group_rows)?;
                let mode = if replace {
                    PutMode::Overwrite
                } else {
                    PutMode::Create
                };
                match r.put(rel, bytes, mode) {
                    Ok(_) => Ok(()),
                    Err(Error::ObjectStore { location, cause })
                        if matches!(*cause, object_store::Error::AlreadyExists { .. }) =>
                    {
                        Err(Error::FailedPrecondition(format!(
                            "{location} exists already: another daemon writes under this node id? (nothing was overwritten; give each daemon its own [store] node_id)"
                        )))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The Parquet files (relative names, sorted) in the folder `sub`; `every_node`: in each
    /// `node=*/` of an object store (a read-only store).
    pub(crate) fn list_parquet(&self, sub: &str, every_node: bool) -> Result<Vec<String>> {
        let mut names: Vec<String> = match self {
            Files::Local(dir) => {
                let folder = dir.join(sub);
                match std::fs::read_dir(&folder) {
                    Ok(entries) => entries
                        .filter_map(|e| e.ok())
                        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy()))
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(Error::io(&folder, e)),
                }
            }
            Files::Remote(r) if every_node => {
                let mut all = Vec::new();
                for node in r.nodes()? {
                    all.extend(r.list(&format!("{NODE_PREFIX}{node}/{sub}"))?);
                }
                all
            }
            Files::Remote(r) => r.list(sub)?,
        };
        names.retain(|n| n.ends_with(".parquet"));
        names.sort();
        Ok(names)
    }

    /// Reads the Parquet file `rel` (optionally only some columns).
    pub(crate) fn read_parquet(
        &self,
        rel: &str,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        match self {
            Files::Local(dir) => crate::tables::read_parquet(&dir.join(rel), columns),
            Files::Remote(r) => {
                let (bytes, _) = r.get(rel)?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "{} is named by the manifest but missing",
                        r.url(rel)
                    ))
                })?;
                parquet_batches(bytes, columns)
            }
        }
    }

    /// The size of `rel` in bytes.
    pub(crate) fn size(&self, rel: &str) -> Result<u64> {
        match self {
            Files::Local(dir) => {
                let path = dir.join(rel);
                Ok(std::fs::metadata(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .len())
            }
            Files::Remote(r) => r.size(rel),
        }
    }

    /// The manifest's bytes, if there is one (remembering its version for the next write).
    pub(crate) fn read_manifest(&self) -> Result<Option<Vec<u8>>> {
        match self {
            Files::Local(dir) => {
                let path = dir.join(MANIFEST);
                if !path.exists() {
                    return Ok(None);
                }
                std::fs::read(&path)
                    .map(Some)
                    .map_err(|e| Error::io(&path, e))
            }
            Files::Remote(r) => {
                let got = r.get(MANIFEST)?;
                let (bytes, version) = match got {
                    Some((b, v)) => (Some(b.to_vec()), Some(v)),
                    None => (None, None),
                };
                *r.manifest_version.lock().expect("manifest version lock") = version;
                Ok(bytes)
            }
        }
    }

    /// Replaces the manifest atomically: in the data folder a synced temporary file renamed
    /// over it; in an object store a conditional put (created if this daemon read none, else
    /// only over the version it read or wrote last).
    pub(crate) fn write_manifest(&self, bytes: Vec<u8>) -> Result<()> {
        match self {
            Files::Local(dir) => {
                let path = dir.join(MANIFEST);
                let tmp = dir.join("manifest.json.tmp");
                std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
                std::fs::File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                crate::wal::sync_dir(dir)
            }
            Files::Remote(r) => {
                let mut last = r.manifest_version.lock().expect("manifest version lock");
                let mode = match last.clone() {
                    None => PutMode::Create,
                    Some(v) => PutMode::Update(v),
                };
                match r.put(MANIFEST, bytes, mode) {
                    Ok(v) => {
                        *last = Some(v);
                        Ok(())
                    }
                    Err(Error::ObjectStore { location, cause })
                        if matches!(
                            *cause,
                            object_store::Error::Precondition { .. }
                                | object_store::Error::AlreadyExists { .. }
                        ) =>
                    {
                        Err(Error::FailedPrecondition(format!(
                            "{location} was replaced by another writer since this daemon read it: two daemons share one node id? (nothing was overwritten; give each daemon its own [store] node_id)"
                        )))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Removes the files of `tables` (sub-folders) that neither `keep` nor `retired` name.
    pub(crate) fn remove_unlisted(
        &self,
        tables: &[(&str, std::collections::BTreeSet<String>)],
        retired: &[String],
    ) -> Result<()> {
        for (sub, keep) in tables {
            let names: Vec<String> = match self {
                Files::Local(dir) => {
                    let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                        continue;
                    };
                    entries
                        .flatten()
                        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy()))
                        .collect()
                }
                Files::Remote(r) => r.list(sub)?,
            };
            for rel in names {
                let name = rel.rsplit('/').next().unwrap_or(&rel);
                if keep.contains(name) || retired.contains(&rel) {
                    continue;
                }
                match self {
                    Files::Local(dir) => {
                        let p = dir.join(&rel);
                        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    }
                    Files::Remote(r) => r.delete(&rel)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_urls_split_into_root_and_prefix_and_bad_ones_say_why() {
        assert_eq!(
            split_url("s3://bucket").unwrap(),
            ("s3://bucket".into(), String::new())
        );
        assert_eq!(
            split_url("s3://bucket/a/b/").unwrap(),
            ("s3://bucket".into(), "a/b".into())
        );
        let e = split_url("gs://bucket/a").unwrap_err().to_string();
        assert!(
            e.contains("only s3:// URLs") && e.contains("gs://bucket/a"),
            "{e}"
        );
        let e = split_url("s3:///a").unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }

    #[test]
    fn s3_errors_are_explained_in_one_line() {
        let s3 = |body: &str| {
            object_store::Error::Generic {
            store: "S3",
            source: format!("{body}: Error performing PUT http://127.0.0.1:9/b/k in 3ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n{body}").into(),
        }
        };
        let e = explain(&s3(
            "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>",
        ));
        assert_eq!(
            e,
            "the bucket does not exist: PUT http://127.0.0.1:9/b/k failed: NoSuchBucket: The specified bucket does not exist"
        );
        let e = explain(&s3("<Error><Code>InvalidAccessKeyId</Code></Error>"));
        assert!(e.starts_with("the credentials are refused"), "{e}");
        assert!(!e.contains('\n') && !e.contains("<?xml"), "{e}");
        let e = explain(&object_store::Error::NotImplemented {
            operation: "put_opts".into(),
            implementer: "test".into(),
        });
        assert!(e.contains("put_opts"), "{e}");
    }

    #[test]
    fn node_ids_are_one_path_segment() {
        check_node_id("worker-3.gpu_a").unwrap();
        for bad in ["", "a/b", "node=x", "a b", &"x".repeat(65)] {
            let e = check_node_id(bad).unwrap_err().to_string();
            assert!(e.contains("node id"), "{bad}: {e}");
        }
    }
}
