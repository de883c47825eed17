//! Test fixture: a learning rule that panics in `forward` (and in `step` when configured with
//! `{"panic_in_step": true}`), to prove that a panicking plugin fails its run, not the host.

use lrid_plugin::{LayerSpec, LearningRule, config_bool, tch::Tensor};

#[derive(Debug)]
pub struct Panicking {
    panic_in_step: bool,
}

impl LearningRule for Panicking {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(Panicking {
            panic_in_step: config_bool(config, "panic_in_step", false)?,
        })
    }

    fn forward(
        &mut self,
        spec: &LayerSpec,
        _x: &Tensor,
        _weight: &Tensor,
        _bias: Option<&Tensor>,
        _extra: &[Tensor],
    ) -> Result<Tensor, String> {
        panic!("deliberate panic in forward of layer {}", spec.index)
    }

    fn step(&mut self, _params: &[Tensor], _lr: f64) -> Result<(), String> {
        if self.panic_in_step {
            panic!("deliberate panic in step");
        }
        Err("this fixture does not train".into())
    }
}

lrid_plugin::export_rule!(Panicking, name = "testing-panicking", version = "0.0.1");
