//! Pixel transforms with Albumentations 2.0.8's arithmetic on `u8`:
//! brightness/contrast, hue/saturation/value (OpenCV's 8-bit HSV), Gaussian
//! noise, coarse dropout. Tested against Albumentations' output in
//! `tests/albumentations.rs`.

use std::sync::OnceLock;

use super::geometric::round_even_f32;
use crate::rng::{Rng, Rng4};

/// Albumentations' `RandomBrightnessContrast` on `u8` with `brightness_by_max`:
/// its lookup table `clip(v × alpha + beta × 255)` (float32, truncated),
/// computed per value rather than read: the same bytes, 8 values at a time.
pub fn brightness_contrast(img: &mut [u8], alpha: f64, beta: f64) {
    brightness_values(img, alpha as f32, (beta * 255.0) as f32);
}

super::simd::multiversion! {
    avx512;
    /// `v × alpha + beta255` in f32, truncated and clipped to `u8`, for every value.
    fn brightness_values(img: &mut [u8], alpha: f32, beta255: f32) => brightness_body
}

#[inline(always)]
fn brightness_body(img: &mut [u8], alpha: f32, beta255: f32) {
    for p in img.iter_mut() {
        *p = super::simd::f32_to_u8(*p as f32 * alpha + beta255);
    }
}

/// OpenCV's division tables for RGB → HSV on `u8` (`hsv_shift` = 12).
struct HsvTables {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

fn hsv_tables() -> &'static HsvTables {
    static T: OnceLock<HsvTables> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = HsvTables {
            sdiv: [0; 256],
            hdiv: [0; 256],
        };
        for i in 1..256 {
            t.sdiv[i] = ((255 << 12) as f64 / i as f64).round_ties_even() as i32;
            t.hdiv[i] = ((180 << 12) as f64 / (6.0 * i as f64)).round_ties_even() as i32;
        }
        t
    })
}

/// `cv2.cvtColor(RGB2HSV)` of one `u8` pixel: OpenCV's integer algorithm, hue in 0..180.
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (h, s, v) = rgb_to_hsv_with(hsv_tables(), r as i32, g as i32, b as i32);
    (h as u8, s as u8, v as u8)
}

/// OpenCV's two division tables, read ([`HsvTables`]) or computed ([`Divided`]).
trait HsvDiv {
    /// `round((255 << 12) / v)`, 0 for v = 0
    fn sdiv(&self, v: i32) -> i32;
    /// `round((180 << 12) / (6 d))`, 0 for d = 0
    fn hdiv(&self, d: i32) -> i32;
}

impl HsvDiv for HsvTables {
    #[inline(always)]
    fn sdiv(&self, v: i32) -> i32 {
        self.sdiv[(v & 255) as usize]
    }
    #[inline(always)]
    fn hdiv(&self, d: i32) -> i32 {
        self.hdiv[(d & 255) as usize]
    }
}

/// The tables' entries computed, for the block loop: a table read per pixel
/// is a gather, which x86 compilers emulate one lane at a time, while a
/// float division runs 8 wide. Equal to the tables for every entry
/// (`hsv_blocks_equal_the_pixel_functions` checks all 2²⁴ colours).
struct Divided;

impl Divided {
    /// `round(num / i)` for `0 < i ≤ 255`, `num < 2²¹`, and 0 for i = 0. The
    /// f32 quotient is within 1/8 of the exact one, so its rounding is at most
    /// one off, which the exact remainder mends. No quotient here is a tie:
    /// `2 num / i` odd would need 2¹³ to divide i.
    #[inline(always)]
    fn round_div(num: i32, i: i32) -> i32 {
        let d = if i > 0 { i } else { 1 };
        let q = num as f32 / d as f32 + 0.5;
        // SAFETY: 0 < q ≤ 2²¹ + 1: finite, inside i32
        let n: i32 = unsafe { q.to_int_unchecked() };
        let r2 = 2 * (num - n * d);
        let n = n + (r2 > d) as i32 - (r2 < -d) as i32;
        if i > 0 {
            n
        } else {
            0
        }
    }
}

impl HsvDiv for Divided {
    #[inline(always)]
    fn sdiv(&self, v: i32) -> i32 {
        Self::round_div(255 << 12, v)
    }
    #[inline(always)]
    fn hdiv(&self, d: i32) -> i32 {
        Self::round_div((180 << 12) / 6, d)
    }
}

