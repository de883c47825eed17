//! `lrid stats FILE.npy --measure weight|act|gradavg`: every statistic of one measure.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use lrid_stats::{
    ActivationAccumulator, Element, GradAvgAccumulator, Measure, MeasureStats, MeasurementModel,
    weight_statistics,
};

use crate::npy::{self, Tensor};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A .npy file (float32 or float64, C order).
    file: PathBuf,

    /// What the file holds: a weight kernel, activations (first axis = examples), or the
    /// per-example layer-wise activity change.
    #[arg(long, value_enum)]
    measure: MeasureArg,

    /// Keep this fraction of units, ⌈f·U⌉ of them (at least one), chosen by --seed.
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    unit_fraction: Option<f64>,

    /// Add Gaussian noise of this standard deviation before the statistics.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    noise_std: f64,

    /// Seed of the unit subset and of the noise.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MeasureArg {
    Weight,
    Act,
    Gradavg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Table,
}

pub fn run(args: &StatsArgs) -> Result<()> {
    let model = MeasurementModel::new(args.unit_fraction, args.noise_std, args.seed)?;
    let measure = match args.measure {
        MeasureArg::Weight => Measure::Weight,
        MeasureArg::Act => Measure::Act,
        MeasureArg::Gradavg => Measure::GradAvg,
    };
    if measure == Measure::GradAvg && !model.is_ideal() {
        bail!(
            "--unit-fraction and --noise-std act on a layer's units before the activity change is \
             summed, so they cannot be applied to per-example gradavg scalars; record the layer \
             with the SDK to observe it under a measurement model"
        );
    }
    let tensor = npy::read(&args.file)?;
    let stats = match &tensor {
        Tensor::F32(v, shape) => compute(measure, v, shape, &model)?,
        Tensor::F64(v, shape) => compute(measure, v, shape, &model)?,
    };
    let out = match args.format {
        Format::Json => to_json(&stats),
        Format::Table => to_table(&stats, &tensor, &model, &args.file),
    };
    println!("{out}");
    Ok(())
}

fn compute<T: Element>(
    measure: Measure,
    values: &[T],
    shape: &[usize],
    model: &MeasurementModel,
) -> Result<MeasureStats> {
    Ok(match measure {
        Measure::Weight => weight_statistics(values, shape, model, 0)?,
        Measure::Act => {
            let Some((&examples, units)) = shape.split_first() else {
                bail!("activations need a leading examples axis; the array is a scalar");
            };
            let units: usize = units.iter().product();
            if examples == 0 || units == 0 {
                bail!("activations of shape {shape:?} hold no values");
            }
            let mut acc = ActivationAccumulator::new(units, *model, 0)?;
            acc.push(values, examples)?;
            acc.finish()?
        }
        Measure::GradAvg => {
            if shape.len() != 1 && !(shape.len() == 2 && shape[1] == 1) {
                bail!(
                    "gradavg expects one scalar per example, shape [N] or [N, 1]; got shape {shape:?}"
                );
            }
            let mut acc = GradAvgAccumulator::new();
            acc.push(values)?;
            acc.finish()?
        }
    })
}

/// One JSON object `{name: value}` in reference order, NaN as null.
fn to_json(stats: &MeasureStats) -> String {
    let map: serde_json::Map<String, serde_json::Value> = stats
        .iter()
        .map(|(o, v)| {
            let v = serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into);
            (o.name(), v)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn to_table(
    stats: &MeasureStats,
    tensor: &Tensor,
    model: &MeasurementModel,
    file: &std::path::Path,
) -> String {
    let mut out = format!(
        "{} statistics of {} (shape {:?}, {}, measurement model {})\n",
        stats.measure(),
        file.display(),
        tensor.shape(),
        tensor.dtype(),
        model
    );
    let width = stats.iter().map(|(o, _)| o.name().len()).max().unwrap_or(0);
    out += &format!("{:<width$}  {:>24}  admissible\n", "statistic", "value");
    for (o, v) in stats.iter() {
        let value = if v.is_nan() {
            "NaN".to_string()
        } else {
            format!("{v:.17e}")
        };
        let mark = if o.is_admissible() { "yes" } else { "" };
        out += &format!("{:<width$}  {value:>24}  {mark}\n", o.name());
    }
    out.pop();
    out
}
