//! Geometric transforms with OpenCV's arithmetic, as Albumentations 2.0.8 calls
//! it (with OpenCV 5.0): `cv2.remap` (bilinear, constant border) for grid
//! distortion and elastic transform, `cv2.resize` (bilinear, fixed point) for
//! random resized crop. Tested against Albumentations' own output in
//! `tests/albumentations.rs` (fixtures from `scripts/albumentations-reference.py`).

use crate::rng::Rng;

/// `floor(v)` as an integer without a libm call (baseline x86-64 has no SSE4.1).
#[inline(always)]
fn floor_i32(v: f32) -> i32 {
    let t = v as i32; // saturating: far below i32, i32::MIN, which stays
    if (t as f32) > v {
        t.saturating_sub(1)
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
/// same for y, or a NaN position) is `fill`; otherwise each of the four
/// neighbours outside the image reads `fill`, and `v = v0 + ay (v1 − v0)` with
/// `vk = p + ax (q − p)`, rounded half to even. `fill` holds one value per channel.
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
    // (borrowed out here: a thread-local borrowed inside the multiversioned
    // function would be compiled apart from its AVX2 copy)
    PADDED.with_borrow_mut(|padded| remap_padded(src, w, h, c, map_x, map_y, fill, padded, dst));
}

thread_local! {
    /// The padded copy of the image the remaps read (one per thread, reused).
    static PADDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `src` (`w`×`h`×`c`) into `padded` with a border of one `fill` pixel all
/// round, and 8 spare bytes after it (for 8-byte reads of the last pixel).
#[inline(always)]
fn pad_with_fill(src: &[u8], w: usize, h: usize, c: usize, fill: &[u8], padded: &mut Vec<u8>) {
    let (pw, ph) = (w + 2, h + 2);
    let prow = pw * c;
    padded.resize(pw * ph * c + 8, 0);
    let fill = &fill[..c];
    // the top and bottom rows, a pixel each side of the others
    for r in [0, ph - 1] {
        for px in padded[r * prow..(r + 1) * prow].chunks_exact_mut(c) {
            px.copy_from_slice(fill);
        }
    }
    for (y, line) in src.chunks_exact(w * c).enumerate() {
        let prow_y = &mut padded[(y + 1) * prow..(y + 2) * prow];
        prow_y[..c].copy_from_slice(fill);
        prow_y[c..c + w * c].copy_from_slice(line);
        prow_y[(w + 1) * c..].copy_from_slice(fill);
    }
}

super::simd::multiversion! {
    avx512;
    /// [`remap_linear`] with a buffer for the image with its border of `fill`.
    #[allow(clippy::too_many_arguments)]
    fn remap_padded(
        src: &[u8],
        w: usize,
        h: usize,
        c: usize,
        map_x: &[f32],
        map_y: &[f32],
        fill: &[u8],
        padded: &mut Vec<u8>,
        dst: &mut [u8],
    ) => remap_rows
}

/// An 8-byte little-endian load split in halves: a pixel and its right
/// neighbour's channels (`2c ≤ 8`) in one read, without a bounds check.
///
/// # Safety
/// `i + 8 ≤ src.len()`.
#[inline(always)]
pub(super) unsafe fn load8_unchecked(src: &[u8], i: usize) -> (u32, u32) {
    // SAFETY: the caller keeps the 8 bytes inside `src`; unaligned reads are allowed
    let q = u64::from_le(unsafe { src.as_ptr().add(i).cast::<u64>().read_unaligned() });
    (q as u32, (q >> 32) as u32)
}

/// Where byte `k` (0..8) of 8-byte words split in 32-bit halves lies: the
/// half that holds it and its shift there (32-bit lanes vectorize).
#[inline(always)]
pub(super) fn word_half<'a, W: ?Sized>(lo: &'a W, hi: &'a W, k: usize) -> (&'a W, usize) {
    if k < 4 {
        (lo, 8 * k)
    } else {
        (hi, 8 * (k - 4))
    }
}

/// Channel planes (`n` values each, one after another in `flat`) written as
/// interleaved pixels of `c ≤ 4` channels into `out` ([`interleave`]).
#[inline(always)]
fn interleave_flat(flat: &[u8], n: usize, c: usize, out: &mut [u8]) {
    let plane = |ch: usize| flat.get(ch * n..(ch + 1) * n).unwrap_or(&[]);
    interleave([plane(0), plane(1), plane(2), plane(3)], c, out);
}

/// Byte `k` (0..8) of the halves `lo`, `hi` of each word, as floats
/// (`f32` for the remaps, `f64` for shift-scale-rotate).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(super) fn bytes_as<T: From<u8> + Copy + Default, const N: usize>(
    lo: &[u32; N],
    hi: &[u32; N],
    k: usize,
) -> [T; N] {
    let (words, shift) = word_half(lo, hi, k);
    let mut out = [T::default(); N];
    for i in 0..N {
        out[i] = T::from((words[i] >> shift) as u8);
    }
    out
}

/// Writes pixels from channel planes (`planes[ch][k]`, the first `c` used)
/// into interleaved `out` (`out.len() / c` pixels): whole pixels at a time
/// for 1, 3 and 4 channels.
#[inline(always)]
pub(super) fn interleave(planes: [&[u8]; 4], c: usize, out: &mut [u8]) {
    match c {
        1 => out.copy_from_slice(&planes[0][..out.len()]),
        3 => {
            let [r, g, b, _] = planes;
            for (((px, r), g), b) in out.as_chunks_mut::<3>().0.iter_mut().zip(r).zip(g).zip(b) {
                *px = [*r, *g, *b];
            }
        }
        4 => {
            let [r, g, b, a] = planes;
            for ((((px, r), g), b), a) in out
                .as_chunks_mut::<4>()
                .0
                .iter_mut()
                .zip(r)
                .zip(g)
                .zip(b)
                .zip(a)
            {
                *px = [*r, *g, *b, *a];
            }
        }
        _ => {
            for (k, px) in out.chunks_exact_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = planes[ch][k];
                }
            }
        }
    }
}

/// `floor(v)` for `v` known finite and within `i32`: one truncation and a
/// compare, which vectorize.
#[inline(always)]
pub(super) fn floor_finite(v: f32) -> i32 {
    // SAFETY: callers clamp `v` to a finite range well inside i32.
    let t: i32 = unsafe { v.to_int_unchecked() };
    t - ((t as f32 > v) as i32)
}

