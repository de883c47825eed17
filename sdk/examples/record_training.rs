//! Records a small tch CNN into `lrid serve` while it trains.
//!
//! ```text
//! lrid serve &                                    # or any running daemon
//! cargo run --release -p lrid-sdk --features tch --example record_training -- \
//!     --server http://127.0.0.1:50051 --run-id demo-cnn --steps 200 --points 5
//! lrid sql "SELECT point, layer_name, weightraw_norm, actraw_mean, gradavgraw_id
//!           FROM observables WHERE run_id = 'demo-cnn' ORDER BY point, layer_index"
//! ```
//!
//! The task: 16×16 grey images of one of four oriented bars, with random position, contrast and
//! pixel noise. The network: conv(1→8, 3×3)+ReLU → max-pool → conv(8→16, 3×3)+ReLU → max-pool →
//! dense(256→4), trained by SGD with momentum. At evenly spaced trajectory points (initialisation
//! included) it records, for every layer, on a fixed evaluation batch in inference mode: the
//! forward kernel, the layer's outputs, and the layer-wise activity change (spec §1.4).

use clap::Parser;
use lrid_sdk::torch::{layer_activity_change, layer_info};
use lrid_sdk::{LayerInfo, Position, Recorder, RecorderConfig, RunLabels};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[derive(Parser, Debug)]
struct Args {
    /// `lrid serve` address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Bearer token of the daemon, if it has one.
    #[arg(long, env = "LRID_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value = "record-training")]
    run_id: String,
    /// Training steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Trajectory points, evenly spaced from step 0 to the last step.
    #[arg(long, default_value_t = 5)]
    points: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: i64,
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

/// `n` images of 16×16 with labels 0..4 (bar orientation).
fn images(n: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Float, Device::Cpu);
    let labels = Tensor::randint(4, [n], (Kind::Int64, Device::Cpu));
    let coords = Tensor::arange(16, opts);
    let yy = coords.view([16, 1]).expand([16, 16], false);
    let xx = coords.view([1, 16]).expand([16, 16], false);
    let offset =
        Tensor::randint_low(-3, 4, [n, 1, 1], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
    let contrast = Tensor::rand([n, 1, 1], opts) * 0.8 + 0.6;
    // Distance of each pixel from a line through the centre (+ offset) at 0°, 45°, 90° or 135°.
    let dist = Tensor::stack(
        &[
            &yy - 7.5,
            &xx - 7.5,
            (&yy - &xx) / 2f64.sqrt(),
            (&yy + &xx - 15.0) / 2f64.sqrt(),
        ],
        0,
    ); // [4, 16, 16]
    let d = dist.index_select(0, &labels) - offset; // [n, 16, 16]
    let bar = (-(&d * &d) / 2.0).exp() * contrast;
    let noisy = bar + Tensor::randn([n, 16, 16], opts) * 0.2;
    (noisy.unsqueeze(1), labels)
}

struct Net {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl Net {
    fn new(vs: &nn::Path<'_>) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Self {
            conv1: nn::conv2d(vs / "conv1", 1, 8, 3, cfg),
            conv2: nn::conv2d(vs / "conv2", 8, 16, 3, cfg),
            fc: nn::linear(vs / "fc", 16 * 4 * 4, 4, Default::default()),
        }
    }

    /// The observed layers' (input, output) pairs and the logits.
    fn layers(&self, x: &Tensor) -> (Vec<(Tensor, Tensor)>, Tensor) {
        let y1 = self.conv1.forward(x).relu();
        let x2 = y1.max_pool2d_default(2);
        let y2 = self.conv2.forward(&x2).relu();
        let x3 = y2.max_pool2d_default(2).flatten(1, -1);
        let y3 = self.fc.forward(&x3);
        (
            vec![
                (x.shallow_clone(), y1.shallow_clone()),
                (x2, y2.shallow_clone()),
                (x3, y3.shallow_clone()),
            ],
            y3,
        )
    }

    /// Layer `i`'s own op (kernel, bias, and the ReLU it owns).
    fn layer_op(&self, i: usize, x: &Tensor) -> Tensor {
        match i {
            0 => self.conv1.forward(x).relu(),
            1 => self.conv2.forward(x).relu(),
            _ => self.fc.forward(x),
        }
    }

    fn kernels(&self) -> [&Tensor; 3] {
        [&self.conv1.ws, &self.conv2.ws, &self.fc.ws]
    }
}

const NAMES: [&str; 3] = ["conv1", "conv2", "fc"];

/// Any error, printed by `main`.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn record_point(
    rec: &Recorder,
    net: &Net,
    infos: &[LayerInfo],
    eval: &Tensor,
    point: u32,
    step: usize,
) -> Result<()> {
    let (pairs, _) = tch::no_grad(|| net.layers(eval));
    for (i, ((x, y), info)) in pairs.iter().zip(infos).enumerate() {
        rec.record_weights_tensor(point, info, net.kernels()[i])?;
        rec.record_activations_tensor(point, info, 0, y)?;
        let g = layer_activity_change(x, |x| net.layer_op(i, x))?;
        rec.record_activity_change_tensor(point, info, 0, &g)?;
    }
    rec.complete_point(point, Some(step as i64))?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.points < 2 || args.steps == 0 {
        return Err(
            "--points needs at least 2 (initialisation and the end) and --steps at least 1".into(),
        );
    }
    tch::manual_seed(args.seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root());
    let mut opt = nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(&vs, 0.05)?;
    let (eval, eval_labels) = images(64);

    let mut config = RecorderConfig::new(&args.server);
    config.token = args.token.clone();
    let labels = RunLabels {
        learning_rule: Some("sgdm".into()),
        architecture: Some("tiny-cnn".into()),
        task: Some("oriented-bars".into()),
        batch_size: Some(args.batch_size as u32),
        model_seed: Some(args.seed),
        data_seed: Some(args.seed),
        hyperparameters: Some(
            serde_json::json!({"lr": 0.05, "momentum": 0.9, "steps": args.steps}),
        ),
    };
    let rec = Recorder::open(config, &args.run_id, labels)?;
    let (pairs, _) = tch::no_grad(|| net.layers(&eval));
    let infos = pairs
        .iter()
        .enumerate()
        .map(|(i, (_, y))| {
            layer_info(
                i as u32,
                NAMES[i],
                Position::of(i, NAMES.len()),
                net.kernels()[i],
                y,
            )
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;

    // Points at steps round(k · steps / (points − 1)), k = 0..points.
    let point_steps: Vec<usize> = (0..args.points)
        .map(|k| ((k * args.steps) as f64 / (args.points - 1) as f64).round() as usize)
        .collect();
    let mut next_point = 0;
    for step in 0..=args.steps {
        while next_point < point_steps.len() && point_steps[next_point] == step {
            record_point(&rec, &net, &infos, &eval, next_point as u32, step)?;
            next_point += 1;
        }
        if step == args.steps {
            break;
        }
        let (x, labels) = images(args.batch_size);
        let (_, logits) = net.layers(&x);
        let loss = logits.cross_entropy_for_logits(&labels);
        opt.backward_step(&loss);
    }
    let accuracy = tch::no_grad(|| {
        let (_, logits) = net.layers(&eval);
        logits
            .argmax(-1, false)
            .eq_tensor(&eval_labels)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    });
    rec.close()?;
    println!(
        "run '{}': {} steps, {} points × {} layers recorded; evaluation accuracy {:.2}",
        args.run_id,
        args.steps,
        args.points,
        NAMES.len(),
        accuracy
    );
    Ok(())
}
