//! # lrid-trainer
//!
//! Trains one network of the virtual-experiment grid. In: a [`TrainConfig`] (architecture, task,
//! batch size, seeds, epochs, trajectory points, device), a learning-rule instance loaded from a
//! plugin, and optionally an SDK [`Recorder`]. Out: the trained network's observables at evenly
//! spaced trajectory points (initialisation included) streamed through the recorder, and a
//! [`TrainReport`] (steps, losses, evaluation accuracy, time per step).
//!
//! The rule decides everything a learning rule decides (spec §4): each observed layer's extra
//! tensors (`init_layer`), how its op routes gradients (`forward`, through [`RuleRouter`]), its
//! local losses and the parameter update (`step`). The trainer owns the rest: the task loss plus
//! the architecture's L2 regulariser λ·Σw²/2 on forward kernels and biases (not on the rule's
//! extra tensors nor BatchNorm), one backward pass, zeroing gradients. At each trajectory point
//! the network runs in inference mode on a fixed evaluation set, and every observed layer's
//! kernel, outputs and layer-wise activity change (spec §1.4, through the rule's routing) are
//! recorded, and with the point's completion its diagnostics (table `diagnostics`): each layer's
//! `w_change` = ‖W − W₀‖ / ‖W₀‖ and, for rules with feedback weights (a layer's first extra
//! tensor B, W's shape), `b_change` = ‖B − B₀‖ / ‖B₀‖ and `angle_bw`, the angle in degrees
//! between B and W flattened (W₀, B₀: at initialisation).

mod arch;
mod objective;

use std::time::{Duration, Instant};

