//! # lrid-classifier-linear-svm
//!
//! The built-in linear SVM classifier plugin (`linear-svm`): scikit-learn's `LinearSVC` with its
//! defaults — L2 penalty, squared hinge loss, liblinear's dual coordinate descent
//! (`L2R_L2LOSS_SVC_DUAL`, module `solver`), one-vs-rest, a regularised intercept
//! (`intercept_scaling = 1`), `tol = 1e-4`, `max_iter = 1000` — optionally after a PCA of the
//! continuous features (spec §3.4, the reference's `PipelineClassifier`). (`dual=True` was
//! `LinearSVC`'s default up to sklearn 1.4, the paper's 0.22 among them; sklearn ≥ 1.5 defaults
//! to `dual="auto"`, which takes liblinear's primal Newton solver when rows outnumber features:
//! the same optimum, reached and stopped differently. Compare with `LinearSVC(dual=True)`.)
//!
//! `examples/fit_raw.rs` fits on raw little-endian files and writes the saved JSON, for
//! comparisons with scikit-learn.
//!
//! **In:** a training matrix (rows × features) whose first `layout().categorical` columns are
//! one-hot categorical features and the rest continuous (z-scored by the host; this plugin adds
//! no scaling of its own), then row subsets with labels `0..n_classes`. **Out:** class
//! probabilities, feature importances, and models saved as JSON.
//!
//! **Configuration keys** (others are refused): `C` (> 0, default 1.0), `tol` (> 0, 1e-4;
//! liblinear's absolute stopping tolerance on the spread of projected gradients), `max_iter`
//! (≥ 1, 1000 outer iterations), `pca_components` (null = no PCA, default; otherwise
//! 1 ≤ n ≤ min(training rows, continuous columns), else the fit fails, as sklearn's PCA does,
//! and the protocol skips the configuration), `seed` (u64, set by lrid, default 0: drives the
//! random coordinate order; problem k of a fit draws from its own stream derived from it).
//!
//! **PCA** (module `pca`): fitted on the training rows' continuous columns (centred, not whitened,
//! exact eigendecomposition of the covariance; sign: each component's largest-magnitude entry
//! positive); the categorical columns are put back *in front* of the n projections, so the SVM
//! sees `categorical + n` features. A fit caches the full decomposition of each training subset
//! in the prepared data, so every component count and C of a grid on the same fold shares it.
//!
//! **Grids** (`lrid analyze --grid`): `paper` = spec §3.4 — no PCA × C ∈ {1, 50, 500, 5e3, 5e4,
//! 5e5, 5e6} (7 configurations) followed by `pca_components` ∈ {10, 20, 30, 40, 50, 100, 200,
//! 300, 400, 500, 600} × the same C (77; component count slowest, as sklearn's `ParameterGrid`
//! orders `pca__n_components` before `svm__C`), 84 in all; `fast` = C = 1 without PCA alone
//! (1 configuration, so no inner cross-validation: on the demo corpus C = 1 won almost every
//! split of an earlier 7-configuration fast grid, no PCA won the `all` measure's cross-validation
//! in every split against 20 and 50 components, and larger C converges slowly).
//!
//! **Binary problems:** with two classes one problem is fitted, class 1 positive (decision > 0 →
//! class 1, as `LinearSVC`); with k > 2 classes, k problems, class j against the rest.
//!
//! **Probabilities:** `LinearSVC` has none, so they are a monotone map of the decision values
//! that keeps its prediction as the argmax: two classes — P(class 1) = σ(d) = 1/(1 + e^−d),
//! P(class 0) = σ(−d) (d = 0 gives ½ each, and argmax-first picks class 0, as LinearSVC's
//! `d > 0` rule); k > 2 — the softmax of the k one-vs-rest decision values.
//!
//! **Importances:** one vector (a single member): per input column, the mean over the binary
//! problems of |weight| of that column in the model's linear function of the *input*. Without
//! PCA these are the SVM coefficients; with PCA the continuous columns get the back-projected
//! weights w_pcaᵀ·V (V = the components: decision = w_catᵀx_cat + w_pcaᵀV(x − mean) + b, so
//! column j's effective weight is Σ_c w_c V_cj), the categorical columns their own weights. The
//! intercept is not a column and has none. (On z-scored features these are comparable.)
//!
//! **Saved model** (`save` / `load`): UTF-8 JSON, one object with exactly these keys:
//!
//! ```text
//! {"format": 1,                 // this schema
//!  "classes": k,                // number of classes (≥ 2)
//!  "categorical": c,            // leading categorical input columns
//!  "coef": [[…], …],            // one row per binary problem (1 if k = 2, else k), each
//!                               //   c + n values (n = PCA components, or the continuous
//!                               //   column count without PCA): sklearn's coef_
//!  "intercept": […],            // one per binary problem: sklearn's intercept_
//!  "pca": null | {"mean": […],                // d: the continuous columns' training mean
//!                 "components": [[…], …],     // n rows of d: sklearn's components_
//!                 "explained_variance": […]}} // n: sklearn's explained_variance_
//! ```
//!
//! The decision value of problem j for input x is `coef[j] · z + intercept[j]` with
//! z = x without PCA, z = [x_cat, components · (x_cont − mean)] with it. Numbers are written
//! with shortest round-trip formatting, so a loaded model predicts bit-identically.

