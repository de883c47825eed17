//! The measurement model of spec §1.7: which units an experimenter records (a fixed, seeded
//! subset of ⌈f·U⌉ units, the same at every trajectory point) and how noisy the recording is
//! (additive white Gaussian noise of standard deviation σ, drawn afresh at every evaluation).
//!
//! Noise is applied first, then subsampling; since the noise is i.i.d., drawing it only for the
//! kept units gives the same distribution, and that is what is done.

use std::fmt;

use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a layer is observed: all units or a fraction of them, with or without noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeasurementModel {
    /// Fraction f ∈ (0, 1] of units kept; `None` keeps every unit.
    pub unit_fraction: Option<f64>,
    /// Standard deviation σ ≥ 0 of the additive Gaussian noise; 0 means none.
    pub noise_std: f64,
    /// Seed of the unit subset (and of the noise streams).
    pub seed: u64,
}

impl Default for MeasurementModel {
    fn default() -> Self {
        Self::IDEAL
    }
}

impl MeasurementModel {
    /// Every unit, no noise: the model of the paper's main experiments.
    pub const IDEAL: MeasurementModel = MeasurementModel {
        unit_fraction: None,
        noise_std: 0.0,
        seed: 0,
    };

    /// A checked model.
    pub fn new(unit_fraction: Option<f64>, noise_std: f64, seed: u64) -> Result<Self> {
        let model = Self {
            unit_fraction,
            noise_std,
            seed,
        };
        model.validate()?;
        Ok(model)
    }

    /// Checks that the fraction lies in (0, 1] and σ is finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        if let Some(f) = self.unit_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(Error::InvalidModel(format!(
                "unit fraction must lie in (0, 1], got {f}"
            )));
        }
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(Error::InvalidModel(format!(
                "noise standard deviation must be finite and ≥ 0, got {}",
                self.noise_std
            )));
        }
        Ok(())
    }

    /// True when every unit is kept and there is no noise.
    pub fn is_ideal(&self) -> bool {
        self.unit_fraction.is_none() && self.noise_std == 0.0
    }

    /// Number of units kept out of `units`: ⌈f·U⌉, at least one (all when f is `None`).
    pub fn kept_units(&self, units: usize) -> usize {
        match self.unit_fraction {
            None => units,
            Some(f) => ((f * units as f64).ceil() as usize).clamp(1, units.max(1)),
        }
    }

    /// The units kept out of `units`, with this model's seed. `salt` picks an independent
    /// subset with the same seed (the gradavg output units use salt 1, spec §1.7).
    pub fn selection(&self, units: usize, salt: u64) -> UnitSelection {
        UnitSelection::new(units, self.kept_units(units), self.seed.wrapping_add(salt))
    }

    /// A noise source for one evaluation (`draw` numbers evaluations: trajectory point, layer…),
    /// so every evaluation gets fresh noise and a replay gets the same noise.
    pub fn noise(&self, draw: u64) -> Option<NoiseSource> {
        (self.noise_std > 0.0).then(|| NoiseSource {
            std: self.noise_std,
            seed: mix(self.seed ^ 0x6e6f_6973_6500_0000, draw),
        })
    }

    /// A short label: `ideal`, `f=0.01`, `f=0.01,σ=0.1,seed=3`.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = self.unit_fraction {
            parts.push(format!("f={f}"));
        }
        if self.noise_std > 0.0 {
            parts.push(format!("σ={}", self.noise_std));
        }
        if parts.is_empty() {
            return "ideal".into();
        }
        if self.seed != 0 {
            parts.push(format!("seed={}", self.seed));
        }
        parts.join(",")
    }
}

impl fmt::Display for MeasurementModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A fixed, seeded subset of units, sorted ascending (statistics do not depend on order and
/// sorted indices gather cache-friendly). The same `(units, kept, seed)` always gives the same
/// subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSelection {
    units: usize,
    /// `None` when every unit is kept.
    indices: Option<Vec<usize>>,
}

