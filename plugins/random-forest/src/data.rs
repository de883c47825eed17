//! The prepared training matrix: every feature binned once (quantile bins, `u8` codes,
//! column-major) and ranked (dense ranks of its distinct values, row-major).

use std::borrow::Cow;

use lrid_plugin::Matrix;
use rayon::prelude::*;

/// The most bins a feature gets in [`Prepared`] (codes are `u8`); a fit with a smaller
/// `max_bins` merges adjacent bins.
pub const MAX_BINS: usize = 255;

/// A training matrix prepared for fitting forests: what `prepare` makes once per training set
/// and every fit (each configuration of a grid, each cross-validation fold) shares.
///
/// Codes are column-major so that building a node's histogram for one feature reads one
/// contiguous column (`rows` bytes: 20 KiB for 20,736 rows). Raw values are kept as dense ranks
/// (the index of a row's value among the feature's sorted distinct values), row-major so that a
/// small subtree copies its rows as streams (see `tree::Grower::grow_subtree`); scans sort
/// integer keys, and a threshold is the midpoint of two distinct values.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// Dense ranks, row-major: row `i`'s are `ranks[i * cols..(i + 1) * cols]`; equal values
    /// have equal ranks, larger values larger ranks.
    pub(crate) ranks: Ranks,
    /// The sorted distinct values of every feature: feature `f`'s are
    /// `values[value_start[f]..value_start[f + 1]]`, indexed by rank.
    pub(crate) values: Vec<f64>,
    pub(crate) value_start: Vec<usize>,
    /// Bin codes, column-major like `ranks`. Codes are ordered like the values: a value in a
    /// higher bin is larger than every value in a lower bin.
    pub(crate) codes: Vec<u8>,
    /// Bins of each feature (1..=[`MAX_BINS`]).
    pub(crate) n_bins: Vec<u16>,
    /// Training rows in each bin: feature `f`'s counts are
    /// `bin_counts[f * MAX_BINS..][..n_bins[f]]`.
    pub(crate) bin_counts: Vec<u32>,
    /// Whether a bin of the feature may hold more than one distinct value (the feature has more
    /// distinct values than bins); otherwise one bin is one value and binned split finding is
    /// exact.
    pub(crate) multi: Vec<bool>,
}

/// Dense ranks in the narrowest type that holds them: `u16` wherever every feature has at most
/// 65,536 distinct values (a row of 507 features is then 1 KiB).
#[derive(Debug, Clone)]
pub(crate) enum Ranks {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// A rank type of [`Ranks`].
pub(crate) trait Rank: Copy + Send + Sync + 'static {
    /// Bits of a rank.
    const WIDTH: u32;
    fn get(self) -> u32;
}

impl Rank for u16 {
    const WIDTH: u32 = 16;
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}

impl Rank for u32 {
    const WIDTH: u32 = 32;
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
}

/// Codes and bins of one fit: those of [`Prepared`], or coarser ones for a smaller `max_bins`.
#[derive(Debug)]
pub(crate) struct Bins<'a> {
    pub codes: Cow<'a, [u8]>,
    pub n_bins: Cow<'a, [u16]>,
    pub multi: Cow<'a, [bool]>,
}

/// One binned feature.
struct Feature {
    ranks: Vec<u32>,
    codes: Vec<u8>,
    values: Vec<f64>,
    bin_counts: Vec<u32>,
    multi: bool,
}