mod pca;
mod solver;

use std::ffi::CStr;
use std::sync::{Arc, Mutex, OnceLock};

use lrid_plugin::{Classifier, Matrix};
use rayon::prelude::*;
use serde_json::{Value, json};

use pca::FullPca;
use solver::{Design, SplitMix64};

/// The configuration keys this classifier knows.
pub const CONFIG_KEYS: &[&str] = &["C", "tol", "max_iter", "pca_components", "seed"];

/// The saved-model schema version ([`LinearSvm::save`]).
pub const FORMAT: u64 = 1;

/// How many training subsets' full PCA decompositions the prepared data keeps (a training set
/// is prepared once and split into 5 folds plus the full refit; each entry is d² values).
const PCA_CACHE: usize = 8;

/// A fit's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub c: f64,
    pub tol: f64,
    pub max_iter: usize,
    pub pca_components: Option<usize>,
    pub seed: u64,
}

impl Config {
    /// Reads and checks a JSON configuration (see the crate documentation).
    pub fn parse(config: &Value) -> Result<Self, String> {
        lrid_plugin::config_known_keys(config, CONFIG_KEYS)?;
        let c = lrid_plugin::config_f64(config, "C", 1.0)?;
        if !(c > 0.0 && c.is_finite()) {
            return Err(format!("C must be a positive finite number; got {c}"));
        }
        let tol = lrid_plugin::config_f64(config, "tol", 1e-4)?;
        if !(tol > 0.0 && tol.is_finite()) {
            return Err(format!("tol must be a positive finite number; got {tol}"));
        }
        let max_iter = lrid_plugin::config_usize(config, "max_iter", 1000)?;
        if max_iter == 0 {
            return Err("max_iter must be at least 1".into());
        }
        let pca_components = match config.get("pca_components") {
            None | Some(Value::Null) => None,
            Some(_) => match lrid_plugin::config_usize(config, "pca_components", 0)? {
                0 => return Err("pca_components must be at least 1 (or null: no PCA)".into()),
                n => Some(n),
            },
        };
        let seed = match config.get(lrid_plugin::classifier::CONFIG_SEED) {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("configuration key 'seed' must be a non-negative integer; got {v}")
            })?,
        };
        Ok(Self {
            c,
            tol,
            max_iter,
            pca_components,
            seed,
        })
    }
}

/// A shared slot for one training subset's decomposition, filled by the first fit that needs
/// it (others on the same subset wait for it rather than repeat it).
type PcaSlot = Arc<OnceLock<Arc<FullPca>>>;

