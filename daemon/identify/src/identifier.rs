//! An identifier: one classifier per prefix length k = 1…points, each trained on the first k
//! points of every layer of a corpus, with the z-scoring of its training set and its held-out
//! accuracy. Fitted where the corpus is read (`lrid identify fit`), carried to the daemon and
//! kept there in one format: an Arrow IPC stream (the body of the Flight action
//! `lrid.put_identifier`, and the file `identifiers/<name>.arrow` in the data folder).
//!
//! The stream has one row per k — columns `points` (k), `train_examples`, `accuracy` (held-out
//! layers right), `run_accuracy` (held-out runs right, layers combined), `mean` and `scale` (the
//! z-scoring of each continuous feature), `model` (the classifier's saved model) — and the
//! identifier's description as JSON ([`IdentifierMeta`]) in the schema metadata under
//! [`METADATA_KEY`].

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, AsArray, BinaryArray, Float64Array, ListArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type, UInt64Type};
use lrid_classify::early::{PrefixModel, runs_of, runs_right};
use lrid_classify::protocol::ZScore;
use lrid_classify::{Dataset, MeasureSet};
use lrid_plugin::FeatureLayout;
use lrid_plugins::{ClassifierModel, Plugin};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Schema metadata key of the identifier's description.
pub const METADATA_KEY: &str = "lrid:identifier";
/// Version of the identifier format.
pub const FORMAT_VERSION: u32 = 1;

/// What an identifier is: its classifier, the corpus it learnt from, the rules it tells apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifierMeta {
    pub format: u32,
    pub name: String,
    /// The classifier plugin (its name) and the version that fitted the models.
    pub classifier: String,
    pub classifier_version: String,
    /// The classifier's configuration of every fit.
    pub config: serde_json::Value,
    /// The corpus: the `--where` predicate over `classifier_examples` (None: every example).
    pub where_predicate: Option<String>,
    /// The measurement model of the corpus (and of the observables it reads from a live run).
    pub model: String,
    /// The measure subset of the features (`weight`, `act`, `grad`, `all`).
    pub measure: String,
    /// The rules, in class order.
    pub rules: Vec<String>,
    /// Trajectory points of the corpus' runs (the longest prefix).
    pub points: usize,
    /// Architectures of the corpus' runs.
    pub architectures: Vec<String>,
    pub examples: usize,
    pub runs: usize,
    /// Runs held out per rule to measure the accuracies.
    pub held_out_runs: usize,
    pub created_at: String,
}

/// The models of one prefix length.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Points seen: 0..points.
    pub points: usize,
    pub train_examples: usize,
    /// Held-out layers right (NaN when nothing was held out).
    pub accuracy: f64,
    /// Held-out runs right, their layers combined (NaN when nothing was held out).
    pub run_accuracy: f64,
    pub zscore: ZScore,
    pub model: Vec<u8>,
}

/// An identifier as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Identifier {
    pub meta: IdentifierMeta,
    /// One per k = 1..=points, in order.
    pub stages: Vec<Stage>,
}

static SCHEMA_FIELDS: LazyLock<Vec<Field>> = LazyLock::new(|| {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Float64, false)));
    vec![
        Field::new("points", DataType::UInt32, false),
        Field::new("train_examples", DataType::UInt64, false),
        Field::new("accuracy", DataType::Float64, false),
        Field::new("run_accuracy", DataType::Float64, false),
        Field::new("mean", list(), false),
        Field::new("scale", list(), false),
        Field::new("model", DataType::Binary, false),
    ]
});

/// A name the daemon accepts (it becomes a file name and a SQL value).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "identifier name {name:?}: use 1–64 letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

fn float_list(rows: impl Iterator<Item = Vec<f64>>) -> ArrayRef {
    let rows: Vec<Vec<f64>> = rows.collect();
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(Vec::len));
    let values = Float64Array::from(rows.concat());
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Float64, false)),
        offsets,
        Arc::new(values),
        None,
    ))
}

impl Identifier {
    pub fn rules(&self) -> &[String] {
        &self.meta.rules
    }

