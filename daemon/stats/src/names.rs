//! Names of the observables: measure × function × statistic (spec §1.5).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What is measured of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// The layer's forward kernel, reduced over all of its axes.
    Weight,
    /// The layer's output on the evaluation set, reduced per example, then averaged.
    Act,
    /// The layer-wise activity change: one scalar per example, averaged.
    GradAvg,
}

impl Measure {
    /// All measures, in the order of the reference `ALL_OBS` list.
    pub const ALL: [Measure; 3] = [Measure::Weight, Measure::Act, Measure::GradAvg];

    /// The name prefix used in observable names (`weight`, `act`, `gradavg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Weight => "weight",
            Measure::Act => "act",
            Measure::GradAvg => "gradavg",
        }
    }

    /// The statistics this measure has: the seven statistics for weights and activations,
    /// only `id` for the layer-wise activity change.
    pub fn statistics(self) -> &'static [Statistic] {
        match self {
            Measure::Weight | Measure::Act => &Statistic::SEVEN,
            Measure::GradAvg => &[Statistic::Id],
        }
    }

    /// This measure's observables in reference order (alphabetical by function, then statistic).
    pub fn observables(self) -> impl Iterator<Item = Observable> {
        Function::ALL.into_iter().flat_map(move |function| {
            self.statistics()
                .iter()
                .map(move |&statistic| Observable::new(self, function, statistic))
        })
    }

    /// Number of observables of this measure (21 or 3).
    pub fn observable_count(self) -> usize {
        Function::ALL.len() * self.statistics().len()
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Measure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "weight" | "weights" => Ok(Measure::Weight),
            "act" | "activation" | "activations" => Ok(Measure::Act),
            "gradavg" => Ok(Measure::GradAvg),
            other => Err(format!(
                "unknown measure '{other}': expected weight, act or gradavg"
            )),
        }
    }
}

/// The elementwise function applied before a statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// |x|
    Abs,
    /// x
    Raw,
    /// x²
    Sq,
}

impl Function {
    /// Alphabetical, as in the reference names list.
    pub const ALL: [Function; 3] = [Function::Abs, Function::Raw, Function::Sq];

    pub fn as_str(self) -> &'static str {
        match self {
            Function::Abs => "abs",
            Function::Raw => "raw",
            Function::Sq => "sq",
        }
    }
}

/// A statistic of the (function-transformed) values of one reduction group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    /// Plain (not excess) kurtosis E[(x−μ)⁴]/σ⁴.
    Kurtosis,
    /// Arithmetic mean.
    Mean,
    /// TF "nearest" 50th percentile.
    Median,
    /// L2 norm (Frobenius norm of the whole kernel for weights; per example for activations).
    Norm,
    /// Pearson's second skewness coefficient 3(μ − median)/σ.
    Skew,
    /// TF "nearest" 75th percentile.
    ThirdQuartile,
    /// Population variance.
    Var,
    /// The identity: the per-example activity change itself (gradavg only).
    Id,
}

impl Statistic {
    /// The seven statistics of weights and activations, alphabetical.
    pub const SEVEN: [Statistic; 7] = [
        Statistic::Kurtosis,
        Statistic::Mean,
        Statistic::Median,
        Statistic::Norm,
        Statistic::Skew,
        Statistic::ThirdQuartile,
        Statistic::Var,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Kurtosis => "kurtosis",
            Statistic::Mean => "mean",
            Statistic::Median => "median",
            Statistic::Norm => "norm",
            Statistic::Skew => "skew",
            Statistic::ThirdQuartile => "thirdquartile",
            Statistic::Var => "var",
            Statistic::Id => "id",
        }
    }
}

/// One of the 45 observables, e.g. `weightabs_median`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Observable {
    pub measure: Measure,
    pub function: Function,
    pub statistic: Statistic,
}

impl Observable {
    pub const fn new(measure: Measure, function: Function, statistic: Statistic) -> Self {
        Self {
            measure,
            function,
            statistic,
        }
    }

    /// The reference name: measure + function + `_` + statistic.
    pub fn name(&self) -> String {
        format!(
            "{}{}_{}",
            self.measure.as_str(),
            self.function.as_str(),
            self.statistic.as_str()
        )
    }