/// The prepared training matrix: a copy of its values, and the PCA cache.
#[derive(Debug)]
pub struct Prepared {
    values: Vec<f64>,
    rows: usize,
    cols: usize,
    categorical: usize,
    /// Most recently used last.
    pca_cache: Mutex<Vec<(Vec<u32>, PcaSlot)>>,
}

impl Prepared {
    fn continuous(&self) -> usize {
        self.cols - self.categorical
    }

    /// The full PCA of the continuous columns of `rows`, from the cache or computed.
    fn full_pca(&self, rows: &[u32]) -> Arc<FullPca> {
        let slot = {
            let mut cache = self.pca_cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.iter().position(|(key, _)| key.as_slice() == rows) {
                Some(i) => {
                    let entry = cache.remove(i);
                    let slot = entry.1.clone();
                    cache.push(entry);
                    slot
                }
                None => {
                    let slot = PcaSlot::default();
                    cache.push((rows.to_vec(), slot.clone()));
                    if cache.len() > PCA_CACHE {
                        cache.remove(0);
                    }
                    slot
                }
            }
        };
        slot.get_or_init(|| {
            Arc::new(pca::fit_full(
                &self.values,
                self.cols,
                self.categorical,
                rows,
            ))
        })
        .clone()
    }
}

/// The PCA step of a fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Training mean of each continuous column (d).
    pub mean: Vec<f64>,
    /// n components, row-major n × d.
    pub components: Vec<f64>,
    /// The n components' variances.
    pub explained_variance: Vec<f64>,
}

impl Pca {
    fn n_components(&self) -> usize {
        self.explained_variance.len()
    }
}

/// A fitted (or loaded) linear SVM.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    classes: usize,
    categorical: usize,
    /// Continuous input columns d.
    continuous: usize,
    /// One row per binary problem, `categorical + n` (PCA) or `categorical + d` values.
    coef: Vec<Vec<f64>>,
    intercept: Vec<f64>,
    pca: Option<Pca>,
    /// Outer iterations of each binary problem's solver (not saved; empty after `load`).
    n_iter: Vec<usize>,
}

