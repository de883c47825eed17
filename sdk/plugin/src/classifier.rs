//! Classifier plugins (kind [`KIND_CLASSIFIER`](crate::KIND_CLASSIFIER)): the
//! [`ClassifierVTable`], the safe [`Classifier`] trait and
//! [`export_classifier!`](crate::export_classifier).
//!
//! Data crosses the boundary only as Arrow arrays through the Arrow C Data Interface
//! (`arrow::ffi`), never as Rust types:
//!
//! | what | Arrow type |
//! |---|---|
//! | a feature matrix (rows × features) | `FixedSizeList<Float64, features>`, no nulls, finite; the field's metadata carries the [`FeatureLayout`] ([`METADATA_CATEGORICAL`], [`METADATA_POINTS`]) |
//! | row indices, class labels (`0..n_classes`) | `UInt32`, no nulls |
//! | class probabilities (rows × classes) | `FixedSizeList<Float64, n_classes>` |
//! | importances (members × features: one row per tree of an ensemble, one row otherwise) | `FixedSizeList<Float64, features>` |
//! | a saved model | `Binary`, one value |
//!
//! Ownership follows the C Data Interface: an array passed *in* is moved to the callee (it
//! takes the struct and leaves a released one behind; its schema is borrowed); an array passed
//! *out* is written into the caller's empty structs and owned by the caller from then on.
//!
//! Calls: `prepare` turns a training matrix into the plugin's data once (a random forest bins its
//! features there); `fit` trains on a subset of its rows with a JSON configuration, so that every
//! configuration of a grid and every fold of a cross-validation shares one `prepare`;
//! `predict_proba` gives class probabilities for any matrix with the same features; `save` /
//! `load` (capability [`CAP_SAVE`]) and `importances` ([`CAP_IMPORTANCES`]) are optional and
//! answer [`STATUS_UNSUPPORTED`](crate::STATUS_UNSUPPORTED) when absent. lrid sets the key
//! [`CONFIG_SEED`] in every configuration it passes to `fit`.
//!
//! Threads: lrid calls `fit` on one prepared data from several threads at once (the
//! configurations and folds of a cross-validation), and `predict_proba` on one model likewise;
//! a plugin's data and models must allow that (the [`Classifier`] trait asks `Sync` of both).

use std::ffi::{CStr, c_char, c_void};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float64Array, UInt32Array, make_array,
};
use arrow::datatypes::{DataType, Field};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};

use crate::{ErrorBuf, STATUS_UNSUPPORTED, guard};

/// [`ClassifierVTable::capabilities`]: `save` and `load` work (the classifier can back a
/// stored model, e.g. a live identifier).
pub const CAP_SAVE: u32 = 1;
/// [`ClassifierVTable::capabilities`]: `importances` works.
pub const CAP_IMPORTANCES: u32 = 2;

/// Matrix field metadata: how many leading columns are categorical (one-hot) features.
pub const METADATA_CATEGORICAL: &str = "lrid:categorical";
/// Matrix field metadata: the trajectory length T when the remaining columns are statistics ×
/// points, statistic-major (column `categorical + k·T + t`); absent or 0 otherwise.
pub const METADATA_POINTS: &str = "lrid:points";
/// The configuration key lrid sets to a seed for every fit (classifiers that draw use it).
pub const CONFIG_SEED: &str = "seed";

/// How the columns of a feature matrix are arranged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureLayout {
    /// Leading categorical (one-hot) columns, never normalised.
    pub categorical: usize,
    /// Trajectory points T of each statistic after them (0: plain features).
    pub points: usize,
}

/// A borrowed row-major feature matrix.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    values: &'a [f64],
    rows: usize,
    cols: usize,
    layout: FeatureLayout,
}

