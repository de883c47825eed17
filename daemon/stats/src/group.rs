//! The kernel: the seven statistics of the three functions (raw, abs, sq) over one reduction
//! group (a whole kernel, or one example's units), in two passes over the data.
//!
//! Pass 1 accumulates the sums (for the means and norms), min/max, counts non-finite values and
//! builds a histogram of the top bits of an order-preserving key. The histogram locates the
//! buckets that hold the median and third quartile of x and of |x| (the |x| histogram is the raw
//! one folded at the sign). Pass 2 accumulates the central moments around the exact means and
//! copies only the elements of those few buckets aside; a selection inside each small bucket
//! gives the exact order statistic. The quantiles of x² are the squares of those of |x| under
//! the "nearest" rule (squaring is monotone on magnitudes and the rule picks an element).

use rayon::prelude::*;

use crate::element::Element;

/// The seven statistics of one function of the values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FunctionStats {
    pub kurtosis: f64,
    pub mean: f64,
    pub median: f64,
    pub norm: f64,
    pub skew: f64,
    pub third_quartile: f64,
    pub var: f64,
}

impl FunctionStats {
    /// The values in alphabetical statistic order (`Statistic::SEVEN`).
    pub fn to_array(&self) -> [f64; 7] {
        [
            self.kurtosis,
            self.mean,
            self.median,
            self.norm,
            self.skew,
            self.third_quartile,
            self.var,
        ]
    }
}

/// The statistics of one reduction group, per function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupStats {
    pub abs: FunctionStats,
    pub raw: FunctionStats,
    pub sq: FunctionStats,
}

impl GroupStats {
    /// The 21 values in reference order: function (abs, raw, sq), then statistic.
    pub fn to_array(&self) -> [f64; 21] {
        let mut out = [0.0; 21];
        for (i, f) in [&self.abs, &self.raw, &self.sq].into_iter().enumerate() {
            out[i * 7..i * 7 + 7].copy_from_slice(&f.to_array());
        }
        out
    }
}

/// Ascending index of TF's "nearest" percentile `q` (integer percent) among `m` sorted values:
/// k = round_half_to_even((m − 1)·(1 − q/100)) counted from the largest, i.e. index m − 1 − k.
pub fn nearest_rank(m: usize, q: u32) -> usize {
    assert!(m > 0 && q <= 100);
    let num = (m as u128 - 1) * u128::from(100 - q);
    let (k, rem) = (num / 100, num % 100);
    let k = if rem > 50 || (rem == 50 && k % 2 == 1) {
        k + 1
    } else {
        k
    };
    m - 1 - (k as usize).min(m - 1)
}

/// Buffers reused across groups by one thread.
#[derive(Debug, Default)]
pub struct Scratch {
    hist: Vec<u32>,
    bufs: [Vec<u64>; 4],
}

/// A group failed because it holds non-finite values (how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteValues(pub usize);

/// Groups at least this large are split across threads when parallelism is allowed.
const PARALLEL_MIN: usize = 1 << 18;

fn histogram_bits(n: usize) -> u32 {
    (usize::BITS - n.leading_zeros())
        .saturating_sub(3)
        .clamp(8, 16)
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Sums {
    pub(crate) n: usize,
    pub(crate) sum: f64,
    pub(crate) sum_abs: f64,
    pub(crate) sum_sq: f64,
    pub(crate) sum_4: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) min_abs: f64,
    pub(crate) nonfinite: usize,
    /// Values equal to zero (either sign), and values below zero.
    pub(crate) zeros: usize,
    pub(crate) negatives: usize,
}

impl Sums {
    pub(crate) fn merge(self, o: Sums) -> Sums {
        Sums {
            n: self.n + o.n,
            sum: self.sum + o.sum,
            sum_abs: self.sum_abs + o.sum_abs,
            sum_sq: self.sum_sq + o.sum_sq,
            sum_4: self.sum_4 + o.sum_4,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            min_abs: self.min_abs.min(o.min_abs),
            nonfinite: self.nonfinite + o.nonfinite,
            zeros: self.zeros + o.zeros,
            negatives: self.negatives + o.negatives,
        }
    }
}

