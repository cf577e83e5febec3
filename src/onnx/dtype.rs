//! ONNX element types (`TensorProto.DataType`): names, sizes, and which typed field carries them.

use super::error::OnnxError;

/// An ONNX tensor element type. The discriminants are the `TensorProto.DataType` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Uint16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    String = 8,
    Bool = 9,
    Float16 = 10,
    Double = 11,
    Uint32 = 12,
    Uint64 = 13,
    Complex64 = 14,
    Complex128 = 15,
    Bfloat16 = 16,
    Float8E4M3Fn = 17,
    Float8E4M3Fnuz = 18,
    Float8E5M2 = 19,
    Float8E5M2Fnuz = 20,
    Uint4 = 21,
    Int4 = 22,
    Float4E2M1 = 23,
    Float8E8M0 = 24,
    Uint2 = 25,
    Int2 = 26,
}

const ALL: [DataType; 26] = [
    DataType::Float,
    DataType::Uint8,
    DataType::Int8,
    DataType::Uint16,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::String,
    DataType::Bool,
    DataType::Float16,
    DataType::Double,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Complex64,
    DataType::Complex128,
    DataType::Bfloat16,
    DataType::Float8E4M3Fn,
    DataType::Float8E4M3Fnuz,
    DataType::Float8E5M2,
    DataType::Float8E5M2Fnuz,
    DataType::Uint4,
    DataType::Int4,
    DataType::Float4E2M1,
    DataType::Float8E8M0,
    DataType::Uint2,
    DataType::Int2,
];

impl DataType {
    /// The element type for a `data_type` / `elem_type` number, or an error naming the number.
    pub fn from_code(code: i32) -> Result<Self, OnnxError> {
        ALL.iter()
            .copied()
            .find(|d| *d as i32 == code)
            .ok_or_else(|| OnnxError::Tensor {
                tensor: String::new(),
                what: format!("unknown data type {code}"),
            })
    }

    /// Like [`DataType::from_code`], with the error naming the tensor.
    pub fn for_tensor(code: i32, tensor: &str) -> Result<Self, OnnxError> {
        match code {
            0 => Err(OnnxError::tensor(tensor, "data_type is UNDEFINED (0)")),
            _ => Self::from_code(code)
                .map_err(|_| OnnxError::tensor(tensor, format!("unknown data type {code}"))),
        }
    }

    pub fn code(self) -> i32 {
        self as i32
    }

    /// The ONNX spelling (`FLOAT`, `INT64`, ...), as onnx's `TensorProto.DataType.Name` gives it.
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Float => "FLOAT",
            Uint8 => "UINT8",
            Int8 => "INT8",
            Uint16 => "UINT16",
            Int16 => "INT16",
            Int32 => "INT32",
            Int64 => "INT64",
            String => "STRING",
            Bool => "BOOL",
            Float16 => "FLOAT16",
            Double => "DOUBLE",
            Uint32 => "UINT32",
            Uint64 => "UINT64",
            Complex64 => "COMPLEX64",
            Complex128 => "COMPLEX128",
            Bfloat16 => "BFLOAT16",
            Float8E4M3Fn => "FLOAT8E4M3FN",
            Float8E4M3Fnuz => "FLOAT8E4M3FNUZ",
            Float8E5M2 => "FLOAT8E5M2",
            Float8E5M2Fnuz => "FLOAT8E5M2FNUZ",
            Uint4 => "UINT4",
            Int4 => "INT4",
            Float4E2M1 => "FLOAT4E2M1",
            Float8E8M0 => "FLOAT8E8M0",
            Uint2 => "UINT2",
            Int2 => "INT2",
        }
    }

    /// Bits one element takes in `raw_data`; `None` for strings, which have no raw form.
    pub fn bits(self) -> Option<usize> {
        use DataType::*;
        Some(match self {
            Uint2 | Int2 => 2,
            Uint4 | Int4 | Float4E2M1 => 4,
            Uint8 | Int8 | Bool | Float8E4M3Fn | Float8E4M3Fnuz | Float8E5M2 | Float8E5M2Fnuz
            | Float8E8M0 => 8,
            Uint16 | Int16 | Float16 | Bfloat16 => 16,
            Float | Int32 | Uint32 => 32,
            Double | Int64 | Uint64 | Complex64 => 64,
            Complex128 => 128,
            String => return None,
        })
    }

    /// Bytes `count` elements take in `raw_data` (sub-byte types are packed, rounded up).
    pub fn raw_len(self, count: usize) -> Option<usize> {
        self.bits()
            .and_then(|b| count.checked_mul(b))
            .map(|bits| bits.div_ceil(8))
    }

    pub fn is_float(self) -> bool {
        use DataType::*;
        matches!(
            self,
            Float
                | Double
                | Float16
                | Bfloat16
                | Float8E4M3Fn
                | Float8E4M3Fnuz
                | Float8E5M2
                | Float8E5M2Fnuz
                | Float4E2M1
                | Float8E8M0
        )
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_errors() {
        for d in ALL {
            assert_eq!(DataType::from_code(d.code()).unwrap(), d);
        }
        assert!(DataType::from_code(0).is_err());
        assert!(DataType::from_code(27).is_err());
        let err = DataType::for_tensor(99, "w").unwrap_err().to_string();
        assert!(err.contains("'w'") && err.contains("99"), "{err}");
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(DataType::Int4.raw_len(3), Some(2));
        assert_eq!(DataType::Float16.raw_len(3), Some(6));
        assert_eq!(DataType::String.raw_len(3), None);
    }
}
