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