/// Accumulator lanes: independent partial sums, so additions pipeline and vectorise.
const LANES: usize = 8;
/// Elements handled together: their values stay in L1 between the arithmetic and the key loop.
const BLOCK: usize = 256;

#[inline(always)]
fn fold(a: [f64; LANES]) -> f64 {
    let mut s = 0.0;
    for pair in a.chunks_exact(2) {
        s += pair[0] + pair[1];
    }
    s
}

/// Pass 1 over a chunk: sums, extremes, non-finite count and key histogram (added to `hist`).
#[inline(always)]
fn pass1_body<T: Element>(data: &[T], bits: u32, hist: &mut [u32]) -> Sums {
    let mut sum = [0.0f64; LANES];
    let mut sum_abs = [0.0f64; LANES];
    let mut sum_sq = [0.0f64; LANES];
    let mut sum_4 = [0.0f64; LANES];
    let mut min = [f64::INFINITY; LANES];
    let mut max = [f64::NEG_INFINITY; LANES];
    let mut min_abs = [f64::INFINITY; LANES];
    let mut finite = [0u64; LANES];
    let mut zeros = [0u64; LANES];
    let mut negatives = [0u64; LANES];
    for block in data.chunks(BLOCK) {
        let lanes = block.chunks_exact(LANES);
        let tail = lanes.remainder();
        for c in lanes {
            for l in 0..LANES {
                let v = c[l].to_f64();
                let a = v.abs();
                let s = v * v;
                sum[l] += v;
                sum_abs[l] += a;
                sum_sq[l] += s;
                sum_4[l] += s * s;
                min[l] = min[l].min(v);
                max[l] = max[l].max(v);
                min_abs[l] = min_abs[l].min(a);
                finite[l] += u64::from(c[l].is_finite());
                zeros[l] += u64::from(v == 0.0);
                negatives[l] += u64::from(v < 0.0);
            }
        }
        for (l, &x) in tail.iter().enumerate() {
            let v = x.to_f64();
            let a = v.abs();
            sum[l] += v;
            sum_abs[l] += a;
            sum_sq[l] += v * v;
            sum_4[l] += v * v * v * v;
            min[l] = min[l].min(v);
            max[l] = max[l].max(v);
            min_abs[l] = min_abs[l].min(a);
            finite[l] += u64::from(x.is_finite());
            zeros[l] += u64::from(v == 0.0);
            negatives[l] += u64::from(v < 0.0);
        }
        for &x in block {
            hist[x.raw_bucket(bits) as usize] += 1;
        }
    }
    let fmin = |a: [f64; LANES]| a.iter().copied().fold(f64::INFINITY, f64::min);
    let fmax = |a: [f64; LANES]| a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Sums {
        n: data.len(),
        sum: fold(sum),
        sum_abs: fold(sum_abs),
        sum_sq: fold(sum_sq),
        sum_4: fold(sum_4),
        min: fmin(min),
        max: fmax(max),
        min_abs: fmin(min_abs),
        nonfinite: data.len() - finite.iter().sum::<u64>() as usize,
        zeros: zeros.iter().sum::<u64>() as usize,
        negatives: negatives.iter().sum::<u64>() as usize,
    }
}