impl<'a> Matrix<'a> {
    /// A view of `values` as `rows × cols`, row-major.
    pub fn new(
        values: &'a [f64],
        rows: usize,
        cols: usize,
        layout: FeatureLayout,
    ) -> Result<Self, String> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(format!(
                "a {rows} × {cols} matrix needs {} values; got {}",
                rows.saturating_mul(cols),
                values.len()
            ));
        }
        if layout.categorical > cols {
            return Err(format!(
                "{} categorical columns in a matrix of {cols} columns",
                layout.categorical
            ));
        }
        if layout.points > 0 && !(cols - layout.categorical).is_multiple_of(layout.points) {
            return Err(format!(
                "{} continuous columns are not a whole number of trajectories of {} points",
                cols - layout.categorical,
                layout.points
            ));
        }
        Ok(Self {
            values,
            rows,
            cols,
            layout,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn layout(&self) -> FeatureLayout {
        self.layout
    }

    /// All values, row-major.
    pub fn values(&self) -> &'a [f64] {
        self.values
    }

    pub fn row(&self, i: usize) -> &'a [f64] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[i * self.cols + j]
    }

    pub fn to_owned(&self) -> OwnedMatrix {
        OwnedMatrix {
            values: self.values.to_vec(),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }
}

/// An owned row-major feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedMatrix {
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    layout: FeatureLayout,
}

impl OwnedMatrix {
    pub fn new(
        values: Vec<f64>,
        rows: usize,
        cols: usize,
        layout: FeatureLayout,
    ) -> Result<Self, String> {
        Matrix::new(&values, rows, cols, layout)?;
        Ok(Self {
            values,
            rows,
            cols,
            layout,
        })
    }

    pub fn view(&self) -> Matrix<'_> {
        Matrix {
            values: &self.values,
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }

    /// The rows `rows` of this matrix, in that order.
    pub fn select_rows(&self, rows: &[u32]) -> OwnedMatrix {
        let mut values = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            values.extend_from_slice(self.view().row(r as usize));
        }
        OwnedMatrix {
            values,
            rows: rows.len(),
            cols: self.cols,
            layout: self.layout,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn into_values(self) -> Vec<f64> {
        self.values
    }
}

/// A classifier, written in safe Rust; [`export_classifier!`](crate::export_classifier) turns
/// it into a plugin.
pub trait Classifier: Sized + Send + Sync + 'static {
    /// What [`Classifier::prepare`] makes of a training matrix; shared by every fit on it.
    type Data: Send + Sync + 'static;

    /// Configuration grids by name, as a JSON object `{"fast": [config, …], "paper": […]}`:
    /// what `lrid analyze --grid NAME` searches by cross-validation. A grid that is not listed
    /// is the one configuration `{}` (the defaults).
    const GRIDS: &'static CStr = c"{}";
    /// Whether [`Classifier::save`] and [`Classifier::load`] work.
    const CAN_SAVE: bool = false;
    /// Whether [`Classifier::importances`] gives feature importances.
    const HAS_IMPORTANCES: bool = false;

