//! Per-measure observation: weights (one group), activations (a group per example, averaged,
//! mergeable across batches) and the layer-wise activity change (per-example scalars).

use rayon::prelude::*;

use crate::group::{GroupStats, NonFiniteValues, Scratch, summarize};
use crate::measurement::{MeasurementModel, NoiseSource, UnitSelection};
use crate::names::{Measure, Observable};
use crate::{Element, Error, Result};

/// The statistics of one measure of one layer, in the measure's reference order.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureStats {
    measure: Measure,
    values: Vec<f64>,
}

impl MeasureStats {
    fn new(measure: Measure, values: Vec<f64>) -> Self {
        debug_assert_eq!(values.len(), measure.observable_count());
        Self { measure, values }
    }

    pub fn measure(&self) -> Measure {
        self.measure
    }

    /// Values in `measure().observables()` order; NaN where a statistic is undefined.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The value of one observable of this measure.
    pub fn get(&self, observable: Observable) -> Option<f64> {
        self.iter().find(|(o, _)| *o == observable).map(|(_, v)| v)
    }

    /// The value of an observable by reference name, e.g. `weightabs_median`.
    pub fn get_by_name(&self, name: &str) -> Option<f64> {
        Observable::from_name(name).and_then(|o| self.get(o))
    }

    /// (observable, value) pairs in reference order.
    pub fn iter(&self) -> impl Iterator<Item = (Observable, f64)> + '_ {
        self.measure.observables().zip(self.values.iter().copied())
    }
}

/// Describes the non-finite values of `data` (laid out as `shape`) for an error message.
fn non_finite_error<T: Element>(measure: Measure, data: &[T], shape: &[usize]) -> Error {
    let mut nan = 0;
    let mut infinite = 0;
    let mut first = None;
    for (i, &x) in data.iter().enumerate() {
        if !x.is_finite() {
            if x.to_f64().is_nan() {
                nan += 1;
            } else {
                infinite += 1;
            }
            first.get_or_insert(i);
        }
    }
    let first = first.map_or_else(String::new, |i| describe_index(i, shape));
    Error::NonFinite {
        measure,
        count: nan + infinite,
        nan,
        infinite,
        total: data.len(),
        first,
    }
}

/// `[i, j, k]` for a flat row-major index in `shape`.
fn describe_index(mut flat: usize, shape: &[usize]) -> String {
    if shape.len() <= 1 {
        return format!("index {flat}");
    }
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        idx[d] = flat % n.max(1);
        flat /= n.max(1);
    }
    format!("index {idx:?}")
}

fn check_shape(measure: Measure, len: usize, shape: &[usize]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != len {
        return Err(Error::ShapeMismatch {
            measure,
            detail: format!("shape {shape:?} holds {expected} values but {len} were given"),
        });
    }
    if len == 0 {
        return Err(Error::Empty { measure });
    }
    Ok(())
}

/// Observes a layer's weights under one measurement model; the unit subset is drawn once and
/// kept for every trajectory point.
#[derive(Clone, Debug)]
pub struct WeightObserver {
    model: MeasurementModel,
    selection: UnitSelection,
}

impl WeightObserver {
    /// For kernels of `elements` entries.
    pub fn new(model: MeasurementModel, elements: usize) -> Result<Self> {
        model.validate()?;
        Ok(Self {
            model,
            selection: model.selection(elements, 0),
        })
    }

    /// Reuses a unit selection drawn earlier (`model.selection(elements, 0)`).
    pub fn with_selection(model: MeasurementModel, selection: UnitSelection) -> Self {
        Self { model, selection }
    }

    /// The 21 weight statistics of `weights` (row-major, `shape`), `draw` numbering the
    /// evaluation for the noise.
    pub fn observe<T: Element>(
        &self,
        weights: &[T],
        shape: &[usize],
        draw: u64,
    ) -> Result<MeasureStats> {
        let measure = Measure::Weight;
        check_shape(measure, weights.len(), shape)?;
        if weights.len() != self.selection.units() {
            return Err(Error::ShapeMismatch {
                measure,
                detail: format!(
                    "the observer was made for {} entries, got {}",
                    self.selection.units(),
                    weights.len()
                ),
            });
        }
        let mut scratch = Scratch::default();
        let stats = if self.model.is_ideal() {
            summarize(weights, &mut scratch, true)
        } else {
            if weights.iter().any(|x| !x.is_finite()) {
                return Err(non_finite_error(measure, weights, shape));
            }
            let mut kept = Vec::new();
            let mut noise = self.model.noise(draw).map(|n| n.stream(0));
            self.selection.gather(weights, noise.as_mut(), &mut kept);
            summarize(&kept, &mut scratch, true)
        };
        let stats = stats.map_err(|_| non_finite_error(measure, weights, shape))?;
        Ok(MeasureStats::new(measure, stats.to_array().to_vec()))
    }
}