/// [`remap_linear`]'s body. The image gets a border of one `fill` pixel
/// (and 8 spare bytes), so every sample not wholly outside has its four
/// neighbours in the padded image, which gives each the value the border
/// rule reads. Samples go by blocks of 64: index and weights first (maps
/// clamped to `[−2, size + 1]`, which keeps every sample's outcome); each
/// neighbour row's two pixels read as one 8-byte word, every channel blended
/// as whole arrays (which vectorize), and the samples wholly outside set to
/// `fill`. The same float operations per sample as [`remap_border`]. Images
/// of more than 4 channels go sample by sample through [`remap_border`].
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
#[inline(always)]
fn remap_rows(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    map_x: &[f32],
    map_y: &[f32],
    fill: &[u8],
    padded: &mut Vec<u8>,
    dst: &mut [u8],
) {
    const BLOCK: usize = 64;
    const MAGIC: f32 = 8_388_608.0; // 2²³: a convex mix of bytes rounds without a sign test
    assert_eq!(
        Some(src.len()),
        w.checked_mul(h).and_then(|p| p.checked_mul(c)),
        "{w}×{h}×{c} image"
    );
    let n = map_x.len().min(map_y.len());
    let (pw, ph) = (w + 2, h + 2);
    // 8-byte words hold a pixel and its neighbour up to 4 channels; indices in
    // i32 (w, h < 2³⁰ then, so the clamped coordinates fit too)
    let words = c <= 4 && pw * ph * c < (i32::MAX / 2) as usize;
    if !words {
        for i in 0..n {
            remap_border(
                src,
                w,
                h,
                c,
                map_x[i],
                map_y[i],
                fill,
                &mut dst[i * c..(i + 1) * c],
            );
        }
        return;
    }
    let prow = pw * c;
    pad_with_fill(src, w, h, c, fill, padded);
    let padded = &padded[..];
    let (wf, hf) = (w as f32, h as f32);
    let (wi, hi, ci, prowi) = (w as i32, h as i32, c as i32, prow as i32);
    let mut start = 0;
    while start < n {
        let len = (n - start).min(BLOCK);
        let mut mx = [-2f32; BLOCK];
        let mut my = [-2f32; BLOCK];
        mx[..len].copy_from_slice(&map_x[start..start + len]);
        my[..len].copy_from_slice(&map_y[start..start + len]);
        let mut base = [0i32; BLOCK];
        let mut outside = [false; BLOCK];
        let mut ax = [0f32; BLOCK];
        let mut ay = [0f32; BLOCK];
        for k in 0..BLOCK {
            // (NaN clamps to −2: outside; written as selects, which x86's
            // maxps/minps are, so the loop vectorizes)
            let sx = clamp_select(mx[k], -2.0, wf + 1.0);
            let sy = clamp_select(my[k], -2.0, hf + 1.0);
            let (ix, iy) = (floor_finite(sx), floor_finite(sy));
            let out = (ix < -1) | (iy < -1) | (ix >= wi) | (iy >= hi);
            outside[k] = out;
            // in the padded image: x + 1 in [0, w], y + 1 in [0, h]
            base[k] = if out {
                0
            } else {
                ((iy + 1) * prowi) + (ix + 1) * ci
            };
            ax[k] = sx - ix as f32;
            ay[k] = sy - iy as f32;
        }
        let (mut t_lo, mut t_hi) = ([0u32; BLOCK], [0u32; BLOCK]);
        let (mut b_lo, mut b_hi) = ([0u32; BLOCK], [0u32; BLOCK]);
        for k in 0..len {
            // base ≤ (h·pw + w)·c: the lower word ends by (ph·pw)·c + 8 − 2c
            debug_assert!(base[k] as usize + prow + 8 <= padded.len());
            // SAFETY: as above, the padded image has 8 spare bytes
            unsafe {
                (t_lo[k], t_hi[k]) = load8_unchecked(padded, base[k] as usize);
                (b_lo[k], b_hi[k]) = load8_unchecked(padded, base[k] as usize + prow);
            }
        }
        let out = &mut dst[start * c..(start + len) * c];
        let mut planes = [[0u8; BLOCK]; 4];
        for (ch, v) in planes.iter_mut().enumerate().take(c) {
            let [p00, p01, p10, p11]: [[f32; BLOCK]; 4] = [
                bytes_as(&t_lo, &t_hi, ch),
                bytes_as(&t_lo, &t_hi, c + ch),
                bytes_as(&b_lo, &b_hi, ch),
                bytes_as(&b_lo, &b_hi, c + ch),
            ];
            let f = fill[ch];
            for k in 0..BLOCK {
                let v0 = p00[k] + ax[k] * (p01[k] - p00[k]);
                let v1 = p10[k] + ax[k] * (p11[k] - p10[k]);
                let q = super::simd::f32_to_u8(((v0 + ay[k] * (v1 - v0)) + MAGIC) - MAGIC);
                v[k] = if outside[k] { f } else { q };
            }
        }
        let [p0, p1, p2, p3] = &planes;
        interleave([p0, p1, p2, p3], c, out);
        start += len;
    }
}

/// `v` clamped to `[lo, hi]`, NaN to `lo`, as selects (x86's maxps/minps),
/// which vectorize.
#[inline(always)]
pub(super) fn clamp_select(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v > lo { v } else { lo };
    if v < hi {
        v
    } else {
        hi
    }
}

