//! Geometric transforms with OpenCV's arithmetic, as Albumentations 2.0.8 calls
//! it (with OpenCV 5.0): `cv2.remap` (bilinear, constant border) for grid
//! distortion and elastic transform, `cv2.resize` (bilinear, fixed point) for
//! random resized crop. Tested against Albumentations' own output in
//! `tests/albumentations.rs` (fixtures from `scripts/albumentations-reference.py`).

use crate::rng::Rng;

/// `floor(v)` as an integer without a libm call (baseline x86-64 has no SSE4.1).
#[inline(always)]
fn floor_i32(v: f32) -> i32 {
    let t = v as i32;
    if (t as f32) > v {
        t - 1
    } else {
        t
    }
}

/// Round half to even for `0 ≤ v < 2²²` (what `cvRound` and `saturate_cast` do),
/// by the float adder: no libm call.
#[inline(always)]
pub(crate) fn round_even_f32(v: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0; // 2²³
    if v >= 0.0 {
        (v + MAGIC) - MAGIC
    } else {
        -((-v + MAGIC) - MAGIC)
    }
}

/// `cv2.remap(src, map_x, map_y, INTER_LINEAR, BORDER_CONSTANT, fill)` on `u8`
/// HWC, OpenCV 5's float32 form: a sample wholly outside (`ix < -1`, `ix ≥ w`,
/// same for y) is `fill`; otherwise each of the four neighbours outside the image
/// reads `fill`, and `v = v0 + ay (v1 − v0)` with `vk = p + ax (q − p)`, rounded
/// half to even. `fill` holds one value per channel.
#[allow(clippy::too_many_arguments)]
pub fn remap_linear(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    map_x: &[f32],
    map_y: &[f32],
    fill: &[u8],
    dst: &mut [u8],
) {
    let (wi, hi) = (w as i32, h as i32);
    for (i, (sx, sy)) in map_x.iter().zip(map_y).enumerate() {
        let out = &mut dst[i * c..(i + 1) * c];
        let (ix, iy) = (floor_i32(*sx), floor_i32(*sy));
        if ix < -1 || ix >= wi || iy < -1 || iy >= hi {
            out.copy_from_slice(&fill[..c]);
            continue;
        }
        let (ax, ay) = (sx - ix as f32, sy - iy as f32);
        let at = |x: i32, y: i32, ch: usize| -> f32 {
            if x >= 0 && x < wi && y >= 0 && y < hi {
                src[(y as usize * w + x as usize) * c + ch] as f32
            } else {
                fill[ch] as f32
            }
        };
        for (ch, o) in out.iter_mut().enumerate() {
            let (p00, p01) = (at(ix, iy, ch), at(ix + 1, iy, ch));
            let (p10, p11) = (at(ix, iy + 1, ch), at(ix + 1, iy + 1, ch));
            let v0 = p00 + ax * (p01 - p00);
            let v1 = p10 + ax * (p11 - p10);
            let v = v0 + ay * (v1 - v0);
            *o = round_even_f32(v).clamp(0.0, 255.0) as u8;
        }
    }
}

/// Grid distortion's step factors: `num_steps + 1` for x, then as many for y,
/// each `1 + U[−limit, limit)` (Albumentations' `py_random.uniform` calls).
pub fn grid_steps(rng: &mut Rng, num_steps: usize, limit: f64) -> (Vec<f64>, Vec<f64>) {
    let mut draw = || -> Vec<f64> {
        (0..=num_steps)
            .map(|_| 1.0 + rng.uniform(-limit, limit))
            .collect()
    };
    let xs = draw();
    let ys = draw();
    (xs, ys)
}

/// `normalize_grid_distortion_steps` for one axis of `len` pixels: the last
/// (partial) cell's step scaled by its width, then every step by
/// `(len / ⌊len / n⌋) / Σ steps`, so the distorted grid spans the image.
pub fn normalize_grid_steps(len: usize, num_steps: usize, steps: &mut [f64]) {
    let step = len / num_steps;
    if step == 0 {
        return;
    }
    let last = (len.min((num_steps + 1) * step) - num_steps * step) as f64;
    steps[num_steps] *= last / step as f64;
    let total = len as f64 / (len / num_steps) as f64;
    let sum: f64 = steps.iter().sum();
    let k = total / sum;
    for s in steps.iter_mut() {
        *s *= k;
    }
}

