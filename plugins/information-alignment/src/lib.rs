//! The `information-alignment` learning rule (spec §4.3, Kunin et al. 2020): feedback alignment's
//! routing plus a layer-local loss on the feedback weights B,
//! R = α·Amp(r, p) + β·Null(f) + γ·Decay(W, B), computed from the detached layer input, kernel
//! and bias, so B learns only from R and W only from the task loss.
//!
//! Configuration (JSON, all optional): `alpha` (2e-3), `beta` (1e-3), `gamma` (1e-3), `momentum`
//! (0.9), `nesterov` (false), and the optimizer of B, `alignment_optimizer`:
//! - `"shared"` (default, the reference's default): W, biases and B are stepped by the same SGD
//!   with momentum and learning rate;
//! - `"adam"`: B gets its own Adam with the constant rate `alignment_lr` (1e-3) — the reference
//!   code's separate `alignment_optimizer`. Adam's step does not grow with a layer's curvature
//!   (R sums over every spatial position, so a convolution's stable SGD rate shrinks with its
//!   feature map): B reaches its aligned regime in far fewer steps without diverging. The
//!   objective R, and how W learns, are unchanged.

use std::collections::HashSet;

use lrid_plugin::{
    Adam, LayerSpec, LearningRule, SgdMomentum, config_bool, config_f64, config_known_keys,
    config_str, draw_like, fa_forward, feedback_weights, information_alignment_loss, tch::Tensor,
};

const CONFIG_KEYS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "momentum",
    "nesterov",
    "alignment_optimizer",
    "alignment_lr",
];

/// B's own optimizer, when it has one.
#[derive(Debug)]
struct AlignmentOptimizer {
    adam: Adam,
    lr: f64,
    /// Storage of every feedback tensor made by `init_layer`: how `step` tells B from W.
    feedback: HashSet<usize>,
}

#[derive(Debug)]
pub struct InformationAlignment {
    alpha: f64,
    beta: f64,
    gamma: f64,
    optimizer: SgdMomentum,
    alignment: Option<AlignmentOptimizer>,
}

impl LearningRule for InformationAlignment {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        config_known_keys(config, CONFIG_KEYS)?;
        let alignment = match config_str(config, "alignment_optimizer", "shared")? {
            "shared" => {
                if config.get("alignment_lr").is_some() {
                    return Err(
                        "'alignment_lr' needs \"alignment_optimizer\": \"adam\" (with the shared optimizer B uses the run's learning rate)"
                            .into(),
                    );
                }
                None
            }
            "adam" => {
                let lr = config_f64(config, "alignment_lr", 1e-3)?;
                if !(lr.is_finite() && lr > 0.0) {
                    return Err(format!("'alignment_lr' must be positive; got {lr}"));
                }
                Some(AlignmentOptimizer {
                    adam: Adam::new(0.9, 0.999, 1e-8),
                    lr,
                    feedback: HashSet::new(),
                })
            }
            other => {
                return Err(format!(
                    "unknown alignment_optimizer '{other}' (known: shared, adam)"
                ));
            }
        };
        Ok(InformationAlignment {
            alpha: config_f64(config, "alpha", 2e-3)?,
            beta: config_f64(config, "beta", 1e-3)?,
            gamma: config_f64(config, "gamma", 1e-3)?,
            optimizer: SgdMomentum::new(
                config_f64(config, "momentum", 0.9)?,
                config_bool(config, "nesterov", false)?,
            ),
            alignment,
        })
    }

    fn init_layer(&mut self, _spec: &LayerSpec, weight: &Tensor) -> Result<Vec<Tensor>, String> {
        let b = draw_like(weight).set_requires_grad(true);
        if let Some(a) = &mut self.alignment {
            a.feedback.insert(b.data_ptr() as usize);
        }
        Ok(vec![b])
    }

    fn forward(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        extra: &[Tensor],
    ) -> Result<Tensor, String> {
        fa_forward(spec, x, weight, bias, feedback_weights(spec, extra)?)
    }

    fn local_loss(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        extra: &[Tensor],
    ) -> Result<Option<Tensor>, String> {
        let b = feedback_weights(spec, extra)?;
        information_alignment_loss(
            spec,
            x,
            weight,
            bias,
            b,
            [self.alpha, self.beta, self.gamma],
        )
        .map(Some)
    }

    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        let Some(a) = &mut self.alignment else {
            return self.optimizer.step(params, lr);
        };
        let (feedback, forward): (Vec<Tensor>, Vec<Tensor>) = params
            .iter()
            .map(Tensor::shallow_clone)
            .partition(|p| a.feedback.contains(&(p.data_ptr() as usize)));
        if feedback.len() != a.feedback.len() {
            return Err(format!(
                "the alignment optimizer found {} of the {} feedback tensors among the parameters (were they moved or copied after init_layer?)",
                feedback.len(),
                a.feedback.len()
            ));
        }
        self.optimizer.step(&forward, lr)?;
        a.adam.step(&feedback, a.lr)
    }
}

lrid_plugin::export_rule!(
    InformationAlignment,
    name = "information-alignment",
    version = "1.1.0"
);
