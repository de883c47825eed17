//! An example learning rule that lrid does not ship: **sign symmetry** (Liao, Leibo & Poggio
//! 2016). The input gradient of every layer flows through sign(W) — the forward kernel's signs,
//! recomputed at every step, without its magnitudes — instead of W; the kernel itself gets its
//! ordinary local gradient and SGD with momentum. No extra state.
//!
//! Build it and drop it into the plugins folder of a running daemon:
//! `cargo build --release -p lrid-rule-sign-symmetry && cp target/release/liblrid_rule_sign_symmetry.so lrid-data/plugins/`.
//! Configuration (JSON, all optional): `momentum` (0.9), `nesterov` (false).

use lrid_plugin::{
    LayerSpec, LearningRule, SgdMomentum, config_bool, config_f64, fa_forward, tch::Tensor,
};

#[derive(Debug)]
pub struct SignSymmetry(SgdMomentum);

impl LearningRule for SignSymmetry {
    fn new(config: &lrid_plugin::serde_json::Value) -> Result<Self, String> {
        Ok(SignSymmetry(SgdMomentum::new(
            config_f64(config, "momentum", 0.9)?,
            config_bool(config, "nesterov", false)?,
        )))
    }

    fn forward(
        &mut self,
        spec: &LayerSpec,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        _extra: &[Tensor],
    ) -> Result<Tensor, String> {
        fa_forward(spec, x, weight, bias, &weight.detach().sign())
    }

    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        self.0.step(params, lr)
    }
}

lrid_plugin::export_rule!(SignSymmetry, name = "sign-symmetry", version = "0.1.0");