/// Compiles a kernel body for AVX-512, AVX2 and the baseline, and picks the best the CPU has
/// at run time (the same binary runs on any x86-64).
macro_rules! dispatch {
    ($name:ident => $body:ident ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        fn $name<T: Element>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,bmi1,bmi2,lzcnt,popcnt")]
                fn avx512<T: Element>($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
                fn avx2<T: Element>($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU supports these AVX-512 subsets (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

dispatch!(pass1_portable => pass1_body(data: &[T], bits: u32, hist: &mut [u32]) -> Sums);

/// Copies of the histogram pass 1 may spread its counts over (the f32 kernel uses them to
/// break runs of equal buckets, as the zeros of ReLU activations, which would otherwise
/// serialise on one counter); `hist` holds `hist_copies(bits) << bits` counters. Large
/// histograms keep one copy, so that they stay in the L2 cache.
pub(crate) fn hist_copies(bits: u32) -> usize {
    if bits <= HIST_COPIES_MAX_BITS { 4 } else { 1 }
}

const HIST_COPIES_MAX_BITS: u32 = 14;

/// Pass 1 of the portable body, counting into the first copy of the histogram.
pub(crate) fn pass1_tail<T: Element>(data: &[T], bits: u32, hist: &mut [u32]) -> Sums {
    pass1_portable(data, bits, hist)
}

/// Pass 1 over a chunk: sums, extremes, non-finite count, and the key histogram added to
/// `hist` (`hist_copies(bits) << bits` counters; the copies are summed by [`fold_copies`]).
fn pass1<T: Element>(data: &[T], bits: u32, hist: &mut [u32]) -> Sums {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = T::as_f32(data)
        && crate::x86::available()
    {
        return crate::x86::pass1(f, bits, hist);
    }
    pass1_portable(data, bits, hist)
}

/// Sums the histogram copies into the first.
fn fold_copies(hist: &mut [u32], bits: u32) {
    let size = 1usize << bits;
    let (first, rest) = hist.split_at_mut(size);
    for copy in rest.chunks_exact(size) {
        first.iter_mut().zip(copy).for_each(|(a, b)| *a += b);
    }
}

/// Where an order statistic lies: in the buffer of target `target`, at `offset`.
#[derive(Clone, Copy, Debug)]
struct Locator {
    target: usize,
    offset: usize,
}

/// Where an order statistic comes from: a zero (the rank falls among the values equal to 0,
/// counted in pass 1 — the zeros of ReLU activations would otherwise fill a target bucket),
/// or a target buffer.
#[derive(Clone, Copy, Debug)]
enum Quantile {
    Zero,
    At(Locator),
}

/// What pass 2 needs: the means to centre on and the buckets to copy aside.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) bits: u32,
    pub(crate) means: [f64; 3],
    /// (is_abs, bucket) for each target buffer; at most four.
    targets: Vec<(bool, u64)>,
    raw_median: Quantile,
    raw_q3: Quantile,
    abs_median: Quantile,
    abs_q3: Quantile,
}

/// Finds the bucket holding ascending index `idx` and the offset inside it.
fn locate(counts: impl Iterator<Item = u32>, idx: usize) -> (u64, usize) {
    let mut seen = 0usize;
    for (bucket, c) in counts.enumerate() {
        let c = c as usize;
        if idx < seen + c {
            return (bucket as u64, idx - seen);
        }
        seen += c;
    }
    unreachable!("rank {idx} beyond the histogram total {seen}")
}

impl Plan {
    /// The target buckets of x and of |x|, two each at most; `u32::MAX` (never a bucket)
    /// where there is none.
    pub(crate) fn target_buckets(&self) -> ([u32; 2], [u32; 2]) {
        let (mut raw, mut abs) = ([u32::MAX; 2], [u32::MAX; 2]);
        let (mut nr, mut na) = (0, 0);
        for &(is_abs, bucket) in &self.targets {
            if is_abs {
                abs[na] = bucket as u32;
                na += 1;
            } else {
                raw[nr] = bucket as u32;
                nr += 1;
            }
        }
        (raw, abs)
    }
}

fn plan(sums: &Sums, bits: u32, hist: &[u32]) -> Plan {
    let n = sums.n;
    let nf = n as f64;
    let max_abs = sums.min.abs().max(sums.max.abs());
    // A constant group has its mean exactly (so its variance is exactly 0).
    let mean_raw = if sums.min == sums.max {
        sums.min
    } else {
        sums.sum / nf
    };
    let abs_constant = sums.min_abs == max_abs;
    let (mean_abs, mean_sq) = if abs_constant {
        (max_abs, max_abs * max_abs)
    } else {
        (sums.sum_abs / nf, sums.sum_sq / nf)
    };
    let half = 1usize << (bits - 1);
    let abs_counts = || (0..half).map(|a| hist[half + a] + hist[half - 1 - a]);
    let (i50, i75) = (nearest_rank(n, 50), nearest_rank(n, 75));
    let mut targets: Vec<(bool, u64)> = Vec::with_capacity(4);
    // Ascending, the zeros hold ranks [negatives, negatives + zeros) of x and [0, zeros) of |x|.
    let zeros_raw = sums.negatives..sums.negatives + sums.zeros;
    let mut target = |is_abs: bool, rank: usize| {
        let zeros = if is_abs {
            0..sums.zeros
        } else {
            zeros_raw.clone()
        };
        if zeros.contains(&rank) {
            return Quantile::Zero;
        }
        let (bucket, offset) = if is_abs {
            locate(abs_counts(), rank)
        } else {
            locate(hist.iter().copied(), rank)
        };
        let t = match targets.iter().position(|&t| t == (is_abs, bucket)) {
            Some(t) => t,
            None => {
                targets.push((is_abs, bucket));
                targets.len() - 1
            }
        };
        Quantile::At(Locator { target: t, offset })
    };
    let raw_median = target(false, i50);
    let raw_q3 = target(false, i75);
    let abs_median = target(true, i50);
    let abs_q3 = target(true, i75);
    Plan {
        bits,
        means: [mean_raw, mean_abs, mean_sq],
        targets,
        raw_median,
        raw_q3,
        abs_median,
        abs_q3,
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Moments {
    pub(crate) m2: [f64; 3],
    pub(crate) m4: [f64; 3],
}

impl Moments {
    pub(crate) fn merge(mut self, o: Moments) -> Moments {
        for i in 0..3 {
            self.m2[i] += o.m2[i];
            self.m4[i] += o.m4[i];
        }
        self
    }
}

/// Pass 2 over a chunk: central moments, and the elements of the target buckets into `bufs`.
#[inline(always)]
fn pass2_body<T: Element>(data: &[T], plan: &Plan, bufs: &mut [Vec<u64>; 4]) -> Moments {
    let [mr, ma, ms] = plan.means;
    let ([r0, r1], [a0, a1]) = plan.target_buckets();
    let bits = plan.bits;
    let mut flags = [0u8; BLOCK];
    let mut m2r = [0.0f64; LANES];
    let mut m2a = [0.0f64; LANES];
    let mut m2s = [0.0f64; LANES];
    let mut m4r = [0.0f64; LANES];
    let mut m4a = [0.0f64; LANES];
    let mut m4s = [0.0f64; LANES];
    for block in data.chunks(BLOCK) {
        let lanes = block.chunks_exact(LANES);
        let tail = lanes.remainder();
        // Squared and fourth-power deviations of x, |x| and x² into lane `l` (a macro, so the
        // lane loop stays one straight-line body the compiler vectorises).
        macro_rules! moments {
            ($x:expr, $l:expr) => {{
                let v = $x.to_f64();
                let dr = v - mr;
                let da = v.abs() - ma;
                let ds = v * v - ms;
                let (dr2, da2, ds2) = (dr * dr, da * da, ds * ds);
                m2r[$l] += dr2;
                m2a[$l] += da2;
                m2s[$l] += ds2;
                m4r[$l] += dr2 * dr2;
                m4a[$l] += da2 * da2;
                m4s[$l] += ds2 * ds2;
            }};
        }
        for c in lanes {
            for l in 0..LANES {
                moments!(c[l], l);
            }
        }
        for (l, &x) in tail.iter().enumerate() {
            moments!(x, l);
        }
        // Few elements fall in a target bucket (≈1%): flag them branch-free, then visit only
        // the flagged ones, eight flags to a word.
        for (f, &x) in flags.iter_mut().zip(block) {
            let rb = x.raw_bucket(bits);
            let ab = x.abs_bucket(bits);
            *f = u8::from((rb == r0) | (rb == r1) | (ab == a0) | (ab == a1));
        }
        flags[block.len()..].fill(0);
        for (w, word) in flags.chunks_exact(8).enumerate() {
            let mut word = u64::from_le_bytes(word.try_into().expect("8 flags"));
            while word != 0 {
                let byte = word.trailing_zeros() / 8;
                word &= !(0xffu64 << (byte * 8));
                pass2_flagged(block[w * 8 + byte as usize], plan, bufs);
            }
        }
    }
    Moments {
        m2: [fold(m2r), fold(m2a), fold(m2s)],
        m4: [fold(m4r), fold(m4a), fold(m4s)],
    }
}

dispatch!(pass2_portable => pass2_body(data: &[T], plan: &Plan, bufs: &mut [Vec<u64>; 4]) -> Moments);

/// Pass 2 over a chunk: central moments, and the elements of the target buckets into `bufs`.
fn pass2<T: Element>(data: &[T], plan: &Plan, bufs: &mut [Vec<u64>; 4]) -> Moments {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = T::as_f32(data)
        && crate::x86::available()
    {
        let whole = f.len() / 8 * 8;
        let body = crate::x86::pass2(&f[..whole], plan, bufs);
        return body.merge(pass2_portable(&f[whole..], plan, bufs));
    }
    pass2_portable(data, plan, bufs)
}

/// Copies `x` into the buffer of each target bucket it falls in.
#[inline(always)]
pub(crate) fn pass2_flagged<T: Element>(x: T, plan: &Plan, bufs: &mut [Vec<u64>; 4]) {
    for (t, &(is_abs, bucket)) in plan.targets.iter().enumerate() {
        if is_abs {
            if u64::from(x.abs_bucket(plan.bits)) == bucket {
                bufs[t].push(x.abs_key());
            }
        } else if u64::from(x.raw_bucket(plan.bits)) == bucket {
            bufs[t].push(x.sort_key());
        }
    }
}

/// The order statistic `q` as a value, `key` turning a buffer's key back into one.
fn select(bufs: &mut [Vec<u64>; 4], q: Quantile, key: fn(u64) -> f64) -> f64 {
    match q {
        Quantile::Zero => 0.0,
        Quantile::At(at) => key(*bufs[at.target].select_nth_unstable(at.offset).1),
    }
}

fn finish<T: Element>(
    sums: &Sums,
    plan: &Plan,
    moments: &Moments,
    bufs: &mut [Vec<u64>; 4],
) -> GroupStats {
    let nf = sums.n as f64;
    let raw_median = select(bufs, plan.raw_median, T::from_sort_key);
    let raw_q3 = select(bufs, plan.raw_q3, T::from_sort_key);
    let abs_median = select(bufs, plan.abs_median, T::from_abs_key);
    let abs_q3 = select(bufs, plan.abs_q3, T::from_abs_key);
    let function = |f: usize, median: f64, q3: f64, norm: f64| {
        let mean = plan.means[f];
        let var = moments.m2[f] / nf;
        let (skew, kurtosis) = if var > 0.0 {
            (
                3.0 * (mean - median) / var.sqrt(),
                moments.m4[f] / nf / var / var,
            )
        } else {
            (f64::NAN, f64::NAN)
        };
        FunctionStats {
            kurtosis,
            mean,
            median,
            norm,
            skew,
            third_quartile: q3,
            var,
        }
    };
    GroupStats {
        raw: function(0, raw_median, raw_q3, sums.sum_sq.sqrt()),
        abs: function(1, abs_median, abs_q3, sums.sum_sq.sqrt()),
        sq: function(
            2,
            abs_median * abs_median,
            abs_q3 * abs_q3,
            sums.sum_4.sqrt(),
        ),
    }
}

/// The statistics of `data` (one reduction group). Large groups use every rayon thread when
/// `parallel` is set. Fails only on non-finite values (or an empty slice: a count of 0).
pub fn summarize<T: Element>(
    data: &[T],
    scratch: &mut Scratch,
    parallel: bool,
) -> Result<GroupStats, NonFiniteValues> {
    if data.is_empty() {
        return Err(NonFiniteValues(0));
    }
    let bits = histogram_bits(data.len());
    let threads = rayon::current_num_threads();
    for b in &mut scratch.bufs {
        b.clear();
    }
    if parallel && threads > 1 && data.len() >= PARALLEL_MIN {
        let chunk = data.len().div_ceil(threads);
        let (sums, hist) = data
            .par_chunks(chunk)
            .map(|c| {
                let mut hist = vec![0u32; hist_copies(bits) << bits];
                let sums = pass1(c, bits, &mut hist);
                fold_copies(&mut hist, bits);
                hist.truncate(1 << bits);
                (sums, hist)
            })
            .reduce_with(|(s1, mut h1), (s2, h2)| {
                h1.iter_mut().zip(&h2).for_each(|(a, b)| *a += b);
                (s1.merge(s2), h1)
            })
            .expect("non-empty");
        if sums.nonfinite > 0 {
            return Err(NonFiniteValues(sums.nonfinite));
        }
        let plan = plan(&sums, bits, &hist);
        let (moments, parts) = data
            .par_chunks(chunk)
            .map(|c| {
                let mut bufs: [Vec<u64>; 4] = Default::default();
                (pass2(c, &plan, &mut bufs), bufs)
            })
            .reduce_with(|(m1, mut b1), (m2, b2)| {
                for (a, b) in b1.iter_mut().zip(b2) {
                    a.extend(b);
                }
                (m1.merge(m2), b1)
            })
            .expect("non-empty");
        scratch.bufs = parts;
        Ok(finish::<T>(&sums, &plan, &moments, &mut scratch.bufs))
    } else {
        scratch.hist.clear();
        scratch.hist.resize(hist_copies(bits) << bits, 0);
        let sums = pass1(data, bits, &mut scratch.hist);
        fold_copies(&mut scratch.hist, bits);
        scratch.hist.truncate(1 << bits);
        if sums.nonfinite > 0 {
            return Err(NonFiniteValues(sums.nonfinite));
        }
        let plan = plan(&sums, bits, &scratch.hist);
        let moments = pass2(data, &plan, &mut scratch.bufs);
        Ok(finish::<T>(&sums, &plan, &moments, &mut scratch.bufs))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A direct, sorting implementation of the definitions, for cross-checking.
    fn naive(values: &[f64]) -> GroupStats {
        let n = values.len() as f64;
        let f = |g: &dyn Fn(f64) -> f64, norm: f64| {
            let mut v: Vec<f64> = values.iter().map(|&x| g(x)).collect();
            let constant = v.iter().all(|&x| x == v[0]);
            let mean = if constant {
                v[0]
            } else {
                v.iter().sum::<f64>() / n
            };
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            let m4 = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
            v.sort_by(f64::total_cmp);
            let median = v[nearest_rank(v.len(), 50)];
            let q3 = v[nearest_rank(v.len(), 75)];
            FunctionStats {
                kurtosis: if var > 0.0 { m4 / var / var } else { f64::NAN },
                mean,
                median,
                norm,
                skew: if var > 0.0 {
                    3.0 * (mean - median) / var.sqrt()
                } else {
                    f64::NAN
                },
                third_quartile: q3,
                var,
            }
        };
        let l2 = values.iter().map(|x| x * x).sum::<f64>().sqrt();
        let l2sq = values.iter().map(|x| x.powi(4)).sum::<f64>().sqrt();
        GroupStats {
            abs: f(&|x: f64| x.abs(), l2),
            raw: f(&|x| x, l2),
            sq: f(&|x| x * x, l2sq),
        }
    }

    fn assert_close(a: &GroupStats, b: &GroupStats, what: &str) {
        for (i, (x, y)) in a.to_array().iter().zip(b.to_array()).enumerate() {
            let ok = (x.is_nan() && y.is_nan())
                || x == &y
                || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300)
                || (x - y).abs() <= 1e-12;
            assert!(ok, "{what}: statistic {i}: {x} vs {y}");
        }
    }

    #[test]
    fn nearest_rank_follows_round_half_to_even() {
        // (m, q) → ascending index; from spec §1.3 and by hand.
        assert_eq!(nearest_rank(1, 50), 0);
        assert_eq!(nearest_rank(2, 50), 1); // k = round(0.5) = 0 → largest
        assert_eq!(nearest_rank(3, 50), 1);
        assert_eq!(nearest_rank(4, 50), 1); // k = round(1.5) = 2 → 2nd smallest
        assert_eq!(nearest_rank(4, 75), 2); // k = round(0.75) = 1 → 2nd largest
        assert_eq!(nearest_rank(5, 75), 3); // k = 1
        assert_eq!(nearest_rank(3, 75), 2); // k = round(0.5) = 0
        assert_eq!(nearest_rank(7, 75), 4); // k = round(1.5) = 2
        assert_eq!(nearest_rank(6, 50), 3); // k = round(2.5) = 2
        assert_eq!(nearest_rank(8, 50), 3); // k = round(3.5) = 4
    }

    #[test]
    fn matches_sorting_on_many_shapes_and_distributions() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut scratch = Scratch::default();
        for &n in &[
            1usize, 2, 3, 4, 5, 6, 7, 8, 17, 100, 1000, 4097, 70_000, 300_000,
        ] {
            for kind in 0..4 {
                let v: Vec<f32> = (0..n)
                    .map(|_| match kind {
                        0 => rng.random::<f32>() - 0.5,
                        1 => (rng.random::<f32>() * 4.0).exp2() * 1e-3,
                        2 => (rng.random::<f32>() * 8.0).floor() - 4.0, // many ties
                        _ => {
                            if rng.random::<bool>() {
                                0.0
                            } else {
                                rng.random::<f32>()
                            }
                        } // ReLU-like
                    })
                    .collect();
                let wide: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                let expect = naive(&wide);
                for parallel in [false, true] {
                    let got = summarize(&v, &mut scratch, parallel).unwrap();
                    assert_close(&got, &expect, &format!("f32 n={n} kind={kind}"));
                    let got = summarize(&wide, &mut scratch, parallel).unwrap();
                    assert_close(&got, &expect, &format!("f64 n={n} kind={kind}"));
                }
            }
        }
    }

    #[test]
    fn quantiles_among_zeros_of_either_sign() {
        // Ranks of the median and third quartile falling before, among and after the zeros,
        // with -0.0 and +0.0 mixed in, at sizes that use the vector body, its tail, or both.
        let mut scratch = Scratch::default();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [5usize, 8, 13, 64, 1001, 40_000] {
            for (neg, zero) in [(0.0, 0.5), (0.0, 0.9), (0.3, 0.4), (0.6, 0.3), (0.1, 0.0)] {
                let v: Vec<f32> = (0..n)
                    .map(|_| {
                        let u: f64 = rng.random();
                        if u < neg {
                            -rng.random::<f32>() - 0.1
                        } else if u < neg + zero {
                            if rng.random::<bool>() { 0.0 } else { -0.0 }
                        } else {
                            rng.random::<f32>() + 0.1
                        }
                    })
                    .collect();
                let wide: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                let expect = naive(&wide);
                for parallel in [false, true] {
                    let got = summarize(&v, &mut scratch, parallel).unwrap();
                    assert_close(&got, &expect, &format!("f32 n={n} neg={neg} zero={zero}"));
                    let got = summarize(&wide, &mut scratch, parallel).unwrap();
                    assert_close(&got, &expect, &format!("f64 n={n} neg={neg} zero={zero}"));
                }
            }
        }
    }

    /// The f32 vector kernels against the portable bodies on the same data: the same counts,
    /// histogram, extremes and flagged elements; sums and moments to rounding.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_kernels_equal_the_portable_bodies() {
        if !crate::x86::available() {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [8usize, 16, 77, 4096, 100_003] {
            let v: Vec<f32> = (0..n)
                .map(|i| match i % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (rng.random::<f32>() - 0.3) * 10.0,
                })
                .collect();
            let bits = histogram_bits(n);
            let mut hv = vec![0u32; hist_copies(bits) << bits];
            let sv = pass1(&v, bits, &mut hv);
            fold_copies(&mut hv, bits);
            hv.truncate(1 << bits);
            let mut hp = vec![0u32; 1 << bits];
            let sp = pass1_portable(&v, bits, &mut hp);
            assert_eq!(hv, hp, "n={n}");
            assert_eq!(
                (sv.n, sv.nonfinite, sv.zeros, sv.negatives),
                (sp.n, sp.nonfinite, sp.zeros, sp.negatives)
            );
            assert_eq!((sv.min, sv.max, sv.min_abs), (sp.min, sp.max, sp.min_abs));
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
            for (a, b) in [
                (sv.sum, sp.sum),
                (sv.sum_abs, sp.sum_abs),
                (sv.sum_sq, sp.sum_sq),
                (sv.sum_4, sp.sum_4),
            ] {
                assert!(close(a, b), "n={n}: {a} vs {b}");
            }
            let p = plan(&sp, bits, &hp);
            let (mut bv, mut bp): ([Vec<u64>; 4], [Vec<u64>; 4]) = Default::default();
            let mv = pass2(&v, &p, &mut bv);
            let mp = pass2_portable(&v, &p, &mut bp);
            assert_eq!(bv, bp, "n={n}");
            for f in 0..3 {
                assert!(
                    close(mv.m2[f], mp.m2[f]) && close(mv.m4[f], mp.m4[f]),
                    "n={n}"
                );
            }
        }
    }

    #[test]
    fn constant_groups_have_zero_variance_and_nan_shape_statistics() {
        let mut scratch = Scratch::default();
        for n in [1usize, 3, 1000, 300_000] {
            let v = vec![0.1f32; n];
            let s = summarize(&v, &mut scratch, true).unwrap();
            for f in [s.raw, s.abs, s.sq] {
                assert_eq!(f.var, 0.0);
                assert!(f.skew.is_nan() && f.kurtosis.is_nan());
            }
            assert_eq!(s.raw.mean, 0.1f32 as f64);
            assert_eq!(s.sq.median, (0.1f32 as f64).powi(2));
        }
        // Constant magnitude only: raw varies, abs and sq do not.
        let s = summarize(&[-2.0f64, 2.0, -2.0, 2.0], &mut scratch, false).unwrap();
        assert_eq!(s.raw.var, 4.0);
        assert_eq!(s.raw.kurtosis, 1.0);
        assert_eq!(s.abs.var, 0.0);
        assert!(s.abs.skew.is_nan() && s.sq.kurtosis.is_nan());
    }

    #[test]
    fn non_finite_values_are_counted() {
        let mut scratch = Scratch::default();
        let v = [1.0f32, f32::NAN, 2.0, f32::INFINITY];
        assert_eq!(summarize(&v, &mut scratch, false), Err(NonFiniteValues(2)));
        let big: Vec<f32> = (0..300_000)
            .map(|i| {
                if i % 1000 == 0 {
                    f32::NEG_INFINITY
                } else {
                    1.0
                }
            })
            .collect();
        assert_eq!(
            summarize(&big, &mut scratch, true),
            Err(NonFiniteValues(300))
        );
    }
}
