//! Growing one tree (scikit-learn's `DecisionTreeClassifier` with `splitter="best"`, as a
//! random forest grows it) on binned features, and the flat tree it makes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Criterion, Params};
use crate::data::Rank;

/// `Node::feature` of a leaf; its `left` is then the leaf's row in [`Tree::values`].
pub(crate) const LEAF: u32 = u32::MAX;

/// A node of a flat tree: a split sends `x[feature] <= threshold` to `left`, the rest to
/// `right` (children always come after their parent); a leaf has `feature == LEAF`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Node {
    pub threshold: f64,
    pub feature: u32,
    pub left: u32,
    pub right: u32,
}

/// One fitted tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    /// Nodes in depth-first order, the root first.
    pub nodes: Vec<Node>,
    /// Class fractions of each leaf, leaf-major (`leaves × n_classes`).
    pub values: Vec<f64>,
    /// Impurity-decrease importance of each feature, normalised to sum 1 (all zero for a tree
    /// that is one leaf).
    pub importances: Vec<f64>,
}

impl Tree {
    /// Adds the class fractions of the leaf each row of `rows` falls in to its `k` values of
    /// `out`. Walks `LANES` rows at a time in lockstep, so that their dependent node loads
    /// overlap.
    #[inline]
    pub fn accumulate(&self, rows: &[&[f64]], k: usize, out: &mut [f64]) {
        const LANES: usize = 8;
        for (rows, out) in rows.chunks(LANES).zip(out.chunks_mut(LANES * k)) {
            let mut at = [0u32; LANES];
            let mut done = [false; LANES];
            let mut left = rows.len();
            while left > 0 {
                for (j, x) in rows.iter().enumerate() {
                    if done[j] {
                        continue;
                    }
                    let node = &self.nodes[at[j] as usize];
                    if node.feature == LEAF {
                        let l = node.left as usize * k;
                        for (o, v) in out[j * k..(j + 1) * k]
                            .iter_mut()
                            .zip(&self.values[l..l + k])
                        {
                            *o += v;
                        }
                        done[j] = true;
                        left -= 1;
                    } else {
                        at[j] = if x[node.feature as usize] <= node.threshold {
                            node.left
                        } else {
                            node.right
                        };
                    }
                }
            }
        }
    }
}

/// What every tree of a fit shares: the prepared matrix, the fit's bins and parameters.
#[derive(Debug)]
pub(crate) struct Ctx<'a, R> {
    /// Dense ranks of the values, row-major (`n_features` per row).
    pub ranks: &'a [R],
    /// Sorted distinct values of each feature (`values[value_start[f] + rank]`).
    pub values: &'a [f64],
    pub value_start: &'a [usize],
    /// Bin codes, column-major (`n_data` per feature).
    pub codes: &'a [u8],
    pub n_bins: &'a [u16],
    pub multi: &'a [bool],
    pub n_data: usize,
    pub n_features: usize,
    pub n_classes: usize,
    pub params: &'a Params,
    /// `xlogx[c] = c·ln c` for every weighted count up to the bootstrap's total (entropy).
    pub xlogx: &'a [f64],
}

/// The most rank values a subtree copies (see [`Grower::grow_subtree`]): 16 Mi (32 MiB of
/// `u16`); a larger small node scans the prepared matrix in place.
const LOCAL_MAX: usize = 1 << 24;

/// Where a subtree reads ranks: `ranks[row * row_stride + feature * col_stride]` of the
/// prepared row-major matrix (rows are its rows), or of a subtree's column-major copy (rows are
/// indices into the copy).
#[derive(Debug, Clone, Copy)]
struct View<'a, R> {
    ranks: &'a [R],
    row_stride: usize,
    col_stride: usize,
    local: bool,
}

impl<R: Rank> View<'_, R> {
    #[inline(always)]
    fn rank(&self, f: usize, row: u32) -> u32 {
        self.ranks[row as usize * self.row_stride + f * self.col_stride].get()
    }
}

/// A training sample in a tree: its row (of the prepared matrix, or of a subtree's copy), class
/// and bootstrap weight.
#[derive(Debug, Clone, Copy)]
struct Slot {
    row: u32,
    class: u32,
    weight: u32,
}

