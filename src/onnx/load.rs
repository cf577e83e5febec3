//! Loading a model: memory-map the file, decode it without copying tensor bytes, and check the
//! few things every later stage relies on (an IR version we understand, a graph).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::error::OnnxError;
use super::external::{ExternalData, ExternalRef, map_file};
use super::proto::{GraphProto, ModelProto, TensorProto};
use super::tensor::TensorData;

/// Oldest IR version accepted: IR 3 introduced `opset_import`, without which ops cannot be bound.
pub const MIN_IR_VERSION: i64 = 3;
/// Newest IR version known (IR 12 and 13 only add element types, which are handled).
pub const MAX_IR_VERSION: i64 = 13;

/// A decoded ONNX model and the directory its external data is resolved against.
#[derive(Debug)]
pub struct Model {
    pub proto: ModelProto,
    path: Option<PathBuf>,
    external: ExternalData,
    file_len: Option<u64>,
    /// The mapped file the proto was decoded from: its tensors' bytes are slices of it.
    source: Option<Bytes>,
}

impl Model {
    /// Loads `path`, memory-mapped. Tensor bytes stay in the mapping until changed.
    pub fn load(path: &Path) -> Result<Model, OnnxError> {
        let bytes = map_file(path)?;
        let file_len = bytes.len() as u64;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let mut model = Model::decode(bytes.clone(), path, dir)?;
        model.path = Some(path.to_path_buf());
        model.file_len = Some(file_len);
        model.source = Some(bytes);
        Ok(model)
    }

    /// Decodes a model held in memory; `dir` resolves external data, `origin` names it in errors.
    pub fn decode(bytes: Bytes, origin: &Path, dir: PathBuf) -> Result<Model, OnnxError> {
        let proto = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        let model = Model::from_proto(proto, dir);
        model.check_header(origin)?;
        Ok(model)
    }

    /// Wraps a model built in memory (tests, generators). External data resolves against `dir`.
    pub fn from_proto(proto: ModelProto, dir: PathBuf) -> Model {
        Model {
            proto,
            path: None,
            external: ExternalData::new(dir),
            file_len: None,
            source: None,
        }
    }

    /// A rewrite of `self` as `proto`, still read from `self`'s file: the tensors it kept are
    /// slices of that file, which the engines are handed by reference. Its path, length and
    /// digest are the file's, not the rewrite's.
    pub fn rewritten(&self, proto: ModelProto) -> Model {
        Model {
            proto,
            path: self.path.clone(),
            external: ExternalData::new(self.dir().to_path_buf()),
            file_len: self.file_len,
            source: self.source.clone(),
        }
    }

    fn check_header(&self, origin: &Path) -> Result<(), OnnxError> {
        let invalid = |what: String| OnnxError::Invalid {
            path: origin.to_path_buf(),
            what,
        };
        let Some(ir) = self.proto.ir_version else {
            return Err(invalid(
                "no ir_version field (not an ONNX model, or the file is truncated)".into(),
            ));
        };
        if !(MIN_IR_VERSION..=MAX_IR_VERSION).contains(&ir) {
            return Err(invalid(format!(
                "ir_version {ir} is not supported (mdeploy reads IR {MIN_IR_VERSION} to {MAX_IR_VERSION})"
            )));
        }
        let Some(graph) = self.proto.graph.as_ref() else {
            return Err(invalid("the model has no graph".into()));
        };
        if self.opset("").is_none() {
            // every ai.onnx node reads its meaning from that import: without it there is none
            fn first_standard(g: &super::proto::GraphProto) -> Option<&super::proto::NodeProto> {
                g.node.iter().find_map(|n| {
                    (normalize_domain(n.domain()).is_empty())
                        .then_some(n)
                        .or_else(|| crate::graph::subgraphs(n).find_map(first_standard))
                })
            }
            if let Some(n) = first_standard(graph) {
                let label = if n.name().is_empty() {
                    n.output.first().map_or("", String::as_str)
                } else {
                    n.name()
                };
                return Err(invalid(format!(
                    "node '{label}' ({}) is of the ai.onnx domain, which the model imports no \
                     opset of",
                    n.op_type()
                )));
            }
        }
        Ok(())
    }

    /// The file the model was loaded from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Size of the file the model was loaded from.
    pub fn file_len(&self) -> Option<u64> {
        self.file_len
    }

    /// The SHA-256 (hex) of the file the model was loaded from, hashed from the mapping (no copy).
    pub fn file_sha256(&self) -> Option<String> {
        use sha2::Digest;
        self.source
            .as_ref()
            .map(|s| hex::encode(sha2::Sha256::digest(s.as_ref())))
    }

    /// Where `bytes` sit in the file the model was loaded from, if they are a slice of it
    /// (tensor data nobody changed): lets another reader take them from the file directly.
    pub fn offset_in_source(&self, bytes: &Bytes) -> Option<u64> {
        let source = self.source.as_ref()?;
        let start = bytes.as_ptr() as usize;
        let base = source.as_ptr() as usize;
        (start >= base && start + bytes.len() <= base + source.len()).then(|| (start - base) as u64)
    }

    /// The directory external data locations are relative to.
    pub fn dir(&self) -> &Path {
        self.external.dir()
    }

    /// The main graph (its presence is checked on load).
    pub fn graph(&self) -> &GraphProto {
        self.proto.graph.as_ref().expect("checked on load")
    }

    pub fn graph_mut(&mut self) -> &mut GraphProto {
        self.proto.graph.get_or_insert_with(Default::default)
    }

    /// The imported version of an operator set; `""` and `"ai.onnx"` are the same domain.
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let want = normalize_domain(domain);
        self.proto
            .opset_import
            .iter()
            .find(|o| normalize_domain(o.domain()) == want)
            .map(|o| o.version())
    }

    /// Typed access to a tensor's data, wherever it is stored.
    pub fn tensor_data(&self, tensor: &TensorProto) -> Result<TensorData, OnnxError> {
        let external = match ExternalRef::of(tensor)? {
            Some(r) => Some(self.external.read(tensor.name(), &r)?),
            None => None,
        };
        TensorData::new(tensor, external)
    }

    /// The raw little-endian bytes of a tensor stored as `raw_data` or externally, if it is.
    pub fn raw_bytes(&self, tensor: &TensorProto) -> Result<Option<Bytes>, OnnxError> {
        match ExternalRef::of(tensor)? {
            Some(r) => Ok(Some(self.external.read(tensor.name(), &r)?)),
            None => Ok(tensor.raw_data.clone()),
        }
    }

    /// Resolves (and confines to the model directory) an external data location.
    pub fn external_path(&self, tensor: &str, location: &str) -> Result<PathBuf, OnnxError> {
        self.external.resolve(tensor, location)
    }
}

/// `""` and `"ai.onnx"` name the same default operator set.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}