    /// The identifier as one record batch (schema metadata: the description).
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let meta = serde_json::to_string(&self.meta).expect("identifier metadata");
        let schema: SchemaRef = Arc::new(
            Schema::new(SCHEMA_FIELDS.clone())
                .with_metadata([(METADATA_KEY.to_string(), meta)].into()),
        );
        let s = &self.stages;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(
                s.iter().map(|x| x.points as u32),
            )),
            Arc::new(UInt64Array::from_iter_values(
                s.iter().map(|x| x.train_examples as u64),
            )),
            Arc::new(Float64Array::from_iter_values(s.iter().map(|x| x.accuracy))),
            Arc::new(Float64Array::from_iter_values(
                s.iter().map(|x| x.run_accuracy),
            )),
            float_list(s.iter().map(|x| x.zscore.mean.clone())),
            float_list(s.iter().map(|x| x.zscore.scale.clone())),
            Arc::new(BinaryArray::from_iter_values(s.iter().map(|x| &x.model))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// The Arrow IPC stream of [`Identifier::to_batch`].
    pub fn to_ipc(&self) -> Result<Vec<u8>> {
        let batch = self.to_batch()?;
        let mut out = Vec::new();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())?;
        w.write(&batch)?;
        w.finish()?;
        drop(w);
        Ok(out)
    }

    /// An identifier from an Arrow IPC stream, checked for consistency.
    pub fn from_ipc(bytes: &[u8]) -> Result<Identifier> {
        let bad = |why: String| Error::InvalidArgument(format!("not an lrid identifier: {why}"));
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| bad(format!("not an Arrow IPC stream ({e})")))?;
        let schema = reader.schema();
        let meta_json = schema
            .metadata()
            .get(METADATA_KEY)
            .ok_or_else(|| bad(format!("the schema has no '{METADATA_KEY}' metadata")))?;
        let meta: IdentifierMeta = serde_json::from_str(meta_json)
            .map_err(|e| bad(format!("its description does not parse: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(bad(format!(
                "format {} (this daemon reads format {FORMAT_VERSION})",
                meta.format
            )));
        }
        for f in SCHEMA_FIELDS.iter() {
            match schema.field_with_name(f.name()) {
                Ok(g) if g.data_type() == f.data_type() => {}
                _ => {
                    return Err(bad(format!(
                        "column '{}' of type {} is missing",
                        f.name(),
                        f.data_type()
                    )));
                }
            }
        }
        let mut stages = Vec::new();
        for batch in reader {
            let b = batch.map_err(|e| bad(e.to_string()))?;
            let col = |n: &str| b.column_by_name(n).expect("checked column");
            let points = col("points").as_primitive::<UInt32Type>();
            let train = col("train_examples").as_primitive::<UInt64Type>();
            let accuracy = col("accuracy").as_primitive::<Float64Type>();
            let run_accuracy = col("run_accuracy").as_primitive::<Float64Type>();
            let mean = col("mean").as_list::<i32>();
            let scale = col("scale").as_list::<i32>();
            let model = col("model").as_binary::<i32>();
            for i in 0..b.num_rows() {
                let floats = |l: &ListArray| -> Vec<f64> {
                    l.value(i).as_primitive::<Float64Type>().values().to_vec()
                };
                stages.push(Stage {
                    points: points.value(i) as usize,
                    train_examples: train.value(i) as usize,
                    accuracy: accuracy.value(i),
                    run_accuracy: run_accuracy.value(i),
                    zscore: ZScore {
                        cols: 0,
                        categorical: 0,
                        mean: floats(mean),
                        scale: floats(scale),
                    },
                    model: model.value(i).to_vec(),
                });
            }
        }
        let id = Identifier { meta, stages };
        id.check()?;
        Ok(id)
    }

    /// Why the identifier cannot be used, if it cannot.
    pub fn check(&self) -> Result<()> {
        let m = &self.meta;
        let bad = |why: String| {
            Err(Error::InvalidArgument(format!(
                "identifier '{}': {why}",
                m.name
            )))
        };
        check_name(&m.name)?;
        if m.rules.len() < 2 || m.rules.iter().collect::<BTreeSet<_>>().len() != m.rules.len() {
            return bad(format!(
                "it needs two or more distinct rules; it has {}",
                m.rules.join(", ")
            ));
        }
        let Some(measure) = MeasureSet::parse(&m.measure) else {
            return bad(format!("unknown measure '{}'", m.measure));
        };
        if m.points == 0 || self.stages.len() != m.points {
            return bad(format!(
                "{} prefix model(s) for {} points",
                self.stages.len(),
                m.points
            ));
        }
        let stats = measure.statistics().len();
        for (i, s) in self.stages.iter().enumerate() {
            let continuous = stats * (i + 1);
            if s.points != i + 1
                || s.zscore.mean.len() != continuous
                || s.zscore.scale.len() != continuous
                || s.zscore.scale.iter().any(|v| !(v.is_finite() && *v > 0.0))
                || s.zscore.mean.iter().any(|v| !v.is_finite())
            {
                return bad(format!(
                    "the prefix model for {} point(s) is inconsistent (expected {continuous} finite means and positive scales)",
                    i + 1
                ));
            }
            if s.model.is_empty() {
                return bad(format!("the model for {} point(s) is empty", i + 1));
            }
        }
        Ok(())
    }

    /// The measure subset of the features.
    pub fn measure(&self) -> MeasureSet {
        MeasureSet::parse(&self.meta.measure).unwrap_or(MeasureSet::All)
    }

    /// The feature layout of the prefix model for `k` points.
    pub fn layout(&self, k: usize) -> (usize, FeatureLayout) {
        let stats = self.measure().statistics().len();
        let categorical = lrid_classify::dataset::POSITION_FEATURES.len();
        (
            categorical + stats * k,
            FeatureLayout {
                categorical,
                points: k,
            },
        )
    }

    /// The z-scoring of the prefix model for `k` points, with its column counts.
    pub fn zscore(&self, k: usize) -> ZScore {
        let (cols, layout) = self.layout(k);
        ZScore {
            cols,
            categorical: layout.categorical,
            ..self.stages[k - 1].zscore.clone()
        }
    }
}