/// A node waiting to be grown: its samples `slots[start..end]`.
#[derive(Debug)]
struct Pending {
    start: usize,
    end: usize,
    depth: usize,
    /// The parent's node index and whether this is its left child (none for the root).
    parent: Option<(usize, bool)>,
    counts: Vec<u32>,
}

/// The best split found for one feature.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// The feature is constant over the node.
    Constant,
    /// No split leaves `min_samples_leaf` samples on both sides.
    NoValid,
    /// A split between the value of row `lo` and the next larger value in the node, that of
    /// row `hi` (exact scan; their ranks are looked up for the chosen split only).
    Rows { proxy: f64, lo: u32, hi: u32 },
    /// A split after bin `bin` (histogram): left is `code <= bin`.
    Bin { proxy: f64, bin: u8 },
}

/// Scratch buffers of one tree.
#[derive(Debug)]
struct Scratch {
    hist: Vec<u32>,
    left: Vec<u32>,
    /// [`gini_scan`]'s weights per class on the left (whole numbers, exact in `f64`).
    left_f: Vec<f64>,
    /// Sort keys of the exact scan ([`SortKey`]) and the radix sort's second buffer (see
    /// [`sort_keys`]): 32-bit keys where ranks and indices fit in 16 bits each, else 64-bit.
    keys32: (Vec<u32>, Vec<u32>),
    keys64: (Vec<u64>, Vec<u64>),
}

/// A sort key of the exact scan: the sample's rank in the high half, its index in the node in
/// the low half, so that sorting keys sorts samples by rank (ties by index). `u32` keys (16-bit
/// ranks and indices: every node of a data set with at most 65,536 distinct values per feature
/// and 65,536 samples) move half the bytes of `u64` keys through the sorts.
trait SortKey: Copy + Ord + Default {
    fn new(rank: u32, index: usize) -> Self;
    fn rank(self) -> u32;
    fn index(self) -> usize;
    /// This key type's buffers of `scratch`, and the scans' per-class scratch.
    fn buffers(scratch: &mut Scratch) -> KeyBuffers<'_, Self>;
}

/// What [`exact_scan_with`] borrows from [`Scratch`].
struct KeyBuffers<'a, K> {
    keys: &'a mut Vec<K>,
    sorted: &'a mut Vec<K>,
    left: &'a mut [u32],
    left_f: &'a mut [f64],
}

impl SortKey for u32 {
    #[inline(always)]
    fn new(rank: u32, index: usize) -> Self {
        (rank << 16) | index as u32
    }
    #[inline(always)]
    fn rank(self) -> u32 {
        self >> 16
    }
    #[inline(always)]
    fn index(self) -> usize {
        (self & 0xffff) as usize
    }
    fn buffers(s: &mut Scratch) -> KeyBuffers<'_, Self> {
        KeyBuffers {
            keys: &mut s.keys32.0,
            sorted: &mut s.keys32.1,
            left: &mut s.left,
            left_f: &mut s.left_f,
        }
    }
}

impl SortKey for u64 {
    #[inline(always)]
    fn new(rank: u32, index: usize) -> Self {
        (u64::from(rank) << 32) | index as u64
    }
    #[inline(always)]
    fn rank(self) -> u32 {
        (self >> 32) as u32
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as u32 as usize
    }
    fn buffers(s: &mut Scratch) -> KeyBuffers<'_, Self> {
        KeyBuffers {
            keys: &mut s.keys64.0,
            sorted: &mut s.keys64.1,
            left: &mut s.left,
            left_f: &mut s.left_f,
        }
    }
}

/// The left side of a node's candidate splits, as samples (or bins) move from right to left in
/// increasing order of a feature.
#[derive(Debug)]
struct Scan<'a> {
    criterion: Criterion,
    left: &'a mut [u32],
    total: &'a [u32],
    wl: u64,
    total_w: u64,
    /// Gini: Σ left count², Σ right count² (integers, exact in `f64`).
    sl: f64,
    sr: f64,
    xlogx: &'a [f64],
}

impl<'a> Scan<'a> {
    fn new(
        criterion: Criterion,
        left: &'a mut [u32],
        total: &'a [u32],
        total_w: u64,
        xlogx: &'a [f64],
    ) -> Self {
        left.fill(0);
        let sr = total.iter().map(|&c| f64::from(c) * f64::from(c)).sum();
        Self {
            criterion,
            left,
            total,
            wl: 0,
            total_w,
            sl: 0.0,
            sr,
            xlogx,
        }
    }

