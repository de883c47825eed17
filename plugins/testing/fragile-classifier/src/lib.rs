//! Test fixture: a classifier that fits (the class frequencies of its training labels), saves
//! and loads its models — so it can back an identifier — and panics whenever it predicts, to
//! prove that a classifier failing during live identification gives a failed row for that
//! identifier while ingest and the other identifiers go on.

use lrid_plugin::{Classifier, Matrix, OwnedMatrix, serde_json};

#[derive(Debug)]
pub struct Fragile {
    priors: Vec<f64>,
}

impl Classifier for Fragile {
    type Data = OwnedMatrix;
    const CAN_SAVE: bool = true;

    fn prepare(x: Matrix<'_>) -> Result<OwnedMatrix, String> {
        Ok(x.to_owned())
    }

    fn fit(
        _config: &serde_json::Value,
        _data: &OwnedMatrix,
        _rows: &[u32],
        labels: &[u32],
        n_classes: usize,
    ) -> Result<Self, String> {
        let mut priors = vec![0.0; n_classes];
        for &l in labels {
            priors[l as usize] += 1.0 / labels.len() as f64;
        }
        Ok(Fragile { priors })
    }

    fn predict_proba(&self, _x: Matrix<'_>) -> Result<Vec<f64>, String> {
        panic!("deliberate panic in predict")
    }

    fn n_classes(&self) -> usize {
        self.priors.len()
    }

    fn save(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&self.priors).map_err(|e| e.to_string())
    }

    fn load(bytes: &[u8]) -> Result<Self, String> {
        let priors: Vec<f64> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Fragile { priors })
    }
}

lrid_plugin::export_classifier!(Fragile, name = "testing-fragile", version = "0.0.1");