/// [`rgb_to_hsv`] on channels in 0..=255 held as `i32` (the form the block
/// loop of [`hsv_blocks`] vectorizes: selects, no early exits).
#[inline(always)]
fn rgb_to_hsv_with(t: &impl HsvDiv, r: i32, g: i32, b: i32) -> (i32, i32, i32) {
    let v = r.max(g).max(b);
    let d = v - r.min(g).min(b);
    let s = (d * t.sdiv(v) + 2048) >> 12;
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * d
    } else {
        r - g + 4 * d
    };
    let h = (h * t.hdiv(d) + 2048) >> 12;
    (h + if h < 0 { 180 } else { 0 }, s, v)
}

/// `cv2.cvtColor(HSV2RGB)` of one `u8` pixel: OpenCV's scalar float path,
/// rounded half to even. (OpenCV's vector path, used for the first ⌊w/32⌋·32
/// pixels of a row, truncates instead, and OpenCV fuses `1 − s·h`: both within
/// one grey level of this.)
#[inline(always)]
pub fn hsv_to_rgb(h: u8, s: u8, v: u8) -> (u8, u8, u8) {
    const SECTOR: [[usize; 3]; 6] = [
        [1, 3, 0],
        [1, 0, 2],
        [3, 0, 1],
        [0, 2, 1],
        [0, 1, 3],
        [2, 1, 0],
    ];
    let s = s as f32 * (1.0 / 255.0);
    let v = v as f32 * (1.0 / 255.0);
    let (r, g, b) = if s == 0.0 {
        (v, v, v)
    } else {
        let mut hh = h as f32 * (6.0 / 180.0);
        if hh >= 6.0 {
            hh -= 6.0;
        }
        let sec = hh as usize; // hh ≥ 0: truncation is floor
        let f = hh - sec as f32;
        let tab = [
            v,
            v * (1.0 - s),
            v * (1.0 - s * f),
            v * (1.0 - s * (1.0 - f)),
        ];
        let [bi, gi, ri] = SECTOR[sec.min(5)];
        (tab[ri], tab[gi], tab[bi])
    };
    let q = |x: f32| round_even_f32(x * 255.0).clamp(0.0, 255.0) as u8;
    (q(r), q(g), q(b))
}

/// Albumentations' `shift_hsv` on `u8`: hue `⌊(h + Δh) mod 180⌋`, saturation
/// `s + trunc(Δs)` (a grey pixel, s = 0, stays grey), value `v + trunc(Δv)`,
/// both saturating. A grey image (one channel) gets the value shift only.
pub fn hue_saturation_value(img: &mut [u8], channels: usize, hue: f64, sat: f64, val: f64) {
    if hue == 0.0 && sat == 0.0 && val == 0.0 {
        return;
    }
    let dv = val.trunc() as i32;
    let val_lut: [u8; 256] =
        std::array::from_fn(|v| (v as i32).saturating_add(dv).clamp(0, 255) as u8);
    if channels == 1 {
        for p in img.iter_mut() {
            *p = val_lut[*p as usize];
        }
        return;
    }
    let ds = sat.trunc() as i32;
    let hue_lut: [u8; 256] = std::array::from_fn(|h| {
        // Python's mod; a result of 180.0 (a shift a hair below −h) is hue 0, as OpenCV reads it
        let x = (h as f64 + hue).rem_euclid(180.0) as u8;
        if x >= 180 {
            0
        } else {
            x
        }
    });
    // saturation and value shifted by arithmetic (tables would be gathers)
    hsv_pixels(img, channels, &hue_lut.map(i32::from), ds, dv);
}

/// Saturation `s` shifted by `ds`, saturating; a grey pixel (s = 0) stays grey.
#[inline(always)]
fn sat_shift(s: i32, ds: i32) -> i32 {
    if s == 0 {
        0
    } else {
        s.saturating_add(ds).clamp(0, 255)
    }
}

super::simd::multiversion! {
    avx512;
    /// Each pixel through RGB → HSV, the tables, HSV → RGB.
    fn hsv_pixels(
        img: &mut [u8],
        c: usize,
        hue_lut: &[i32; 256],
        ds: i32,
        dv: i32,
    ) => hsv_blocks
}