/// The 21 weight statistics of one kernel (row-major values of `shape`).
pub fn weight_statistics<T: Element>(
    weights: &[T],
    shape: &[usize],
    model: &MeasurementModel,
    draw: u64,
) -> Result<MeasureStats> {
    WeightObserver::new(*model, weights.len())?.observe(weights, shape, draw)
}

/// The mergeable state of an activation or gradavg accumulator: the example count and the
/// compensated sums, exactly (f64 bit patterns, so NaN survives any serialisation). A daemon
/// writes it to its write-ahead log and absorbs it back on replay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartialStats {
    pub measure: Measure,
    pub examples: u64,
    /// (sum, compensation) bit patterns, one pair per observable of the measure.
    sums: Vec<(u64, u64)>,
}

impl PartialStats {
    fn new(measure: Measure, examples: usize, sums: &[CompensatedSum]) -> Self {
        Self {
            measure,
            examples: examples as u64,
            sums: sums
                .iter()
                .map(|s| (s.sum.to_bits(), s.compensation.to_bits()))
                .collect(),
        }
    }

    fn check(&self, measure: Measure) -> Result<()> {
        if self.measure != measure || self.sums.len() != measure.observable_count() {
            return Err(Error::Merge(format!(
                "a partial state of {} with {} sums cannot join a {measure} accumulator",
                self.measure,
                self.sums.len()
            )));
        }
        Ok(())
    }

    /// An empty state of `measure` (`act` or `gradavg`).
    pub fn empty(measure: Measure) -> Self {
        Self::new(
            measure,
            0,
            &vec![CompensatedSum::default(); measure.observable_count()],
        )
    }

    /// Adds another partial state of the same measure.
    pub fn merge(&mut self, other: &PartialStats) -> Result<()> {
        other.check(self.measure)?;
        let merged: Vec<CompensatedSum> = self
            .sums()
            .zip(other.sums())
            .map(|(mut a, b)| {
                a.merge(&b);
                a
            })
            .collect();
        *self = Self::new(
            self.measure,
            (self.examples + other.examples) as usize,
            &merged,
        );
        Ok(())
    }

    /// The statistics: every sum divided by the number of examples.
    pub fn finish(&self) -> Result<MeasureStats> {
        if self.examples == 0 {
            return Err(Error::Empty {
                measure: self.measure,
            });
        }
        let n = self.examples as f64;
        Ok(MeasureStats::new(
            self.measure,
            self.sums().map(|s| s.value() / n).collect(),
        ))
    }

    /// Adds this state to an accumulator's sums and example count.
    fn absorb_into(
        &self,
        measure: Measure,
        sums: &mut [CompensatedSum],
        examples: &mut usize,
    ) -> Result<()> {
        self.check(measure)?;
        for (a, b) in sums.iter_mut().zip(self.sums()) {
            a.merge(&b);
        }
        *examples += self.examples as usize;
        Ok(())
    }

    fn sums(&self) -> impl Iterator<Item = CompensatedSum> + '_ {
        self.sums.iter().map(|&(s, c)| CompensatedSum {
            sum: f64::from_bits(s),
            compensation: f64::from_bits(c),
        })
    }
}

/// A sum that keeps its rounding error (Neumaier), so merged partial sums equal the sum of the
/// whole set to the last bit or two, whatever the batch boundaries.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn merge(&mut self, other: &CompensatedSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Activation statistics of one layer over one evaluation pass, fed batch by batch.
///
/// Each example's units (all non-batch axes, flattened) form one group; the per-example
/// statistics are averaged over every example pushed. Accumulators of the same layer and model
/// merge, in any order.
#[derive(Clone, Debug)]
pub struct ActivationAccumulator {
    units: usize,
    model: MeasurementModel,
    selection: UnitSelection,
    noise: Option<NoiseSource>,
    examples: usize,
    sums: [CompensatedSum; 21],
}

