//! The saved-model format, little-endian throughout:
//!
//! ```text
//! magic    8 bytes  "LRID-RF\0"
//! version  u32      FORMAT_VERSION
//! classes  u32, features u32, trees u32
//! per tree:
//!   nodes u32, leaves u32
//!   nodes × (feature u32, left u32, right u32, threshold f64)   leaf: feature = u32::MAX,
//!                                                               left = its leaf, right = 0
//!   leaves × classes × f64                                      class fractions
//!   features × f64                                              importances
//! ```
//!
//! Loading checks every index (children after their parent, features and leaves in range) so
//! that a loaded model can neither panic nor loop in prediction.

use crate::RandomForest;
use crate::tree::{LEAF, Node, Tree};

const MAGIC: &[u8; 8] = b"LRID-RF\0";
/// The version of the format written; loading refuses others.
pub const FORMAT_VERSION: u32 = 1;

const NODE_BYTES: usize = 4 + 4 + 4 + 8;

pub(crate) fn save(forest: &RandomForest) -> Vec<u8> {
    let k = forest.n_classes;
    let p = forest.n_features;
    let size: usize = 8
        + 16
        + forest
            .trees
            .iter()
            .map(|t| 8 + t.nodes.len() * NODE_BYTES + (t.values.len() + p) * 8)
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    for v in [
        FORMAT_VERSION,
        k as u32,
        p as u32,
        forest.trees.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for tree in &forest.trees {
        out.extend_from_slice(&(tree.nodes.len() as u32).to_le_bytes());
        out.extend_from_slice(&((tree.values.len() / k) as u32).to_le_bytes());
        for node in &tree.nodes {
            out.extend_from_slice(&node.feature.to_le_bytes());
            out.extend_from_slice(&node.left.to_le_bytes());
            out.extend_from_slice(&node.right.to_le_bytes());
            out.extend_from_slice(&node.threshold.to_le_bytes());
        }
        for v in tree.values.iter().chain(&tree.importances) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    debug_assert_eq!(out.len(), size);
    out
}

/// Reads values off the front of the saved bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if self.bytes.len() - self.at < n {
            return Err(format!(
                "a saved random forest is truncated: {what} needs {n} bytes at offset {}, \
                 {} are left",
                self.at,
                self.bytes.len() - self.at
            ));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn f64(&mut self, what: &str) -> Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// Checks that `count` items of `size` bytes can still follow (before allocating them).
    fn room(&self, count: usize, size: usize, what: &str) -> Result<(), String> {
        let left = self.bytes.len() - self.at;
        if count.checked_mul(size).is_none_or(|n| n > left) {
            return Err(format!(
                "a saved random forest is truncated or corrupt: {count} {what} do not fit in \
                 the {left} bytes left at offset {}",
                self.at
            ));
        }
        Ok(())
    }
}

pub(crate) fn load(bytes: &[u8]) -> Result<RandomForest, String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(
            "these bytes are not a saved lrid random forest (the magic \"LRID-RF\" is missing)"
                .into(),
        );
    }
    let mut r = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let version = r.u32("the format version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "a saved random forest of format version {version}; this plugin reads version \
             {FORMAT_VERSION}"
        ));
    }
    let k = r.u32("the number of classes")? as usize;
    let p = r.u32("the number of features")? as usize;
    let n_trees = r.u32("the number of trees")? as usize;
    if k == 0 || p == 0 || n_trees == 0 {
        return Err(format!(
            "a saved random forest with {k} classes, {p} features and {n_trees} trees is corrupt"
        ));
    }
    r.room(n_trees, 8, "trees")?;
    let mut trees = Vec::with_capacity(n_trees);
    for t in 0..n_trees {
        let n_nodes = r.u32("a tree's node count")? as usize;
        let n_leaves = r.u32("a tree's leaf count")? as usize;
        if n_nodes == 0 || n_leaves == 0 || n_leaves > n_nodes {
            return Err(format!(
                "tree {t} of a saved random forest has {n_nodes} nodes and {n_leaves} leaves"
            ));
        }
        r.room(n_nodes, NODE_BYTES, "nodes")?;
        let mut nodes = Vec::with_capacity(n_nodes);
        for i in 0..n_nodes {
            let node = Node {
                feature: r.u32("a node")?,
                left: r.u32("a node")?,
                right: r.u32("a node")?,
                threshold: r.f64("a node")?,
            };
            let ok = if node.feature == LEAF {
                (node.left as usize) < n_leaves
            } else {
                (node.feature as usize) < p
                    && (i + 1..n_nodes).contains(&(node.left as usize))
                    && (i + 1..n_nodes).contains(&(node.right as usize))
                    && !node.threshold.is_nan()
            };
            if !ok {
                return Err(format!(
                    "node {i} of tree {t} of a saved random forest is corrupt: {node:?}"
                ));
            }
            nodes.push(node);
        }
        r.room(n_leaves * k + p, 8, "values")?;
        let mut values = Vec::with_capacity(n_leaves * k);
        for _ in 0..n_leaves * k {
            values.push(r.f64("a leaf's class fractions")?);
        }
        let mut importances = Vec::with_capacity(p);
        for _ in 0..p {
            importances.push(r.f64("an importance")?);
        }
        if values.iter().chain(&importances).any(|v| !v.is_finite()) {
            return Err(format!(
                "tree {t} of a saved random forest holds a non-finite value"
            ));
        }
        trees.push(Tree {
            nodes,
            values,
            importances,
        });
    }
    if r.at != bytes.len() {
        return Err(format!(
            "a saved random forest has {} bytes after its last tree",
            bytes.len() - r.at
        ));
    }
    Ok(RandomForest {
        n_classes: k,
        n_features: p,
        trees,
    })
}
