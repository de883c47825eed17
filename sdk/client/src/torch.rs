//! Recording from `tch::Tensor` (feature `tch`). In: a tch model's tensors in tch's layouts
//! (conv kernels OIHW, linear weights `[out, in]`, activations NCHW). Out: the same snapshots
//! as the slice methods, in the layouts the statistics are defined in (spec §0: conv kernels
//! HWIO, dense kernels `[in, out]`, activations NHWC), plus the layer-wise activity change of
//! spec §1.4 computed with autograd.
//!
//! Layout matters wherever a statistic depends on element order: which units a measurement model
//! keeps, and the per-example rows of activations. Every tensor is copied to host memory as
//! contiguous f32 before it is queued; the device tensor is not held.

use tch::{Device, Kind, Tensor};

use crate::{Error, LayerInfo, Position, Recorder, Result, SnapshotMeasure};

fn tch_error(what: &str, e: tch::TchError) -> Error {
    Error::InvalidArgument(format!("{what}: {e}"))
}

/// A forward kernel in the statistics' layout: conv OIHW → HWIO, linear `[out, in]` →
/// `[in, out]`; a 1-D tensor (a bias-like kernel) as it is.
pub fn tf_weight(weight: &Tensor) -> Result<Tensor> {
    let layout = match weight.dim() {
        4 => weight.f_permute([2, 3, 1, 0]),
        2 => weight.f_permute([1, 0]),
        1 => Ok(weight.shallow_clone()),
        d => {
            return Err(Error::InvalidArgument(format!(
                "a forward kernel has 1 (vector), 2 (linear [out, in]) or 4 (conv OIHW) dimensions; got {d} (shape {:?})",
                weight.size()
            )));
        }
    };
    layout.map_err(|e| tch_error("reordering the kernel", e))
}

/// Activations in the statistics' layout: NCHW → NHWC; `[N, units]` as it is.
pub fn tf_activations(activations: &Tensor) -> Result<Tensor> {
    match activations.dim() {
        4 => activations
            .f_permute([0, 2, 3, 1])
            .map_err(|e| tch_error("reordering the activations", e)),
        d if d >= 2 => Ok(activations.shallow_clone()),
        d => Err(Error::InvalidArgument(format!(
            "activations have a batch axis and at least one unit axis; got {d} dimension(s) (shape {:?})",
            activations.size()
        ))),
    }
}

fn shape_u64(t: &Tensor) -> Vec<u64> {
    t.size().iter().map(|&d| d as u64).collect()
}

/// The [`LayerInfo`] of a layer from its tch kernel and a batch of its outputs (shapes are
/// stored in the statistics' layout).
pub fn layer_info(
    index: u32,
    name: &str,
    position: Position,
    weight: &Tensor,
    activations: &Tensor,
) -> Result<LayerInfo> {
    let weight_shape = shape_u64(&tf_weight(weight)?);
    let activation_shape = shape_u64(&tf_activations(activations)?)[1..].to_vec();
    Ok(LayerInfo {
        index,
        name: name.to_string(),
        position,
        weight_shape,
        activation_shape,
    })
}

/// The values of `t`, row-major, as host f32.
fn host_values(t: &Tensor, what: &str) -> Result<Vec<f32>> {
    let flat = t
        .f_detach()
        .and_then(|t| t.f_to_device(Device::Cpu))
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_reshape([-1]))
        .map_err(|e| tch_error(what, e))?;
    Vec::<f32>::try_from(&flat).map_err(|e| tch_error(what, e))
}

/// The layer-wise activity change of spec §1.4, one value per example:
/// gₙ = (1/|O|) · Σᵢ ∂(Σₒ yₙₒ)/∂xₙᵢ, with y = `forward(x)` the layer's output (bias and the
/// activation it owns included) and x its input exactly as fed to the op.
///
/// One autograd call on the sum of y over the batch (examples do not interact inside a conv or
/// dense op). Gradients flow however the layer routes them, so a feedback-alignment layer gives
/// the value with its feedback weights B. Runs with gradients enabled whatever the caller's mode,
/// and touches no parameter's `.grad`.
pub fn layer_activity_change(
    x: &Tensor,
    forward: impl FnOnce(&Tensor) -> Tensor,
) -> Result<Tensor> {
    let mut forward = Some(forward);
    let mut out = layers_activity_change(std::slice::from_ref(x), |_, x| {
        (forward.take().expect("called once"))(x)
    })?;
    Ok(out.remove(0))
}

