//! The classifiers' dataset (spec §2): examples read from the `classifier_examples` view, their
//! labels and metadata, and feature matrices for a measure subset and a choice of trajectory
//! points. Features of an example: the early/middle/deep one-hot (`grp_id0..2`), then each
//! selected statistic's values over the selected points, statistic-major (column `3 + k·T + t`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use lrid_plugin::FeatureLayout;
use lrid_stats::{Measure as StatsMeasure, admissible_observables};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// The view the dataset is read from (`queries/classifier_examples.sql`).
pub const EXAMPLES_VIEW: &str = "classifier_examples";
/// Metadata columns in front of the features in [`Dataset::to_batch`].
pub const METADATA_COLUMNS: usize = 12;
/// Position one-hot feature names, in front of the statistics.
pub const POSITION_FEATURES: [&str; 3] = ["grp_id0", "grp_id1", "grp_id2"];
/// Positions in one-hot order.
pub const POSITIONS: [&str; 3] = ["early", "middle", "deep"];

/// The 24 admissible statistics (spec §1.5), in the reference order.
pub fn statistic_names() -> Vec<String> {
    admissible_observables().map(|o| o.name()).collect()
}

/// A measure subset (spec §1.5): `weight` (13 statistics), `act` (8), `grad` (3), `all` (24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MeasureSet {
    Weight,
    Act,
    Grad,
    All,
}

impl MeasureSet {
    pub const ALL: [MeasureSet; 4] = [
        MeasureSet::Weight,
        MeasureSet::Act,
        MeasureSet::Grad,
        MeasureSet::All,
    ];

    /// The subset named `name` (`weight`, `act`, `grad`, `all`).
    pub fn parse(name: &str) -> Option<MeasureSet> {
        MeasureSet::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MeasureSet::Weight => "weight",
            MeasureSet::Act => "act",
            MeasureSet::Grad => "grad",
            MeasureSet::All => "all",
        }
    }

    /// Indices into [`statistic_names`] of this subset's statistics.
    pub fn statistics(self) -> Vec<usize> {
        admissible_observables()
            .enumerate()
            .filter(|(_, o)| match self {
                MeasureSet::Weight => o.measure == StatsMeasure::Weight,
                MeasureSet::Act => o.measure == StatsMeasure::Act,
                MeasureSet::Grad => o.measure == StatsMeasure::GradAvg,
                MeasureSet::All => true,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The measure (`weight`, `act`, `grad`) of statistic `k` of [`statistic_names`].
    pub fn of_statistic(k: usize) -> &'static str {
        match admissible_observables().nth(k).map(|o| o.measure) {
            Some(StatsMeasure::Weight) => "weight",
            Some(StatsMeasure::Act) => "act",
            _ => "grad",
        }
    }
}

impl std::str::FromStr for MeasureSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        MeasureSet::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown measure '{s}' (known: weight, act, grad, all)"
                ))
            })
    }
}

/// Which trajectory points become features.
#[derive(Debug, Clone, PartialEq)]
pub enum Points {
    /// Every point, in order.
    All,
    /// Points `start..start + len` (Fig. 4b's thirds).
    Range { start: usize, len: usize },
    /// Each statistic's mean over the trajectory (Fig. S2b).
    Mean,
    /// `count` points `period` apart from a random start per example (Fig. 4a), drawn from
    /// `seed`.
    Sparse {
        period: usize,
        count: usize,
        seed: u64,
    },
}

/// An example's metadata: one layer of one closed run under one measurement model.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub run_id: String,
    pub layer_index: u32,
    pub layer_name: String,
    /// `early`, `middle` or `deep`.
    pub position: String,
    pub model: String,
    pub learning_rule: String,
    pub architecture: Option<String>,
    pub task: Option<String>,
    pub batch_size: Option<u32>,
    pub model_seed: Option<i64>,
    pub data_seed: Option<i64>,
}

