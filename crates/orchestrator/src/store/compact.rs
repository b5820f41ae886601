//! A waiting trial stored small: its configuration as the difference from a
//! base that the sweep's trials share (migration 0006). [`diff`] makes the
//! difference when a grid is recorded, [`apply`] restores the whole
//! configuration when the trial is claimed; [`flatten_params`] gives the
//! `trial_params` rows of a configuration.

use serde_json::{Map, Value as Json};

/// A configuration that a sweep's trials are stored against: its content hash
/// (the row's identity within the sweep) and its JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigBase {
    pub hash: String,
    pub json: String,
}

/// The settings where `full` differs from `base`, as a nested JSON object:
/// objects with the same keys are compared key by key, anything else (a
/// number, a list, `null`, an object of other keys) is one value that
/// replaces the base's whole. Unlike an RFC 7396 merge patch, `null` is a value
/// (a setting that is unset), never a removal. `None` when `full` cannot be
/// written so (it is not an object, it lacks a key of the base, or it holds an
/// object with some but not all of the base's keys there); the caller then
/// stores `full` whole.
pub fn diff(full: &Json, base: &Json) -> Option<Json> {
    let (Json::Object(f), Json::Object(b)) = (full, base) else {
        return None;
    };
    if !same_keys(f, b) {
        return None;
    }
    diff_objects(f, b).map(Json::Object)
}

fn same_keys(a: &Map<String, Json>, b: &Map<String, Json>) -> bool {
    a.len() == b.len() && a.keys().all(|k| b.contains_key(k))
}

fn diff_objects(f: &Map<String, Json>, b: &Map<String, Json>) -> Option<Map<String, Json>> {
    let mut out = Map::new();
    for (k, fv) in f {
        let bv = &b[k];
        match (fv, bv) {
            (Json::Object(fo), Json::Object(bo)) if same_keys(fo, bo) => {
                let d = diff_objects(fo, bo)?;
                if !d.is_empty() {
                    out.insert(k.clone(), Json::Object(d));
                }
            }
            _ if fv == bv => {}
            // an object of the base's keys but not all of them would be
            // merged into the base's by [`apply`]: not expressible
            (Json::Object(fo), Json::Object(bo)) if fo.keys().all(|k| bo.contains_key(k)) => {
                return None;
            }
            _ => {
                out.insert(k.clone(), fv.clone());
            }
        }
    }
    Some(out)
}

/// The whole configuration from its base and [`diff`]'s difference: where both
/// hold an object whose keys the base has, the difference is applied inside
/// it; any other value replaces the base's.
pub fn apply(base: &Json, delta: &Json) -> Json {
    match (base, delta) {
        (Json::Object(b), Json::Object(d)) if d.keys().all(|k| b.contains_key(k)) => {
            let mut out = b.clone();
            for (k, dv) in d {
                let merged = apply(&b[k], dv);
                out.insert(k.clone(), merged);
            }
            Json::Object(out)
        }
        _ => delta.clone(),
    }
}

/// The difference of `full` from `base` as `trials.config_json` stores it;
/// `None` when it cannot be written so ([`apply`] gives `full` back exactly
/// from any difference [`diff`] makes: objects are descended into only where
/// both have the same keys, and a replacing object that `apply` would merge is
/// refused).
pub fn stored_difference(full: &Json, base: &Json) -> Option<String> {
    let d = diff(full, base)?;
    debug_assert_eq!(apply(base, &d), *full);
    Some(d.to_string())
}

/// One setting as a `trial_params` row: (dotted name, kind, text, number).
pub type Leaf = (String, String, String, Option<f64>);