    /// Whether the observable is one of the 24 finite over every model and task, used by every
    /// classifier (spec §1.5).
    pub fn is_admissible(&self) -> bool {
        use Function::*;
        use Statistic::*;
        match (self.measure, self.function, self.statistic) {
            (_, _, Skew | Kurtosis) => false,
            (Measure::Weight, Sq, Norm | Var) => false,
            (Measure::Weight, _, _) => true,
            (Measure::Act, _, Var) => false,
            (Measure::Act, Sq, _) => false,
            (Measure::Act, _, _) => true,
            (Measure::GradAvg, _, _) => true,
        }
    }

    /// Parses a reference name such as `actraw_norm`.
    pub fn from_name(name: &str) -> Option<Observable> {
        all_observables().find(|o| o.name() == name)
    }
}

impl fmt::Display for Observable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}_{}",
            self.measure.as_str(),
            self.function.as_str(),
            self.statistic.as_str()
        )
    }
}

/// All 45 observables in the reference `ALL_OBS` order: weight, act, gradavg; within each,
/// alphabetical by function, then statistic.
pub fn all_observables() -> impl Iterator<Item = Observable> {
    Measure::ALL.into_iter().flat_map(Measure::observables)
}

/// The 24 admissible observables in the exact order of the reference `ADMISSIBLE_OBS['all']`.
pub fn admissible_observables() -> impl Iterator<Item = Observable> {
    use Function::*;
    use Statistic::*;
    const W: Measure = Measure::Weight;
    const A: Measure = Measure::Act;
    const G: Measure = Measure::GradAvg;
    const LIST: [Observable; 24] = [
        Observable::new(W, Abs, Mean),
        Observable::new(W, Abs, Median),
        Observable::new(W, Abs, Norm),
        Observable::new(W, Abs, ThirdQuartile),
        Observable::new(W, Abs, Var),
        Observable::new(W, Raw, Mean),
        Observable::new(W, Raw, Median),
        Observable::new(W, Raw, Norm),
        Observable::new(W, Raw, ThirdQuartile),
        Observable::new(W, Raw, Var),
        Observable::new(W, Sq, Mean),
        Observable::new(W, Sq, Median),
        Observable::new(W, Sq, ThirdQuartile),
        Observable::new(A, Abs, Mean),
        Observable::new(A, Abs, Median),
        Observable::new(A, Abs, Norm),
        Observable::new(A, Abs, ThirdQuartile),
        Observable::new(A, Raw, Mean),
        Observable::new(A, Raw, Median),
        Observable::new(A, Raw, Norm),
        Observable::new(A, Raw, ThirdQuartile),
        Observable::new(G, Abs, Id),
        Observable::new(G, Raw, Id),
        Observable::new(G, Sq, Id),
    ];
    LIST.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_45_observables_and_24_admissible() {
        assert_eq!(all_observables().count(), 45);
        assert_eq!(admissible_observables().count(), 24);
        assert_eq!(all_observables().filter(|o| o.is_admissible()).count(), 24);
        for o in admissible_observables() {
            assert!(o.is_admissible(), "{o} is in the admissible list");
        }
    }

    #[test]
    fn names_follow_the_reference() {
        let names: Vec<String> = all_observables().map(|o| o.name()).collect();
        assert_eq!(names[0], "weightabs_kurtosis");
        assert_eq!(names[5], "weightabs_thirdquartile");
        assert_eq!(names[21], "actabs_kurtosis");
        assert_eq!(
            &names[42..],
            ["gradavgabs_id", "gradavgraw_id", "gradavgsq_id"]
        );
        assert!(names.contains(&"weightabs_median".to_string()));
        assert!(names.contains(&"actraw_norm".to_string()));
        assert!(names.contains(&"gradavgsq_id".to_string()));
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 45);
        for n in &names {
            assert_eq!(Observable::from_name(n).unwrap().name(), *n);
        }
        assert_eq!(Observable::from_name("weightraw_id"), None);
    }

    #[test]
    fn excluded_observables_match_the_spec() {
        let excluded: Vec<String> = all_observables()
            .filter(|o| !o.is_admissible())
            .map(|o| o.name())
            .collect();
        assert_eq!(excluded.len(), 21);
        for name in [
            "weightsq_norm",
            "weightsq_var",
            "actabs_var",
            "actraw_var",
            "actsq_var",
            "actsq_mean",
            "actsq_median",
            "actsq_norm",
            "actsq_thirdquartile",
            "gradavgraw_id",
        ] {
            let admissible = Observable::from_name(name).unwrap().is_admissible();
            assert_eq!(admissible, name == "gradavgraw_id", "{name}");
        }
    }
}
