//! TensorFlow's operator semantics where tch differs (spec §5.1).

use tch::Tensor;

/// TF "SAME" padding of one axis: (before, after), before = ⌊total/2⌋.
fn same_pads(len: i64, k: i64, stride: i64) -> (i64, i64) {
    let out = (len + stride - 1) / stride;
    let total = ((out - 1) * stride + k - len).max(0);
    (total / 2, total - total / 2)
}

fn pad_same(x: &Tensor, k: i64, stride: i64, value: f64) -> Tensor {
    let size = x.size();
    let (t, b) = same_pads(size[2], k, stride);
    let (l, r) = same_pads(size[3], k, stride);
    x.pad([l, r, t, b], "constant", Some(value))
}

/// Max pooling with TF "SAME" padding (padded cells never win: they are −∞).
pub fn same_max_pool(x: &Tensor, k: i64, stride: i64) -> Tensor {
    pad_same(x, k, stride, f64::NEG_INFINITY).max_pool2d(
        [k, k],
        [stride, stride],
        [0, 0],
        [1, 1],
        false,
    )
}

/// Average pooling with TF "SAME" padding: each window divides by its non-padded cells.
pub fn same_avg_pool(x: &Tensor, k: i64, stride: i64) -> Tensor {
    let sum = pad_same(x, k, stride, 0.0).avg_pool2d(
        [k, k],
        [stride, stride],
        [0, 0],
        false,
        true,
        None::<i64>,
    );
    let size = x.size();
    let ones = Tensor::ones([1, 1, size[2], size[3]], (x.kind(), x.device()));
    let count = pad_same(&ones, k, stride, 0.0).avg_pool2d(
        [k, k],
        [stride, stride],
        [0, 0],
        false,
        true,
        None::<i64>,
    );
    sum / count
}

/// TF `local_response_normalization`: x / (κ + α·Σ_{|j−c|≤r} x_j²)^β over channels (α is not
/// divided by the window size).
pub fn lrn(x: &Tensor, radius: i64, bias: f64, alpha: f64, beta: f64) -> Tensor {
    let sq = (x * x).unsqueeze(1); // [N, 1, C, H, W]
    let padded = sq.constant_pad_nd([0, 0, 0, 0, radius, radius]);
    let window = 2 * radius + 1;
    let sum = padded.avg_pool3d(
        [window, 1, 1],
        [1, 1, 1],
        [0, 0, 0],
        false,
        true,
        None::<i64>,
    ) * window as f64;
    x / (sum.squeeze_dim(1) * alpha + bias).pow_tensor_scalar(beta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_pads(32, 3, 2), (0, 1)); // out 16: asymmetric, extra after
        assert_eq!(same_pads(33, 3, 2), (1, 1)); // out 17
        assert_eq!(same_pads(8, 4, 1), (1, 2)); // AlexNet conv4
        let x = Tensor::ones([1, 2, 7, 8], (Kind::Float, Device::Cpu));
        // Averages of ones stay one: padded cells are not counted.
        let a = same_avg_pool(&x, 3, 2);
        assert_eq!(a.size(), [1, 2, 4, 4]);
        assert!((a - 1.0).abs().max().double_value(&[]) < 1e-6);
        // Max pooling never picks padding, even of negative inputs.
        let m = same_max_pool(&(x * -3.0), 3, 2);
        assert_eq!(m.size(), [1, 2, 4, 4]);
        assert!((m + 3.0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn lrn_is_tensorflow_s() {
        let x =
            Tensor::arange(2 * 5 * 2 * 2, (Kind::Float, Device::Cpu)).reshape([2, 5, 2, 2]) / 10.0;
        let y = lrn(&x, 1, 1.0, 0.5, 0.75);
        // Channel 0 of example 0 at (0, 0): window = channels 0 and 1.
        let v = |c: i64| x.double_value(&[0, c, 0, 0]);
        let want = v(0) / (1.0 + 0.5 * (v(0) * v(0) + v(1) * v(1))).powf(0.75);
        assert!((y.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-6);
        // Channel 2: channels 1..=3.
        let want = v(2) / (1.0 + 0.5 * (v(1) * v(1) + v(2) * v(2) + v(3) * v(3))).powf(0.75);
        assert!((y.double_value(&[0, 2, 0, 0]) - want).abs() < 1e-6);
    }
}
