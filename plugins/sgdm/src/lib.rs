//! The `sgdm` learning rule (spec §4.1): plain backprop, SGD with momentum.
//! Configuration (JSON, all optional): `momentum` (0.9), `nesterov` (false).

use lrid_plugin::{LearningRule, SgdMomentum, config_bool, config_f64, tch::Tensor};

#[derive(Debug)]
pub struct Sgdm(SgdMomentum);

impl LearningRule for Sgdm {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(Sgdm(SgdMomentum::new(
            config_f64(config, "momentum", 0.9)?,
            config_bool(config, "nesterov", false)?,
        )))
    }

    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        self.0.step(params, lr)
    }
}

lrid_plugin::export_rule!(Sgdm, name = "sgdm", version = "1.0.0");