impl Example {
    /// The value of a held-out factor (spec §3.8): `architecture`, `task`, or `curriculum`
    /// (batch size × data seed; an unseeded run is `unseeded`).
    pub fn factor(&self, factor: &str) -> Option<String> {
        match factor {
            "architecture" => self.architecture.clone(),
            "task" => self.task.clone(),
            "curriculum" => Some(format!(
                "b{}/d{}",
                self.batch_size.map_or("?".into(), |b| b.to_string()),
                self.data_seed.map_or("unseeded".into(), |d| d.to_string())
            )),
            _ => None,
        }
    }
}

/// An example as read: its metadata, its values (NaN for NULL), the statistics NULL at every
/// point, and another problem if it has one.
type RowRead = (Example, Vec<f64>, Vec<usize>, Option<String>);

/// A run left out of the dataset, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Exclusion {
    pub run_id: String,
    pub reason: String,
}

/// Labelled examples with their statistics' trajectories.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// Learning rules in label order (sorted).
    pub rules: Vec<String>,
    /// Label (index into `rules`) of each example.
    pub labels: Vec<u32>,
    /// Trajectory points per example.
    pub points: usize,
    /// Per example: 24 statistics × `points`, statistic-major.
    values: Vec<f64>,
    /// Runs left out, with why.
    pub excluded: Vec<Exclusion>,
    /// (measurement model, statistic) pairs not observable under that model (NULL in every
    /// example of it, e.g. the activity change outside `ideal`).
    pub unavailable: BTreeSet<(String, usize)>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the query result has no column '{name}' (is it the {EXAMPLES_VIEW} view?)"
        ))
    })
}

fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let c = arrow::compute::cast(column(batch, name)?, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

fn opt_string(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn int64s(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    let c = arrow::compute::cast(column(batch, name)?, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().clone())
}

impl Dataset {
    /// The dataset from rows of the `classifier_examples` view. Runs whose examples do not have
    /// exactly points `0..points`, hold a NULL or non-finite admissible value, lack a learning
    /// rule label, or have an unknown position are left out whole, each with its reason.
    pub fn from_batches(batches: &[RecordBatch], points: usize) -> Result<Dataset> {
        if points == 0 {
            return Err(Error::InvalidArgument(
                "an example needs at least one trajectory point".into(),
            ));
        }
        let names = statistic_names();
        let mut rows: Vec<RowRead> = Vec::new();
        // Per run: the problem of its lowest layer (a stable message).
        let mut excluded: BTreeMap<String, (u32, String)> = BTreeMap::new();
        let mut exclude = |run: &str, layer: u32, why: String| {
            let e = excluded
                .entry(run.to_string())
                .or_insert((layer, why.clone()));
            if layer < e.0 {
                *e = (layer, why);
            }
        };
        for batch in batches {
            let run_id = strings(batch, "run_id")?;
            let layer_index = int64s(batch, "layer_index")?;
            let layer_name = strings(batch, "layer_name")?;
            let position = strings(batch, "position")?;
            let model = strings(batch, "model")?;
            let rule = strings(batch, "learning_rule")?;
            let arch = strings(batch, "architecture")?;
            let task = strings(batch, "task")?;
            let batch_size = int64s(batch, "batch_size")?;
            let model_seed = int64s(batch, "model_seed")?;
            let data_seed = int64s(batch, "data_seed")?;
            let count = int64s(batch, "points")?;
            let first = int64s(batch, "first_point")?;
            let last = int64s(batch, "last_point")?;
            let lists: Vec<_> = names
                .iter()
                .map(|n| {
                    column(batch, n).and_then(|c| {
                        c.as_list_opt::<i32>().cloned().ok_or_else(|| {
                            Error::InvalidArgument(format!(
                                "column '{n}' is {}, not a list of values over the trajectory",
                                c.data_type()
                            ))
                        })
                    })
                })
                .collect::<Result<_>>()?;
            for i in 0..batch.num_rows() {
                let id = run_id.value(i).to_string();
                let layer = layer_name.value(i);
                let index = layer_index.value(i) as u32;
                let why = if rule.is_null(i) {
                    Some("it has no learning_rule label".to_string())
                } else if count.value(i) as usize != points
                    || first.value(i) != 0
                    || last.value(i) as usize != points - 1
                {
                    Some(format!(
                        "layer {layer} has {} points ({}..={}), {points} asked (points 0..={})",
                        count.value(i),
                        first.value(i),
                        last.value(i),
                        points - 1
                    ))
                } else if !POSITIONS.contains(&position.value(i)) {
                    Some(format!(
                        "layer {layer} has position '{}', not early, middle or deep",
                        position.value(i)
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    exclude(&id, index, why);
                    continue;
                }
                let mut values = Vec::with_capacity(names.len() * points);
                let mut all_null = Vec::new();
                let mut bad = None;
                for (k, list) in lists.iter().enumerate() {
                    let v = list.value(i);
                    let v = arrow::compute::cast(&v, &DataType::Float64)?;
                    let v = v.as_primitive::<arrow::datatypes::Float64Type>();
                    if v.len() != points {
                        bad = Some(format!(
                            "layer {layer}: {} has {} values, {points} expected",
                            names[k],
                            v.len()
                        ));
                        break;
                    }
                    if v.null_count() == points {
                        all_null.push(k);
                    } else if bad.is_none()
                        && let Some(t) =
                            (0..v.len()).find(|&t| v.is_null(t) || !v.value(t).is_finite())
                    {
                        bad = Some(format!(
                            "layer {layer}: {} is {} at point {t} (diverged or not recorded)",
                            names[k],
                            if v.is_null(t) {
                                "NULL".to_string()
                            } else {
                                v.value(t).to_string()
                            }
                        ));
                    }
                    values.extend(
                        (0..points).map(|t| if v.is_null(t) { f64::NAN } else { v.value(t) }),
                    );
                }
                let opt_u32 = |a: &Int64Array| a.is_valid(i).then(|| a.value(i) as u32);
                let opt_i64 = |a: &Int64Array| a.is_valid(i).then(|| a.value(i));
                rows.push((
                    Example {
                        run_id: id,
                        layer_index: index,
                        layer_name: layer.to_string(),
                        position: position.value(i).to_string(),
                        model: model.value(i).to_string(),
                        learning_rule: rule.value(i).to_string(),
                        architecture: opt_string(&arch, i),
                        task: opt_string(&task, i),
                        batch_size: opt_u32(&batch_size),
                        model_seed: opt_i64(&model_seed),
                        data_seed: opt_i64(&data_seed),
                    },
                    values,
                    all_null,
                    bad,
                ));
            }
        }
        // A statistic NULL in every example of a measurement model is not observable under it
        // (the activity change outside `ideal`): it is unavailable there, not a problem of the
        // runs. Any other NULL or non-finite value leaves its run out.
        let mut unavailable: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (e, _, nulls, _) in &rows {
            let set: BTreeSet<usize> = nulls.iter().copied().collect();
            unavailable
                .entry(e.model.clone())
                .and_modify(|u| *u = u.intersection(&set).copied().collect())
                .or_insert(set);
        }
        for (e, _, nulls, bad) in &rows {
            let gone = &unavailable[&e.model];
            if let Some(k) = nulls.iter().find(|k| !gone.contains(k)) {
                exclude(
                    &e.run_id,
                    e.layer_index,
                    format!(
                        "layer {}: {} is NULL at every point (not recorded)",
                        e.layer_name, names[*k]
                    ),
                );
            } else if let Some(why) = bad {
                exclude(&e.run_id, e.layer_index, why.clone());
            }
        }
        // A run is left out whole when any of its examples is.
        let mut rows: Vec<(Example, Vec<f64>)> = rows
            .into_iter()
            .filter(|(e, ..)| !excluded.contains_key(&e.run_id))
            .map(|(e, v, ..)| (e, v))
            .collect();
        // A stable order: run, model, layer.
        rows.sort_by(|(a, _), (b, _)| {
            (&a.run_id, &a.model, a.layer_index).cmp(&(&b.run_id, &b.model, b.layer_index))
        });
        let rules: Vec<String> = rows
            .iter()
            .map(|(e, _)| e.learning_rule.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let labels = rows
            .iter()
            .map(|(e, _)| rules.binary_search(&e.learning_rule).unwrap_or(0) as u32)
            .collect();
        let mut examples = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len() * names.len() * points);
        for (e, v) in rows {
            examples.push(e);
            values.extend(v);
        }
        Ok(Dataset {
            examples,
            rules,
            labels,
            points,
            values,
            excluded: excluded
                .into_iter()
                .map(|(run_id, (_, reason))| Exclusion { run_id, reason })
                .collect(),
            unavailable: unavailable
                .into_iter()
                .flat_map(|(m, ks)| ks.into_iter().map(move |k| (m.clone(), k)))
                .collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Statistic `k`'s trajectory of example `i`.
    pub fn trajectory(&self, i: usize, k: usize) -> &[f64] {
        let stats = statistic_names().len();
        let start = (i * stats + k) * self.points;
        &self.values[start..start + self.points]
    }

    /// The measurement models the examples were observed under.
    pub fn measurement_models(&self) -> Vec<String> {
        self.examples
            .iter()
            .map(|e| e.model.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The examples of measurement model `model` only, relabelled over their own rules.
    pub fn of_model(&self, model: &str) -> Dataset {
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| self.examples[i].model == model)
            .collect();
        self.subset(&keep)
    }

    /// The examples `keep`, relabelled over the rules they contain.
    pub fn subset(&self, keep: &[usize]) -> Dataset {
        let stats = statistic_names().len() * self.points;
        let examples: Vec<Example> = keep.iter().map(|&i| self.examples[i].clone()).collect();
        let rules: Vec<String> = examples
            .iter()
            .map(|e| e.learning_rule.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let labels = examples
            .iter()
            .map(|e| rules.binary_search(&e.learning_rule).unwrap_or(0) as u32)
            .collect();
        let mut values = Vec::with_capacity(keep.len() * stats);
        for &i in keep {
            values.extend_from_slice(&self.values[i * stats..(i + 1) * stats]);
        }
        Dataset {
            examples,
            rules,
            labels,
            points: self.points,
            values,
            excluded: self.excluded.clone(),
            unavailable: self.unavailable.clone(),
        }
    }

    /// Feature names of a matrix of `measure` over `points`.
    pub fn feature_names(&self, measure: MeasureSet, points: &Points) -> Vec<String> {
        let names = statistic_names();
        let mut out: Vec<String> = POSITION_FEATURES.iter().map(|s| s.to_string()).collect();
        let cols = self.time_columns(points);
        for k in measure.statistics() {
            if matches!(points, Points::Mean) {
                out.push(format!("{}_mean", names[k]));
            } else {
                for t in 0..cols {
                    out.push(match points {
                        Points::All => format!("{}_t{t}", names[k]),
                        Points::Range { start, .. } => format!("{}_t{}", names[k], start + t),
                        _ => format!("{}_s{t}", names[k]),
                    });
                }
            }
        }
        out
    }

    fn time_columns(&self, points: &Points) -> usize {
        match points {
            Points::All => self.points,
            Points::Range { len, .. } => *len,
            Points::Mean => 1,
            Points::Sparse { count, .. } => *count,
        }
    }

    /// The feature matrix of examples `rows` (row-major), its column count and layout.
    pub fn matrix(
        &self,
        rows: &[usize],
        measure: MeasureSet,
        points: &Points,
    ) -> Result<(Vec<f64>, usize, FeatureLayout)> {
        if let Some(k) = self.unavailable_in(rows, measure) {
            return Err(Error::InvalidArgument(format!(
                "measure {} needs {}, which is not observable under measurement model '{}'",
                measure.as_str(),
                statistic_names()[k.1],
                k.0
            )));
        }
        self.features(rows, measure, points)
    }

    /// A statistic of `measure` that is not observable under the model of one of `rows`.
    pub fn unavailable_in(&self, rows: &[usize], measure: MeasureSet) -> Option<(String, usize)> {
        let stats = measure.statistics();
        rows.iter().find_map(|&i| {
            let model = &self.examples[i].model;
            stats
                .iter()
                .find(|&&k| self.unavailable.contains(&(model.clone(), k)))
                .map(|&k| (model.clone(), k))
        })
    }

    /// The features, NaN where a statistic is not observable.
    fn features(
        &self,
        rows: &[usize],
        measure: MeasureSet,
        points: &Points,
    ) -> Result<(Vec<f64>, usize, FeatureLayout)> {
        let stats = measure.statistics();
        let t_cols = self.time_columns(points);
        if let Points::Range { start, len } = points
            && (start + len > self.points || *len == 0)
        {
            return Err(Error::InvalidArgument(format!(
                "points {start}..{} are not within the {} recorded",
                start + len,
                self.points
            )));
        }
        if let Points::Sparse { period, count, .. } = points
            && (*period == 0 || *count == 0 || (count - 1) * period >= self.points)
        {
            return Err(Error::InvalidArgument(format!(
                "{count} samples {period} points apart do not fit in {} points",
                self.points
            )));
        }
        let cols = POSITION_FEATURES.len() + stats.len() * t_cols;
        let mut out = Vec::with_capacity(rows.len() * cols);
        for &i in rows {
            let e = &self.examples[i];
            for p in POSITIONS {
                out.push(if e.position == p { 1.0 } else { 0.0 });
            }
            // The sparse start is drawn per example, from the seed and the example's identity,
            // so the same example gets the same samples in every matrix.
            let start = match points {
                Points::Sparse {
                    period,
                    count,
                    seed,
                } => {
                    let span = (count - 1) * period;
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    rng.random_range(0..self.points - span)
                }
                Points::Range { start, .. } => *start,
                _ => 0,
            };
            for &k in &stats {
                let tr = self.trajectory(i, k);
                match points {
                    Points::All => out.extend_from_slice(tr),
                    Points::Range { len, .. } => out.extend_from_slice(&tr[start..start + len]),
                    Points::Mean => out.push(tr.iter().sum::<f64>() / tr.len() as f64),
                    Points::Sparse { period, count, .. } => {
                        out.extend((0..*count).map(|c| tr[start + c * period]))
                    }
                }
            }
        }
        let layout = FeatureLayout {
            categorical: POSITION_FEATURES.len(),
            points: t_cols,
        };
        Ok((out, cols, layout))
    }

    /// Examples per rule.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.rules.len()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// The dataset as one record batch: metadata columns, then every feature of the `all`
    /// measure over every point, named (`grp_id0..2`, `<statistic>_t<point>`): exactly what
    /// the classifiers see before normalisation.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let rows: Vec<usize> = (0..self.len()).collect();
        // Statistics not observable under a model are NULL.
        let (values, cols, _) = self.features(&rows, MeasureSet::All, &Points::All)?;
        let names = self.feature_names(MeasureSet::All, &Points::All);
        let e = &self.examples;
        let s = |f: &dyn Fn(&Example) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(e.iter().map(f).collect::<Vec<_>>()))
        };
        let mut fields = vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("layer_index", DataType::UInt32, false),
            Field::new("layer_name", DataType::Utf8, false),
            Field::new("position", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, false),
            Field::new("learning_rule", DataType::Utf8, false),
            Field::new("label", DataType::UInt32, false),
            Field::new("architecture", DataType::Utf8, true),
            Field::new("task", DataType::Utf8, true),
            Field::new("batch_size", DataType::UInt32, true),
            Field::new("model_seed", DataType::Int64, true),
            Field::new("data_seed", DataType::Int64, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            s(&|x| Some(x.run_id.clone())),
            Arc::new(UInt32Array::from(
                e.iter().map(|x| x.layer_index).collect::<Vec<_>>(),
            )),
            s(&|x| Some(x.layer_name.clone())),
            s(&|x| Some(x.position.clone())),
            s(&|x| Some(x.model.clone())),
            s(&|x| Some(x.learning_rule.clone())),
            Arc::new(UInt32Array::from(self.labels.clone())),
            s(&|x| x.architecture.clone()),
            s(&|x| x.task.clone()),
            Arc::new(UInt32Array::from(
                e.iter().map(|x| x.batch_size).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                e.iter().map(|x| x.model_seed).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                e.iter().map(|x| x.data_seed).collect::<Vec<_>>(),
            )),
        ];
        debug_assert_eq!(fields.len(), METADATA_COLUMNS);
        for (j, name) in names.iter().enumerate() {
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(Float64Array::from(
                (0..self.len())
                    .map(|i| Some(values[i * cols + j]).filter(|v| !v.is_nan()))
                    .collect::<Vec<_>>(),
            )));
        }
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("lrid:rules".to_string(), self.rules.join(","));
        metadata.insert("lrid:points".to_string(), self.points.to_string());
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields).with_metadata(metadata)),
            columns,
        )?)
    }
}

/// A seeded permutation helper shared by splits and permutation importances.
pub(crate) fn shuffled(items: &mut [usize], rng: &mut ChaCha8Rng) {
    items.shuffle(rng);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Builder, ListBuilder};

    /// A row of the view: (run, layer, position, rule, points, offset); statistic k's value at
    /// point t is offset + 100·k + t.
    type Row<'a> = (&'a str, u32, &'a str, Option<&'a str>, usize, f64);

    fn view(rows: &[Row<'_>]) -> RecordBatch {
        let names = statistic_names();
        let mut fields = vec![
            Field::new("run_id", DataType::Utf8, false),
            Field::new("layer_index", DataType::UInt32, false),
            Field::new("layer_name", DataType::Utf8, false),
            Field::new("position", DataType::Utf8, false),
            Field::new("model", DataType::Utf8, false),
            Field::new("learning_rule", DataType::Utf8, true),
            Field::new("architecture", DataType::Utf8, true),
            Field::new("task", DataType::Utf8, true),
            Field::new("batch_size", DataType::UInt32, true),
            Field::new("model_seed", DataType::Int64, true),
            Field::new("data_seed", DataType::Int64, true),
            Field::new("points", DataType::Int64, false),
            Field::new("first_point", DataType::UInt32, false),
            Field::new("last_point", DataType::UInt32, false),
        ];
        let s = |f: &dyn Fn(&Row<'_>) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
        };
        let mut columns: Vec<ArrayRef> = vec![
            s(&|r| Some(r.0.to_string())),
            Arc::new(UInt32Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            s(&|r| Some(format!("l{}", r.1))),
            s(&|r| Some(r.2.to_string())),
            s(&|_| Some("ideal".into())),
            s(&|r| r.3.map(str::to_string)),
            s(&|_| Some("net".into())),
            s(&|_| None),
            Arc::new(UInt32Array::from(vec![Some(32); rows.len()])),
            Arc::new(Int64Array::from(vec![None; rows.len()])),
            Arc::new(Int64Array::from(vec![Some(1); rows.len()])),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.4 as i64).collect::<Vec<_>>(),
            )),
            Arc::new(UInt32Array::from(vec![0; rows.len()])),
            Arc::new(UInt32Array::from(
                rows.iter().map(|r| r.4 as u32 - 1).collect::<Vec<_>>(),
            )),
        ];
        for (k, n) in names.iter().enumerate() {
            fields.push(Field::new(
                n,
                DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
                true,
            ));
            let mut b = ListBuilder::new(Float64Builder::new());
            for r in rows {
                for t in 0..r.4 {
                    b.values().append_value(r.5 + (k * 100 + t) as f64);
                }
                b.append(true);
            }
            columns.push(Arc::new(b.finish()));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn examples_are_read_labelled_and_runs_with_problems_are_left_out_whole() {
        let batch = view(&[
            ("r1", 0, "early", Some("sgdm"), 3, 0.0),
            ("r1", 1, "deep", Some("sgdm"), 3, 0.5),
            ("r2", 0, "early", Some("adam"), 3, 1.0),
            ("r3", 0, "early", Some("adam"), 2, 0.0), // too few points
            ("r4", 0, "early", None, 3, 0.0),         // no label
            ("r5", 0, "early", Some("adam"), 3, f64::NAN),
            ("r6", 0, "middle", Some("adam"), 3, 0.0),
            ("r6", 1, "sideways", Some("adam"), 3, 0.0),
        ]);
        let d = Dataset::from_batches(&[batch], 3).unwrap();
        assert_eq!(d.rules, ["adam", "sgdm"]);
        let runs: Vec<&str> = d.examples.iter().map(|e| e.run_id.as_str()).collect();
        assert_eq!(runs, ["r1", "r1", "r2"]);
        assert_eq!(d.labels, [1, 1, 0]);
        let why: Vec<(&str, &str)> = d
            .excluded
            .iter()
            .map(|x| (x.run_id.as_str(), x.reason.as_str()))
            .collect();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(
            why[0].0 == "r3" && why[0].1.contains("has 2 points"),
            "{why:?}"
        );
        assert!(
            why[1].0 == "r4" && why[1].1.contains("no learning_rule"),
            "{why:?}"
        );
        assert!(why[2].0 == "r5" && why[2].1.contains("NaN"), "{why:?}");
        assert!(why[3].0 == "r6" && why[3].1.contains("sideways"), "{why:?}");

        // Features: one-hot, then statistic-major trajectories (column 3 + k·T + t).
        let (x, cols, layout) = d.matrix(&[1], MeasureSet::All, &Points::All).unwrap();
        assert_eq!(cols, 3 + 24 * 3);
        assert_eq!(layout.categorical, 3);
        assert_eq!(layout.points, 3);
        assert_eq!(&x[..3], &[0.0, 0.0, 1.0], "deep");
        assert_eq!(x[3 + 5 * 3 + 2], 0.5 + 502.0, "statistic 5, point 2");
        let (x, cols, _) = d.matrix(&[0], MeasureSet::Grad, &Points::Mean).unwrap();
        assert_eq!(cols, 3 + 3);
        assert_eq!(x[3], 2101.0, "statistic 21's mean over points 0..3");
        let (x, cols, _) = d
            .matrix(
                &[0],
                MeasureSet::Weight,
                &Points::Range { start: 1, len: 2 },
            )
            .unwrap();
        assert_eq!(cols, 3 + 13 * 2);
        assert_eq!(&x[3..5], &[1.0, 2.0]);
        assert!(
            d.matrix(&[0], MeasureSet::All, &Points::Range { start: 2, len: 2 })
                .is_err()
        );
        let names = d.feature_names(MeasureSet::All, &Points::All);
        assert_eq!(names[3], "weightabs_mean_t0");
        assert_eq!(names.len(), 75);

        let b = d.to_batch().unwrap();
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.num_columns(), METADATA_COLUMNS + 75);
        assert_eq!(b.schema().field(METADATA_COLUMNS).name(), "grp_id0");
    }

    #[test]
    fn sparse_samples_are_spaced_and_fixed_per_example() {
        let batch = view(&[("r1", 0, "early", Some("sgdm"), 21, 0.0)]);
        let d = Dataset::from_batches(&[batch], 21).unwrap();
        let points = Points::Sparse {
            period: 5,
            count: 3,
            seed: 9,
        };
        let (x, _, _) = d.matrix(&[0], MeasureSet::Weight, &points).unwrap();
        let (again, _, _) = d.matrix(&[0], MeasureSet::Weight, &points).unwrap();
        assert_eq!(x, again);
        assert_eq!(x[4] - x[3], 5.0);
        assert_eq!(x[5] - x[4], 5.0);
        assert!(x[3] <= 10.0);
    }
}
