//! Tensors as the Open Inference Protocol carries them: a datatype name (`FP32`, `INT64`...), a
//! shape, and the data as JSON (flat or nested arrays), typed gRPC contents, or raw little-endian
//! bytes (the binary extension, `raw_input_contents`); `BYTES` elements are 4-byte
//! length-prefixed strings in raw form.

use tract_onnx::prelude::{DatumType, Tensor, f16, tract_ndarray};

/// A request the client must fix (HTTP 400, gRPC INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadTensor(pub String);

fn bad(msg: impl Into<String>) -> BadTensor {
    BadTensor(msg.into())
}

/// The protocol's name of a tract element type.
pub fn datatype_name(dt: DatumType) -> Option<&'static str> {
    Some(match dt {
        DatumType::Bool => "BOOL",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::I8 => "INT8",
        DatumType::I16 => "INT16",
        DatumType::I32 => "INT32",
        DatumType::I64 => "INT64",
        DatumType::F16 => "FP16",
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        DatumType::String => "BYTES",
        _ => return None,
    })
}

/// The protocol's name of an ONNX element type.
pub fn onnx_datatype_name(dt: crate::onnx::DataType) -> &'static str {
    use crate::onnx::DataType as D;
    match dt {
        D::Bool => "BOOL",
        D::Uint8 => "UINT8",
        D::Uint16 => "UINT16",
        D::Uint32 => "UINT32",
        D::Uint64 => "UINT64",
        D::Int8 => "INT8",
        D::Int16 => "INT16",
        D::Int32 => "INT32",
        D::Int64 => "INT64",
        D::Float16 => "FP16",
        D::Float => "FP32",
        D::Double => "FP64",
        D::String => "BYTES",
        D::Bfloat16 => "BF16",
        _ => "UNSUPPORTED",
    }
}

/// The tract element type of a protocol datatype name.
pub fn datum_type(name: &str) -> Result<DatumType, BadTensor> {
    Ok(match name {
        "BOOL" => DatumType::Bool,
        "UINT8" => DatumType::U8,
        "UINT16" => DatumType::U16,
        "UINT32" => DatumType::U32,
        "UINT64" => DatumType::U64,
        "INT8" => DatumType::I8,
        "INT16" => DatumType::I16,
        "INT32" => DatumType::I32,
        "INT64" => DatumType::I64,
        "FP16" => DatumType::F16,
        "FP32" => DatumType::F32,
        "FP64" => DatumType::F64,
        "BYTES" => DatumType::String,
        other => return Err(bad(format!("unsupported datatype '{other}'"))),
    })
}

/// Checks a shape and returns its element count.
pub fn element_count(shape: &[i64]) -> Result<usize, BadTensor> {
    if shape.len() > MAX_RANK {
        return Err(bad(format!(
            "a shape of rank {} (at most {MAX_RANK})",
            shape.len()
        )));
    }
    let mut n: usize = 1;
    // the product of the dims with zeros counted as ones must fit too: strides are computed
    // from it even for an empty tensor
    let mut span: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension in {shape:?}")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
        span = span
            .checked_mul(d.max(1))
            .filter(|&s| s <= isize::MAX as usize)
            .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    }
    Ok(n)
}

/// The highest rank a request may use (ONNX models rarely pass 8).
pub const MAX_RANK: usize = 32;

