//! The dual coordinate-descent solver of liblinear's `solve_l2r_l1l2_svc` for the L2-regularised
//! squared-hinge (L2-loss) SVM — solver type `L2R_L2LOSS_SVC_DUAL`, scikit-learn's `LinearSVC`
//! default (Hsieh et al., ICML 2008, Algorithm 1 with shrinking).
//!
//! Primal: min_w ½‖w‖² + C Σᵢ max(0, 1 − yᵢ wᵀxᵢ)², with the intercept as an extra feature of
//! constant value 1 (liblinear's bias term with `intercept_scaling = 1`), regularised like the
//! other weights. Dual: min_α ½ αᵀ(Q + D)α − eᵀα subject to α ≥ 0, where Qᵢⱼ = yᵢyⱼ xᵢᵀxⱼ and
//! D = I/(2C); w = Σᵢ αᵢyᵢxᵢ is kept up to date. Each outer iteration visits the active
//! coordinates in a fresh random order (a forward Fisher–Yates shuffle, as liblinear), updates
//! αᵢ ← max(αᵢ − Gᵢ/Q̄ᵢᵢ, 0) with Gᵢ = yᵢwᵀxᵢ − 1 + αᵢ/(2C), and shrinks αᵢ = 0 coordinates whose
//! gradient exceeds the previous iteration's largest projected gradient. It stops when the
//! spread of projected gradients over a sweep of the *whole* set is ≤ `eps` (absolute, as
//! liblinear; after a sweep of a shrunk set it unshrinks and sweeps again), or after `max_iter`
//! outer iterations.
//!
//! Differences from liblinear that do not change the algorithm: the rows are dense (the dot
//! products sum in a different order than liblinear's sparse loop) and the random order comes
//! from a seeded SplitMix64 rather than sklearn's Mersenne twister, so results agree with
//! sklearn's to the solver's tolerance, not bit for bit.

/// A set of dense training rows: row i is `values[offsets[i]..offsets[i] + width]` (a
/// contiguous slice, so every coordinate step is a dense dot product and axpy). The constant
/// bias feature is implicit.
#[derive(Debug)]
pub(crate) struct Design<'a> {
    pub(crate) values: &'a [f64],
    pub(crate) offsets: Vec<usize>,
    pub(crate) width: usize,
}

impl Design<'_> {
    pub(crate) fn rows(&self) -> usize {
        self.offsets.len()
    }

    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[f64] {
        let o = self.offsets[i];
        &self.values[o..o + self.width]
    }

    /// ‖xᵢ‖² + 1 (the bias feature) of every row: the diagonal of Q.
    pub(crate) fn squared_norms(&self) -> Vec<f64> {
        (0..self.rows())
            .map(|i| {
                let r = self.row(i);
                dot(r, r) + 1.0
            })
            .collect()
    }
}

/// What the solver found for one binary problem.
#[derive(Debug, Clone)]
pub(crate) struct Solution {
    /// Weights of the row features.
    pub(crate) w: Vec<f64>,
    /// Weight of the constant-1 feature: the intercept.
    pub(crate) bias: f64,
    /// The dual variables (one per row).
    #[cfg_attr(not(test), allow(dead_code))] // read by the KKT tests only
    pub(crate) alpha: Vec<f64>,
    /// Outer iterations run.
    pub(crate) iterations: usize,
}

/// Solves the binary problem with labels `y` (±1 per row of `x`); `squared_norms` from
/// [`Design::squared_norms`].
///
/// On x86-64 CPUs with AVX2 the same code runs compiled for AVX2 (chosen at run time): the dot
/// products and updates take 4 values per instruction instead of 2. The arithmetic is the same
/// (the same eight partial sums, no fused multiply-add), so the result is bit for bit the
/// portable build's.
pub(crate) fn solve(
    x: &Design<'_>,
    squared_norms: &[f64],
    y: &[f64],
    c: f64,
    eps: f64,
    max_iter: usize,
    seed: u64,
) -> Solution {
    let problem = Problem {
        x,
        squared_norms,
        y,
        c,
        eps,
        max_iter,
        seed,
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { solve_avx2(&problem) };
    }
    solve_with(&problem)
}

/// The arguments of [`solve`].
#[derive(Clone, Copy)]
struct Problem<'a, 'd> {
    x: &'a Design<'d>,
    squared_norms: &'a [f64],
    y: &'a [f64],
    c: f64,
    eps: f64,
    max_iter: usize,
    seed: u64,
}