/// `generate_grid` for one axis: cell `k` covers pixels `[k·step, (k+1)·step)`
/// and maps them by `np.linspace(prev, prev + step·s_k, cells, endpoint=True)`
/// (so values repeat at cell boundaries, as in Albumentations).
pub fn grid_line(len: usize, num_steps: usize, steps: &[f64], out: &mut Vec<f32>) {
    out.clear();
    out.resize(len, 0.0);
    let step = len / num_steps;
    let mut prev = 0.0f64;
    for (k, s) in steps.iter().enumerate() {
        let start = (k * step).min(len);
        let end = (start + step).min(len);
        let cur = prev + step as f64 * s;
        let m = end - start;
        if m == 1 {
            out[start] = prev as f32;
        } else if m > 1 {
            let d = (cur - prev) / (m - 1) as f64;
            for i in 0..m - 1 {
                out[start + i] = (i as f64 * d + prev) as f32;
            }
            out[end - 1] = cur as f32;
        }
        prev = cur;
    }
}

/// OpenCV's `getGaussianKernel(ksize, sigma, CV_32F)` with the size
/// `GaussianBlur` chooses for float images given only σ: `round(8σ + 1) | 1`.
pub fn gaussian_taps(sigma: f64) -> Vec<f32> {
    let ksize = ((8.0 * sigma + 1.0).round_ties_even() as usize) | 1;
    let scale = -0.5 / (sigma * sigma);
    let mid = (ksize - 1) as f64 * 0.5;
    let raw: Vec<f64> = (0..ksize)
        .map(|i| {
            let x = i as f64 - mid;
            (scale * x * x).exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|t| (t / sum) as f32).collect()
}

/// A Gaussian blur along one axis of `n` samples with replicated borders,
/// folded into one band of weights per output (a kernel wider than the image,
/// such as σ = 50's 401 taps on 64 pixels, costs `n` per output, not 401).
#[derive(Debug, Default, Clone)]
pub struct BlurPlan {
    n: usize,
    sigma_bits: u64,
    /// First input of each output's band, and the band's weights.
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl BlurPlan {
    pub fn new(n: usize, sigma: f64) -> BlurPlan {
        let taps = gaussian_taps(sigma);
        let r = (taps.len() / 2) as i64;
        let mut start = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        for i in 0..n as i64 {
            let lo = (i - r).max(0) as usize;
            let hi = (i + r).min(n as i64 - 1) as usize;
            let mut band = vec![0f64; hi - lo + 1];
            for (k, t) in taps.iter().enumerate() {
                let j = (i + k as i64 - r).clamp(0, n as i64 - 1) as usize;
                band[j - lo] += *t as f64;
            }
            start.push(lo);
            weights.push(band.into_iter().map(|v| v as f32).collect());
        }
        BlurPlan {
            n,
            sigma_bits: sigma.to_bits(),
            start,
            weights,
        }
    }

    fn fits(&self, n: usize, sigma: f64) -> bool {
        self.n == n && self.sigma_bits == sigma.to_bits()
    }

    /// Blurs each row of `field` (`h` rows of `w`) into `out`.
    fn rows(&self, field: &[f32], w: usize, out: &mut [f32]) {
        for (row, o) in field.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            for ((v, lo), band) in o.iter_mut().zip(&self.start).zip(&self.weights) {
                *v = band.iter().zip(&row[*lo..]).map(|(a, b)| a * b).sum();
            }
        }
    }

    /// Blurs each column of `field` (`n` rows of `w`) into `out`.
    fn columns(&self, field: &[f32], w: usize, out: &mut [f32]) {
        for (y, o) in out.chunks_exact_mut(w).enumerate() {
            o.fill(0.0);
            for (k, wt) in self.weights[y].iter().enumerate() {
                let src = &field[(self.start[y] + k) * w..][..w];
                for (a, b) in o.iter_mut().zip(src) {
                    *a += wt * b;
                }
            }
        }
    }
}

/// Buffers and blur plans of the elastic transform.
#[derive(Debug, Default)]
pub struct ElasticScratch {
    /// dx then dy, stacked: `2h` rows of `w`.
    field: Vec<f32>,
    tmp: Vec<f32>,
    across: BlurPlan,
    down: BlurPlan,
}

impl ElasticScratch {
    pub fn dx(&self) -> &[f32] {
        &self.field[..self.field.len() / 2]
    }
    pub fn dy(&self) -> &[f32] {
        &self.field[self.field.len() / 2..]
    }
}

/// Albumentations' `generate_displacement_fields` (Gaussian noise, `same_dxdy`
/// off, `approximate` off): standard normal noise for dx then dy, divided by
/// the largest |value| of both, blurred by a Gaussian of σ with replicated
/// borders, times α. As there, dx and dy are blurred stacked as one `2h × w`
/// array, so the blur runs across the seam between them: with a σ near the
/// image size (the default 50), dx and dy come out nearly the same field.
/// Leaves the fields in `s.dx()`, `s.dy()`.
pub fn elastic_fields(
    rng: &mut Rng,
    w: usize,
    h: usize,
    alpha: f64,
    sigma: f64,
    s: &mut ElasticScratch,
) {
    let n = 2 * w * h;
    s.field.resize(n, 0.0);
    s.tmp.resize(n, 0.0);
    let mut max_abs = 0f32;
    for v in s.field.iter_mut() {
        *v = rng.normal_f32();
        max_abs = max_abs.max(v.abs());
    }
    if max_abs > 1e-6 {
        let k = 1.0 / max_abs;
        for v in s.field.iter_mut() {
            *v *= k;
        }
    }
    if !s.across.fits(w, sigma) {
        s.across = BlurPlan::new(w, sigma);
    }
    if !s.down.fits(2 * h, sigma) {
        s.down = BlurPlan::new(2 * h, sigma);
    }
    s.across.rows(&s.field, w, &mut s.tmp);
    s.down.columns(&s.tmp, w, &mut s.field);
    let a = alpha as f32;
    for v in s.field.iter_mut() {
        *v *= a;
    }
}

/// Maps `(x + dx, y + dy)` as `float32(x + dx)`, as Albumentations builds them.
pub fn displacement_maps(
    dx: &[f32],
    dy: &[f32],
    w: usize,
    map_x: &mut Vec<f32>,
    map_y: &mut Vec<f32>,
) {
    map_x.clear();
    map_y.clear();
    map_x.extend(dx.iter().enumerate().map(|(i, d)| (i % w) as f32 + d));
    map_y.extend(dy.iter().enumerate().map(|(i, d)| (i / w) as f32 + d));
}

/// A crop `(x0, y0, x1, y1)` (half-open) by `RandomResizedCrop.get_params_dependent_on_data`:
/// up to 10 tries of an area `U[scale₀, scale₁) · wh` and a log-uniform aspect
/// ratio (w / h), sides rounded half to even; then the corner by
/// `int((H − h + 1) · U)` for y, then x. After 10 misses, a centre crop clipped
/// to the ratio range.
pub fn random_resized_crop_box(
    rng: &mut Rng,
    w: usize,
    h: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = rng.uniform(scale[0] * area, scale[1] * area);
        let aspect = rng.uniform(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round_ties_even() as usize;
        let ch = (target / aspect).sqrt().round_ties_even() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let hs = rng.next_f64();
            let ws = rng.next_f64();
            let y0 = ((h - ch + 1) as f64 * hs) as usize;
            let x0 = ((w - cw + 1) as f64 * ws) as usize;
            return (x0, y0, x0 + cw, y0 + ch);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio[0] {
        (w, (w as f64 / ratio[0]).round_ties_even() as usize)
    } else if in_ratio > ratio[1] {
        ((h as f64 * ratio[1]).round_ties_even() as usize, h)
    } else {
        (w, h)
    };
    let (y0, x0) = ((h - ch) / 2, (w - cw) / 2);
    (x0, y0, x0 + cw, y0 + ch)
}

/// Copies the crop `(x0, y0, x1, y1)` of a `w`-wide HWC image into `out`.
pub fn crop(src: &[u8], w: usize, c: usize, bx: (usize, usize, usize, usize), out: &mut Vec<u8>) {
    let (x0, y0, x1, y1) = bx;
    out.clear();
    for y in y0..y1 {
        out.extend_from_slice(&src[(y * w + x0) * c..(y * w + x1) * c]);
    }
}

/// `cv2.resize(src, (dw, dh), interpolation=INTER_LINEAR)` on `u8`: OpenCV's
/// fixed-point path (weights of 2048, the vertical pass rounded as its SIMD
/// code does for every pixel), and its switch to `INTER_AREA` for an exact 2×
/// downscale. The same image when the sizes agree.
#[allow(clippy::too_many_arguments)]
pub fn resize_linear(
    src: &[u8],
    sw: usize,
    sh: usize,
    c: usize,
    dw: usize,
    dh: usize,
    dst: &mut Vec<u8>,
) {
    dst.clear();
    if sw == dw && sh == dh {
        dst.extend_from_slice(src);
        return;
    }
    dst.resize(dw * dh * c, 0);
    if sw == 2 * dw && sh == 2 * dh {
        for y in 0..dh {
            for x in 0..dw {
                for ch in 0..c {
                    let p = |yy: usize, xx: usize| src[(yy * sw + xx) * c + ch] as u32;
                    let s = p(2 * y, 2 * x)
                        + p(2 * y, 2 * x + 1)
                        + p(2 * y + 1, 2 * x)
                        + p(2 * y + 1, 2 * x + 1);
                    dst[(y * dw + x) * c + ch] = ((s + 2) >> 2) as u8;
                }
            }
        }
        return;
    }
    let weight = |f: f32| -> i32 { round_even_f32(f * 2048.0) as i32 };
    // columns: index and weights, index and fraction clamped at both ends
    let sx_scale = sw as f64 / dw as f64;
    let cols: Vec<(usize, usize, i32, i32)> = (0..dw)
        .map(|x| {
            let mut f = ((x as f64 + 0.5) * sx_scale - 0.5) as f32;
            let mut sx = floor_i32(f);
            f -= sx as f32;
            if sx < 0 {
                sx = 0;
                f = 0.0;
            }
            if sx >= sw as i32 - 1 {
                sx = sw as i32 - 1;
                f = 0.0;
            }
            let sx = sx as usize;
            (sx, (sx + 1).min(sw - 1), weight(1.0 - f), weight(f))
        })
        .collect();
    let sy_scale = sh as f64 / dh as f64;
    let mut r0 = vec![0i32; dw * c];
    let mut r1 = vec![0i32; dw * c];
    let horizontal = |row: usize, out: &mut [i32]| {
        let line = &src[row * sw * c..(row + 1) * sw * c];
        for (x, (a, b, wa, wb)) in cols.iter().enumerate() {
            for ch in 0..c {
                out[x * c + ch] = line[a * c + ch] as i32 * wa + line[b * c + ch] as i32 * wb;
            }
        }
    };
    for y in 0..dh {
        let mut f = ((y as f64 + 0.5) * sy_scale - 0.5) as f32;
        let sy = floor_i32(f);
        f -= sy as f32;
        let (b0, b1) = (weight(1.0 - f), weight(f));
        let row0 = sy.clamp(0, sh as i32 - 1) as usize;
        let row1 = (sy + 1).clamp(0, sh as i32 - 1) as usize;
        horizontal(row0, &mut r0);
        horizontal(row1, &mut r1);
        for (k, o) in dst[y * dw * c..(y + 1) * dw * c].iter_mut().enumerate() {
            let v = (((b0 * (r0[k] >> 4)) >> 16) + ((b1 * (r1[k] >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_copy_the_image() {
        let (w, h, c) = (5, 4, 3);
        let src: Vec<u8> = (0..w * h * c).map(|i| (i * 11 % 256) as u8).collect();
        let mx: Vec<f32> = (0..w * h).map(|i| (i % w) as f32).collect();
        let my: Vec<f32> = (0..w * h).map(|i| (i / w) as f32).collect();
        let mut dst = vec![0; src.len()];
        remap_linear(&src, w, h, c, &mx, &my, &[0, 0, 0], &mut dst);
        assert_eq!(src, dst);
    }

    #[test]
    fn remap_rounds_half_to_even_and_fills_outside() {
        // [0, 1] sampled at 0.5 gives 0 (even), [2, 3] at 2.5 gives 2
        let src = [0u8, 1, 2, 3];
        let mut dst = [9u8; 3];
        remap_linear(
            &src,
            4,
            1,
            1,
            &[0.5, 2.5, 7.0],
            &[0.0, 0.0, 0.0],
            &[77],
            &mut dst,
        );
        assert_eq!(dst, [0, 2, 77]);
    }

    #[test]
    fn blur_plan_keeps_constants_and_sums_folded_taps() {
        for (n, sigma) in [(64, 50.0), (13, 3.0), (9, 0.7), (1, 2.0)] {
            let plan = BlurPlan::new(n, sigma);
            for band in &plan.weights {
                let s: f32 = band.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "n {n} σ {sigma}: {s}");
            }
            let field = vec![0.25f32; n * 3];
            let mut out = vec![0f32; n * 3];
            plan.rows(&field, n, &mut out);
            assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
        }
        // σ = 50 → 401 taps, OpenCV's size for float images
        assert_eq!(gaussian_taps(50.0).len(), 401);
        assert_eq!(gaussian_taps(3.0).len(), 25);
    }

    #[test]
    fn crop_boxes_stay_inside_and_fall_back_to_the_centre() {
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let (x0, y0, x1, y1) =
                random_resized_crop_box(&mut rng, 37, 23, [0.08, 1.0], [0.75, 4.0 / 3.0]);
            assert!(x0 < x1 && x1 <= 37 && y0 < y1 && y1 <= 23);
        }
        // no crop of area ≥ 2 × the image exists: the centre crop, clipped to ratio ≤ 1
        let b = random_resized_crop_box(&mut rng, 40, 10, [2.0, 2.0], [0.5, 1.0]);
        assert_eq!(b, (15, 0, 25, 10));
    }

    #[test]
    fn resizing_to_the_same_size_copies() {
        let src: Vec<u8> = (0..48).map(|i| i as u8 * 5).collect();
        let mut out = Vec::new();
        resize_linear(&src, 4, 4, 3, 4, 4, &mut out);
        assert_eq!(out, src);
    }
}