pub use arch::Arch;
use lrid_models::{Network, ObservedLayer, Router, Trace};
use lrid_plugins::RuleInstance;
use lrid_sdk::torch::layer_info;
use lrid_sdk::{Diagnostic, LayerInfo, Recorder};
use lrid_tasks::Dataset;
pub use objective::{TaskName, nt_xent};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Model(#[from] lrid_models::Error),
    #[error(transparent)]
    Task(#[from] lrid_tasks::Error),
    #[error(transparent)]
    Rule(#[from] lrid_plugins::Error),
    #[error("recording: {0}")]
    Record(lrid_sdk::Error),
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    #[error("training diverged at step {step}: {what} (lower the learning rate with --lr)")]
    Diverged { step: usize, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// Not `#[from]`: that would also make them the error's source, printing them twice in chains.
impl From<lrid_sdk::Error> for Error {
    fn from(e: lrid_sdk::Error) -> Self {
        Error::Record(e)
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

/// The training defaults of `lrid train`, the sweep files and [`TrainConfig::default`], in
/// one place.
pub mod defaults {
    pub const BATCH_SIZE: usize = 128;
    pub const EPOCHS: f64 = 10.0;
    pub const TRAIN_EXAMPLES: usize = 8192;
    pub const POINTS: usize = 21;
    pub const EVAL_EXAMPLES: usize = 256;
    pub const WIDTH: f64 = 1.0;
    /// SimCLR's NT-Xent temperature (the reference code's default).
    pub const TEMPERATURE: f64 = 1.0;
    /// The batch size a base learning rate is stated for ([`super::scaled_lr`]).
    pub const LR_BATCH_SIZE: usize = 128;
    /// Base rates at [`LR_BATCH_SIZE`] when none is given: Adam, and every other rule.
    pub const ADAM_LR: f64 = 1e-3;
    pub const SGD_LR: f64 = 0.01;
}

/// What to train and how long. Unset seeds mean "unseeded" (the paper's `None`): a seed is
/// drawn and reported, so the run can still be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub arch: Arch,
    pub task: TaskName,
    pub batch_size: usize,
    pub model_seed: Option<i64>,
    pub data_seed: Option<i64>,
    /// Passes over the training set (fractions allowed).
    pub epochs: f64,
    /// Size of the training set of generated tasks (CIFAR-10: its 50,000 images).
    pub train_examples: usize,
    /// Trajectory points, evenly spaced from initialisation to the last step.
    pub points: usize,
    /// Examples of the fixed evaluation set the observables are measured on.
    pub eval_examples: usize,
    /// Input height = width; unset: the task's own (32 for generated tasks).
    pub resolution: Option<i64>,
    /// Multiplies every layer's filter count (1.0 = the paper's networks).
    pub width: f64,
    /// Learning rate; unset: the rule's default for this batch size ([`default_lr`]).
    pub lr: Option<f64>,
    /// Classes (words) of a generated task; unset: shapes 8, audio 16.
    pub classes: Option<i64>,
    /// NT-Xent temperature τ of SimCLR (the reference code's default, 1.0).
    pub temperature: f64,
    /// Folder of the CIFAR-10 binary files (task `cifar10`).
    pub cifar_dir: Option<std::path::PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::KNet4,
            task: TaskName::Shapes,
            batch_size: defaults::BATCH_SIZE,
            model_seed: None,
            data_seed: None,
            epochs: defaults::EPOCHS,
            train_examples: defaults::TRAIN_EXAMPLES,
            points: defaults::POINTS,
            eval_examples: defaults::EVAL_EXAMPLES,
            resolution: None,
            width: defaults::WIDTH,
            lr: None,
            classes: None,
            temperature: defaults::TEMPERATURE,
            cifar_dir: None,
        }
    }
}

impl TrainConfig {
    /// A network small enough for unit tests.
    pub fn test_config() -> Self {
        Self {
            batch_size: 8,
            model_seed: Some(0),
            data_seed: Some(0),
            epochs: 1.0,
            train_examples: 32,
            points: 3,
            eval_examples: 8,
            resolution: Some(16),
            width: 0.25,
            ..Self::default()
        }
    }

    /// Steps per epoch (the last partial batch is dropped, at least one step).
    pub fn steps_per_epoch(&self) -> usize {
        (self.train_examples / self.batch_size.max(1)).max(1)
    }

    /// Total training steps.
    pub fn total_steps(&self) -> usize {
        ((self.epochs * self.steps_per_epoch() as f64).round() as usize).max(1)
    }

    /// The step of each trajectory point: round(k · steps / (points − 1)).
    pub fn point_steps(&self) -> Vec<usize> {
        let total = self.total_steps();
        (0..self.points)
            .map(|k| ((k * total) as f64 / (self.points - 1) as f64).round() as usize)
            .collect()
    }

    /// Refuses settings that cannot train, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.batch_size == 0 {
            return bad("the batch size must be at least 1".into());
        }
        if self.points < 2 {
            return bad(format!(
                "a trajectory needs at least 2 points (initialisation and the end); got {}",
                self.points
            ));
        }
        if !(self.epochs > 0.0 && self.epochs.is_finite()) {
            return bad(format!("epochs must be positive; got {}", self.epochs));
        }
        if self.train_examples < self.batch_size && self.task != TaskName::Cifar10 {
            return bad(format!(
                "the training set ({} examples) is smaller than one batch ({})",
                self.train_examples, self.batch_size
            ));
        }
        let resolution = self.resolution.unwrap_or(32);
        let min = self.arch.min_resolution();
        if resolution < min {
            return bad(format!(
                "{} needs inputs of at least {min}×{min}; the resolution is {resolution}",
                self.arch
            ));
        }
        if self.eval_examples == 0 {
            return bad("the evaluation set needs at least 1 example".into());
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return bad(format!(
                "the width multiplier must be positive; got {}",
                self.width
            ));
        }
        if let Some(lr) = self.lr
            && !(lr > 0.0 && lr.is_finite())
        {
            return bad(format!("the learning rate must be positive; got {lr}"));
        }
        Ok(())
    }
}

/// The item of `all` whose name is `s`, or an error listing the known names.
fn parse_named<T: Copy>(s: &str, all: &[T], name: fn(T) -> &'static str, what: &str) -> Result<T> {
    all.iter().copied().find(|&t| name(t) == s).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|&t| name(t)).collect();
        Error::InvalidArgument(format!(
            "unknown {what} '{s}' (known: {})",
            known.join(", ")
        ))
    })
}

/// The learning rate at `batch_size` of a base rate stated at batch 128: scaled linearly with
/// the batch size (spec §4: "rescaled for each batch size"). Sweep files state base rates.
pub fn scaled_lr(base: f64, batch_size: usize) -> f64 {
    base * batch_size as f64 / defaults::LR_BATCH_SIZE as f64
}

/// The default learning rate of a rule at a batch size: [`scaled_lr`] of Adam's 1e-3, or 0.01
/// for SGD-like rules (sgdm, feedback and information alignment, plugins).
pub fn default_lr(rule: &str, batch_size: usize) -> f64 {
    let base = if rule == "adam" {
        defaults::ADAM_LR
    } else {
        defaults::SGD_LR
    };
    scaled_lr(base, batch_size)
}

