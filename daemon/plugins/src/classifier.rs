//! The host's side of classifier plugins: matrices and labels go out as Arrow arrays through
//! the C Data Interface, probabilities, importances and saved models come back the same way.
//! [`ClassifierData`] and [`ClassifierModel`] hold their plugin (never unloaded while in use)
//! and free what the plugin made when dropped.

use std::ffi::{CString, c_void};
use std::sync::Arc;

use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use lrid_plugin::classifier::{
    self, CAP_IMPORTANCES, CAP_SAVE, ClassifierVTable, export_bytes, export_matrix, export_u32,
};
use lrid_plugin::{FeatureLayout, KIND_CLASSIFIER};

use crate::{Error, Plugin, Result, call_with};

impl Plugin {
    /// The classifier vtable; only for a plugin of that kind (checked when loaded).
    fn classifier_vtable(&self) -> Result<&'static ClassifierVTable> {
        if self.kind != KIND_CLASSIFIER {
            return Err(Error::UnknownClassifier {
                name: self.name.clone(),
                loaded: format!("'{}' is a {}", self.name, self.kind_name()),
            });
        }
        Ok(unsafe { &*(self.info.vtable as *const ClassifierVTable) })
    }

    fn classifier_error(&self, call: &'static str, message: Option<String>) -> Error {
        match message {
            Some(message) => Error::Classifier {
                plugin: self.name.clone(),
                call,
                message,
            },
            None => Error::Unsupported {
                plugin: self.name.clone(),
                call,
            },
        }
    }

    /// Whether the classifier can save and load models.
    pub fn can_save(&self) -> bool {
        self.classifier_vtable()
            .is_ok_and(|v| v.capabilities & CAP_SAVE != 0)
    }

    /// Whether the classifier gives feature importances.
    pub fn has_importances(&self) -> bool {
        self.classifier_vtable()
            .is_ok_and(|v| v.capabilities & CAP_IMPORTANCES != 0)
    }

    /// The classifier's configuration grid `name` (`fast`, `paper`, …): the configurations a
    /// cross-validation searches, in order; `[{}]` (its defaults) when it lists none by that
    /// name.
    pub fn grid(&self, name: &str) -> Result<Vec<serde_json::Value>> {
        let vtable = self.classifier_vtable()?;
        let text = if vtable.grids.is_null() {
            "{}".to_string()
        } else {
            unsafe { std::ffi::CStr::from_ptr(vtable.grids) }
                .to_string_lossy()
                .into_owned()
        };
        let bad = |why: String| self.classifier_error("grids", Some(why));
        let grids: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("its grids are not JSON: {e}")))?;
        match grids.get(name) {
            None => Ok(vec![serde_json::json!({})]),
            Some(serde_json::Value::Array(configs)) if !configs.is_empty() => {
                if let Some(c) = configs.iter().find(|c| !c.is_object()) {
                    return Err(bad(format!(
                        "grid '{name}' holds {c}, not a configuration object"
                    )));
                }
                Ok(configs.clone())
            }
            Some(other) => Err(bad(format!(
                "grid '{name}' is {other}, not a non-empty list of configurations"
            ))),
        }
    }

    /// Prepares a training matrix (`values` row-major, `cols` columns) once; every fit on a
    /// subset of its rows shares it.
    pub fn prepare(
        self: &Arc<Self>,
        values: Vec<f64>,
        cols: usize,
        layout: FeatureLayout,
    ) -> Result<ClassifierData> {
        let vtable = self.classifier_vtable()?;
        let (mut array, schema) = export_matrix(values, cols, layout)
            .map_err(|e| self.classifier_error("prepare", Some(e)))?;
        let mut out: *mut c_void = std::ptr::null_mut();
        call_with(|err| unsafe { (vtable.prepare)(&mut array, &schema, &mut out, err) })
            .map_err(|m| self.classifier_error("prepare", m))?;
        Ok(ClassifierData {
            plugin: self.clone(),
            ptr: out,
        })
    }

    /// A model saved by [`ClassifierModel::save`].
    pub fn load_model(self: &Arc<Self>, bytes: &[u8], n_classes: usize) -> Result<ClassifierModel> {
        let vtable = self.classifier_vtable()?;
        let (mut array, schema) =
            export_bytes(bytes).map_err(|e| self.classifier_error("load", Some(e)))?;
        let mut out: *mut c_void = std::ptr::null_mut();
        call_with(|err| unsafe { (vtable.load)(&mut array, &schema, &mut out, err) })
            .map_err(|m| self.classifier_error("load", m))?;
        Ok(ClassifierModel {
            plugin: self.clone(),
            ptr: out,
            n_classes,
        })
    }
}

/// A training matrix prepared by a classifier plugin.
pub struct ClassifierData {
    plugin: Arc<Plugin>,
    ptr: *mut c_void,
}

// The plugin's data is immutable after `prepare` (the trait requires Send + Sync).
unsafe impl Send for ClassifierData {}
unsafe impl Sync for ClassifierData {}

impl std::fmt::Debug for ClassifierData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierData")
            .field("plugin", &self.plugin.name)
            .finish_non_exhaustive()
    }
}