    /// Moves weight `w` of class `c` to the left.
    #[inline(always)]
    fn add(&mut self, c: usize, w: u32) {
        let l = self.left[c];
        if self.criterion == Criterion::Gini {
            let (lf, rf, wf) = (f64::from(l), f64::from(self.total[c] - l), f64::from(w));
            gini_move(&mut self.sl, &mut self.sr, lf, rf, wf);
        }
        self.left[c] = l + w;
        self.wl += u64::from(w);
    }

    /// scikit-learn's `proxy_impurity_improvement` of the split here: larger is better; ranks
    /// the splits of one node as the impurity decrease does. Counts are integers (bootstrap
    /// weights), so both split finders compute the same value for the same partition.
    #[inline(always)]
    fn proxy(&self) -> f64 {
        let wr = self.total_w - self.wl;
        match self.criterion {
            Criterion::Gini => gini_proxy(self.sl, self.sr, self.wl as f64, wr as f64),
            Criterion::Entropy => {
                // -(wl·H_left + wr·H_right) in nats.
                let x = self.xlogx;
                let mut s = 0.0;
                for (&l, &t) in self.left.iter().zip(self.total) {
                    s += x[l as usize] + x[(t - l) as usize];
                }
                s - x[self.wl as usize] - x[wr as usize]
            }
        }
    }
}

/// Gini: moves weight `w` of a class with weight `l` on the left and `r` on the right to the
/// left, updating Σ left count² (`sl`) and Σ right count² (`sr`). Whole numbers, exact in `f64`.
#[inline(always)]
fn gini_move(sl: &mut f64, sr: &mut f64, l: f64, r: f64, w: f64) {
    *sl += (2.0 * l + w) * w;
    *sr -= (2.0 * r - w) * w;
}

/// Gini: scikit-learn's proxy of a split with Σ count² `sl`, `sr` and weights `wl`, `wr`.
#[inline(always)]
fn gini_proxy(sl: f64, sr: f64, wl: f64, wr: f64) -> f64 {
    sl / wl + sr / wr
}

impl Criterion {
    /// The impurity of a node with weighted class `counts` (Gini, or entropy in bits as in
    /// scikit-learn).
    pub(crate) fn impurity(self, counts: &[u32]) -> f64 {
        let w: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        if w == 0.0 {
            return 0.0;
        }
        match self {
            Criterion::Gini => {
                1.0 - counts
                    .iter()
                    .map(|&c| (f64::from(c) / w).powi(2))
                    .sum::<f64>()
            }
            Criterion::Entropy => -counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| {
                    let q = f64::from(c) / w;
                    q * q.log2()
                })
                .sum::<f64>(),
        }
    }
}

/// scikit-learn's threshold between adjacent distinct values `a < b`: their midpoint, or `a`
/// where the midpoint rounds to `b`. `a <= t < b`, so `x <= t` separates them.
#[inline]
fn midpoint(a: f64, b: f64) -> f64 {
    let t = a / 2.0 + b / 2.0;
    if t >= b || !t.is_finite() { a } else { t }
}

/// Grows tree `index` of a forest on the samples `rows` (rows of the prepared matrix) with
/// classes `labels`.
pub(crate) fn grow<R: Rank>(ctx: &Ctx<'_, R>, rows: &[u32], labels: &[u32], index: usize) -> Tree {
    let params = ctx.params;
    let k = ctx.n_classes;
    let p = ctx.n_features;
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(index as u64);

    // Bootstrap: n draws with replacement, as integer sample weights; samples drawn zero times
    // take no part (as in scikit-learn).
    let m = rows.len();
    let mut weights = vec![0u32; m];
    if params.bootstrap {
        for _ in 0..m {
            weights[rng.random_range(0..m)] += 1;
        }
    } else {
        weights.fill(1);
    }
    let slots: Vec<Slot> = (0..m)
        .filter(|&i| weights[i] > 0)
        .map(|i| Slot {
            row: rows[i],
            class: labels[i],
            weight: weights[i],
        })
        .collect();
    drop(weights);
    let mut root_counts = vec![0u32; k];
    for s in &slots {
        root_counts[s.class as usize] += s.weight;
    }
    let root = Pending {
        start: 0,
        end: slots.len(),
        depth: 0,
        parent: None,
        counts: root_counts,
    };
    let stride = k + usize::from(params.min_samples_leaf > 1);
    let mut grower = Grower {
        ctx,
        rng,
        features: (0..p as u32).collect(),
        scratch: Scratch {
            hist: vec![0; crate::data::MAX_BINS * stride],
            left: vec![0; k],
            left_f: vec![0.0; k],
            keys32: (Vec::new(), Vec::new()),
            keys64: (Vec::new(), Vec::new()),
        },
        slots,
        nodes: Vec::new(),
        values: Vec::new(),
        importances: vec![0.0; p],
        local: Vec::new(),
    };
    let global = View {
        ranks: ctx.ranks,
        row_stride: p,
        col_stride: 1,
        local: false,
    };
    grower.grow_subtree(root, global);
    let mut importances = grower.importances;
    let sum: f64 = importances.iter().sum();
    if sum > 0.0 {
        for v in &mut importances {
            *v /= sum;
        }
    }
    Tree {
        nodes: grower.nodes,
        values: grower.values,
        importances,
    }
}