/// Where training stands, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub total_steps: usize,
    /// Mean task loss of the steps since the last report.
    pub loss: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: usize,
    pub points: usize,
    pub model_seed: i64,
    pub data_seed: i64,
    pub lr: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Classification tasks: accuracy on the evaluation set after training.
    pub eval_accuracy: Option<f64>,
    /// Mean wall time of a training step (forward, backward, update), excluding recording.
    pub step_seconds: f64,
    /// Wall time spent measuring and queueing observables.
    pub record_seconds: f64,
    pub total_seconds: f64,
}

/// Routes every observed layer's op through a learning rule; while training, also collects
/// the rule's local losses.
#[derive(Debug)]
pub struct RuleRouter<'a> {
    rule: &'a mut RuleInstance,
    local_losses: Option<Vec<Tensor>>,
}

impl<'a> RuleRouter<'a> {
    /// `collect_local_losses`: call the rule's `local_loss` for each layer (training steps).
    pub fn new(rule: &'a mut RuleInstance, collect_local_losses: bool) -> Self {
        Self {
            rule,
            local_losses: collect_local_losses.then(Vec::new),
        }
    }

    /// The local losses collected so far.
    pub fn take_local_losses(&mut self) -> Vec<Tensor> {
        self.local_losses.take().unwrap_or_default()
    }
}

impl Router for RuleRouter<'_> {
    fn op(&mut self, layer: &ObservedLayer, x: &Tensor) -> Result<Tensor, String> {
        let bias = layer.bias.as_ref();
        let y = self
            .rule
            .forward(&layer.spec, x, &layer.weight, bias, &layer.extra)
            .map_err(|e| e.to_string())?;
        if let Some(losses) = &mut self.local_losses
            && let Some(l) = self
                .rule
                .local_loss(&layer.spec, x, &layer.weight, bias, &layer.extra)
                .map_err(|e| e.to_string())?
        {
            losses.push(l);
        }
        Ok(y)
    }
}

/// A seed for an unseeded run.
pub fn draw_seed() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 1) as i64
}

/// One network being trained.
struct Run {
    net: Box<dyn Network>,
    task: Box<dyn Dataset>,
    objective: objective::Objective,
    device: Device,
    params: Vec<Tensor>,
    /// Forward kernels and biases (the L2 term's tensors).
    regularised: Vec<Tensor>,
    eval: (Tensor, Tensor),
    /// Each observed layer's kernel W₀ and feedback weights B₀ (if any) at initialisation.
    initial: Vec<(Tensor, Option<Tensor>)>,
}

/// Builds the network, initialises the rule's per-layer tensors.
fn prepare(
    config: &TrainConfig,
    rule: &mut RuleInstance,
    device: Device,
    model_seed: i64,
) -> Result<Run> {
    config.validate()?;
    let task = config.task.open(config)?;
    let [channels, resolution, _] = task.shape();
    let objective = config.task.objective(config.temperature);
    tch::manual_seed(model_seed);
    let size = lrid_models::ModelSize {
        resolution,
        channels,
        classes: task.classes(),
        width: config.width,
    };
    let mut net = config.arch.build(size, objective.head(), device)?;
    for layer in net.layers_mut() {
        let extra = rule.init_layer(&layer.spec, &layer.weight)?;
        layer.extra = extra
            .into_iter()
            .map(|t| t.to_device(device))
            .collect::<Vec<_>>();
    }
    let initial = tch::no_grad(|| {
        net.layers()
            .iter()
            .map(|l| {
                let b = feedback_kernel(l).map(|b| b.detach().copy());
                (l.weight.detach().copy(), b)
            })
            .collect()
    });
    let mut params = Vec::new();
    let mut regularised = Vec::new();
    for layer in net.layers() {
        params.extend(layer.parameters());
        regularised.push(layer.weight.shallow_clone());
        regularised.extend(layer.bias.iter().map(Tensor::shallow_clone));
    }
    params.extend(net.other_parameters());
    let (x, y) = task.eval(config.eval_examples);
    // SimCLR's observables too are measured on the plain evaluation images (spec §6.12).
    let eval = (x.to_device(device), y.to_device(device));
    Ok(Run {
        net,
        task,
        objective,
        device,
        params,
        regularised,
        eval,
        initial,
    })
}

/// A layer's feedback kernel B: the rule's first extra tensor, when it has the kernel's shape
/// (feedback alignment, information alignment: B is applied by the same op as W, so entry i of
/// B and of W belong to the same connection).
fn feedback_kernel(layer: &ObservedLayer) -> Option<&Tensor> {
    layer
        .extra
        .first()
        .filter(|b| b.size() == layer.weight.size())
}

