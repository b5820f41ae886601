use gemm::{gemm, Parallelism};
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
fn run(
    m: usize,
    n: usize,
    k: usize,
    dst_rs: isize,
    dst_cs: isize,
    a_rs: isize,
    a_cs: isize,
    b_rs: isize,
    b_cs: isize,
    par: Parallelism,
) -> f64 {
    let span = |r: usize, c: usize, rs: isize, cs: isize| {
        (r - 1) * rs as usize + (c - 1) * cs as usize + 1
    };
    let a = vec![0.5f32; span(m, k, a_rs, a_cs)];
    let b = vec![0.25f32; span(k, n, b_rs, b_cs)];
    let mut d = vec![0f32; span(m, n, dst_rs, dst_cs)];
    let mut best = f64::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        unsafe {
            gemm(
                m,
                n,
                k,
                d.as_mut_ptr(),
                dst_cs,
                dst_rs,
                false,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() {
    let par = Parallelism::Rayon(2);
    let (nb, f, h) = (64usize, 12288usize, 512usize);
    // u (nb×h) = x (nb×f) · Wᵀ (f×h); W is h×f row-major
    println!(
        "fwd u=x·Wt      {:.1} GFLOP/s",
        run(nb, h, f, h as isize, 1, f as isize, 1, 1, f as isize, par)
    );
    // uᵀ (h×nb) = W (h×f) · xᵀ (f×nb), written into u (nb×h): dst_rs=1, dst_cs=h
    println!(
        "fwd uT=W·xT     {:.1} GFLOP/s",
        run(h, nb, f, 1, h as isize, f as isize, 1, 1, f as isize, par)
    );
    // dW (h×f) = gᵀ (h×nb) · x (nb×f)
    println!(
        "dW=gT·x         {:.1} GFLOP/s",
        run(h, f, nb, f as isize, 1, 1, h as isize, f as isize, 1, par)
    );
    // dWᵀ view: (f×h) = xᵀ · g written into dW: dst_rs=1, dst_cs=f
    println!(
        "dWT=xT·g        {:.1} GFLOP/s",
        run(f, h, nb, 1, f as isize, 1, f as isize, h as isize, 1, par)
    );
    println!(
        "square 1024     {:.1} GFLOP/s",
        run(1024, 1024, 1024, 1024, 1, 1024, 1, 1024, 1, par)
    );
    println!(
        "square 2048     {:.1} GFLOP/s",
        run(2048, 2048, 2048, 2048, 1, 2048, 1, 2048, 1, par)
    );
    // conv1 per image: (16×4096) = W (16×27) · cols (27×4096), single thread
    let p1 = Parallelism::None;
    println!(
        "conv1 W·cols    {:.1} GFLOP/s (1 thread)",
        run(16, 4096, 27, 4096, 1, 27, 1, 4096, 1, p1)
    );
    println!(
        "conv1 colsT·WT  {:.1} GFLOP/s (1 thread)",
        run(4096, 16, 27, 1, 4096, 1, 4096, 1, 27, p1)
    );
    println!(
        "conv2 W·cols    {:.1} GFLOP/s (1 thread)",
        run(32, 1024, 144, 1024, 1, 144, 1, 1024, 1, p1)
    );
    println!(
        "conv2 colsT·WT  {:.1} GFLOP/s (1 thread)",
        run(1024, 32, 144, 1, 1024, 1, 1024, 1, 144, p1)
    );
    println!(
        "conv2 dW du·colsT {:.1} GFLOP/s (1 thread)",
        run(32, 144, 1024, 144, 1, 1024, 1, 1, 1024, p1)
    );
    println!(
        "conv2 dcols WT·du {:.1} GFLOP/s (1 thread)",
        run(144, 1024, 32, 1024, 1, 1, 144, 1024, 1, p1)
    );
    println!(
        "fwd half-k 1t   {:.1} GFLOP/s (1 thread)",
        run(
            nb,
            h,
            f / 2,
            h as isize,
            1,
            f as isize,
            1,
            1,
            f as isize,
            p1
        )
    );
    println!(
        "fwd half-n 1t   {:.1} GFLOP/s (1 thread)",
        run(
            nb,
            h / 2,
            f,
            h as isize,
            1,
            f as isize,
            1,
            1,
            f as isize,
            p1
        )
    );
    println!(
        "fwd W·xT half-m 1t {:.1} GFLOP/s (1 thread)",
        run(
            h / 2,
            nb,
            f,
            1,
            h as isize,
            f as isize,
            1,
            1,
            f as isize,
            p1
        )
    );
    println!(
        "dW half 1t      {:.1} GFLOP/s (1 thread)",
        run(
            h / 2,
            f,
            nb,
            f as isize,
            1,
            1,
            h as isize,
            f as isize,
            1,
            p1
        )
    );
    println!(
        "square 512 1t   {:.1} GFLOP/s (1 thread)",
        run(512, 512, 512, 512, 1, 512, 1, 512, 1, p1)
    );
}