    /// Prepares a training matrix once (e.g. bins its features).
    fn prepare(x: Matrix<'_>) -> Result<Self::Data, String>;

    /// Trains on rows `rows` of the prepared matrix, with class labels `labels[i]` of row
    /// `rows[i]` in `0..n_classes`.
    fn fit(
        config: &serde_json::Value,
        data: &Self::Data,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String>;

    /// Class probabilities of every row of `x`, row-major (`x.rows() × n_classes`).
    fn predict_proba(&self, x: Matrix<'_>) -> Result<Vec<f64>, String>;

    /// The number of classes the model was fitted with.
    fn n_classes(&self) -> usize;

    /// The model as bytes ([`Classifier::CAN_SAVE`]).
    fn save(&self) -> Result<Vec<u8>, String> {
        Err("this classifier cannot save its models".into())
    }

    /// A model from [`Classifier::save`]'s bytes ([`Classifier::CAN_SAVE`]).
    fn load(_bytes: &[u8]) -> Result<Self, String> {
        Err("this classifier cannot load saved models".into())
    }

    /// Feature importances ([`Classifier::HAS_IMPORTANCES`]): one vector per member of the
    /// model (each tree of a forest; a single one for a model that is not an ensemble), each with
    /// one value per feature column. The model's importance is their mean.
    fn importances(&self) -> Result<Vec<Vec<f64>>, String> {
        Err("this classifier has no feature importances".into())
    }
}

/// An array passed into a call: the C structs, the array moved to the callee.
type In = (*mut FFI_ArrowArray, *const FFI_ArrowSchema);

/// The classifier vtable. `data` is what `prepare` made; `model` what `fit` or `load` made.
#[repr(C)]
#[allow(missing_debug_implementations)] // function pointers of the ABI
pub struct ClassifierVTable {
    /// [`CAP_SAVE`] | [`CAP_IMPORTANCES`].
    pub capabilities: u32,
    /// NUL-terminated JSON object of configuration grids by name (see [`Classifier::GRIDS`]).
    pub grids: *const c_char,
    pub prepare: unsafe extern "C-unwind" fn(
        x: *mut FFI_ArrowArray,
        x_schema: *const FFI_ArrowSchema,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32,
    pub free_data: unsafe extern "C-unwind" fn(data: *mut c_void),
    /// `config`: NUL-terminated JSON object.
    pub fit: unsafe extern "C-unwind" fn(
        config: *const c_char,
        data: *const c_void,
        rows: *mut FFI_ArrowArray,
        rows_schema: *const FFI_ArrowSchema,
        labels: *mut FFI_ArrowArray,
        labels_schema: *const FFI_ArrowSchema,
        n_classes: u32,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32,
    pub free_model: unsafe extern "C-unwind" fn(model: *mut c_void),
    pub predict_proba: unsafe extern "C-unwind" fn(
        model: *const c_void,
        x: *mut FFI_ArrowArray,
        x_schema: *const FFI_ArrowSchema,
        out: *mut FFI_ArrowArray,
        out_schema: *mut FFI_ArrowSchema,
        err: *mut ErrorBuf,
    ) -> i32,
    pub save: unsafe extern "C-unwind" fn(
        model: *const c_void,
        out: *mut FFI_ArrowArray,
        out_schema: *mut FFI_ArrowSchema,
        err: *mut ErrorBuf,
    ) -> i32,
    pub load: unsafe extern "C-unwind" fn(
        bytes: *mut FFI_ArrowArray,
        bytes_schema: *const FFI_ArrowSchema,
        out: *mut *mut c_void,
        err: *mut ErrorBuf,
    ) -> i32,
    pub importances: unsafe extern "C-unwind" fn(
        model: *const c_void,
        out: *mut FFI_ArrowArray,
        out_schema: *mut FFI_ArrowSchema,
        err: *mut ErrorBuf,
    ) -> i32,
}

// Static, immutable data.
unsafe impl Sync for ClassifierVTable {}

/// The vtable of classifier `C` (what [`export_classifier!`](crate::export_classifier) puts
/// in a static).
pub const fn vtable<C: Classifier>() -> ClassifierVTable {
    let mut capabilities = 0;
    if C::CAN_SAVE {
        capabilities |= CAP_SAVE;
    }
    if C::HAS_IMPORTANCES {
        capabilities |= CAP_IMPORTANCES;
    }
    ClassifierVTable {
        capabilities,
        grids: C::GRIDS.as_ptr(),
        prepare: prepare::<C>,
        free_data: free_data::<C>,
        fit: fit::<C>,
        free_model: free_model::<C>,
        predict_proba: predict_proba::<C>,
        save: save::<C>,
        load: load::<C>,
        importances: importances::<C>,
    }
}

unsafe extern "C-unwind" fn prepare<C: Classifier>(
    x: *mut FFI_ArrowArray,
    x_schema: *const FFI_ArrowSchema,
    out: *mut *mut c_void,
    err: *mut ErrorBuf,
) -> i32 {
    unsafe {
        guard(err, || {
            let x = import_matrix((x, x_schema))?;
            let data = C::prepare(x.view())?;
            *out = Box::into_raw(Box::new(data)) as *mut c_void;
            Ok(())
        })
    }
}

unsafe extern "C-unwind" fn free_data<C: Classifier>(data: *mut c_void) {
    if !data.is_null() {
        let _ = std::panic::catch_unwind(|| unsafe { drop(Box::from_raw(data as *mut C::Data)) });
    }
}

#[allow(clippy::too_many_arguments)] // the ABI call's own arguments
unsafe extern "C-unwind" fn fit<C: Classifier>(
    config: *const c_char,
    data: *const c_void,
    rows: *mut FFI_ArrowArray,
    rows_schema: *const FFI_ArrowSchema,
    labels: *mut FFI_ArrowArray,
    labels_schema: *const FFI_ArrowSchema,
    n_classes: u32,
    out: *mut *mut c_void,
    err: *mut ErrorBuf,
) -> i32 {
    unsafe {
        guard(err, || {
            let config = crate::parse_config(config, "classifier")?;
            let data = &*(data as *const C::Data);
            let rows = import_u32((rows, rows_schema), "row indices")?;
            let labels = import_u32((labels, labels_schema), "labels")?;
            if rows.len() != labels.len() {
                return Err(format!(
                    "{} row indices but {} labels",
                    rows.len(),
                    labels.len()
                ));
            }
            if let Some(bad) = labels.values().iter().find(|&&l| l >= n_classes) {
                return Err(format!("label {bad} is not below the {n_classes} classes"));
            }
            let model = C::fit(
                &config,
                data,
                rows.values(),
                labels.values(),
                n_classes as usize,
            )?;
            *out = Box::into_raw(Box::new(model)) as *mut c_void;
            Ok(())
        })
    }
}

unsafe extern "C-unwind" fn free_model<C: Classifier>(model: *mut c_void) {
    if !model.is_null() {
        let _ = std::panic::catch_unwind(|| unsafe { drop(Box::from_raw(model as *mut C)) });
    }
}

unsafe extern "C-unwind" fn predict_proba<C: Classifier>(
    model: *const c_void,
    x: *mut FFI_ArrowArray,
    x_schema: *const FFI_ArrowSchema,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
    err: *mut ErrorBuf,
) -> i32 {
    unsafe {
        guard(err, || {
            let model = &*(model as *const C);
            let x = import_matrix((x, x_schema))?;
            let p = model.predict_proba(x.view())?;
            let k = model.n_classes();
            let rows = x.view().rows();
            if p.len() != rows * k {
                return Err(format!(
                    "predict_proba gave {} values for {rows} rows × {k} classes",
                    p.len()
                ));
            }
            write_out(
                export_matrix(p, k, FeatureLayout::default())?,
                out,
                out_schema,
            );
            Ok(())
        })
    }
}

unsafe extern "C-unwind" fn save<C: Classifier>(
    model: *const c_void,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
    err: *mut ErrorBuf,
) -> i32 {
    if !C::CAN_SAVE {
        return STATUS_UNSUPPORTED;
    }
    unsafe {
        guard(err, || {
            let bytes = (*(model as *const C)).save()?;
            let array: ArrayRef = Arc::new(BinaryArray::from_vec(vec![bytes.as_slice()]));
            write_out(export(&array, "model")?, out, out_schema);
            Ok(())
        })
    }
}

unsafe extern "C-unwind" fn load<C: Classifier>(
    bytes: *mut FFI_ArrowArray,
    bytes_schema: *const FFI_ArrowSchema,
    out: *mut *mut c_void,
    err: *mut ErrorBuf,
) -> i32 {
    if !C::CAN_SAVE {
        return STATUS_UNSUPPORTED;
    }
    unsafe {
        guard(err, || {
            let bytes = import_bytes((bytes, bytes_schema))?;
            let model = C::load(&bytes)?;
            *out = Box::into_raw(Box::new(model)) as *mut c_void;
            Ok(())
        })
    }
}

unsafe extern "C-unwind" fn importances<C: Classifier>(
    model: *const c_void,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
    err: *mut ErrorBuf,
) -> i32 {
    if !C::HAS_IMPORTANCES {
        return STATUS_UNSUPPORTED;
    }
    unsafe {
        guard(err, || {
            let members = (*(model as *const C)).importances()?;
            let cols = members.first().map_or(0, Vec::len);
            if cols == 0 || members.iter().any(|m| m.len() != cols) {
                return Err("importances must be vectors of one value per feature".into());
            }
            let values: Vec<f64> = members.concat();
            write_out(
                export_matrix(values, cols, FeatureLayout::default())?,
                out,
                out_schema,
            );
            Ok(())
        })
    }
}

/// Writes an exported array into the caller's structs.
///
/// # Safety
/// `out` and `out_schema` must be valid for writes (their old contents are not dropped).
pub unsafe fn write_out(
    (array, schema): (FFI_ArrowArray, FFI_ArrowSchema),
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
) {
    unsafe {
        std::ptr::write(out, array);
        std::ptr::write(out_schema, schema);
    }
}

/// An array with a field named `name` (nullable false), as C Data Interface structs.
pub fn export(array: &ArrayRef, name: &str) -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
    let field = Field::new(name, array.data_type().clone(), false);
    export_with_field(array, &field)
}

fn export_with_field(
    array: &ArrayRef,
    field: &Field,
) -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
    let schema = FFI_ArrowSchema::try_from(field)
        .map_err(|e| format!("cannot export the schema of '{}': {e}", field.name()))?;
    Ok((FFI_ArrowArray::new(&array.to_data()), schema))
}

/// A row-major `rows × cols` matrix (`values.len() / cols` rows) as a `FixedSizeList<Float64>`
/// array with its layout in the field's metadata.
pub fn export_matrix(
    values: Vec<f64>,
    cols: usize,
    layout: FeatureLayout,
) -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
    let (array, field) = matrix_array(values, cols, layout)?;
    export_with_field(&array, &field)
}

/// The Arrow form of a matrix: the array and its field (with the layout as metadata).
pub fn matrix_array(
    values: Vec<f64>,
    cols: usize,
    layout: FeatureLayout,
) -> Result<(ArrayRef, Field), String> {
    let width = i32::try_from(cols).map_err(|_| format!("{cols} columns are too many"))?;
    if cols == 0 || !values.len().is_multiple_of(cols) {
        return Err(format!(
            "{} values do not make rows of {cols} columns",
            values.len()
        ));
    }
    let item = Arc::new(Field::new("item", DataType::Float64, false));
    let array = FixedSizeListArray::try_new(
        item.clone(),
        width,
        Arc::new(Float64Array::from(values)),
        None,
    )
    .map_err(|e| e.to_string())?;
    let field = Field::new("features", DataType::FixedSizeList(item, width), false).with_metadata(
        [
            (
                METADATA_CATEGORICAL.to_string(),
                layout.categorical.to_string(),
            ),
            (METADATA_POINTS.to_string(), layout.points.to_string()),
        ]
        .into(),
    );
    Ok((Arc::new(array), field))
}

/// `UInt32` values as C Data Interface structs.
pub fn export_u32(
    values: Vec<u32>,
    name: &str,
) -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
    let array: ArrayRef = Arc::new(UInt32Array::from(values));
    export(&array, name)
}

/// Bytes as a one-value `Binary` array.
pub fn export_bytes(bytes: &[u8]) -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
    let array: ArrayRef = Arc::new(BinaryArray::from_vec(vec![bytes]));
    export(&array, "model")
}

