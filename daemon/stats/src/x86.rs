//! AVX2 + FMA kernels of the two passes for f32 input (the usual case: what training jobs
//! send). Same arithmetic as the portable bodies in `group.rs` — every value widened to f64,
//! sums and moments accumulated in f64 — written with explicit vectors, because the compiler
//! does not vectorise the portable bodies well (spills and scalar code in the moment loop).
//!
//! Each pass handles whole groups of eight values; the caller runs the portable body on the
//! tail and merges. Min/max are taken in f32 (widening is monotone, so they are the same
//! values). The histogram is kept in `hist_copies(bits)` interleaved copies so that runs of equal
//! buckets (the zeros of ReLU activations) do not serialise on one counter; the caller sums
//! them.

use std::arch::x86_64::*;

use crate::group::{Moments, Plan, Sums, hist_copies, pass1_tail, pass2_flagged};

/// Whether the CPU can run these kernels.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512VL: the same 256-bit kernels then get 32 vector registers
/// instead of 16, so that pass 2's accumulators stay out of memory.
fn has_avx512vl() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// The two kernels, compiled for a set of target features.
macro_rules! kernels {
    ($features:literal, $pass1:ident, $pass2:ident) => {
        /// Pass 1 over the first `data.len() / 8 * 8` values, then the portable body on the rest.
        /// `hist` has `hist_copies(bits) << bits` counters.
        #[target_feature(enable = $features)]
        fn $pass1(data: &[f32], bits: u32, hist: &mut [u32]) -> Sums {
            let hsum = |v: __m256d| {
                let mut a = [0.0f64; 4];
                // SAFETY: `a` holds four f64, the size of one unaligned 256-bit store.
                unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
                (a[0] + a[1]) + (a[2] + a[3])
            };
            let hfold_ps = |v: __m256, f: fn(f32, f32) -> f32| {
                let mut a = [0.0f32; 8];
                // SAFETY: `a` holds eight f32, the size of one unaligned 256-bit store.
                unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
                a.into_iter().reduce(f).expect("eight lanes")
            };
            let size = 1usize << bits;
            assert!(hist.len() >= hist_copies(bits) * size);
            let whole = data.len() / 8 * 8;
            let sign_d = _mm256_set1_pd(-0.0);
            let sign_s = _mm256_set1_ps(-0.0);
            let inf = _mm256_set1_ps(f32::INFINITY);
            let top = _mm256_set1_epi32(i32::MIN);
            let shift = _mm_cvtsi32_si128(32 - bits as i32);
            // Lane l of the bucket vector goes to copy l % HIST_COPIES.
            let copies = hist_copies(bits);
            let lane_copy: [i32; 8] = std::array::from_fn(|l| ((l % copies) * size) as i32);
            // SAFETY: `lane_copy` holds eight i32, the size of one unaligned 256-bit load.
            let copy_base = unsafe { _mm256_loadu_si256(lane_copy.as_ptr().cast()) };
            let z = _mm256_setzero_pd();
            let (mut sum, mut sum_abs, mut sum_sq, mut sum_4) = (z, z, z, z);
            let (mut sum_h, mut sum_abs_h, mut sum_sq_h, mut sum_4_h) = (z, z, z, z);
            let mut min = _mm256_set1_ps(f32::INFINITY);
            let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut min_abs = _mm256_set1_ps(f32::INFINITY);
            let zero = _mm256_setzero_ps();
            let (mut nonfinite, mut zeros, mut negatives) = (0usize, 0usize, 0usize);
            let mut idx = [0u32; 8];
            for i in (0..whole).step_by(8) {
                // SAFETY: i + 8 ≤ whole ≤ data.len().
                let v = unsafe { _mm256_loadu_ps(data.as_ptr().add(i)) };
                let a = _mm256_andnot_ps(sign_s, v);
                min = _mm256_min_ps(min, v);
                max = _mm256_max_ps(max, v);
                min_abs = _mm256_min_ps(min_abs, a);
                let finite = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(a, inf));
                nonfinite += (8 - finite.count_ones()) as usize;
                zeros +=
                    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v, zero)).count_ones() as usize;
                negatives +=
                    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(v, zero)).count_ones() as usize;
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
                sum = _mm256_add_pd(sum, lo);
                sum_h = _mm256_add_pd(sum_h, hi);
                sum_abs = _mm256_add_pd(sum_abs, _mm256_andnot_pd(sign_d, lo));
                sum_abs_h = _mm256_add_pd(sum_abs_h, _mm256_andnot_pd(sign_d, hi));
                let (sl, sh) = (_mm256_mul_pd(lo, lo), _mm256_mul_pd(hi, hi));
                sum_sq = _mm256_add_pd(sum_sq, sl);
                sum_sq_h = _mm256_add_pd(sum_sq_h, sh);
                sum_4 = _mm256_fmadd_pd(sl, sl, sum_4);
                sum_4_h = _mm256_fmadd_pd(sh, sh, sum_4_h);
                // Order-preserving key: positive → set the sign bit; negative → flip every bit.
                let raw = _mm256_castps_si256(v);
                let key = _mm256_xor_si256(raw, _mm256_or_si256(_mm256_srai_epi32::<31>(raw), top));
                let bucket = _mm256_add_epi32(_mm256_srl_epi32(key, shift), copy_base);
                // SAFETY: `idx` holds eight u32, the size of one unaligned 256-bit store.
                unsafe { _mm256_storeu_si256(idx.as_mut_ptr().cast(), bucket) };
                for &b in &idx {
                    // SAFETY: b = (key >> (32 − bits)) + copy · 2^bits < hist_copies(bits) · 2^bits
                    // ≤ hist.len() (asserted on entry).
                    unsafe { *hist.get_unchecked_mut(b as usize) += 1 };
                }
            }
            let body = Sums {
                n: whole,
                sum: hsum(_mm256_add_pd(sum, sum_h)),
                sum_abs: hsum(_mm256_add_pd(sum_abs, sum_abs_h)),
                sum_sq: hsum(_mm256_add_pd(sum_sq, sum_sq_h)),
                sum_4: hsum(_mm256_add_pd(sum_4, sum_4_h)),
                min: hfold_ps(min, f32::min) as f64,
                max: hfold_ps(max, f32::max) as f64,
                min_abs: hfold_ps(min_abs, f32::min) as f64,
                nonfinite,
                zeros,
                negatives,
            };
            if whole == 0 {
                return pass1_tail(data, bits, hist);
            }
            body.merge(pass1_tail(&data[whole..], bits, hist))
        }

        /// Pass 2 over whole groups of eight values (`data.len()` a multiple of 8): moments, and the
        /// flagged elements of the target buckets into `bufs`. The caller runs the portable body on
        /// the rest.
        #[target_feature(enable = $features)]
        fn $pass2(data: &[f32], plan: &Plan, bufs: &mut [Vec<u64>; 4]) -> Moments {
            let hsum = |v: __m256d| {
                let mut a = [0.0f64; 4];
                // SAFETY: `a` holds four f64, the size of one unaligned 256-bit store.
                unsafe { _mm256_storeu_pd(a.as_mut_ptr(), v) };
                (a[0] + a[1]) + (a[2] + a[3])
            };
            assert_eq!(data.len() % 8, 0);
            let whole = data.len();
            let [mr, ma, ms] = plan.means.map(|m| _mm256_set1_pd(m));
            let sign_d = _mm256_set1_pd(-0.0);
            let top = _mm256_set1_epi32(i32::MIN);
            let magnitude = _mm256_set1_epi32(i32::MAX);
            let shift = _mm_cvtsi32_si128(32 - plan.bits as i32);
            // Bucket ids of the targets; u32::MAX (never a bucket) where there is none.
            let (raw, abs) = plan.target_buckets();
            let [r0, r1, a0, a1] =
                [raw[0], raw[1], abs[0], abs[1]].map(|b| _mm256_set1_epi32(b as i32));
            let z = _mm256_setzero_pd();
            let (mut m2r, mut m2a, mut m2s, mut m4r, mut m4a, mut m4s) = (z, z, z, z, z, z);
            // The flags of a block of groups are collected first and their elements copied after
            // the block, so that the copying calls do not force the accumulators out of registers.
            const GROUPS: usize = 32;
            let mut masks = [0u8; GROUPS];
            for start in (0..whole).step_by(8 * GROUPS) {
                let groups = ((whole - start) / 8).min(GROUPS);
                for (g, m) in masks[..groups].iter_mut().enumerate() {
                    let i = start + 8 * g;
                    // SAFETY: i + 8 ≤ whole ≤ data.len().
                    let v = unsafe { _mm256_loadu_ps(data.as_ptr().add(i)) };
                    for h in [
                        _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
                    ] {
                        let dr = _mm256_sub_pd(h, mr);
                        let da = _mm256_sub_pd(_mm256_andnot_pd(sign_d, h), ma);
                        let ds = _mm256_fmsub_pd(h, h, ms);
                        let (dr2, da2, ds2) = (
                            _mm256_mul_pd(dr, dr),
                            _mm256_mul_pd(da, da),
                            _mm256_mul_pd(ds, ds),
                        );
                        m2r = _mm256_add_pd(m2r, dr2);
                        m2a = _mm256_add_pd(m2a, da2);
                        m2s = _mm256_add_pd(m2s, ds2);
                        m4r = _mm256_fmadd_pd(dr2, dr2, m4r);
                        m4a = _mm256_fmadd_pd(da2, da2, m4a);
                        m4s = _mm256_fmadd_pd(ds2, ds2, m4s);
                    }
                    let bits = _mm256_castps_si256(v);
                    let key =
                        _mm256_xor_si256(bits, _mm256_or_si256(_mm256_srai_epi32::<31>(bits), top));
                    let rb = _mm256_srl_epi32(key, shift);
                    let ab = _mm256_srl_epi32(_mm256_and_si256(bits, magnitude), shift);
                    let hit = _mm256_or_si256(
                        _mm256_or_si256(_mm256_cmpeq_epi32(rb, r0), _mm256_cmpeq_epi32(rb, r1)),
                        _mm256_or_si256(_mm256_cmpeq_epi32(ab, a0), _mm256_cmpeq_epi32(ab, a1)),
                    );
                    *m = _mm256_movemask_ps(_mm256_castsi256_ps(hit)) as u8;
                }
                for (g, &m) in masks[..groups].iter().enumerate() {
                    let mut mask = u32::from(m);
                    while mask != 0 {
                        let l = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        pass2_flagged(data[start + 8 * g + l], plan, bufs);
                    }
                }
            }
            Moments {
                m2: [hsum(m2r), hsum(m2a), hsum(m2s)],
                m4: [hsum(m4r), hsum(m4a), hsum(m4s)],
            }
        }
    };
}

