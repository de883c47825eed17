//! AlexNet and AlexNet-LRN (spec §5.3).

use tch::{Device, Tensor};

use crate::init::{constant, glorot, truncated_normal};
use crate::ops::{lrn, same_max_pool};
use crate::{Error, LayerSpec, ModelSize, Network, ObservedLayer, Position, Result, Router, Trace};

/// conv1–conv5, fc6–fc8; every layer owns a ReLU except fc8.
#[derive(Debug)]
pub struct AlexNet {
    layers: Vec<ObservedLayer>,
    lrn: bool,
}

/// TF "SAME" padding of a stride-1 conv with kernel k: (before, extra after).
fn same(k: i64) -> (i64, i64) {
    let total = k - 1;
    (total / 2, total - 2 * (total / 2))
}

impl AlexNet {
    pub fn new(lrn: bool, size: ModelSize, device: Device) -> Result<Self> {
        if size.resolution < 35 {
            return Err(Error::InvalidArgument(format!(
                "AlexNet needs an input of at least 35×35 (an 11×11 stride-4 first layer and three poolings); got {0}×{0}",
                size.resolution
            )));
        }
        let f = |n| size.filters(n);
        // (name, filters, kernel, stride); conv1 is VALID, the others SAME.
        let convs = [
            ("conv1", f(96), 11, 4),
            ("conv2", f(256), 5, 1),
            ("conv3", f(384), 3, 1),
            ("conv4", f(384), 4, 1),
            ("conv5", f(256), 3, 1),
        ];
        let count = 8;
        let mut layers = Vec::with_capacity(count);
        let mut in_channels = size.channels;
        let mut side = size.resolution;
        for (i, &(name, out, k, stride)) in convs.iter().enumerate() {
            let spec = if i == 0 {
                side = (side - k) / stride + 1;
                LayerSpec::conv(0, stride, 0)
            } else {
                let (before, extra) = same(k);
                LayerSpec {
                    padding_extra: [extra, extra],
                    ..LayerSpec::conv(i as u32, 1, before)
                }
            };
            layers.push(ObservedLayer {
                name: name.into(),
                position: Position::of(i, count),
                spec,
                weight: glorot(&[out, in_channels, k, k], device),
                bias: Some(constant(out, 0.0, device)),
                extra: Vec::new(),
                relu: true,
            });
            in_channels = out;
            // pool1 after conv1, pool2 after conv2, pool5 after conv5 (3×3/2 SAME).
            if matches!(i, 0 | 1 | 4) {
                side = (side + 1) / 2;
            }
        }
        let mut features = in_channels * side * side;
        for (i, name) in ["fc6", "fc7", "fc8"].into_iter().enumerate() {
            let last = i == 2;
            let out = if last { size.classes } else { f(4096) };
            layers.push(ObservedLayer {
                name: name.into(),
                position: Position::of(5 + i, count),
                spec: LayerSpec::dense(5 + i as u32),
                weight: truncated_normal(&[out, features], 0.01, device),
                bias: Some(constant(out, if last { 0.0 } else { 0.1 }, device)),
                extra: Vec::new(),
                relu: !last,
            });
            features = out;
        }
        Ok(AlexNet { layers, lrn })
    }
}

impl Network for AlexNet {
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
        train: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers[..5].iter().enumerate() {
            let y = layer.observe(router, &h, trace)?;
            let y = if self.lrn && i < 2 {
                lrn(&y, 5, 1.0, 1e-4, 0.75)
            } else {
                y
            };
            h = if matches!(i, 0 | 1 | 4) {
                same_max_pool(&y, 3, 2)
            } else {
                y
            };
        }
        h = h.flatten(1, -1);
        // fc6 and fc7, each followed by dropout (keep 0.5) in training only; fc8 is the
        // classifier.
        for layer in &self.layers[5..7] {
            h = layer.observe(router, &h, trace)?.dropout(0.5, train);
        }
        Ok(h)
    }
}
