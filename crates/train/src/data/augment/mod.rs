//! Training-time augmentations on `u8` HWC images, with Albumentations 2.0.8's
//! semantics and default limits (docs/config.md lists every deliberate
//! difference). They apply in one fixed order, [`Augmentation::ORDER`] (crop,
//! flips, colour, warps, noise, occlusion), whatever the order of the list:
//! the list is a set, so a sweep over augmentation sets has one trial per set.
//! Each listed augmentation is applied with probability
//! `data.augmentation.probability`, drawing from the image's own stream.

pub mod geometric;
pub mod pixel;
pub(crate) mod simd;

use crate::config::{Augmentation, AugmentationSettings};
use crate::rng::Rng;

pub use pixel::brightness_contrast;

/// Reused buffers, so augmentation allocates nothing per image once warm.
#[derive(Default, Debug)]
pub struct AugmentScratch {
    a: Vec<u8>,
    b: Vec<u8>,
    map_x: Vec<f32>,
    map_y: Vec<f32>,
    line: Vec<f32>,
    noise: Vec<f32>,
    holes: Vec<(usize, usize, usize, usize)>,
    elastic: geometric::ElasticScratch,
}

impl AugmentScratch {
    /// Starts from `img` (for [`apply_one`]).
    pub fn reset(&mut self, img: &[u8]) {
        self.a.clear();
        self.a.extend_from_slice(img);
    }

    /// The image as augmented so far.
    pub fn image(&self) -> &[u8] {
        &self.a
    }
}

/// Applies `augs` to `img` (a `size` × `size` image) and returns the augmented
/// image (inside `scratch`).
pub fn apply_augmentations<'s>(
    img: &[u8],
    size: usize,
    channels: usize,
    augs: &[Augmentation],
    settings: &AugmentationSettings,
    rng: &mut Rng,
    scratch: &'s mut AugmentScratch,
) -> &'s [u8] {
    scratch.reset(img);
    for kind in Augmentation::ORDER {
        if augs.contains(&kind) {
            apply_one(kind, size, channels, settings, rng, scratch);
        }
    }
    &scratch.a
}

