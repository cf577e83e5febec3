//! External tensor data: tensors whose bytes live in side files next to the model
//! (`data_location = EXTERNAL`, `external_data = {location, offset, length}`).
//!
//! Side files are memory-mapped once each and handed out as `Bytes` slices. A location must name a
//! file inside the model's directory: absolute paths, `..` and symlinks that lead out are refused,
//! because a model is untrusted input and must not make us read arbitrary files.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::error::OnnxError;
use super::proto::TensorProto;
use super::proto::tensor_proto::DataLocation;

/// Where one tensor's external bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    pub length: Option<u64>,
}

impl ExternalRef {
    /// The external reference of a tensor, `None` when its data is stored in the model itself.
    pub fn of(tensor: &TensorProto) -> Result<Option<ExternalRef>, OnnxError> {
        if tensor.data_location != Some(DataLocation::External as i32) {
            return Ok(None);
        }
        let name = tensor.name();
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for entry in &tensor.external_data {
            let parse = |v: &str| {
                v.parse::<u64>().map_err(|_| {
                    OnnxError::external(name, format!("{} '{}' is not a number", entry.key(), v))
                })
            };
            match entry.key() {
                "location" => location = Some(entry.value().to_string()),
                "offset" => offset = parse(entry.value())?,
                "length" => length = Some(parse(entry.value())?),
                _ => {} // checksum and unknown keys are kept in the proto, not interpreted
            }
        }
        let location = location.ok_or_else(|| OnnxError::external(name, "has no 'location'"))?;
        Ok(Some(ExternalRef {
            location,
            offset,
            length,
        }))
    }
}

/// The side files of one model, opened lazily and shared between tensors.
#[derive(Debug)]
pub struct ExternalData {
    dir: PathBuf,
    files: Mutex<HashMap<String, Bytes>>,
}

impl ExternalData {
    pub fn new(dir: PathBuf) -> Self {
        ExternalData {
            dir,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The directory locations are resolved against.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of an external tensor, checked against the file's size.
    pub fn read(&self, tensor: &str, r: &ExternalRef) -> Result<Bytes, OnnxError> {
        let file = self.file(tensor, &r.location)?;
        let size = file.len() as u64;
        let end = match r.length {
            Some(len) => r.offset.checked_add(len),
            None => Some(size),
        };
        match end {
            Some(end) if r.offset <= end && end <= size => {
                Ok(file.slice(r.offset as usize..end as usize))
            }
            _ => Err(OnnxError::external(
                tensor,
                format!(
                    "range offset {} length {} is past the end of '{}' ({} bytes)",
                    r.offset,
                    r.length.map_or("(rest)".to_string(), |l| l.to_string()),
                    r.location,
                    size
                ),
            )),
        }
    }

    /// Resolves a location to a path inside the model directory, refusing any way out of it.
    pub fn resolve(&self, tensor: &str, location: &str) -> Result<PathBuf, OnnxError> {
        let rel = Path::new(location);
        if location.is_empty() {
            return Err(OnnxError::external(tensor, "location is empty"));
        }
        for c in rel.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(OnnxError::external(
                        tensor,
                        format!("location '{location}' leaves the model directory ('..')"),
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(OnnxError::external(
                        tensor,
                        format!(
                            "location '{location}' is absolute; it must be relative to the model"
                        ),
                    ));
                }
            }
        }
        let path = self.dir.join(rel);
        let real = path.canonicalize().map_err(|e| {
            OnnxError::external(
                tensor,
                format!("file '{}' cannot be opened: {e}", path.display()),
            )
        })?;
        let real_dir = self.dir.canonicalize().map_err(|e| OnnxError::Read {
            path: self.dir.clone(),
            source: e,
        })?;
        if !real.starts_with(&real_dir) {
            return Err(OnnxError::external(
                tensor,
                format!(
                    "location '{location}' resolves to {} outside the model directory (symlink)",
                    real.display()
                ),
            ));
        }
        Ok(real)
    }

    fn file(&self, tensor: &str, location: &str) -> Result<Bytes, OnnxError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = files.get(location) {
            return Ok(b.clone());
        }
        let path = self.resolve(tensor, location)?;
        let bytes = map_file(&path)?;
        files.insert(location.to_string(), bytes.clone());
        Ok(bytes)
    }
}

/// Memory-maps a whole file as `Bytes` (an empty file gives empty bytes: mapping zero bytes fails).
pub fn map_file(path: &Path) -> Result<Bytes, OnnxError> {
    let read_err = |e| OnnxError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.is_dir() {
        return Err(OnnxError::Invalid {
            path: path.to_path_buf(),
            what: "is a directory".into(),
        });
    }
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only. A file truncated by another process while mapped would
    // fault; that is the same contract every mmap-based model loader (tract, onnxruntime) has.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    Ok(Bytes::from_owner(map))
}