fn dims(shape: &[i64]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

macro_rules! from_le {
    ($t:ty, $bytes:expr, $shape:expr) => {{
        const W: usize = std::mem::size_of::<$t>();
        let v: Vec<$t> = $bytes
            .chunks_exact(W)
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of W bytes")))
            .collect();
        Tensor::from_shape(&$shape, &v).map_err(|e| bad(e.to_string()))
    }};
}

/// A tensor from raw little-endian bytes (row-major), checking the byte count.
pub fn from_raw(datatype: &str, shape: &[i64], bytes: &[u8]) -> Result<Tensor, BadTensor> {
    let dt = datum_type(datatype)?;
    let n = element_count(shape)?;
    let shape = dims(shape);
    if dt == DatumType::String {
        // every element takes at least its 4-byte length prefix
        if n > bytes.len() / 4 {
            return Err(bad(format!(
                "{} bytes of BYTES data cannot hold the {n} elements of shape {shape:?}",
                bytes.len()
            )));
        }
        let mut out = Vec::with_capacity(n);
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("BYTES data ends inside a length prefix"))?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(bad("BYTES data ends inside an element"));
            }
            let text = std::str::from_utf8(&tail[..len]).map_err(|_| {
                bad(format!(
                    "BYTES element {} is not UTF-8 text (binary BYTES are not supported)",
                    out.len()
                ))
            })?;
            out.push(text.to_string());
            rest = &tail[len..];
        }
        if out.len() != n {
            return Err(bad(format!(
                "BYTES data holds {} elements, the shape {:?} needs {n}",
                out.len(),
                shape
            )));
        }
        return tract_ndarray::ArrayD::from_shape_vec(shape, out)
            .map(Tensor::from)
            .map_err(|e| bad(e.to_string()));
    }
    let want = n
        .checked_mul(dt.size_of())
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    if bytes.len() != want {
        return Err(bad(format!(
            "{} bytes of {datatype} data for shape {shape:?}: {want} expected",
            bytes.len()
        )));
    }
    match dt {
        DatumType::Bool => {
            let v: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
            Tensor::from_shape(&shape, &v).map_err(|e| bad(e.to_string()))
        }
        DatumType::U8 => from_le!(u8, bytes, shape),
        DatumType::U16 => from_le!(u16, bytes, shape),
        DatumType::U32 => from_le!(u32, bytes, shape),
        DatumType::U64 => from_le!(u64, bytes, shape),
        DatumType::I8 => from_le!(i8, bytes, shape),
        DatumType::I16 => from_le!(i16, bytes, shape),
        DatumType::I32 => from_le!(i32, bytes, shape),
        DatumType::I64 => from_le!(i64, bytes, shape),
        DatumType::F16 => {
            let v: Vec<f16> = bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            Tensor::from_shape(&shape, &v).map_err(|e| bad(e.to_string()))
        }
        DatumType::F32 => from_le!(f32, bytes, shape),
        DatumType::F64 => from_le!(f64, bytes, shape),
        _ => Err(bad(format!("unsupported datatype '{datatype}'"))),
    }
}

/// The raw little-endian bytes of a tensor (BYTES: length-prefixed elements).
pub fn to_raw(t: &Tensor) -> Result<Vec<u8>, BadTensor> {
    let dt = t.datum_type();
    if dt == DatumType::String {
        let view = t
            .to_plain_array_view::<String>()
            .map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for s in view.iter() {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        return Ok(out);
    }
    if datatype_name(dt).is_none() {
        return Err(bad(format!("output type {dt:?} has no protocol datatype")));
    }
    // tract stores plain values in the machine's order; the protocol's is little-endian
    if cfg!(target_endian = "little") {
        return Ok(t.as_bytes().to_vec());
    }
    Err(bad("raw tensors need a little-endian machine"))
}

/// The leaves of a JSON `data` field (flat or nested arrays, row-major), read straight from the
/// request into one flat vector of one kind: numbers take 8 bytes each, where a parsed JSON
/// document would take tens per element.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonData {
    Empty,
    Bools(Vec<bool>),
    Ints(Vec<i64>),
    /// Integers once one is past i64 (a UINT64 above 2^63 - 1).
    Wide(Vec<i128>),
    /// Numbers with a fraction or an exponent (integers seen before the first are converted).
    Floats(Vec<f64>),
    Strings(Vec<String>),
}

impl JsonData {
    fn len(&self) -> usize {
        match self {
            JsonData::Empty => 0,
            JsonData::Bools(v) => v.len(),
            JsonData::Ints(v) => v.len(),
            JsonData::Wide(v) => v.len(),
            JsonData::Floats(v) => v.len(),
            JsonData::Strings(v) => v.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            JsonData::Empty => "nothing",
            JsonData::Bools(_) => "booleans",
            JsonData::Ints(_) | JsonData::Wide(_) => "integers",
            JsonData::Floats(_) => "numbers",
            JsonData::Strings(_) => "strings",
        }
    }

    fn push_int(&mut self, v: i128) -> Result<(), String> {
        let narrow = i64::try_from(v);
        match self {
            JsonData::Empty => {
                *self = narrow.map_or(JsonData::Wide(vec![v]), |n| JsonData::Ints(vec![n]))
            }
            JsonData::Ints(x) => match narrow {
                Ok(n) => x.push(n),
                Err(_) => *self = JsonData::Wide(widened(x, i128::from, v)),
            },
            JsonData::Wide(x) => x.push(v),
            JsonData::Floats(x) => x.push(v as f64),
            other => return Err(format!("a number among {}", other.kind())),
        }
        Ok(())
    }