/// The seed of binary problem `k`'s coordinate order.
fn problem_seed(seed: u64, k: usize) -> u64 {
    SplitMix64::new(seed ^ (k as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

impl LinearSvm {
    /// Features the SVM sees per row.
    fn svm_width(&self) -> usize {
        self.coef[0].len()
    }

    /// Input columns the model expects.
    pub fn input_cols(&self) -> usize {
        self.categorical + self.continuous
    }

    /// sklearn's `coef_` (one row per binary problem).
    pub fn coef(&self) -> &[Vec<f64>] {
        &self.coef
    }

    /// sklearn's `intercept_`.
    pub fn intercept(&self) -> &[f64] {
        &self.intercept
    }

    pub fn pca(&self) -> Option<&Pca> {
        self.pca.as_ref()
    }

    /// Outer iterations each binary problem's solver ran (sklearn's `n_iter_` is their max).
    pub fn n_iter(&self) -> &[usize] {
        &self.n_iter
    }

    /// The one-vs-rest decision values, row-major `rows × problems` (one problem for two
    /// classes: > 0 means class 1).
    pub fn decision_function(&self, x: Matrix<'_>) -> Result<Vec<f64>, String> {
        if x.cols() != self.input_cols() {
            return Err(format!(
                "the model was fitted on {} feature columns; this matrix has {}",
                self.input_cols(),
                x.cols()
            ));
        }
        let problems = self.coef.len();
        let mut out = vec![0.0; x.rows() * problems];
        let cat = self.categorical;
        match &self.pca {
            None => out.par_chunks_mut(problems).enumerate().for_each(|(r, o)| {
                let row = x.row(r);
                for ((o, w), b) in o.iter_mut().zip(&self.coef).zip(&self.intercept) {
                    *o = solver::dot(w, row) + b;
                }
            }),
            Some(pca) => {
                let width = self.svm_width();
                out.par_chunks_mut(problems).enumerate().for_each_init(
                    || (vec![0.0; width], vec![0.0; self.continuous]),
                    |(z, centred), (r, o)| {
                        let row = x.row(r);
                        z[..cat].copy_from_slice(&row[..cat]);
                        pca::project_with(
                            &row[cat..],
                            &pca.mean,
                            &pca.components,
                            pca.n_components(),
                            &mut z[cat..],
                            centred,
                        );
                        for ((o, w), b) in o.iter_mut().zip(&self.coef).zip(&self.intercept) {
                            *o = solver::dot(w, z) + b;
                        }
                    },
                );
            }
        }
        Ok(out)
    }

    fn from_json(value: &Value) -> Result<Self, String> {
        let object = value
            .as_object()
            .ok_or("a saved linear-svm model must be a JSON object")?;
        const KEYS: [&str; 6] = [
            "format",
            "classes",
            "categorical",
            "coef",
            "intercept",
            "pca",
        ];
        if let Some(k) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown key '{k}' in a saved linear-svm model"));
        }
        let count = |key: &str| -> Result<usize, String> {
            object
                .get(key)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| format!("'{key}' must be a non-negative integer"))
        };
        let format = count("format")?;
        if format as u64 != FORMAT {
            return Err(format!(
                "saved linear-svm model format {format} is not the supported {FORMAT}"
            ));
        }
        let classes = count("classes")?;
        if classes < 2 {
            return Err(format!("'classes' must be at least 2; got {classes}"));
        }
        let categorical = count("categorical")?;
        let coef = json_matrix(object.get("coef"), "coef")?;
        let intercept = json_vector(object.get("intercept"), "intercept")?;
        let problems = if classes == 2 { 1 } else { classes };
        if coef.len() != problems || intercept.len() != problems {
            return Err(format!(
                "{classes} classes need {problems} coefficient rows and intercepts; got {} and {}",
                coef.len(),
                intercept.len()
            ));
        }
        let width = coef[0].len();
        if coef.iter().any(|r| r.len() != width) || width < categorical {
            return Err(format!(
                "every coefficient row must have the same length, at least 'categorical' = \
                 {categorical}"
            ));
        }
        let (pca, continuous) = match object.get("pca") {
            None => return Err("'pca' is missing (null for no PCA)".into()),
            Some(Value::Null) => (None, width - categorical),
            Some(Value::Object(p)) => {
                if let Some(k) = p
                    .keys()
                    .find(|k| !["mean", "components", "explained_variance"].contains(&k.as_str()))
                {
                    return Err(format!("unknown key 'pca.{k}' in a saved linear-svm model"));
                }
                let mean = json_vector(p.get("mean"), "pca.mean")?;
                let rows = json_matrix(p.get("components"), "pca.components")?;
                let explained_variance =
                    json_vector(p.get("explained_variance"), "pca.explained_variance")?;
                let d = mean.len();
                if d == 0
                    || rows.iter().any(|r| r.len() != d)
                    || explained_variance.len() != rows.len()
                    || width - categorical != rows.len()
                {
                    return Err(format!(
                        "inconsistent PCA: {} components of {:?} values, {} variances, mean of \
                         {d}, coefficient rows of {width} with {categorical} categorical",
                        rows.len(),
                        rows.first().map(Vec::len),
                        explained_variance.len()
                    ));
                }
                let pca = Pca {
                    mean,
                    components: rows.concat(),
                    explained_variance,
                };
                (Some(pca), d)
            }
            Some(v) => return Err(format!("'pca' must be null or an object; got {v}")),
        };
        Ok(Self {
            classes,
            categorical,
            continuous,
            coef,
            intercept,
            pca,
            n_iter: Vec::new(),
        })
    }
}

/// A JSON array of numbers.
fn json_vector(value: Option<&Value>, what: &str) -> Result<Vec<f64>, String> {
    let array = value
        .and_then(Value::as_array)
        .ok_or_else(|| format!("'{what}' must be an array of numbers"))?;
    array
        .iter()
        .map(|v| {
            v.as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("'{what}' holds a value that is not a finite number: {v}"))
        })
        .collect()
}