/// [`solve_with`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn solve_avx2(problem: &Problem<'_, '_>) -> Solution {
    solve_with(problem)
}

/// The solver itself (inlined into [`solve`]'s portable and AVX2 versions).
#[inline(always)]
fn solve_with(problem: &Problem<'_, '_>) -> Solution {
    let Problem {
        x,
        squared_norms,
        y,
        c,
        eps,
        max_iter,
        seed,
    } = *problem;
    let l = x.rows();
    debug_assert_eq!(y.len(), l);
    let diag = 0.5 / c;
    let qd: Vec<f64> = squared_norms.iter().map(|q| q + diag).collect();
    let mut alpha = vec![0.0; l];
    let mut w = vec![0.0; x.width];
    let mut bias = 0.0;
    let mut index: Vec<usize> = (0..l).collect();
    let mut active = l;
    let mut rng = SplitMix64::new(seed);
    // The largest projected gradient of the previous sweep: the shrinking threshold. (The
    // squared-hinge dual has no upper bound on α, so liblinear's lower threshold is never used.)
    let mut pg_max_old = f64::INFINITY;
    let mut iterations = 0;
    while iterations < max_iter {
        let mut pg_max_new = f64::NEG_INFINITY;
        let mut pg_min_new = f64::INFINITY;
        for i in 0..active {
            let j = i + rng.below(active - i);
            index.swap(i, j);
        }
        let mut s = 0;
        while s < active {
            let i = index[s];
            let yi = y[i];
            let xi = x.row(i);
            let g = yi * (dot(&w, xi) + bias) - 1.0 + alpha[i] * diag;
            let mut pg = 0.0;
            if alpha[i] == 0.0 {
                if g > pg_max_old {
                    // Shrink: this coordinate is likely to stay at 0.
                    active -= 1;
                    index.swap(s, active);
                    continue;
                } else if g < 0.0 {
                    pg = g;
                }
            } else {
                pg = g;
            }
            pg_max_new = pg_max_new.max(pg);
            pg_min_new = pg_min_new.min(pg);
            if pg.abs() > 1.0e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let d = (alpha[i] - old) * yi;
                axpy(d, xi, &mut w);
                bias += d;
            }
            s += 1;
        }
        iterations += 1;
        if pg_max_new - pg_min_new <= eps {
            if active == l {
                break;
            }
            // Converged on the shrunk set: check the whole set.
            active = l;
            pg_max_old = f64::INFINITY;
            continue;
        }
        pg_max_old = if pg_max_new <= 0.0 {
            f64::INFINITY
        } else {
            pg_max_new
        };
    }
    Solution {
        w,
        bias,
        alpha,
        iterations,
    }
}