    fn push_float(&mut self, v: f64) -> Result<(), String> {
        match self {
            JsonData::Empty => *self = JsonData::Floats(vec![v]),
            JsonData::Ints(x) => *self = JsonData::Floats(widened(x, |i| i as f64, v)),
            JsonData::Wide(x) => *self = JsonData::Floats(widened(x, |i| i as f64, v)),
            JsonData::Floats(x) => x.push(v),
            other => return Err(format!("a number among {}", other.kind())),
        }
        Ok(())
    }

    fn push_bool(&mut self, v: bool) -> Result<(), String> {
        match self {
            JsonData::Empty => *self = JsonData::Bools(vec![v]),
            JsonData::Bools(x) => x.push(v),
            other => return Err(format!("a boolean among {}", other.kind())),
        }
        Ok(())
    }

    fn push_string(&mut self, v: String) -> Result<(), String> {
        match self {
            JsonData::Empty => *self = JsonData::Strings(vec![v]),
            JsonData::Strings(x) => x.push(v),
            other => return Err(format!("a string among {}", other.kind())),
        }
        Ok(())
    }
}

/// `values` converted to a wider kind, then `last`.
fn widened<S: Copy, T>(values: &[S], conv: impl Fn(S) -> T, last: T) -> Vec<T> {
    values
        .iter()
        .map(|&x| conv(x))
        .chain(std::iter::once(last))
        .collect()
}

impl<'de> serde::Deserialize<'de> for JsonData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut data = JsonData::Empty;
        d.deserialize_any(Leaves(&mut data))?;
        Ok(data)
    }
}

/// Adds the leaves of one JSON value to a [`JsonData`]; arrays recurse (serde_json bounds the
/// depth).
struct Leaves<'a>(&'a mut JsonData);

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, booleans or strings, in flat or nested arrays")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push_bool(v).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_int(v.into()).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push_int(v.into()).map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_float(v).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_string(v.to_string()).map_err(E::custom)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.0.push_string(v).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Leaves(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Values narrowed to an element type, each checked; the first that does not fit is named (JSON
/// integers, gRPC's typed contents).
pub fn narrowed<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    values: &[S],
    what: &str,
) -> Result<Vec<T>, BadTensor> {
    values
        .iter()
        .map(|&x| T::try_from(x).map_err(|_| bad(format!("{x} is not {what}"))))
        .collect()
}

/// Integers as any integer type, range-checked.
fn ints<T: TryFrom<i64> + TryFrom<i128>>(data: &JsonData, what: &str) -> Result<Vec<T>, BadTensor> {
    match data {
        JsonData::Ints(v) => narrowed(v, what),
        JsonData::Wide(v) => narrowed(v, what),
        other => Err(bad(format!(
            "{} given; each value must be {what}",
            other.kind()
        ))),
    }
}

/// Numbers (integers included) as a float type.
fn floats<T>(data: &JsonData, conv: impl Fn(f64) -> T) -> Result<Vec<T>, BadTensor> {
    match data {
        JsonData::Ints(v) => Ok(v.iter().map(|&x| conv(x as f64)).collect()),
        JsonData::Wide(v) => Ok(v.iter().map(|&x| conv(x as f64)).collect()),
        JsonData::Floats(v) => Ok(v.iter().map(|&x| conv(x)).collect()),
        other => Err(bad(format!(
            "{} given; the values must be numbers",
            other.kind()
        ))),
    }
}

