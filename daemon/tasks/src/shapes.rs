//! Procedurally rendered images: several classes of shapes and textures with nuisance
//! variation (position, scale, rotation, colours, contrast, pixel noise), at any resolution.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Generated, Result};

/// The classes, in label order.
pub const CLASSES: [&str; 8] = [
    "disk", "square", "triangle", "ring", "cross", "stripes", "checker", "dots",
];

/// The generated image classification task.
#[derive(Debug, Clone)]
pub struct Shapes {
    seed: u64,
    resolution: i64,
    classes: i64,
}

impl Shapes {
    pub fn new(seed: u64, resolution: i64, classes: i64) -> Result<Self> {
        if !(2..=CLASSES.len() as i64).contains(&classes) {
            return Err(Error::InvalidArgument(format!(
                "the shapes task has 2 to {} classes; got {classes}",
                CLASSES.len()
            )));
        }
        if resolution < 8 {
            return Err(Error::InvalidArgument(format!(
                "the shapes task renders at least 8×8 pixels; got {resolution}"
            )));
        }
        Ok(Self {
            seed,
            resolution,
            classes,
        })
    }
}

impl Generated for Shapes {
    fn example_shape(&self) -> [i64; 3] {
        [3, self.resolution, self.resolution]
    }

    fn class_count(&self) -> i64 {
        self.classes
    }

    /// One example: `[3, R, R]` values and its label, a pure function of (seed, stream, index).
    fn render(&self, stream: u64, index: usize) -> (Vec<f32>, i64) {
        // One independent ChaCha stream per (stream, example): any example can be drawn alone.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream << 48 | index as u64);
        let label = rng.random_range(0..self.classes);
        let r = self.resolution as usize;
        // Nuisances.
        let cx = rng.random_range(0.3..0.7f32);
        let cy = rng.random_range(0.3..0.7f32);
        let scale = rng.random_range(0.18..0.32f32);
        let angle = rng.random_range(0.0..std::f32::consts::PI);
        let fg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.5..1.0f32));
        let bg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..0.4f32));
        let contrast = rng.random_range(0.6..1.0f32);
        let noise = rng.random_range(0.02..0.12f32);
        let period = rng.random_range(0.08..0.16f32);
        let (sin, cos) = angle.sin_cos();
        let mut out = vec![0f32; 3 * r * r];
        for py in 0..r {
            for px in 0..r {
                let x = (px as f32 + 0.5) / r as f32 - cx;
                let y = (py as f32 + 0.5) / r as f32 - cy;
                // Rotated, scaled coordinates.
                let u = (x * cos + y * sin) / scale;
                let v = (-x * sin + y * cos) / scale;
                let d = (u * u + v * v).sqrt();
                let inside = match label {
                    0 => d < 1.0,
                    1 => u.abs() < 0.85 && v.abs() < 0.85,
                    2 => v > -0.6 && v < 0.9 - 1.7 * u.abs(),
                    3 => d < 1.0 && d > 0.6,
                    4 => (u.abs() < 0.25 && v.abs() < 1.0) || (v.abs() < 0.25 && u.abs() < 1.0),
                    // Textures over the whole image.
                    5 => ((x * cos + y * sin) / period).floor() as i64 % 2 == 0,
                    6 => {
                        let a = ((x * cos + y * sin) / period).floor() as i64;
                        let b = ((-x * sin + y * cos) / period).floor() as i64;
                        (a + b).rem_euclid(2) == 0
                    }
                    _ => {
                        let a = (x * cos + y * sin) / period;
                        let b = (-x * sin + y * cos) / period;
                        let (fa, fb) = (a - a.round(), b - b.round());
                        fa * fa + fb * fb < 0.09
                    }
                };
                for c in 0..3 {
                    let base = if inside {
                        bg[c] + contrast * (fg[c] - bg[c])
                    } else {
                        bg[c]
                    };
                    // Cheap deterministic noise from the same stream.
                    let n: f32 = rng.random_range(-1.0..1.0);
                    out[c * r * r + py * r + px] = base + noise * n;
                }
            }
        }
        (out, label)
    }
}
