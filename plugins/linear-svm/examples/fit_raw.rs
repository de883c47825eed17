//! Fits the linear SVM on raw little-endian files and writes the saved model, for comparisons
//! with scikit-learn (e.g. `X.astype('<f8').tofile(...)`, `y.astype('<u4').tofile(...)`):
//!
//! ```text
//! cargo run --release -p lrid-classifier-linear-svm --example fit_raw -- \
//!     X.f64 COLS CATEGORICAL y.u32 N_CLASSES '{"C": 1}' model.json [X_test.f64 proba.f64]
//! ```
//!
//! Prints the fit time (seconds) and each binary problem's outer iterations; with a test matrix,
//! writes its class probabilities (rows × classes, little-endian f64).

use std::time::Instant;

use lrid_classifier_linear_svm::LinearSvm;
use lrid_plugin::{Classifier, FeatureLayout, Matrix};

fn read_f64(path: &str) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 7 && args.len() != 9 {
        return Err(
            "usage: X.f64 COLS CATEGORICAL y.u32 N_CLASSES CONFIG model.json \
                    [X_test.f64 proba.f64]"
                .into(),
        );
    }
    let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    let x = read_f64(&args[0]);
    let cols = num(&args[1])?;
    let layout = FeatureLayout {
        categorical: num(&args[2])?,
        points: 0,
    };
    let labels: Vec<u32> = std::fs::read(&args[3])
        .map_err(|e| format!("{}: {e}", args[3]))?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let n_classes = num(&args[4])?;
    let config: serde_json::Value = serde_json::from_str(&args[5]).map_err(|e| e.to_string())?;
    let rows = x.len() / cols;
    let matrix = Matrix::new(&x, rows, cols, layout)?;
    let start = Instant::now();
    let data = LinearSvm::prepare(matrix)?;
    let all: Vec<u32> = (0..rows as u32).collect();
    let model = LinearSvm::fit(&config, &data, &all, &labels, n_classes)?;
    println!("fit_seconds {:.4}", start.elapsed().as_secs_f64());
    println!("n_iter {:?}", model.n_iter());
    std::fs::write(&args[6], model.save()?).map_err(|e| e.to_string())?;
    if args.len() == 9 {
        let test = read_f64(&args[7]);
        let p = model.predict_proba(Matrix::new(&test, test.len() / cols, cols, layout)?)?;
        let bytes: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&args[8], bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}
