//! # lrid-tasks
//!
//! What the virtual experiments train on. In: a seed and a resolution (generated tasks: rendered
//! shapes and textures, an audio-like cochleagram task), or a folder of CIFAR-10 binary files.
//! Also SimCLR's augmented views. Out: batches of images `[N, C, H, W]` (f32) with labels
//! `[N]` (i64), on the CPU; the trainer moves them to its device.
//!
//! Generated data is a pure function of (seed, example index): no downloads, identical on every
//! machine and device, and any example can be drawn again (the evaluation set is a fixed range of
//! indices of its own stream).

mod audio;
mod augment;
mod cifar;
mod shapes;

pub use audio::Audio;
pub use augment::{simclr_view, simclr_views};
pub use cifar::Cifar10;
pub use shapes::Shapes;
use tch::Tensor;

/// Errors of the tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{path}: {reason}")]
    BadFile {
        path: std::path::PathBuf,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A labelled image dataset.
pub trait Dataset: Send + Sync {
    /// Examples available for training (generated datasets: effectively unbounded).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn classes(&self) -> i64;
    /// `[C, H, W]` of one example.
    fn shape(&self) -> [i64; 3];
    /// The training examples at `indices`: images `[N, C, H, W]`, labels `[N]`.
    fn batch(&self, indices: &[usize]) -> (Tensor, Tensor);
    /// The fixed evaluation set's first `n` examples.
    fn eval(&self, n: usize) -> (Tensor, Tensor);
}

/// The evaluation examples' stream of a generated task (training uses stream 0).
const EVAL_STREAM: u64 = 1;

/// A generated task: every example is a pure function of (stream, index).
pub trait Generated: Send + Sync {
    /// One example's values (`[C, H, W]`, C order) and its label.
    fn render(&self, stream: u64, index: usize) -> (Vec<f32>, i64);
    /// `[C, H, W]` of one example.
    fn example_shape(&self) -> [i64; 3];
    fn class_count(&self) -> i64;
}

fn stack<G: Generated + ?Sized>(
    task: &G,
    stream: u64,
    indices: impl Iterator<Item = usize>,
) -> (Tensor, Tensor) {
    let [c, h, w] = task.example_shape();
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for i in indices {
        let (v, l) = task.render(stream, i);
        values.extend_from_slice(&v);
        labels.push(l);
    }
    let n = labels.len() as i64;
    (
        Tensor::from_slice(&values).reshape([n, c, h, w]),
        Tensor::from_slice(&labels),
    )
}

impl<G: Generated> Dataset for G {
    fn len(&self) -> usize {
        usize::MAX
    }

    fn classes(&self) -> i64 {
        self.class_count()
    }

    fn shape(&self) -> [i64; 3] {
        self.example_shape()
    }

    fn batch(&self, indices: &[usize]) -> (Tensor, Tensor) {
        stack(self, 0, indices.iter().copied())
    }

    fn eval(&self, n: usize) -> (Tensor, Tensor) {
        stack(self, EVAL_STREAM, 0..n)
    }
}
