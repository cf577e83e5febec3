//! Reading back what the reports write: serde_json writes a non-finite float as `null`, and in a
//! report such a value is an unbounded error or ratio (a relative error against an exact zero, the
//! SQNR of identical values), so a `null` where a number belongs reads as infinity.

use serde::{Deserialize, Deserializer};

/// Reads a JSON document of the given `format` (its `format` field) into its type; the error
/// names the file and what is wrong.
pub fn read_document<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    origin: &std::path::Path,
    format: &str,
    also: &[&str],
) -> Result<T, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("{}: not JSON: {e}", origin.display()))?;
    let given = value.get("format").and_then(|f| f.as_str());
    if !given.is_some_and(|g| g == format || also.contains(&g)) {
        return Err(format!("{}: not a {format} document", origin.display()));
    }
    serde_json::from_value(value)
        .map_err(|e| format!("{}: a malformed {format} document: {e}", origin.display()))
}

/// An `f64` field that may have been written as `null` (infinite).
pub fn inf_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// `(name, f64)` pairs whose numbers may have been written as `null` (infinite).
pub fn pairs_inf_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    Ok(Vec::<(String, Option<f64>)>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::INFINITY)))
        .collect())
}

/// An `f32` magnitude or maximum that may have been written as `null` (infinite).
pub fn f32_inf_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::INFINITY))
}

/// An `f32` minimum that may have been written as `null` (minus infinity).
pub fn f32_neg_inf_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NEG_INFINITY))
}

/// A map of `f32` magnitudes that may have been written as `null` (infinite).
pub fn map_f32_inf_if_null<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, f32>, D::Error> {
    Ok(
        std::collections::BTreeMap::<String, Option<f32>>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f32::INFINITY)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct R {
        #[serde(deserialize_with = "super::inf_if_null")]
        x: f64,
        #[serde(deserialize_with = "super::pairs_inf_if_null")]
        p: Vec<(String, f64)>,
        #[serde(deserialize_with = "super::f32_neg_inf_if_null")]
        lo: f32,
        #[serde(deserialize_with = "super::map_f32_inf_if_null")]
        m: std::collections::BTreeMap<String, f32>,
    }

    #[test]
    fn infinities_survive_a_round_trip() {
        let text = serde_json::to_string(&R {
            x: f64::INFINITY,
            p: vec![("a".into(), f64::INFINITY), ("b".into(), 2.0)],
            lo: f32::NEG_INFINITY,
            m: [("v".to_string(), f32::INFINITY)].into(),
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"x":null,"p":[["a",null],["b",2.0]],"lo":null,"m":{"v":null}}"#
        );
        let r: R = serde_json::from_str(&text).unwrap();
        assert_eq!(r.lo, f32::NEG_INFINITY);
        assert_eq!(r.m["v"], f32::INFINITY);
        assert_eq!(r.x, f64::INFINITY);
        assert_eq!(r.p[0].1, f64::INFINITY);
        assert_eq!(r.p[1].1, 2.0);
    }

    #[test]
    fn a_document_is_read_in_its_format_or_an_earlier_one_listed() {
        #[derive(serde::Deserialize)]
        struct D {
            x: u32,
        }
        let origin = std::path::Path::new("r.json");
        let read = |text: &str| super::read_document::<D>(text.as_bytes(), origin, "t/2", &["t/1"]);
        assert_eq!(read(r#"{"format": "t/2", "x": 2}"#).unwrap().x, 2);
        assert_eq!(read(r#"{"format": "t/1", "x": 1}"#).unwrap().x, 1);
        for other in [r#"{"format": "t/3", "x": 3}"#, r#"{"x": 0}"#] {
            let e = read(other).err().unwrap();
            assert!(e.contains("r.json: not a t/2 document"), "{e}");
        }
    }
}
