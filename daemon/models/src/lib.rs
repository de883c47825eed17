//! # lrid-models
//!
//! The paper's architectures (spec §5) in tch. In: an architecture name and its size parameters
//! (input resolution, channels, classes, width multiplier), a [`Router`] that computes each
//! observed layer's op (plain backprop, or a learning-rule plugin). Out: logits, and on request
//! the (input, output) pair of every observed layer — what the recorder needs for weights,
//! activations and the layer-wise activity change.
//!
//! An observed layer ([`ObservedLayer`]) is a conv or dense op with its kernel, optional bias,
//! the rule's extra tensors (e.g. feedback weights) and whether it owns a ReLU (spec §1.1): its
//! output y is the op (+ bias) (+ ReLU when owned); pooling, LRN and everything else sit
//! outside it.

mod alexnet;
mod init;
mod knet;
mod ops;
mod resnet;
mod simclr;

pub use alexnet::AlexNet;
pub use knet::KNet;
pub use lrid_plugin::{LayerKind, LayerSpec};
pub use lrid_protocol::Position;
pub use ops::{lrn, same_avg_pool, same_max_pool};
pub use resnet::{ResNet, ResNetVersion};
pub use simclr::{PROJECTION_DIM, SimClr, nt_xent};
use tch::Tensor;

/// Errors of the models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("layer {layer}: {message}")]
    Layer { layer: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A conv or dense layer whose statistics are observed.
#[derive(Debug)]
pub struct ObservedLayer {
    pub name: String,
    pub position: Position,
    pub spec: LayerSpec,
    /// tch layout: conv OIHW, dense `[out, in]`.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The learning rule's extra tensors (set by the trainer from the rule's `init_layer`).
    pub extra: Vec<Tensor>,
    /// Whether the ReLU after the op belongs to the layer (and so to its observed output).
    pub relu: bool,
}

impl ObservedLayer {
    /// The layer's output y through `router`.
    pub fn forward(&self, router: &mut dyn Router, x: &Tensor) -> Result<Tensor> {
        let y = router.op(self, x).map_err(|message| Error::Layer {
            layer: self.name.clone(),
            message,
        })?;
        Ok(if self.relu { y.relu() } else { y })
    }

    /// [`ObservedLayer::forward`], adding (input, output) to the trace when there is one.
    pub fn observe(
        &self,
        router: &mut dyn Router,
        x: &Tensor,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let y = self.forward(router, x)?;
        if let Some(t) = trace.as_deref_mut() {
            t.push((x.shallow_clone(), y.shallow_clone()));
        }
        Ok(y)
    }

    /// The trainable tensors of the layer: kernel, bias, then the rule's extra tensors.
    pub fn parameters(&self) -> Vec<Tensor> {
        let mut p = vec![self.weight.shallow_clone()];
        p.extend(self.bias.iter().map(Tensor::shallow_clone));
        p.extend(self.extra.iter().map(Tensor::shallow_clone));
        p
    }
}

/// Computes a layer's op (kernel and bias, before its ReLU): where a learning rule decides how
/// gradients flow.
pub trait Router {
    fn op(&mut self, layer: &ObservedLayer, x: &Tensor) -> Result<Tensor, String>;
}

/// Ordinary backprop.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backprop;

impl Router for Backprop {
    fn op(&mut self, layer: &ObservedLayer, x: &Tensor) -> Result<Tensor, String> {
        lrid_plugin::plain_forward(&layer.spec, x, &layer.weight, layer.bias.as_ref())
    }
}

/// Where [`Network::forward`] puts each observed layer's (input, output).
pub type Trace = Vec<(Tensor, Tensor)>;

/// A network with observed layers.
pub trait Network: Send {
    /// The observed layers, in order.
    fn layers(&self) -> Vec<&ObservedLayer>;
    fn layers_mut(&mut self) -> Vec<&mut ObservedLayer>;
    /// Trainable tensors outside the observed layers (e.g. BatchNorm scale and shift).
    fn other_parameters(&self) -> Vec<Tensor> {
        Vec::new()
    }
    /// The input of the last observed layer (the classifier): everything before it, tracing
    /// every observed layer on the way.
    fn features(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        train: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor>;
    /// Logits; with `trace`, also every observed layer's (input, output).
    fn forward(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        train: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor> {
        let h = self.features(x, router, train, &mut trace)?;
        let layers = self.layers();
        let classifier = layers.last().expect("a network has observed layers");
        classifier.observe(router, &h, &mut trace)
    }
}

/// Size parameters shared by the architectures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSize {
    /// Input height = width.
    pub resolution: i64,
    pub channels: i64,
    pub classes: i64,
    /// Multiplies every layer's filter count (1.0 = the paper's).
    pub width: f64,
}

impl ModelSize {
    pub(crate) fn filters(&self, paper: i64) -> i64 {
        ((paper as f64 * self.width).round() as i64).max(1)
    }
}
