//! The `adam` learning rule (spec §4.1): plain backprop, Adam (coupled L2 through the loss).
//! Configuration (JSON, all optional): `beta1` (0.9), `beta2` (0.999), `eps` (1e-8).

use lrid_plugin::{Adam, LearningRule, config_f64, tch::Tensor};

#[derive(Debug)]
pub struct AdamRule(Adam);

impl LearningRule for AdamRule {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(AdamRule(Adam::new(
            config_f64(config, "beta1", 0.9)?,
            config_f64(config, "beta2", 0.999)?,
            config_f64(config, "eps", 1e-8)?,
        )))
    }

    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        self.0.step(params, lr)
    }
}

lrid_plugin::export_rule!(AdamRule, name = "adam", version = "1.0.0");