/// Takes an array passed in (leaving a released struct behind) with its field.
///
/// # Safety
/// The pointers must be null or valid C Data Interface structs.
pub unsafe fn import((array, schema): In) -> Result<(ArrayRef, Field), String> {
    if array.is_null() || schema.is_null() {
        return Err("a null Arrow array or schema was passed".into());
    }
    let array = unsafe { std::ptr::replace(array, FFI_ArrowArray::empty()) };
    let schema = unsafe { &*schema };
    let field = Field::try_from(schema).map_err(|e| format!("unreadable Arrow schema: {e}"))?;
    let data = unsafe { arrow::ffi::from_ffi(array, schema) }
        .map_err(|e| format!("unreadable Arrow array: {e}"))?;
    Ok((make_array(data), field))
}

/// An imported matrix; [`ImportedMatrix::view`] borrows its values without a copy.
#[derive(Debug)]
pub struct ImportedMatrix {
    values: Float64Array,
    rows: usize,
    cols: usize,
    layout: FeatureLayout,
}

impl ImportedMatrix {
    pub fn view(&self) -> Matrix<'_> {
        Matrix {
            values: self.values.values(),
            rows: self.rows,
            cols: self.cols,
            layout: self.layout,
        }
    }
}

fn metadata_usize(field: &Field, key: &str) -> Result<usize, String> {
    match field.metadata().get(key) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| format!("matrix metadata '{key}' is not a count: '{v}'")),
    }
}