/// How to fit an identifier.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub name: String,
    pub config: serde_json::Value,
    pub measure: MeasureSet,
    pub where_predicate: Option<String>,
    pub model: String,
    /// Fraction of each rule's runs held out to measure the accuracies (then every run trains
    /// the stored models).
    pub test_fraction: f64,
    pub seed: u64,
}

/// Runs held out for the accuracies: `fraction` of each rule's runs (at least one when a rule
/// has two or more), drawn from `seed`.
pub fn held_out_runs(dataset: &Dataset, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let all: Vec<usize> = (0..dataset.len()).collect();
    let runs = runs_of(dataset, &all);
    let mut per_rule: Vec<Vec<&String>> = vec![Vec::new(); dataset.rules.len()];
    for (run, members) in &runs {
        per_rule[dataset.labels[members[0]] as usize].push(run);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut test_runs = BTreeSet::new();
    for mut r in per_rule {
        if r.len() < 2 || fraction <= 0.0 {
            continue;
        }
        r.shuffle(&mut rng);
        let n = ((r.len() as f64 * fraction).round() as usize).clamp(1, r.len() - 1);
        test_runs.extend(r.into_iter().take(n));
    }
    all.into_iter()
        .partition(|&i| !test_runs.contains(&dataset.examples[i].run_id))
}

/// Fits an identifier on `dataset` (one measurement model) with `plugin`; `progress(k)` after
/// each prefix length.
pub fn fit(
    dataset: &Dataset,
    plugin: &Arc<Plugin>,
    options: &FitOptions,
    progress: &dyn Fn(usize),
) -> Result<Identifier> {
    check_name(&options.name)?;
    if !plugin.can_save() {
        return Err(Error::InvalidArgument(format!(
            "classifier '{}' cannot save and load its models, so it cannot back an identifier (the daemon keeps the models); choose one that can, e.g. random-forest",
            plugin.name
        )));
    }
    if dataset.rules.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "the corpus has {} learning rule{} ({}); an identifier tells two or more apart",
            dataset.rules.len(),
            if dataset.rules.len() == 1 { "" } else { "s" },
            if dataset.rules.is_empty() {
                "none".into()
            } else {
                dataset.rules.join(", ")
            }
        )));
    }
    let models = dataset.measurement_models();
    if models.len() != 1 {
        return Err(Error::InvalidArgument(format!(
            "an identifier learns from one measurement model; the corpus has {}",
            models.join(", ")
        )));
    }
    let all: Vec<usize> = (0..dataset.len()).collect();
    let (train, test) = held_out_runs(dataset, options.test_fraction, options.seed);
    let mut stages = Vec::with_capacity(dataset.points);
    for k in 1..=dataset.points {
        let (accuracy, run_accuracy) = if test.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let m = PrefixModel::fit(
                dataset,
                &train,
                options.measure,
                k,
                plugin,
                &options.config,
                options.seed,
            )?;
            let probs = m.predict_rows(dataset, &test)?;
            let right = test
                .iter()
                .zip(&probs)
                .filter(|(i, p)| lrid_plugins::argmax(p) == dataset.labels[**i])
                .count();
            let (runs_ok, runs) = runs_right(dataset, &test, &m)?;
            (
                right as f64 / test.len() as f64,
                runs_ok as f64 / runs.max(1) as f64,
            )
        };
        let m = PrefixModel::fit(
            dataset,
            &all,
            options.measure,
            k,
            plugin,
            &options.config,
            options.seed,
        )?;
        stages.push(Stage {
            points: k,
            train_examples: all.len(),
            accuracy,
            run_accuracy,
            zscore: m.zscore.clone(),
            model: m.model.save()?,
        });
        progress(k);
    }
    let architectures: BTreeSet<String> = dataset
        .examples
        .iter()
        .filter_map(|e| e.architecture.clone())
        .collect();
    let test_runs = runs_of(dataset, &test).len();
    let identifier = Identifier {
        meta: IdentifierMeta {
            format: FORMAT_VERSION,
            name: options.name.clone(),
            classifier: plugin.name.clone(),
            classifier_version: plugin.version.clone(),
            config: options.config.clone(),
            where_predicate: options.where_predicate.clone(),
            model: options.model.clone(),
            measure: options.measure.as_str().to_string(),
            rules: dataset.rules.clone(),
            points: dataset.points,
            architectures: architectures.into_iter().collect(),
            examples: dataset.len(),
            runs: runs_of(dataset, &all).len(),
            held_out_runs: test_runs,
            created_at: lrid_classify::experiments::now_rfc3339(),
        },
        stages,
    };
    identifier.check()?;
    Ok(identifier)
}

