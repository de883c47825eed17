//! The saved-model format (version 1), little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `LRIDC1D\0` |
//! | 4 | format version, `u32` (1) |
//! | 4 + n | header length n, `u32`, then the header: a JSON object `{"config": {…every key…}, "cols", "categorical", "points", "n_classes"}` |
//! | 4 × (8 + 4·m) | the four weight tensors (convolution kernel F × C × k, its bias F, dense kernel classes × D, its bias classes), each as a value count m (`u64`) and m `f32` |
//!
//! Nothing follows. The tensors' shapes follow from the header; [`load`] checks every count.

use lrid_plugin::serde_json;

use crate::{Config, Conv1d, Shape};

/// The first bytes of a saved Conv1D model.
pub const MAGIC: &[u8; 8] = b"LRIDC1D\0";
/// The format version [`save`] writes and [`load`] reads.
pub const VERSION: u32 = 1;

/// The model as bytes.
pub fn save(model: &Conv1d) -> Vec<u8> {
    let shape = model.shape();
    let header = serde_json::json!({
        "config": model.config().to_json(),
        "cols": shape.cols,
        "categorical": shape.categorical,
        "points": shape.points,
        "n_classes": model.n_classes,
    })
    .to_string();
    let weights = model.weights();
    let mut out = Vec::with_capacity(
        16 + header.len() + weights.iter().map(|w| 8 + 4 * w.len()).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for w in weights {
        out.extend_from_slice(&(w.len() as u64).to_le_bytes());
        for v in w {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Reads bytes off the front of a saved model.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("saved conv1d model: truncated in its {what}"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
}

/// A model from [`save`]'s bytes.
pub fn load(bytes: &[u8]) -> Result<Conv1d, String> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len(), "magic").ok() != Some(MAGIC.as_slice()) {
        return Err("not a saved conv1d model (bad magic)".into());
    }
    let version = r.u32("version")?;
    if version != VERSION {
        return Err(format!(
            "a saved conv1d model of format {version}; this plugin reads format {VERSION}"
        ));
    }
    let len = r.u32("header length")? as usize;
    let header: serde_json::Value = serde_json::from_slice(r.take(len, "header")?)
        .map_err(|e| format!("saved conv1d model: unreadable header: {e}"))?;
    let config =
        Config::from_json(&header["config"]).map_err(|e| format!("saved conv1d model: {e}"))?;
    let num = |key: &str| {
        header[key]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("saved conv1d model: '{key}' is missing from the header"))
    };
    let shape = Shape {
        cols: num("cols")?,
        categorical: num("categorical")?,
        points: num("points")?,
    };
    let n_classes = num("n_classes")?;
    let mut weights: [Vec<f32>; 4] = Default::default();
    for w in &mut weights {
        let m = r.u64("weights")? as usize;
        let raw = r.take(
            m.checked_mul(4).ok_or("saved conv1d model: bad count")?,
            "weights",
        )?;
        *w = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
    }
    if !r.0.is_empty() {
        return Err(format!(
            "saved conv1d model: {} bytes after its weights",
            r.0.len()
        ));
    }
    Conv1d::from_parts(config, shape, n_classes, weights)
        .map_err(|e| format!("saved conv1d model: {e}"))
}
