//! Tensors in and out of files: ONNX TensorProto `.pb` files (and the `test_data_set_N/input_K.pb`
//! layout), NumPy `.npy`, and `.npz` archives. In memory a tensor is tract's `Tensor`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use tract_onnx::prelude::{DatumType, Tensor};

use crate::onnx::proto::TensorProto;
use crate::onnx::{DataType, OnnxError, TensorData};

/// A tensor and the graph value it belongs to (empty when the file did not say).
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// Reading or writing tensor files went wrong; names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TensorIoError {
    #[error("{path}: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{0}")]
    Onnx(#[from] OnnxError),
}

fn format_err(path: &Path, what: impl Into<String>) -> TensorIoError {
    TensorIoError::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The tract element type for an ONNX one, where tract has it.
pub fn datum_type(dtype: DataType) -> Option<DatumType> {
    use DataType::*;
    Some(match dtype {
        Float => DatumType::F32,
        Double => DatumType::F64,
        Float16 => DatumType::F16,
        Int8 => DatumType::I8,
        Int16 => DatumType::I16,
        Int32 => DatumType::I32,
        Int64 => DatumType::I64,
        Uint8 => DatumType::U8,
        Uint16 => DatumType::U16,
        Uint32 => DatumType::U32,
        Uint64 => DatumType::U64,
        Bool => DatumType::Bool,
        String => DatumType::String,
        _ => return None,
    })
}

/// The ONNX element type of a tract one (quantized types by their storage type).
pub fn onnx_dtype(dt: DatumType) -> Option<DataType> {
    use DataType::*;
    Some(match dt.unquantized() {
        DatumType::F32 => Float,
        DatumType::F64 => Double,
        DatumType::F16 => Float16,
        DatumType::I8 => Int8,
        DatumType::I16 => Int16,
        DatumType::I32 => Int32,
        DatumType::I64 => Int64,
        DatumType::U8 => Uint8,
        DatumType::U16 => Uint16,
        DatumType::U32 => Uint32,
        DatumType::U64 => Uint64,
        DatumType::Bool => Bool,
        DatumType::String => String,
        _ => return None,
    })
}

/// Whether tract can lay out a tensor of these dims: the product of the non-zero dims, in bytes,
/// must fit an `isize` (tract computes it for empty tensors too, and panics when it does not).
pub(crate) fn fits_tract(dims: &[usize], elem_bytes: usize) -> bool {
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(elem_bytes.max(1), |acc, &d| acc.checked_mul(d))
        .is_some_and(|b| b <= isize::MAX as usize)
}

/// Converts ONNX tensor data to a tract tensor.
pub fn to_tract(data: &TensorData) -> Result<Tensor, OnnxError> {
    let dt = datum_type(data.dtype).ok_or_else(|| {
        OnnxError::tensor(
            &data.name,
            format!("{} tensors cannot be run by tract", data.dtype),
        )
    })?;
    let tract_err = |e: anyhow::Error| OnnxError::tensor(&data.name, e.to_string());
    if !fits_tract(&data.dims, dt.size_of()) {
        return Err(OnnxError::tensor(
            &data.name,
            format!("shape {:?} is too large to hold", data.dims),
        ));
    }
    if dt == DatumType::String {
        let strings = data
            .strings()?
            .iter()
            .map(|b| String::from_utf8(b.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| OnnxError::tensor(&data.name, "STRING element is not UTF-8"))?;
        let array =
            tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(data.dims.clone(), strings)
                .map_err(|e| OnnxError::tensor(&data.name, e.to_string()))?;
        return Ok(array.into());
    }
    let mut raw = data.to_raw()?.to_vec();
    if dt == DatumType::Bool {
        raw.iter_mut().for_each(|b| *b = u8::from(*b != 0));
    }
    // SAFETY: `raw` holds exactly len * size_of(dt) little-endian bytes (checked by TensorData),
    // and every bit pattern is a valid value of these element types (bools normalised above).
    unsafe { Tensor::from_raw_dt(dt, &data.dims, &raw) }.map_err(tract_err)
}

/// Converts a tract tensor to an ONNX TensorProto (raw data; strings in `string_data`).
pub fn to_proto(name: &str, tensor: &Tensor) -> Result<TensorProto, OnnxError> {
    let dtype = onnx_dtype(tensor.datum_type()).ok_or_else(|| {
        OnnxError::tensor(
            name,
            format!(
                "tract type {:?} has no ONNX equivalent",
                tensor.datum_type()
            ),
        )
    })?;
    let mut proto = TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dtype.code()),
        dims: tensor.shape().iter().map(|&d| d as i64).collect(),
        ..Default::default()
    };
    if dtype == DataType::String {
        let view = tensor
            .to_plain_array_view::<String>()
            .map_err(|e| OnnxError::tensor(name, e.to_string()))?;
        proto.string_data = view
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
    } else {
        proto.raw_data = Some(Bytes::copy_from_slice(tensor.as_bytes()));
    }
    Ok(proto)
}