/// [`layer_activity_change`] of several layers at once, `forward(i, x)` being layer i's op:
/// every layer's input becomes its own leaf, and one backward pass of Σ over layers of Σ y
/// gives every layer's gradient (each output depends on its own leaf only), which saves an
/// autograd call per layer.
pub fn layers_activity_change(
    inputs: &[Tensor],
    mut forward: impl FnMut(usize, &Tensor) -> Tensor,
) -> Result<Vec<Tensor>> {
    tch::with_grad(|| {
        let mut leaves = Vec::with_capacity(inputs.len());
        let mut totals = Vec::with_capacity(inputs.len());
        let mut outputs = Vec::with_capacity(inputs.len());
        for (i, x) in inputs.iter().enumerate() {
            if x.dim() < 2 {
                return Err(Error::InvalidArgument(format!(
                    "the layer input has a batch axis and at least one more; got shape {:?}",
                    x.size()
                )));
            }
            let x = x
                .f_detach()
                .map_err(|e| tch_error("detaching the layer input", e))?
                .set_requires_grad(true);
            let y = forward(i, &x);
            let examples = x.size()[0];
            if y.dim() < 1 || y.size()[0] != examples {
                return Err(Error::InvalidArgument(format!(
                    "the layer output has the input's {examples} examples first; got shape {:?}",
                    y.size()
                )));
            }
            outputs.push(y.numel() as i64 / examples.max(1));
            let total = y
                .f_sum(Kind::Float)
                .map_err(|e| tch_error("summing the layer output", e))?;
            // libtorch crashes (not throws) on a backward call through a graph-less output.
            if !total.requires_grad() {
                return Err(Error::InvalidArgument(
                    "the layer output does not depend on its input through autograd (computed under no_grad, detached, or not from the input)".into(),
                ));
            }
            totals.push(total);
            leaves.push(x);
        }
        if leaves.is_empty() {
            return Ok(Vec::new());
        }
        let total = Tensor::stack(&totals, 0).sum(Kind::Float);
        let leaf_refs: Vec<&Tensor> = leaves.iter().collect();
        let grads = Tensor::f_run_backward(&[total], &leaf_refs, false, false)
            .map_err(|e| tch_error("differentiating the layer outputs by their inputs", e))?;
        grads
            .iter()
            .zip(&leaves)
            .zip(outputs)
            .map(|((g, x), outputs)| {
                let g = g
                    .f_reshape([x.size()[0], -1])
                    .and_then(|g| g.f_sum_dim_intlist(1, false, Kind::Double))
                    .map_err(|e| tch_error("summing the input gradient", e))?;
                Ok((g / outputs as f64).to_kind(Kind::Float))
            })
            .collect()
    })
}

impl Recorder {
    /// Queues a layer's forward kernel given in tch's layout (see [`tf_weight`]).
    pub fn record_weights_tensor(
        &self,
        point: u32,
        layer: &LayerInfo,
        weight: &Tensor,
    ) -> Result<()> {
        let values = host_values(&tf_weight(weight)?, "copying the kernel")?;
        let header = self.header(point, layer, SnapshotMeasure::Weight, 0, 0);
        self.check_values(&header, values.len())?;
        self.snapshot_owned(header, values)
    }

    /// Queues batch `batch` of a layer's evaluation activations given in tch's layout
    /// (`[N, C, H, W]` or `[N, units]`); N examples.
    pub fn record_activations_tensor(
        &self,
        point: u32,
        layer: &LayerInfo,
        batch: u32,
        activations: &Tensor,
    ) -> Result<()> {
        let examples = activations.size().first().copied().unwrap_or(0) as u64;
        let values = host_values(&tf_activations(activations)?, "copying the activations")?;
        let header = self.header(point, layer, SnapshotMeasure::Act, examples, batch);
        self.check_values(&header, values.len())?;
        self.snapshot_owned(header, values)
    }

