//! The architectures of the grid by name (spec §5), with their L2 coefficients.

use lrid_models::{AlexNet, KNet, ModelSize, Network, ResNet, ResNetVersion, SimClr};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::objective::Head;
use crate::{Error, Result, TaskName};

/// One of the ten architectures of spec §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "knet4")]
    KNet4,
    #[serde(rename = "knet4-lrn")]
    KNet4Lrn,
    #[serde(rename = "knet5")]
    KNet5,
    #[serde(rename = "knet5-lrn")]
    KNet5Lrn,
    #[serde(rename = "alexnet")]
    AlexNet,
    #[serde(rename = "alexnet-lrn")]
    AlexNetLrn,
    #[serde(rename = "resnet18-v1")]
    ResNet18V1,
    #[serde(rename = "resnet18-v2")]
    ResNet18V2,
    #[serde(rename = "resnet34-v1")]
    ResNet34V1,
    #[serde(rename = "resnet34-v2")]
    ResNet34V2,
}

impl Arch {
    pub const ALL: [Arch; 10] = [
        Arch::KNet4,
        Arch::KNet4Lrn,
        Arch::KNet5,
        Arch::KNet5Lrn,
        Arch::AlexNet,
        Arch::AlexNetLrn,
        Arch::ResNet18V1,
        Arch::ResNet18V2,
        Arch::ResNet34V1,
        Arch::ResNet34V2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::KNet4 => "knet4",
            Arch::KNet4Lrn => "knet4-lrn",
            Arch::KNet5 => "knet5",
            Arch::KNet5Lrn => "knet5-lrn",
            Arch::AlexNet => "alexnet",
            Arch::AlexNetLrn => "alexnet-lrn",
            Arch::ResNet18V1 => "resnet18-v1",
            Arch::ResNet18V2 => "resnet18-v2",
            Arch::ResNet34V1 => "resnet34-v1",
            Arch::ResNet34V2 => "resnet34-v2",
        }
    }

    /// The L2 coefficient λ of the reference model code (spec §4): KNet 1e-5, AlexNet 5e-4,
    /// ResNet 1e-4; SimCLR 1e-6 on every layer.
    pub fn l2(self, task: TaskName) -> f64 {
        if task == TaskName::Simclr {
            return 1e-6;
        }
        match self {
            Arch::KNet4 | Arch::KNet4Lrn | Arch::KNet5 | Arch::KNet5Lrn => 1e-5,
            Arch::AlexNet | Arch::AlexNetLrn => 5e-4,
            _ => 1e-4,
        }
    }

    /// The smallest input side the architecture accepts.
    pub fn min_resolution(self) -> i64 {
        match self {
            Arch::KNet4 | Arch::KNet4Lrn | Arch::KNet5 | Arch::KNet5Lrn => 8,
            Arch::AlexNet | Arch::AlexNetLrn => 35,
            _ => 32,
        }
    }

    /// The network, initialised from libtorch's global generator (seed it first).
    pub(crate) fn build(
        self,
        size: ModelSize,
        head: Head,
        device: Device,
    ) -> Result<Box<dyn Network>> {
        let base: Box<dyn Network> = match self {
            Arch::KNet4 => Box::new(KNet::new(3, false, size, device)?),
            Arch::KNet4Lrn => Box::new(KNet::new(3, true, size, device)?),
            Arch::KNet5 => Box::new(KNet::new(4, false, size, device)?),
            Arch::KNet5Lrn => Box::new(KNet::new(4, true, size, device)?),
            Arch::AlexNet => Box::new(AlexNet::new(false, size, device)?),
            Arch::AlexNetLrn => Box::new(AlexNet::new(true, size, device)?),
            Arch::ResNet18V1 => Box::new(ResNet::new(18, ResNetVersion::V1, size, device)?),
            Arch::ResNet18V2 => Box::new(ResNet::new(18, ResNetVersion::V2, size, device)?),
            Arch::ResNet34V1 => Box::new(ResNet::new(34, ResNetVersion::V1, size, device)?),
            Arch::ResNet34V2 => Box::new(ResNet::new(34, ResNetVersion::V2, size, device)?),
        };
        Ok(match head {
            Head::Classifier => base,
            Head::Projection => Box::new(SimClr::new(base, device)),
        })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::parse_named(s, &Arch::ALL, Arch::name, "architecture")
    }
}
