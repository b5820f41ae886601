//! A deterministic generated data set: coloured blob "lesions" on a skin-toned
//! background. Class sets the hue, the shape (aspect ratio) and the texture (stripe
//! frequency); every image jitters position, size, rotation and colour, and adds
//! pixel noise, so the classes are learnable but overlap a little.

use crate::config::SyntheticConfig;
use crate::data::Dataset;
use crate::rng::Rng;

fn hsv_to_rgb(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let i = h.floor();
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Generates `classes × per_class` images of `image_size²` pixels with `channels`
/// (1: luma of the RGB image). Independent of any trial seed.
pub fn generate(cfg: &SyntheticConfig, channels: usize) -> Dataset {
    let s = cfg.image_size;
    let n = cfg.classes * cfg.per_class;
    let mut pixels = Vec::with_capacity(n * s * s * channels);
    let mut labels = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut rgb = vec![0f64; s * s * 3];
    for c in 0..cfg.classes {
        let hue = (c as f64 * 0.618_033_988_7).fract();
        let aspect = 1.0 + 0.45 * (c % 3) as f64;
        let stripes = 1.0 + ((c / 3) % 3) as f64 * 1.5;
        let value = 0.30 + 0.12 * ((c / 9) % 3) as f64;
        for k in 0..cfg.per_class {
            let mut rng = Rng::stream(cfg.seed ^ ((c as u64) << 32 | k as u64), "synthetic");
            let bg = [
                0.82 + rng.uniform(-0.06, 0.06),
                0.66 + rng.uniform(-0.06, 0.06),
                0.56 + rng.uniform(-0.06, 0.06),
            ];
            let col = hsv_to_rgb(
                hue + rng.uniform(-0.06, 0.06),
                0.55 + rng.uniform(-0.15, 0.15),
                value + rng.uniform(-0.08, 0.08),
            );
            let cx = 0.5 + rng.uniform(-0.15, 0.15);
            let cy = 0.5 + rng.uniform(-0.15, 0.15);
            let r = rng.uniform(0.18, 0.32);
            let theta = rng.uniform(0.0, std::f64::consts::PI);
            let (st, ct) = theta.sin_cos();
            let phase = rng.uniform(0.0, std::f64::consts::TAU);
            let noise = 0.06;
            for y in 0..s {
                for x in 0..s {
                    let u = (x as f64 + 0.5) / s as f64 - cx;
                    let v = (y as f64 + 0.5) / s as f64 - cy;
                    let (a, b) = (u * ct + v * st, -u * st + v * ct);
                    let d = ((a * aspect).powi(2) + (b / aspect).powi(2)).sqrt() / r;
                    // soft edge: 1 inside, 0 outside
                    let m = (1.0 - ((d - 1.0) * 6.0).clamp(-1.0, 1.0)) * 0.5;
                    let tex = 0.85 + 0.15 * (stripes * std::f64::consts::TAU * a / r + phase).sin();
                    for ch in 0..3 {
                        let val = bg[ch] * (1.0 - m) + col[ch] * tex * m + noise * rng.normal();
                        rgb[(y * s + x) * 3 + ch] = val;
                    }
                }
            }
            if channels == 1 {
                for p in 0..s * s {
                    let l = 0.299 * rgb[p * 3] + 0.587 * rgb[p * 3 + 1] + 0.114 * rgb[p * 3 + 2];
                    pixels.push((l * 255.0).round().clamp(0.0, 255.0) as u8);
                }
            } else {
                pixels.extend(
                    rgb.iter()
                        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
                );
            }
            labels.push(c as u32);
            sources.push(format!("synthetic/{c}/{k}"));
        }
    }
    let classes = (0..cfg.classes).map(|c| format!("class{c:02}")).collect();
    Dataset::from_parts(classes, s, channels, pixels, labels, sources)
        .expect("generator builds consistent parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_class_dependent() {
        let cfg = SyntheticConfig {
            classes: 3,
            per_class: 4,
            image_size: 16,
            seed: 5,
        };
        let a = generate(&cfg, 3);
        let b = generate(&cfg, 3);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.class_counts(), vec![4, 4, 4]);
        let other = generate(
            &SyntheticConfig {
                seed: 6,
                ..cfg.clone()
            },
            3,
        );
        assert_ne!(a.fingerprint(), other.fingerprint());
        // mean colour differs between classes
        let mean = |i: usize, ch: usize| {
            a.image(i)
                .iter()
                .skip(ch)
                .step_by(3)
                .map(|v| *v as f64)
                .sum::<f64>()
                / 256.0
        };
        let d: f64 = (0..3).map(|ch| (mean(0, ch) - mean(4, ch)).abs()).sum();
        assert!(d > 5.0, "classes 0 and 1 look the same: {d}");
        let gray = generate(&cfg, 1);
        assert_eq!(gray.image_len(), 256);
    }
}
