//! Example classifier plugin, not built in: k-nearest neighbours. It shows what a classifier
//! plugin is — a `cdylib` crate that implements [`lrid_plugin::Classifier`] and calls
//! [`lrid_plugin::export_classifier!`] — and is what the tests drop into a running daemon's
//! plugins folder to use with `lrid analyze --classifiers knn` without a restart.
//!
//! In: a training matrix (prepared = kept as it is), rows and labels to fit on. Out: class
//! probabilities = the (optionally distance-weighted) class fractions among the `k` training
//! rows nearest in Euclidean distance (ties in distance: the lower row first). Configuration
//! (JSON, all optional): `k` (5), `weights` ("uniform" | "distance"), `seed` (ignored: nothing
//! is drawn). Grids: `fast` = k ∈ {5}, `paper` = k ∈ {1, 5, 15} × weights ∈ {uniform,
//! distance}. Saves its models as JSON.

use lrid_plugin::{
    Classifier, Matrix, OwnedMatrix, config_known_keys, config_str, config_usize, serde_json,
};

/// A fitted k-nearest-neighbours model: the training rows it votes with.
#[derive(Debug, Clone, PartialEq)]
pub struct Knn {
    k: usize,
    distance_weighted: bool,
    n_classes: usize,
    cols: usize,
    /// Training rows, row-major.
    x: Vec<f64>,
    y: Vec<u32>,
}

impl Knn {
    fn votes(&self, row: &[f64]) -> Vec<f64> {
        let n = self.y.len();
        let mut d: Vec<(f64, usize)> = (0..n)
            .map(|i| {
                let t = &self.x[i * self.cols..(i + 1) * self.cols];
                let s: f64 = t.iter().zip(row).map(|(a, b)| (a - b) * (a - b)).sum();
                (s, i)
            })
            .collect();
        let k = self.k.min(n);
        d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut p = vec![0.0; self.n_classes];
        for &(s, i) in &d[..k] {
            let w = if self.distance_weighted {
                1.0 / (s.sqrt() + 1e-12)
            } else {
                1.0
            };
            p[self.y[i] as usize] += w;
        }
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= total);
        p
    }
}

impl Classifier for Knn {
    type Data = OwnedMatrix;

    const GRIDS: &'static std::ffi::CStr = c"{\"fast\": [{\"k\": 5}], \"paper\": [{\"k\": 1, \"weights\": \"uniform\"}, {\"k\": 1, \"weights\": \"distance\"}, {\"k\": 5, \"weights\": \"uniform\"}, {\"k\": 5, \"weights\": \"distance\"}, {\"k\": 15, \"weights\": \"uniform\"}, {\"k\": 15, \"weights\": \"distance\"}]}";
    const CAN_SAVE: bool = true;

    fn prepare(x: Matrix<'_>) -> Result<OwnedMatrix, String> {
        Ok(x.to_owned())
    }

    fn fit(
        config: &serde_json::Value,
        data: &OwnedMatrix,
        rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String> {
        config_known_keys(config, &["k", "weights", "seed"])?;
        let k = config_usize(config, "k", 5)?;
        if k == 0 {
            return Err("configuration key 'k' must be at least 1".into());
        }
        let distance_weighted = match config_str(config, "weights", "uniform")? {
            "uniform" => false,
            "distance" => true,
            other => {
                return Err(format!(
                    "configuration key 'weights' must be \"uniform\" or \"distance\"; got \"{other}\""
                ));
            }
        };
        if rows.is_empty() {
            return Err("no training rows".into());
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= data.rows()) {
            return Err(format!(
                "row {r} is not in the prepared matrix of {} rows",
                data.rows()
            ));
        }
        let sub = data.select_rows(rows);
        Ok(Knn {
            k,
            distance_weighted,
            n_classes,
            cols: data.cols(),
            x: sub.into_values(),
            y: labels.to_vec(),
        })
    }

    fn predict_proba(&self, x: Matrix<'_>) -> Result<Vec<f64>, String> {
        if x.cols() != self.cols {
            return Err(format!(
                "the model was fitted on {} features; got {}",
                self.cols,
                x.cols()
            ));
        }
        Ok((0..x.rows()).flat_map(|i| self.votes(x.row(i))).collect())
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn save(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&serde_json::json!({
            "format": 1,
            "k": self.k,
            "distance_weighted": self.distance_weighted,
            "n_classes": self.n_classes,
            "cols": self.cols,
            "x": self.x,
            "y": self.y,
        }))
        .map_err(|e| e.to_string())
    }

    fn load(bytes: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a saved knn model: {e}"))?;
        if v["format"] != 1 {
            return Err(format!(
                "not a saved knn model of format 1: {}",
                v["format"]
            ));
        }
        let num = |k: &str| {
            v[k].as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| format!("saved knn model: '{k}' is missing"))
        };
        let model = Knn {
            k: num("k")?,
            distance_weighted: v["distance_weighted"].as_bool().unwrap_or(false),
            n_classes: num("n_classes")?,
            cols: num("cols")?,
            x: serde_json::from_value(v["x"].clone()).map_err(|e| e.to_string())?,
            y: serde_json::from_value(v["y"].clone()).map_err(|e| e.to_string())?,
        };
        if model.cols == 0 || model.x.len() != model.y.len() * model.cols {
            return Err("saved knn model: its rows and labels do not match".into());
        }
        Ok(model)
    }
}

lrid_plugin::export_classifier!(Knn, name = "knn", version = "1.0.0");

#[cfg(test)]
mod tests {
    use super::*;
    use lrid_plugin::FeatureLayout;

    fn data() -> OwnedMatrix {
        // Two clusters: class 0 near 0, class 1 near 10.
        let values = vec![0.0, 0.1, 0.2, 0.3, 10.0, 10.1, 10.2, 9.9];
        OwnedMatrix::new(values, 8, 1, FeatureLayout::default()).unwrap()
    }

    #[test]
    fn neighbours_vote_and_models_round_trip() {
        let d = data();
        let config = serde_json::json!({"k": 3});
        let m = Knn::fit(
            &config,
            &d,
            &[0, 1, 2, 3, 4, 5, 6, 7],
            &[0, 0, 0, 0, 1, 1, 1, 1],
            2,
        )
        .unwrap();
        let x = [0.05, 9.5];
        let p = m
            .predict_proba(Matrix::new(&x, 2, 1, FeatureLayout::default()).unwrap())
            .unwrap();
        assert_eq!(p, vec![1.0, 0.0, 0.0, 1.0]);
        let back = Knn::load(&m.save().unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(Knn::load(b"{}").is_err());
    }

    #[test]
    fn bad_configurations_are_refused() {
        let d = data();
        let e = Knn::fit(&serde_json::json!({"kk": 3}), &d, &[0], &[0], 2).unwrap_err();
        assert!(e.contains("unknown configuration key 'kk'"), "{e}");
        let e = Knn::fit(&serde_json::json!({"weights": "x"}), &d, &[0], &[0], 2).unwrap_err();
        assert!(e.contains("'weights'"), "{e}");
    }
}