/// Reads one TensorProto `.pb` file.
pub fn read_pb(path: &Path) -> Result<NamedTensor, TensorIoError> {
    let bytes = std::fs::read(path).map_err(|e| format_err(path, e.to_string()))?;
    parse_pb(path, &bytes)
}

/// Parses a TensorProto `.pb` document (`path` names it in errors).
pub fn parse_pb(path: &Path, bytes: &[u8]) -> Result<NamedTensor, TensorIoError> {
    let proto = TensorProto::decode(bytes)
        .map_err(|e| format_err(path, format!("not a TensorProto: {e}")))?;
    if proto.data_type.is_none() {
        return Err(format_err(path, "not a TensorProto: no data_type"));
    }
    if proto.data_location.is_some_and(|l| l != 0) {
        return Err(format_err(
            path,
            "tensors with external data are not supported in .pb files",
        ));
    }
    let data = TensorData::new(&proto, None)?;
    Ok(NamedTensor {
        name: proto.name().to_string(),
        tensor: to_tract(&data)?,
    })
}

/// Writes one TensorProto `.pb` file.
pub fn write_pb(path: &Path, t: &NamedTensor) -> Result<(), TensorIoError> {
    let proto = to_proto(&t.name, &t.tensor)?;
    crate::onnx::save_bytes_atomically(path, &proto.encode_to_vec())?;
    Ok(())
}

/// Reads the `PREFIX_K.pb` files of a test data directory in K order (`input_0.pb`, `input_1.pb`...).
pub fn read_pb_dir(dir: &Path, prefix: &str) -> Result<Vec<NamedTensor>, TensorIoError> {
    let entries = std::fs::read_dir(dir).map_err(|e| format_err(dir, e.to_string()))?;
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format_err(dir, e.to_string()))?.path();
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let index = stem
            .strip_prefix(prefix)
            .and_then(|s| s.strip_prefix('_'))
            .and_then(|s| s.strip_suffix(".pb"))
            .and_then(|k| k.parse::<usize>().ok());
        if let Some(k) = index {
            files.push((k, path));
        }
    }
    files.sort();
    for (pos, (k, path)) in files.iter().enumerate() {
        if *k != pos {
            return Err(format_err(
                path,
                format!("expected {prefix}_{pos}.pb before it"),
            ));
        }
    }
    files.iter().map(|(_, p)| read_pb(p)).collect()
}

/// NumPy's `descr` for an element type.
fn npy_descr(dt: DatumType) -> Option<&'static str> {
    Some(match dt.unquantized() {
        DatumType::F32 => "<f4",
        DatumType::F64 => "<f8",
        DatumType::F16 => "<f2",
        DatumType::I8 => "|i1",
        DatumType::I16 => "<i2",
        DatumType::I32 => "<i4",
        DatumType::I64 => "<i8",
        DatumType::U8 => "|u1",
        DatumType::U16 => "<u2",
        DatumType::U32 => "<u4",
        DatumType::U64 => "<u8",
        DatumType::Bool => "|b1",
        _ => return None,
    })
}