/// The state of one tree as it grows.
#[derive(Debug)]
struct Grower<'c, 'a, R> {
    ctx: &'c Ctx<'a, R>,
    rng: ChaCha8Rng,
    /// A permutation of the features; each node draws from it without replacement.
    features: Vec<u32>,
    scratch: Scratch,
    slots: Vec<Slot>,
    nodes: Vec<Node>,
    values: Vec<f64>,
    importances: Vec<f64>,
    /// The column-major copy of a small subtree's ranks (kept for its allocation).
    local: Vec<R>,
}

/// Copies the prepared rows of `slots` into `local`, column-major (`local[f * n + j]` is
/// feature `f` of the `j`-th slot, `n = slots.len()`), and renumbers the slots `0..n`.
///
/// Rows go in blocks of [`TRANSPOSE_BLOCK`]: for each feature, a block writes that many
/// adjacent ranks (one cache line) while its rows stay in L1, instead of one scattered write
/// per rank and feature.
fn transpose_rows<R: Rank>(ranks: &[R], p: usize, slots: &mut [Slot], local: &mut [R]) {
    let n = slots.len();
    debug_assert_eq!(local.len(), n * p);
    for (b, block) in slots.chunks_mut(TRANSPOSE_BLOCK).enumerate() {
        let j0 = b * TRANSPOSE_BLOCK;
        let mut rows: [&[R]; TRANSPOSE_BLOCK] = [&[]; TRANSPOSE_BLOCK];
        for (row, s) in rows.iter_mut().zip(block.iter()) {
            *row = &ranks[s.row as usize * p..(s.row as usize + 1) * p];
        }
        let rows = &rows[..block.len()];
        for f in 0..p {
            let out = &mut local[f * n + j0..f * n + j0 + rows.len()];
            for (o, row) in out.iter_mut().zip(rows) {
                *o = row[f];
            }
        }
        for (j, s) in block.iter_mut().enumerate() {
            s.row = (j0 + j) as u32;
        }
    }
}

/// Rows a [`transpose_rows`] block copies together (16 `u16` ranks: half a cache line; 8, 16
/// and 32 measured alike, 64 slower).
const TRANSPOSE_BLOCK: usize = 16;

