//! PCA of the continuous columns, as scikit-learn's `PCA(n_components=n)` with a full SVD
//! (no whitening): centre on the training rows, take the eigenvectors of the sample covariance
//! (denominator n − 1) in descending order of eigenvalue. The eigenvalues are sklearn's
//! `explained_variance_` (S²/(n − 1) of the SVD of the centred data), the eigenvectors its
//! `components_` rows.
//!
//! Sign convention: each component is flipped so that its entry of largest magnitude (the first
//! such on ties) is positive — scikit-learn ≥ 1.5's `svd_flip(u_based_decision=False)`. (sklearn
//! ≤ 1.4, the paper's 0.22 among them, flipped by the scores instead; a component's sign does not
//! change what a linear SVM on the projections can fit, only the sign of its weight.)
//!
//! The eigendecomposition is written by hand — Householder tridiagonalisation and the implicit
//! QL algorithm, the EISPACK `tred2`/`tql2` pair as in JAMA — because the workspace has no
//! linear-algebra crate and the matrix is small (d × d, d ≤ ~507 continuous features): O(d³)
//! is well under a second, and it runs once per training subset (cached by the caller) however
//! many component counts and C values the grid tries. Eigenvalues are accurate to a few ulps of
//! the largest one (~1e-13 relative to it), eigenvectors orthonormal to ~1e-13.

use rayon::prelude::*;

/// Rows per block of the covariance sum (each block is summed on its own, the blocks in order,
/// so the result does not depend on the thread count).
const COVARIANCE_BLOCK: usize = 1024;

/// The full decomposition of one training subset: every component, so that any count can be
/// cut from it.
#[derive(Debug, Clone)]
pub(crate) struct FullPca {
    /// Mean of each continuous column over the training rows.
    pub(crate) mean: Vec<f64>,
    /// Covariance eigenvalues, descending, ≥ 0 (round-off negatives are set to 0).
    pub(crate) variances: Vec<f64>,
    /// The eigenvectors, row-major `d × d`: row c is component c (unit length).
    pub(crate) components: Vec<f64>,
}

/// The decomposition of the continuous columns `categorical..cols` of rows `rows` of the
/// row-major matrix `values` (`cols` columns).
pub(crate) fn fit_full(values: &[f64], cols: usize, categorical: usize, rows: &[u32]) -> FullPca {
    let d = cols - categorical;
    let n = rows.len();
    let continuous = |r: u32| {
        let start = r as usize * cols + categorical;
        &values[start..start + d]
    };
    let mut mean = vec![0.0; d];
    for &r in rows {
        for (m, v) in mean.iter_mut().zip(continuous(r)) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // Upper triangle of Xcᵀ·Xc, summed block by block in parallel, then the blocks in order.
    let partials: Vec<Vec<f64>> = rows
        .par_chunks(COVARIANCE_BLOCK)
        .map(|block| {
            let mut centred = vec![0.0; block.len() * d];
            for (row, &r) in centred.chunks_exact_mut(d).zip(block) {
                for ((c, v), m) in row.iter_mut().zip(continuous(r)).zip(&mean) {
                    *c = v - m;
                }
            }
            let mut cov = vec![0.0; d * d];
            add_upper_gram(&centred, d, &mut cov);
            cov
        })
        .collect();
    let mut cov = vec![0.0; d * d];
    for p in &partials {
        for (c, v) in cov.iter_mut().zip(p) {
            *c += v;
        }
    }
    let denominator = (n.max(2) - 1) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / denominator;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    let (values_asc, vectors) = symmetric_eigen(cov, d);
    // Descending order; each eigenvector flipped so its largest-magnitude entry is positive.
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| values_asc[b].total_cmp(&values_asc[a]));
    let mut variances = Vec::with_capacity(d);
    let mut components = Vec::with_capacity(d * d);
    for &j in &order {
        variances.push(values_asc[j].max(0.0));
        let v = &vectors[j * d..(j + 1) * d];
        let mut largest = 0;
        for (k, x) in v.iter().enumerate() {
            if x.abs() > v[largest].abs() {
                largest = k;
            }
        }
        let sign = if v[largest] < 0.0 { -1.0 } else { 1.0 };
        components.extend(v.iter().map(|x| sign * x));
    }
    FullPca {
        mean,
        variances,
        components,
    }
}