impl ActivationAccumulator {
    /// For activations of `units` values per example; `draw` numbers the evaluation pass (fresh
    /// noise per pass).
    pub fn new(units: usize, model: MeasurementModel, draw: u64) -> Result<Self> {
        model.validate()?;
        if units == 0 {
            return Err(Error::Empty {
                measure: Measure::Act,
            });
        }
        Ok(Self {
            units,
            selection: model.selection(units, 0),
            noise: model.noise(draw),
            model,
            examples: 0,
            sums: Default::default(),
        })
    }

    /// Reuses a selection drawn earlier (the same recorded units at every trajectory point).
    pub fn with_selection(selection: UnitSelection, model: MeasurementModel, draw: u64) -> Self {
        Self {
            units: selection.units(),
            selection,
            noise: model.noise(draw),
            model,
            examples: 0,
            sums: Default::default(),
        }
    }

    pub fn units(&self) -> usize {
        self.units
    }

    /// Examples accumulated so far.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Adds a batch of `examples` examples, row-major with the batch axis first. On error the
    /// accumulator is unchanged.
    pub fn push<T: Element>(&mut self, batch: &[T], examples: usize) -> Result<()> {
        let measure = Measure::Act;
        if examples == 0 || batch.len() != examples * self.units {
            return Err(Error::ShapeMismatch {
                measure,
                detail: format!(
                    "{examples} example(s) of {} units need {} values, got {}",
                    self.units,
                    examples * self.units,
                    batch.len()
                ),
            });
        }
        let offset = self.examples as u64;
        let rows = self.per_example(batch, offset).map_err(|_| {
            let e = non_finite_error(measure, batch, &[examples, self.units]);
            match e {
                Error::NonFinite {
                    measure,
                    count,
                    nan,
                    infinite,
                    total,
                    ..
                } => {
                    let first = batch.iter().position(|x| !x.is_finite()).unwrap_or(0);
                    Error::NonFinite {
                        measure,
                        count,
                        nan,
                        infinite,
                        total,
                        first: format!(
                            "example {} of the pass (batch row {}), unit {}",
                            self.examples + first / self.units,
                            first / self.units,
                            first % self.units
                        ),
                    }
                }
                other => other,
            }
        })?;
        for row in rows {
            for (s, v) in self.sums.iter_mut().zip(row.to_array()) {
                s.add(v);
            }
        }
        self.examples += examples;
        Ok(())
    }

    fn per_example<T: Element>(
        &self,
        batch: &[T],
        offset: u64,
    ) -> Result<Vec<GroupStats>, NonFiniteValues> {
        let examples = batch.len() / self.units;
        let ideal = self.model.is_ideal();
        let one = |scratch: &mut (Scratch, Vec<f64>), (e, row): (usize, &[T])| {
            if ideal {
                summarize(row, &mut scratch.0, false)
            } else {
                if row.iter().any(|x| !x.is_finite()) {
                    return Err(NonFiniteValues(1));
                }
                let mut noise = self.noise.map(|n| n.stream(offset + e as u64));
                self.selection.gather(row, noise.as_mut(), &mut scratch.1);
                summarize(&scratch.1, &mut scratch.0, false)
            }
        };
        if examples >= rayon::current_num_threads() {
            batch
                .par_chunks(self.units)
                .enumerate()
                .map_init(|| (Scratch::default(), Vec::new()), one)
                .collect()
        } else {
            // Few, large examples: parallelise inside each one instead.
            let mut scratch = (Scratch::default(), Vec::new());
            batch
                .chunks(self.units)
                .enumerate()
                .map(|(e, row)| {
                    if ideal {
                        summarize(row, &mut scratch.0, true)
                    } else {
                        one(&mut scratch, (e, row))
                    }
                })
                .collect()
        }
    }

    /// Adds another accumulator of the same layer (same units and model).
    pub fn merge(&mut self, other: &ActivationAccumulator) -> Result<()> {
        if other.units != self.units || other.model != self.model {
            return Err(Error::Merge(format!(
                "activation accumulators differ: {} units under '{}' vs {} units under '{}'",
                self.units, self.model, other.units, other.model
            )));
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            a.merge(b);
        }
        self.examples += other.examples;
        Ok(())
    }

    /// The mergeable state (see [`PartialStats`]).
    pub fn partial(&self) -> PartialStats {
        PartialStats::new(Measure::Act, self.examples, &self.sums)
    }

    /// Adds a partial state taken from an accumulator of the same layer and model.
    pub fn absorb(&mut self, partial: &PartialStats) -> Result<()> {
        partial.absorb_into(Measure::Act, &mut self.sums, &mut self.examples)
    }