impl<R: Rank> Grower<'_, '_, R> {
    /// Grows `root` and every node below it, depth first (left before right), reading ranks
    /// through `view`.
    ///
    /// A node of at most `exact_below` samples that is to be split hands its subtree a
    /// column-major copy of its samples' ranks (every feature: read row by row, a stream). Deep
    /// nodes' samples are scattered over the prepared matrix, so scanning them in place costs a
    /// cache miss per sample and feature; in the copy (`n × features`, 2 bytes each: 64 KiB for
    /// 64 samples of 507 features) a subtree's scans hit L1/L2. The nodes, their order and the
    /// random draws are the same either way.
    fn grow_subtree(&mut self, root: Pending, view: View<'_, R>) {
        let params = self.ctx.params;
        let p = self.ctx.n_features;
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            let n = node.end - node.start;
            let pure = node.counts.iter().filter(|&&c| c > 0).count() <= 1;
            let leaf = pure
                || node.depth >= params.max_depth
                || n < params.min_samples_split
                || n < 2 * params.min_samples_leaf;
            if !leaf
                && !view.local
                && params.local_copy
                && n <= params.exact_below
                && n * p <= LOCAL_MAX
            {
                let mut local = std::mem::take(&mut self.local);
                local.clear();
                local.resize(n * p, self.ctx.ranks[0]);
                transpose_rows(
                    self.ctx.ranks,
                    p,
                    &mut self.slots[node.start..node.end],
                    &mut local,
                );
                let copy = View {
                    ranks: &local,
                    row_stride: 1,
                    col_stride: n,
                    local: true,
                };
                self.grow_subtree(node, copy);
                self.local = local;
                continue;
            }
            self.grow_node(node, leaf, view, &mut stack);
        }
    }

    /// Makes `node` a leaf or splits it, pushing its children.
    fn grow_node(
        &mut self,
        node: Pending,
        leaf: bool,
        view: View<'_, R>,
        stack: &mut Vec<Pending>,
    ) {
        let k = self.ctx.n_classes;
        let id = self.nodes.len();
        match node.parent {
            Some((parent, true)) => self.nodes[parent].left = id as u32,
            Some((parent, false)) => self.nodes[parent].right = id as u32,
            None => {}
        }
        let split = if leaf {
            None
        } else {
            find_split(
                self.ctx,
                view,
                &self.slots[node.start..node.end],
                &node.counts,
                &mut self.rng,
                &mut self.features,
                &mut self.scratch,
            )
        };
        let Some((feature, lo, threshold)) = split else {
            let w: f64 = node.counts.iter().map(|&c| f64::from(c)).sum();
            self.nodes.push(Node {
                threshold: 0.0,
                feature: LEAF,
                left: (self.values.len() / k) as u32,
                right: 0,
            });
            self.values
                .extend(node.counts.iter().map(|&c| f64::from(c) / w));
            return;
        };
        self.nodes.push(Node {
            threshold,
            feature: feature as u32,
            left: 0,
            right: 0,
        });
        // Partition the node's samples in place: left (x <= threshold, rank <= lo) first.
        let part = &mut self.slots[node.start..node.end];
        let (mut i, mut j) = (0, part.len());
        while i < j {
            if view.rank(feature, part[i].row) <= lo {
                i += 1;
            } else {
                j -= 1;
                part.swap(i, j);
            }
        }
        let mid = node.start + i;
        debug_assert!(mid > node.start && mid < node.end);
        let mut left = vec![0u32; k];
        for s in &self.slots[node.start..mid] {
            left[s.class as usize] += s.weight;
        }
        let right: Vec<u32> = node
            .counts
            .iter()
            .zip(&left)
            .map(|(&t, &l)| t - l)
            .collect();
        let crit = self.ctx.params.criterion;
        let w = |c: &[u32]| c.iter().map(|&c| f64::from(c)).sum::<f64>();
        self.importances[feature] += w(&node.counts) * crit.impurity(&node.counts)
            - w(&left) * crit.impurity(&left)
            - w(&right) * crit.impurity(&right);
        stack.push(Pending {
            start: mid,
            end: node.end,
            depth: node.depth + 1,
            parent: Some((id, false)),
            counts: right,
        });
        stack.push(Pending {
            start: node.start,
            end: mid,
            depth: node.depth + 1,
            parent: Some((id, true)),
            counts: left,
        });
    }
}

