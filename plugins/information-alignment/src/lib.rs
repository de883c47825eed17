//! The `information-alignment` learning rule (spec §4.3, Kunin et al. 2020): feedback alignment's
//! routing plus a layer-local loss on the feedback weights B,
//! R = α·Amp(r, p) + β·Null(f) + γ·Decay(W, B), computed from the detached layer input, kernel
//! and bias, so B learns only from R and W only from the task loss. W, biases and B are stepped
//! by the same SGD with momentum. Configuration (JSON, all optional): `alpha` (2e-3), `beta`
//! (1e-3), `gamma` (1e-3), `momentum` (0.9), `nesterov` (false).

use lrid_plugin::{
    LayerSpec, LearningRule, SgdMomentum, config_bool, config_f64, draw_like, fa_forward,
    feedback_weights, information_alignment_loss, tch::Tensor,
};

#[derive(Debug)]
pub struct InformationAlignment {
    alpha: f64,
    beta: f64,
    gamma: f64,
    optimizer: SgdMomentum,
}

impl LearningRule for InformationAlignment {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(InformationAlignment {
            alpha: config_f64(config, "alpha", 2e-3)?,
            beta: config_f64(config, "beta", 1e-3)?,
            gamma: config_f64(config, "gamma", 1e-3)?,
            optimizer: SgdMomentum::new(
                config_f64(config, "momentum", 0.9)?,
                config_bool(config, "nesterov", false)?,
            ),
        })
    }

    fn init_layer(&mut self, _spec: &LayerSpec, weight: &Tensor) -> Result<Vec<Tensor>, String> {
        Ok(vec![draw_like(weight).set_requires_grad(true)])
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
        self.optimizer.step(params, lr)
    }
}

lrid_plugin::export_rule!(
    InformationAlignment,
    name = "information-alignment",
    version = "1.0.0"
);