/// Applies one augmentation to the scratch image with the settings' probability: one
/// draw for "apply?", always, then the augmentation's own draws if it applies.
pub fn apply_one(
    kind: Augmentation,
    size: usize,
    c: usize,
    st: &AugmentationSettings,
    rng: &mut Rng,
    s: &mut AugmentScratch,
) {
    if !rng.bernoulli(st.probability) {
        return;
    }
    let (w, h) = (size, size);
    match kind {
        Augmentation::Hflip => flip(&mut s.a, size, c, true),
        Augmentation::Vflip => flip(&mut s.a, size, c, false),
        Augmentation::BrightnessContrast => {
            let alpha = 1.0 + rng.uniform(-st.contrast_limit, st.contrast_limit);
            let beta = rng.uniform(-st.brightness_limit, st.brightness_limit);
            brightness_contrast(&mut s.a, alpha, beta);
        }
        Augmentation::ShiftScaleRotate => {
            let angle = rng.uniform(-st.rotate_limit, st.rotate_limit);
            let scale = 1.0 + rng.uniform(-st.scale_limit, st.scale_limit);
            let dx = rng.uniform(-st.shift_limit, st.shift_limit);
            let dy = rng.uniform(-st.shift_limit, st.shift_limit);
            s.b.resize(s.a.len(), 0);
            shift_scale_rotate(&s.a, w, h, c, angle, scale, dx, dy, &mut s.b);
            std::mem::swap(&mut s.a, &mut s.b);
        }
        Augmentation::RandomResizedCrop => {
            let bx = geometric::random_resized_crop_box(rng, w, h, st.crop_scale, st.crop_ratio);
            geometric::crop(&s.a, w, c, bx, &mut s.b);
            let (cw, ch) = (bx.2 - bx.0, bx.3 - bx.1);
            std::mem::swap(&mut s.a, &mut s.b);
            geometric::resize_linear(&s.a, cw, ch, c, w, h, &mut s.b);
            std::mem::swap(&mut s.a, &mut s.b);
        }
        Augmentation::HueSaturationValue => {
            let hue = rng.uniform(-st.hue_shift_limit, st.hue_shift_limit);
            let sat = rng.uniform(-st.sat_shift_limit, st.sat_shift_limit);
            let val = rng.uniform(-st.val_shift_limit, st.val_shift_limit);
            pixel::hue_saturation_value(&mut s.a, c, hue, sat, val);
        }
        Augmentation::GridDistortion => {
            let n = st.grid_num_steps;
            let (mut sx, mut sy) = geometric::grid_steps(rng, n, st.grid_distort_limit);
            geometric::normalize_grid_steps(w, n, &mut sx);
            geometric::normalize_grid_steps(h, n, &mut sy);
            geometric::grid_line(w, n, &sx, &mut s.map_x);
            geometric::grid_line(h, n, &sy, &mut s.map_y);
            s.b.resize(s.a.len(), 0);
            geometric::remap_separable(
                &s.a,
                w,
                h,
                c,
                &s.map_x,
                &s.map_y,
                &[0; 4],
                &mut s.line,
                &mut s.b,
            );
            std::mem::swap(&mut s.a, &mut s.b);
        }
        Augmentation::ElasticTransform => {
            geometric::elastic_fields(
                rng,
                w,
                h,
                st.elastic_alpha,
                st.elastic_sigma,
                &mut s.elastic,
            );
            geometric::displacement_maps(
                s.elastic.dx(),
                s.elastic.dy(),
                w,
                &mut s.map_x,
                &mut s.map_y,
            );
            warp(s, w, h, c);
        }
        Augmentation::GaussNoise => {
            pixel::gauss_noise(
                rng,
                w * h,
                c,
                st.noise_std_range,
                st.noise_mean_range,
                st.noise_per_channel,
                &mut s.noise,
            );
            pixel::add_noise(&mut s.a, &s.noise);
        }
        Augmentation::CoarseDropout => {
            pixel::dropout_holes(
                rng,
                w,
                h,
                st.num_holes_range,
                st.hole_height_range,
                st.hole_width_range,
                &mut s.holes,
            );
            pixel::fill_holes(&mut s.a, w, c, &s.holes, &[st.hole_fill; 4]);
        }
    }
}

/// `scratch.a` remapped through `map_x`, `map_y`, borders filled with 0.
fn warp(s: &mut AugmentScratch, w: usize, h: usize, c: usize) {
    s.b.resize(s.a.len(), 0);
    geometric::remap_linear(&s.a, w, h, c, &s.map_x, &s.map_y, &[0; 4], &mut s.b);
    std::mem::swap(&mut s.a, &mut s.b);
}

fn flip(img: &mut [u8], size: usize, c: usize, horizontal: bool) {
    if horizontal {
        for row in img.chunks_exact_mut(size * c) {
            match c {
                1 => row.reverse(),
                3 => row.as_chunks_mut::<3>().0.reverse(),
                4 => row.as_chunks_mut::<4>().0.reverse(),
                _ => {
                    for x in 0..size / 2 {
                        for ch in 0..c {
                            row.swap(x * c + ch, (size - 1 - x) * c + ch);
                        }
                    }
                }
            }
        }
    } else {
        let stride = size * c;
        for y in 0..size / 2 {
            let (top, bottom) = img.split_at_mut((size - 1 - y) * stride);
            top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
        }
    }
}

/// Reflect-101 border (`dcb|abcd|cba`), OpenCV's `BORDER_REFLECT_101`.
/// `v.floor() as i64` without a libm call (baseline x86-64 has no SSE4.1 `roundsd`).
#[inline(always)]
fn floor_i64(v: f64) -> i64 {
    let t = v as i64;
    if (t as f64) > v {
        t - 1
    } else {
        t
    }
}

