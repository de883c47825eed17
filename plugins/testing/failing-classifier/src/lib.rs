//! Test fixture: a classifier that panics in `fit` (or, configured with `{"fail": true}`,
//! returns an error), to prove that a failing classifier fails its own results, never the host
//! or the other classifiers of an analysis. It cannot save models.

use lrid_plugin::{Classifier, Matrix, OwnedMatrix, config_bool, serde_json};

#[derive(Debug)]
pub struct Failing;

impl Classifier for Failing {
    type Data = OwnedMatrix;

    fn prepare(x: Matrix<'_>) -> Result<OwnedMatrix, String> {
        Ok(x.to_owned())
    }

    fn fit(
        config: &serde_json::Value,
        _data: &OwnedMatrix,
        _rows: &[u32],
        _labels: &[u32],
        _n_classes: usize,
    ) -> Result<Self, String> {
        if config_bool(config, "fail", false)? {
            return Err("this fixture refuses to fit".into());
        }
        panic!("deliberate panic in fit")
    }

    fn predict_proba(&self, _x: Matrix<'_>) -> Result<Vec<f64>, String> {
        Err("never fitted".into())
    }

    fn n_classes(&self) -> usize {
        0
    }
}

lrid_plugin::export_classifier!(Failing, name = "testing-failing", version = "0.0.1");