/// [`hsv_pixels`]' body: [`rgb_to_hsv`] and [`hsv_to_rgb`] without branches
/// (a grey pixel, s = 0, needs no case: every sector then gives v), on blocks
/// of 64 pixels as whole arrays. The same integer and float operations, so
/// the same bytes (`hsv_blocks_equal_the_pixel_functions`). A hue table that
/// is a rotation (what a shift makes, but for rounding at the edges) is
/// applied as an addition, not read per pixel.
#[inline(always)]
fn hsv_blocks(img: &mut [u8], c: usize, hue_lut: &[i32; 256], ds: i32, dv: i32) {
    let k = hue_lut[0];
    let rotation = (0..180).all(|h| hue_lut[h as usize] == (h + k) % 180) && (0..180).contains(&k);
    if rotation {
        hsv_blocks_with::<true>(img, c, hue_lut, k, ds, dv)
    } else {
        hsv_blocks_with::<false>(img, c, hue_lut, k, ds, dv)
    }
}

/// [`hsv_blocks`] with the hue table read (`ROTATE` false) or applied as
/// `(h + k) mod 180` (true; hue in 0..180 as RGB → HSV gives it).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
fn hsv_blocks_with<const ROTATE: bool>(
    img: &mut [u8],
    c: usize,
    hue_lut: &[i32; 256],
    k: i32,
    ds: i32,
    dv: i32,
) {
    const B: usize = 64;
    const MAGIC: f32 = 8_388_608.0; // 2²³: rounds a value in [0, 2²²) half to even
    let t = Divided;
    for chunk in img.chunks_mut(B * c) {
        let n = chunk.len() / c;
        let (mut r, mut g, mut b) = ([0i32; B], [0i32; B], [0i32; B]);
        if c == 3 {
            for (i, px) in chunk.as_chunks::<3>().0.iter().enumerate() {
                r[i] = px[0] as i32;
                g[i] = px[1] as i32;
                b[i] = px[2] as i32;
            }
        } else {
            for i in 0..n {
                r[i] = chunk[i * c] as i32;
                g[i] = chunk[i * c + 1] as i32;
                b[i] = chunk[i * c + 2] as i32;
            }
        }
        let (mut ro, mut go, mut bo) = ([0u8; B], [0u8; B], [0u8; B]);
        for i in 0..B {
            let (h, s, v) = rgb_to_hsv_with(&t, r[i], g[i], b[i]);
            let h = if ROTATE {
                let h = h + k;
                if h >= 180 {
                    h - 180
                } else {
                    h
                }
            } else {
                hue_lut[(h & 255) as usize]
            };
            let s = sat_shift(s, ds) as f32 * (1.0 / 255.0);
            let v = v.saturating_add(dv).clamp(0, 255) as f32 * (1.0 / 255.0);
            let hh = h as f32 * (6.0 / 180.0);
            let hh = if hh >= 6.0 { hh - 6.0 } else { hh };
            // SAFETY: hh is in [0, 6): finite, inside i32; truncation is floor
            let sec: i32 = unsafe { hh.to_int_unchecked::<i32>() }.min(5);
            let f = hh - sec as f32;
            let p = v * (1.0 - s);
            let q = v * (1.0 - s * f);
            let u = v * (1.0 - s * (1.0 - f));
            let rf = match sec {
                0 | 5 => v,
                1 => q,
                4 => u,
                _ => p,
            };
            let gf = match sec {
                0 => u,
                1 | 2 => v,
                3 => q,
                _ => p,
            };
            let bf = match sec {
                0 | 1 => p,
                2 => u,
                3 | 4 => v,
                _ => q,
            };
            ro[i] = super::simd::f32_to_u8(((rf * 255.0) + MAGIC) - MAGIC);
            go[i] = super::simd::f32_to_u8(((gf * 255.0) + MAGIC) - MAGIC);
            bo[i] = super::simd::f32_to_u8(((bf * 255.0) + MAGIC) - MAGIC);
        }
        if c == 3 {
            super::geometric::interleave([&ro, &go, &bo, &[]], 3, chunk);
        } else {
            for i in 0..n {
                chunk[i * c] = ro[i];
                chunk[i * c + 1] = go[i];
                chunk[i * c + 2] = bo[i];
            }
        }
    }
}

