//! ResNet-18 / ResNet-34, v1 (post-activation, spec §5.4) and v2 (pre-activation, §5.5).

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::init::{constant, glorot, normal, truncated_normal};
use crate::ops::same_max_pool;
use crate::{Error, LayerSpec, ModelSize, Network, ObservedLayer, Position, Result, Router, Trace};

/// ResNet version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetVersion {
    /// Post-activation; BN decay 0.9.
    V1,
    /// Pre-activation; BN decay 0.997.
    V2,
}

/// One conv of the network: its observed layer index and its explicit "fixed" padding (stride
/// > 1 convs are padded before the op, so their observed input is the padded tensor).
#[derive(Debug, Clone, Copy)]
struct Conv {
    layer: usize,
    fixed_pad: Option<(i64, i64)>,
}

#[derive(Debug)]
struct Block {
    projection: Option<(Conv, nn::BatchNorm)>,
    conv1: Conv,
    bn1: nn::BatchNorm,
    conv2: Conv,
    /// v1: BN after conv2 (γ = 0 at start); v2: the pre-activation BN of the block input.
    bn2: nn::BatchNorm,
}

/// ResNet-18 or ResNet-34.
#[derive(Debug)]
pub struct ResNet {
    version: ResNetVersion,
    layers: Vec<ObservedLayer>,
    // Holds the BatchNorm parameters (trainable) and running statistics.
    vs: nn::VarStore,
    stem: Conv,
    stem_bn: Option<nn::BatchNorm>,
    blocks: Vec<Block>,
    final_bn: Option<nn::BatchNorm>,
}

/// TF variance scaling (scale 1, fan-in, truncated normal): std √(1/fan_in)/0.87962566.
fn variance_scaling(shape: &[i64], device: Device) -> Tensor {
    let fan_in: i64 = shape[1..].iter().product();
    truncated_normal(shape, (1.0 / fan_in as f64).sqrt() / 0.879_625_66, device)
}

/// "Fixed padding" of a conv with kernel k and stride s: explicit (before, after) when s > 1.
fn fixed_pad(k: i64, stride: i64) -> Option<(i64, i64)> {
    (stride > 1 && k > 1).then(|| ((k - 1) / 2, (k - 1) - (k - 1) / 2))
}