impl Prepared {
    /// Ranks and bins every feature of `x` (in parallel over features).
    pub fn new(x: Matrix<'_>) -> Result<Self, String> {
        let (n, p) = (x.rows(), x.cols());
        if n == 0 {
            return Err("cannot prepare a training matrix without rows".into());
        }
        if p == 0 {
            return Err("cannot prepare a training matrix without feature columns".into());
        }
        if n >= u32::MAX as usize || p >= u32::MAX as usize {
            return Err(format!("a {n} × {p} training matrix is too large"));
        }
        if let Some(i) = x.values().iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "the training matrix holds a non-finite value at row {}, column {}",
                i / p,
                i % p
            ));
        }
        // Columns in blocks of 8: each row then contributes one cache line per block.
        const BLOCK: usize = 8;
        let features: Vec<Feature> = (0..p.div_ceil(BLOCK))
            .into_par_iter()
            .flat_map_iter(|b| {
                let f0 = b * BLOCK;
                let width = BLOCK.min(p - f0);
                let mut cols = vec![Vec::with_capacity(n); width];
                for i in 0..n {
                    for (col, &v) in cols.iter_mut().zip(&x.row(i)[f0..f0 + width]) {
                        col.push(v);
                    }
                }
                cols.into_iter().map(|col| bin_feature(&col))
            })
            .collect();
        let narrow = features.iter().all(|f| f.values.len() <= 1 << 16);
        let ranks = if narrow {
            Ranks::U16(row_major(&features, n, |r| r as u16))
        } else {
            Ranks::U32(row_major(&features, n, |r| r))
        };
        let mut codes = Vec::with_capacity(n * p);
        let mut values = Vec::new();
        let mut value_start = vec![0];
        let mut n_bins = Vec::with_capacity(p);
        let mut bin_counts = vec![0u32; p * MAX_BINS];
        let mut multi = Vec::with_capacity(p);
        for (f, feature) in features.into_iter().enumerate() {
            codes.extend_from_slice(&feature.codes);
            values.extend_from_slice(&feature.values);
            value_start.push(values.len());
            n_bins.push(feature.bin_counts.len() as u16);
            bin_counts[f * MAX_BINS..f * MAX_BINS + feature.bin_counts.len()]
                .copy_from_slice(&feature.bin_counts);
            multi.push(feature.multi);
        }
        Ok(Self {
            rows: n,
            cols: p,
            ranks,
            values,
            value_start,
            codes,
            n_bins,
            bin_counts,
            multi,
        })
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The number of feature columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The rank of row `i`'s value of feature `f`.
    #[cfg(test)]
    pub(crate) fn rank(&self, f: usize, i: usize) -> u32 {
        match &self.ranks {
            Ranks::U16(r) => u32::from(r[i * self.cols + f]),
            Ranks::U32(r) => r[i * self.cols + f],
        }
    }

    /// The bins for a fit with at most `max_bins` bins per feature (2..=[`MAX_BINS`]): the
    /// prepared ones, or adjacent bins merged by quantiles of their training counts.
    pub(crate) fn bins(&self, max_bins: usize) -> Bins<'_> {
        if self.n_bins.iter().all(|&nb| nb as usize <= max_bins) {
            return Bins {
                codes: self.codes.as_slice().into(),
                n_bins: self.n_bins.as_slice().into(),
                multi: self.multi.as_slice().into(),
            };
        }
        let n = self.rows;
        let mut codes = vec![0u8; self.codes.len()];
        let meta: Vec<(u16, bool)> = codes
            .par_chunks_mut(n)
            .zip(self.codes.par_chunks(n))
            .enumerate()
            .map(|(f, (out, fine))| {
                let nb = self.n_bins[f] as usize;
                if nb <= max_bins {
                    out.copy_from_slice(fine);
                    return (nb as u16, self.multi[f]);
                }
                let counts = &self.bin_counts[f * MAX_BINS..f * MAX_BINS + nb];
                let ends = group(counts, max_bins);
                let mut map = [0u8; 256];
                let mut start = 0;
                for (g, &end) in ends.iter().enumerate() {
                    map[start..end].fill(g as u8);
                    start = end;
                }
                for (o, &c) in out.iter_mut().zip(fine) {
                    *o = map[c as usize];
                }
                (ends.len() as u16, true)
            })
            .collect();
        Bins {
            codes: codes.into(),
            n_bins: meta.iter().map(|m| m.0).collect::<Vec<_>>().into(),
            multi: meta.iter().map(|m| m.1).collect::<Vec<_>>().into(),
        }
    }
}

/// The features' ranks, row-major (in parallel over blocks of rows).
fn row_major<T: Copy + Default + Send>(
    features: &[Feature],
    n: usize,
    convert: impl Fn(u32) -> T + Sync,
) -> Vec<T> {
    const ROWS: usize = 64;
    let p = features.len();
    let mut out = vec![T::default(); n * p];
    out.par_chunks_mut(ROWS * p)
        .enumerate()
        .for_each(|(b, chunk)| {
            let r0 = b * ROWS;
            for (f, feature) in features.iter().enumerate() {
                let col = &feature.ranks[r0..r0 + chunk.len() / p];
                for (i, &r) in col.iter().enumerate() {
                    chunk[i * p + f] = convert(r);
                }
            }
        });
    out
}

/// An unsigned key that orders like the float (`-0.0` just below `0.0`).
#[inline]
fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Ranks and bins one column.
fn bin_feature(col: &[f64]) -> Feature {
    let n = col.len();
    let mut sorted: Vec<(u64, u32)> = col
        .iter()
        .enumerate()
        .map(|(i, &v)| (order_key(v), i as u32))
        .collect();
    sorted.sort_unstable_by_key(|e| e.0);
    // Distinct values (-0.0 and 0.0 are one value), how often each occurs, and each row's rank.
    let mut values: Vec<f64> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    let mut ranks = vec![0u32; n];
    for &(_, i) in &sorted {
        let v = col[i as usize];
        match values.last() {
            Some(&last) if last == v => *counts.last_mut().expect("a count per value") += 1,
            _ => {
                values.push(v);
                counts.push(1);
            }
        }
        ranks[i as usize] = (values.len() - 1) as u32;
    }
    let ends = group(&counts, MAX_BINS);
    let mut bin_of_rank = vec![0u8; values.len()];
    let mut bin_counts = Vec::with_capacity(ends.len());
    let mut start = 0;
    for (b, &end) in ends.iter().enumerate() {
        bin_of_rank[start..end].fill(b as u8);
        bin_counts.push(counts[start..end].iter().sum());
        start = end;
    }
    let codes = ranks.iter().map(|&r| bin_of_rank[r as usize]).collect();
    Feature {
        ranks,
        codes,
        multi: values.len() > MAX_BINS,
        values,
        bin_counts,
    }
}

/// Groups consecutive units (distinct values, or fine bins) with `counts` rows into at most
/// `max_bins` bins of about equal rows (quantiles): the exclusive end unit of each bin. Each
/// unit is its own bin when there are at most `max_bins` of them.
pub(crate) fn group(counts: &[u32], max_bins: usize) -> Vec<usize> {
    if counts.len() <= max_bins {
        return (1..=counts.len()).collect();
    }
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut ends = Vec::with_capacity(max_bins);
    let mut cum = 0u64;
    for (j, &c) in counts.iter().enumerate() {
        cum += u64::from(c);
        if j + 1 == counts.len() {
            ends.push(j + 1);
        } else if cum * max_bins as u64 >= (ends.len() as u64 + 1) * total {
            // Closes bin k only once `cum` has reached the quantile (k + 1) / max_bins, and
            // before the last unit `cum` < total: at most max_bins - 1 closures, so at most
            // max_bins bins.
            ends.push(j + 1);
        }
    }
    ends
}
