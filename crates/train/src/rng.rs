//! Seeded random streams. candle's CPU generator cannot be seeded, so every random
//! draw of a trial (split, shuffle, init, dropout, augmentation) comes from here: one
//! independent stream per purpose, derived from the trial seed.

/// SplitMix64: used to expand seeds into stream states.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the purpose label, so streams for different purposes differ.
fn label_hash(label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// xoshiro256++ generator. Its output sequence is fixed forever by this code, so a
/// config and seed give the same trial on every machine and every version of our deps.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// An independent stream for one purpose (`"init"`, `"dropout"`, `"split"`, ...).
    pub fn stream(seed: u64, purpose: &str) -> Self {
        let mut sm = seed ^ label_hash(purpose);
        Rng::new(splitmix64(&mut sm))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) with 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire's method).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        loop {
            let x = self.next_u64();
            let m = (x as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }

    /// Standard normal (Box-Muller, both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u1 = self.next_f64();
            if u1 <= f64::MIN_POSITIVE {
                continue;
            }
            let u2 = self.next_f64();
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * u2;
            self.spare_normal = Some(r * theta.sin());
            return r * theta.cos();
        }
    }

    /// Standard normal by Marsaglia and Tsang's ziggurat (128 layers; J. Stat.
    /// Softw. 5(8), 2000), for the many draws of noise and elastic fields: one
    /// 32-bit draw and a multiply almost always; `exp`/`ln` in about 1 draw in 80.
    /// Its own code, so its sequence is fixed like the rest of this generator.
    pub fn normal_f32(&mut self) -> f32 {
        let t = ziggurat();
        let hz = (self.next_u64() >> 32) as u32 as i32;
        let iz = (hz & 127) as usize;
        if hz.unsigned_abs() < t.k[iz] {
            return (hz as f64 * t.w[iz]) as f32;
        }
        self.ziggurat_slow(hz, iz)
    }

    /// The ziggurat's rare path, for a draw `hz` outside layer `iz`'s core.
    #[cold]
    fn ziggurat_slow(&mut self, mut hz: i32, mut iz: usize) -> f32 {
        let t = ziggurat();
        loop {
            let x = hz as f64 * t.w[iz];
            if iz == 0 {
                // the tail beyond R: Marsaglia's exponential method
                loop {
                    let u1 = 1.0 - self.next_f64();
                    let u2 = 1.0 - self.next_f64();
                    let x = -u1.ln() / ZIGGURAT_R;
                    let y = -u2.ln();
                    if y + y >= x * x {
                        let v = ZIGGURAT_R + x;
                        return if hz > 0 { v as f32 } else { -v as f32 };
                    }
                }
            }
            if t.f[iz] + self.next_f64() * (t.f[iz - 1] - t.f[iz]) < (-0.5 * x * x).exp() {
                return x as f32;
            }
            hz = (self.next_u64() >> 32) as u32 as i32;
            iz = (hz & 127) as usize;
            if hz.unsigned_abs() < t.k[iz] {
                return (hz as f64 * t.w[iz]) as f32;
            }
        }
    }

    /// Fills `out` with standard normals: the ziggurat of [`Rng::normal_f32`]
    /// fed both 32-bit halves of each 64-bit draw (its own sequence, not that
    /// of repeated `normal_f32` calls).
    pub fn fill_normal_f32(&mut self, out: &mut [f32]) {
        let t = ziggurat();
        let mut i = 0;
        while i < out.len() {
            let bits = self.next_u64();
            for hz in [(bits >> 32) as u32 as i32, bits as u32 as i32] {
                if i == out.len() {
                    break;
                }
                let iz = (hz & 127) as usize;
                out[i] = if hz.unsigned_abs() < t.k[iz] {
                    (hz as f64 * t.w[iz]) as f32
                } else {
                    self.ziggurat_slow(hz, iz)
                };
                i += 1;
            }
        }
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Four xoshiro256++ streams side by side, for bulk draws: each step gives
/// one word of each stream, and the four run as one 4×64-bit vector where
/// the CPU has one (one stream is a chain of dependent steps). Lane `l` is
/// the stream [`Rng::new`] makes from the `l`-th seed.
#[derive(Clone, Debug)]
pub struct Rng4 {
    /// `s[word][lane]`
    s: [[u64; 4]; 4],
}

impl Rng4 {
    /// Four streams seeded from four words of `rng`.
    pub fn from_rng(rng: &mut Rng) -> Self {
        let lanes: [[u64; 4]; 4] = std::array::from_fn(|_| Rng::new(rng.next_u64()).s);
        Rng4 {
            s: std::array::from_fn(|word| std::array::from_fn(|lane| lanes[lane][word])),
        }
    }

    /// The next word of each stream.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // lanes by index: the shape that vectorizes
    pub fn next_u64x4(&mut self) -> [u64; 4] {
        let s = &mut self.s;
        let mut out = [0u64; 4];
        for l in 0..4 {
            out[l] = (s[0][l].wrapping_add(s[3][l]))
                .rotate_left(23)
                .wrapping_add(s[0][l]);
            let t = s[1][l] << 17;
            s[2][l] ^= s[0][l];
            s[3][l] ^= s[1][l];
            s[1][l] ^= s[2][l];
            s[0][l] ^= s[3][l];
            s[2][l] ^= t;
            s[3][l] = s[3][l].rotate_left(45);
        }
        out
    }
}

/// Right edge of the ziggurat's base layer (128 layers).
const ZIGGURAT_R: f64 = 3.442_619_855_899;

struct Ziggurat {
    k: [u32; 128],
    w: [f64; 128],
    f: [f64; 128],
}

/// The ziggurat's tables (Marsaglia and Tsang's `zigset`, for 128 layers).
fn ziggurat() -> &'static Ziggurat {
    static TABLES: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let m1 = 2_147_483_648.0f64;
        let vn = 9.912_563_035_262_17e-3;
        let mut dn = ZIGGURAT_R;
        let mut tn = dn;
        let q = vn / (-0.5 * dn * dn).exp();
        let mut z = Ziggurat {
            k: [0; 128],
            w: [0.0; 128],
            f: [0.0; 128],
        };
        z.k[0] = ((dn / q) * m1) as u32;
        z.k[1] = 0;
        z.w[0] = q / m1;
        z.w[127] = dn / m1;
        z.f[0] = 1.0;
        z.f[127] = (-0.5 * dn * dn).exp();
        for i in (1..=126).rev() {
            dn = (-2.0 * (vn / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            z.k[i + 1] = ((dn / tn) * m1) as u32;
            tn = dn;
            z.f[i] = (-0.5 * dn * dn).exp();
            z.w[i] = dn / m1;
        }
        z
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_lanes_are_four_streams() {
        let mut a = Rng::new(77);
        let mut b = a.clone();
        let mut lanes = Rng4::from_rng(&mut a);
        let mut singles: Vec<Rng> = (0..4).map(|_| Rng::new(b.next_u64())).collect();
        assert_eq!(a.next_u64(), b.next_u64(), "four seeds taken");
        for _ in 0..100 {
            let got = lanes.next_u64x4();
            for (l, r) in singles.iter_mut().enumerate() {
                assert_eq!(got[l], r.next_u64());
            }
        }
    }

    #[test]
    fn same_seed_same_stream_and_purposes_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, "init");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, "init");
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::stream(7, "dropout");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The ziggurat's draws have the normal's moments and tail mass.
    #[test]
    fn ziggurat_draws_are_standard_normal() {
        let mut r = Rng::new(11);
        let n = 400_000;
        let mut filled = vec![0f32; n];
        r.fill_normal_f32(&mut filled);
        for xs in [
            (0..n).map(|_| r.normal_f32() as f64).collect::<Vec<f64>>(),
            filled.iter().map(|v| *v as f64).collect(),
        ] {
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
            assert!(mean.abs() < 0.01, "mean {mean}");
            assert!((var - 1.0).abs() < 0.01, "variance {var}");
            assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
            // P(|Z| > 1) = 0.3173, P(|Z| > 2) = 0.0455, P(|Z| > 3.5) = 4.65e-4 (beyond the base layer's edge)
            for (edge, want, tol) in [
                (1.0, 0.3173, 0.003),
                (2.0, 0.0455, 0.001),
                (3.5, 4.65e-4, 1.2e-4),
            ] {
                let got = xs.iter().filter(|x| x.abs() > edge).count() as f64 / n as f64;
                assert!(
                    (got - want).abs() < tol,
                    "P(|Z| > {edge}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let z = r.normal();
            s += z;
            s2 += z * z;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        let u: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.005, "uniform mean {u}");
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