/// `a · b` over the shorter length, with eight partial sums (the compiler vectorises it).
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// `y += a·x`.
#[inline(always)]
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): the coordinate orders. Small, fast and plenty for
/// shuffling; seeded per binary problem so results do not depend on the thread schedule.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[cfg(test)]
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n ≥ 1), without modulo bias (Lemire's multiply-and-reject).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the checks index like the formulas they check
mod tests {
    use super::*;

    /// Two Gaussian-ish blobs in 6 dimensions that overlap (not separable).
    fn blobs(n: usize, shift: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let d = 6;
        let mut rng = SplitMix64::new(seed);
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = if i % 3 == 0 { 1.0 } else { -1.0 };
            for j in 0..d {
                let u: f64 = (0..4).map(|_| rng.next_f64()).sum::<f64>() - 2.0;
                x.push(u + if j < 2 { label * shift } else { 0.1 * j as f64 });
            }
            y.push(label);
        }
        (x, y)
    }

    fn design(x: &[f64], d: usize) -> Design<'_> {
        Design {
            values: x,
            offsets: (0..x.len() / d).map(|i| i * d).collect(),
            width: d,
        }
    }

    /// The run-time AVX2 choice does not change a bit of the solution (6 and 37 features:
    /// whole blocks of eight and a remainder).
    #[test]
    fn the_avx2_build_gives_the_portable_builds_solution() {
        for (d, n) in [(6, 90), (37, 200)] {
            let mut rng = SplitMix64::new(d as u64);
            let x: Vec<f64> = (0..n * d).map(|_| rng.next_f64() - 0.5).collect();
            let y: Vec<f64> = (0..n)
                .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
                .collect();
            let design = design(&x, d);
            let norms = design.squared_norms();
            let chosen = solve(&design, &norms, &y, 1.0, 1e-4, 50, 7);
            let portable = solve_with(&Problem {
                x: &design,
                squared_norms: &norms,
                y: &y,
                c: 1.0,
                eps: 1e-4,
                max_iter: 50,
                seed: 7,
            });
            assert_eq!(chosen.w, portable.w);
            assert_eq!(chosen.bias.to_bits(), portable.bias.to_bits());
            assert_eq!(chosen.alpha, portable.alpha);
        }
    }

    #[test]
    fn the_solution_satisfies_the_kkt_conditions_of_the_dual() {
        let d = 6;
        let (x, y) = blobs(120, 0.6, 1);
        let design = design(&x, d);
        let norms = design.squared_norms();
        for c in [0.01, 1.0, 50.0] {
            let sol = solve(&design, &norms, &y, c, 1e-9, 100_000, 3);
            assert!(sol.iterations < 100_000, "C={c} did not converge");
            // w = Σ αᵢyᵢxᵢ, bias = Σ αᵢyᵢ.
            let mut w = vec![0.0; d];
            let mut b = 0.0;
            for i in 0..y.len() {
                axpy(sol.alpha[i] * y[i], design.row(i), &mut w);
                b += sol.alpha[i] * y[i];
            }
            for (p, q) in w.iter().zip(&sol.w) {
                assert!((p - q).abs() < 1e-9, "{p} vs {q}");
            }
            assert!((b - sol.bias).abs() < 1e-9);
            // Gᵢ = yᵢ(wᵀxᵢ + b) − 1 + αᵢ/(2C): 0 where αᵢ > 0, ≥ 0 where αᵢ = 0.
            let mut support = 0;
            for i in 0..y.len() {
                let g =
                    y[i] * (dot(&sol.w, design.row(i)) + sol.bias) - 1.0 + sol.alpha[i] / (2.0 * c);
                assert!(sol.alpha[i] >= 0.0);
                if sol.alpha[i] > 0.0 {
                    support += 1;
                    assert!(g.abs() < 1e-7, "C={c}: α={} G={g}", sol.alpha[i]);
                } else {
                    assert!(g > -1e-7, "C={c}: α=0 G={g}");
                }
            }
            assert!(support > 0);
            // Strong duality: primal objective = dual objective.
            let w2 = dot(&sol.w, &sol.w) + sol.bias * sol.bias;
            let loss: f64 = (0..y.len())
                .map(|i| {
                    (1.0 - y[i] * (dot(&sol.w, design.row(i)) + sol.bias))
                        .max(0.0)
                        .powi(2)
                })
                .sum();
            let primal = 0.5 * w2 + c * loss;
            let dual = sol.alpha.iter().sum::<f64>()
                - 0.5 * w2
                - sol.alpha.iter().map(|a| a * a).sum::<f64>() / (4.0 * c);
            assert!(
                (primal - dual).abs() < 1e-6 * primal.abs(),
                "C={c}: {primal} vs {dual}"
            );
        }
    }

    #[test]
    fn max_iter_bounds_the_outer_iterations_and_the_seed_fixes_the_result() {
        let d = 6;
        let (x, y) = blobs(90, 0.3, 2);
        let design = design(&x, d);
        let norms = design.squared_norms();
        let capped = solve(&design, &norms, &y, 1e4, 1e-12, 5, 1);
        assert_eq!(capped.iterations, 5);
        let a = solve(&design, &norms, &y, 1.0, 1e-4, 1000, 9);
        let b = solve(&design, &norms, &y, 1.0, 1e-4, 1000, 9);
        assert_eq!(a.w, b.w);
        assert_eq!(a.alpha, b.alpha);
        // Another order converges to the same optimum, to the tolerance.
        let c = solve(&design, &norms, &y, 1.0, 1e-10, 100_000, 10);
        let e = solve(&design, &norms, &y, 1.0, 1e-10, 100_000, 11);
        for (p, q) in c.w.iter().zip(&e.w) {
            assert!((p - q).abs() < 1e-7);
        }
    }

    #[test]
    fn bounded_draws_are_in_range_and_cover_it() {
        let mut rng = SplitMix64::new(0);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 850 && c < 1150), "{seen:?}");
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let mut rng = SplitMix64::new(5);
        for n in [0, 1, 7, 8, 9, 31] {
            let a: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
            let b: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-14);
        }
    }
}
