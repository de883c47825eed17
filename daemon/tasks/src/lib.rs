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