/// The point's diagnostics, without gradient, on the current tensors: every layer's `w_change`,
/// and `b_change` and `angle_bw` of layers with a feedback kernel. A ratio whose denominator is
/// zero (an all-zero kernel) is left out rather than sent as a non-finite value.
fn layer_diagnostics(run: &Run) -> Vec<Diagnostic> {
    let norm = |t: &Tensor| t.norm().double_value(&[]);
    let ratio = |num: f64, den: f64| (den > 0.0 && num.is_finite()).then(|| num / den);
    tch::no_grad(|| {
        let mut out = Vec::new();
        for (layer, (w0, b0)) in run.net.layers().iter().zip(&run.initial) {
            let mut push = |name: &str, value: Option<f64>| {
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    out.push(Diagnostic {
                        layer_index: layer.spec.index,
                        name: name.into(),
                        value,
                    });
                }
            };
            let w = layer.weight.to_kind(Kind::Double);
            let w0 = w0.to_kind(Kind::Double);
            push("w_change", ratio(norm(&(&w - &w0)), norm(&w0)));
            if let (Some(b), Some(b0)) = (feedback_kernel(layer), b0) {
                let b = b.to_kind(Kind::Double);
                let b0 = b0.to_kind(Kind::Double);
                push("b_change", ratio(norm(&(&b - &b0)), norm(&b0)));
                let cos = ratio(
                    (&b * &w).sum(Kind::Double).double_value(&[]),
                    norm(&b) * norm(&w),
                );
                push(
                    "angle_bw",
                    cos.map(|c| c.clamp(-1.0, 1.0).acos().to_degrees()),
                );
            }
        }
        out
    })
}

