//! SimCLR (spec §5.7): a base network without its classifier, then the projection head
//! `head_contrastive/nl_0` (dense d→d, no bias, N(0, 0.01²)) → BN (decay 0.9, with β) → ReLU →
//! `nl_1` (dense d→128, no bias) → BN without β. Both head layers are observed, deep.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::init::normal;
use crate::{LayerSpec, Network, ObservedLayer, Position, Result, Router, Trace};

/// Output width of the projection head.
pub const PROJECTION_DIM: i64 = 128;

/// A base network with SimCLR's projection head in place of its classifier.
pub struct SimClr {
    base: Box<dyn Network>,
    head: [ObservedLayer; 2],
    // Holds the head's BatchNorm parameters and running statistics.
    vs: nn::VarStore,
    bn0: nn::BatchNorm,
    bn1: nn::BatchNorm,
    /// The scale of the second BN (it has no shift).
    gamma1: Tensor,
}

impl std::fmt::Debug for SimClr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClr")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl SimClr {
    /// Wraps `base` (its classifier is no longer used nor observed); `features` is the width of
    /// the classifier's input (d: 512 for ResNets, 4096 for AlexNet at width 1).
    pub fn new(base: Box<dyn Network>, device: Device) -> Self {
        let layers = base.layers();
        let classifier = layers.last().expect("a network has observed layers");
        let d = classifier.weight.size()[1];
        let first = classifier.spec.index;
        drop(layers);
        let head = |i: u32, name: &str, out: i64, inp: i64| ObservedLayer {
            name: format!("head_contrastive/{name}"),
            position: Position::Deep,
            spec: LayerSpec::dense(first + i),
            weight: normal(&[out, inp], 0.01, device),
            bias: None,
            extra: Vec::new(),
            relu: false,
        };
        let head = [head(0, "nl_0", d, d), head(1, "nl_1", PROJECTION_DIM, d)];
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let bn0 = nn::batch_norm1d(
            &root / "bn0",
            d,
            nn::BatchNormConfig {
                momentum: 0.1,
                eps: 1e-5,
                ..Default::default()
            },
        );
        let bn1 = nn::batch_norm1d(
            &root / "bn1",
            PROJECTION_DIM,
            nn::BatchNormConfig {
                momentum: 0.1,
                eps: 1e-5,
                affine: false,
                ..Default::default()
            },
        );
        let gamma1 = root.ones("bn1_gamma", &[PROJECTION_DIM]);
        SimClr {
            base,
            head,
            vs,
            bn0,
            bn1,
            gamma1,
        }
    }
}

impl Network for SimClr {
    fn layers(&self) -> Vec<&ObservedLayer> {
        let mut l = self.base.layers();
        l.pop();
        l.extend(self.head.iter());
        l
    }

    fn layers_mut(&mut self) -> Vec<&mut ObservedLayer> {
        let mut l = self.base.layers_mut();
        l.pop();
        l.extend(self.head.iter_mut());
        l
    }

    fn other_parameters(&self) -> Vec<Tensor> {
        let mut p = self.base.other_parameters();
        p.extend(self.vs.trainable_variables());
        p
    }

    fn features(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        train: bool,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor> {
        let h = self.base.features(x, router, train, trace)?;
        let h = self.head[0].observe(router, &h, trace)?;
        Ok(self.bn0.forward_t(&h, train).relu())
    }

    /// The projections (before the loss's L2 normalisation).
    fn forward(
        &self,
        x: &Tensor,
        router: &mut dyn Router,
        train: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor> {
        let h = self.features(x, router, train, &mut trace)?;
        let z = self.head[1].observe(router, &h, &mut trace)?;
        Ok(self.bn1.forward_t(&z, train) * &self.gamma1)
    }
}

/// The NT-Xent loss of spec §5.7 on 2B projections `[view-1 rows; view-2 rows]` at temperature
/// `tau`: the outputs are L2-normalised; each row's positive is its other view, its negatives
/// the other 2B − 2 rows; the two directions' mean cross-entropies are summed.
pub fn nt_xent(z: &Tensor, tau: f64) -> Tensor {
    let n = z.size()[0] / 2;
    let z = z / z
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    let h1 = z.narrow(0, 0, n);
    let h2 = z.narrow(0, n, n);
    let masks = Tensor::eye(n, (z.kind(), z.device())) * 1e9;
    let aa = h1.matmul(&h1.tr()) / tau - &masks;
    let bb = h2.matmul(&h2.tr()) / tau - &masks;
    let ab = h1.matmul(&h2.tr()) / tau;
    let ba = h2.matmul(&h1.tr()) / tau;
    let targets = Tensor::arange(n, (Kind::Int64, z.device()));
    let ce = |logits: Tensor| logits.log_softmax(-1, z.kind()).nll_loss(&targets);
    let a = ce(Tensor::cat(&[ab, aa], 1));
    let b = ce(Tensor::cat(&[ba, bb], 1));
    a + b
}