/// A tensor from JSON `data` (flat or nested, row-major).
pub fn from_json(datatype: &str, shape: &[i64], data: &JsonData) -> Result<Tensor, BadTensor> {
    let dt = datum_type(datatype)?;
    let n = element_count(shape)?;
    if data.len() != n {
        return Err(bad(format!(
            "{} values for shape {shape:?}: {n} expected",
            data.len()
        )));
    }
    let shape = dims(shape);
    fn tensor<T: tract_onnx::prelude::Datum>(
        shape: &[usize],
        v: Result<Vec<T>, BadTensor>,
    ) -> Result<Tensor, BadTensor> {
        tract_ndarray::ArrayD::from_shape_vec(shape, v?)
            .map(Tensor::from)
            .map_err(|e| bad(e.to_string()))
    }
    match (dt, data) {
        // an empty tensor has no leaves to tell their kind
        (_, JsonData::Empty) => Tensor::zero_dt(dt, &shape).map_err(|e| bad(e.to_string())),
        (DatumType::Bool, JsonData::Bools(v)) => tensor(&shape, Ok(v.clone())),
        (DatumType::Bool, other) => Err(bad(format!(
            "{} given; the values must be booleans",
            other.kind()
        ))),
        (DatumType::U8, d) => tensor::<u8>(&shape, ints(d, "a UINT8")),
        (DatumType::U16, d) => tensor::<u16>(&shape, ints(d, "a UINT16")),
        (DatumType::U32, d) => tensor::<u32>(&shape, ints(d, "a UINT32")),
        (DatumType::U64, d) => tensor::<u64>(&shape, ints(d, "a UINT64")),
        (DatumType::I8, d) => tensor::<i8>(&shape, ints(d, "an INT8")),
        (DatumType::I16, d) => tensor::<i16>(&shape, ints(d, "an INT16")),
        (DatumType::I32, d) => tensor::<i32>(&shape, ints(d, "an INT32")),
        (DatumType::I64, d) => tensor::<i64>(&shape, ints(d, "an INT64")),
        (DatumType::F16, d) => tensor(&shape, floats(d, f16::from_f64)),
        (DatumType::F32, d) => tensor(&shape, floats(d, |x| x as f32)),
        (DatumType::F64, d) => tensor(&shape, floats(d, |x| x)),
        (DatumType::String, JsonData::Strings(v)) => tensor(&shape, Ok(v.clone())),
        (DatumType::String, other) => Err(bad(format!(
            "{} given; the values must be strings",
            other.kind()
        ))),
        _ => Err(bad(format!("unsupported datatype '{datatype}'"))),
    }
}

/// A tensor's values as a flat JSON array, written element by element as the response is
/// serialized (non-finite floats, which JSON cannot hold, as null).
pub struct JsonValues<'a>(pub &'a Tensor);

