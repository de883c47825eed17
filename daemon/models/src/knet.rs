//! KNet4 / KNet5 with and without LRN (spec §5.2): Krizhevsky's cuda-convnet CIFAR-10 network.

use tch::{Device, Tensor};

use crate::init::{constant, normal};
use crate::ops::{lrn, same_avg_pool, same_max_pool};
use crate::{Error, LayerSpec, ModelSize, Network, ObservedLayer, Position, Result, Router, Trace};

/// KNet4 (conv1–3, fc4) or KNet5 (conv1–4, fc5), ± LRN.
#[derive(Debug)]
pub struct KNet {
    layers: Vec<ObservedLayer>,
    lrn: bool,
}

impl KNet {
    /// `convs` = 3 (KNet4) or 4 (KNet5). Initialisation per spec: conv1 N(0, 1e-4²), the other
    /// convs and the classifier N(0, 0.01²), biases 0 (libtorch's global generator).
    pub fn new(convs: usize, lrn: bool, size: ModelSize, device: Device) -> Result<Self> {
        if !(3..=4).contains(&convs) {
            return Err(Error::InvalidArgument(format!(
                "KNet has 3 (KNet4) or 4 (KNet5) conv layers; got {convs}"
            )));
        }
        if size.resolution < 8 {
            return Err(Error::InvalidArgument(format!(
                "KNet needs an input of at least 8×8; got {0}×{0}",
                size.resolution
            )));
        }
        let filters = [32, 32, 64, 128].map(|f| size.filters(f));
        let count = convs + 1;
        let mut layers = Vec::with_capacity(count);
        let mut in_channels = size.channels;
        let mut side = size.resolution;
        for (i, &out) in filters.iter().take(convs).enumerate() {
            let std = if i == 0 { 1e-4 } else { 0.01 };
            layers.push(ObservedLayer {
                name: format!("conv{}", i + 1),
                position: Position::of(i, count),
                // 5×5, stride 1, SAME: symmetric padding 2.
                spec: LayerSpec::conv(i as u32, 1, 2),
                weight: normal(&[out, in_channels, 5, 5], std, device),
                bias: Some(constant(out, 0.0, device)),
                extra: Vec::new(),
                // The quirk of the reference: conv1 owns no ReLU.
                relu: i > 0,
            });
            in_channels = out;
            side = (side + 1) / 2;
        }
        let features = in_channels * side * side;
        layers.push(ObservedLayer {
            name: format!("fc{count}"),
            position: Position::of(convs, count),
            spec: LayerSpec::dense(convs as u32),
            weight: normal(&[size.classes, features], 0.01, device),
            bias: Some(constant(size.classes, 0.0, device)),
            extra: Vec::new(),
            relu: false,
        });
        Ok(KNet { layers, lrn })
    }
}

impl Network for KNet {
    fn layers(&self) -> Vec<&ObservedLayer> {
        self.layers.iter().collect()
    }

    fn layers_mut(&mut self) -> Vec<&mut ObservedLayer> {
        self.layers.iter_mut().collect()
    }

    fn features(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        _train: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let convs = self.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers[..convs].iter().enumerate() {
            let y = layer.observe(router, &h, trace)?;
            h = match i {
                0 => {
                    let p = same_max_pool(&y, 3, 2);
                    // LRN variants only: ReLU then LRN (the plain variants have no ReLU here).
                    if self.lrn {
                        lrn(&p.relu(), 3, 1.0, 5e-5, 0.75)
                    } else {
                        p
                    }
                }
                1 => {
                    let p = same_avg_pool(&y, 3, 2);
                    if self.lrn {
                        lrn(&p, 3, 1.0, 5e-5, 0.75)
                    } else {
                        p
                    }
                }
                _ => same_avg_pool(&y, 3, 2),
            };
        }
        Ok(h.flatten(1, -1))
    }
}