#[inline(always)]
fn reflect101(i: i64, n: i64) -> usize {
    if (0..n).contains(&i) {
        return i as usize;
    }
    // one fold (a pixel or two beyond the border, the usual case) without a division
    if i < 0 && -i < n {
        return (-i) as usize;
    }
    if i >= n && i < 2 * n - 1 {
        return (2 * n - 2 - i) as usize;
    }
    reflect101_far(i, n)
}

#[cold]
fn reflect101_far(i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Albumentations' `ShiftScaleRotate`: the matrix of `cv2.getRotationMatrix2D(center,
/// angle, scale)` about the pixel centre `(w/2 − 0.5, h/2 − 0.5)`, plus a shift of
/// `int(dx × width)`, `int(dy × height)` pixels; bilinear sampling with reflect-101
/// borders (the classic `ShiftScaleRotate` default; Albumentations 2.x fills with 0).
/// `angle` in degrees, counter-clockwise. One scale for both axes (2.x draws two).
#[allow(clippy::too_many_arguments)]
pub fn shift_scale_rotate(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    angle: f64,
    scale: f64,
    dx: f64,
    dy: f64,
    dst: &mut [u8],
) {
    thread_local! {
        static PADDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    PADDED.with_borrow_mut(|padded| ssr_with(src, w, h, c, angle, scale, dx, dy, padded, dst));
}

simd::multiversion! {
    avx512;
    /// [`shift_scale_rotate`] with a buffer for the padded image.
    #[allow(clippy::too_many_arguments)]
    fn ssr_with(
        src: &[u8],
        w: usize,
        h: usize,
        c: usize,
        angle: f64,
        scale: f64,
        dx: f64,
        dy: f64,
        padded: &mut Vec<u8>,
        dst: &mut [u8],
    ) => ssr_rows
}

/// The inverse map of [`shift_scale_rotate`]: `(ia, ib, tx, ty)` with source
/// `(ia·px − ib·py, ib·px + ia·py)` for `(px, py) = (x − tx, y − ty)`.
fn ssr_inverse(w: usize, h: usize, angle: f64, scale: f64, dx: f64, dy: f64) -> [f64; 4] {
    let (cx, cy) = (w as f64 / 2.0 - 0.5, h as f64 / 2.0 - 0.5);
    let rad = angle.to_radians();
    let (a, b) = (scale * rad.cos(), scale * rad.sin());
    // forward matrix M = [[a, b, tx], [-b, a, ty]]
    // Albumentations truncates the shift to whole pixels: int(dx * width).
    let tx = (1.0 - a) * cx - b * cy + (dx * w as f64).trunc();
    let ty = b * cx + (1.0 - a) * cy + (dy * h as f64).trunc();
    // inverse of [[a, b], [-b, a]] is [[a, -b], [b, a]] / (a² + b²)
    let det = a * a + b * b;
    [a / det, b / det, tx, ty]
}

/// The source position of output pixel `(x, y)` under the inverse map
/// `m = (ia, ib, tx, ty)` of [`ssr_inverse`], in f32 (8 lanes to a vector).
#[inline(always)]
fn ssr_source([ia, ib, tx, ty]: [f32; 4], x: usize, y: usize) -> (f32, f32) {
    let (px, py) = (x as f32 - tx, y as f32 - ty);
    (ia * px - ib * py, ib * px + ia * py)
}

/// One output pixel of [`shift_scale_rotate`] sampled at `(sx, sy)`, any
/// position (reflect-101 at the borders).
#[allow(clippy::too_many_arguments)]
fn ssr_pixel(src: &[u8], w: usize, h: usize, c: usize, sx: f32, sy: f32, out: &mut [u8]) {
    let (x0, y0) = (floor_i64(sx as f64), floor_i64(sy as f64));
    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
    let xs = [reflect101(x0, w as i64), reflect101(x0 + 1, w as i64)];
    let ys = [reflect101(y0, h as i64), reflect101(y0 + 1, h as i64)];
    for (ch, o) in out.iter_mut().enumerate() {
        let p = |xi: usize, yi: usize| src[(ys[yi] * w + xs[xi]) * c + ch] as f32;
        let top = p(0, 0) * (1.0 - fx) + p(1, 0) * fx;
        let bot = p(0, 1) * (1.0 - fx) + p(1, 1) * fx;
        // A convex mix of bytes lies in [0, 255]: rounding half away from
        // zero is +0.5 and truncation (no libm call on baseline x86-64).
        *o = simd::f32_to_u8((top * (1.0 - fy) + bot * fy) + 0.5);
    }
}

/// [`shift_scale_rotate`]'s body, by blocks of a row: coordinates and
/// weights as arrays; where the four neighbours are inside, each neighbour
/// row's two pixels read as one 8-byte word and every channel blended as
/// arrays (which vectorize); the other pixels one by one ([`ssr_pixel`]).
/// The same f32 operations per pixel either way.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
#[inline(always)]
fn ssr_rows(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    angle: f64,
    scale: f64,
    dx: f64,
    dy: f64,
    padded: &mut Vec<u8>,
    dst: &mut [u8],
) {
    // the sizes describe `src` (the unchecked reads below rely on it)
    assert_eq!(
        Some(src.len()),
        w.checked_mul(h).and_then(|p| p.checked_mul(c)),
        "{w}×{h}×{c} image"
    );
    let [ia, ib, tx, ty] = ssr_inverse(w, h, angle, scale, dx, dy);
    let m = [ia as f32, ib as f32, tx as f32, ty as f32];
    let row = w * c;
    // (the padded image is at most 9 times the source; indices in i32)
    let words = c <= 4 && src.len() >= row + 8 && src.len() < (i32::MAX / 16) as usize;
    if !words {
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = ssr_source(m, x, y);
                let i = (y * w + x) * c;
                ssr_pixel(src, w, h, c, sx, sy, &mut dst[i..i + c]);
            }
        }
        return;
    }
    // The image with a reflect-101 border of `p` pixels (one fold, so p < size):
    // a rotated sample's neighbours past the edge are then read like inside ones.
    // as wide as the samples reach past the edge (an affine map's extremes are
    // at the corners), within one fold
    let reach = [
        (0.0, 0.0),
        (w as f64 - 1.0, 0.0),
        (0.0, h as f64 - 1.0),
        (w as f64 - 1.0, h as f64 - 1.0),
    ]
    .iter()
    .map(|(x, y)| {
        let (px, py) = (x - tx, y - ty);
        let (sx, sy) = (ia * px - ib * py, ib * px + ia * py);
        (-sx)
            .max(sx - (w as f64 - 1.0))
            .max(-sy)
            .max(sy - (h as f64 - 1.0))
    })
    .fold(0.0f64, f64::max);
    // (in floats first: an infinite or NaN reach, from a degenerate scale, stays in range)
    let p = (reach.ceil() + 2.0).min((w.min(h) - 1) as f64) as usize;
    reflect_pad(src, w, h, c, p, padded);
    ssr_blocks(src, padded, p, w, h, c, m, dst);
}