impl UnitSelection {
    pub fn new(units: usize, kept: usize, seed: u64) -> Self {
        if kept >= units {
            return Self {
                units,
                indices: None,
            };
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut indices = index::sample(&mut rng, units, kept).into_vec();
        indices.sort_unstable();
        Self {
            units,
            indices: Some(indices),
        }
    }

    /// Number of units the selection is drawn from.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Number of units kept.
    pub fn len(&self) -> usize {
        self.indices.as_ref().map_or(self.units, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept indices, or `None` when all are kept.
    pub fn indices(&self) -> Option<&[usize]> {
        self.indices.as_deref()
    }

    /// Copies the kept values of `row` (one example, or a whole kernel) into `out` as f64,
    /// adding noise when given.
    pub fn gather<T: crate::Element>(
        &self,
        row: &[T],
        noise: Option<&mut NoiseStream>,
        out: &mut Vec<f64>,
    ) {
        debug_assert_eq!(row.len(), self.units);
        out.clear();
        match &self.indices {
            None => out.extend(row.iter().map(|x| x.to_f64())),
            Some(idx) => out.extend(idx.iter().map(|&i| row[i].to_f64())),
        }
        if let Some(noise) = noise {
            noise.add_to(out);
        }
    }
}

/// Fresh noise for one evaluation; split into independent streams per example.
#[derive(Clone, Copy, Debug)]
pub struct NoiseSource {
    std: f64,
    seed: u64,
}

impl NoiseSource {
    /// The stream of example (or tensor) `index` within this evaluation.
    pub fn stream(&self, index: u64) -> NoiseStream {
        NoiseStream {
            rng: ChaCha8Rng::seed_from_u64(mix(self.seed, index)),
            normal: Normal::new(0.0, self.std).expect("validated σ"),
        }
    }
}

/// An independent sequence of N(0, σ²) draws.
#[derive(Debug)]
pub struct NoiseStream {
    rng: ChaCha8Rng,
    normal: Normal<f64>,
}

impl NoiseStream {
    pub fn add_to(&mut self, values: &mut [f64]) {
        for v in values {
            *v += self.normal.sample(&mut self.rng);
        }
    }
}

/// SplitMix64 finaliser of a pair: well-spread seeds for related streams.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_to_unit_count() {
        let m = |f| MeasurementModel::new(Some(f), 0.0, 0).unwrap();
        assert_eq!(m(1.0).kept_units(1000), 1000);
        assert_eq!(m(0.5).kept_units(1000), 500);
        assert_eq!(m(0.5).kept_units(999), 500); // ⌈499.5⌉
        assert_eq!(m(0.001).kept_units(10), 1); // at least one unit
        assert_eq!(m(3e-5).kept_units(1_000_000), 30);
        assert_eq!(m(2.1e-4).kept_units(2_359_296), 496); // ⌈495.4⌉
        assert_eq!(MeasurementModel::IDEAL.kept_units(77), 77);
    }

    #[test]
    fn bad_models_are_refused() {
        for f in [0.0, -0.1, 1.5, f64::NAN] {
            let e = MeasurementModel::new(Some(f), 0.0, 0).unwrap_err();
            assert!(e.to_string().contains("unit fraction"), "{e}");
        }
        for s in [-1.0, f64::INFINITY, f64::NAN] {
            let e = MeasurementModel::new(None, s, 0).unwrap_err();
            assert!(e.to_string().contains("noise"), "{e}");
        }
    }

    #[test]
    fn the_same_units_are_kept_for_the_same_seed() {
        let m = MeasurementModel::new(Some(0.1), 0.0, 42).unwrap();
        let a = m.selection(10_000, 0);
        let b = m.selection(10_000, 0);
        assert_eq!(a, b);
        assert_eq!(a.len(), 1000);
        let idx = a.indices().unwrap();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "distinct, sorted");
        assert!(*idx.last().unwrap() < 10_000);
        // Another seed or salt keeps other units.
        assert_ne!(a, MeasurementModel { seed: 43, ..m }.selection(10_000, 0));
        assert_ne!(a, m.selection(10_000, 1));
        // Spread over the whole range, not a prefix.
        assert!(idx.iter().filter(|&&i| i >= 5000).count() > 400);
    }

    #[test]
    fn noise_has_the_requested_statistics_and_is_fresh_per_draw() {
        let m = MeasurementModel::new(None, 0.5, 1).unwrap();
        let sel = m.selection(200_000, 0);
        let row = vec![3.0f32; 200_000];
        let mut out = Vec::new();
        sel.gather(&row, Some(&mut m.noise(0).unwrap().stream(0)), &mut out);
        let n = out.len() as f64;
        let mean = out.iter().sum::<f64>() / n;
        let var = out.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let m3 = out.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n;
        let m4 = out.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
        // Standard errors: mean σ/√n ≈ 0.0011, var σ²·√(2/n) ≈ 0.0008.
        assert!((mean - 3.0).abs() < 0.006, "mean {mean}");
        assert!((var - 0.25).abs() < 0.004, "var {var}");
        assert!((m3 / var.powf(1.5)).abs() < 0.03, "skewness");
        assert!((m4 / (var * var) - 3.0).abs() < 0.06, "kurtosis");
        let mut again = Vec::new();
        sel.gather(&row, Some(&mut m.noise(0).unwrap().stream(0)), &mut again);
        assert_eq!(out, again, "same draw, same noise");
        sel.gather(&row, Some(&mut m.noise(1).unwrap().stream(0)), &mut again);
        assert_ne!(out, again, "a new evaluation draws new noise");
        sel.gather(&row, Some(&mut m.noise(0).unwrap().stream(1)), &mut again);
        assert_ne!(out, again, "examples get independent noise");
        assert!(MeasurementModel::IDEAL.noise(0).is_none());
    }
}