fn descr_datum(descr: &str) -> Option<DatumType> {
    let (order, code) = descr.split_at(1);
    if !matches!(order, "<" | "|" | "=") {
        return None; // big-endian data
    }
    Some(match code {
        "f4" => DatumType::F32,
        "f8" => DatumType::F64,
        "f2" => DatumType::F16,
        "i1" => DatumType::I8,
        "i2" => DatumType::I16,
        "i4" => DatumType::I32,
        "i8" => DatumType::I64,
        "u1" => DatumType::U8,
        "u2" => DatumType::U16,
        "u4" => DatumType::U32,
        "u8" => DatumType::U64,
        "b1" => DatumType::Bool,
        _ => return None,
    })
}

/// Parses a `.npy` document.
pub fn parse_npy(path: &Path, bytes: &[u8]) -> Result<Tensor, TensorIoError> {
    let bad = |what: &str| format_err(path, format!("not a readable .npy file: {what}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(bad(&format!("format version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\''))
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| bad("no descr"))?;
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad(
            "Fortran-ordered arrays are not supported (save with C order)",
        ));
    }
    let shape_text = field("shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("bad shape"))?;
    let dt = descr_datum(descr)
        .ok_or_else(|| bad(&format!("element type '{descr}' is not supported")))?;
    if !fits_tract(&shape, dt.size_of()) {
        return Err(bad(&format!("shape {shape:?} is too large to hold")));
    }
    let data = &bytes[start + header_len..];
    let want = shape
        .iter()
        .try_fold(dt.size_of(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    if data.len() != want {
        return Err(bad(&format!(
            "{} data bytes for shape {shape:?} of {descr} (need {want})",
            data.len()
        )));
    }
    // a bool is one byte that must be 0 or 1: normalise as numpy does (nonzero is true)
    // rather than hand tract a byte that is no valid `bool`
    let normalised: Vec<u8>;
    let data = if dt == DatumType::Bool {
        normalised = data.iter().map(|&b| u8::from(b != 0)).collect();
        &normalised[..]
    } else {
        data
    };
    // SAFETY: `data` holds exactly the bytes of `shape` elements of `dt`, little-endian, and
    // every bit pattern is a valid value of `dt` (bools normalised above).
    unsafe { Tensor::from_raw_dt(dt, &shape, data) }.map_err(|e| bad(&e.to_string()))
}

/// Encodes a tensor as a `.npy` (format 1.0) document.
pub fn encode_npy(t: &Tensor) -> Result<Vec<u8>, String> {
    let descr = npy_descr(t.datum_type())
        .ok_or_else(|| format!("{:?} tensors cannot be stored in .npy", t.datum_type()))?;
    let shape = match t.shape() {
        [] => String::new(),
        [d] => format!("{d},"),
        dims => dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}");
    // magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64
    let total = (10 + header.len() + 1).next_multiple_of(64);
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.as_bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.as_bytes());
    Ok(out)
}

/// The names of a `.npz` archive's arrays (without `.npy`), in archive order, read from its
/// directory: no array is read.
pub fn npz_names(path: &Path) -> Result<Vec<String>, TensorIoError> {
    let file = std::fs::File::open(path).map_err(|e| format_err(path, e.to_string()))?;
    let archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(path, format!("not a .npz archive: {e}")))?;
    archive
        .file_names()
        .map(|n| {
            n.map(|n| n.trim_end_matches(".npy").to_string())
                .map_err(|e| format_err(path, e.to_string()))
        })
        .collect()
}

/// Reads every array of a `.npz` archive, named by its entry (without `.npy`), in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<NamedTensor>, TensorIoError> {
    let file = std::fs::File::open(path).map_err(|e| format_err(path, e.to_string()))?;
    parse_npz(path, std::io::BufReader::new(file))
}

/// The most bytes one `.npz` entry may expand to (a header may claim anything).
pub const MAX_NPZ_ENTRY_BYTES: u64 = 4 << 30;

