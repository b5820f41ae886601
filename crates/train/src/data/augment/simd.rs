//! Hot loops compiled twice: for the baseline CPU, and for AVX2 where the CPU
//! has it (chosen at run time), so the blends that vectorize run 8 floats
//! wide. Only the width changes: no fused multiply-add is enabled, every
//! float operation is the same, and so are the bytes (the augmentation tests
//! compare them on whichever path this machine takes, and
//! `baseline_and_avx2_paths_give_the_same_bytes` compares the two).

/// Defines `fn NAME(args) -> R` that calls `BODY(args)` (an `#[inline(always)]`
/// function) through a copy compiled for AVX2 when this CPU has it
/// ([`enabled`]), else the baseline copy.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::data::augment::simd::enabled() {
                    // SAFETY: `enabled` saw AVX2 on this CPU.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Whether [`multiversion`] functions take the AVX2 copy: where the CPU has
/// AVX2, unless `SWEEP_NO_AVX2=1` (for comparing the two paths) or
/// [`set_baseline`] says otherwise.
pub(crate) fn enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::Ordering;
        use std::sync::OnceLock;
        static ON: OnceLock<bool> = OnceLock::new();
        !BASELINE.load(Ordering::Relaxed)
            && *ON.get_or_init(|| {
                std::env::var_os("SWEEP_NO_AVX2").is_none_or(|v| v.is_empty() || v == "0")
                    && std::arch::is_x86_feature_detected!("avx2")
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

static BASELINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes the baseline copies from now on (`true`) or the CPU's best again
/// (`false`), process-wide. For tests that compare the two: the results are
/// the same, so other code running meanwhile is not affected.
#[cfg(test)]
pub(crate) fn set_baseline(on: bool) {
    BASELINE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `v as u8` (truncation, saturating at 0 and 255, NaN to 0) written so that
/// it vectorizes: Rust's saturating float → `u8` cast is compiled one lane at
/// a time, a clamp then an unchecked `i32` conversion runs 8 wide.
#[inline(always)]
pub(crate) fn f32_to_u8(v: f32) -> u8 {
    let v = if v > 0.0 { v } else { 0.0 }; // NaN fails the compare: 0
    let v = if v < 255.0 { v } else { 255.0 };
    // SAFETY: v is in [0, 255]: finite and inside i32
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_friendly_casts_equal_as_u8() {
        let mut vals: Vec<f32> = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            -1e30,
            1e30,
            255.999,
            256.0,
            -0.999,
        ];
        vals.extend((-4000..4000).map(|i| i as f32 * 0.0731));
        for v in vals {
            assert_eq!(f32_to_u8(v), v as u8, "{v}");
        }
    }
}