kernels!("avx2,fma", pass1_avx2, pass2_avx2);
kernels!("avx2,fma,avx512f,avx512vl", pass1_avx512vl, pass2_avx512vl);

/// Pass 1 with AVX2 + FMA. The caller has checked [`available`].
pub(crate) fn pass1(data: &[f32], bits: u32, hist: &mut [u32]) -> Sums {
    assert!(available());
    if has_avx512vl() {
        // SAFETY: the CPU has AVX2, FMA and AVX-512F/VL (checked just above).
        return unsafe { pass1_avx512vl(data, bits, hist) };
    }
    // SAFETY: the CPU has AVX2 and FMA (asserted just above).
    unsafe { pass1_avx2(data, bits, hist) }
}

/// The vectorised part of pass 2 (whole groups of eight) with AVX2 + FMA. The caller has
/// checked [`available`].
pub(crate) fn pass2(data: &[f32], plan: &Plan, bufs: &mut [Vec<u64>; 4]) -> Moments {
    assert!(available());
    if has_avx512vl() {
        // SAFETY: the CPU has AVX2, FMA and AVX-512F/VL (checked just above).
        return unsafe { pass2_avx512vl(data, plan, bufs) };
    }
    // SAFETY: the CPU has AVX2 and FMA (asserted just above).
    unsafe { pass2_avx2(data, plan, bufs) }
}