/// Parses a `.npz` archive from a reader (`path` names it in errors).
pub fn parse_npz(
    path: &Path,
    reader: impl std::io::Read + std::io::Seek,
) -> Result<Vec<NamedTensor>, TensorIoError> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| format_err(path, format!("not a .npz archive: {e}")))?;
    let mut out = Vec::with_capacity(archive.len().min(1024));
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format_err(path, e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| format_err(path, e.to_string()))?
            .trim_end_matches(".npy")
            .to_string();
        // the declared size only hints the allocation; what is read is bounded by the budget
        let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
        entry
            .take(MAX_NPZ_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format_err(path, format!("{name}: {e}")))?;
        if bytes.len() as u64 > MAX_NPZ_ENTRY_BYTES {
            return Err(format_err(
                path,
                format!("{name}: expands past {MAX_NPZ_ENTRY_BYTES} bytes"),
            ));
        }
        let tensor = parse_npy(&path.join(&name), &bytes)?;
        out.push(NamedTensor { name, tensor });
    }
    Ok(out)
}

/// Writes tensors as a `.npz` archive (stored, not compressed; deterministic timestamps).
pub fn write_npz(path: &Path, tensors: &[NamedTensor]) -> Result<(), TensorIoError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default())
            .large_file(true);
        for t in tensors {
            let npy =
                encode_npy(&t.tensor).map_err(|e| format_err(path, format!("{}: {e}", t.name)))?;
            zip.start_file(format!("{}.npy", t.name), options)
                .map_err(|e| format_err(path, e.to_string()))?;
            zip.write_all(&npy)
                .map_err(|e| format_err(path, e.to_string()))?;
        }
        zip.finish().map_err(|e| format_err(path, e.to_string()))?;
    }
    crate::onnx::save_bytes_atomically(path, buf.get_ref())?;
    Ok(())
}

/// Reads tensors from a path: a `.npz`, a `.npy` (named after the file), a `.pb`, or a test data
/// directory (its `input_K.pb` files).
pub fn read_tensors(path: &Path) -> Result<Vec<NamedTensor>, TensorIoError> {
    if path.is_dir() {
        return read_pb_dir(path, "input");
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => read_npz(path),
        Some("npy") => {
            let bytes = std::fs::read(path).map_err(|e| format_err(path, e.to_string()))?;
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            Ok(vec![NamedTensor {
                name,
                tensor: parse_npy(path, &bytes)?,
            }])
        }
        Some("pb") => Ok(vec![read_pb(path)?]),
        _ => Err(format_err(
            path,
            "expected a .npz, .npy or .pb file, or a test data directory",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (tensor_readers): an empty STRING TensorProto whose other dims multiply
    /// past isize made tract panic laying it out.
    #[test]
    fn an_empty_tensor_with_huge_dims_is_an_error_not_a_panic() {
        let crash = [
            0x08u8, 0x01, 0x10, 0x08, 0x0a, 0x0a, 0x11, 0xf7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x7f, 0x00,
        ];
        let proto = TensorProto::decode(&crash[..]);
        assert!(proto.is_ok());
        let err = parse_pb(Path::new("crash.pb"), &crash).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    /// A `.npy` of dtype `b1` whose bytes are not 0/1 was handed to tract as `bool` as is:
    /// undefined behaviour for any byte but 0 and 1. Nonzero now reads as true, as numpy does.
    #[test]
    fn npy_bools_other_than_0_and_1_are_normalised() {
        let header = "{'descr': '|b1', 'fortran_order': False, 'shape': (4,), }";
        let mut padded = header.to_string();
        while !(10 + padded.len() + 1).is_multiple_of(64) {
            padded.push(' ');
        }
        padded.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        bytes.extend_from_slice(padded.as_bytes());
        bytes.extend_from_slice(&[0, 1, 2, 255]);
        let t = parse_npy(Path::new("b.npy"), &bytes).unwrap();
        assert_eq!(t.as_bytes(), &[0, 1, 1, 1]);
        let v = t.to_plain_array_view::<bool>().unwrap();
        assert_eq!(
            v.iter().copied().collect::<Vec<_>>(),
            [false, true, true, true]
        );
    }
}