/// scikit-learn's best split of a node: draws features without replacement, evaluates the
/// first `max_features` of them, and goes on drawing while none of those drawn gave a valid
/// split (constant features count as drawn). `(feature, largest rank on the left, threshold)`,
/// or none: a leaf.
fn find_split<R: Rank>(
    ctx: &Ctx<'_, R>,
    view: View<'_, R>,
    slots: &[Slot],
    counts: &[u32],
    rng: &mut ChaCha8Rng,
    features: &mut [u32],
    scratch: &mut Scratch,
) -> Option<(usize, u32, f64)> {
    let params = ctx.params;
    let p = ctx.n_features;
    let exact = slots.len() <= params.exact_below;
    let total_w: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut best: Option<(f64, usize, Found)> = None;
    for i in 0..p {
        if i >= params.max_features && best.is_some() {
            break;
        }
        let j = rng.random_range(i..p);
        features.swap(i, j);
        let f = features[i] as usize;
        let found = if exact || view.local {
            exact_scan(ctx, view, slots, counts, total_w, f, scratch)
        } else {
            hist_scan(ctx, view, slots, counts, total_w, f, scratch)
        };
        let proxy = match found {
            Found::Constant | Found::NoValid => continue,
            Found::Rows { proxy, .. } | Found::Bin { proxy, .. } => proxy,
        };
        if best.is_none_or(|(b, _, _)| proxy > b) {
            best = Some((proxy, f, found));
        }
    }
    let (_, f, found) = best?;
    let (lo, hi) = match found {
        Found::Rows { lo, hi, .. } => (view.rank(f, lo), view.rank(f, hi)),
        Found::Bin { bin, .. } => {
            // The same partition of the node on raw values: between the largest value of the
            // node at or below the bin and the smallest above it.
            let codes = &ctx.codes[f * ctx.n_data..(f + 1) * ctx.n_data];
            let (mut lo, mut hi) = (0, u32::MAX);
            for s in slots {
                let r = view.rank(f, s.row);
                if codes[s.row as usize] <= bin {
                    lo = lo.max(r);
                } else {
                    hi = hi.min(r);
                }
            }
            (lo, hi)
        }
        Found::Constant | Found::NoValid => unreachable!("only splits are kept"),
    };
    let values = &ctx.values[ctx.value_start[f]..ctx.value_start[f + 1]];
    Some((f, lo, midpoint(values[lo as usize], values[hi as usize])))
}

/// Keys from which [`sort_keys`] radix-sorts; fewer go to a comparison sort.
const RADIX_MIN: usize = 128;

/// Sorts the exact scan's keys (built in increasing index order).
///
/// Large nodes are sorted by a stable least-significant-digit radix sort over the bytes of the
/// rank that vary (ranks below 65,536 take two passes of 256 buckets): O(n) per pass instead of
/// O(n log n) compares. The indices come in increasing order, so sorting by rank alone, stably,
/// sorts the keys: the result is the comparison sort's.
fn sort_keys<K: SortKey>(keys: &mut Vec<K>, tmp: &mut Vec<K>) {
    let n = keys.len();
    if n < RADIX_MIN {
        keys.sort_unstable();
        return;
    }
    let (mut lo, mut hi) = (u32::MAX, 0);
    for &k in keys.iter() {
        lo = lo.min(k.rank());
        hi = hi.max(k.rank());
    }
    // Bytes of the rank at or above the highest bit where the smallest and largest differ
    // need sorting; those above it are equal in every key.
    let varying = 32 - (lo ^ hi).leading_zeros() as usize;
    tmp.clear();
    tmp.resize(n, K::default());
    for byte in 0..varying.div_ceil(8) {
        let shift = 8 * byte;
        let mut count = [0usize; 256];
        for &k in keys.iter() {
            count[((k.rank() >> shift) & 0xff) as usize] += 1;
        }
        if count.contains(&n) {
            continue;
        }
        let mut at = 0;
        for c in &mut count {
            let here = *c;
            *c = at;
            at += here;
        }
        for &k in keys.iter() {
            let b = ((k.rank() >> shift) & 0xff) as usize;
            tmp[count[b]] = k;
            count[b] += 1;
        }
        std::mem::swap(keys, tmp);
    }
    debug_assert!(keys.is_sorted());
}

/// The best split of feature `f` by sorting the node's values (small nodes).
fn exact_scan<R: Rank>(
    ctx: &Ctx<'_, R>,
    view: View<'_, R>,
    slots: &[Slot],
    counts: &[u32],
    total_w: u64,
    f: usize,
    scratch: &mut Scratch,
) -> Found {
    if R::WIDTH <= 16 && slots.len() <= 1 << 16 {
        exact_scan_with::<R, u32>(ctx, view, slots, counts, total_w, f, scratch)
    } else {
        exact_scan_with::<R, u64>(ctx, view, slots, counts, total_w, f, scratch)
    }
}