    /// Queues batch `batch` of per-example activity changes (`[N]`, as from
    /// [`layer_activity_change`]).
    pub fn record_activity_change_tensor(
        &self,
        point: u32,
        layer: &LayerInfo,
        batch: u32,
        per_example: &Tensor,
    ) -> Result<()> {
        if per_example.dim() != 1 {
            return Err(Error::InvalidArgument(format!(
                "activity change of layer {} ({}): one value per example expected, got shape {:?}",
                layer.index,
                layer.name,
                per_example.size()
            )));
        }
        let values = host_values(per_example, "copying the activity change")?;
        let header = self.header(
            point,
            layer,
            SnapshotMeasure::Gradavg,
            values.len() as u64,
            batch,
        );
        self.check_values(&header, values.len())?;
        self.snapshot_owned(header, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &Tensor) -> bool {
        a.allclose(b, 1e-5, 1e-6, false)
    }

    #[test]
    fn layouts_follow_the_reference() {
        let conv = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).reshape([2, 3, 4, 5]);
        let hwio = tf_weight(&conv).unwrap();
        assert_eq!(hwio.size(), [4, 5, 3, 2]);
        // HWIO[h][w][i][o] == OIHW[o][i][h][w]
        assert_eq!(
            hwio.int64_value(&[3, 1, 2, 1]),
            conv.int64_value(&[1, 2, 3, 1])
        );
        let linear = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        let io = tf_weight(&linear).unwrap();
        assert_eq!(io.size(), [3, 2]);
        assert_eq!(io.int64_value(&[2, 0]), linear.int64_value(&[0, 2]));
        assert!(tf_weight(&Tensor::zeros([2, 2, 2], (Kind::Float, Device::Cpu))).is_err());

        let act = Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, Device::Cpu)).reshape([2, 3, 2, 2]);
        let nhwc = tf_activations(&act).unwrap();
        assert_eq!(nhwc.size(), [2, 2, 2, 3]);
        let values = host_values(&nhwc, "t").unwrap();
        // Example 0, pixel (0, 0): the three channels come first.
        assert_eq!(&values[..3], &[0.0, 4.0, 8.0]);

        let info = layer_info(0, "conv", Position::Early, &conv, &act).unwrap();
        assert_eq!(info.weight_shape, vec![4, 5, 3, 2]);
        assert_eq!(info.activation_shape, vec![2, 2, 3]);
    }

    #[test]
    fn activity_change_of_a_dense_layer_is_the_closed_form() {
        tch::manual_seed(3);
        let w = Tensor::randn([5, 7], (Kind::Float, Device::Cpu)); // [out, in]
        let b = Tensor::randn([5], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([4, 7], (Kind::Float, Device::Cpu));
        // Linear: every example gets Σ_{o,i} W[o,i] / |O|.
        let g = tch::no_grad(|| layer_activity_change(&x, |x| x.linear(&w, Some(&b)))).unwrap();
        let want = w.sum(Kind::Float) / 5.0;
        assert_eq!(g.size(), [4]);
        assert!(close(&g, &want.expand([4], false)), "{g} vs {want}");
        // With a ReLU the layer owns: only active outputs count.
        let g = layer_activity_change(&x, |x| x.linear(&w, Some(&b)).relu()).unwrap();
        let active = x.linear(&w, Some(&b)).gt(0.0).to_kind(Kind::Float); // [N, O]
        let want = active.matmul(&w.sum_dim_intlist(1, false, Kind::Float)) / 5.0;
        assert!(close(&g, &want), "{g} vs {want}");
        // Parameters' gradients are untouched.
        assert!(!w.requires_grad() || !w.grad().defined());
    }

    #[test]
    fn activity_change_of_a_conv_layer_counts_every_input_and_output() {
        tch::manual_seed(4);
        let w = Tensor::randn([3, 2, 3, 3], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([2, 2, 5, 5], (Kind::Float, Device::Cpu));
        // No padding, stride 1: every input pixel (i, j) is used by the outputs whose window
        // covers it; Σ_i ∂Σy/∂x_i = Σ_{o} Σ_{window} W = |positions| · Σ W.
        let g = layer_activity_change(&x, |x| {
            x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        })
        .unwrap();
        let outputs = 3.0 * 3.0 * 3.0; // channels × 3 × 3 positions
        let want = w.sum(Kind::Float) * 9.0 / outputs;
        assert!(close(&g, &want.expand([2], false)), "{g} vs {want}");
    }

    #[test]
    fn several_layers_at_once_equal_one_at_a_time() {
        tch::manual_seed(5);
        let w1 = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let w2 = Tensor::randn([3, 2, 3, 3], (Kind::Float, Device::Cpu));
        let x1 = Tensor::randn([5, 6], (Kind::Float, Device::Cpu));
        let x2 = Tensor::randn([5, 2, 6, 6], (Kind::Float, Device::Cpu));
        let op = |i: usize, x: &Tensor| match i {
            0 => x.matmul(&w1.tr()).relu(),
            _ => x.conv2d(&w2, None::<Tensor>, [2], [1], [1], 1),
        };
        let both = layers_activity_change(&[x1.shallow_clone(), x2.shallow_clone()], op).unwrap();
        let one = layer_activity_change(&x1, |x| op(0, x)).unwrap();
        let two = layer_activity_change(&x2, |x| op(1, x)).unwrap();
        assert!(both[0].allclose(&one, 1e-6, 1e-6, false));
        assert!(both[1].allclose(&two, 1e-6, 1e-6, false));
        assert_eq!(both[1].size(), [5]);
    }

    #[test]
    fn activity_change_of_an_output_without_the_input_is_an_error() {
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let e = layer_activity_change(&x, |_| Tensor::ones([2, 3], (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert!(e.to_string().contains("depend"), "{e}");
    }
}