/// One sample of [`remap_linear`] by the rule itself, anywhere: for images
/// of more than 4 channels, and the reference the block forms are tested
/// against.
#[allow(clippy::too_many_arguments)]
fn remap_border(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    sx: f32,
    sy: f32,
    fill: &[u8],
    out: &mut [u8],
) {
    let (wi, hi) = (w as i32, h as i32);
    let (ix, iy) = (floor_i32(sx), floor_i32(sy));
    if ix < -1 || ix >= wi || iy < -1 || iy >= hi || sx.is_nan() || sy.is_nan() {
        out.copy_from_slice(&fill[..c]);
        return;
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

/// [`remap_linear`] for separable maps (`map_x[y][x] = xs[x]`, `map_y[y][x] =
/// ys[y]`, as grid distortion's): each source row's horizontal blend is
/// computed once, not once per output row reading it. The same float
/// operations in the same order, so the same bytes.
#[allow(clippy::too_many_arguments)]
pub fn remap_separable(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    xs: &[f32],
    ys: &[f32],
    fill: &[u8],
    rows: &mut Vec<f32>,
    dst: &mut [u8],
) {
    PADDED
        .with_borrow_mut(|padded| separable_padded(src, w, h, c, xs, ys, fill, rows, padded, dst));
}

super::simd::multiversion! {
    /// [`remap_separable`] with buffers for the row blends and the padded image.
    #[allow(clippy::too_many_arguments)]
    fn separable_padded(
        src: &[u8],
        w: usize,
        h: usize,
        c: usize,
        xs: &[f32],
        ys: &[f32],
        fill: &[u8],
        rows: &mut Vec<f32>,
        padded: &mut Vec<u8>,
        dst: &mut [u8],
    ) => separable_rows
}

/// [`remap_separable`]'s body, on the image with a border of one `fill`
/// pixel ([`pad_with_fill`]): every row of the padded image blended across
/// at every output column into `rows` (one plane per channel, so the
/// vertical blend runs over whole rows), reading a pixel and its right
/// neighbour as one 8-byte word; then each output row blends two of those,
/// and columns or rows wholly outside (as [`remap_linear`] defines it) are
/// `fill`. Images of more than 4 channels go sample by sample through
/// [`remap_border`].
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // parallel arrays by index: the shape that vectorizes
#[inline(always)]
fn separable_rows(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    xs: &[f32],
    ys: &[f32],
    fill: &[u8],
    rows: &mut Vec<f32>,
    padded: &mut Vec<u8>,
    dst: &mut [u8],
) {
    const MAGIC: f32 = 8_388_608.0;
    assert_eq!(
        Some(src.len()),
        w.checked_mul(h).and_then(|p| p.checked_mul(c)),
        "{w}×{h}×{c} image"
    );
    assert!(xs.len() >= w && ys.len() >= h, "{w}×{h} maps");
    let row = w * c;
    if c > 4 {
        for (y, &sy) in ys[..h].iter().enumerate() {
            for (x, &sx) in xs[..w].iter().enumerate() {
                let i = (y * w + x) * c;
                remap_border(src, w, h, c, sx, sy, fill, &mut dst[i..i + c]);
            }
        }
        return;
    }
    let (pw, ph) = (w + 2, h + 2);
    let prow = pw * c;
    pad_with_fill(src, w, h, c, fill, padded);
    let (wi, hi) = (w as i32, h as i32);
    // a column's padded index (ix + 1) and weight, or None wholly outside
    let place = |v: f32, n: i32| -> Option<(usize, f32)> {
        let i = floor_i32(v);
        if v.is_nan() || i < -1 || i >= n {
            None
        } else {
            Some(((i + 1) as usize, v - i as f32))
        }
    };
    let cols: Vec<Option<(usize, f32)>> = xs[..w].iter().map(|&sx| place(sx, wi)).collect();
    let mut base = vec![0usize; w];
    let mut ax = vec![0f32; w];
    for (x, col) in cols.iter().enumerate() {
        if let Some((i, a)) = *col {
            (base[x], ax[x]) = (i * c, a);
        }
    }
    // rows[(r·c + ch)·w + x]: v0 of padded row r at output column x
    // (every value is written below: no clearing)
    rows.resize(ph * c * w, 0.0);
    let (mut lo, mut hi_) = (vec![0u32; w], vec![0u32; w]);
    // (base ≤ w·c: a row's 8-byte reads end inside the next row or the spare bytes)
    assert!(base.iter().all(|b| *b <= w * c) && padded.len() == ph * prow + 8);
    let outside: Vec<usize> = (0..w).filter(|x| cols[*x].is_none()).collect();
    for r in 0..ph {
        for x in 0..w {
            // SAFETY: r·prow + base + 8 ≤ (ph − 1)·prow + w·c + 8 ≤ padded.len() (asserted above)
            (lo[x], hi_[x]) = unsafe { load8_unchecked(padded, r * prow + base[x]) };
        }
        let planes = &mut rows[r * c * w..(r + 1) * c * w];
        for ch in 0..c {
            let plane = &mut planes[ch * w..(ch + 1) * w];
            let ((wa, sa), (wb, sb)) = (word_half(&lo, &hi_, ch), word_half(&lo, &hi_, c + ch));
            for (((o, a), b), t) in plane.iter_mut().zip(&wa[..w]).zip(&wb[..w]).zip(&ax[..w]) {
                let p0 = ((a >> sa) & 0xff) as f32;
                let p1 = ((b >> sb) & 0xff) as f32;
                *o = p0 + t * (p1 - p0);
            }
        }
    }
    let mut v = vec![0u8; w * c];
    for (y, &sy) in ys[..h].iter().enumerate() {
        let out = &mut dst[y * row..(y + 1) * row];
        let Some((r, ay)) = place(sy, hi) else {
            for px in out.chunks_exact_mut(c) {
                px.copy_from_slice(&fill[..c]);
            }
            continue;
        };
        for (ch, v) in v.chunks_exact_mut(w).enumerate() {
            let top = &rows[(r * c + ch) * w..(r * c + ch + 1) * w];
            let bot = &rows[((r + 1) * c + ch) * w..((r + 1) * c + ch + 1) * w];
            for x in 0..w {
                let (v0, v1) = (top[x], bot[x]);
                v[x] = super::simd::f32_to_u8(((v0 + ay * (v1 - v0)) + MAGIC) - MAGIC);
            }
        }
        interleave_flat(&v, w, c, out);
        for &x in &outside {
            out[x * c..(x + 1) * c].copy_from_slice(&fill[..c]);
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

    /// The blur as a dense `n × n` matrix (row `i`: output `i`'s weights).
    fn dense(&self) -> Vec<f64> {
        let n = self.n;
        let mut m = vec![0f64; n * n];
        for (i, (lo, band)) in self.start.iter().zip(&self.weights).enumerate() {
            for (k, w) in band.iter().enumerate() {
                m[i * n + lo + k] = *w as f64;
            }
        }
        m
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

/// A blur matrix `B` (`n × n`) as `Q · P` with `Q` (`n × k`) orthonormal and
/// `P = Qᵀ B` (`k × n`): a Gaussian much wider than the image (the default σ =
/// 50 on 64 pixels) is nearly of low rank, and applying it this way costs
/// `2nk` per line instead of `n²`. Columns of `B` are taken greedily (pivoted
/// Gram–Schmidt) until none is left above `1e-7` of the largest: the result
/// is `B` to within float rounding.
#[derive(Debug, Clone)]
struct LowRank {
    k: usize,
    /// `n × k`, row-major.
    q: Vec<f32>,
    /// `k × n`, row-major.
    p: Vec<f32>,
}

impl LowRank {
    /// `None` when the rank is too high for this to pay (more than `n / 4`).
    fn of(plan: &BlurPlan) -> Option<LowRank> {
        let n = plan.n;
        let b = plan.dense();
        let mut r = b.clone(); // residual, n × n (columns are B's columns)
        let col_norm =
            |r: &[f64], j: usize| (0..n).map(|i| r[i * n + j].powi(2)).sum::<f64>().sqrt();
        let first = (0..n).map(|j| col_norm(&r, j)).fold(0.0, f64::max);
        let mut qs: Vec<Vec<f64>> = Vec::new();
        loop {
            let (j, norm) =
                (0..n)
                    .map(|j| (j, col_norm(&r, j)))
                    .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
            if norm <= 1e-7 * first {
                break;
            }
            if qs.len() + 1 > n / 4 {
                return None;
            }
            let q: Vec<f64> = (0..n).map(|i| r[i * n + j] / norm).collect();
            // r -= q (qᵀ r)
            for col in 0..n {
                let dot: f64 = (0..n).map(|i| q[i] * r[i * n + col]).sum();
                for i in 0..n {
                    r[i * n + col] -= q[i] * dot;
                }
            }
            qs.push(q);
        }
        let k = qs.len();
        let mut q = vec![0f32; n * k];
        let mut p = vec![0f32; k * n];
        for (c, qc) in qs.iter().enumerate() {
            for i in 0..n {
                q[i * k + c] = qc[i] as f32;
            }
            // P = Qᵀ B: row c is qcᵀ B
            for j in 0..n {
                p[c * n + j] = (0..n).map(|i| qc[i] * b[i * n + j]).sum::<f64>() as f32;
            }
        }
        Some(LowRank { k, q, p })
    }
}

/// Blurs a `rows × w` field along both axes (`across`: within each row, `down`:
/// within each column) into `out`, through their low-rank forms when both
/// have one, else band by band.
#[allow(clippy::too_many_arguments)]
fn blur2d(
    field: &[f32],
    rows: usize,
    w: usize,
    across: &BlurPlan,
    down: &BlurPlan,
    lr: Option<(&LowRank, &LowRank)>,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    match lr {
        Some((a, d)) => {
            // F' = D F Aᵀ = Qd (Pd (F Paᵀ)) Qaᵀ
            let (ka, kd) = (a.k, d.k);
            tmp.clear();
            tmp.resize(rows * ka + kd * ka + kd * w, 0.0);
            let (fa, rest) = tmp.split_at_mut(rows * ka);
            let (m, g) = rest.split_at_mut(kd * ka);
            // fa = F · Paᵀ  (rows × ka)
            for (r, frow) in field.chunks_exact(w).enumerate() {
                for c in 0..ka {
                    let prow = &a.p[c * w..(c + 1) * w];
                    fa[r * ka + c] = frow.iter().zip(prow).map(|(x, y)| x * y).sum();
                }
            }
            // m = Pd · fa  (kd × ka)
            for c in 0..kd {
                let prow = &d.p[c * rows..(c + 1) * rows];
                for (r, pv) in prow.iter().enumerate() {
                    for t in 0..ka {
                        m[c * ka + t] += pv * fa[r * ka + t];
                    }
                }
            }
            // g = m · Qaᵀ  (kd × w)
            for c in 0..kd {
                for x in 0..w {
                    g[c * w + x] = (0..ka).map(|t| m[c * ka + t] * a.q[x * ka + t]).sum();
                }
            }
            // out = Qd · g  (rows × w)
            for (r, orow) in out.chunks_exact_mut(w).enumerate() {
                orow.fill(0.0);
                for c in 0..kd {
                    let qv = d.q[r * kd + c];
                    for (o, gv) in orow.iter_mut().zip(&g[c * w..(c + 1) * w]) {
                        *o += qv * gv;
                    }
                }
            }
        }
        None => {
            tmp.clear();
            tmp.resize(rows * w, 0.0);
            across.rows(field, w, tmp);
            down.columns(tmp, w, out);
        }
    }
}

/// A square root of the blur's noise covariance in the low-rank basis:
/// `R = Q L` (`n × k`, row-major) with `L Lᵀ = P Pᵀ`. The blur of `n`
/// independent standard normals per line, `B z ≈ Q P z`, has covariance
/// `Q P Pᵀ Qᵀ = R Rᵀ`; in two dimensions `D N Aᵀ` has the distribution of
/// `R_d Z R_aᵀ` with `Z` only `k_d × k_a` standard normals.
fn noise_root(low: &LowRank, n: usize) -> Vec<f32> {
    let k = low.k;
    // C = P Pᵀ (k × k), then C = V Λ Vᵀ by Jacobi rotations
    let mut c = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            c[i * k + j] = (0..n)
                .map(|t| low.p[i * n + t] as f64 * low.p[j * n + t] as f64)
                .sum();
        }
    }
    let (vals, vecs) = symmetric_eigen(&c, k);
    let mut r = vec![0f32; n * k];
    for i in 0..n {
        for j in 0..k {
            // (Q V Λ^½)[i][j]
            let s = vals[j].max(0.0).sqrt();
            let qv: f64 = (0..k)
                .map(|t| low.q[i * k + t] as f64 * vecs[t * k + j])
                .sum();
            r[i * k + j] = (qv * s) as f32;
        }
    }
    r
}

/// Eigenvalues and eigenvectors (columns of the `k × k` row-major matrix) of
/// a small symmetric matrix, by cyclic Jacobi rotations.
fn symmetric_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j].powi(2))
            .sum();
        let diag: f64 = (0..k).map(|i| a[i * k + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * cs;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = cs * arp - sn * arq;
                    a[r * k + q] = sn * arp + cs * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = cs * apr - sn * aqr;
                    a[q * k + r] = sn * apr + cs * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = cs * vrp - sn * vrq;
                    v[r * k + q] = sn * vrp + cs * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}

/// The largest `|z|` of `n` independent standard normals, drawn from its own
/// distribution, `P(max ≤ m) = erf(m/√2)ⁿ`, by inverting that at one uniform
/// draw (bisection on `erfc`: `P(|z| > m) = 1 − u^{1/n}`).
pub fn max_abs_normal(rng: &mut Rng, n: usize) -> f64 {
    let u = rng.next_f64().max(f64::MIN_POSITIVE);
    // the tail probability of one |z| at the drawn maximum
    let q = -(u.ln() / n.max(1) as f64).exp_m1();
    // 40 halvings of [0, 40]: within 4·10⁻¹¹ (a maximum is 2 to 6)
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if libm::erfc(mid * std::f64::consts::FRAC_1_SQRT_2) > q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// One axis's blur: banded, and low-rank when that pays (with the square
/// root of its noise covariance, [`noise_root`]).
#[derive(Debug)]
struct AxisBlur {
    plan: BlurPlan,
    low: Option<LowRank>,
    root: Option<Vec<f32>>,
}

/// The blur of `n` samples at `sigma`, built once per process (a low-rank
/// form costs milliseconds to find; every image of every batch reuses it).
fn axis_blur(n: usize, sigma: f64) -> std::sync::Arc<AxisBlur> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Blurs = HashMap<(usize, u64), Arc<AxisBlur>>;
    static CACHE: OnceLock<Mutex<Blurs>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (n, sigma.to_bits());
    if let Some(b) = cache.lock().expect("blur cache").get(&key) {
        return Arc::clone(b);
    }
    let plan = BlurPlan::new(n, sigma);
    let low = LowRank::of(&plan);
    let root = low.as_ref().map(|l| noise_root(l, n));
    let b = Arc::new(AxisBlur { plan, low, root });
    cache
        .lock()
        .expect("blur cache")
        .insert(key, Arc::clone(&b));
    b
}

/// Buffers and blur plans of the elastic transform.
#[derive(Debug, Default)]
pub struct ElasticScratch {
    /// dx then dy, stacked: `2h` rows of `w`.
    field: Vec<f32>,
    noise: Vec<f32>,
    tmp: Vec<f32>,
    /// The blurs within rows and down columns, for the last size and σ.
    blurs: Option<(std::sync::Arc<AxisBlur>, std::sync::Arc<AxisBlur>)>,
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
///
/// When the blur is of low rank `k` along both axes (σ wide against the
/// image, as the default σ = 50 on 64 pixels), the blurred noise is drawn in
/// that basis: `R_d Z R_aᵀ` with `k_d × k_a` normals `Z` (about 50 instead of
/// `2hw` = 8,192), which has exactly the distribution of the blurred full
/// noise ([`noise_root`]); the normalizing maximum `max |noise|` is drawn
/// from its own distribution ([`max_abs_normal`]), independently of the
/// field. In Albumentations both come from one noise array; they are
/// uncorrelated there too (`noise → −noise` keeps the maximum and flips the
/// field), and what dependence remains, a field of large energy coming with
/// a slightly larger maximum, is below what the distribution tests resolve.
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
    let fits = |b: &AxisBlur, n: usize| b.plan.fits(n, sigma);
    if !matches!(&s.blurs, Some((a, d)) if fits(a, w) && fits(d, 2 * h)) {
        s.blurs = Some((axis_blur(w, sigma), axis_blur(2 * h, sigma)));
    }
    let (across, down) = s.blurs.as_ref().expect("set above");
    // the noise divided by its largest |value|, then blurred, times α: one scale
    let scale = |max_abs: f32| {
        if max_abs > 1e-6 {
            alpha as f32 / max_abs
        } else {
            alpha as f32
        }
    };
    match (&across.root, &down.root, &across.low, &down.low) {
        (Some(ra), Some(rd), Some(la), Some(ld)) => {
            let (ka, kd) = (la.k, ld.k);
            s.noise.resize(kd * ka, 0.0);
            rng.fill_normal_f32(&mut s.noise);
            let k = scale(max_abs_normal(rng, n) as f32);
            // G = k · Z R_aᵀ (k_d × w), then field = R_d G (2h × w)
            s.tmp.clear();
            s.tmp.resize(kd * w, 0.0);
            for c in 0..kd {
                let z = &s.noise[c * ka..(c + 1) * ka];
                for (x, g) in s.tmp[c * w..(c + 1) * w].iter_mut().enumerate() {
                    let dot: f32 = z
                        .iter()
                        .zip(&ra[x * ka..(x + 1) * ka])
                        .map(|(a, b)| a * b)
                        .sum();
                    *g = k * dot;
                }
            }
            low_rank_rows(rd, kd, &s.tmp, w, &mut s.field);
        }
        _ => {
            s.noise.resize(n, 0.0);
            rng.fill_normal_f32(&mut s.noise);
            let max_abs = s.noise.iter().fold(0f32, |m, v| m.max(v.abs()));
            let lr = across.low.as_ref().zip(down.low.as_ref());
            blur2d(
                &s.noise,
                2 * h,
                w,
                &across.plan,
                &down.plan,
                lr,
                &mut s.tmp,
                &mut s.field,
            );
            let k = scale(max_abs);
            for v in s.field.iter_mut() {
                *v *= k;
            }
        }
    }
}

super::simd::multiversion! {
    avx512;
    /// `field = R · G`: row `r` is `Σ_c R[r][c] · G[c]` (`R` is `rows × k`, `G` is `k × w`).
    fn low_rank_rows(r: &[f32], k: usize, g: &[f32], w: usize, field: &mut [f32]) => low_rank_rows_body
}

#[inline(always)]
fn low_rank_rows_body(r: &[f32], k: usize, g: &[f32], w: usize, field: &mut [f32]) {
    // 16 columns at a time summed over c in registers (the same sums in the
    // same order, from 0, as a row accumulated in memory term by term)
    const L: usize = 16;
    for (i, row) in field.chunks_exact_mut(w).enumerate() {
        let coef = &r[i * k..(i + 1) * k];
        let (chunks, rest) = row.as_chunks_mut::<L>();
        for (j, out) in chunks.iter_mut().enumerate() {
            let mut acc = [0f32; L];
            for (c, v) in coef.iter().enumerate() {
                let gs: &[f32; L] = g[c * w + j * L..][..L].try_into().expect("16 values");
                for l in 0..L {
                    acc[l] += v * gs[l];
                }
            }
            *out = acc;
        }
        let done = chunks.len() * L;
        for (x, o) in rest.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (c, v) in coef.iter().enumerate() {
                acc += v * g[c * w + done + x];
            }
            *o = acc;
        }
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
    let n = dx.len().min(dy.len()) / w * w;
    map_x.resize(n, 0.0);
    map_y.resize(n, 0.0);
    let rows = map_x.chunks_exact_mut(w).zip(map_y.chunks_exact_mut(w));
    for (y, ((mx, my), (rx, ry))) in rows
        .zip(dx.chunks_exact(w).zip(dy.chunks_exact(w)))
        .enumerate()
    {
        for (x, (m, d)) in mx.iter_mut().zip(rx).enumerate() {
            *m = x as f32 + d;
        }
        for (m, d) in my.iter_mut().zip(ry) {
            *m = y as f32 + d;
        }
    }
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
    // (a ratio range far from the image's can round a side to 0: keep a pixel)
    let (cw, ch) = (cw.clamp(1, w), ch.clamp(1, h));
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

super::simd::multiversion! {
    avx512;
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
    ) => resize_body
}

/// [`resize_linear`]'s body.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn resize_body(
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
    // every column's two source pixels lie in the line (read unchecked below)
    assert!(cols.iter().all(|&(a, b, _, _)| a < sw && b < sw));
    // Up to 4 channels, a column's two pixels are read as one 8-byte word (a
    // pixel and its right neighbour: b is a + 1, or b = a at the right edge
    // with weight 0, where the neighbour read in its place adds 0) and the
    // rows are held as channel planes, blended as arrays.
    let words = c <= 4;
    let mut r0 = vec![0i32; dw * c];
    let mut r1 = vec![0i32; dw * c];
    let offs: Vec<usize> = cols.iter().map(|col| col.0 * c).collect();
    let wa: Vec<i32> = cols.iter().map(|col| col.2).collect();
    let wb: Vec<i32> = cols.iter().map(|col| col.3).collect();
    let (mut lo, mut hi) = (vec![0u32; dw], vec![0u32; dw]);
    // (functions, not closures: a closure is compiled on its own, outside
    // the SIMD copy this body is inlined into)
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn horizontal_words(
        src: &[u8],
        start: usize,
        c: usize,
        offs: &[usize],
        (wa, wb): (&[i32], &[i32]),
        (lo, hi): (&mut [u32], &mut [u32]),
        out: &mut [i32],
    ) {
        let dw = offs.len();
        for x in 0..dw {
            let i = start + offs[x];
            (lo[x], hi[x]) = if i + 8 <= src.len() {
                // SAFETY: i + 8 ≤ src.len(), just checked
                unsafe { load8_unchecked(src, i) }
            } else {
                // the image's last bytes: the word's missing end reads 0
                let mut w8 = [0u8; 8];
                w8[..src.len() - i].copy_from_slice(&src[i..]);
                // SAFETY: 8 bytes
                unsafe { load8_unchecked(&w8, 0) }
            };
        }
        for ch in 0..c {
            let plane = &mut out[ch * dw..(ch + 1) * dw];
            let ((w0, sh0), (w1, sh1)) = (word_half(&*lo, &*hi, ch), word_half(&*lo, &*hi, c + ch));
            let it = plane.iter_mut().zip(&w0[..dw]).zip(&w1[..dw]);
            for (((o, p), q), (a, b)) in it.zip(wa.iter().zip(wb)) {
                *o = ((p >> sh0) & 0xff) as i32 * a + ((q >> sh1) & 0xff) as i32 * b;
            }
        }
    }
    #[inline(always)]
    fn horizontal(
        src: &[u8],
        sw: usize,
        c: usize,
        cols: &[(usize, usize, i32, i32)],
        row: usize,
        out: &mut [i32],
    ) {
        let line = &src[row * sw * c..(row + 1) * sw * c];
        for (x, (a, b, wa, wb)) in cols.iter().enumerate() {
            for ch in 0..c {
                out[x * c + ch] = line[a * c + ch] as i32 * wa + line[b * c + ch] as i32 * wb;
            }
        }
    }
    let mut planes = vec![0u8; if words { dw * c } else { 0 }];
    // the source rows held in r0, r1 (an upscale reuses them across outputs)
    let mut held = (usize::MAX, usize::MAX);
    for y in 0..dh {
        let mut f = ((y as f64 + 0.5) * sy_scale - 0.5) as f32;
        let sy = floor_i32(f);
        f -= sy as f32;
        let (b0, b1) = (weight(1.0 - f), weight(f));
        let row0 = sy.clamp(0, sh as i32 - 1) as usize;
        let row1 = (sy + 1).clamp(0, sh as i32 - 1) as usize;
        // (a loop over the two rows, so the word pass is inlined once: written
        // out for each row it measured 1.2× slower)
        for (r, row) in [(0, row0), (1, row1)] {
            let held_r = if r == 0 { held.0 } else { held.1 };
            if held_r == row {
                continue;
            }
            if r == 0 && held.1 == row0 {
                std::mem::swap(&mut r0, &mut r1);
                (held.0, held.1) = (row0, usize::MAX);
                continue;
            }
            let out = if r == 0 { &mut r0 } else { &mut r1 };
            if words {
                let start = row * sw * c;
                horizontal_words(src, start, c, &offs, (&wa, &wb), (&mut lo, &mut hi), out);
            } else {
                horizontal(src, sw, c, &cols, row, out);
            }
            if r == 0 {
                held.0 = row;
            } else {
                held.1 = row;
            }
        }
        let out_row = &mut dst[y * dw * c..(y + 1) * dw * c];
        let target: &mut [u8] = if words { &mut planes } else { out_row };
        for ((o, p), q) in target.iter_mut().zip(&r0).zip(&r1) {
            let v = (((b0 * (p >> 4)) >> 16) + ((b1 * (q >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
        if words {
            interleave_flat(&planes, dw, c, &mut dst[y * dw * c..(y + 1) * dw * c]);
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

    /// Random maps with samples inside, across the border and far outside, on
    /// 1, 2, 3, 4 and 5 channels: the block form gives, sample by sample, what
    /// the one-sample border rule gives (which is OpenCV's formula without
    /// the shortcuts), on the baseline copy and on the dispatched one.
    #[test]
    fn block_remap_equals_the_sample_by_sample_rule() {
        let mut rng = Rng::new(31);
        for (w, h, c) in [
            (13usize, 9usize, 3usize),
            (64, 64, 3),
            (7, 5, 1),
            (6, 6, 2),
            (9, 4, 4),
            (5, 5, 5),
        ] {
            let src: Vec<u8> = (0..w * h * c).map(|_| rng.below(256) as u8).collect();
            let fill: Vec<u8> = (0..c).map(|i| 200 + i as u8).collect();
            let n = w * h;
            let mut mx: Vec<f32> = (0..n)
                .map(|i| (i % w) as f32 + rng.uniform(-3.0, 3.0) as f32)
                .collect();
            let mut my: Vec<f32> = (0..n)
                .map(|i| (i / w) as f32 + rng.uniform(-3.0, 3.0) as f32)
                .collect();
            // NaN positions are outside (OpenCV's floor of NaN is INT_MIN); and far away
            (mx[1], my[n - 2], mx[n / 2], my[n / 3]) = (f32::NAN, f32::NAN, 1e30, -1e30);
            let mut want = vec![0u8; n * c];
            for i in 0..n {
                remap_border(
                    &src,
                    w,
                    h,
                    c,
                    mx[i],
                    my[i],
                    &fill,
                    &mut want[i * c..(i + 1) * c],
                );
            }
            let mut got = vec![0u8; n * c];
            remap_rows(&src, w, h, c, &mx, &my, &fill, &mut Vec::new(), &mut got);
            assert_eq!(got, want, "{w}×{h}×{c}");
            let mut got = vec![0u8; n * c];
            remap_linear(&src, w, h, c, &mx, &my, &fill, &mut got);
            // (on a CPU with AVX2, its copy)
            assert_eq!(got, want, "{w}×{h}×{c} (dispatched)");
        }
    }

    /// The separable path gives the general path's bytes, borders included.
    #[test]
    fn separable_remap_equals_the_general_one() {
        let mut rng = Rng::new(4);
        for (w, h, c, draws) in [
            (13usize, 9usize, 3usize, 20),
            (64, 64, 3, 5),
            (11, 7, 1, 10),
            (5, 6, 2, 10),
            (7, 5, 4, 10),
            (6, 6, 5, 10),
        ] {
            let src: Vec<u8> = (0..w * h * c).map(|i| ((i * 97) % 251) as u8).collect();
            for draw in 0..draws {
                let mut xs: Vec<f32> = (0..w)
                    .map(|x| x as f32 + rng.uniform(-2.5, 2.5) as f32)
                    .collect();
                let mut ys: Vec<f32> = (0..h)
                    .map(|y| y as f32 + rng.uniform(-2.5, 2.5) as f32)
                    .collect();
                if draw == 0 {
                    // NaN and far positions: outside
                    (xs[1], ys[h - 1], xs[w - 2], ys[0]) = (f32::NAN, f32::NAN, -1e30, 1e30);
                }
                let mx: Vec<f32> = (0..h).flat_map(|_| xs.iter().copied()).collect();
                let my: Vec<f32> = ys.iter().flat_map(|y| std::iter::repeat_n(*y, w)).collect();
                let (mut a, mut b) = (vec![0u8; src.len()], vec![0u8; src.len()]);
                let fill = [7, 8, 9, 10, 11];
                remap_linear(&src, w, h, c, &mx, &my, &fill, &mut a);
                remap_separable(&src, w, h, c, &xs, &ys, &fill, &mut Vec::new(), &mut b);
                assert_eq!(a, b, "{w}×{h}×{c}");
                // the baseline copy (the line above took the AVX2 one where the CPU has it)
                b.fill(0x5a);
                let (mut rows, mut padded) = (Vec::new(), Vec::new());
                separable_rows(
                    &src,
                    w,
                    h,
                    c,
                    &xs,
                    &ys,
                    &fill,
                    &mut rows,
                    &mut padded,
                    &mut b,
                );
                assert_eq!(a, b, "{w}×{h}×{c} (baseline)");
            }
        }
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

    /// The low-rank form of a wide blur gives the band-by-band result to
    /// float rounding; a narrow blur has no low-rank form.
    #[test]
    fn low_rank_blur_equals_the_banded_blur() {
        let (w, rows) = (64, 128);
        let mut rng = Rng::new(9);
        let field: Vec<f32> = (0..rows * w).map(|_| rng.normal_f32()).collect();
        let (across, down) = (BlurPlan::new(w, 50.0), BlurPlan::new(rows, 50.0));
        let (a, d) = (LowRank::of(&across).unwrap(), LowRank::of(&down).unwrap());
        assert!(a.k < 12 && d.k < 12, "ranks {} and {}", a.k, d.k);
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        let mut banded = vec![0f32; rows * w];
        let mut low = vec![0f32; rows * w];
        blur2d(&field, rows, w, &across, &down, None, &mut t1, &mut banded);
        blur2d(
            &field,
            rows,
            w,
            &across,
            &down,
            Some((&a, &d)),
            &mut t2,
            &mut low,
        );
        let scale = banded.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = banded
            .iter()
            .zip(&low)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4 * scale, "worst {worst} of {scale}");
        assert!(LowRank::of(&BlurPlan::new(64, 2.0)).is_none());
    }

    /// The reduced-basis draw of the elastic field has the covariance of the
    /// blurred full noise: `R Rᵀ = B Bᵀ` per axis (so `R_d Z R_aᵀ` and
    /// `D N Aᵀ` have one Gaussian distribution).
    #[test]
    fn noise_root_has_the_blurred_noise_covariance() {
        for (n, sigma) in [(64usize, 50.0), (128, 50.0), (96, 40.0)] {
            let plan = BlurPlan::new(n, sigma);
            let low = LowRank::of(&plan).expect("a wide blur is of low rank");
            let r = noise_root(&low, n);
            let b = plan.dense();
            let k = low.k;
            let mut worst = 0f64;
            let mut scale = 0f64;
            for i in 0..n {
                for j in 0..n {
                    let bb: f64 = (0..n).map(|t| b[i * n + t] * b[j * n + t]).sum();
                    let rr: f64 = (0..k)
                        .map(|t| r[i * k + t] as f64 * r[j * k + t] as f64)
                        .sum();
                    worst = worst.max((bb - rr).abs());
                    scale = scale.max(bb.abs());
                }
            }
            assert!(worst < 1e-5 * scale, "n {n} σ {sigma}: {worst} of {scale}");
        }
    }

    /// The drawn maximum of n |normals| against its exact distribution
    /// (Kolmogorov–Smirnov, 2,000 draws, critical value at α = 0.001), and
    /// against the maximum of n real draws.
    #[test]
    fn max_abs_normal_follows_its_distribution() {
        let mut rng = Rng::new(21);
        for n in [8192usize, 50, 1] {
            let mut draws: Vec<f64> = (0..2000).map(|_| max_abs_normal(&mut rng, n)).collect();
            draws.sort_by(f64::total_cmp);
            let cdf = |m: f64| libm::erf(m * std::f64::consts::FRAC_1_SQRT_2).powi(n as i32);
            let d = draws
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let f = cdf(*m);
                    (f - i as f64 / 2000.0)
                        .abs()
                        .max(((i + 1) as f64 / 2000.0 - f).abs())
                })
                .fold(0.0, f64::max);
            assert!(d < 1.95 / 2000f64.sqrt(), "n {n}: KS distance {d}");
            let mut real = Vec::new();
            let mut z = vec![0f32; n];
            for _ in 0..400 {
                rng.fill_normal_f32(&mut z);
                real.push(z.iter().fold(0f32, |m, v| m.max(v.abs())) as f64);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let var = |v: &[f64]| {
                let m = mean(v);
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
            };
            let (a, b) = (mean(&draws), mean(&real));
            let se = (var(&draws) / draws.len() as f64 + var(&real) / real.len() as f64).sqrt();
            assert!(
                (a - b).abs() < 4.0 * se,
                "n {n}: mean {a} vs real {b} (se {se})"
            );
        }
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
        // ratios no crop of this image can have: one pixel at least, never empty
        for ratio in [[80.0, 100.0], [0.01, 0.01]] {
            let (x0, y0, x1, y1) = random_resized_crop_box(&mut rng, 32, 32, [0.08, 1.0], ratio);
            assert!(x1 > x0 && y1 > y0 && x1 <= 32 && y1 <= 32, "{ratio:?}");
            let src = vec![9u8; 32 * 32];
            let (mut cropped, mut out) = (Vec::new(), Vec::new());
            crop(&src, 32, 1, (x0, y0, x1, y1), &mut cropped);
            resize_linear(&cropped, x1 - x0, y1 - y0, 1, 32, 32, &mut out);
            assert_eq!(out, vec![9u8; 32 * 32]);
        }
    }

    /// The word-and-plane form of the resize equals OpenCV's fixed-point
    /// formula written pixel by pixel (which the Albumentations fixtures
    /// check), up and down, on 1 to 5 channels, on the dispatched copy and
    /// the baseline copy.
    #[test]
    fn resize_equals_the_pixel_by_pixel_formula() {
        fn reference(src: &[u8], sw: usize, sh: usize, c: usize, dw: usize, dh: usize) -> Vec<u8> {
            let weight = |f: f32| round_even_f32(f * 2048.0) as i32;
            let place = |i: usize, s: usize, d: usize| {
                let mut f = ((i as f64 + 0.5) * (s as f64 / d as f64) - 0.5) as f32;
                let a = f.floor() as i32;
                f -= a as f32;
                (a, f)
            };
            let mut out = vec![0u8; dw * dh * c];
            for y in 0..dh {
                let (sy, fy) = place(y, sh, dh);
                let (r0, r1) = (
                    sy.clamp(0, sh as i32 - 1) as usize,
                    (sy + 1).clamp(0, sh as i32 - 1) as usize,
                );
                let (b0, b1) = (weight(1.0 - fy), weight(fy));
                for x in 0..dw {
                    let (mut sx, mut fx) = place(x, sw, dw);
                    if sx < 0 {
                        (sx, fx) = (0, 0.0);
                    }
                    if sx >= sw as i32 - 1 {
                        (sx, fx) = (sw as i32 - 1, 0.0);
                    }
                    let (a, b) = (sx as usize, (sx as usize + 1).min(sw - 1));
                    let (wa, wb) = (weight(1.0 - fx), weight(fx));
                    for ch in 0..c {
                        let hz = |r: usize| {
                            src[(r * sw + a) * c + ch] as i32 * wa
                                + src[(r * sw + b) * c + ch] as i32 * wb
                        };
                        let v =
                            (((b0 * (hz(r0) >> 4)) >> 16) + ((b1 * (hz(r1) >> 4)) >> 16) + 2) >> 2;
                        out[(y * dw + x) * c + ch] = v.clamp(0, 255) as u8;
                    }
                }
            }
            out
        }
        let mut rng = Rng::new(12);
        for c in 1..=5 {
            for (sw, sh, dw, dh) in [
                (17, 9, 64, 64),
                (64, 64, 23, 41),
                (5, 7, 6, 5),
                (1, 3, 4, 4),
                (40, 33, 64, 64),
            ] {
                let src: Vec<u8> = (0..sw * sh * c).map(|_| rng.below(256) as u8).collect();
                let want = reference(&src, sw, sh, c, dw, dh);
                let mut got = Vec::new();
                resize_linear(&src, sw, sh, c, dw, dh, &mut got);
                assert_eq!(got, want, "{sw}×{sh}×{c} to {dw}×{dh}");
                let mut base = vec![0x5a; 3];
                resize_body(&src, sw, sh, c, dw, dh, &mut base);
                assert_eq!(base, want, "{sw}×{sh}×{c} to {dw}×{dh} (baseline)");
            }
        }
    }

    #[test]
    fn resizing_to_the_same_size_copies() {
        let src: Vec<u8> = (0..48).map(|i| i as u8 * 5).collect();
        let mut out = Vec::new();
        resize_linear(&src, 4, 4, 3, 4, 4, &mut out);
        assert_eq!(out, src);
    }
}
