//! The `feedback-alignment` learning rule (spec §4.2): every layer gets fixed random feedback
//! weights B (W's shape, drawn like W, never trained); the input gradient flows through B by the
//! detach construction; forward weights (and B, whose gradient is always zero) are stepped by
//! SGD with momentum. Configuration (JSON, all optional): `momentum` (0.9), `nesterov` (false).

use lrid_plugin::{
    LayerSpec, LearningRule, SgdMomentum, config_bool, config_f64, draw_like, fa_forward,
    feedback_weights, tch::Tensor,
};

#[derive(Debug)]
pub struct FeedbackAlignment(SgdMomentum);

impl LearningRule for FeedbackAlignment {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(FeedbackAlignment(SgdMomentum::new(
            config_f64(config, "momentum", 0.9)?,
            config_bool(config, "nesterov", false)?,
        )))
    }

    fn init_layer(&mut self, _spec: &LayerSpec, weight: &Tensor) -> Result<Vec<Tensor>, String> {
        Ok(vec![draw_like(weight)])
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

    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        self.0.step(params, lr)
    }
}

lrid_plugin::export_rule!(
    FeedbackAlignment,
    name = "feedback-alignment",
    version = "1.0.0"
);