/// A non-empty JSON array of arrays of numbers.
fn json_matrix(value: Option<&Value>, what: &str) -> Result<Vec<Vec<f64>>, String> {
    let array = value
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("'{what}' must be a non-empty array of arrays of numbers"))?;
    array
        .iter()
        .map(|row| json_vector(Some(row), what))
        .collect()
}

/// Numerically safe logistic function.
fn sigmoid(d: f64) -> f64 {
    if d >= 0.0 {
        1.0 / (1.0 + (-d).exp())
    } else {
        let e = d.exp();
        e / (1.0 + e)
    }
}

/// The configuration grids (see the crate documentation); a unit test checks them against the
/// spec's lists.
const GRIDS: &CStr = c"{\
\"paper\":[\
{\"C\":1},{\"C\":50},{\"C\":500},{\"C\":5000},{\"C\":50000},{\"C\":500000},{\"C\":5000000},\
{\"pca_components\":10,\"C\":1},{\"pca_components\":10,\"C\":50},{\"pca_components\":10,\"C\":500},{\"pca_components\":10,\"C\":5000},{\"pca_components\":10,\"C\":50000},{\"pca_components\":10,\"C\":500000},{\"pca_components\":10,\"C\":5000000},\
{\"pca_components\":20,\"C\":1},{\"pca_components\":20,\"C\":50},{\"pca_components\":20,\"C\":500},{\"pca_components\":20,\"C\":5000},{\"pca_components\":20,\"C\":50000},{\"pca_components\":20,\"C\":500000},{\"pca_components\":20,\"C\":5000000},\
{\"pca_components\":30,\"C\":1},{\"pca_components\":30,\"C\":50},{\"pca_components\":30,\"C\":500},{\"pca_components\":30,\"C\":5000},{\"pca_components\":30,\"C\":50000},{\"pca_components\":30,\"C\":500000},{\"pca_components\":30,\"C\":5000000},\
{\"pca_components\":40,\"C\":1},{\"pca_components\":40,\"C\":50},{\"pca_components\":40,\"C\":500},{\"pca_components\":40,\"C\":5000},{\"pca_components\":40,\"C\":50000},{\"pca_components\":40,\"C\":500000},{\"pca_components\":40,\"C\":5000000},\
{\"pca_components\":50,\"C\":1},{\"pca_components\":50,\"C\":50},{\"pca_components\":50,\"C\":500},{\"pca_components\":50,\"C\":5000},{\"pca_components\":50,\"C\":50000},{\"pca_components\":50,\"C\":500000},{\"pca_components\":50,\"C\":5000000},\
{\"pca_components\":100,\"C\":1},{\"pca_components\":100,\"C\":50},{\"pca_components\":100,\"C\":500},{\"pca_components\":100,\"C\":5000},{\"pca_components\":100,\"C\":50000},{\"pca_components\":100,\"C\":500000},{\"pca_components\":100,\"C\":5000000},\
{\"pca_components\":200,\"C\":1},{\"pca_components\":200,\"C\":50},{\"pca_components\":200,\"C\":500},{\"pca_components\":200,\"C\":5000},{\"pca_components\":200,\"C\":50000},{\"pca_components\":200,\"C\":500000},{\"pca_components\":200,\"C\":5000000},\
{\"pca_components\":300,\"C\":1},{\"pca_components\":300,\"C\":50},{\"pca_components\":300,\"C\":500},{\"pca_components\":300,\"C\":5000},{\"pca_components\":300,\"C\":50000},{\"pca_components\":300,\"C\":500000},{\"pca_components\":300,\"C\":5000000},\
{\"pca_components\":400,\"C\":1},{\"pca_components\":400,\"C\":50},{\"pca_components\":400,\"C\":500},{\"pca_components\":400,\"C\":5000},{\"pca_components\":400,\"C\":50000},{\"pca_components\":400,\"C\":500000},{\"pca_components\":400,\"C\":5000000},\
{\"pca_components\":500,\"C\":1},{\"pca_components\":500,\"C\":50},{\"pca_components\":500,\"C\":500},{\"pca_components\":500,\"C\":5000},{\"pca_components\":500,\"C\":50000},{\"pca_components\":500,\"C\":500000},{\"pca_components\":500,\"C\":5000000},\
{\"pca_components\":600,\"C\":1},{\"pca_components\":600,\"C\":50},{\"pca_components\":600,\"C\":500},{\"pca_components\":600,\"C\":5000},{\"pca_components\":600,\"C\":50000},{\"pca_components\":600,\"C\":500000},{\"pca_components\":600,\"C\":5000000}],\
\"fast\":[\
{\"C\":1}]}";