/// The models of an identifier, loaded into their classifier plugin.
#[derive(Debug)]
pub struct LoadedIdentifier {
    pub identifier: Identifier,
    /// One per k.
    pub models: Vec<ClassifierModel>,
}

impl LoadedIdentifier {
    pub fn load(identifier: Identifier, plugin: &Arc<Plugin>) -> Result<LoadedIdentifier> {
        let n = identifier.rules().len();
        let models = identifier
            .stages
            .iter()
            .map(|s| plugin.load_model(&s.model, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LoadedIdentifier { identifier, models })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identifier(points: usize) -> Identifier {
        let stats = MeasureSet::All.statistics().len();
        Identifier {
            meta: IdentifierMeta {
                format: FORMAT_VERSION,
                name: "demo".into(),
                classifier: "random-forest".into(),
                classifier_version: "1.0.0".into(),
                config: serde_json::json!({"max_features": "sqrt"}),
                where_predicate: Some("task = 'shapes'".into()),
                model: "ideal".into(),
                measure: "all".into(),
                rules: vec!["adam".into(), "sgdm".into()],
                points,
                architectures: vec!["resnet18-v1".into()],
                examples: 10,
                runs: 2,
                held_out_runs: 1,
                created_at: "2026-11-29T00:00:00Z".into(),
            },
            stages: (1..=points)
                .map(|k| Stage {
                    points: k,
                    train_examples: 10,
                    accuracy: 0.5 + 0.01 * k as f64,
                    run_accuracy: f64::NAN,
                    zscore: ZScore {
                        cols: 0,
                        categorical: 0,
                        mean: vec![0.5; stats * k],
                        scale: vec![2.0; stats * k],
                    },
                    model: vec![k as u8; 3],
                })
                .collect(),
        }
    }

    #[test]
    fn an_identifier_round_trips_through_arrow_ipc() {
        let id = identifier(3);
        let back = Identifier::from_ipc(&id.to_ipc().unwrap()).unwrap();
        assert_eq!(back.meta, id.meta);
        assert_eq!(back.stages.len(), 3);
        for (a, b) in back.stages.iter().zip(&id.stages) {
            assert_eq!(
                (
                    a.points,
                    a.train_examples,
                    &a.model,
                    &a.zscore.mean,
                    &a.zscore.scale
                ),
                (
                    b.points,
                    b.train_examples,
                    &b.model,
                    &b.zscore.mean,
                    &b.zscore.scale
                )
            );
            assert!(a.run_accuracy.is_nan());
        }
        // The z-scoring of k = 2 gets its column counts from the layout.
        let z = back.zscore(2);
        assert_eq!((z.cols, z.categorical), (3 + 24 * 2, 3));
    }

    #[test]
    fn inconsistent_identifiers_and_other_bytes_are_refused() {
        let e = Identifier::from_ipc(b"not arrow").unwrap_err().to_string();
        assert!(e.contains("not an Arrow IPC stream"), "{e}");
        let mut id = identifier(2);
        id.meta.rules = vec!["adam".into()];
        let e = Identifier::from_ipc(&id.to_ipc().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two or more distinct rules"), "{e}");
        let mut id = identifier(2);
        id.stages.pop();
        let e = Identifier::from_ipc(&id.to_ipc().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 prefix model(s) for 2 points"), "{e}");
        let mut id = identifier(2);
        id.stages[1].zscore.scale[0] = 0.0;
        let e = Identifier::from_ipc(&id.to_ipc().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prefix model for 2 point(s) is inconsistent"),
            "{e}"
        );
        let mut id = identifier(1);
        id.meta.format = 9;
        let e = Identifier::from_ipc(&id.to_ipc().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("format 9"), "{e}");
        for bad in ["", "a b", ".hidden", "x/y"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("demo-1.v2_x").is_ok());
    }
}
