//! The element types statistics are computed over (f32 and f64), with order-preserving integer
//! keys used by the radix selection of quantiles.

/// A floating-point element. Values are widened to f64 for every accumulation.
pub trait Element: Copy + Send + Sync + 'static {
    /// `f32` or `f64`, for messages.
    const DTYPE: &'static str;

    fn to_f64(self) -> f64;

    fn is_finite(self) -> bool;

    /// An order-preserving map of a finite value to `u64`: `a < b ⇔ key(a) < key(b)`. The sign
    /// bit lands in bit 63, so the top 16 bits bucket values by sign, exponent and leading
    /// mantissa bits.
    fn sort_key(self) -> u64;

    /// The key of |x|: order-preserving among magnitudes, bit 63 always clear.
    fn abs_key(self) -> u64;

    /// The value whose `sort_key` is `key`, widened to f64.
    fn from_sort_key(key: u64) -> f64;

    /// The top `bits` bits of `sort_key` (1 ≤ bits ≤ 32), computed at the native width.
    fn raw_bucket(self, bits: u32) -> u32;

    /// The top `bits` bits of `abs_key` (1 ≤ bits ≤ 32), computed at the native width.
    fn abs_bucket(self, bits: u32) -> u32;

    /// The magnitude whose `abs_key` is `key`, widened to f64.
    fn from_abs_key(key: u64) -> f64;

    /// The values as f32, when that is what they are (for the f32 kernels).
    fn as_f32(data: &[Self]) -> Option<&[f32]> {
        let _ = data;
        None
    }
}

impl Element for f32 {
    const DTYPE: &'static str = "f32";

    fn as_f32(data: &[f32]) -> Option<&[f32]> {
        Some(data)
    }

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }

    #[inline(always)]
    fn sort_key(self) -> u64 {
        let bits = self.to_bits();
        // Positive: set the sign bit; negative: flip every bit.
        let mask = (((bits as i32) >> 31) as u32) | 0x8000_0000;
        ((bits ^ mask) as u64) << 32
    }

    #[inline(always)]
    fn abs_key(self) -> u64 {
        ((self.to_bits() & 0x7fff_ffff) as u64) << 32
    }

    #[inline(always)]
    fn raw_bucket(self, bits: u32) -> u32 {
        let b = self.to_bits();
        let mask = (((b as i32) >> 31) as u32) | 0x8000_0000;
        (b ^ mask) >> (32 - bits)
    }

    #[inline(always)]
    fn abs_bucket(self, bits: u32) -> u32 {
        (self.to_bits() & 0x7fff_ffff) >> (32 - bits)
    }

    fn from_sort_key(key: u64) -> f64 {
        let k = (key >> 32) as u32;
        let bits = if k & 0x8000_0000 != 0 {
            k & 0x7fff_ffff
        } else {
            !k
        };
        f32::from_bits(bits) as f64
    }

    fn from_abs_key(key: u64) -> f64 {
        f32::from_bits((key >> 32) as u32) as f64
    }
}

impl Element for f64 {
    const DTYPE: &'static str = "f64";

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }

    #[inline(always)]
    fn sort_key(self) -> u64 {
        let bits = self.to_bits();
        let mask = (((bits as i64) >> 63) as u64) | 0x8000_0000_0000_0000;
        bits ^ mask
    }

    #[inline(always)]
    fn abs_key(self) -> u64 {
        self.to_bits() & 0x7fff_ffff_ffff_ffff
    }

    #[inline(always)]
    fn raw_bucket(self, bits: u32) -> u32 {
        (self.sort_key() >> (64 - bits)) as u32
    }

    #[inline(always)]
    fn abs_bucket(self, bits: u32) -> u32 {
        (self.abs_key() >> (64 - bits)) as u32
    }

    fn from_sort_key(key: u64) -> f64 {
        let bits = if key & 0x8000_0000_0000_0000 != 0 {
            key & 0x7fff_ffff_ffff_ffff
        } else {
            !key
        };
        f64::from_bits(bits)
    }

    fn from_abs_key(key: u64) -> f64 {
        f64::from_bits(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_order<T: Element + PartialOrd + std::fmt::Debug>(values: &[T]) {
        for &a in values {
            assert_eq!(T::from_sort_key(a.sort_key()), a.to_f64(), "{a:?}");
            assert_eq!(T::from_abs_key(a.abs_key()), a.to_f64().abs(), "{a:?}");
            for &b in values {
                if a < b {
                    assert!(a.sort_key() < b.sort_key(), "{a:?} < {b:?}");
                }
                if a.to_f64().abs() < b.to_f64().abs() {
                    assert!(a.abs_key() < b.abs_key(), "|{a:?}| < |{b:?}|");
                }
            }
        }
    }

    #[test]
    fn keys_preserve_order() {
        check_order(&[
            -f32::MAX,
            -3.5f32,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            0.5,
            1.0,
            2.0,
            f32::MAX,
        ]);
        check_order(&[
            -f64::MAX,
            -3.5f64,
            -1.0,
            -5e-324,
            0.0,
            5e-324,
            0.5,
            1.0,
            f64::MAX,
        ]);
    }

    #[test]
    fn abs_bucket_folds_the_raw_buckets() {
        // The top 16 bits of a raw key are 0x8000 | b for x ≥ 0 and 0x7fff − b for x < 0,
        // where b is the top 16 bits of the abs key.
        for x in [0.25f32, 1.0, 3.0e7, 1e-30] {
            let b = x.abs_key() >> 48;
            assert_eq!(x.sort_key() >> 48, 0x8000 | b);
            assert_eq!((-x).sort_key() >> 48, 0x7fff - b);
            for bits in [8, 13, 16] {
                assert_eq!(x.raw_bucket(bits) as u64, x.sort_key() >> (64 - bits));
                assert_eq!((-x).raw_bucket(bits) as u64, (-x).sort_key() >> (64 - bits));
                assert_eq!(x.abs_bucket(bits) as u64, x.abs_key() >> (64 - bits));
                let y = x as f64;
                assert_eq!(y.raw_bucket(bits) as u64, y.sort_key() >> (64 - bits));
                assert_eq!((-y).abs_bucket(bits) as u64, y.abs_key() >> (64 - bits));
            }
        }
    }
}