/// [`exact_scan`] with keys of type `K`.
fn exact_scan_with<R: Rank, K: SortKey>(
    ctx: &Ctx<'_, R>,
    view: View<'_, R>,
    slots: &[Slot],
    counts: &[u32],
    total_w: u64,
    f: usize,
    scratch: &mut Scratch,
) -> Found {
    let KeyBuffers {
        keys,
        sorted,
        left,
        left_f,
    } = K::buffers(scratch);
    keys.clear();
    keys.extend(
        slots
            .iter()
            .enumerate()
            .map(|(i, s)| K::new(view.rank(f, s.row), i)),
    );
    sort_keys(keys, sorted);
    let n = keys.len();
    let rank = |i: usize| keys[i].rank();
    if rank(0) == rank(n - 1) {
        return Found::Constant;
    }
    let msl = ctx.params.min_samples_leaf;
    let best = if ctx.params.criterion == Criterion::Gini {
        gini_scan(keys, slots, counts, total_w, msl, left_f)
    } else {
        let mut scan = Scan::new(ctx.params.criterion, left, counts, total_w, ctx.xlogx);
        let mut best: Option<(f64, usize)> = None;
        for i in 0..n - 1 {
            let s = &slots[keys[i].index()];
            scan.add(s.class as usize, s.weight);
            if rank(i + 1) == rank(i) || i + 1 < msl || n - i - 1 < msl {
                continue;
            }
            let proxy = scan.proxy();
            if best.is_none_or(|(b, _)| proxy > b) {
                best = Some((proxy, i));
            }
        }
        best
    };
    match best {
        None => Found::NoValid,
        Some((proxy, i)) => Found::Rows {
            proxy,
            lo: slots[keys[i].index()].row,
            hi: slots[keys[i + 1].index()].row,
        },
    }
}

/// [`exact_scan`]'s loop for Gini, the forest's hot path: the best `(proxy, i)` of the splits
/// after sorted key `i`. The arithmetic is [`Scan`]'s ([`gini_move`], [`gini_proxy`]), so the chosen
/// split is the same; counts are kept in `f64` (whole numbers, exact), which spares the loop the
/// integer conversions and the per-sample criterion test.
fn gini_scan<K: SortKey>(
    keys: &[K],
    slots: &[Slot],
    counts: &[u32],
    total_w: u64,
    msl: usize,
    left: &mut [f64],
) -> Option<(f64, usize)> {
    let n = keys.len();
    left.fill(0.0);
    let mut sl = 0.0;
    let mut sr: f64 = counts.iter().map(|&c| f64::from(c) * f64::from(c)).sum();
    let total_wf = total_w as f64;
    let mut wl = 0.0;
    let (mut best, mut at) = (f64::NEG_INFINITY, usize::MAX);
    for i in 0..n - 1 {
        let s = slots[keys[i].index()];
        let c = s.class as usize;
        let (lf, wf) = (left[c], f64::from(s.weight));
        let rf = f64::from(counts[c]) - lf;
        gini_move(&mut sl, &mut sr, lf, rf, wf);
        left[c] = lf + wf;
        wl += wf;
        if keys[i + 1].rank() == keys[i].rank() || i + 1 < msl || n - i - 1 < msl {
            continue;
        }
        let proxy = gini_proxy(sl, sr, wl, total_wf - wl);
        if proxy > best {
            (best, at) = (proxy, i);
        }
    }
    (at != usize::MAX).then_some((best, at))
}

