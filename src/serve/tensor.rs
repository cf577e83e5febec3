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

/// Flattens nested JSON arrays (row-major) into their leaves.
fn leaves<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        other => out.push(other),
    }
}

macro_rules! from_json_numbers {
    ($t:ty, $values:expr, $shape:expr, $conv:expr, $what:expr) => {{
        let v: Result<Vec<$t>, BadTensor> = $values
            .iter()
            .map(|x| $conv(x).ok_or_else(|| bad(format!("{} is not {}", x, $what))))
            .collect();
        Tensor::from_shape(&$shape, &v?).map_err(|e| bad(e.to_string()))
    }};
}

/// A tensor from JSON `data` (flat or nested, row-major).
pub fn from_json(
    datatype: &str,
    shape: &[i64],
    data: &serde_json::Value,
) -> Result<Tensor, BadTensor> {
    let dt = datum_type(datatype)?;
    let n = element_count(shape)?;
    let mut values = Vec::new();
    leaves(data, &mut values);
    if values.len() != n {
        return Err(bad(format!(
            "{} values for shape {shape:?}: {n} expected",
            values.len()
        )));
    }
    let shape = dims(shape);
    let int = |x: &serde_json::Value| x.as_i64();
    let uint = |x: &serde_json::Value| x.as_u64();
    let float = |x: &serde_json::Value| x.as_f64();
    match dt {
        DatumType::Bool => from_json_numbers!(
            bool,
            values,
            shape,
            |x: &serde_json::Value| x.as_bool(),
            "a boolean"
        ),
        DatumType::U8 => from_json_numbers!(
            u8,
            values,
            shape,
            |x| uint(x).and_then(|v| u8::try_from(v).ok()),
            "a UINT8"
        ),
        DatumType::U16 => from_json_numbers!(
            u16,
            values,
            shape,
            |x| uint(x).and_then(|v| u16::try_from(v).ok()),
            "a UINT16"
        ),
        DatumType::U32 => from_json_numbers!(
            u32,
            values,
            shape,
            |x| uint(x).and_then(|v| u32::try_from(v).ok()),
            "a UINT32"
        ),
        DatumType::U64 => from_json_numbers!(u64, values, shape, uint, "a UINT64"),
        DatumType::I8 => from_json_numbers!(
            i8,
            values,
            shape,
            |x| int(x).and_then(|v| i8::try_from(v).ok()),
            "an INT8"
        ),
        DatumType::I16 => from_json_numbers!(
            i16,
            values,
            shape,
            |x| int(x).and_then(|v| i16::try_from(v).ok()),
            "an INT16"
        ),
        DatumType::I32 => from_json_numbers!(
            i32,
            values,
            shape,
            |x| int(x).and_then(|v| i32::try_from(v).ok()),
            "an INT32"
        ),
        DatumType::I64 => from_json_numbers!(i64, values, shape, int, "an INT64"),
        DatumType::F16 => from_json_numbers!(
            f16,
            values,
            shape,
            |x| float(x).map(f16::from_f64),
            "a number"
        ),
        DatumType::F32 => from_json_numbers!(
            f32,
            values,
            shape,
            |x| float(x).map(|v| v as f32),
            "a number"
        ),
        DatumType::F64 => from_json_numbers!(f64, values, shape, float, "a number"),
        DatumType::String => {
            let v: Result<Vec<String>, BadTensor> = values
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("{x} is not a string")))
                })
                .collect();
            tract_ndarray::ArrayD::from_shape_vec(shape, v?)
                .map(Tensor::from)
                .map_err(|e| bad(e.to_string()))
        }
        _ => Err(bad(format!("unsupported datatype '{datatype}'"))),
    }
}

/// A tensor's values as a flat JSON array (non-finite floats, which JSON cannot hold, as null).
pub fn to_json(t: &Tensor) -> Result<serde_json::Value, BadTensor> {
    use serde_json::Value;
    fn arr<T: tract_onnx::prelude::Datum>(
        t: &Tensor,
        f: impl Fn(&T) -> Value,
    ) -> Result<Value, BadTensor> {
        let view = t
            .to_plain_array_view::<T>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Value::Array(view.iter().map(f).collect()))
    }
    let num = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    match t.datum_type() {
        DatumType::Bool => arr::<bool>(t, |v| Value::Bool(*v)),
        DatumType::U8 => arr::<u8>(t, |v| Value::from(*v)),
        DatumType::U16 => arr::<u16>(t, |v| Value::from(*v)),
        DatumType::U32 => arr::<u32>(t, |v| Value::from(*v)),
        DatumType::U64 => arr::<u64>(t, |v| Value::from(*v)),
        DatumType::I8 => arr::<i8>(t, |v| Value::from(*v)),
        DatumType::I16 => arr::<i16>(t, |v| Value::from(*v)),
        DatumType::I32 => arr::<i32>(t, |v| Value::from(*v)),
        DatumType::I64 => arr::<i64>(t, |v| Value::from(*v)),
        DatumType::F16 => arr::<f16>(t, |v| num(v.to_f64())),
        DatumType::F32 => arr::<f32>(t, |v| num(*v as f64)),
        DatumType::F64 => arr::<f64>(t, |v| num(*v)),
        DatumType::String => arr::<String>(t, |v| Value::String(v.clone())),
        dt => Err(bad(format!("output type {dt:?} has no protocol datatype"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_json_round_trips_agree() {
        let t = from_json(
            "FP32",
            &[2, 2],
            &serde_json::json!([[1.0, 2.0], [3.5, -4.0]]),
        )
        .unwrap();
        let raw = to_raw(&t).unwrap();
        assert_eq!(raw.len(), 16);
        let back = from_raw("FP32", &[2, 2], &raw).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            to_json(&back).unwrap(),
            serde_json::json!([1.0, 2.0, 3.5, -4.0])
        );
        let s = from_raw("BYTES", &[2], b"\x02\0\0\0hi\x00\0\0\0").unwrap();
        assert_eq!(to_raw(&s).unwrap(), b"\x02\0\0\0hi\x00\0\0\0");
        let h = from_json("FP16", &[1], &serde_json::json!([0.5])).unwrap();
        assert_eq!(to_raw(&h).unwrap(), f16::from_f32(0.5).to_le_bytes());
    }

    #[test]
    fn malformed_data_is_refused() {
        assert!(from_raw("FP32", &[3], &[0u8; 8]).is_err());
        assert!(from_raw("FP32", &[-1], &[]).is_err());
        assert!(from_raw("FP32", &[i64::MAX, i64::MAX], &[]).is_err());
        assert!(from_raw("BYTES", &[1], b"\x09\0\0\0hi").is_err());
        assert!(from_json("INT8", &[1], &serde_json::json!([300])).is_err());
        assert!(from_json("FP32", &[2], &serde_json::json!([1.0])).is_err());
        assert!(from_json("FP32", &[1], &serde_json::json!(["x"])).is_err());
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
