//! The archive manifest (`mdeploy.json`, format `mdeploy.archive/1`, documented in
//! docs/archive-format.md): what the model is, where it came from, and every file with its size
//! and sha256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MANIFEST_FILE: &str = "mdeploy.json";
pub const ARCHIVE_FORMAT: &str = "mdeploy.archive/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub version: String,
    pub model: ModelEntry,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    pub opsets: Vec<Value>,
    pub precision: Precision,
    pub parameters: u64,
    pub lineage: Lineage,
    pub files: Vec<FileEntry>,
    pub created_by: CreatedBy,
    pub metadata: BTreeMap<String, String>,
    /// Whether `model.sig` is in the archive.
    pub signed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The ONNX file to load, a path in the archive.
    pub entry_point: String,
    /// Its external data files, paths in the archive.
    pub external_data: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Precision {
    /// Parameter elements by element type (`FLOAT`, `FLOAT16`, `INT8`...).
    pub parameter_dtypes: BTreeMap<String, u64>,
    /// `none`, `qdq` (QuantizeLinear), `qoperator` (QLinear*, *Integer ops), `dynamic`
    /// (DynamicQuantizeLinear) or `weight-only` (no activation quantized: a DequantizeLinear of
    /// a constant, onnxruntime's MatMulNBits or GatherBlockQuantized, or int8/int4 parameters
    /// of 256 elements or more). Ops match in any domain.
    pub quantization: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// sha256 of the model this one was made from (the optimize report's input when given,
    /// else the packed model itself).
    pub source_sha256: String,
    /// The optimize report as given (`--optimize-report`): passes, parameters, tool version.
    pub optimize: Option<Value>,
    /// A summary of the verify report (`--verify-report`).
    pub verify: Option<Value>,
    /// The source directory's OpenSSF model signature, checked before packing
    /// (`--source-signature`): its key hint and what it covered.
    pub source_signature: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedBy {
    pub tool: String,
    pub version: String,
}

impl Manifest {
    /// Total bytes of the files the manifest lists.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}
