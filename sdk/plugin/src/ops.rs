//! Layer ops for rules: plain backprop and the feedback-alignment routing of spec §4.2.

use tch::Tensor;

use crate::{LayerKind, LayerSpec};

/// The input zero-padded explicitly when the padding is asymmetric; the padding left to the conv.
fn padded(spec: &LayerSpec, x: &Tensor) -> Result<(Tensor, [i64; 2]), String> {
    if spec.padding_extra == [0, 0] {
        return Ok((x.shallow_clone(), spec.padding));
    }
    let [ph, pw] = spec.padding;
    let [eh, ew] = spec.padding_extra;
    let x = x
        .f_constant_pad_nd([pw, pw + ew, ph, ph + eh])
        .map_err(|e| format!("layer {}: padding: {e}", spec.index))?;
    Ok((x, [0, 0]))
}

fn op(spec: &LayerSpec, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor, String> {
    let r = match spec.kind {
        LayerKind::Dense => x.f_linear(w, b),
        LayerKind::Conv => {
            let (x, padding) = padded(spec, x)?;
            x.f_conv2d(w, b, spec.stride, padding, [1, 1], 1)
        }
    };
    r.map_err(|e| format!("layer {} ({:?}): {e}", spec.index, spec.kind))
}

/// The layer's op with ordinary gradients: dense `x Wᵀ + b`, conv `conv2d(x, W) + b`.
pub fn plain_forward(
    spec: &LayerSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor, String> {
    op(spec, x, w, b)
}

/// Feedback alignment by the detach construction (spec §4.2): the value of `op(x, W) + b`, the
/// input gradient through `feedback` (B, W's tch shape) instead of W, W's and the bias's own
/// local gradients, and no gradient to B.
pub fn fa_forward(
    spec: &LayerSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    feedback: &Tensor,
) -> Result<Tensor, String> {
    if feedback.size() != w.size() {
        return Err(format!(
            "layer {}: feedback weights {:?} do not have the kernel's shape {:?}",
            spec.index,
            feedback.size(),
            w.size()
        ));
    }
    let z = op(spec, x, &feedback.detach(), None)?;
    let y = op(spec, &x.detach(), w, b)?;
    Ok(y + (&z - z.detach()))
}

/// Feedback weights drawn independently of `w` from a uniform distribution with `w`'s standard
/// deviation: exactly the initializer of tch's default (Kaiming-uniform) layers when called at
/// initialisation, the same variance for any other. Uses libtorch's global generator, so the
/// host's seed decides it. Not trainable (callers opt in with `set_requires_grad`).
pub fn draw_like(w: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let std = w.std(false).double_value(&[]);
        let bound = 3f64.sqrt() * std;
        Tensor::rand_like(w) * (2.0 * bound) - bound
    })
}

/// Information alignment's layer-local loss (spec §4.3) with the reference defaults (biases in
/// both projections, no activations, no standardisation):
/// R = α·Amp(r, p) + β·Null(f) + γ·Decay(W, B), with x, W and the bias detached, so only B
/// receives its gradient. `coefficients` = [α, β, γ].
pub fn information_alignment_loss(
    spec: &LayerSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    feedback: &Tensor,
    coefficients: [f64; 3],
) -> Result<Tensor, String> {
    let [alpha, beta, gamma] = coefficients;
    let (xs, ws) = (x.detach(), w.detach());
    let bs = b.map(Tensor::detach);
    let n = xs.size()[0] as f64;
    let r = op(spec, &xs, &ws, bs.as_ref())?; // forward projection
    let p = op(spec, &xs, feedback, bs.as_ref())?; // backward projection
    // Forward reconstruction f = r through B back to the input's shape.
    let f = match spec.kind {
        LayerKind::Dense => r.f_matmul(feedback),
        LayerKind::Conv => {
            // Transposed conv back to the padded input's shape, then the padding cropped
            // (spec §4.3: TF pads SAME layers internally, so their input is the unpadded one).
            let (h, wd) = (xs.size()[2], xs.size()[3]);
            let [ph, pw] = spec.padding;
            let [eh, ew] = spec.padding_extra;
            let (full_h, full_w) = (h + 2 * ph + eh, wd + 2 * pw + ew);
            let (k0, k1) = (feedback.size()[2], feedback.size()[3]);
            let out = |len: i64, i: usize, k: i64| (len - 1) * spec.stride[i] + k;
            let extra = [
                full_h - out(r.size()[2], 0, k0),
                full_w - out(r.size()[3], 1, k1),
            ];
            r.f_conv_transpose2d(
                feedback,
                None::<Tensor>,
                spec.stride,
                [0, 0],
                extra,
                1,
                [1, 1],
            )
            .and_then(|f| f.f_narrow(2, ph, h))
            .and_then(|f| f.f_narrow(3, pw, wd))
        }
    }
    .map_err(|e| format!("layer {}: reconstruction: {e}", spec.index))?;
    let amp = -(&p * &r).sum(tch::Kind::Float) / n;
    let null = (&f * &f).sum(tch::Kind::Float) / n;
    let decay = (&ws * &ws).sum(tch::Kind::Float) + (feedback * feedback).sum(tch::Kind::Float);
    Ok(amp * alpha + null * beta + decay * gamma)
}