impl ResNet {
    /// `depth` 18 or 34.
    pub fn new(
        depth: usize,
        version: ResNetVersion,
        size: ModelSize,
        device: Device,
    ) -> Result<Self> {
        let counts: [usize; 4] = match depth {
            18 => [2, 2, 2, 2],
            34 => [3, 4, 6, 3],
            d => {
                return Err(Error::InvalidArgument(format!(
                    "ResNet depth is 18 or 34; got {d}"
                )));
            }
        };
        if size.resolution < 32 {
            return Err(Error::InvalidArgument(format!(
                "ResNet needs an input of at least 32×32 (five halvings); got {0}×{0}",
                size.resolution
            )));
        }
        let vs = nn::VarStore::new(device);
        let decay = match version {
            ResNetVersion::V1 => 0.9,
            ResNetVersion::V2 => 0.997,
        };
        let bn = |name: String, c: i64, gamma: f64| {
            nn::batch_norm2d(
                vs.root() / name,
                c,
                nn::BatchNormConfig {
                    eps: 1e-5,
                    momentum: 1.0 - decay,
                    ws_init: nn::Init::Const(gamma),
                    ..Default::default()
                },
            )
        };
        let prefix = match version {
            ResNetVersion::V1 => "block_group",
            ResNetVersion::V2 => "block_layer",
        };
        // (name, out, in, kernel, stride) of every conv, in the observed order.
        let mut convs: Vec<(String, i64, i64, i64, i64)> = Vec::new();
        let stem_filters = size.filters(64);
        convs.push(("conv0".into(), stem_filters, size.channels, 7, 2));
        let mut blocks_plan = Vec::new();
        let mut in_c = stem_filters;
        for (g, (&count, &paper)) in counts.iter().zip(&[64, 128, 256, 512]).enumerate() {
            let out = size.filters(paper);
            let stride = if g == 0 { 1 } else { 2 };
            for b in 0..count {
                let name = |c: usize| format!("{prefix}{}_{b}/conv{c}", g + 1);
                let s = if b == 0 { stride } else { 1 };
                let projection = (b == 0).then(|| {
                    convs.push((name(0), out, in_c, 1, s));
                    convs.len() - 1
                });
                convs.push((name(1), out, in_c, 3, s));
                let c1 = convs.len() - 1;
                convs.push((name(2), out, out, 3, 1));
                blocks_plan.push((projection, c1, c1 + 1, out, in_c));
                in_c = out;
            }
        }
        let count = convs.len() + 1;
        let mut layers: Vec<ObservedLayer> = convs
            .iter()
            .enumerate()
            .map(|(i, (name, out, inp, k, s))| {
                let padding = if fixed_pad(*k, *s).is_some() {
                    0
                } else {
                    (k - 1) / 2
                };
                ObservedLayer {
                    name: name.clone(),
                    position: Position::of(i, count),
                    spec: LayerSpec::conv(i as u32, *s, padding),
                    weight: variance_scaling(&[*out, *inp, *k, *k], device),
                    bias: None,
                    extra: Vec::new(),
                    relu: false,
                }
            })
            .collect();
        let dense_w = match version {
            ResNetVersion::V1 => normal(&[size.classes, in_c], 0.01, device),
            ResNetVersion::V2 => glorot(&[size.classes, in_c], device),
        };
        let dense_b = constant(size.classes, 0.0, device);
        layers.push(ObservedLayer {
            name: "dense".into(),
            position: Position::of(count - 1, count),
            spec: LayerSpec::dense((count - 1) as u32),
            weight: dense_w,
            bias: Some(dense_b),
            extra: Vec::new(),
            relu: false,
        });
        let conv = |i: usize| Conv {
            layer: i,
            fixed_pad: fixed_pad(convs[i].3, convs[i].4),
        };
        let blocks = blocks_plan
            .into_iter()
            .enumerate()
            .map(|(n, (projection, c1, c2, out, in_c))| Block {
                projection: projection.map(|p| (conv(p), bn(format!("b{n}_proj_bn"), out, 1.0))),
                conv1: conv(c1),
                bn1: bn(format!("b{n}_bn1"), out, 1.0),
                conv2: conv(c2),
                bn2: match version {
                    ResNetVersion::V1 => bn(format!("b{n}_bn2"), out, 0.0),
                    ResNetVersion::V2 => bn(format!("b{n}_pre_bn"), in_c, 1.0),
                },
            })
            .collect();
        let stem_bn =
            (version == ResNetVersion::V1).then(|| bn("stem_bn".into(), stem_filters, 1.0));
        let final_bn = (version == ResNetVersion::V2).then(|| bn("final_bn".into(), in_c, 1.0));
        Ok(ResNet {
            version,
            layers,
            vs,
            stem: conv(0),
            stem_bn,
            blocks,
            final_bn,
        })
    }

    fn conv(
        &self,
        c: Conv,
        router: &mut dyn Router,
        x: &Tensor,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let x = match c.fixed_pad {
            Some((before, after)) => x.constant_pad_nd([before, after, before, after]),
            None => x.shallow_clone(),
        };
        self.layers[c.layer].observe(router, &x, trace)
    }
}

impl Network for ResNet {
    fn layers(&self) -> Vec<&ObservedLayer> {
        self.layers.iter().collect()
    }

    fn layers_mut(&mut self) -> Vec<&mut ObservedLayer> {
        self.layers.iter_mut().collect()
    }

    fn other_parameters(&self) -> Vec<Tensor> {
        self.vs.trainable_variables()
    }

    fn features(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        train: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let t = trace;
        let mut h = self.conv(self.stem, router, x, t)?;
        if let Some(bn) = &self.stem_bn {
            h = bn.forward_t(&h, train).relu();
        }
        h = same_max_pool(&h, 3, 2);
        for block in &self.blocks {
            h = match self.version {
                ResNetVersion::V1 => {
                    let shortcut = match &block.projection {
                        Some((p, bn)) => bn.forward_t(&self.conv(*p, router, &h, t)?, train),
                        None => h.shallow_clone(),
                    };
                    let m = block
                        .bn1
                        .forward_t(&self.conv(block.conv1, router, &h, t)?, train)
                        .relu();
                    let m = block
                        .bn2
                        .forward_t(&self.conv(block.conv2, router, &m, t)?, train);
                    (m + shortcut).relu()
                }
                ResNetVersion::V2 => {
                    let u = block.bn2.forward_t(&h, train).relu();
                    let shortcut = match &block.projection {
                        Some((p, _)) => self.conv(*p, router, &u, t)?,
                        None => h.shallow_clone(),
                    };
                    let m = block
                        .bn1
                        .forward_t(&self.conv(block.conv1, router, &u, t)?, train)
                        .relu();
                    self.conv(block.conv2, router, &m, t)? + shortcut
                }
            };
        }
        if let Some(bn) = &self.final_bn {
            h = bn.forward_t(&h, train).relu();
        }
        Ok(h.mean_dim([2i64, 3].as_slice(), false, Kind::Float))
    }
}
