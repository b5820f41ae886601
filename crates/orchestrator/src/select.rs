//! Choosing trials by the values of their settings, as `--where` and
//! `--baseline` do: `PARAM=VALUE` pairs whose values are written in TOML, as in
//! the sweep spec (`model.hidden=[512, 128]`, `data.augment=[]`,
//! `train.learning_rate=1e-3`, `model.arch=cnn`), compared with the stored
//! values as values, not as text: `1e-3` matches a stored `0.001`, `512`
//! matches `512.0`, and a list of names (augmentations) matches in any order.

use crate::error::{Error, Result};
use serde_json::Value;

/// One `PARAM=VALUE` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub param: String,
    pub value: Value,
    /// The value as the user wrote it (for messages).
    pub text: String,
}

impl Condition {
    /// Whether a stored value (a trial's setting as text, as in
    /// `trial_params.value_text`) is this condition's value.
    pub fn matches(&self, stored: &str) -> bool {
        same_value(&stored_value(stored), &self.value)
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.param, self.text)
    }
}

/// `PARAM=VALUE[,PARAM=VALUE...]`: commas inside brackets, braces or quotes
/// belong to the value. `what` names the option in errors (`--where`).
pub fn parse_conditions(s: &str, what: &str) -> Result<Vec<Condition>> {
    split_top_level(s)
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return Err(Error::Other(format!(
                    "{what} `{}` is not PARAM=VALUE",
                    p.trim()
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(Error::Other(format!(
                    "{what} `{}` names no parameter",
                    p.trim()
                )));
            }
            Ok(Condition {
                param: k.to_string(),
                value: typed_value(v).map_err(|e| {
                    Error::Other(format!("{what} {k}={v}: the value is not TOML: {e}"))
                })?,
                text: v.to_string(),
            })
        })
        .collect()
}

/// Splits on commas that are not inside `[]`, `{}` or quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth <= 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// A value written on the command line: TOML, or a bare word taken as text
/// (`cnn`, `kaiming_normal`).
fn typed_value(text: &str) -> std::result::Result<Value, String> {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => {
            let v = t.remove("v").expect("parsed key");
            serde_json::to_value(v).map_err(|e| e.to_string())
        }
        Err(e) => {
            let bare = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.+:/".contains(c));
            if bare {
                Ok(Value::String(text.to_string()))
            } else {
                Err(e.message().to_string())
            }
        }
    }
}

/// A stored setting: JSON when it parses (numbers, booleans, lists), text otherwise.
pub fn stored_value(stored: &str) -> Value {
    serde_json::from_str(stored).unwrap_or_else(|_| Value::String(stored.to_string()))
}

/// Equality of values: numbers within a relative 1e-9 (so 1e-3 and 0.001,
/// 512 and 512.0 are one value), lists element by element, except lists of
/// names, which are sets (the order of augmentations does not matter).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return false;
            }
            if x.iter().chain(y).all(Value::is_string) {
                let (mut x, mut y): (Vec<&str>, Vec<&str>) = (
                    x.iter().filter_map(Value::as_str).collect(),
                    y.iter().filter_map(Value::as_str).collect(),
                );
                x.sort_unstable();
                y.sort_unstable();
                return x == y;
            }
            x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Condition {
        let mut c = parse_conditions(s, "--where").unwrap();
        assert_eq!(c.len(), 1, "{s}: {c:?}");
        c.remove(0)
    }

    #[test]
    fn lists_keep_their_commas() {
        let c = parse_conditions(
            "model.hidden=[512, 128],data.augment=[\"hflip\", \"vflip\"], model.arch=cnn",
            "--where",
        )
        .unwrap();
        let shown: Vec<String> = c.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "model.hidden=[512, 128]",
                "data.augment=[\"hflip\", \"vflip\"]",
                "model.arch=cnn"
            ]
        );
    }

    #[test]
    fn values_compare_as_values_not_text() {
        // the stored text is what trial_params.value_text holds
        assert!(one("train.learning_rate=1e-3").matches("0.001"));
        assert!(!one("train.learning_rate=1e-3").matches("0.0011"));
        assert!(one("model.hidden=[512, 128]").matches("[512,128]"));
        assert!(!one("model.hidden=[512, 128]").matches("[128,512]"));
        assert!(!one("model.hidden=[512]").matches("[512,128]"));
        assert!(one("data.augment=[]").matches("[]"));
        assert!(!one("data.augment=[]").matches("[\"hflip\"]"));
        assert!(one("data.augment=[\"vflip\", \"hflip\"]").matches("[\"hflip\",\"vflip\"]"));
        assert!(one("model.arch=cnn").matches("cnn"));
        assert!(one("model.arch=\"cnn\"").matches("cnn"));
        assert!(!one("model.arch=cnn").matches("mlp"));
        assert!(one("model.batch_norm=true").matches("true"));
        assert!(!one("model.batch_norm=true").matches("false"));
        assert!(one("model.dropout=0").matches("0.0"));
        assert!(one("train.epochs=30").matches("30"));
    }

    #[test]
    fn malformed_conditions_name_the_option_and_the_text() {
        let e = parse_conditions("model.dropout", "--baseline")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--baseline `model.dropout` is not PARAM=VALUE"),
            "{e}"
        );
        let e = parse_conditions("model.hidden=[512,", "--where")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--where model.hidden=[512,: the value is not TOML"),
            "{e}"
        );
        let e = parse_conditions("=3", "--where").unwrap_err().to_string();
        assert!(e.contains("names no parameter"), "{e}");
    }
}