/// A configuration's settings as `trial_params` rows, objects flattened to
/// dotted names.
pub fn flatten_params(prefix: &str, v: &Json, out: &mut Vec<Leaf>) {
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_params(&p, child, out);
            }
        }
        Json::Null => out.push((prefix.into(), "none".into(), "none".into(), None)),
        Json::Bool(b) => out.push((
            prefix.into(),
            "bool".into(),
            b.to_string(),
            Some(f64::from(u8::from(*b))),
        )),
        Json::Number(n) => {
            let kind = if n.is_f64() { "float" } else { "int" };
            out.push((prefix.into(), kind.into(), n.to_string(), n.as_f64()));
        }
        Json::String(s) => out.push((prefix.into(), "text".into(), s.clone(), None)),
        Json::Array(_) => out.push((prefix.into(), "list".into(), v.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Json {
        json!({
            "model": {"arch": "mlp", "hidden": [64], "dropout": 0.0},
            "train": {"seed": 1, "learning_rate": 0.001, "early_stopping": {"patience": 5, "metric": "val.loss"}},
            "data": {"labels": null, "augment": []}
        })
    }

    #[test]
    fn a_trial_is_its_difference_and_comes_back_whole() {
        let b = base();
        let mut full = b.clone();
        full["model"]["dropout"] = json!(0.5);
        full["train"]["seed"] = json!(3);
        full["train"]["early_stopping"] = Json::Null;
        full["data"]["augment"] = json!(["hflip"]);
        let d = diff(&full, &b).unwrap();
        assert_eq!(
            d,
            json!({"model": {"dropout": 0.5}, "train": {"seed": 3, "early_stopping": null}, "data": {"augment": ["hflip"]}})
        );
        assert_eq!(apply(&b, &d), full);
        assert_eq!(stored_difference(&full, &b).unwrap(), d.to_string());
        // the base itself is the empty difference
        assert_eq!(diff(&b, &b).unwrap(), json!({}));
        assert_eq!(apply(&b, &json!({})), b);
    }

    #[test]
    fn an_object_where_the_base_has_none_is_one_value() {
        let mut b = base();
        b["train"]["early_stopping"] = Json::Null;
        let mut full = base();
        full["train"]["learning_rate"] = json!(0.01);
        let d = diff(&full, &b).unwrap();
        assert_eq!(
            d["train"]["early_stopping"],
            json!({"patience": 5, "metric": "val.loss"})
        );
        assert_eq!(apply(&b, &d), full);
    }

    #[test]
    fn shapes_the_difference_cannot_express_are_stored_whole() {
        let b = base();
        // an object with fewer keys than the base's would be merged into it
        let mut full = b.clone();
        full["train"]["early_stopping"] = json!({"patience": 9});
        assert_eq!(diff(&full, &b), None);
        assert_eq!(stored_difference(&full, &b), None);
        // (restored from a difference that replaced it, it would come back
        // merged with the base's other keys)
        let merged = apply(&b, &json!({"train": {"early_stopping": {"patience": 9}}}));
        assert_ne!(merged, full);
        assert_eq!(
            merged["train"]["early_stopping"]["metric"],
            json!("val.loss")
        );
        // one with other keys replaces the base's whole
        let mut other = b.clone();
        other["train"]["early_stopping"] = json!({"rounds": 2, "patience": 3});
        let d = diff(&other, &b).unwrap();
        assert_eq!(apply(&b, &d), other);
        // a missing top-level key, or not an object at all
        let mut less = b.clone();
        less.as_object_mut().unwrap().remove("data");
        assert_eq!(diff(&less, &b), None);
        assert_eq!(diff(&json!([1]), &b), None);
    }

    #[test]
    fn settings_flatten_to_dotted_rows() {
        let mut rows = Vec::new();
        flatten_params("", &base(), &mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert!(names.contains(&"train.early_stopping.patience"));
        let lab = rows.iter().find(|r| r.0 == "data.labels").unwrap();
        assert_eq!(
            (lab.1.as_str(), lab.2.as_str(), lab.3),
            ("none", "none", None)
        );
        let hid = rows.iter().find(|r| r.0 == "model.hidden").unwrap();
        assert_eq!((hid.1.as_str(), hid.2.as_str()), ("list", "[64]"));
        let lr = rows.iter().find(|r| r.0 == "train.learning_rate").unwrap();
        assert_eq!((lr.1.as_str(), lr.3), ("float", Some(0.001)));
    }
}