/// A matrix from an array and its field: `FixedSizeList<Float64>`, no nulls, every value finite.
pub fn matrix_from_arrow(array: &ArrayRef, field: &Field) -> Result<ImportedMatrix, String> {
    let list = array
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| {
            format!(
                "a feature matrix must be a FixedSizeList<Float64> array; got {}",
                array.data_type()
            )
        })?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| {
            format!(
                "a feature matrix must hold Float64 values; got {}",
                list.value_type()
            )
        })?
        .clone();
    if list.null_count() > 0 || values.null_count() > 0 {
        return Err("a feature matrix must not contain nulls".into());
    }
    let cols = list.value_length() as usize;
    if let Some(i) = values.values().iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "the feature matrix holds a non-finite value ({}) at row {}, column {}",
            values.value(i),
            i / cols.max(1),
            i % cols.max(1)
        ));
    }
    let layout = FeatureLayout {
        categorical: metadata_usize(field, METADATA_CATEGORICAL)?,
        points: metadata_usize(field, METADATA_POINTS)?,
    };
    let rows = list.len();
    Matrix::new(values.values(), rows, cols, layout)?;
    Ok(ImportedMatrix {
        values,
        rows,
        cols,
        layout,
    })
}

/// Imports a matrix passed in.
///
/// # Safety
/// As [`import`].
pub unsafe fn import_matrix(x: In) -> Result<ImportedMatrix, String> {
    let (array, field) = unsafe { import(x) }?;
    matrix_from_arrow(&array, &field)
}

