//! JSON cannot hold NaN or infinities (serde_json writes them as `null`, then
//! cannot read them back). Fields that may be non-finite use this module: finite
//! values stay numbers, others become the strings `"NaN"`, `"Infinity"`,
//! `"-Infinity"`, and `null` reads as NaN.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Num(f64),
    Text(String),
    Null(()),
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match Option::<Repr>::deserialize(d)? {
        Some(Repr::Num(v)) => Ok(v),
        Some(Repr::Text(t)) => match t.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(serde::de::Error::custom(format!("not a number: {other:?}"))),
        },
        Some(Repr::Null(())) | None => Ok(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct T {
        #[serde(with = "super")]
        v: f64,
    }

    #[test]
    fn non_finite_values_round_trip_through_json() {
        for v in [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = serde_json::to_string(&T { v }).unwrap();
            let back: T = serde_json::from_str(&s).unwrap();
            assert!(back.v == v || (v.is_nan() && back.v.is_nan()), "{s}");
        }
        let t: T = serde_json::from_str("{\"v\": null}").unwrap();
        assert!(t.v.is_nan());
    }
}
