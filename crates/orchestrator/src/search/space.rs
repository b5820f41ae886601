//! The search space: one distribution per swept setting (`[space]` in a spec),
//! each mapped to an internal coordinate that samplers work in (a log axis for
//! log distributions, an index for a choice). Pure data; no store, no tensors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A configuration the sampler proposes: dotted setting → value.
pub type Point = BTreeMap<String, Json>;

/// One setting's distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Distribution {
    /// A float drawn uniformly from `[low, high]`.
    Uniform { low: f64, high: f64 },
    /// A float whose logarithm is uniform in `[ln low, ln high]` (`low > 0`).
    LogUniform { low: f64, high: f64 },
    /// An integer in `low..=high` on the grid `low + k·step`, uniform on a log
    /// axis when `log` (then `step` is 1).
    Int {
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    },
    /// One of the listed values (any TOML value: numbers, strings, lists).
    Choice { values: Vec<Json> },
}

impl Distribution {
    /// Numeric distributions: the internal interval samplers draw from (the log
    /// axis for log distributions; integers widened by half a step each side so
    /// that every integer owns an equal share). None for a choice.
    pub fn internal_bounds(&self) -> Option<(f64, f64)> {
        match self {
            Distribution::Uniform { low, high } => Some((*low, *high)),
            Distribution::LogUniform { low, high } => Some((low.ln(), high.ln())),
            Distribution::Int {
                low,
                high,
                log: true,
                ..
            } => Some(((*low as f64 - 0.5).max(0.5).ln(), (*high as f64 + 0.5).ln())),
            Distribution::Int {
                low, high, step, ..
            } => Some((
                *low as f64 - 0.5 * *step as f64,
                *high as f64 + 0.5 * *step as f64,
            )),
            Distribution::Choice { .. } => None,
        }
    }

    /// The value at an internal coordinate (numeric), clamped into the range.
    pub fn value_at(&self, x: f64) -> Json {
        match self {
            Distribution::Uniform { low, high } => json_f64(significant(x).clamp(*low, *high)),
            Distribution::LogUniform { low, high } => {
                json_f64(significant(x.exp()).clamp(*low, *high))
            }
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => {
                let v = if *log { x.exp() } else { x };
                let k = ((v - *low as f64) / *step as f64).round();
                let v = (*low + (k.max(0.0) as i64) * step).min(*high - (*high - *low) % step);
                Json::from(v.clamp(*low, *high))
            }
            Distribution::Choice { values } => {
                let i = (x.max(0.0) as usize).min(values.len() - 1);
                values[i].clone()
            }
        }
    }

    /// The internal coordinate of a value (the inverse of [`Self::value_at`]);
    /// a choice's index. None when the value is not in the distribution.
    pub fn coordinate_of(&self, v: &Json) -> Option<f64> {
        match self {
            Distribution::Uniform { .. } => v.as_f64(),
            Distribution::LogUniform { .. } => v.as_f64().filter(|x| *x > 0.0).map(f64::ln),
            Distribution::Int { log, .. } => {
                let x = v.as_f64()?;
                if *log {
                    (x > 0.0).then(|| x.ln())
                } else {
                    Some(x)
                }
            }
            Distribution::Choice { values } => values
                .iter()
                .position(|c| same_value(c, v))
                .map(|i| i as f64),
        }
    }

    /// Whether the distribution is sampled on a log axis (reports plot it so).
    pub fn is_log(&self) -> bool {
        matches!(
            self,
            Distribution::LogUniform { .. } | Distribution::Int { log: true, .. }
        )
    }