/// Albumentations' `GaussNoise` applied: `clip(img + trunc(noise))` with
/// `noise` in grey levels (a value in (−1, 1) changes nothing, as there).
pub fn add_noise(img: &mut [u8], noise: &[f32]) {
    add_noise_simd(img, noise)
}

super::simd::multiversion! {
    avx512;
    fn add_noise_simd(img: &mut [u8], noise: &[f32]) => add_noise_body
}

/// [`add_noise`]'s body: the noise limited to ±512 first (beyond, the sum
/// saturates the same way) and NaN read as 0 (as `as i32` reads it), so the
/// truncation needs no saturating conversion and the loop vectorizes.
#[inline(always)]
fn add_noise_body(img: &mut [u8], noise: &[f32]) {
    for (p, n) in img.iter_mut().zip(noise) {
        let n = if n.is_nan() {
            0.0
        } else {
            n.clamp(-512.0, 512.0)
        };
        // SAFETY: n is finite and within ±512
        let n: i32 = unsafe { n.to_int_unchecked() };
        *p = (*p as i32 + n).clamp(0, 255) as u8;
    }
}

/// `GaussNoise`'s noise: σ ~ U[std₀, std₁), μ ~ U[mean₀, mean₁) (fractions of
/// 255), then `(μ + σ z) · 255` per value, one `z` per channel or one per pixel
/// shared by its channels. Albumentations draws `z` from OpenCV's generator,
/// which no one else reproduces: Sweep draws it from its own stream.
pub fn gauss_noise(
    rng: &mut Rng,
    n_pixels: usize,
    channels: usize,
    std_range: [f64; 2],
    mean_range: [f64; 2],
    per_channel: bool,
    out: &mut Vec<f32>,
) {
    let sigma = rng.uniform(std_range[0], std_range[1]) as f32;
    let mean = rng.uniform(mean_range[0], mean_range[1]) as f32;
    let draws = if per_channel {
        n_pixels * channels
    } else {
        n_pixels
    };
    // (every value is written below: no clearing)
    out.resize(n_pixels * channels, 0.0);
    let mut lanes = Rng4::from_rng(rng);
    normals(&mut lanes, mean, sigma, &mut out[..draws]);
    if !per_channel && channels > 1 {
        // one value per pixel, shared by its channels (from the back, in place)
        for i in (0..n_pixels).rev() {
            let v = out[i];
            out[i * channels..(i + 1) * channels].fill(v);
        }
    }
}

const NORMAL_BLOCK: usize = 64;

super::simd::multiversion! {
    avx512;
    /// `(mean + sigma · z) · 255` for standard normals `z` into every value of
    /// `out`, from the words of four streams (two normals per word).
    fn normals(lanes: &mut Rng4, mean: f32, sigma: f32, out: &mut [f32]) => normals_body
}

#[inline(always)]
fn normals_body(lanes: &mut Rng4, mean: f32, sigma: f32, out: &mut [f32]) {
    let mut bits = [0u64; NORMAL_BLOCK / 2];
    for block in out.chunks_mut(NORMAL_BLOCK) {
        for four in bits.as_chunks_mut::<4>().0 {
            *four = lanes.next_u64x4();
        }
        box_muller(&bits, mean, sigma, block);
    }
}

