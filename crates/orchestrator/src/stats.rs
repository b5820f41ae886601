//! Statistics over seeds: mean, sample standard deviation, Student-t confidence
//! intervals and Welch's t-test, with scipy's definitions. Aggregation happens here,
//! in Rust, not in SQL (`sqrt` is not in every SQLite build).

/// Mean, sample standard deviation (n − 1), count, min, max.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
    pub min: f64,
    pub max: f64,
}

pub fn summarize(v: &[f64]) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Some(Summary {
        mean,
        std,
        n,
        min,
        max,
    })
}

/// ln Γ(x) (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the incomplete beta function (Numerical Recipes' betacf).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let tiny = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = 1.0 + aa / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Two-sided p-value of Student's t with `df` degrees of freedom.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The `q` quantile of Student's t (bisection on the CDF).
pub fn t_quantile(q: f64, df: f64) -> f64 {
    let cdf = |t: f64| {
        if t >= 0.0 {
            1.0 - 0.5 * t_two_sided_p(t, df)
        } else {
            0.5 * t_two_sided_p(t, df)
        }
    };
    let (mut lo, mut hi) = (-1e4, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Half-width of the 95% confidence interval of the mean (Student t, n − 1 df).
pub fn ci95_half_width(s: &Summary) -> f64 {
    if s.n < 2 {
        return f64::NAN;
    }
    t_quantile(0.975, (s.n - 1) as f64) * s.std / (s.n as f64).sqrt()
}

/// Welch's t-test (`scipy.stats.ttest_ind(a, b, equal_var=False)`): (t, df, p).
pub fn welch(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let (sa, sb) = (summarize(a)?, summarize(b)?);
    if sa.n < 2 || sb.n < 2 {
        return None;
    }
    let (va, vb) = (sa.std.powi(2) / sa.n as f64, sb.std.powi(2) / sb.n as f64);
    if va + vb == 0.0 {
        // scipy: identical constant samples give NaN; different constants are
        // infinitely far apart (t = ±inf, p = 0)
        let d = sa.mean - sb.mean;
        return (d != 0.0).then(|| (d.signum() * f64::INFINITY, 1.0, 0.0));
    }
    let t = (sa.mean - sb.mean) / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (sa.n - 1) as f64 + vb * vb / (sb.n - 1) as f64);
    Some((t, df, t_two_sided_p(t, df)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy 1.x reference:
    /// ```python
    /// from scipy import stats
    /// stats.ttest_ind([0.71,0.74,0.69,0.73], [0.65,0.70,0.66], equal_var=False)
    ///   # statistic 2.5166114784235787, pvalue 0.0666257103707589, df 3.934296093644892
    /// stats.ttest_ind([0.5,0.52], [0.5,0.49,0.51,0.48], equal_var=False)
    ///   # statistic 1.2602520756252087, pvalue 0.3405004331138333, df 1.897155361050328
    /// stats.t.ppf(0.975, 3), stats.t.ppf(0.975, 1), stats.t.ppf(0.975, 10)
    ///   # 3.1824463052837078, 12.706204736174694, 2.228138851986274
    /// ```
    #[test]
    fn welch_and_t_quantiles_match_scipy() {
        let (t, df, p) = welch(&[0.71, 0.74, 0.69, 0.73], &[0.65, 0.70, 0.66]).unwrap();
        assert!((t - 2.516_611_478_423_578_7).abs() < 1e-9, "{t}");
        assert!((df - 3.934_296_093_644_892).abs() < 1e-9, "{df}");
        assert!((p - 0.066_625_710_370_758_9).abs() < 1e-9, "{p}");
        let (t, df, p) = welch(&[0.5, 0.52], &[0.5, 0.49, 0.51, 0.48]).unwrap();
        assert!(
            (t - 1.260_252_075_625_208_7).abs() < 1e-9 && (df - 1.897_155_361_050_328).abs() < 1e-9
        );
        assert!((p - 0.340_500_433_113_833_3).abs() < 1e-9, "{p}");
        for (df, want) in [
            (3.0, 3.182_446_305_283_707_8),
            (1.0, 12.706_204_736_174_694),
            (10.0, 2.228_138_851_986_274),
        ] {
            assert!((t_quantile(0.975, df) - want).abs() < 1e-7, "df {df}");
        }
        assert!(welch(&[1.0], &[1.0, 2.0]).is_none());
        // scipy: constant samples with different means → t = inf, p = 0; equal → NaN
        assert_eq!(
            welch(&[0.9, 0.9], &[0.8, 0.8]),
            Some((f64::INFINITY, 1.0, 0.0))
        );
        assert!(welch(&[0.9, 0.9], &[0.9, 0.9]).is_none());
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.mean, s.n, s.min, s.max), (2.5, 4, 1.0, 4.0));
        assert!((s.std - 1.290_994_448_735_805_6).abs() < 1e-12);
    }
}