/// Imports `UInt32` values passed in.
///
/// # Safety
/// As [`import`].
pub unsafe fn import_u32(x: In, what: &str) -> Result<UInt32Array, String> {
    let (array, _) = unsafe { import(x) }?;
    let values = array
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| format!("{what} must be a UInt32 array; got {}", array.data_type()))?;
    if values.null_count() > 0 {
        return Err(format!("{what} must not contain nulls"));
    }
    Ok(values.clone())
}

/// Imports the `Float64` values passed in.
///
/// # Safety
/// As [`import`].
pub unsafe fn import_f64(x: In, what: &str) -> Result<Vec<f64>, String> {
    let (array, _) = unsafe { import(x) }?;
    let values = array
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| format!("{what} must be a Float64 array; got {}", array.data_type()))?;
    if values.null_count() > 0 {
        return Err(format!("{what} must not contain nulls"));
    }
    Ok(values.values().to_vec())
}

/// Imports the one value of a `Binary` array passed in.
///
/// # Safety
/// As [`import`].
pub unsafe fn import_bytes(x: In) -> Result<Vec<u8>, String> {
    let (array, _) = unsafe { import(x) }?;
    let values = array
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| {
            format!(
                "a saved model must be a Binary array; got {}",
                array.data_type()
            )
        })?;
    if values.len() != 1 || values.null_count() > 0 {
        return Err(format!(
            "a saved model is one non-null Binary value; got {} values",
            values.len()
        ));
    }
    Ok(values.value(0).to_vec())
}

