//! SimCLR's augmentations (Chen et al. 2020; spec §5.7): random resized crop (area 0.08–1,
//! aspect 3/4–4/3) back to the input size, horizontal flip, colour distortion of strength 1
//! (jitter of brightness, contrast, saturation 0.8 and hue 0.2 with p = 0.8; grayscale with
//! p = 0.2) and Gaussian blur (p = 0.5, σ ∈ [0.1, 2.0], kernel ≈ 10% of the side). Colour steps
//! that need three channels are skipped on one-channel inputs.

use rand::Rng;
use tch::{Kind, Tensor};

/// Two augmented views of each image of `images` (`[N, C, H, W]`, values in [0, 1]):
/// `[view 1 of all N; view 2 of all N]`, `[2N, C, H, W]` (the order of spec §5.7). `blur`:
/// SimCLR blurs in training only.
pub fn simclr_views(images: &Tensor, rng: &mut impl Rng, blur: bool) -> Tensor {
    let n = images.size()[0];
    let views: Vec<Tensor> = (0..2)
        .flat_map(|_| (0..n).map(|i| images.get(i)).collect::<Vec<_>>())
        .map(|img| simclr_view(&img, rng, blur))
        .collect();
    Tensor::stack(&views, 0)
}

/// One augmented view of one `[C, H, W]` image.
pub fn simclr_view(img: &Tensor, rng: &mut impl Rng, blur: bool) -> Tensor {
    let [c, h, w] = <[i64; 3]>::try_from(img.size()).expect("an image is [C, H, W]");
    let mut x = resized_crop(img, rng);
    if rng.random_bool(0.5) {
        x = x.flip([2]);
    }
    if rng.random_bool(0.8) {
        x = colour_jitter(&x, rng, c == 3);
    }
    if c == 3 && rng.random_bool(0.2) {
        x = gray(&x).expand([3, h, w], false).contiguous();
    }
    if blur && rng.random_bool(0.5) {
        x = gaussian_blur(&x, rng.random_range(0.1..2.0), h.max(w));
    }
    x
}

fn resized_crop(img: &Tensor, rng: &mut impl Rng) -> Tensor {
    let size = img.size();
    let (h, w) = (size[1], size[2]);
    let area = (h * w) as f64;
    let mut crop = (0, 0, h, w);
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..1.0);
        let ratio = rng
            .random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln())
            .exp();
        let cw = (target * ratio).sqrt().round() as i64;
        let ch = (target / ratio).sqrt().round() as i64;
        if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
            crop = (
                rng.random_range(0..=h - ch),
                rng.random_range(0..=w - cw),
                ch,
                cw,
            );
            break;
        }
    }
    let (top, left, ch, cw) = crop;
    img.narrow(1, top, ch)
        .narrow(2, left, cw)
        .unsqueeze(0)
        .upsample_bilinear2d([h, w], false, None, None)
        .squeeze_dim(0)
}

fn gray(x: &Tensor) -> Tensor {
    let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114])
        .to_device(x.device())
        .view([3, 1, 1]);
    (x * weights).sum_dim_intlist(0, true, Kind::Float)
}

fn colour_jitter(x: &Tensor, rng: &mut impl Rng, colour: bool) -> Tensor {
    let strength = 1.0;
    let mut x = x * rng.random_range((1.0 - 0.8 * strength)..(1.0 + 0.8 * strength));
    let mean = x.mean(Kind::Float);
    x = (&x - &mean) * rng.random_range((1.0 - 0.8 * strength)..(1.0 + 0.8 * strength)) + &mean;
    if colour {
        let g = gray(&x);
        x = &g + (&x - &g) * rng.random_range((1.0 - 0.8 * strength)..(1.0 + 0.8 * strength));
        // Hue: rotate the chroma plane of YIQ by up to ±0.2 turns.
        let angle = rng.random_range(-0.2..0.2) * std::f64::consts::TAU;
        let (s, c) = (angle.sin() as f32, angle.cos() as f32);
        let to_yiq = Tensor::from_slice(&[
            0.299f32, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312,
        ])
        .view([3, 3]);
        let rotate = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, c, -s, 0.0, s, c]).view([3, 3]);
        let m = to_yiq
            .inverse()
            .matmul(&rotate)
            .matmul(&to_yiq)
            .to_device(x.device());
        let [_, h, w] = <[i64; 3]>::try_from(x.size()).expect("[C, H, W]");
        x = m.matmul(&x.reshape([3, -1])).reshape([3, h, w]);
    }
    x.clamp(0.0, 1.0)
}

fn gaussian_blur(x: &Tensor, sigma: f64, side: i64) -> Tensor {
    let radius = ((side as f64 * 0.1) / 2.0).round().max(1.0) as i64;
    let k = 2 * radius + 1;
    let taps = Tensor::arange(k, (Kind::Float, x.device())) - radius as f64;
    let kernel = (-(&taps * &taps) / (2.0 * sigma * sigma)).exp();
    let kernel = &kernel / kernel.sum(Kind::Float);
    let c = x.size()[0];
    let horizontal = kernel.view([1, 1, 1, k]).expand([c, 1, 1, k], false);
    let vertical = kernel.view([1, 1, k, 1]).expand([c, 1, k, 1], false);
    let x = x
        .unsqueeze(0)
        .reflection_pad2d([radius, radius, radius, radius]);
    x.conv2d(&horizontal, None::<Tensor>, 1, 0, 1, c)
        .conv2d(&vertical, None::<Tensor>, 1, 0, 1, c)
        .squeeze_dim(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn views_have_the_input_shape_and_differ() {
        let images = Tensor::rand([4, 3, 20, 20], (Kind::Float, tch::Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let v = simclr_views(&images, &mut rng, true);
        assert_eq!(v.size(), [8, 3, 20, 20]);
        assert!(v.isfinite().all().int64_value(&[]) == 1);
        assert!(v.min().double_value(&[]) >= -1e-6);
        // The two views of an image differ (different crops/jitter).
        assert!(!v.get(0).allclose(&v.get(4), 1e-4, 1e-4, false));
        // Deterministic given the generator.
        let again = simclr_views(&images, &mut ChaCha8Rng::seed_from_u64(0), true);
        assert!(v.equal(&again));
        // One-channel inputs work too.
        let mono = Tensor::rand([2, 1, 16, 16], (Kind::Float, tch::Device::Cpu));
        assert_eq!(simclr_views(&mono, &mut rng, true).size(), [4, 1, 16, 16]);
    }

    #[test]
    fn blur_keeps_constants_and_smooths() {
        let flat = Tensor::full([3, 16, 16], 0.4, (Kind::Float, tch::Device::Cpu));
        let b = gaussian_blur(&flat, 1.5, 16);
        assert!(b.allclose(&flat, 1e-5, 1e-5, false));
        let noisy = Tensor::rand([3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let b = gaussian_blur(&noisy, 1.5, 32);
        assert!(b.std(true).double_value(&[]) < noisy.std(true).double_value(&[]));
    }

    #[test]
    fn hue_rotation_by_zero_is_the_identity_on_gray() {
        // A gray image has no chroma: jitter keeps it gray (channels equal).
        let g = Tensor::full([3, 8, 8], 0.5, (Kind::Float, tch::Device::Cpu));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let j = colour_jitter(&g, &mut rng, true);
        assert!(j.get(0).allclose(&j.get(1), 1e-4, 1e-4, false));
        assert!(j.get(1).allclose(&j.get(2), 1e-4, 1e-4, false));
    }
}
