//! Optimizers for rules, with PyTorch's update equations (so a rule matches `torch.optim` and
//! tch's `nn::Sgd` / `nn::Adam` step for step). State is kept per parameter position.

use tch::Tensor;

fn check_len(state_len: usize, n: usize) -> Result<(), String> {
    if state_len != 0 && state_len != n {
        return Err(format!(
            "the optimizer was stepped with {state_len} parameters before and {n} now; pass the same parameters, in the same order, every step"
        ));
    }
    Ok(())
}

/// SGD with momentum (PyTorch's: `buf = μ·buf + g`, first step `buf = g`; Nesterov optional).
#[derive(Debug)]
pub struct SgdMomentum {
    pub momentum: f64,
    pub nesterov: bool,
    buffers: Vec<Option<Tensor>>,
}

impl SgdMomentum {
    pub fn new(momentum: f64, nesterov: bool) -> Self {
        Self {
            momentum,
            nesterov,
            buffers: Vec::new(),
        }
    }

    pub fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        check_len(self.buffers.len(), params.len())?;
        self.buffers.resize_with(params.len(), || None);
        tch::no_grad(|| {
            for (p, buf) in params.iter().zip(&mut self.buffers) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let b = match buf.take() {
                    None => g.copy(),
                    Some(b) => b * self.momentum + &g,
                };
                let d = if self.nesterov {
                    &g + &b * self.momentum
                } else {
                    b.shallow_clone()
                };
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(d * lr)).map_err(|e| e.to_string())?;
                *buf = Some(b);
            }
            Ok(())
        })
    }
}

/// Adam (PyTorch's, coupled: the gradient already holds any L2 term).
#[derive(Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    state: Vec<Option<(Tensor, Tensor, i32)>>,
}

impl Adam {
    pub fn new(beta1: f64, beta2: f64, eps: f64) -> Self {
        Self {
            beta1,
            beta2,
            eps,
            state: Vec::new(),
        }
    }

    pub fn step(&mut self, params: &[Tensor], lr: f64) -> Result<(), String> {
        check_len(self.state.len(), params.len())?;
        self.state.resize_with(params.len(), || None);
        tch::no_grad(|| {
            for (p, st) in params.iter().zip(&mut self.state) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let (m, v, t) = st
                    .take()
                    .unwrap_or_else(|| (Tensor::zeros_like(p), Tensor::zeros_like(p), 0));
                let t = t + 1;
                let m = m * self.beta1 + &g * (1.0 - self.beta1);
                let v = v * self.beta2 + (&g * &g) * (1.0 - self.beta2);
                let bc1 = 1.0 - self.beta1.powi(t);
                let bc2 = 1.0 - self.beta2.powi(t);
                let denom = v.sqrt() / bc2.sqrt() + self.eps;
                let mut p = p.shallow_clone();
                let _ = p
                    .f_sub_(&((&m / denom) * (lr / bc1)))
                    .map_err(|e| e.to_string())?;
                *st = Some((m, v, t));
            }
            Ok(())
        })
    }
}
