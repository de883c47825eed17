//! Tasks by name and what each optimises: supervised cross-entropy (generated shapes, the
//! audio-like task, CIFAR-10) or SimCLR's NT-Xent on two augmented views of the shapes.

use lrid_models::Network;
pub use lrid_models::nt_xent;
use lrid_plugins::RuleInstance;
use lrid_tasks::{Audio, Cifar10, Dataset, Shapes};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result, RuleRouter, TrainConfig};

/// The generated tasks' content seed: every run sees the same data set (the data seed only
/// orders it, spec §5.8).
const TASK_SEED: u64 = 0x6c72_6964;

/// A task of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskName {
    /// Supervised classification of rendered shapes and textures (8 classes).
    Shapes,
    /// SimCLR on the rendered shapes.
    Simclr,
    /// Word classification from an audio-like cochleagram (16 words; stands in for WSN).
    Audio,
    /// Real CIFAR-10 from its binary files (`cifar_dir`).
    Cifar10,
}

impl TaskName {
    pub const ALL: [TaskName; 4] = [
        TaskName::Shapes,
        TaskName::Simclr,
        TaskName::Audio,
        TaskName::Cifar10,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskName::Shapes => "shapes",
            TaskName::Simclr => "simclr",
            TaskName::Audio => "audio",
            TaskName::Cifar10 => "cifar10",
        }
    }

    /// The data set, at the configured resolution (default 32).
    pub(crate) fn open(self, config: &TrainConfig) -> Result<Box<dyn Dataset>> {
        let resolution = config.resolution.unwrap_or(32);
        Ok(match self {
            TaskName::Shapes | TaskName::Simclr => Box::new(Shapes::new(
                TASK_SEED,
                resolution,
                config.classes.unwrap_or(8),
            )?),
            TaskName::Audio => Box::new(Audio::new(
                TASK_SEED,
                resolution,
                config.classes.unwrap_or(16),
            )?),
            TaskName::Cifar10 => {
                let dir = config.cifar_dir.as_ref().ok_or_else(|| {
                    Error::InvalidArgument(
                        "task cifar10 needs the folder of the CIFAR-10 binary files (--cifar-dir)"
                            .into(),
                    )
                })?;
                if resolution != 32 {
                    return Err(Error::InvalidArgument(format!(
                        "CIFAR-10 images are 32×32; the resolution is {resolution}"
                    )));
                }
                Box::new(Cifar10::open(dir)?)
            }
        })
    }

    pub(crate) fn objective(self, temperature: f64) -> Objective {
        match self {
            TaskName::Simclr => Objective::Contrast { temperature },
            _ => Objective::Classify,
        }
    }
}

impl std::fmt::Display for TaskName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TaskName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::parse_named(s, &TaskName::ALL, TaskName::name, "task")
    }
}

/// What sits on top of the base network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    Classifier,
    /// SimCLR's projection head instead of the classifier.
    Projection,
}

/// What a task optimises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Objective {
    Classify,
    Contrast { temperature: f64 },
}

impl Objective {
    pub(crate) fn head(self) -> Head {
        match self {
            Objective::Classify => Head::Classifier,
            Objective::Contrast { .. } => Head::Projection,
        }
    }

    /// The network input of a training batch: the images, or SimCLR's two views of each
    /// (drawn from the data seed and the step, so a run is reproducible).
    pub(crate) fn train_input(self, images: &Tensor, data_seed: i64, step: usize) -> Tensor {
        match self {
            Objective::Classify => images.shallow_clone(),
            Objective::Contrast { .. } => {
                let mut rng = ChaCha8Rng::seed_from_u64(data_seed as u64);
                rng.set_stream(step as u64);
                lrid_tasks::simclr_views(images, &mut rng, true)
            }
        }
    }

    /// The task loss of the network's output.
    pub(crate) fn loss(self, out: &Tensor, labels: &Tensor) -> Tensor {
        match self {
            Objective::Classify => out.cross_entropy_for_logits(labels),
            Objective::Contrast { temperature } => nt_xent(out, temperature),
        }
    }

    /// Accuracy on the evaluation set (classification only), in inference mode.
    pub(crate) fn accuracy(
        self,
        net: &dyn Network,
        rule: &mut RuleInstance,
        eval: &(Tensor, Tensor),
    ) -> Result<Option<f64>> {
        if self != Objective::Classify {
            return Ok(None);
        }
        let mut router = RuleRouter::new(rule, false);
        let logits = tch::no_grad(|| net.forward(&eval.0, &mut router, false, None))?;
        let correct = logits.argmax(-1, false).eq_tensor(&eval.1);
        Ok(Some(
            correct
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]),
        ))
    }
}