    /// A short description: `log_uniform(0.0001, 0.01)`, `choice of 3`.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Uniform { low, high } => format!("uniform({low}, {high})"),
            Distribution::LogUniform { low, high } => format!("log_uniform({low}, {high})"),
            Distribution::Int {
                low,
                high,
                log,
                step,
            } => {
                let mut s = format!("int({low}, {high}");
                if *log {
                    s += ", log";
                }
                if *step != 1 {
                    s += &format!(", step {step}");
                }
                s + ")"
            }
            Distribution::Choice { values } => format!(
                "choice({})",
                values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A sampled float kept to 6 significant digits: `0.209281`, not
/// `0.2092812092350911`, in tables, CSV and `--where` (a relative step of 1e-6
/// is far below what a training setting can tell apart).
fn significant(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

/// A float as JSON, written the way TOML would read it back.
fn json_f64(x: f64) -> Json {
    serde_json::Number::from_f64(x)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

/// Numbers compare by value (1 and 1.0 are one choice); everything else exactly.
pub fn same_value(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The search space: settings in the spec's order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub params: Vec<(String, Distribution)>,
}

impl Space {
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Number of distinct configurations when every setting is finite (choices
    /// and integers); None when some setting is continuous.
    pub fn finite_size(&self) -> Option<u128> {
        self.params.iter().try_fold(1u128, |acc, (_, d)| {
            let n = match d {
                Distribution::Choice { values } => values.len() as u128,
                Distribution::Int {
                    low,
                    high,
                    log: false,
                    step,
                } => ((high - low) / step + 1) as u128,
                Distribution::Int { low, high, .. } => (high - low + 1) as u128,
                _ => return None,
            };
            Some(acc.saturating_mul(n))
        })
    }

    /// A stable text of the space, hashed to tell whether a rerun searches the
    /// same space as the recorded proposals.
    pub fn canonical(&self) -> String {
        serde_json::to_string(&self.params).expect("space serializes")
    }
}

/// Reads one `[space]` entry: `{ uniform = [lo, hi] }`, `{ log_uniform = [lo, hi] }`,
/// `{ int = [lo, hi], log = bool, step = k }` or `{ choice = [v, ...] }`.
/// The error is the message that follows the key's name.
pub fn parse_distribution(v: &toml::Value) -> std::result::Result<Distribution, String> {
    const FORMS: &str = "a distribution: { uniform = [low, high] }, { log_uniform = [low, high] }, { int = [low, high] } (with optional log = true, step = k), or { choice = [value, ...] }";
    let toml::Value::Table(t) = v else {
        return Err(format!("must be {FORMS}; got {v}"));
    };
    let kinds: Vec<&str> = ["uniform", "log_uniform", "int", "choice"]
        .into_iter()
        .filter(|k| t.contains_key(*k))
        .collect();
    if kinds.len() != 1 {
        return Err(format!("must be {FORMS}; got {v}"));
    }
    let kind = kinds[0];
    for k in t.keys() {
        let allowed = k == kind || (kind == "int" && (k == "log" || k == "step"));
        if !allowed {
            return Err(format!(
                "has an unknown key `{k}` for a {kind} distribution"
            ));
        }
    }
    let pair = |name: &str| -> std::result::Result<(f64, f64), String> {
        let a = t[name]
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| format!("{name} needs [low, high], got {}", t[name]))?;
        let num = |x: &toml::Value| {
            x.as_float()
                .or_else(|| x.as_integer().map(|i| i as f64))
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{name} bounds must be finite numbers, got {x}"))
        };
        let (lo, hi) = (num(&a[0])?, num(&a[1])?);
        if lo >= hi {
            return Err(format!(
                "{name} = [{lo}, {hi}]: the low bound must be below the high bound"
            ));
        }
        Ok((lo, hi))
    };
    match kind {
        "uniform" => {
            let (low, high) = pair("uniform")?;
            Ok(Distribution::Uniform { low, high })
        }
        "log_uniform" => {
            let (low, high) = pair("log_uniform")?;
            if low <= 0.0 {
                return Err(format!(
                    "log_uniform = [{low}, {high}]: a log scale needs a low bound above 0"
                ));
            }
            Ok(Distribution::LogUniform { low, high })
        }
        "int" => {
            let a = t["int"]
                .as_array()
                .filter(|a| a.len() == 2 && a.iter().all(|x| x.as_integer().is_some()))
                .ok_or_else(|| format!("int needs [low, high] integers, got {}", t["int"]))?;
            let (low, high) = (a[0].as_integer().unwrap(), a[1].as_integer().unwrap());
            if low >= high {
                return Err(format!(
                    "int = [{low}, {high}]: the low bound must be below the high bound"
                ));
            }
            let log = match t.get("log") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(x) => return Err(format!("log must be true or false, got {x}")),
            };
            let step = match t.get("step") {
                None => 1,
                Some(toml::Value::Integer(s)) if *s >= 1 => *s,
                Some(x) => return Err(format!("step must be an integer of at least 1, got {x}")),
            };
            if log && low <= 0 {
                return Err(format!(
                    "int = [{low}, {high}] with log = true: a log scale needs a low bound above 0"
                ));
            }
            if log && step != 1 {
                return Err("int with log = true takes no step".into());
            }
            Ok(Distribution::Int {
                low,
                high,
                log,
                step,
            })
        }
        _ => {
            let values = t["choice"]
                .as_array()
                .ok_or_else(|| format!("choice needs a list of values, got {}", t["choice"]))?;
            if values.is_empty() {
                return Err("choice has no values: list at least one".into());
            }
            let values: Vec<Json> = values
                .iter()
                .map(|x| serde_json::to_value(x).expect("toml converts to JSON"))
                .collect();
            for (i, c) in values.iter().enumerate() {
                if values[..i].iter().any(|p| same_value(p, c)) {
                    return Err(format!("choice lists {c} twice"));
                }
            }
            Ok(Distribution::Choice { values })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> std::result::Result<Distribution, String> {
        let v: toml::Table = format!("x = {text}").parse().unwrap();
        parse_distribution(&v["x"])
    }

    #[test]
    fn distributions_parse_and_bad_ones_say_why() {
        assert_eq!(
            d("{ log_uniform = [1e-4, 1e-2] }").unwrap(),
            Distribution::LogUniform {
                low: 1e-4,
                high: 1e-2
            }
        );
        assert_eq!(
            d("{ int = [5, 40], step = 5 }").unwrap(),
            Distribution::Int {
                low: 5,
                high: 40,
                log: false,
                step: 5
            }
        );
        for (bad, why) in [
            ("{ log_uniform = [0, 1] }", "low bound above 0"),
            ("{ uniform = [1, 0] }", "below the high bound"),
            ("{ uniform = [0, 1], log = true }", "unknown key `log`"),
            ("{ int = [1.5, 3] }", "integers"),
            ("{ int = [0, 8], log = true }", "low bound above 0"),
            ("{ choice = [] }", "no values"),
            ("{ choice = [1, 1.0] }", "twice"),
            ("[1, 2]", "must be a distribution"),
            (
                "{ uniform = [0, 1], choice = [1] }",
                "must be a distribution",
            ),
            ("{ int = [1, 9], step = 0 }", "at least 1"),
        ] {
            let e = d(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn values_and_coordinates_round_trip() {
        let lr = d("{ log_uniform = [1e-4, 1e-2] }").unwrap();
        let (lo, hi) = lr.internal_bounds().unwrap();
        assert!((lo - 1e-4f64.ln()).abs() < 1e-12 && (hi - 1e-2f64.ln()).abs() < 1e-12);
        let v = lr.value_at(1e-3f64.ln());
        assert!((v.as_f64().unwrap() - 1e-3).abs() < 1e-15);
        // sampled floats keep 6 significant digits
        let u = Distribution::Uniform {
            low: 0.0,
            high: 1.0,
        };
        assert_eq!(u.value_at(0.2092812092350911).to_string(), "0.209281");
        assert_eq!(lr.value_at(-6.1234567).to_string(), "0.00219087");
        assert!((lr.coordinate_of(&v).unwrap() - 1e-3f64.ln()).abs() < 1e-12);

        let ep = d("{ int = [5, 40], step = 5 }").unwrap();
        let (lo, hi) = ep.internal_bounds().unwrap();
        assert_eq!((lo, hi), (2.5, 42.5));
        // every grid value owns an equal share of the internal interval
        let mut counts = BTreeMap::new();
        for i in 0..8000 {
            let x = lo + (hi - lo) * (i as f64 + 0.5) / 8000.0;
            *counts.entry(ep.value_at(x).as_i64().unwrap()).or_insert(0) += 1;
        }
        assert_eq!(
            counts.keys().copied().collect::<Vec<_>>(),
            vec![5, 10, 15, 20, 25, 30, 35, 40]
        );
        assert!(counts.values().all(|c| *c == 1000), "{counts:?}");

        let c = d("{ choice = [[512, 128], [256, 64]] }").unwrap();
        assert_eq!(c.value_at(1.0), serde_json::json!([256, 64]));
        assert_eq!(c.coordinate_of(&serde_json::json!([512, 128])), Some(0.0));

        let space = Space {
            params: vec![("a".into(), c), ("b".into(), ep)],
        };
        assert_eq!(space.finite_size(), Some(16));
    }
}