/// Box–Muller on whole arrays (which vectorize, unlike the ziggurat's table
/// walk): from each 64-bit word, `u₁ = (⌊hi/2⌋ + ½) / 2³¹` in (0, 1) and
/// `u₂ = ⌊lo/2⁸⌋ / 2²⁴`, then `r = √(−2 ln u₁)` and `(r cos 2πu₂, r sin 2πu₂)`: two
/// independent standard normals. `ln`, `sin` and `cos` are polynomials
/// good to a few float roundings ([`ln_f32`], [`sin_cos_turn`]); the
/// smallest `u₁` caps |z| at 6.66 (a draw beyond has probability 3·10⁻¹¹).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
fn box_muller(bits: &[u64; NORMAL_BLOCK / 2], mean: f32, sigma: f32, out: &mut [f32]) {
    const H: usize = NORMAL_BLOCK / 2;
    // word k gives values k and H + k (the order of independent draws is free)
    let mut z = [0f32; NORMAL_BLOCK];
    let (zc, zs) = z.split_at_mut(H);
    // the words' halves first, as 32-bit lanes (so the float loop runs 8 wide)
    let (mut his, mut los) = ([0i32; H], [0i32; H]);
    for k in 0..H {
        his[k] = (bits[k] >> 33) as i32; // 31 bits
        los[k] = ((bits[k] as u32) >> 8) as i32; // 24 bits: exact in f32
    }
    for k in 0..H {
        let (hi, lo) = (his[k], los[k]);
        let u1 = (hi as f32 + 0.5) * (1.0 / 2_147_483_648.0);
        let u2 = lo as f32 * (1.0 / 16_777_216.0);
        let r = (-2.0 * ln_f32(u1)).sqrt();
        let (s, c) = sin_cos_turn(u2);
        zc[k] = r * c;
        zs[k] = r * s;
    }
    for (o, z) in out.iter_mut().zip(&z) {
        *o = (mean + sigma * *z) * 255.0;
    }
}

/// `ln x` for `0 < x ≤ 1` (finite, normal): `x = m·2ᵉ` with `m` in [√½, √2),
/// `ln m = 2 atanh s` with `s = (m − 1)/(m + 1)`, |s| ≤ 0.172, by its series to s¹¹.
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits() as i32;
    // exponent relative to √½ so that m lands in [√½, √2)
    let k = (bits - 0x3f35_04f3) >> 23;
    let m = f32::from_bits((bits - (k << 23)) as u32);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 2.0
        + s2 * (2.0 / 3.0
            + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0 + s2 * (2.0 / 11.0)))));
    k as f32 * std::f32::consts::LN_2 + s * series
}

/// `(sin 2πt, cos 2πt)` for `0 ≤ t < 1`: the nearest quarter turn `q` and
/// `x = 2π(t − q/4)` in [−π/4, π/4], Taylor series to x⁹ and x¹⁰.
#[inline(always)]
fn sin_cos_turn(t: f32) -> (f32, f32) {
    let quarters = t * 4.0;
    // SAFETY: quarters + ½ is in [½, 4½): finite, inside i32; truncation is floor
    let q: i32 = unsafe { (quarters + 0.5).to_int_unchecked() };
    let x = (quarters - q as f32) * std::f32::consts::FRAC_PI_2;
    let x2 = x * x;
    let sin = x
        * (1.0
            + x2 * (-1.0 / 6.0
                + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362_880.0)))));
    let cos = 1.0
        + x2 * (-0.5
            + x2 * (1.0 / 24.0
                + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0 + x2 * (-1.0 / 3_628_800.0)))));
    // quarter turn q: (sin, cos) → (s, c), (c, −s), (−s, −c), (−c, s), as selects
    let odd = q & 1 == 1;
    let (a, b) = if odd { (cos, sin) } else { (sin, cos) };
    let sign_sin = 1.0 - 2.0 * ((q >> 1) & 1) as f32;
    let sign_cos = 1.0 - 2.0 * (((q + 1) >> 1) & 1) as f32;
    (a * sign_sin, b * sign_cos)
}

/// Coarse dropout's holes `(x0, y0, x1, y1)` (half-open), drawn as
/// Albumentations does with fractional sizes: the count uniform in
/// `[n₀, n₁]`, every height `int(h · U[h₀, h₁))`, then every width, then
/// every top in `[0, h − height]`, then every left.
pub fn dropout_holes(
    rng: &mut Rng,
    w: usize,
    h: usize,
    count: [usize; 2],
    heights: [f64; 2],
    widths: [f64; 2],
    out: &mut Vec<(usize, usize, usize, usize)>,
) {
    let n = count[0] + rng.below(count[1] - count[0] + 1);
    let hs: Vec<usize> = (0..n)
        .map(|_| ((h as f64 * rng.uniform(heights[0], heights[1])) as usize).min(h))
        .collect();
    let ws: Vec<usize> = (0..n)
        .map(|_| ((w as f64 * rng.uniform(widths[0], widths[1])) as usize).min(w))
        .collect();
    let ys: Vec<usize> = hs.iter().map(|hh| rng.below(h - hh + 1)).collect();
    let xs: Vec<usize> = ws.iter().map(|ww| rng.below(w - ww + 1)).collect();
    out.clear();
    for i in 0..n {
        out.push((xs[i], ys[i], xs[i] + ws[i], ys[i] + hs[i]));
    }
}

