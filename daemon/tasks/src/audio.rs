//! An audio-like task standing in for Word-Speaker-Noise (spec §5.7, whose dataset is not
//! public): procedural words spoken by procedural speakers over background noise, rendered
//! straight to a cochleagram-like image (ERB-spaced frequency channels × time frames, one
//! channel, 0.3-power compression), labelled by word.
//!
//! A word is a sequence of 2–4 vowel-like segments, each with its own three formant frequencies
//! and duration; a speaker scales the formants (vocal-tract length) and sets the pitch contour.
//! A channel's energy at a frame is the formant envelope at the channel's centre frequency times
//! the harmonic comb of the pitch, smeared by the channel's bandwidth (resolved harmonics in low
//! channels, unresolved in high ones), under a segment envelope with onsets and offsets. The
//! background is spectrally tilted noise with bursts, at a random signal-to-noise ratio.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Generated, Result};

/// Speakers every word is drawn with.
pub const SPEAKERS: u64 = 24;

/// The generated audio-like task.
#[derive(Debug, Clone)]
pub struct Audio {
    seed: u64,
    resolution: i64,
    classes: i64,
    /// Centre frequency (Hz) of each channel, ERB-spaced from 20 Hz to 8 kHz.
    centres: Vec<f32>,
    words: Vec<Vec<Segment>>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    formants: [f32; 3],
    /// Fraction of the word's duration.
    share: f32,
}

/// Streams of word and speaker definitions (independent of the examples').
const WORD_STREAM: u64 = 2;
const SPEAKER_STREAM: u64 = 3;

fn erb_number(f: f32) -> f32 {
    21.4 * (1.0 + 0.004_37 * f).log10()
}

fn erb_frequency(e: f32) -> f32 {
    (10f32.powf(e / 21.4) - 1.0) / 0.004_37
}

fn rng(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream << 48 | index);
    rng
}