impl serde::Serialize for JsonValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        fn each<T: tract_onnx::prelude::Datum, S: serde::Serializer>(
            t: &Tensor,
            s: S,
            f: impl Fn(&T, &mut S::SerializeSeq) -> Result<(), S::Error>,
        ) -> Result<S::Ok, S::Error> {
            let view = t.to_plain_array_view::<T>().map_err(S::Error::custom)?;
            let mut seq = s.serialize_seq(Some(view.len()))?;
            for v in view.iter() {
                f(v, &mut seq)?;
            }
            seq.end()
        }
        fn float<Q: SerializeSeq>(seq: &mut Q, v: f64) -> Result<(), Q::Error> {
            if v.is_finite() {
                seq.serialize_element(&v)
            } else {
                seq.serialize_element(&())
            }
        }
        let t = self.0;
        match t.datum_type() {
            DatumType::Bool => each::<bool, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::U8 => each::<u8, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::U16 => each::<u16, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::U32 => each::<u32, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::U64 => each::<u64, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::I8 => each::<i8, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::I16 => each::<i16, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::I32 => each::<i32, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::I64 => each::<i64, S>(t, s, |v, q| q.serialize_element(v)),
            DatumType::F16 => each::<f16, S>(t, s, |v, q| float(q, v.to_f64())),
            DatumType::F32 => each::<f32, S>(t, s, |v, q| {
                if v.is_finite() {
                    q.serialize_element(v)
                } else {
                    q.serialize_element(&())
                }
            }),
            DatumType::F64 => each::<f64, S>(t, s, |v, q| float(q, *v)),
            DatumType::String => each::<String, S>(t, s, |v, q| q.serialize_element(v)),
            other => Err(S::Error::custom(format!(
                "{other:?} has no JSON form in the protocol"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> JsonData {
        serde_json::from_str(text).unwrap()
    }

    fn to_json(t: &Tensor) -> serde_json::Value {
        serde_json::to_value(JsonValues(t)).unwrap()
    }

    #[test]
    fn raw_and_json_round_trips_agree() {
        let t = from_json("FP32", &[2, 2], &data("[[1.0, 2.0], [3.5, -4]]")).unwrap();
        let raw = to_raw(&t).unwrap();
        assert_eq!(raw.len(), 16);
        let back = from_raw("FP32", &[2, 2], &raw).unwrap();
        assert_eq!(back, t);
        assert_eq!(to_json(&back), serde_json::json!([1.0, 2.0, 3.5, -4.0]));
        let s = from_raw("BYTES", &[2], b"\x02\0\0\0hi\x00\0\0\0").unwrap();
        assert_eq!(to_raw(&s).unwrap(), b"\x02\0\0\0hi\x00\0\0\0");
        let h = from_json("FP16", &[1], &data("[0.5]")).unwrap();
        assert_eq!(to_raw(&h).unwrap(), f16::from_f32(0.5).to_le_bytes());
        // integers keep every bit, u64 past i64 included
        let big = from_json("UINT64", &[2], &data("[18446744073709551615, 0]")).unwrap();
        assert_eq!(to_json(&big), serde_json::json!([u64::MAX, 0u64]));
        let later = from_json("UINT64", &[2], &data("[1, 18446744073709551615]")).unwrap();
        assert_eq!(to_json(&later), serde_json::json!([1u64, u64::MAX]));
        assert!(from_json("INT64", &[2], &data("[1, 18446744073709551615]")).is_err());
        assert!(from_json("UINT64", &[2], &data("[-1, 18446744073709551615]")).is_err());
        let neg = from_json("INT64", &[1], &data("[-9223372036854775808]")).unwrap();
        assert_eq!(to_json(&neg), serde_json::json!([i64::MIN]));
        // a scalar, an empty tensor, booleans and strings
        assert_eq!(
            to_json(&from_json("INT32", &[], &data("7")).unwrap()),
            serde_json::json!([7])
        );
        assert_eq!(
            from_json("FP32", &[0, 3], &data("[]")).unwrap().shape(),
            &[0, 3]
        );
        let b = from_json("BOOL", &[2], &data("[true, false]")).unwrap();
        assert_eq!(to_json(&b), serde_json::json!([true, false]));
        let s = from_json("BYTES", &[1, 2], &data(r#"[["a", "b"]]"#)).unwrap();
        assert_eq!(to_json(&s), serde_json::json!(["a", "b"]));
        // a non-finite output is null, which JSON can hold
        let inf = Tensor::from(tract_ndarray::arr1(&[f32::INFINITY, 1.5]));
        assert_eq!(to_json(&inf), serde_json::json!([null, 1.5]));
    }

    #[test]
    fn malformed_data_is_refused() {
        assert!(from_raw("FP32", &[3], &[0u8; 8]).is_err());
        assert!(from_raw("FP32", &[-1], &[]).is_err());
        assert!(from_raw("FP32", &[i64::MAX, i64::MAX], &[]).is_err());
        assert!(from_raw("BYTES", &[1], b"\x09\0\0\0hi").is_err());
        assert!(from_json("INT8", &[1], &data("[300]")).is_err());
        assert!(from_json("INT32", &[1], &data("[1.5]")).is_err());
        assert!(from_json("UINT8", &[1], &data("[-1]")).is_err());
        assert!(from_json("FP32", &[2], &data("[1.0]")).is_err());
        assert!(from_json("FP32", &[1], &data(r#"["x"]"#)).is_err());
        assert!(from_json("BOOL", &[1], &data("[1]")).is_err());
        // mixed kinds, null and objects do not parse at all
        for text in [r#"[1, "x"]"#, "[true, 1]", "[null]", r#"[{"a": 1}]"#] {
            assert!(serde_json::from_str::<JsonData>(text).is_err(), "{text}");
        }
        assert!(datum_type("COMPLEX").is_err());
        // element counts from the client never size an allocation before the data is checked
        assert!(from_raw("BYTES", &[1 << 60], &[]).is_err());
        assert!(from_raw("BYTES", &[1 << 33], b"\x01\0\0\0a").is_err());
        assert!(from_raw("FP64", &[1 << 62, 4], &[]).is_err());
        assert!(from_raw("FP32", &[0, 1 << 40, 1 << 40], &[]).is_err());
        assert!(from_raw("BYTES", &[1], b"\x01\0\0\0\xff").is_err());
        assert!(element_count(&[1; 33]).is_err());
    }
}