/// Trains one network with `rule`; with a recorder, records `config.points` trajectory points.
/// `progress` is called after every step.
pub fn train(
    config: &TrainConfig,
    rule: &mut RuleInstance,
    device: Device,
    recorder: Option<&Recorder>,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainReport> {
    let started = Instant::now();
    let model_seed = config.model_seed.unwrap_or_else(draw_seed);
    let data_seed = config.data_seed.unwrap_or_else(draw_seed);
    let rule_name = rule.plugin().name.clone();
    let lr = config
        .lr
        .unwrap_or_else(|| default_lr(&rule_name, config.batch_size));
    let run = prepare(config, rule, device, model_seed)?;
    let lambda = config.arch.l2(config.task);
    let total = config.total_steps();
    let point_steps = config.point_steps();
    let mut infos: Option<Vec<LayerInfo>> = None;
    let mut order: Vec<usize> = Vec::new();
    let mut shuffle = ChaCha8Rng::seed_from_u64(data_seed as u64);
    let examples = config.train_examples.min(run.task.len());
    let mut next_point = 0;
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut train_time = Duration::ZERO;
    let mut record_time = Duration::ZERO;
    for step in 0..=total {
        while next_point < point_steps.len() && point_steps[next_point] == step {
            if let Some(rec) = recorder {
                check_finite(&run, step)?;
                let t = Instant::now();
                record_point(&run, rule, rec, &mut infos, next_point as u32, step)?;
                record_time += t.elapsed();
            }
            next_point += 1;
        }
        if step == total {
            break;
        }
        let t = Instant::now();
        let epoch_pos = (step % config.steps_per_epoch()) * config.batch_size;
        if epoch_pos == 0 {
            order = (0..examples).collect();
            order.shuffle(&mut shuffle);
        }
        let indices = &order[epoch_pos..epoch_pos + config.batch_size];
        let loss = train_step(&run, rule, indices, lambda, lr, data_seed, step)?;
        train_time += t.elapsed();
        if step == 0 {
            first_loss = loss;
        }
        last_loss = loss;
        progress(Progress {
            step: step + 1,
            total_steps: total,
            loss,
        });
    }
    let eval_accuracy = run.objective.accuracy(&*run.net, rule, &run.eval)?;
    if let Some(rec) = recorder {
        rec.flush()?;
    }
    Ok(TrainReport {
        steps: total,
        points: config.points,
        model_seed,
        data_seed,
        lr,
        first_loss,
        last_loss,
        eval_accuracy,
        step_seconds: train_time.as_secs_f64() / total as f64,
        record_seconds: record_time.as_secs_f64(),
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One step: forward in training mode, loss = task + L2 + Σ local, backward, the rule's update,
/// gradients zeroed. Returns the task loss.
fn train_step(
    run: &Run,
    rule: &mut RuleInstance,
    indices: &[usize],
    lambda: f64,
    lr: f64,
    data_seed: i64,
    step: usize,
) -> Result<f64> {
    let (x, labels) = run.task.batch(indices);
    let x = run
        .objective
        .train_input(&x, data_seed, step)
        .to_device(run.device);
    let labels = labels.to_device(run.device);
    let mut router = RuleRouter::new(rule, true);
    let out = run.net.forward(&x, &mut router, true, None)?;
    let task_loss = run.objective.loss(&out, &labels);
    // Task loss + λ/2·Σw² + the rule's local losses (summed out of place: `+=` would be an
    // in-place add into the task loss's storage).
    let mut terms = vec![task_loss.shallow_clone()];
    if lambda > 0.0 {
        let squares: Vec<Tensor> = run
            .regularised
            .iter()
            .map(|w| w.square().sum(Kind::Float))
            .collect();
        terms.push(Tensor::stack(&squares, 0).sum(Kind::Float) * (lambda / 2.0));
    }
    terms.extend(
        router
            .take_local_losses()
            .into_iter()
            .map(|l| l.sum(Kind::Float)),
    );
    let loss = Tensor::stack(&terms, 0).sum(Kind::Float);
    let value = task_loss.double_value(&[]);
    if !value.is_finite() {
        return Err(Error::Diverged {
            step,
            what: format!("the loss is {value}"),
        });
    }
    loss.f_backward()?;
    rule.step(&run.params, lr)?;
    for p in &run.params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.f_zero_()?;
        }
    }
    Ok(value)
}

/// Refuses to go on (or record) once an update made a parameter non-finite.
fn check_finite(run: &Run, step: usize) -> Result<()> {
    let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
    for layer in run.net.layers() {
        if !layer.parameters().iter().all(finite) {
            return Err(Error::Diverged {
                step,
                what: format!("layer {}'s parameters are no longer finite", layer.name),
            });
        }
    }
    if !run.net.other_parameters().iter().all(finite) {
        return Err(Error::Diverged {
            step,
            what: "normalisation parameters are no longer finite".into(),
        });
    }
    Ok(())
}

/// Makes each observed layer's input a leaf of its own before the rule's op: one backward pass
/// of the sum of every layer's output then gives every layer's activity change (spec §1.4), as
/// the rule routes it, from the same forward pass that gives the activations.
struct LeafRouter<'a> {
    inner: &'a mut dyn Router,
    leaves: Vec<Tensor>,
}

impl Router for LeafRouter<'_> {
    fn op(&mut self, layer: &ObservedLayer, x: &Tensor) -> Result<Tensor, String> {
        let leaf = x.detach().set_requires_grad(true);
        let y = self.inner.op(layer, &leaf)?;
        self.leaves.push(leaf);
        Ok(y)
    }
}

/// Every observed layer's (output, per-example activity change) on `x`, in inference mode, with
/// each layer's op computed by `router`.
pub fn observe_layers(
    net: &dyn Network,
    router: &mut dyn Router,
    x: &Tensor,
) -> Result<Vec<(Tensor, Tensor)>> {
    let mut router = LeafRouter {
        inner: router,
        leaves: Vec::new(),
    };
    let mut trace = Trace::new();
    tch::with_grad(|| {
        let _logits = net.forward(x, &mut router, false, Some(&mut trace))?;
        let sums: Vec<Tensor> = trace.iter().map(|(_, y)| y.sum(Kind::Float)).collect();
        let total = Tensor::stack(&sums, 0).sum(Kind::Float);
        // libtorch crashes (not throws) on a backward call through a graph-less output.
        if !total.requires_grad() {
            return Err(Error::InvalidArgument(
                "the rule's layer outputs do not depend on their inputs through autograd".into(),
            ));
        }
        let leaves: Vec<&Tensor> = router.leaves.iter().collect();
        let grads = Tensor::f_run_backward(&[total], &leaves, false, false)?;
        trace
            .iter()
            .zip(&grads)
            .map(|((_, y), g)| {
                let examples = y.size()[0];
                let outputs = y.numel() as i64 / examples.max(1);
                let per_example =
                    g.f_reshape([examples, -1])?
                        .f_sum_dim_intlist(1, false, Kind::Double)?
                        / outputs as f64;
                Ok((y.detach(), per_example.to_kind(Kind::Float)))
            })
            .collect()
    })
}