/// `src` with a reflect-101 border of `p ≤ min(w, h) − 1` pixels on each side.
fn reflect_pad(src: &[u8], w: usize, h: usize, c: usize, p: usize, out: &mut Vec<u8>) {
    let (pw, ph) = (w + 2 * p, h + 2 * p);
    // (every byte is written below: no clearing)
    out.resize(pw * ph * c, 0);
    for (py, prow) in out.chunks_exact_mut(pw * c).enumerate() {
        let line = &src[reflect101(py as i64 - p as i64, h as i64) * w * c..][..w * c];
        let (left, rest) = prow.split_at_mut(p * c);
        let (mid, right) = rest.split_at_mut(w * c);
        mid.copy_from_slice(line);
        // pixel i of the left border is source pixel p − i; of the right, w − 2 − i
        match c {
            1 => reflect_borders::<1>(line, p, left, right),
            2 => reflect_borders::<2>(line, p, left, right),
            3 => reflect_borders::<3>(line, p, left, right),
            4 => reflect_borders::<4>(line, p, left, right),
            _ => {
                for i in 0..p {
                    left[i * c..(i + 1) * c].copy_from_slice(&line[(p - i) * c..(p - i + 1) * c]);
                    let j = w - 2 - i;
                    right[i * c..(i + 1) * c].copy_from_slice(&line[j * c..(j + 1) * c]);
                }
            }
        }
    }
}