impl ClassifierData {
    /// Trains on rows `rows` of the prepared matrix with labels `labels` (in `0..n_classes`)
    /// and a JSON configuration object.
    pub fn fit(
        &self,
        config: &serde_json::Value,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<ClassifierModel> {
        let plugin = &self.plugin;
        let vtable = plugin.classifier_vtable()?;
        let fail = |e: String| plugin.classifier_error("fit", Some(e));
        let text = CString::new(config.to_string()).map_err(|e| fail(e.to_string()))?;
        let n = u32::try_from(n_classes).map_err(|_| fail(format!("{n_classes} classes")))?;
        let (mut rows_array, rows_schema) = export_u32(rows.to_vec(), "rows").map_err(fail)?;
        let (mut labels_array, labels_schema) =
            export_u32(labels.to_vec(), "labels").map_err(fail)?;
        let mut out: *mut c_void = std::ptr::null_mut();
        call_with(|err| unsafe {
            (vtable.fit)(
                text.as_ptr(),
                self.ptr,
                &mut rows_array,
                &rows_schema,
                &mut labels_array,
                &labels_schema,
                n,
                &mut out,
                err,
            )
        })
        .map_err(|m| plugin.classifier_error("fit", m))?;
        Ok(ClassifierModel {
            plugin: plugin.clone(),
            ptr: out,
            n_classes,
        })
    }
}

impl Drop for ClassifierData {
    fn drop(&mut self) {
        if let Ok(v) = self.plugin.classifier_vtable() {
            unsafe { (v.free_data)(self.ptr) };
        }
    }
}

/// A fitted (or loaded) classifier model.
pub struct ClassifierModel {
    plugin: Arc<Plugin>,
    ptr: *mut c_void,
    n_classes: usize,
}

// Models are immutable after fitting (the trait requires Send + Sync).
unsafe impl Send for ClassifierModel {}
unsafe impl Sync for ClassifierModel {}

impl std::fmt::Debug for ClassifierModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierModel")
            .field("plugin", &self.plugin.name)
            .field("n_classes", &self.n_classes)
            .finish_non_exhaustive()
    }
}

/// Takes an array a plugin wrote into `array`/`schema`.
fn take(
    plugin: &Plugin,
    call: &'static str,
    array: FFI_ArrowArray,
    schema: FFI_ArrowSchema,
) -> Result<classifier::ImportedMatrix> {
    let mut array = array;
    unsafe { classifier::import_matrix((&mut array, &schema)) }
        .map_err(|e| plugin.classifier_error(call, Some(format!("its answer: {e}"))))
}

impl ClassifierModel {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Class probabilities of every row of `values` (row-major, `cols` columns):
    /// rows × classes, row-major.
    pub fn predict_proba(
        &self,
        values: Vec<f64>,
        cols: usize,
        layout: FeatureLayout,
    ) -> Result<Vec<f64>> {
        let plugin = &self.plugin;
        let vtable = plugin.classifier_vtable()?;
        let rows = values.len() / cols.max(1);
        let (mut array, schema) = export_matrix(values, cols, layout)
            .map_err(|e| plugin.classifier_error("predict_proba", Some(e)))?;
        let mut out = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        call_with(|err| unsafe {
            (vtable.predict_proba)(
                self.ptr,
                &mut array,
                &schema,
                &mut out,
                &mut out_schema,
                err,
            )
        })
        .map_err(|m| plugin.classifier_error("predict_proba", m))?;
        let p = take(plugin, "predict_proba", out, out_schema)?;
        let view = p.view();
        if view.rows() != rows || view.cols() != self.n_classes {
            return Err(plugin.classifier_error(
                "predict_proba",
                Some(format!(
                    "it answered {} × {} probabilities for {rows} rows × {} classes",
                    view.rows(),
                    view.cols(),
                    self.n_classes
                )),
            ));
        }
        Ok(view.values().to_vec())
    }

    /// The most probable class of every row (ties: the lowest class index).
    pub fn predict(
        &self,
        values: Vec<f64>,
        cols: usize,
        layout: FeatureLayout,
    ) -> Result<Vec<u32>> {
        let k = self.n_classes;
        let p = self.predict_proba(values, cols, layout)?;
        Ok(p.chunks(k.max(1)).map(argmax).collect())
    }

    /// The model as bytes, for [`Plugin::load_model`].
    pub fn save(&self) -> Result<Vec<u8>> {
        let plugin = &self.plugin;
        let vtable = plugin.classifier_vtable()?;
        let mut out = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        call_with(|err| unsafe { (vtable.save)(self.ptr, &mut out, &mut out_schema, err) })
            .map_err(|m| plugin.classifier_error("save", m))?;
        unsafe { classifier::import_bytes((&mut out, &out_schema)) }
            .map_err(|e| plugin.classifier_error("save", Some(format!("its answer: {e}"))))
    }

    /// Feature importances, one vector per member of the model (each tree of a forest), or
    /// `None` when the classifier has none.
    pub fn importances(&self) -> Result<Option<Vec<Vec<f64>>>> {
        let plugin = &self.plugin;
        let vtable = plugin.classifier_vtable()?;
        let mut out = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        match call_with(|err| unsafe {
            (vtable.importances)(self.ptr, &mut out, &mut out_schema, err)
        }) {
            Ok(()) => {}
            Err(None) => return Ok(None),
            Err(m) => return Err(plugin.classifier_error("importances", m)),
        }
        let m = take(plugin, "importances", out, out_schema)?;
        let view = m.view();
        Ok(Some(
            (0..view.rows()).map(|i| view.row(i).to_vec()).collect(),
        ))
    }
}

impl Drop for ClassifierModel {
    fn drop(&mut self) {
        if let Ok(v) = self.plugin.classifier_vtable() {
            unsafe { (v.free_model)(self.ptr) };
        }
    }
}

/// The index of the largest value (the first of equal ones).
pub fn argmax(p: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = i;
        }
    }
    best as u32
}