/// Exports a [`Classifier`] as a plugin: the ABI version symbol, the entry point, the vtable.
/// The plugin links no libtorch ([`PluginInfo::torch_version`](crate::PluginInfo) is null)
/// unless `torch = true` is given (a classifier built on tch).
#[macro_export]
macro_rules! export_classifier {
    ($classifier:ty, name = $name:literal, version = $version:literal) => {
        $crate::export_classifier!(@export $classifier, $name, $version, std::ptr::null());
    };
    ($classifier:ty, name = $name:literal, version = $version:literal, torch = true) => {
        $crate::export_classifier!(@export $classifier, $name, $version,
            $crate::TORCH_VERSION_C.as_ptr());
    };
    (@export $classifier:ty, $name:literal, $version:literal, $torch:expr) => {
        mod __lrid_plugin_export {
            use super::*;
            use std::ffi::{c_char, c_void};

            #[unsafe(no_mangle)]
            pub static lrid_plugin_abi_version: u32 = $crate::ABI_VERSION;

            static VTABLE: $crate::ClassifierVTable =
                $crate::classifier::vtable::<$classifier>();

            static INFO: $crate::PluginInfo = $crate::PluginInfo {
                abi_version: $crate::ABI_VERSION,
                kind: $crate::KIND_CLASSIFIER,
                name: concat!($name, "\0").as_ptr() as *const c_char,
                version: concat!($version, "\0").as_ptr() as *const c_char,
                torch_version: $torch,
                vtable: &VTABLE as *const $crate::ClassifierVTable as *const c_void,
            };

            #[unsafe(no_mangle)]
            pub extern "C-unwind" fn lrid_plugin_entry() -> *const $crate::PluginInfo {
                &INFO
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_crosses_the_c_data_interface_with_its_layout() {
        let layout = FeatureLayout {
            categorical: 1,
            points: 2,
        };
        let values: Vec<f64> = (0..15).map(f64::from).collect();
        let (mut array, schema) = export_matrix(values.clone(), 5, layout).unwrap();
        let m = unsafe { import_matrix((&mut array, &schema)) }.unwrap();
        assert_eq!(m.view().rows(), 3);
        assert_eq!(m.view().cols(), 5);
        assert_eq!(m.view().layout(), layout);
        assert_eq!(m.view().values(), values.as_slice());
        assert_eq!(m.view().row(2), &[10.0, 11.0, 12.0, 13.0, 14.0]);
        // The callee took the array: the caller's struct is released.
        assert!(array.is_released());
    }

    #[test]
    fn matrices_with_non_finite_values_or_bad_layouts_are_refused() {
        let (mut array, schema) =
            export_matrix(vec![1.0, f64::NAN, 3.0, 4.0], 2, FeatureLayout::default()).unwrap();
        let e = unsafe { import_matrix((&mut array, &schema)) }.unwrap_err();
        assert!(
            e.contains("non-finite") && e.contains("row 0, column 1"),
            "{e}"
        );
        let layout = FeatureLayout {
            categorical: 0,
            points: 3,
        };
        let e = matrix_array(vec![0.0; 4], 2, layout)
            .and_then(|(a, f)| matrix_from_arrow(&a, &f))
            .unwrap_err();
        assert!(e.contains("trajectories of 3 points"), "{e}");
        let (mut array, schema) = export_u32(vec![1, 2], "labels").unwrap();
        let e = unsafe { import_matrix((&mut array, &schema)) }.unwrap_err();
        assert!(e.contains("FixedSizeList<Float64>"), "{e}");
    }

    #[test]
    fn bytes_and_labels_cross_whole() {
        let (mut a, s) = export_bytes(b"\x00model\xff").unwrap();
        assert_eq!(
            unsafe { import_bytes((&mut a, &s)) }.unwrap(),
            b"\x00model\xff"
        );
        let (mut a, s) = export_u32(vec![3, 1, 4], "rows").unwrap();
        assert_eq!(
            unsafe { import_u32((&mut a, &s), "rows") }
                .unwrap()
                .values(),
            &[3, 1, 4]
        );
    }
}
