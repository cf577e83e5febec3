//! Typed views of tensor data. ONNX stores a tensor's values either as little-endian `raw_data`
//! (or the same bytes in an external file) or in one of the typed repeated fields, which one
//! depending on the element type; [`TensorData`] hides that and checks sizes against the shape.

use bytes::Bytes;
use half::{bf16, f16};

use super::dtype::DataType;
use super::error::OnnxError;
use super::proto::TensorProto;

/// Where a tensor's values are.
#[derive(Debug, Clone)]
pub enum TensorValues {
    /// Little-endian packed bytes (`raw_data` or external data).
    Raw(Bytes),
    Float(Vec<f32>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    Uint64(Vec<u64>),
    Strings(Vec<Bytes>),
}

/// A tensor's element type, shape and values, with checked typed accessors.
#[derive(Debug, Clone)]
pub struct TensorData {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<usize>,
    pub values: TensorValues,
}

macro_rules! typed_view {
    ($(#[$doc:meta])* $fn:ident, $t:ty, $dtype:ident, $raw:expr, $field:ident => $conv:expr) => {
        $(#[$doc])*
        pub fn $fn(&self) -> Result<Vec<$t>, OnnxError> {
            self.expect(DataType::$dtype)?;
            match &self.values {
                TensorValues::Raw(b) => {
                    let size = std::mem::size_of::<$t>();
                    Ok(b.chunks_exact(size).map($raw).collect())
                }
                TensorValues::$field(v) => Ok(v.iter().map($conv).collect()),
                _ => Err(self.wrong_field()),
            }
        }
    };
}

impl TensorData {
    /// Reads `tensor`; `external` holds its bytes when they live in a side file.
    pub fn new(tensor: &TensorProto, external: Option<Bytes>) -> Result<TensorData, OnnxError> {
        let name = tensor.name().to_string();
        let dtype = DataType::for_tensor(tensor.data_type(), &name)?;
        let dims = tensor
            .dims
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| OnnxError::tensor(&name, format!("negative dimension {d}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| OnnxError::tensor(&name, format!("shape {dims:?} overflows")))?;
        let values = match (external, &tensor.raw_data) {
            (Some(b), _) => TensorValues::Raw(b),
            (None, Some(b)) => TensorValues::Raw(b.clone()),
            (None, None) => typed_field(tensor, dtype),
        };
        let data = TensorData {
            name,
            dtype,
            dims,
            values,
        };
        data.check_len(count)?;
        Ok(data)
    }

    /// Number of elements (the product of the dims; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_len(&self, count: usize) -> Result<(), OnnxError> {
        use DataType::*;
        let (found, want, unit) = match &self.values {
            TensorValues::Raw(b) => match self.dtype.raw_len(count) {
                Some(want) => (b.len(), want, "bytes of raw data"),
                None => {
                    return Err(OnnxError::tensor(
                        &self.name,
                        "STRING tensors cannot use raw_data",
                    ));
                }
            },
            TensorValues::Float(v) => {
                (v.len(), per_complex(self.dtype, count), "float_data values")
            }
            TensorValues::Double(v) => (
                v.len(),
                per_complex(self.dtype, count),
                "double_data values",
            ),
            TensorValues::Int32(v) => {
                // sub-byte types pack two (or four) elements per int32_data entry
                let want = match self.dtype {
                    Int4 | Uint4 | Float4E2M1 => count.div_ceil(2),
                    Int2 | Uint2 => count.div_ceil(4),
                    _ => count,
                };
                (v.len(), want, "int32_data values")
            }
            TensorValues::Int64(v) => (v.len(), count, "int64_data values"),
            TensorValues::Uint64(v) => (v.len(), count, "uint64_data values"),
            TensorValues::Strings(v) => (v.len(), count, "string_data values"),
        };
        if found != want {
            return Err(OnnxError::tensor(
                &self.name,
                format!(
                    "has {found} {unit} but its {} shape {:?} needs {want}",
                    self.dtype, self.dims
                ),
            ));
        }
        Ok(())
    }

    fn expect(&self, dtype: DataType) -> Result<(), OnnxError> {
        if self.dtype != dtype {
            return Err(OnnxError::tensor(
                &self.name,
                format!("is {}, read as {}", self.dtype, dtype),
            ));
        }
        Ok(())
    }

    fn wrong_field(&self) -> OnnxError {
        OnnxError::tensor(
            &self.name,
            format!("{} data stored in the wrong typed field", self.dtype),
        )
    }

    typed_view!(/// FLOAT values.
        f32s, f32, Float, |c| f32::from_le_bytes(c.try_into().unwrap()), Float => |v| *v);
    typed_view!(/// DOUBLE values.
        f64s, f64, Double, |c| f64::from_le_bytes(c.try_into().unwrap()), Double => |v| *v);
    typed_view!(/// INT64 values.
        i64s, i64, Int64, |c| i64::from_le_bytes(c.try_into().unwrap()), Int64 => |v| *v);
    typed_view!(/// INT32 values.
        i32s, i32, Int32, |c| i32::from_le_bytes(c.try_into().unwrap()), Int32 => |v| *v);
    typed_view!(/// INT8 values (typed storage: one per int32_data entry).
        i8s, i8, Int8, |c| c[0] as i8, Int32 => |v| *v as i8);
    typed_view!(/// UINT8 values.
        u8s, u8, Uint8, |c| c[0], Int32 => |v| *v as u8);
    typed_view!(/// BOOL values.
        bools, bool, Bool, |c| c[0] != 0, Int32 => |v| *v != 0);
    typed_view!(/// FLOAT16 values (typed storage: the bit pattern in int32_data).
        f16s, f16, Float16, |c| f16::from_le_bytes(c.try_into().unwrap()),
        Int32 => |v| f16::from_bits(*v as u16));
    typed_view!(/// BFLOAT16 values (typed storage: the bit pattern in int32_data).
        bf16s, bf16, Bfloat16, |c| bf16::from_le_bytes(c.try_into().unwrap()),
        Int32 => |v| bf16::from_bits(*v as u16));

    /// The values as float32 (float32 values as they are, without going through float64: a
    /// large model's weights are hundreds of millions of them), as [`Self::to_f64_lossy`] gives
    /// them otherwise.
    pub fn to_f32_lossy(&self) -> Option<Vec<f32>> {
        if self.dtype == DataType::Float {
            return self.f32s().ok();
        }
        Some(self.to_f64_lossy()?.into_iter().map(|x| x as f32).collect())
    }

    /// Any real numeric tensor widened to f64 (for statistics and comparisons); `None` for
    /// strings, complex and sub-byte or 8-bit float types.
    pub fn to_f64_lossy(&self) -> Option<Vec<f64>> {
        use DataType::*;
        let v: Vec<f64> = match self.dtype {
            Float => self.f32s().ok()?.into_iter().map(f64::from).collect(),
            Double => self.f64s().ok()?,
            Float16 => self.f16s().ok()?.into_iter().map(f64::from).collect(),
            Bfloat16 => self.bf16s().ok()?.into_iter().map(f64::from).collect(),
            Int64 => self.i64s().ok()?.into_iter().map(|x| x as f64).collect(),
            Int32 => self.i32s().ok()?.into_iter().map(f64::from).collect(),
            Int8 => self.i8s().ok()?.into_iter().map(f64::from).collect(),
            Uint8 => self.u8s().ok()?.into_iter().map(f64::from).collect(),
            Bool => self
                .bools()
                .ok()?
                .into_iter()
                .map(|b| f64::from(u8::from(b)))
                .collect(),
            Int16 | Uint16 | Uint32 | Uint64 => self.small_ints_as_f64()?,
            _ => return None,
        };
        Some(v)
    }

    fn small_ints_as_f64(&self) -> Option<Vec<f64>> {
        use DataType::*;
        Some(match (&self.values, self.dtype) {
            (TensorValues::Raw(b), Int16) => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            (TensorValues::Raw(b), Uint16) => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            (TensorValues::Raw(b), Uint32) => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            (TensorValues::Raw(b), Uint64) => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            (TensorValues::Int32(v), Int16 | Uint16) => v.iter().map(|&x| x as f64).collect(),
            (TensorValues::Uint64(v), Uint32 | Uint64) => v.iter().map(|&x| x as f64).collect(),
            _ => return None,
        })
    }

    /// Strings of a STRING tensor.
    pub fn strings(&self) -> Result<Vec<Bytes>, OnnxError> {
        self.expect(DataType::String)?;
        match &self.values {
            TensorValues::Strings(v) => Ok(v.clone()),
            _ => Err(self.wrong_field()),
        }
    }

    /// The values as little-endian packed bytes, as `raw_data` would hold them.
    pub fn to_raw(&self) -> Result<Bytes, OnnxError> {
        use DataType::*;
        let bytes: Vec<u8> = match (&self.values, self.dtype) {
            (TensorValues::Raw(b), _) => return Ok(b.clone()),
            (TensorValues::Float(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorValues::Double(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorValues::Int64(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorValues::Uint64(v), Uint32) => {
                v.iter().flat_map(|x| (*x as u32).to_le_bytes()).collect()
            }
            (TensorValues::Uint64(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorValues::Int32(v), Int32) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            (TensorValues::Int32(v), Int16 | Uint16 | Float16 | Bfloat16) => {
                v.iter().flat_map(|x| (*x as u16).to_le_bytes()).collect()
            }
            (TensorValues::Int32(v), Int2 | Uint2) => v.iter().map(|x| *x as u8).collect(),
            (TensorValues::Int32(v), _) if self.dtype.bits() == Some(4) => {
                v.iter().map(|x| *x as u8).collect()
            }
            (TensorValues::Int32(v), _) => v.iter().map(|x| *x as u8).collect(),
            (TensorValues::Strings(_), _) => {
                return Err(OnnxError::tensor(
                    &self.name,
                    "STRING tensors have no raw form",
                ));
            }
        };
        Ok(Bytes::from(bytes))
    }
}

fn per_complex(dtype: DataType, count: usize) -> usize {
    match dtype {
        DataType::Complex64 | DataType::Complex128 => count * 2,
        _ => count,
    }
}

/// The typed field that carries `dtype` when there is no raw data (ONNX IR, TensorProto).
fn typed_field(t: &TensorProto, dtype: DataType) -> TensorValues {
    use DataType::*;
    match dtype {
        Float | Complex64 => TensorValues::Float(t.float_data.clone()),
        Double | Complex128 => TensorValues::Double(t.double_data.clone()),
        Int64 => TensorValues::Int64(t.int64_data.clone()),
        Uint32 | Uint64 => TensorValues::Uint64(t.uint64_data.clone()),
        String => TensorValues::Strings(t.string_data.clone()),
        _ => TensorValues::Int32(t.int32_data.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            data_type: Some(dtype.code()),
            dims: dims.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_fields_give_the_same_values() {
        let mut raw = proto(DataType::Float, &[2]);
        raw.raw_data = Some(Bytes::from(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>(),
        ));
        let mut typed = proto(DataType::Float, &[2]);
        typed.float_data = vec![1.5, -2.0];
        assert_eq!(
            TensorData::new(&raw, None).unwrap().f32s().unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(
            TensorData::new(&typed, None).unwrap().f32s().unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(
            TensorData::new(&typed, None).unwrap().to_raw().unwrap(),
            raw.raw_data.clone().unwrap()
        );
    }

    #[test]
    fn float16_from_int32_bit_patterns() {
        let mut t = proto(DataType::Float16, &[2]);
        t.int32_data = vec![
            f16::from_f32(0.5).to_bits() as i32,
            f16::from_f32(-3.0).to_bits() as i32,
        ];
        let v = TensorData::new(&t, None).unwrap().f16s().unwrap();
        assert_eq!(v, vec![f16::from_f32(0.5), f16::from_f32(-3.0)]);
    }

    #[test]
    fn size_mismatch_is_an_error_naming_the_tensor() {
        let mut t = proto(DataType::Float, &[3]);
        t.raw_data = Some(Bytes::from_static(&[0; 8]));
        let err = TensorData::new(&t, None).unwrap_err().to_string();
        assert!(
            err.contains("'t'") && err.contains("8 bytes") && err.contains("12"),
            "{err}"
        );
    }

    #[test]
    fn reading_as_the_wrong_type_is_an_error() {
        let mut t = proto(DataType::Int64, &[1]);
        t.int64_data = vec![7];
        let d = TensorData::new(&t, None).unwrap();
        assert_eq!(d.i64s().unwrap(), vec![7]);
        assert!(d.f32s().unwrap_err().to_string().contains("is INT64"));
    }

    #[test]
    fn negative_dims_are_rejected() {
        let t = proto(DataType::Float, &[-1]);
        assert!(
            TensorData::new(&t, None)
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }
}