impl Audio {
    /// `classes` words (2 to 200) rendered as `resolution` channels × `resolution` frames.
    pub fn new(seed: u64, resolution: i64, classes: i64) -> Result<Self> {
        if !(2..=200).contains(&classes) {
            return Err(Error::InvalidArgument(format!(
                "the audio task has 2 to 200 words; got {classes}"
            )));
        }
        if resolution < 8 {
            return Err(Error::InvalidArgument(format!(
                "the audio task renders at least 8 channels × 8 frames; got {resolution}"
            )));
        }
        let (lo, hi) = (erb_number(20.0), erb_number(8000.0));
        let centres = (0..resolution)
            .map(|c| erb_frequency(lo + (hi - lo) * c as f32 / (resolution - 1) as f32))
            .collect();
        let words = (0..classes as u64)
            .map(|w| {
                let mut r = rng(seed, WORD_STREAM, w);
                let n = r.random_range(2..=4);
                let shares: Vec<f32> = (0..n).map(|_| r.random_range(0.5..1.5f32)).collect();
                let total: f32 = shares.iter().sum();
                shares
                    .iter()
                    .map(|s| Segment {
                        formants: [
                            r.random_range(250.0..900.0f32),
                            r.random_range(850.0..2500.0f32),
                            r.random_range(2200.0..3500.0f32),
                        ],
                        share: s / total,
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            seed,
            resolution,
            classes,
            centres,
            words,
        })
    }
}

impl Generated for Audio {
    fn example_shape(&self) -> [i64; 3] {
        [1, self.resolution, self.resolution]
    }

    fn class_count(&self) -> i64 {
        self.classes
    }

    /// One example: `[1, R, R]` (channel-major: row = frequency channel, low first; column =
    /// frame) and its word, a pure function of (seed, stream, index).
    fn render(&self, stream: u64, index: usize) -> (Vec<f32>, i64) {
        let mut r = rng(self.seed, stream, index as u64);
        let word = r.random_range(0..self.classes);
        let speaker = r.random_range(0..SPEAKERS);
        let mut s = rng(self.seed, SPEAKER_STREAM, speaker);
        let tract = s.random_range(0.88..1.14f32);
        let pitch = s.random_range(90.0..260.0f32);
        // Per utterance: timing, pitch glide, level, noise.
        let start = r.random_range(0.0..0.15f32);
        let length = r.random_range(0.65..0.8f32);
        let glide = r.random_range(-0.25..0.25f32);
        let snr_db = r.random_range(5.0..25.0f32);
        let tilt = r.random_range(-1.0..0.5f32);
        let bursts: Vec<(f32, f32, f32)> = (0..r.random_range(0..3))
            .map(|_| {
                (
                    r.random_range(0.0..1.0f32),
                    r.random_range(0.02..0.1f32),
                    r.random_range(0.5..2.0f32),
                )
            })
            .collect();
        let n = self.resolution as usize;
        let segments = &self.words[word as usize];
        let mut out = vec![0f32; n * n];
        let noise_level = 10f32.powf(-snr_db / 20.0);
        for t in 0..n {
            let time = (t as f32 + 0.5) / n as f32;
            let local = (time - start) / length;
            // Which segment, and the envelope (10% ramps at the word's edges and between
            // segments).
            let (voiced, formants) = if (0.0..1.0).contains(&local) {
                let mut acc = 0.0;
                let mut chosen = segments[segments.len() - 1];
                let mut edge = 1.0f32;
                for seg in segments {
                    if local < acc + seg.share {
                        chosen = *seg;
                        let into = (local - acc) / seg.share;
                        edge = (into / 0.1).min((1.0 - into) / 0.1).clamp(0.2, 1.0);
                        break;
                    }
                    acc += seg.share;
                }
                let ramp = (local / 0.1).min((1.0 - local) / 0.1).clamp(0.0, 1.0);
                (ramp * edge, chosen.formants.map(|f| f * tract))
            } else {
                (0.0, [0.0; 3])
            };
            let f0 = pitch * (1.0 + glide * (local.clamp(0.0, 1.0) - 0.5));
            let burst: f32 = bursts
                .iter()
                .map(|&(at, width, gain)| gain * (-((time - at) / width).powi(2)).exp())
                .sum();
            for (c, &fc) in self.centres.iter().enumerate() {
                let bandwidth = 24.7 * (0.004_37 * fc + 1.0);
                let mut speech = 0.0;
                if voiced > 0.0 {
                    let envelope: f32 = formants
                        .iter()
                        .enumerate()
                        .map(|(k, &f)| {
                            let bw = 60.0 + 40.0 * k as f32 + 0.05 * f;
                            (1.0 - 0.25 * k as f32) / (1.0 + ((fc - f) / bw).powi(2))
                        })
                        .sum();
                    // Harmonics are resolved where the channel is narrower than the pitch.
                    let resolved = (-(bandwidth / f0).powi(2)).exp();
                    let comb = 0.5 + 0.5 * (std::f32::consts::TAU * fc / f0).cos();
                    let above_pitch = if fc < 0.8 * f0 { 0.05 } else { 1.0 };
                    speech = voiced * envelope * above_pitch * ((1.0 - resolved) + resolved * comb);
                }
                let octave = (fc / 1000.0).log2();
                let background = noise_level
                    * 10f32.powf(tilt * octave / 10.0)
                    * (1.0 + burst)
                    * r.random_range(0.6..1.4f32);
                out[c * n + t] = (speech + background).max(0.0).powf(0.3);
            }
        }
        (out, word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;
    use tch::Tensor;

    #[test]
    fn deterministic_one_channel_and_labelled_by_word() {
        let a = Audio::new(3, 24, 6).unwrap();
        assert_eq!(a.shape(), [1, 24, 24]);
        let (x1, y1) = a.batch(&[5, 9, 100]);
        let (x2, y2) = a.batch(&[5, 9, 100]);
        assert_eq!(x1.size(), [3, 1, 24, 24]);
        assert!(x1.equal(&x2) && y1.equal(&y2));
        assert!(x1.isfinite().all().int64_value(&[]) == 1);
        assert!(x1.min().double_value(&[]) >= 0.0);
        let (e1, _) = a.eval(4);
        let (e2, _) = Audio::new(4, 24, 6).unwrap().eval(4);
        assert!(!e1.equal(&e2), "another seed gives other words");
        assert!(Audio::new(0, 24, 1).is_err() && Audio::new(0, 4, 6).is_err());
    }

    #[test]
    fn words_are_recognisable_across_speakers_and_noise() {
        // A nearest-class-mean classifier on the images, fitted on 400 utterances and tested
        // on 200 others, must beat chance (25%) by far: the word is in the image.
        let a = Audio::new(1, 32, 4).unwrap();
        let (x, y) = a.batch(&(0..600).collect::<Vec<_>>());
        let x = x.flatten(1, -1);
        let (train, test) = (x.narrow(0, 0, 400), x.narrow(0, 400, 200));
        let (ytrain, ytest) = (y.narrow(0, 0, 400), y.narrow(0, 400, 200));
        let means = Tensor::stack(
            &(0..4)
                .map(|w| {
                    let idx = ytrain.eq(w).nonzero().squeeze_dim(1);
                    train
                        .index_select(0, &idx)
                        .mean_dim(0, false, tch::Kind::Float)
                })
                .collect::<Vec<_>>(),
            0,
        );
        let distances = test.unsqueeze(1) - means.unsqueeze(0);
        let predicted = distances
            .square()
            .sum_dim_intlist(2, false, tch::Kind::Float)
            .argmin(1, false);
        let accuracy = predicted
            .eq_tensor(&ytest)
            .to_kind(tch::Kind::Float)
            .mean(tch::Kind::Float);
        let accuracy = accuracy.double_value(&[]);
        assert!(accuracy > 0.6, "nearest-mean accuracy {accuracy}");
    }
}
