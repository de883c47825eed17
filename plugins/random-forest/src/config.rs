//! The JSON configuration of a fit.

use lrid_plugin::{config_bool, config_known_keys, config_str, config_usize};
use serde_json::Value;

use crate::data::MAX_BINS;

/// Every configuration key.
pub const KEYS: &[&str] = &[
    "n_estimators",
    "max_features",
    "criterion",
    "bootstrap",
    "max_depth",
    "min_samples_split",
    "min_samples_leaf",
    "max_bins",
    "exact_below",
    "seed",
];

/// Node size at or below which a node's split is found by sorting its values (exactly, as
/// scikit-learn does) rather than from bin histograms. Such a node's subtree works on a copy of
/// its samples' ranks (see `tree::Grower::grow_subtree`), so its scans read L1/L2 and a sort of
/// n ≤ 1024 integer keys costs about what a histogram does: a pass over the node's samples
/// that misses cache on every one (the samples of a mid-size node are scattered over the
/// prepared matrix) plus a scan of 255 bins. Measured on 20,736 × 507, 4 classes, 20 trees (2
/// busy cores, CPU seconds): 64 → 2.1–3.0, 256 → 2.5, 1024 → 1.7–2.4, 4096 → 3.0, every node
/// exact → 3.6–3.9 (scikit-learn: 11.3). Larger values are also closer to scikit-learn (only
/// the top of a tree splits at bin boundaries), and data sets of at most 1024 rows are split
/// exactly throughout.
pub const DEFAULT_EXACT_BELOW: usize = 1024;

/// The impurity criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    Gini,
    /// Shannon entropy (scikit-learn's "entropy" and "log_loss").
    Entropy,
}

/// A fit's parameters, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub n_estimators: usize,
    /// Features drawn per split (1..=features).
    pub max_features: usize,
    pub criterion: Criterion,
    pub bootstrap: bool,
    /// `usize::MAX`: unlimited.
    pub max_depth: usize,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    pub max_bins: usize,
    pub exact_below: usize,
    pub seed: u64,
    /// Small subtrees work on a copy of their samples' ranks (not a configuration key: the
    /// tests compare fits with and without).
    pub local_copy: bool,
}

impl Params {
    /// The parameters of `config` for a matrix of `n_features` columns.
    pub fn from_config(config: &Value, n_features: usize) -> Result<Self, String> {
        config_known_keys(config, KEYS)?;
        let n_estimators = config_usize(config, "n_estimators", 100)?;
        if n_estimators == 0 {
            return Err("'n_estimators' must be at least 1; got 0".into());
        }
        let p = n_features;
        let max_features = match config.get("max_features") {
            None | Some(Value::Null) => p.isqrt(),
            Some(Value::String(s)) => match s.as_str() {
                "sqrt" => p.isqrt(),
                "log2" => p.max(1).ilog2() as usize,
                "all" => p,
                other => {
                    return Err(format!(
                        "'max_features' must be \"sqrt\", \"log2\", \"all\" or a fraction in \
                         (0, 1]; got \"{other}\""
                    ));
                }
            },
            Some(Value::Number(x)) => match x.as_f64() {
                Some(f) if f > 0.0 && f <= 1.0 => (f * p as f64) as usize,
                _ => {
                    return Err(format!(
                        "'max_features' as a number is a fraction of the features in (0, 1]; \
                         got {x}"
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "'max_features' must be \"sqrt\", \"log2\", \"all\" or a fraction in (0, 1]; \
                     got {other}"
                ));
            }
        }
        .clamp(1, p.max(1));
        let criterion = match config_str(config, "criterion", "gini")? {
            "gini" => Criterion::Gini,
            "entropy" | "log_loss" => Criterion::Entropy,
            other => {
                return Err(format!(
                    "'criterion' must be \"gini\" or \"entropy\"; got \"{other}\""
                ));
            }
        };
        let bootstrap = config_bool(config, "bootstrap", true)?;
        let max_depth = match config.get("max_depth") {
            None | Some(Value::Null) => usize::MAX,
            Some(_) => match config_usize(config, "max_depth", 0)? {
                0 => {
                    return Err(
                        "'max_depth' must be at least 1, or null for unlimited; got 0".into(),
                    );
                }
                d => d,
            },
        };
        let min_samples_split = config_usize(config, "min_samples_split", 2)?;
        if min_samples_split < 2 {
            return Err(format!(
                "'min_samples_split' must be at least 2; got {min_samples_split}"
            ));
        }
        let min_samples_leaf = config_usize(config, "min_samples_leaf", 1)?;
        if min_samples_leaf < 1 {
            return Err("'min_samples_leaf' must be at least 1; got 0".into());
        }
        let max_bins = config_usize(config, "max_bins", MAX_BINS)?;
        if !(2..=MAX_BINS).contains(&max_bins) {
            return Err(format!(
                "'max_bins' must be in 2..={MAX_BINS}; got {max_bins}"
            ));
        }
        let exact_below = config_usize(config, "exact_below", DEFAULT_EXACT_BELOW)?;
        let seed = match config.get("seed") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("configuration key 'seed' must be a non-negative integer; got {v}")
            })?,
        };
        Ok(Self {
            n_estimators,
            max_features,
            criterion,
            bootstrap,
            max_depth,
            // scikit-learn: a node smaller than 2 × min_samples_leaf is not split either.
            min_samples_split: min_samples_split.max(2 * min_samples_leaf),
            min_samples_leaf,
            max_bins,
            exact_below,
            seed,
            local_copy: true,
        })
    }
}