/// The reflected borders of one padded row, pixels of `C` bytes.
fn reflect_borders<const C: usize>(line: &[u8], p: usize, left: &mut [u8], right: &mut [u8]) {
    let px = line.as_chunks::<C>().0;
    let w = px.len();
    for (i, o) in left.as_chunks_mut::<C>().0.iter_mut().enumerate() {
        *o = px[p - i];
    }
    for (i, o) in right.as_chunks_mut::<C>().0.iter_mut().enumerate() {
        *o = px[w - 2 - i];
    }
}

/// [`ssr_rows`] on blocks of a row, reading the padded image.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
#[inline(always)]
fn ssr_blocks(
    src: &[u8],
    padded: &[u8],
    p: usize,
    w: usize,
    h: usize,
    c: usize,
    m: [f32; 4],
    dst: &mut [u8],
) {
    const BLOCK: usize = 32;
    let (pw, ph) = (w + 2 * p, h + 2 * p);
    let prow = pw * c;
    let (pf, wf, hf) = (p as f32, w as f32, h as f32);
    let (pi, pwi, phi, ci, prowi) = (p as i32, pw as i32, ph as i32, c as i32, prow as i32);
    let last = (padded.len() - 8) as i32 - prowi; // the largest base with room for both reads
    for y in 0..h {
        let mut x_start = 0;
        while x_start < w {
            let len = (w - x_start).min(BLOCK);
            let mut sxs = [0f32; BLOCK];
            let mut sys = [0f32; BLOCK];
            let mut fx = [0f32; BLOCK];
            let mut fy = [0f32; BLOCK];
            let mut base = [0i32; BLOCK];
            let mut inside = [false; BLOCK];
            for k in 0..BLOCK {
                let (sx, sy) = ssr_source(m, x_start + k, y);
                sxs[k] = sx;
                sys[k] = sy;
                // (clamped to [−p − 2, size + p + 1]: finite, inside i32, as
                // `floor_finite` needs)
                let (x0, y0) = (
                    geometric::floor_finite(geometric::clamp_select(sx, -pf - 2.0, wf + pf + 1.0)),
                    geometric::floor_finite(geometric::clamp_select(sy, -pf - 2.0, hf + pf + 1.0)),
                );
                // inside the padded image, the clamp changed nothing
                fx[k] = sx - x0 as f32;
                fy[k] = sy - y0 as f32;
                let (qx, qy) = (x0 + pi, y0 + pi);
                let b = (qy * pwi + qx) * ci;
                let ok = (qx >= 0) & (qy >= 0) & (qx + 1 < pwi) & (qy + 1 < phi) & (b <= last);
                inside[k] = ok;
                base[k] = if ok { b } else { 0 };
            }
            let (mut t_lo, mut t_hi) = ([0u32; BLOCK], [0u32; BLOCK]);
            let (mut b_lo, mut b_hi) = ([0u32; BLOCK], [0u32; BLOCK]);
            for k in 0..len {
                let b = base[k] as usize;
                debug_assert!(b + prow + 8 <= padded.len());
                // SAFETY: base ≤ last (or 0 ≤ last): both 8-byte reads are inside `padded`
                unsafe {
                    (t_lo[k], t_hi[k]) = geometric::load8_unchecked(padded, b);
                    (b_lo[k], b_hi[k]) = geometric::load8_unchecked(padded, b + prow);
                }
            }
            let out = &mut dst[(y * w + x_start) * c..(y * w + x_start + len) * c];
            let mut planes = [[0u8; BLOCK]; 4];
            for (ch, v) in planes.iter_mut().enumerate().take(c) {
                let [p00, p01, p10, p11]: [[f32; BLOCK]; 4] = [
                    geometric::bytes_as(&t_lo, &t_hi, ch),
                    geometric::bytes_as(&t_lo, &t_hi, c + ch),
                    geometric::bytes_as(&b_lo, &b_hi, ch),
                    geometric::bytes_as(&b_lo, &b_hi, c + ch),
                ];
                for k in 0..BLOCK {
                    let top = p00[k] * (1.0 - fx[k]) + p01[k] * fx[k];
                    let bot = p10[k] * (1.0 - fx[k]) + p11[k] * fx[k];
                    v[k] = simd::f32_to_u8((top * (1.0 - fy[k]) + bot * fy[k]) + 0.5);
                }
            }
            let [p0, p1, p2, p3] = &planes;
            geometric::interleave([p0, p1, p2, p3], c, out);
            if !inside[..len].iter().all(|ok| *ok) {
                for k in 0..len {
                    if !inside[k] {
                        ssr_pixel(src, w, h, c, sxs[k], sys[k], &mut out[k * c..(k + 1) * c]);
                    }
                }
            }
            x_start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_reverse_rows_and_columns() {
        let mut img: Vec<u8> = (0..12).collect(); // 2×2 RGB... use 3×... size 2, c 3
        flip(&mut img, 2, 3, true);
        assert_eq!(img, vec![3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8]);
        let mut img: Vec<u8> = (0..9).collect();
        flip(&mut img, 3, 1, false);
        assert_eq!(img, vec![6, 7, 8, 3, 4, 5, 0, 1, 2]);
        // every channel count against the pixel-by-pixel swap
        for c in 1..6 {
            let img: Vec<u8> = (0..5 * 5 * c).map(|i| i as u8).collect();
            let mut got = img.clone();
            flip(&mut got, 5, c, true);
            for y in 0..5 {
                for x in 0..5 {
                    for ch in 0..c {
                        assert_eq!(got[(y * 5 + x) * c + ch], img[(y * 5 + 4 - x) * c + ch]);
                    }
                }
            }
        }
    }

    /// The pixel-at-a-time form the block form replaced (the numbers every
    /// trial before it was computed with): the same bytes for any parameters.
    #[test]
    fn block_form_gives_the_pixel_at_a_time_bytes() {
        #[allow(clippy::too_many_arguments)]
        fn reference(
            src: &[u8],
            w: usize,
            h: usize,
            c: usize,
            angle: f64,
            scale: f64,
            dx: f64,
            dy: f64,
        ) -> Vec<u8> {
            let (cx, cy) = (w as f64 / 2.0 - 0.5, h as f64 / 2.0 - 0.5);
            let rad = angle.to_radians();
            let (a, b) = (scale * rad.cos(), scale * rad.sin());
            let tx = (1.0 - a) * cx - b * cy + (dx * w as f64).trunc();
            let ty = b * cx + (1.0 - a) * cy + (dy * h as f64).trunc();
            let det = a * a + b * b;
            // the map in f64, each pixel's position and blend in f32
            let (ia, ib, tx, ty) = ((a / det) as f32, (b / det) as f32, tx as f32, ty as f32);
            let mut dst = vec![0u8; src.len()];
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (x as f32 - tx, y as f32 - ty);
                    let sx = ia * px - ib * py;
                    let sy = ib * px + ia * py;
                    let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
                    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                    let xs = [reflect101(x0, w as i64), reflect101(x0 + 1, w as i64)];
                    let ys = [reflect101(y0, h as i64), reflect101(y0 + 1, h as i64)];
                    for ch in 0..c {
                        let p = |xi: usize, yi: usize| src[(ys[yi] * w + xs[xi]) * c + ch] as f32;
                        let top = p(0, 0) * (1.0 - fx) + p(1, 0) * fx;
                        let bot = p(0, 1) * (1.0 - fx) + p(1, 1) * fx;
                        dst[(y * w + x) * c + ch] = ((top * (1.0 - fy) + bot * fy) + 0.5) as u8;
                    }
                }
            }
            dst
        }
        let mut rng = Rng::new(8);
        for (w, c) in [(64usize, 3usize), (37, 1), (130, 3), (3, 3), (2, 4)] {
            let src: Vec<u8> = (0..w * w * c).map(|_| rng.below(256) as u8).collect();
            for i in 0..14 {
                let (angle, scale) = (rng.uniform(-45.0, 45.0), rng.uniform(0.9, 1.1));
                let (dx, dy) = (rng.uniform(-0.07, 0.07), rng.uniform(-0.07, 0.07));
                // and two far past the padded border (samples up to 2.5 sizes out)
                let (angle, scale, dx, dy) = match i {
                    10 => (30.0, 0.4, 0.1, -0.1),
                    11 => (-80.0, 0.25, -0.3, 0.2),
                    // degenerate: a zero scale (NaN map) and a huge zoom
                    12 => (10.0, 0.0, 0.0, 0.0),
                    13 => (10.0, 1e9, 0.0, 0.0),
                    _ => (angle, scale, dx, dy),
                };
                let mut got = vec![0u8; src.len()];
                shift_scale_rotate(&src, w, w, c, angle, scale, dx, dy, &mut got);
                let want = reference(&src, w, w, c, angle, scale, dx, dy);
                assert_eq!(got, want);
                // the baseline copy (the line above took the AVX2 one where the CPU has it)
                got.fill(0x5a);
                ssr_rows(
                    &src,
                    w,
                    w,
                    c,
                    angle,
                    scale,
                    dx,
                    dy,
                    &mut Vec::new(),
                    &mut got,
                );
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn identity_warp_is_identity() {
        let src: Vec<u8> = (0..5 * 5 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut dst = vec![0; src.len()];
        shift_scale_rotate(&src, 5, 5, 3, 0.0, 1.0, 0.0, 0.0, &mut dst);
        assert_eq!(src, dst);
    }

    /// Albumentations 2.0.8 / OpenCV reference (values from `A.ShiftScaleRotate` with
    /// fixed parameters, `border_mode=cv2.BORDER_REFLECT_101`):
    /// ```python
    /// img = np.array([[(y*40 + x*17) % 256 for x in range(5)] for y in range(6)], dtype=np.uint8)
    /// A.ShiftScaleRotate(shift_limit_x=(0.1,0.1), shift_limit_y=(-0.05,-0.05), scale_limit=(0.1,0.1),
    ///     rotate_limit=(30,30), border_mode=cv2.BORDER_REFLECT_101, p=1.0)(image=img)["image"]
    /// lut = np.clip(np.arange(256, dtype=np.float32) * 1.15 - 0.1 * 255, 0, 255).astype(np.uint8); lut[img]
    /// ```
    #[test]
    fn warp_and_brightness_match_albumentations() {
        let (h, w) = (6usize, 5usize);
        let img: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| ((y * 40 + x * 17) % 256) as u8))
            .collect();
        let want_warp: [u8; 30] = [
            42, 43, 75, 106, 114, 35, 67, 98, 130, 153, 59, 91, 122, 154, 185, 83, 114, 146, 177,
            209, 115, 138, 170, 201, 233, 154, 162, 193, 225, 226,
        ];
        let mut out = vec![0u8; 30];
        shift_scale_rotate(&img, w, h, 1, 30.0, 1.1, 0.1, -0.05, &mut out);
        for (a, b) in out.iter().zip(want_warp) {
            assert!(
                (*a as i32 - b as i32).abs() <= 1,
                "{out:?} vs {want_warp:?}"
            );
        }
        let want_bc: [u8; 30] = [
            0, 0, 13, 33, 52, 20, 40, 59, 79, 98, 66, 86, 105, 125, 144, 112, 132, 151, 171, 190,
            158, 178, 197, 217, 236, 204, 224, 243, 255, 0,
        ];
        let mut bc = img.clone();
        brightness_contrast(&mut bc, 1.15, -0.1);
        assert_eq!(bc, want_bc);
    }

    #[test]
    fn reflect_101_border() {
        let n = 4;
        let got: Vec<usize> = (-3..7).map(|i| reflect101(i, n)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        // the one-fold shortcuts agree with the general rule
        for n in 1..7 {
            for i in -30..30 {
                assert_eq!(reflect101(i, n), reflect101_far(i, n), "{i} of {n}");
            }
        }
    }

    /// Every transform at probability 1 on many seeds, RGB and grey: the
    /// baseline copies, the AVX2 copies and the AVX-512 copies (where this CPU
    /// has them) give the same bytes, so a trial's augmentations do not depend
    /// on the CPU.
    #[test]
    fn every_simd_level_gives_the_same_bytes() {
        let st = AugmentationSettings {
            probability: 1.0,
            ..Default::default()
        };
        let run = || -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut s = AugmentScratch::default();
            for (size, c) in [(64usize, 3usize), (33, 1), (20, 3)] {
                let mut rng = Rng::new(size as u64);
                let img: Vec<u8> = (0..size * size * c).map(|_| rng.below(256) as u8).collect();
                for seed in 0..12 {
                    for kind in Augmentation::ORDER {
                        let mut r = Rng::new(seed);
                        out.push(
                            apply_augmentations(&img, size, c, &[kind], &st, &mut r, &mut s)
                                .to_vec(),
                        );
                    }
                    let mut r = Rng::new(seed);
                    out.push(
                        apply_augmentations(
                            &img,
                            size,
                            c,
                            &Augmentation::ORDER,
                            &st,
                            &mut r,
                            &mut s,
                        )
                        .to_vec(),
                    );
                }
            }
            out
        };
        use simd::Level;
        simd::set_cap(Level::Baseline);
        assert_eq!(simd::level(), Level::Baseline);
        let baseline = run();
        for level in [Level::Avx2, Level::Avx512] {
            if !simd::available(level) {
                continue; // (this CPU has no such copy to compare)
            }
            simd::set_cap(level);
            assert_eq!(simd::level(), level);
            let wide = run();
            assert_eq!(baseline.len(), wide.len());
            for (i, (a, b)) in baseline.iter().zip(&wide).enumerate() {
                assert!(a == b, "case {i}: the baseline and {level:?} copies differ");
            }
        }
        simd::set_cap(Level::Avx512);
    }

    #[test]
    fn probability_zero_and_one() {
        let img: Vec<u8> = (0..16).collect();
        let mut s = AugmentScratch::default();
        let mut rng = Rng::new(3);
        let never = AugmentationSettings {
            probability: 0.0,
            ..Default::default()
        };
        let out = apply_augmentations(&img, 4, 1, &[Augmentation::Hflip], &never, &mut rng, &mut s)
            .to_vec();
        assert_eq!(out, img);
        let always = AugmentationSettings {
            probability: 1.0,
            ..Default::default()
        };
        let out = apply_augmentations(
            &img,
            4,
            1,
            &[Augmentation::Hflip],
            &always,
            &mut rng,
            &mut s,
        )
        .to_vec();
        assert_eq!(&out[..4], &[3, 2, 1, 0]);
    }
}
