//! Hot loops compiled more than once: for the baseline CPU, for AVX2, and
//! (for the loops it speeds up) for AVX-512, with the copy chosen at run time
//! from what the CPU has, so the blends that vectorize run 8 or 16 floats
//! wide. Only the width changes: Rust never fuses a multiply and an add on
//! its own, so every float operation is the same, and so are the bytes (the
//! augmentation tests compare them on whichever path this machine takes, and
//! `every_simd_level_gives_the_same_bytes` compares the levels).
//!
//! AVX-512 is not always the faster copy: in grid distortion's row pass,
//! which reads through an index, LLVM turns the reads into gather
//! instructions once AVX-512 is enabled, and those were slower than the AVX2
//! copy's scalar reads (1.6× the time, docs/BENCHMARKS.md). Such functions
//! have two copies only.

/// Defines `fn NAME(args) -> R` that calls `BODY(args)` (an `#[inline(always)]`
/// function) through a copy compiled for the best [`level`] this CPU allows:
/// AVX-512 (only with the leading `avx512;`), AVX2, or the baseline.
macro_rules! multiversion {
    (avx512; $(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512dq")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::data::augment::simd::level() {
                    // SAFETY: `level` saw AVX-512 (F, BW, VL, DQ) on this CPU.
                    $crate::data::augment::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `level` saw AVX2 on this CPU.
                    $crate::data::augment::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::data::augment::simd::Level::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
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
                if $crate::data::augment::simd::level() >= $crate::data::augment::simd::Level::Avx2 {
                    // SAFETY: `level` saw AVX2 on this CPU.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The widest copies [`multiversion`] functions take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// What this CPU has, capped by `SWEEP_SIMD` (`baseline`, `avx2`, `avx512`:
/// for comparing the copies; `SWEEP_NO_AVX2=1` is `baseline`) and, in tests,
/// by [`set_cap`].
pub(crate) fn level() -> Level {
    use std::sync::atomic::Ordering;
    use std::sync::OnceLock;
    static CPU: OnceLock<Level> = OnceLock::new();
    let cpu = *CPU.get_or_init(|| {
        let cap = match std::env::var("SWEEP_SIMD").as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        let no_avx2 = std::env::var_os("SWEEP_NO_AVX2").is_some_and(|v| !v.is_empty() && v != "0");
        let cap = if no_avx2 { Level::Baseline } else { cap };
        cap.min(detected())
    });
    let cap = match CAP.load(Ordering::Relaxed) {
        0 => Level::Baseline,
        1 => Level::Avx2,
        _ => Level::Avx512,
    };
    cpu.min(cap)
}

/// The widest level this CPU runs.
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
            return Level::Avx512;
        }
        if has!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

static CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Caps [`level`] from now on, process-wide (`Level::Avx512` lifts the cap).
/// For tests that compare the copies: the results are the same, so other
/// code running meanwhile is not affected.
#[cfg(test)]
pub(crate) fn set_cap(cap: Level) {
    CAP.store(cap as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this CPU has `level` (and no variable caps it): whether a test
/// that compares copies compares anything at that level.
#[cfg(test)]
pub(crate) fn available(level: Level) -> bool {
    use std::sync::atomic::Ordering;
    let old = CAP.swap(2, Ordering::Relaxed);
    let top = self::level();
    CAP.store(old, Ordering::Relaxed);
    top >= level
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