/// Records every observed layer at one trajectory point, in inference mode on the evaluation
/// set: the kernel, the outputs and the layer-wise activity change (through the rule's routing).
fn record_point(
    run: &Run,
    rule: &mut RuleInstance,
    rec: &Recorder,
    infos: &mut Option<Vec<LayerInfo>>,
    point: u32,
    step: usize,
) -> Result<()> {
    let layers = run.net.layers();
    // Several evaluation batches form one pass; memory stays bounded on large networks.
    const EVAL_BATCH: i64 = 128;
    let n = run.eval.0.size()[0];
    for (batch, start) in (0..n).step_by(EVAL_BATCH as usize).enumerate() {
        let x = run.eval.0.narrow(0, start, EVAL_BATCH.min(n - start));
        let observed = observe_layers(&*run.net, &mut RuleRouter::new(rule, false), &x)?;
        if infos.is_none() {
            *infos = Some(
                layers
                    .iter()
                    .zip(&observed)
                    .map(|(l, (y, _))| layer_info(l.spec.index, &l.name, l.position, &l.weight, y))
                    .collect::<Result<_, _>>()?,
            );
        }
        let infos = infos.as_ref().expect("set above");
        for ((layer, (output, change)), info) in layers.iter().zip(&observed).zip(infos) {
            if batch == 0 {
                rec.record_weights_tensor(point, info, &layer.weight)?;
            }
            rec.record_activations_tensor(point, info, batch as u32, output)?;
            rec.record_activity_change_tensor(point, info, batch as u32, change)?;
        }
    }
    rec.complete_point_with_diagnostics(point, Some(step as i64), layer_diagnostics(run))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use lrid_models::{Backprop, KNet, ModelSize, ResNet, ResNetVersion};
    use lrid_sdk::torch::layer_activity_change;
    use tch::Device;

    use super::*;

    #[test]
    fn one_pass_observation_equals_one_layer_at_a_time() {
        tch::manual_seed(0);
        let size = ModelSize {
            resolution: 32,
            channels: 3,
            classes: 5,
            width: 0.125,
        };
        let nets: [Box<dyn Network>; 2] = [
            Box::new(KNet::new(3, true, size, Device::Cpu).unwrap()),
            Box::new(ResNet::new(18, ResNetVersion::V1, size, Device::Cpu).unwrap()),
        ];
        for net in nets {
            let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
            let observed = observe_layers(&*net, &mut Backprop, &x).unwrap();
            let mut trace = Trace::new();
            let _ =
                tch::no_grad(|| net.forward(&x, &mut Backprop, false, Some(&mut trace))).unwrap();
            assert_eq!(observed.len(), net.layers().len());
            for (((y, g), (input, output)), layer) in observed.iter().zip(&trace).zip(net.layers())
            {
                assert!(y.allclose(output, 1e-5, 1e-6, false), "{}", layer.name);
                let expected =
                    layer_activity_change(input, |x| layer.forward(&mut Backprop, x).unwrap())
                        .unwrap();
                assert!(
                    g.allclose(&expected, 1e-4, 1e-7, false),
                    "{}: {g:?} vs {expected:?}",
                    layer.name
                );
                // No parameter collects a gradient.
                assert!(!layer.weight.grad().defined(), "{}", layer.name);
            }
        }
    }

    #[test]
    fn steps_points_and_settings() {
        let c = TrainConfig {
            train_examples: 100,
            batch_size: 32,
            epochs: 2.0,
            points: 5,
            ..TrainConfig::test_config()
        };
        assert_eq!(c.steps_per_epoch(), 3);
        assert_eq!(c.total_steps(), 6);
        assert_eq!(c.point_steps(), [0, 2, 3, 5, 6]);
        let bad = |f: fn(&mut TrainConfig), what: &str| {
            let mut c = TrainConfig::test_config();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        bad(|c| c.points = 1, "at least 2 points");
        bad(|c| c.batch_size = 0, "batch size");
        bad(|c| c.epochs = 0.0, "epochs");
        bad(|c| c.lr = Some(-1.0), "learning rate");
        bad(|c| c.train_examples = 4, "smaller than one batch");
        bad(|c| c.arch = Arch::AlexNet, "at least 35×35");
        assert_eq!(default_lr("adam", 256), 2e-3);
        assert_eq!(default_lr("sgdm", 64), 0.005);
    }
}
