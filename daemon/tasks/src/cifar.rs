//! Real CIFAR-10 from its binary distribution (`cifar-10-batches-bin/`): `data_batch_1.bin` …
//! `data_batch_5.bin` (training) and `test_batch.bin` (evaluation). Each record is one label byte
//! (0–9) and 3072 pixel bytes: the red, green and blue 32×32 planes, row-major.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::{Dataset, Error, Result};

const RECORD: usize = 1 + 3 * 32 * 32;

/// CIFAR-10 in memory (≈180 MB for the full set), pixels scaled to [0, 1].
#[derive(Debug)]
pub struct Cifar10 {
    train: (Vec<u8>, Vec<u8>),
    test: (Vec<u8>, Vec<u8>),
}

fn read(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (label + 32×32×3)",
                bytes.len()
            ),
        });
    }
    let mut labels = Vec::with_capacity(bytes.len() / RECORD);
    let mut pixels = Vec::with_capacity(bytes.len() / RECORD * (RECORD - 1));
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                reason: format!("record {i} has label {}; CIFAR-10 labels are 0–9", rec[0]),
            });
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((labels, pixels))
}

impl Cifar10 {
    /// Reads every `data_batch_*.bin` and `test_batch.bin` of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a folder of CIFAR-10 binary files",
                dir.display()
            )));
        }
        let mut train_files: Vec<PathBuf> = (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .filter(|p| p.exists())
            .collect();
        train_files.sort();
        if train_files.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} holds no data_batch_N.bin (the CIFAR-10 binary version)",
                dir.display()
            )));
        }
        let mut train = (Vec::new(), Vec::new());
        for f in &train_files {
            let (l, p) = read(f)?;
            train.0.extend(l);
            train.1.extend(p);
        }
        let test_file = dir.join("test_batch.bin");
        let test = if test_file.exists() {
            read(&test_file)?
        } else {
            return Err(Error::InvalidArgument(format!(
                "{} has no test_batch.bin (the evaluation set)",
                dir.display()
            )));
        };
        Ok(Self { train, test })
    }

    fn gather(set: &(Vec<u8>, Vec<u8>), indices: impl Iterator<Item = usize>) -> (Tensor, Tensor) {
        let (labels, pixels) = set;
        let n = labels.len();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in indices {
            let i = i % n;
            x.extend(
                pixels[i * 3072..(i + 1) * 3072]
                    .iter()
                    .map(|&b| b as f32 / 255.0),
            );
            y.push(labels[i] as i64);
        }
        let count = y.len() as i64;
        (
            Tensor::from_slice(&x).reshape([count, 3, 32, 32]),
            Tensor::from_slice(&y),
        )
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.train.0.len()
    }

    fn classes(&self) -> i64 {
        10
    }

    fn shape(&self) -> [i64; 3] {
        [3, 32, 32]
    }

    fn batch(&self, indices: &[usize]) -> (Tensor, Tensor) {
        Self::gather(&self.train, indices.iter().copied())
    }

    fn eval(&self, n: usize) -> (Tensor, Tensor) {
        Self::gather(&self.test, 0..n.min(self.test.0.len()))
    }
}