/// The best split of feature `f` among its bin boundaries, from a histogram of weighted class
/// counts per bin (large nodes).
fn hist_scan<R: Rank>(
    ctx: &Ctx<'_, R>,
    view: View<'_, R>,
    slots: &[Slot],
    counts: &[u32],
    total_w: u64,
    f: usize,
    scratch: &mut Scratch,
) -> Found {
    let k = ctx.n_classes;
    let msl = ctx.params.min_samples_leaf;
    let distinct = msl > 1;
    let stride = k + usize::from(distinct);
    let nb = ctx.n_bins[f] as usize;
    let codes = &ctx.codes[f * ctx.n_data..(f + 1) * ctx.n_data];
    let hist = &mut scratch.hist[..nb * stride];
    hist.fill(0);
    if distinct {
        for s in slots {
            let b = codes[s.row as usize] as usize * stride;
            hist[b + s.class as usize] += s.weight;
            hist[b + k] += 1;
        }
    } else {
        for s in slots {
            hist[codes[s.row as usize] as usize * stride + s.class as usize] += s.weight;
        }
    }
    let occupied = |b: usize| hist[b * stride..b * stride + k].iter().any(|&c| c > 0);
    let Some(last) = (0..nb).rev().find(|&b| occupied(b)) else {
        return Found::Constant;
    };
    let first = (0..nb).find(|&b| occupied(b)).expect("a bin is occupied");
    if first == last {
        // One bin: constant, unless the bin holds several distinct values; then the exact scan
        // decides.
        return if ctx.multi[f] {
            exact_scan(ctx, view, slots, counts, total_w, f, scratch)
        } else {
            Found::Constant
        };
    }
    let n = slots.len();
    let mut scan = Scan::new(
        ctx.params.criterion,
        &mut scratch.left,
        counts,
        total_w,
        ctx.xlogx,
    );
    let mut nl = 0usize;
    let mut best: Option<(f64, usize)> = None;
    for b in first..last {
        let h = &hist[b * stride..(b + 1) * stride];
        let mut occupied = false;
        for (c, &w) in h[..k].iter().enumerate() {
            if w > 0 {
                scan.add(c, w);
                occupied = true;
            }
        }
        if !occupied {
            continue;
        }
        if distinct {
            nl += h[k] as usize;
            if nl < msl || n - nl < msl {
                continue;
            }
        }
        let proxy = scan.proxy();
        if best.is_none_or(|(p, _)| proxy > p) {
            best = Some((proxy, b));
        }
    }
    match best {
        None => Found::NoValid,
        Some((proxy, b)) => Found::Bin {
            proxy,
            bin: b as u8,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The radix sort gives the comparison sort's order, for ranks that vary in one, two or
    /// four bytes, with repeated ranks, and below and above [`RADIX_MIN`].
    #[test]
    fn radix_sorted_keys_equal_the_comparison_sort() {
        fn check<K: SortKey + std::fmt::Debug>(cases: &[(usize, u32)], max_base: u32) {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut tmp = Vec::new();
            for &(n, ranks) in cases {
                let base = rng.random_range(0..max_base);
                let mut keys: Vec<K> = (0..n)
                    .map(|i| K::new(base + rng.random_range(0..ranks), i))
                    .collect();
                let mut expected = keys.clone();
                expected.sort_unstable();
                sort_keys(&mut keys, &mut tmp);
                assert_eq!(keys, expected, "{n} keys, {ranks} ranks");
                for (i, k) in keys.iter().enumerate().skip(1) {
                    assert!(keys[i - 1].rank() <= k.rank(), "sorted by rank");
                }
            }
        }
        check::<u64>(
            &[
                (10, 5),
                (RADIX_MIN, 200),
                (700, 3),
                (700, 255),
                (1024, 60_000),
                (3000, 1 << 31),
            ],
            1 << 20,
        );
        // 16-bit ranks and indices (ranks up to 65,535, up to 65,536 samples).
        check::<u32>(
            &[
                (10, 5),
                (RADIX_MIN, 200),
                (700, 3),
                (700, 255),
                (1024, 60_000),
                (1 << 16, 1 << 15),
            ],
            1 << 15,
        );
    }

    /// A key gives back the rank and index it was made of, at the widest values of its type.
    #[test]
    fn sort_keys_hold_rank_and_index() {
        for (rank, index) in [(0, 0), (65_535, 65_535), (1, 65_534), (40_000, 7)] {
            let k = <u32 as SortKey>::new(rank, index);
            assert_eq!((k.rank(), k.index()), (rank, index));
        }
        for (rank, index) in [(0, 0), (u32::MAX, u32::MAX as usize), (70_000, 1 << 20)] {
            let k = <u64 as SortKey>::new(rank, index);
            assert_eq!((k.rank(), k.index()), (rank, index));
        }
    }

    /// The blocked copy is the transpose of the slots' rows, and the slots are renumbered.
    #[test]
    fn transposed_rows_are_the_slots_rows_column_major() {
        let (rows, p) = (50, 7);
        let ranks: Vec<u16> = (0..rows * p).map(|v| v as u16).collect();
        for n in [1, TRANSPOSE_BLOCK, TRANSPOSE_BLOCK + 3, 37] {
            let picked: Vec<u32> = (0..n as u32).map(|j| (j * 17 + 5) % rows as u32).collect();
            let mut slots: Vec<Slot> = picked
                .iter()
                .map(|&row| Slot {
                    row,
                    class: 0,
                    weight: 1,
                })
                .collect();
            let mut local = vec![0u16; n * p];
            transpose_rows(&ranks, p, &mut slots, &mut local);
            for (j, &row) in picked.iter().enumerate() {
                assert_eq!(slots[j].row, j as u32);
                for f in 0..p {
                    assert_eq!(local[f * n + j], ranks[row as usize * p + f]);
                }
            }
        }
    }
}