/// Fills each hole with `fill` (one value per channel).
pub fn fill_holes(
    img: &mut [u8],
    w: usize,
    c: usize,
    holes: &[(usize, usize, usize, usize)],
    fill: &[u8],
) {
    for &(x0, y0, x1, y1) in holes {
        for y in y0..y1 {
            for px in img[(y * w + x0) * c..(y * w + x1) * c].chunks_exact_mut(c) {
                px.copy_from_slice(&fill[..c]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round trips where OpenCV's 8-bit HSV is exact: greys, primaries, and
    /// `cv2.cvtColor(np.uint8([[[200, 120, 40]]]), cv2.COLOR_RGB2HSV)` = [15, 204, 200].
    #[test]
    fn hsv_conversions_match_opencv_on_known_pixels() {
        assert_eq!(rgb_to_hsv(200, 120, 40), (15, 204, 200));
        assert_eq!(rgb_to_hsv(255, 0, 0), (0, 255, 255));
        assert_eq!(rgb_to_hsv(0, 255, 0), (60, 255, 255));
        assert_eq!(rgb_to_hsv(0, 0, 255), (120, 255, 255));
        assert_eq!(rgb_to_hsv(77, 77, 77), (0, 0, 77));
        for (r, g, b) in [
            (255, 0, 0),
            (0, 255, 0),
            (0, 0, 255),
            (77, 77, 77),
            (0, 0, 0),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            assert_eq!(hsv_to_rgb(h, s, v), (r, g, b));
        }
    }

    /// Every one of the 2²⁴ colours through the block form (on this CPU's copy
    /// and the baseline copy) equals the pixel functions with the same tables.
    #[test]
    fn hsv_blocks_equal_the_pixel_functions() {
        // a rotation (what a hue shift makes) and a table that is not one
        let rotation: [i32; 256] = std::array::from_fn(|h| (h as i32 + 17).rem_euclid(180));
        let scrambled: [i32; 256] = std::array::from_fn(|h| (h as i32 * 7 + 3) % 180);
        let sat_lut: [i32; 256] = std::array::from_fn(|s| {
            if s == 0 {
                0
            } else {
                (s as i32 - 30).clamp(0, 255)
            }
        });
        let val_lut: [i32; 256] = std::array::from_fn(|v| (v as i32 + 25).clamp(0, 255));
        let all: Vec<u8> = (0..1u32 << 24)
            .flat_map(|x| [(x >> 16) as u8, (x >> 8) as u8, x as u8])
            .collect();
        for hue_lut in [rotation, scrambled] {
            let mut fast = all.clone();
            hsv_pixels(&mut fast, 3, &hue_lut, -30, 25);
            let mut base = all.clone();
            hsv_blocks(&mut base, 3, &hue_lut, -30, 25);
            for (i, px) in all.chunks_exact(3).enumerate() {
                let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
                let (h, s, v) = (
                    hue_lut[h as usize] as u8,
                    sat_lut[s as usize] as u8,
                    val_lut[v as usize] as u8,
                );
                let (r, g, b) = hsv_to_rgb(h, s, v);
                assert_eq!(&fast[i * 3..i * 3 + 3], &[r, g, b], "{px:?}");
                assert_eq!(&base[i * 3..i * 3 + 3], &[r, g, b], "{px:?} (baseline)");
            }
        }
    }

    /// The computed brightness/contrast equals Albumentations' uint8 table
    /// (`np.clip(np.arange(256) * alpha + beta * 255, 0, 255)` in float32,
    /// truncated) on every value, on this CPU's copy and the baseline copy.
    #[test]
    fn brightness_contrast_equals_the_table() {
        let all: Vec<u8> = (0..=255).collect();
        for (alpha, beta) in [
            (1.0, 0.0),
            (0.8, 0.2),
            (1.2, -0.2),
            (1.37, 0.0513),
            (0.0, 1.5),
            (3.0, -3.0),
            (0.9111, -0.0071),
        ] {
            let mut fast = all.clone();
            brightness_contrast(&mut fast, alpha, beta);
            let mut base = all.clone();
            brightness_body(&mut base, alpha as f32, (beta * 255.0) as f32);
            for v in 0..256 {
                let want =
                    (v as f32 * alpha as f32 + (beta * 255.0) as f32).clamp(0.0, 255.0) as u8;
                assert_eq!((fast[v], base[v]), (want, want), "{v} at ({alpha}, {beta})");
            }
        }
    }

    /// The polynomials against std's functions.
    #[test]
    fn ln_and_sin_cos_are_accurate() {
        for i in 1..100_000u32 {
            let x = i as f32 / 100_000.0;
            let want = (x as f64).ln();
            assert!(
                (ln_f32(x) as f64 - want).abs() < 2e-7 * want.abs().max(1.0),
                "ln {x}"
            );
            let (s, c) = sin_cos_turn(x);
            let a = 2.0 * std::f64::consts::PI * x as f64;
            assert!((s as f64 - a.sin()).abs() < 1e-6, "sin {x}");
            assert!((c as f64 - a.cos()).abs() < 1e-6, "cos {x}");
        }
        for x in [f32::MIN_POSITIVE, 1e-30, 4.656_613e-10, 0.5, 1.0] {
            let want = (x as f64).ln();
            assert!(
                (ln_f32(x) as f64 - want).abs() < 2e-7 * want.abs().max(1.0),
                "ln {x}"
            );
        }
    }

    /// 400,000 draws of the noise's normals: Kolmogorov–Smirnov against Φ
    /// (critical value at α = 0.001), the second and fourth moments, the share
    /// beyond 3σ, and no correlation between the two normals of one word.
    #[test]
    fn box_muller_draws_standard_normals() {
        let mut rng = Rng::new(77);
        let mut z = Vec::new();
        gauss_noise(
            &mut rng,
            400_000,
            1,
            [1.0 / 255.0; 2],
            [0.0; 2],
            true,
            &mut z,
        );
        let n = z.len() as f64;
        let var = z.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n;
        let kurt = z.iter().map(|v| (*v as f64).powi(4)).sum::<f64>() / n;
        let mean = z.iter().map(|v| *v as f64).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "fourth moment {kurt}");
        let beyond = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / n;
        assert!((beyond - 0.0027).abs() < 0.0006, "beyond 3σ {beyond}");
        let corr = z
            .chunks_exact(NORMAL_BLOCK)
            .flat_map(|b| {
                (0..NORMAL_BLOCK / 2).map(move |k| b[k] as f64 * b[k + NORMAL_BLOCK / 2] as f64)
            })
            .sum::<f64>()
            / (n / 2.0);
        assert!(corr.abs() < 0.01, "pair correlation {corr}");
        let mut s: Vec<f64> = z.iter().map(|v| *v as f64).collect();
        s.sort_by(f64::total_cmp);
        let d = s
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let f = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
                (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / n.sqrt(), "KS distance {d}");
    }

    #[test]
    fn noise_below_one_grey_level_changes_nothing() {
        let mut img = vec![10u8, 10, 10, 250];
        add_noise(&mut img, &[-0.9, 0.9, 1.5, 20.0]);
        assert_eq!(img, vec![10, 10, 11, 255]);
        // far beyond the range, negative truncation, NaN
        let mut img = vec![10u8, 10, 200, 200, 7, 7];
        add_noise(&mut img, &[-1e9, 1e9, -1.7, -600.0, f32::NAN, 2.99]);
        assert_eq!(img, vec![0, 255, 199, 0, 7, 9]);
    }

    #[test]
    fn holes_stay_inside_and_follow_the_ranges() {
        let mut rng = Rng::new(2);
        let mut holes = Vec::new();
        for _ in 0..500 {
            dropout_holes(&mut rng, 64, 48, [1, 3], [0.1, 0.2], [0.3, 0.5], &mut holes);
            assert!((1..=3).contains(&holes.len()));
            for &(x0, y0, x1, y1) in &holes {
                assert!(x1 <= 64 && y1 <= 48);
                assert!((4..=9).contains(&(y1 - y0)), "{}", y1 - y0);
                assert!((19..=31).contains(&(x1 - x0)), "{}", x1 - x0);
            }
        }
    }
}