/// Adds the upper triangle (j ≥ i) of `xᵀx` of the row-major `rows × d` matrix `x` to `out`
/// (`d × d`), four rows at a time so that each pass over a row of `out` does four updates.
fn add_upper_gram(x: &[f64], d: usize, out: &mut [f64]) {
    let mut quads = x.chunks_exact(4 * d);
    for q in quads.by_ref() {
        let (r0, rest) = q.split_at(d);
        let (r1, rest) = rest.split_at(d);
        let (r2, r3) = rest.split_at(d);
        for i in 0..d {
            let (a0, a1, a2, a3) = (r0[i], r1[i], r2[i], r3[i]);
            let o = &mut out[i * d + i..(i + 1) * d];
            for ((((o, b0), b1), b2), b3) in o
                .iter_mut()
                .zip(&r0[i..])
                .zip(&r1[i..])
                .zip(&r2[i..])
                .zip(&r3[i..])
            {
                *o += a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3;
            }
        }
    }
    for r in quads.remainder().chunks_exact(d) {
        for i in 0..d {
            let a = r[i];
            let o = &mut out[i * d + i..(i + 1) * d];
            for (o, b) in o.iter_mut().zip(&r[i..]) {
                *o += a * b;
            }
        }
    }
}

/// Eigendecomposition of the symmetric `n × n` row-major matrix `a`: the eigenvalues in
/// ascending order and the eigenvectors as the rows of a row-major `n × n` matrix (row j
/// belongs to eigenvalue j). Householder reduction to tridiagonal form (`tred2`), then the
/// implicit QL algorithm with Wilkinson-like shifts (`tql2`), after JAMA's public-domain
/// `EigenvalueDecomposition`. The QL rotations act on two eigenvector rows at a time, so the
/// accumulated transformation is kept transposed (contiguous rows).
pub(crate) fn symmetric_eigen(a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen needs an n × n matrix");
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v = a;
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tred2(&mut v, &mut d, &mut e, n);
    // vt[j][k] = v[k][j]: column j of the transformation as row j.
    let mut vt = vec![0.0; n * n];
    for k in 0..n {
        for j in 0..n {
            vt[j * n + k] = v[k * n + j];
        }
    }
    drop(v);
    tql2(&mut vt, &mut d, &mut e, n);
    // Ascending order (tql2 leaves them nearly sorted).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| d[x].total_cmp(&d[y]));
    let values = order.iter().map(|&j| d[j]).collect();
    let mut vectors = Vec::with_capacity(n * n);
    for &j in &order {
        vectors.extend_from_slice(&vt[j * n..(j + 1) * n]);
    }
    (values, vectors)
}

