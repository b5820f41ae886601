//! Slice kernels of the CPU training engine (`engine.rs`): matrix products through
//! the `gemm` crate (the one candle uses), 3×3 convolution as im2col + matrix
//! product, 2×2 max-pooling with stored argmax indices, batch-norm, activations
//! and softmax cross-entropy, each with its backward pass. Everything works on
//! plain `f32` slices in row-major order and writes into buffers the caller owns,
//! so a training step allocates nothing.
//!
//! Semantics follow PyTorch where candle differs: `relu'(0) = 0`
//! (`threshold_backward`), and a max-pool gradient goes to the first maximum of
//! its window (candle splits it between tied maxima).

use gemm::{gemm, Parallelism};

use crate::config::Activation;

/// A strided read-only matrix operand: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a contiguous row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Parallelism for `threads` compute threads.
pub fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `dst (m × n, contiguous row-major) = [dst +] a (m × k) · b (k × n)`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(a.covers(m, k), "matmul: left operand too small");
    assert!(b.covers(k, n), "matmul: right operand too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index the product touches inside the
    // three slices; `dst` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Adds `bias[j]` to every row of the `rows × bias.len()` matrix `x`.
pub fn add_row_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Column sums of a `rows × cols` matrix: the gradient of a row bias.
pub fn column_sums(g: &[f32], cols: usize, out: &mut [f32]) {
    out[..cols].fill(0.0);
    for row in g.chunks_exact(cols) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// im2col of one image `[c, h, w]` for a 3×3 kernel, padding 1, stride 1:
/// `cols[(ci·9 + ky·3 + kx), y·w + x] = img[ci, y+ky−1, x+kx−1]` (0 outside).
pub fn im2col3(img: &[f32], c: usize, h: usize, w: usize, cols: &mut [f32]) {
    let hw = h * w;
    for ci in 0..c {
        let plane = &img[ci * hw..(ci + 1) * hw];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &mut cols[(ci * 9 + ky * 3 + kx) * hw..(ci * 9 + ky * 3 + kx + 1) * hw];
                for y in 0..h {
                    let out = &mut row[y * w..(y + 1) * w];
                    let sy = y as isize + ky as isize - 1;
                    if sy < 0 || sy >= h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[sy as usize * w..(sy as usize + 1) * w];
                    match kx {
                        0 => {
                            out[0] = 0.0;
                            out[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => out.copy_from_slice(src),
                        _ => {
                            out[..w - 1].copy_from_slice(&src[1..]);
                            out[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col3`]: adds the column gradients back onto the image
/// gradient `[c, h, w]` (which is overwritten, not accumulated into).
pub fn col2im3(cols: &[f32], c: usize, h: usize, w: usize, img: &mut [f32]) {
    let hw = h * w;
    img[..c * hw].fill(0.0);
    for ci in 0..c {
        let plane = &mut img[ci * hw..(ci + 1) * hw];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = &cols[(ci * 9 + ky * 3 + kx) * hw..(ci * 9 + ky * 3 + kx + 1) * hw];
                for y in 0..h {
                    let sy = y as isize + ky as isize - 1;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let src = &row[y * w..(y + 1) * w];
                    let dst = &mut plane[sy as usize * w..(sy as usize + 1) * w];
                    match kx {
                        0 => {
                            for x in 1..w {
                                dst[x - 1] += src[x];
                            }
                        }
                        1 => {
                            for x in 0..w {
                                dst[x] += src[x];
                            }
                        }
                        _ => {
                            for x in 0..w - 1 {
                                dst[x + 1] += src[x];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The gradient `g` of an activation's output carried to its input `x`, given
/// its output `y`: PyTorch's `threshold_backward` for relu (zero where x ≤ 0),
/// `g · f'(x)` for the others.
#[inline(always)]
fn grad_through(act: Activation, g: f32, x: f32, y: f32) -> f32 {
    match act {
        Activation::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                g
            }
        }
        Activation::Tanh => g * (1.0 - y * y),
        Activation::Sigmoid => g * (y * (1.0 - y)),
        Activation::Gelu => {
            const INV_SQRT_2PI: f32 = 0.398_942_3;
            let cdf =
                0.5 * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
            g * (cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp())
        }
    }
}

#[inline(always)]
fn act1(act: Activation, v: f32) -> f32 {
    match act {
        // NaN propagates (as in PyTorch), which `f32::max` would not do.
        Activation::Relu => {
            if v <= 0.0 {
                0.0
            } else {
                v
            }
        }
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Gelu => {
            0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
        }
    }
}

/// Activation followed by 2×2 max-pooling (stride 2, floor) of `[c, h, w]` into
/// `[c, h/2, w/2]`, recording each window's argmax. For the monotonic activations
/// (relu, tanh, sigmoid) the window's maximum is taken before activating, so only
/// a quarter of the values are activated; GELU is not monotonic and is applied
/// to all four first. Ties go to the first maximum; a NaN wins its window.
pub fn act_max_pool2(
    act: Activation,
    v: &[f32],
    c: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
    arg: &mut [u32],
) {
    let id = |x: f32| x;
    match act {
        Activation::Relu => pool_planes(v, c, h, w, out, arg, id, |x| act1(Activation::Relu, x)),
        Activation::Tanh => pool_planes(v, c, h, w, out, arg, id, f32::tanh),
        Activation::Sigmoid => {
            pool_planes(v, c, h, w, out, arg, id, |x| act1(Activation::Sigmoid, x))
        }
        Activation::Gelu => pool_planes(v, c, h, w, out, arg, |x| act1(Activation::Gelu, x), id),
    }
}

/// Max-pooling of `pre(v)` over 2×2 windows, then `post` of the maximum.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pool_planes(
    v: &[f32],
    c: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
    arg: &mut [u32],
    pre: impl Fn(f32) -> f32,
    post: impl Fn(f32) -> f32,
) {
    let (h2, w2) = (h / 2, w / 2);
    for ci in 0..c {
        for y in 0..h2 {
            let row = ci * h * w + 2 * y * w;
            let (r0, r1) = (&v[row..row + w], &v[row + w..row + 2 * w]);
            let o = ci * h2 * w2 + y * w2;
            let (out, arg) = (&mut out[o..o + w2], &mut arg[o..o + w2]);
            let w32 = w as u32;
            for xo in 0..w2 {
                let vals = [
                    pre(r0[2 * xo]),
                    pre(r0[2 * xo + 1]),
                    pre(r1[2 * xo]),
                    pre(r1[2 * xo + 1]),
                ];
                let offs = [0, 1, w32, w32 + 1];
                let m = vals[0].max(vals[1]).max(vals[2].max(vals[3]));
                // The first window position holding the maximum, by arithmetic
                // rather than branches (the winner is data-dependent and would
                // mispredict half the time).
                let ne = |j: usize| u32::from(vals[j] != m);
                let mut bi = ne(0) * (1 + ne(1) * (1 + ne(2)));
                let mut bv = m;
                if vals[0].is_nan() | vals[1].is_nan() | vals[2].is_nan() | vals[3].is_nan() {
                    // PyTorch's rule: a later value wins if greater, or if it is NaN.
                    (bi, bv) = (0, vals[0]);
                    for (j, &x) in vals.iter().enumerate().skip(1) {
                        if x > bv || x.is_nan() {
                            (bi, bv) = (j as u32, x);
                        }
                    }
                }
                let bi = offs[bi as usize];
                out[xo] = post(bv);
                arg[xo] = (row + 2 * xo) as u32 + bi;
            }
        }
    }
}

/// Backward of [`act_max_pool2`]: `dx` (overwritten, `[c, h, w]`) gets each
/// pooled gradient at its argmax, times the activation's derivative there.
pub fn act_max_pool2_backward(
    act: Activation,
    v: &[f32],
    pooled: &[f32],
    arg: &[u32],
    g: &[f32],
    dx: &mut [f32],
) {
    dx.fill(0.0);
    for ((gv, &i), y) in g.iter().zip(arg).zip(pooled) {
        let i = i as usize;
        dx[i] += grad_through(act, *gv, v[i], *y);
    }
}

/// Applies the activation elementwise.
pub fn activate(act: Activation, x: &[f32], out: &mut [f32]) {
    // One loop per activation, so the match is outside the loop.
    fn each(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = f(*v);
        }
    }
    match act {
        Activation::Relu => each(x, out, |v| act1(Activation::Relu, v)),
        Activation::Tanh => each(x, out, |v| act1(Activation::Tanh, v)),
        Activation::Sigmoid => each(x, out, |v| act1(Activation::Sigmoid, v)),
        Activation::Gelu => each(x, out, |v| act1(Activation::Gelu, v)),
    }
}

/// Carries the gradient `g` in place through the activation, given its input
/// `x` and output `y`.
pub fn activate_backward(act: Activation, x: &[f32], y: &[f32], g: &mut [f32]) {
    fn each(g: &mut [f32], x: &[f32], y: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
        for ((gi, xi), yi) in g.iter_mut().zip(x).zip(y) {
            *gi = f(*gi, *xi, *yi);
        }
    }
    match act {
        Activation::Relu => each(g, x, y, |g, x, y| grad_through(Activation::Relu, g, x, y)),
        Activation::Tanh => each(g, x, y, |g, x, y| grad_through(Activation::Tanh, g, x, y)),
        Activation::Sigmoid => each(g, x, y, |g, x, y| {
            grad_through(Activation::Sigmoid, g, x, y)
        }),
        Activation::Gelu => each(g, x, y, |g, x, y| grad_through(Activation::Gelu, g, x, y)),
    }
}

/// Batch-norm statistics of `[n, c, s]` (s = spatial size, 1 for a dense layer):
/// per channel, the mean and the biased variance over `n·s` values (in f64).
pub fn channel_stats(x: &[f32], n: usize, c: usize, s: usize, mean: &mut [f64], var: &mut [f64]) {
    mean[..c].fill(0.0);
    var[..c].fill(0.0);
    for img in x.chunks_exact(c * s).take(n) {
        for ci in 0..c {
            let mut acc = 0f64;
            for v in &img[ci * s..(ci + 1) * s] {
                acc += *v as f64;
            }
            mean[ci] += acc;
        }
    }
    let count = (n * s) as f64;
    for m in mean[..c].iter_mut() {
        *m /= count;
    }
    for img in x.chunks_exact(c * s).take(n) {
        for ci in 0..c {
            let m = mean[ci];
            let mut acc = 0f64;
            for v in &img[ci * s..(ci + 1) * s] {
                let d = *v as f64 - m;
                acc += d * d;
            }
            var[ci] += acc;
        }
    }
    for v in var[..c].iter_mut() {
        *v /= count;
    }
}

/// `xhat = (x − mean)·inv_std`, `y = γ·xhat + β` per channel of `[n, c, s]`.
/// `xhat` may be empty (evaluation: not kept).
#[allow(clippy::too_many_arguments)]
pub fn bn_apply(
    x: &[f32],
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    xhat: &mut [f32],
    y: &mut [f32],
) {
    let keep = !xhat.is_empty();
    for (i, (xi, yi)) in x
        .chunks_exact(c * s)
        .zip(y.chunks_exact_mut(c * s))
        .enumerate()
    {
        for ci in 0..c {
            let (m, is, g, b) = (mean[ci], inv_std[ci], gamma[ci], beta[ci]);
            let r = ci * s..(ci + 1) * s;
            if keep {
                let off = i * c * s;
                let xh = &mut xhat[off + r.start..off + r.end];
                for ((h, v), o) in xh.iter_mut().zip(&xi[r.clone()]).zip(&mut yi[r.clone()]) {
                    *h = (v - m) * is;
                    *o = g * *h + b;
                }
            } else {
                for (v, o) in xi[r.clone()].iter().zip(&mut yi[r.clone()]) {
                    *o = g * ((v - m) * is) + b;
                }
            }
        }
    }
}

/// Backward of training-mode batch-norm over `[n, c, s]`: from the output gradient
/// `g` (overwritten with the input gradient), `xhat` and `inv_std`, accumulates
/// nothing and writes `dgamma`, `dbeta`:
/// `dx = γ·inv_std·(g − mean(g) − xhat·mean(g·xhat))`.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    g: &mut [f32],
    xhat: &[f32],
    n: usize,
    c: usize,
    s: usize,
    gamma: &[f32],
    inv_std: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let mut sg = vec![0f64; c];
    let mut sgx = vec![0f64; c];
    for (gi, hi) in g.chunks_exact(c * s).zip(xhat.chunks_exact(c * s)).take(n) {
        for ci in 0..c {
            let (mut a, mut b) = (0f64, 0f64);
            for (gv, hv) in gi[ci * s..(ci + 1) * s]
                .iter()
                .zip(&hi[ci * s..(ci + 1) * s])
            {
                a += *gv as f64;
                b += (*gv * *hv) as f64;
            }
            sg[ci] += a;
            sgx[ci] += b;
        }
    }
    let count = (n * s) as f64;
    for ci in 0..c {
        dbeta[ci] = sg[ci] as f32;
        dgamma[ci] = sgx[ci] as f32;
    }
    for (gi, hi) in g
        .chunks_exact_mut(c * s)
        .zip(xhat.chunks_exact(c * s))
        .take(n)
    {
        for ci in 0..c {
            let k = gamma[ci] * inv_std[ci];
            let mg = (sg[ci] / count) as f32;
            let mgx = (sgx[ci] / count) as f32;
            for (gv, hv) in gi[ci * s..(ci + 1) * s]
                .iter_mut()
                .zip(&hi[ci * s..(ci + 1) * s])
            {
                *gv = k * (*gv - mg - hv * mgx);
            }
        }
    }
}

/// Softmax cross-entropy of `logits` (`n × k`) against the target matrix `t`
/// (`CrossEntropy::targets`: class weights and label smoothing folded in), divided
/// by `norm`. Returns the loss and writes `dlogits = (softmax·Σt − t) / norm`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    t: &[f32],
    k: usize,
    norm: f32,
    dlogits: &mut [f32],
) -> f32 {
    let mut total = 0f64;
    for ((z, ti), d) in logits
        .chunks_exact(k)
        .zip(t.chunks_exact(k))
        .zip(dlogits.chunks_exact_mut(k))
    {
        let max = z.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
        let mut sum = 0f32;
        for (di, zi) in d.iter_mut().zip(z) {
            *di = (zi - max).exp();
            sum += *di;
        }
        let lse = max + sum.ln();
        let tsum: f32 = ti.iter().sum();
        for ((di, zi), tv) in d.iter_mut().zip(z).zip(ti) {
            total -= (*tv * (zi - lse)) as f64;
            *di = (*di / sum * tsum - tv) / norm;
        }
    }
    (total / norm as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_handles_transposed_operands_and_accumulation() {
        // a = [[1,2,3],[4,5,6]] (2×3), b = aᵀ → a·aᵀ = [[14,32],[32,77]]
        let a = [1f32, 2., 3., 4., 5., 6.];
        let mut d = vec![1f32; 4];
        matmul(
            &mut d,
            2,
            2,
            3,
            MatRef::rows(&a, 3),
            MatRef::transposed(&a, 3),
            false,
            Parallelism::None,
        );
        assert_eq!(d, [14., 32., 32., 77.]);
        // aᵀ·a (3×3), accumulated onto ones.
        let mut d = vec![1f32; 9];
        matmul(
            &mut d,
            3,
            3,
            2,
            MatRef::transposed(&a, 3),
            MatRef::rows(&a, 3),
            true,
            Parallelism::None,
        );
        assert_eq!(d, [18., 23., 28., 23., 30., 37., 28., 37., 46.]);
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for any x, y.
        let (c, h, w) = (2, 5, 4);
        let mut rng = crate::rng::Rng::new(3);
        let x: Vec<f32> = (0..c * h * w).map(|_| rng.normal() as f32).collect();
        let y: Vec<f32> = (0..c * 9 * h * w).map(|_| rng.normal() as f32).collect();
        let mut cols = vec![0f32; c * 9 * h * w];
        im2col3(&x, c, h, w, &mut cols);
        let mut back = vec![7f32; c * h * w];
        col2im3(&y, c, h, w, &mut back);
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (*a * *b) as f64).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a * *b) as f64).sum();
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        // Centre tap of channel 1 is the image itself; the top-left tap is shifted.
        assert_eq!(&cols[(9 + 4) * h * w..(9 + 5) * h * w], &x[h * w..]);
        assert_eq!(cols[0], 0.0);
        assert_eq!(cols[w + 1], x[0]);
    }

    #[test]
    fn pooling_takes_the_first_maximum_and_floors_odd_sizes() {
        // One 3×5 plane: windows (0,0) and (0,1); the last row and column are dropped.
        let x = [
            1f32, 5., 2., -2., 9., 5., 0., 3., 1., 9., 7., 7., 7., 7., 7.,
        ];
        let mut out = [0f32; 2];
        let mut arg = [0u32; 2];
        act_max_pool2(Activation::Relu, &x, 1, 3, 5, &mut out, &mut arg);
        assert_eq!(out, [5., 3.]);
        assert_eq!(arg, [1, 7]); // the 5 at index 1 wins the tie with index 5
        let mut dx = [1f32; 15];
        act_max_pool2_backward(Activation::Relu, &x, &out, &arg, &[2., 3.], &mut dx);
        let mut want = [0f32; 15];
        want[1] = 2.;
        want[7] = 3.;
        assert_eq!(dx, want);
        // Tanh is monotonic: pooled = tanh(max), gradient × (1 − tanh²) at the max.
        act_max_pool2(Activation::Tanh, &x, 1, 3, 5, &mut out, &mut arg);
        assert_eq!(out, [5f32.tanh(), 3f32.tanh()]);
        act_max_pool2_backward(Activation::Tanh, &x, &out, &arg, &[1., 1.], &mut dx);
        assert!((dx[7] - (1.0 - 3f32.tanh().powi(2))).abs() < 1e-7);
        // GELU is not monotonic: gelu(−3) ≈ −0.004 beats gelu(−0.5) ≈ −0.154.
        let y = [-0.5f32, -3.0, -0.6, -0.7];
        act_max_pool2(Activation::Gelu, &y, 1, 2, 2, &mut out[..1], &mut arg[..1]);
        assert_eq!(
            arg[0], 1,
            "the window's largest GELU output, not its largest input"
        );
        // A NaN wins its window, as in PyTorch.
        let z = [1f32, f32::NAN, 3.0, 2.0];
        act_max_pool2(Activation::Relu, &z, 1, 2, 2, &mut out[..1], &mut arg[..1]);
        assert!(out[0].is_nan() && arg[0] == 1);
    }

    /// Weighted, label-smoothed cross-entropy and its logit gradient equal the
    /// generic candle path of `loss.rs` (whose tests tie it to PyTorch's
    /// `F.cross_entropy(z, y, weight=w, label_smoothing=ε)`).
    #[test]
    fn cross_entropy_matches_the_generic_loss() {
        use crate::loss::CrossEntropy;
        use candle_core::{Device, Var};
        let z = [1f32, 2., 0.5, 0.1, -1., 2.];
        let ce = CrossEntropy::new(vec![1., 2., 0.5], 0.1);
        let (t, norm) = ce.targets(&[1, 2]);
        let mut d = [0f32; 6];
        let loss = softmax_cross_entropy(&z, &t, 3, norm, &mut d);
        let zv = Var::from_slice(&z, (2, 3), &Device::Cpu).unwrap();
        let l = ce.loss(zv.as_tensor(), &[1, 2]).unwrap();
        let want = l.to_scalar::<f32>().unwrap();
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        let g = l.backward().unwrap();
        let gz = g
            .get(zv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in d.iter().zip(&gz) {
            assert!((a - b).abs() < 1e-6, "{d:?} vs {gz:?}");
        }
    }
}
