//! The reference initialisers (spec §5.1), drawn from libtorch's global generator (the model
//! seed), as trainable tensors.

use tch::{Device, Kind, Tensor};

/// Normal(0, std²), untruncated (TF `random_normal_initializer`).
pub(crate) fn normal(shape: &[i64], std: f64, device: Device) -> Tensor {
    (Tensor::randn(shape, (Kind::Float, device)) * std).set_requires_grad(true)
}

/// Normal(0, std²) truncated at ±2 std (TF `truncated_normal_initializer`): redraws outside.
pub(crate) fn truncated_normal(shape: &[i64], std: f64, device: Device) -> Tensor {
    let mut t = Tensor::randn(shape, (Kind::Float, device));
    loop {
        let outside = t.abs().gt(2.0);
        if outside.any().int64_value(&[]) == 0 {
            break;
        }
        t = t.where_self(
            &outside.logical_not(),
            &Tensor::randn(shape, (Kind::Float, device)),
        );
    }
    (t * std).set_requires_grad(true)
}

/// Glorot uniform: limit √(6/(fan_in + fan_out)); conv fans include the window (OIHW or
/// `[out, in]`).
pub(crate) fn glorot(shape: &[i64], device: Device) -> Tensor {
    let window: i64 = shape[2..].iter().product();
    let (fan_in, fan_out) = (shape[1] * window, shape[0] * window);
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    (Tensor::rand(shape, (Kind::Float, device)) * (2.0 * limit) - limit).set_requires_grad(true)
}

/// A bias of `n` equal values.
pub(crate) fn constant(n: i64, value: f64, device: Device) -> Tensor {
    Tensor::full([n], value, (Kind::Float, device)).set_requires_grad(true)
}