/// Householder reduction of the symmetric matrix in `v` to tridiagonal form: on return `d`
/// holds the diagonal, `e[1..]` the sub-diagonal and `v` the orthogonal transformation.
#[allow(clippy::needless_range_loop)] // index arithmetic of the published algorithm
fn tred2(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let ix = |r: usize, c: usize| r * n + c;
    for j in 0..n {
        d[j] = v[ix(n - 1, j)];
    }
    for i in (1..n).rev() {
        // Scale to avoid under/overflow.
        let mut scale = 0.0;
        let mut h = 0.0;
        for k in 0..i {
            scale += d[k].abs();
        }
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[ix(i - 1, j)];
                v[ix(i, j)] = 0.0;
                v[ix(j, i)] = 0.0;
            }
        } else {
            // Generate the Householder vector.
            for k in 0..i {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for j in 0..i {
                e[j] = 0.0;
            }
            // Apply the similarity transformation to the remaining columns.
            for j in 0..i {
                f = d[j];
                v[ix(j, i)] = f;
                g = e[j] + v[ix(j, j)] * f;
                for k in j + 1..i {
                    g += v[ix(k, j)] * d[k];
                    e[k] += v[ix(k, j)] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[ix(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[ix(i - 1, j)];
                v[ix(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[ix(n - 1, i)] = v[ix(i, i)];
        v[ix(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[ix(k, i + 1)] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[ix(k, i + 1)] * v[ix(k, j)];
                }
                for k in 0..=i {
                    v[ix(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[ix(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[ix(n - 1, j)];
        v[ix(n - 1, j)] = 0.0;
    }
    v[ix(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iterations on the tridiagonal matrix (`d`, `e`) from [`tred2`]; `vt` is the
/// transposed transformation (row j = column j), turned into the eigenvectors (rows).
fn tql2(vt: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        // Find a small sub-diagonal element.
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n {
            if e[m].abs() <= eps * tst1 {
                break;
            }
            m += 1;
        }
        // m == l: d[l] is an eigenvalue; otherwise iterate. (e[n − 1] = 0 stops m at n − 1.)
        if m > l {
            loop {
                // Implicit shift.
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                // Implicit QL transformation.
                p = d[m];
                let mut c = 1.0;
                let mut c2 = c;
                let mut c3 = c;
                let el1 = e[l + 1];
                let mut s = 0.0;
                let mut s2 = 0.0;
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    // Accumulate the rotation on rows i and i + 1.
                    let (head, tail) = vt.split_at_mut((i + 1) * n);
                    let row_i = &mut head[i * n..];
                    let row_i1 = &mut tail[..n];
                    for (a, b) in row_i.iter_mut().zip(row_i1.iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// Projections of rows onto the first `k` components: for each row, its continuous columns
/// `x` (length d) → `out` (length k), `out[c] = (x − mean) · component c`.
#[cfg(test)]
pub(crate) fn project(x: &[f64], mean: &[f64], components: &[f64], k: usize, out: &mut [f64]) {
    let d = mean.len();
    let mut centred = vec![0.0; d];
    project_with(x, mean, components, k, out, &mut centred);
}

/// [`project`] with a caller's scratch buffer of length d.
pub(crate) fn project_with(
    x: &[f64],
    mean: &[f64],
    components: &[f64],
    k: usize,
    out: &mut [f64],
    centred: &mut [f64],
) {
    let d = mean.len();
    for ((c, v), m) in centred.iter_mut().zip(x).zip(mean) {
        *c = v - m;
    }
    for (c, o) in out.iter_mut().enumerate().take(k) {
        *o = crate::solver::dot(&components[c * d..(c + 1) * d], centred);
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the checks index like the formulas they check
mod tests {
    use super::*;

    /// A deterministic pseudo-random matrix (values in [−1, 1)).
    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::solver::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
    }

    fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
        v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    #[test]
    fn the_eigendecomposition_solves_a_v_equals_lambda_v() {
        for n in [1, 2, 3, 7, 40] {
            let b = noise(n * n, n as u64);
            // A = B + Bᵀ, symmetric and indefinite.
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = b[i * n + j] + b[j * n + i];
                }
            }
            let (values, vectors) = symmetric_eigen(a.clone(), n);
            assert!(values.windows(2).all(|w| w[0] <= w[1]));
            let scale = max_abs(a.iter().copied());
            for j in 0..n {
                let v = &vectors[j * n..(j + 1) * n];
                for i in 0..n {
                    let av: f64 = (0..n).map(|k| a[i * n + k] * v[k]).sum();
                    assert!(
                        (av - values[j] * v[i]).abs() < 1e-12 * scale * n as f64,
                        "n={n}"
                    );
                }
                for k in 0..n {
                    let dot: f64 = (0..n).map(|t| v[t] * vectors[k * n + t]).sum();
                    let want = if j == k { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "n={n}: {dot}");
                }
            }
        }
    }

    #[test]
    fn the_eigendecomposition_handles_degenerate_and_diagonal_matrices() {
        let n = 5;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = [3.0, 1.0, 3.0, 0.0, 2.0][i];
        }
        let (values, vectors) = symmetric_eigen(a, n);
        assert_eq!(values, vec![0.0, 1.0, 2.0, 3.0, 3.0]);
        for j in 0..n {
            let norm: f64 = vectors[j * n..(j + 1) * n].iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-15);
        }
        let (values, _) = symmetric_eigen(vec![0.0; 9], 3);
        assert_eq!(values, vec![0.0; 3]);
    }

    /// A 200 × (2 + 12) matrix whose continuous columns have very different scales and are
    /// correlated.
    fn data() -> (Vec<f64>, usize, usize, usize) {
        let (n, cat, d) = (200, 2, 12);
        let cols = cat + d;
        let z = noise(n * d, 7);
        let mut x = vec![0.0; n * cols];
        for r in 0..n {
            x[r * cols + r % 2] = 1.0;
            for j in 0..d {
                let base = z[r * d + j] * (j + 1) as f64;
                let mixed = if j > 0 {
                    base + 0.5 * z[r * d + j - 1]
                } else {
                    base
                };
                x[r * cols + cat + j] = mixed + 3.0 * j as f64;
            }
        }
        (x, n, cols, cat)
    }

    #[test]
    fn pca_components_are_orthonormal_with_descending_variances_of_the_covariance() {
        let (x, n, cols, cat) = data();
        let d = cols - cat;
        let rows: Vec<u32> = (0..n as u32).filter(|r| r % 5 != 0).collect();
        let pca = fit_full(&x, cols, cat, &rows);
        assert_eq!(
            (pca.mean.len(), pca.variances.len(), pca.components.len()),
            (d, d, d * d)
        );
        assert!(pca.variances.windows(2).all(|w| w[0] >= w[1]));
        // The covariance of the training rows, directly.
        let m = rows.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| {
                rows.iter()
                    .map(|&r| x[r as usize * cols + cat + j])
                    .sum::<f64>()
                    / m
            })
            .collect();
        for (a, b) in mean.iter().zip(&pca.mean) {
            assert!((a - b).abs() < 1e-13);
        }
        let cov = |i: usize, j: usize| {
            rows.iter()
                .map(|&r| {
                    let r = r as usize * cols + cat;
                    (x[r + i] - mean[i]) * (x[r + j] - mean[j])
                })
                .sum::<f64>()
                / (m - 1.0)
        };
        let c: Vec<f64> = (0..d * d).map(|t| cov(t / d, t % d)).collect();
        let top = pca.variances[0];
        for a in 0..d {
            let va = &pca.components[a * d..(a + 1) * d];
            // Sign convention: the largest-magnitude entry is positive.
            let big = va
                .iter()
                .fold(0.0f64, |m, &x| if x.abs() > m.abs() { x } else { m });
            assert!(big > 0.0);
            for b in 0..d {
                let vb = &pca.components[b * d..(b + 1) * d];
                let dot: f64 = va.iter().zip(vb).map(|(p, q)| p * q).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "{a},{b}: {dot}");
            }
            // C·v = λ·v with λ the explained variance.
            for i in 0..d {
                let cv: f64 = (0..d).map(|k| c[i * d + k] * va[k]).sum();
                assert!(
                    (cv - pca.variances[a] * va[i]).abs() < 1e-10 * top,
                    "component {a}: {cv} vs {}",
                    pca.variances[a] * va[i]
                );
            }
        }
        // The variances sum to the trace.
        let trace: f64 = (0..d).map(|i| c[i * d + i]).sum();
        let total: f64 = pca.variances.iter().sum();
        assert!((trace - total).abs() < 1e-10 * trace);
    }

    #[test]
    fn all_components_reconstruct_the_data_exactly() {
        let (x, n, cols, cat) = data();
        let d = cols - cat;
        let rows: Vec<u32> = (0..n as u32).collect();
        let pca = fit_full(&x, cols, cat, &rows);
        let mut scores = vec![0.0; d];
        for r in 0..n {
            let xr = &x[r * cols + cat..(r + 1) * cols];
            project(xr, &pca.mean, &pca.components, d, &mut scores);
            for j in 0..d {
                let back: f64 = pca.mean[j]
                    + (0..d)
                        .map(|c| scores[c] * pca.components[c * d + j])
                        .sum::<f64>();
                assert!(
                    (back - xr[j]).abs() < 1e-11 * (1.0 + xr[j].abs()),
                    "{back} vs {}",
                    xr[j]
                );
            }
        }
        // The scores' variances are the explained variances.
        let mut var = vec![0.0; d];
        for r in 0..n {
            project(
                &x[r * cols + cat..(r + 1) * cols],
                &pca.mean,
                &pca.components,
                d,
                &mut scores,
            );
            for (v, s) in var.iter_mut().zip(&scores) {
                *v += s * s / (n - 1) as f64;
            }
        }
        for (a, b) in var.iter().zip(&pca.variances) {
            assert!((a - b).abs() < 1e-10 * pca.variances[0]);
        }
    }

    #[test]
    fn the_covariance_over_several_blocks_is_deterministic() {
        // More rows than one block, and a remainder of 1..3 rows in the four-row kernel.
        let (n, d) = (2 * COVARIANCE_BLOCK + 3, 5);
        let x = noise(n * d, 3);
        let rows: Vec<u32> = (0..n as u32).collect();
        let a = fit_full(&x, d, 0, &rows);
        let b = fit_full(&x, d, 0, &rows);
        assert_eq!(a.components, b.components);
        assert_eq!(a.variances, b.variances);
    }
}