    /// The 21 activation statistics averaged over every example pushed.
    pub fn finish(&self) -> Result<MeasureStats> {
        self.partial().finish()
    }
}

/// The layer-wise activity change of one layer over one evaluation pass: the mean of gₙ, |gₙ|
/// and gₙ² over examples.
#[derive(Clone, Debug, Default)]
pub struct GradAvgAccumulator {
    examples: usize,
    sums: [CompensatedSum; 3],
}

impl GradAvgAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Adds per-example scalars gₙ. On error the accumulator is unchanged.
    pub fn push<T: Element>(&mut self, per_example: &[T]) -> Result<()> {
        let measure = Measure::GradAvg;
        if per_example.is_empty() {
            return Err(Error::Empty { measure });
        }
        if per_example.iter().any(|x| !x.is_finite()) {
            let mut e = non_finite_error(measure, per_example, &[per_example.len()]);
            if let Error::NonFinite { first, .. } = &mut e {
                *first = first.replace("index", "example");
            }
            return Err(e);
        }
        for &g in per_example {
            let g = g.to_f64();
            self.sums[0].add(g.abs());
            self.sums[1].add(g);
            self.sums[2].add(g * g);
        }
        self.examples += per_example.len();
        Ok(())
    }

    /// Adds examples from the input gradient, under a measurement model (spec §1.7):
    /// `input_gradient` is J, `[examples, input_units]` row-major, the gradient of the sum of the
    /// kept output units (`model.selection(output_units, 1)`) with respect to the layer input.
    /// Noise is added to J, input units are subsampled with the model's seed, the kept inputs are
    /// summed and divided by the number of kept outputs.
    pub fn push_input_gradient<T: Element>(
        &mut self,
        input_gradient: &[T],
        examples: usize,
        input_units: &UnitSelection,
        kept_outputs: usize,
        noise: Option<NoiseSource>,
        first_example: u64,
    ) -> Result<()> {
        let measure = Measure::GradAvg;
        let units = input_units.units();
        if examples == 0 || input_gradient.len() != examples * units || kept_outputs == 0 {
            return Err(Error::ShapeMismatch {
                measure,
                detail: format!(
                    "{examples} example(s) of {units} input units need {} gradient values, got {} ({kept_outputs} kept outputs)",
                    examples * units,
                    input_gradient.len()
                ),
            });
        }
        if input_gradient.iter().any(|x| !x.is_finite()) {
            return Err(non_finite_error(
                measure,
                input_gradient,
                &[examples, units],
            ));
        }
        let mut kept = Vec::new();
        let g: Vec<f64> = input_gradient
            .chunks(units)
            .enumerate()
            .map(|(e, row)| {
                let mut stream = noise.map(|n| n.stream(first_example + e as u64));
                input_units.gather(row, stream.as_mut(), &mut kept);
                kept.iter().sum::<f64>() / kept_outputs as f64
            })
            .collect();
        self.push(&g)
    }

    pub fn merge(&mut self, other: &GradAvgAccumulator) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            a.merge(b);
        }
        self.examples += other.examples;
    }

    /// The mergeable state (see [`PartialStats`]).
    pub fn partial(&self) -> PartialStats {
        PartialStats::new(Measure::GradAvg, self.examples, &self.sums)
    }

    /// Adds a partial state taken from another gradavg accumulator.
    pub fn absorb(&mut self, partial: &PartialStats) -> Result<()> {
        partial.absorb_into(Measure::GradAvg, &mut self.sums, &mut self.examples)
    }

    /// `gradavgabs_id`, `gradavgraw_id`, `gradavgsq_id`.
    pub fn finish(&self) -> Result<MeasureStats> {
        self.partial().finish()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 0.7).collect()
    }

    fn assert_close(a: &MeasureStats, b: &MeasureStats, rel: f64) {
        for ((o, x), (_, y)) in a.iter().zip(b.iter()) {
            let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= rel * x.abs().max(y.abs());
            assert!(ok, "{o}: {x} vs {y}");
        }
    }

    #[test]
    fn merged_batches_equal_the_whole_pass() {
        let (n, units) = (37, 300);
        let data = random(n * units, 1);
        for model in [
            MeasurementModel::IDEAL,
            MeasurementModel::new(Some(0.3), 0.2, 5).unwrap(),
        ] {
            let mut whole = ActivationAccumulator::new(units, model, 9).unwrap();
            whole.push(&data, n).unwrap();
            let expect = whole.finish().unwrap();

            // Pushed in uneven batches into one accumulator.
            let mut inc = ActivationAccumulator::new(units, model, 9).unwrap();
            for (from, to) in [(0, 1), (1, 10), (10, 11), (11, 37)] {
                inc.push(&data[from * units..to * units], to - from)
                    .unwrap();
            }
            assert_eq!(inc.examples(), n);
            assert_close(&inc.finish().unwrap(), &expect, 1e-14);

            // Separate accumulators merged in another order. Noise follows the example's place
            // in the pass, so the pieces use a selection-sharing constructor and offsets.
            if model.is_ideal() {
                let mut a = ActivationAccumulator::new(units, model, 9).unwrap();
                let mut b = a.clone();
                a.push(&data[..20 * units], 20).unwrap();
                b.push(&data[20 * units..], 17).unwrap();
                b.merge(&a).unwrap();
                assert_close(&b.finish().unwrap(), &expect, 1e-14);
            }
        }
    }

    #[test]
    fn activation_statistics_are_per_example_means() {
        // Two examples of four units: statistics per row, then averaged.
        let data = [1.0f32, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0];
        let mut acc = ActivationAccumulator::new(4, MeasurementModel::IDEAL, 0).unwrap();
        acc.push(&data, 2).unwrap();
        let s = acc.finish().unwrap();
        assert_eq!(s.get_by_name("actraw_mean"), Some((2.5 - 1.0) / 2.0));
        assert_eq!(s.get_by_name("actraw_median"), Some((2.0 - 1.0) / 2.0));
        assert_eq!(
            s.get_by_name("actraw_thirdquartile"),
            Some((3.0 - 1.0) / 2.0)
        );
        assert_eq!(
            s.get_by_name("actraw_norm"),
            Some((30f64.sqrt() + 2.0) / 2.0)
        );
        assert_eq!(s.get_by_name("actraw_var"), Some((1.25 + 0.0) / 2.0));
        // The constant second example has undefined skew: the average is undefined too.
        assert!(s.get_by_name("actraw_skew").unwrap().is_nan());
        assert_eq!(s.get_by_name("actsq_mean"), Some((7.5 + 1.0) / 2.0));
    }

    #[test]
    fn weights_under_subsampling_use_the_kept_entries() {
        let w = random(10_000, 3);
        let model = MeasurementModel::new(Some(0.01), 0.0, 11).unwrap();
        let s = weight_statistics(&w, &[100, 100], &model, 0).unwrap();
        let sel = model.selection(10_000, 0);
        let kept: Vec<f64> = sel
            .indices()
            .unwrap()
            .iter()
            .map(|&i| w[i] as f64)
            .collect();
        assert_eq!(kept.len(), 100);
        let direct = weight_statistics(&kept, &[1, 100], &MeasurementModel::IDEAL, 0).unwrap();
        assert_eq!(s, direct);
        let norm = kept.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((s.get_by_name("weightraw_norm").unwrap() - norm).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_problem_and_leave_state_unchanged() {
        let mut w = random(24, 2);
        w[5] = f32::NAN;
        w[7] = f32::INFINITY;
        let e = weight_statistics(&w, &[2, 3, 4], &MeasurementModel::IDEAL, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "weight tensor has 2 non-finite value(s) of 24 (1 NaN, 1 infinite); first at index [0, 1, 1]"
        );
        let e = weight_statistics(&w[..5], &[2, 3], &MeasurementModel::IDEAL, 0).unwrap_err();
        assert!(
            e.to_string().contains("shape [2, 3] holds 6 values but 5"),
            "{e}"
        );
        let e = weight_statistics::<f32>(&[], &[0], &MeasurementModel::IDEAL, 0).unwrap_err();
        assert!(matches!(e, Error::Empty { .. }));

        let mut acc = ActivationAccumulator::new(4, MeasurementModel::IDEAL, 0).unwrap();
        acc.push(&[1.0f32, 2.0, 3.0, 4.0], 1).unwrap();
        let before = acc.finish().unwrap();
        let e = acc
            .push(&[1.0f32, 2.0, 3.0, 4.0, 5.0, f32::NAN, 1.0, 1.0], 2)
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("first at example 2 of the pass (batch row 1), unit 1"),
            "{e}"
        );
        let e = acc.push(&[1.0f32, 2.0, 3.0], 1).unwrap_err();
        assert!(e.to_string().contains("need 4 values, got 3"), "{e}");
        assert_eq!(acc.finish().unwrap(), before);
        assert_eq!(acc.examples(), 1);

        let mut g = GradAvgAccumulator::new();
        let e = g.push(&[0.5f64, f64::NEG_INFINITY]).unwrap_err();
        assert!(e.to_string().contains("first at example 1"), "{e}");
        assert_eq!(g.examples(), 0);
    }

    #[test]
    fn partial_states_round_trip_and_absorb() {
        let data = random(8 * 50, 4);
        let mut whole = ActivationAccumulator::new(50, MeasurementModel::IDEAL, 0).unwrap();
        whole.push(&data, 8).unwrap();
        let mut a = ActivationAccumulator::new(50, MeasurementModel::IDEAL, 0).unwrap();
        a.push(&data[..150], 3).unwrap();
        let mut b = a.clone();
        b.push(&data[150..], 5).unwrap();
        // b's state minus nothing: absorb a fresh accumulator's partials in order.
        let mut replay = ActivationAccumulator::new(50, MeasurementModel::IDEAL, 0).unwrap();
        let json = serde_json::to_string(&b.partial()).unwrap();
        replay
            .absorb(&serde_json::from_str(&json).unwrap())
            .unwrap();
        assert_eq!(replay.finish().unwrap(), b.finish().unwrap());
        assert_eq!(replay.examples(), 8);
        let close = |x: &MeasureStats, y: &MeasureStats| assert_close(x, y, 1e-14);
        close(&replay.finish().unwrap(), &whole.finish().unwrap());
        let g = GradAvgAccumulator::new();
        assert!(
            replay.absorb(&g.partial()).is_err(),
            "measure mismatch refused"
        );
        let mut g2 = GradAvgAccumulator::new();
        g2.push(&[1.0f32, 2.0]).unwrap();
        let mut g3 = GradAvgAccumulator::new();
        g3.absorb(&g2.partial()).unwrap();
        assert_eq!(g3.finish().unwrap(), g2.finish().unwrap());
        // Partial states merge and finish on their own.
        let mut p = PartialStats::empty(Measure::Act);
        p.merge(&a.partial()).unwrap();
        let mut rest = ActivationAccumulator::new(50, MeasurementModel::IDEAL, 0).unwrap();
        rest.push(&data[150..], 5).unwrap();
        p.merge(&rest.partial()).unwrap();
        assert_close(&p.finish().unwrap(), &whole.finish().unwrap(), 1e-14);
        assert!(p.merge(&g2.partial()).is_err());
        assert!(PartialStats::empty(Measure::GradAvg).finish().is_err());
    }

    #[test]
    fn gradavg_means_of_raw_abs_and_square() {
        let mut g = GradAvgAccumulator::new();
        g.push(&[1.0f32, -3.0]).unwrap();
        let mut h = GradAvgAccumulator::new();
        h.push(&[2.0f64]).unwrap();
        g.merge(&h);
        let s = g.finish().unwrap();
        assert_eq!(s.values(), &[2.0, 0.0, 14.0 / 3.0]);
        assert_eq!(s.get_by_name("gradavgraw_id"), Some(0.0));
    }

    #[test]
    fn gradavg_from_the_input_gradient() {
        // Ideal: g = (sum over inputs of J) / O.
        let j = [1.0f32, 2.0, 3.0, -1.0, -1.0, 0.0];
        let mut g = GradAvgAccumulator::new();
        let all = MeasurementModel::IDEAL.selection(3, 0);
        g.push_input_gradient(&j, 2, &all, 4, None, 0).unwrap();
        assert_eq!(
            g.finish().unwrap().values(),
            &[1.0, 0.5, (2.25 + 0.25) / 2.0]
        );
        // Subsampled inputs: only the kept columns count.
        let model = MeasurementModel::new(Some(0.5), 0.0, 0).unwrap();
        let sel = model.selection(3, 0);
        let mut g = GradAvgAccumulator::new();
        g.push_input_gradient(&j, 2, &sel, 1, None, 0).unwrap();
        let idx = sel.indices().unwrap();
        let expect: f64 = (0..2)
            .map(|e| idx.iter().map(|&i| j[e * 3 + i] as f64).sum::<f64>())
            .sum::<f64>()
            / 2.0;
        assert_eq!(
            g.finish().unwrap().get_by_name("gradavgraw_id"),
            Some(expect)
        );
    }
}