impl Classifier for LinearSvm {
    type Data = Prepared;

    const GRIDS: &'static CStr = GRIDS;
    const CAN_SAVE: bool = true;
    const HAS_IMPORTANCES: bool = true;

    fn prepare(x: Matrix<'_>) -> Result<Prepared, String> {
        Ok(Prepared {
            values: x.values().to_vec(),
            rows: x.rows(),
            cols: x.cols(),
            categorical: x.layout().categorical,
            pca_cache: Mutex::new(Vec::new()),
        })
    }

    fn fit(
        config: &Value,
        data: &Prepared,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String> {
        let config = Config::parse(config)?;
        if n_classes < 2 {
            return Err(format!(
                "a linear SVM needs at least 2 classes; got {n_classes}"
            ));
        }
        if rows.is_empty() || rows.len() != labels.len() {
            return Err(format!(
                "a fit needs training rows with one label each; got {} rows and {} labels",
                rows.len(),
                labels.len()
            ));
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= data.rows) {
            return Err(format!(
                "row {r} is not in the {}-row training matrix",
                data.rows
            ));
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(format!("label {l} is not below the {n_classes} classes"));
        }
        let cat = data.categorical;
        let d = data.continuous();
        // The SVM's rows: the training matrix's own rows without PCA, else [cat, projections].
        let projected: Vec<f64>;
        let (design, pca) = match config.pca_components {
            None => (
                Design {
                    values: &data.values,
                    offsets: rows.iter().map(|&r| r as usize * data.cols).collect(),
                    width: data.cols,
                },
                None,
            ),
            Some(k) => {
                let limit = d.min(rows.len());
                if k > limit {
                    return Err(format!(
                        "pca_components = {k} is more than min(training rows, continuous \
                         features) = min({}, {d}) = {limit}",
                        rows.len()
                    ));
                }
                let full = data.full_pca(rows);
                let width = cat + k;
                let mut z = vec![0.0; rows.len() * width];
                z.par_chunks_mut(width).zip(rows.par_iter()).for_each_init(
                    || vec![0.0; d],
                    |centred, (z, &r)| {
                        let start = r as usize * data.cols;
                        let row = &data.values[start..start + data.cols];
                        z[..cat].copy_from_slice(&row[..cat]);
                        pca::project_with(
                            &row[cat..],
                            &full.mean,
                            &full.components,
                            k,
                            &mut z[cat..],
                            centred,
                        );
                    },
                );
                projected = z;
                let pca = Pca {
                    mean: full.mean.clone(),
                    components: full.components[..k * d].to_vec(),
                    explained_variance: full.variances[..k].to_vec(),
                };
                (
                    Design {
                        values: &projected,
                        offsets: (0..rows.len()).map(|i| i * width).collect(),
                        width,
                    },
                    Some(pca),
                )
            }
        };
        let norms = design.squared_norms();
        let problems = if n_classes == 2 { 1 } else { n_classes };
        let solutions: Vec<solver::Solution> = (0..problems)
            .into_par_iter()
            .map(|k| {
                let positive = if n_classes == 2 { 1 } else { k as u32 };
                let y: Vec<f64> = labels
                    .iter()
                    .map(|&l| if l == positive { 1.0 } else { -1.0 })
                    .collect();
                solver::solve(
                    &design,
                    &norms,
                    &y,
                    config.c,
                    config.tol,
                    config.max_iter,
                    problem_seed(config.seed, k),
                )
            })
            .collect();
        Ok(Self {
            classes: n_classes,
            categorical: cat,
            continuous: d,
            intercept: solutions.iter().map(|s| s.bias).collect(),
            n_iter: solutions.iter().map(|s| s.iterations).collect(),
            coef: solutions.into_iter().map(|s| s.w).collect(),
            pca,
        })
    }

    /// Two classes: [σ(−d), σ(d)]; more: the softmax of the decision values (crate docs).
    fn predict_proba(&self, x: Matrix<'_>) -> Result<Vec<f64>, String> {
        let decisions = self.decision_function(x)?;
        if self.classes == 2 {
            return Ok(decisions
                .iter()
                .flat_map(|&d| [sigmoid(-d), sigmoid(d)])
                .collect());
        }
        let mut p = decisions;
        for row in p.chunks_exact_mut(self.classes) {
            let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for v in row.iter_mut() {
                *v = (*v - top).exp();
                total += *v;
            }
            for v in row.iter_mut() {
                *v /= total;
            }
        }
        Ok(p)
    }

    fn n_classes(&self) -> usize {
        self.classes
    }

    /// The JSON of the crate documentation.
    fn save(&self) -> Result<Vec<u8>, String> {
        let finite = self
            .coef
            .iter()
            .flatten()
            .chain(&self.intercept)
            .all(|v| v.is_finite());
        if !finite {
            return Err("the model has non-finite weights and cannot be saved".into());
        }
        let pca = match &self.pca {
            None => Value::Null,
            Some(p) => json!({
                "mean": p.mean,
                "components": p.components.chunks_exact(self.continuous).collect::<Vec<_>>(),
                "explained_variance": p.explained_variance,
            }),
        };
        let value = json!({
            "format": FORMAT,
            "classes": self.classes,
            "categorical": self.categorical,
            "coef": self.coef,
            "intercept": self.intercept,
            "pca": pca,
        });
        serde_json::to_vec(&value).map_err(|e| format!("cannot write the model as JSON: {e}"))
    }

    fn load(bytes: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("a saved linear-svm model must be JSON: {e}"))?;
        Self::from_json(&value).map_err(|e| format!("bad saved linear-svm model: {e}"))
    }

    /// One member: per input column, the mean over binary problems of |effective weight|
    /// (crate docs).
    fn importances(&self) -> Result<Vec<Vec<f64>>, String> {
        let cat = self.categorical;
        let d = self.continuous;
        let mut out = vec![0.0; cat + d];
        for w in &self.coef {
            for (o, v) in out.iter_mut().zip(&w[..cat]) {
                *o += v.abs();
            }
            match &self.pca {
                None => {
                    for (o, v) in out[cat..].iter_mut().zip(&w[cat..]) {
                        *o += v.abs();
                    }
                }
                Some(p) => {
                    let mut back = vec![0.0; d];
                    for (wc, component) in w[cat..].iter().zip(p.components.chunks_exact(d)) {
                        for (b, v) in back.iter_mut().zip(component) {
                            *b += wc * v;
                        }
                    }
                    for (o, b) in out[cat..].iter_mut().zip(&back) {
                        *o += b.abs();
                    }
                }
            }
        }
        let problems = self.coef.len() as f64;
        for o in &mut out {
            *o /= problems;
        }
        Ok(vec![out])
    }
}

lrid_plugin::export_classifier!(LinearSvm, name = "linear-svm", version = "1.0.0");

#[cfg(test)]
mod tests;
