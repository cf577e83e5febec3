//! Saving a model: streamed protobuf encoding (no second in-memory copy of the weights), external
//! data side files for models past protobuf's 2 GiB limit, and atomic replacement so a failure
//! never leaves a half-written model behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes};
use prost::Message;

use super::error::OnnxError;
use super::external::{ExternalRef, map_file};
use super::load::Model;
use super::proto::tensor_proto::DataLocation;
use super::proto::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};

/// Protobuf messages cannot exceed 2 GiB; past this, tensors must move to external data.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;

/// Where tensor data goes when a model is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalDataPolicy {
    /// Inline everything, unless the model would pass the protobuf limit; then as `External`.
    Auto,
    /// Tensors of at least `threshold` bytes go to one side file named `<model file>.data`.
    External { threshold: usize },
}

#[derive(Debug, Clone, Copy)]
pub struct SaveOptions {
    pub external_data: ExternalDataPolicy,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            external_data: ExternalDataPolicy::Auto,
        }
    }
}

/// What a save wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SaveSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub external_data_file: Option<PathBuf>,
    pub external_data_bytes: u64,
    pub external_tensors: usize,
}

/// Tensors at least this large go external when a model must be split (onnx uses 1 KiB too).
const AUTO_THRESHOLD: usize = 1024;
/// Offsets of external tensors are aligned so each can be memory-mapped and read in place.
const EXTERNAL_ALIGN: u64 = 64;

impl Model {
    /// Writes the model to `path`. Nothing is at `path` (or its data file) until all is written.
    pub fn save(&self, path: &Path, options: SaveOptions) -> Result<SaveSummary, OnnxError> {
        if let Some(src) = self.path()
            && same_file(src, path)
        {
            return Err(OnnxError::Invalid {
                path: path.to_path_buf(),
                what: "is the input model; mdeploy never overwrites its input".into(),
            });
        }
        let mut proto = self.proto.clone();
        let threshold = match options.external_data {
            ExternalDataPolicy::External { threshold } => Some(threshold),
            ExternalDataPolicy::Auto => {
                // external bytes count too: inline them only when the result fits
                let inlined = proto.encoded_len() as u64 + self.external_bytes(&mut proto)?;
                (inlined > PROTOBUF_LIMIT).then_some(AUTO_THRESHOLD)
            }
        };
        let mut data = DataFile::default();
        let data_name = format!("{}.data", file_name(path)?);
        relocate_tensors(&mut proto, &mut |t| {
            self.place_tensor(t, threshold, &data_name, &mut data)
        })?;
        if proto.encoded_len() as u64 > PROTOBUF_LIMIT {
            return Err(OnnxError::Invalid {
                path: path.to_path_buf(),
                what: "is over 2 GiB even with external data (graph structure too large)".into(),
            });
        }
        let data_path = path.with_file_name(&data_name);
        let external_data_bytes = data.len;
        if !data.chunks.is_empty() {
            write_atomically(&data_path, |w| {
                for (offset, bytes) in &data.chunks {
                    w.pad_to(*offset)?;
                    w.write_all(bytes)?;
                }
                Ok(())
            })?;
        }
        let bytes = write_atomically(path, |w| {
            let mut sink = WriteSink::new(w);
            proto.encode(&mut sink).map_err(std::io::Error::other)?;
            sink.finish()
        })?;
        Ok(SaveSummary {
            path: path.to_path_buf(),
            bytes,
            external_data_file: (!data.chunks.is_empty()).then_some(data_path),
            external_data_bytes,
            external_tensors: data.chunks.len(),
        })
    }

    /// Total bytes of the tensors of `proto` (this model's, or a copy) stored in external files.
    fn external_bytes(&self, proto: &mut ModelProto) -> Result<u64, OnnxError> {
        let mut total = 0u64;
        relocate_tensors(proto, &mut |t| {
            if ExternalRef::of(t)?.is_some() {
                total += self.raw_bytes(t)?.map_or(0, |b| b.len() as u64);
            }
            Ok(())
        })?;
        Ok(total)
    }

    /// Inlines an external tensor, or moves a large one to the data file, as `threshold` asks.
    fn place_tensor(
        &self,
        t: &mut TensorProto,
        threshold: Option<usize>,
        data_name: &str,
        data: &mut DataFile,
    ) -> Result<(), OnnxError> {
        let is_external = ExternalRef::of(t)?.is_some();
        let raw = match (is_external, threshold) {
            (false, None) => return Ok(()),
            (false, Some(_)) if t.raw_data.is_none() => return Ok(()), // typed fields stay
            _ => self.raw_bytes(t)?.unwrap_or_default(),
        };
        match threshold {
            Some(limit) if raw.len() >= limit => {
                let offset = data.push(raw.clone());
                t.raw_data = None;
                t.data_location = Some(DataLocation::External as i32);
                t.external_data = vec![
                    entry("location", data_name),
                    entry("offset", &offset.to_string()),
                    entry("length", &raw.len().to_string()),
                ];
            }
            _ => {
                t.raw_data = Some(raw);
                t.data_location = None;
                t.external_data.clear();
            }
        }
        Ok(())
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

#[derive(Default)]
struct DataFile {
    chunks: Vec<(u64, Bytes)>,
    len: u64,
}

impl DataFile {
    fn push(&mut self, bytes: Bytes) -> u64 {
        let offset = self.len.next_multiple_of(EXTERNAL_ALIGN);
        self.len = offset + bytes.len() as u64;
        self.chunks.push((offset, bytes));
        offset
    }
}

/// Calls `f` on every tensor that can hold weights: initializers, sparse initializers and tensor
/// attributes, in every graph of the model (subgraphs, functions, training graphs).
pub(crate) fn relocate_tensors(
    proto: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    if let Some(g) = proto.graph.as_mut() {
        graph_tensors(g, f)?;
    }
    for t in &mut proto.training_info {
        for g in [t.initialization.as_mut(), t.algorithm.as_mut()]
            .into_iter()
            .flatten()
        {
            graph_tensors(g, f)?;
        }
    }
    for func in &mut proto.functions {
        for n in &mut func.node {
            for a in &mut n.attribute {
                attribute_tensors(a, f)?;
            }
        }
    }
    Ok(())
}

fn graph_tensors(
    g: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in [s.values.as_mut(), s.indices.as_mut()]
            .into_iter()
            .flatten()
        {
            f(t)?;
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            attribute_tensors(a, f)?;
        }
    }
    Ok(())
}

fn attribute_tensors(
    a: &mut super::proto::AttributeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
        f(t)?;
    }
    for s in a
        .sparse_tensor
        .iter_mut()
        .chain(a.sparse_tensors.iter_mut())
    {
        for t in [s.values.as_mut(), s.indices.as_mut()]
            .into_iter()
            .flatten()
        {
            f(t)?;
        }
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        graph_tensors(g, f)?;
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<String, OnnxError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| OnnxError::Invalid {
            path: path.to_path_buf(),
            what: "has no UTF-8 file name".into(),
        })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A writer that counts what it wrote, so a data file can be padded to an offset.
pub struct CountingWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn pad_to(&mut self, offset: u64) -> std::io::Result<()> {
        const ZEROS: [u8; EXTERNAL_ALIGN as usize] = [0; EXTERNAL_ALIGN as usize];
        while self.written < offset {
            let n = (offset - self.written).min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..n])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a file through `body` into a temporary file beside `path`, then renames it into place.
/// Returns the bytes written. On any error the temporary file is removed and `path` is untouched.
pub fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut CountingWriter<BufWriter<&mut File>>) -> std::io::Result<()>,
) -> Result<u64, OnnxError> {
    write_atomically_unless_same(path, false, body).map(|(written, _)| written)
}

/// [`write_atomically`], except that with `keep_identical` a `path` that already holds exactly
/// the new bytes is left untouched (its mtime too, which keeps `make` from rebuilding).
/// Returns the bytes written and whether `path` was left as it was.
pub fn write_atomically_unless_same(
    path: &Path,
    keep_identical: bool,
    body: impl FnOnce(&mut CountingWriter<BufWriter<&mut File>>) -> std::io::Result<()>,
) -> Result<(u64, bool), OnnxError> {
    let write_err = |e| OnnxError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mdeploy-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let written = {
        let mut w = CountingWriter {
            inner: BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
            written: 0,
        };
        body(&mut w).map_err(write_err)?;
        w.flush().map_err(write_err)?;
        w.written
    };
    if keep_identical
        && let (Ok(old), Ok(new)) = (map_file(path), map_file(tmp.path()))
        && old == new
    {
        return Ok((written, true));
    }
    tmp.as_file().sync_all().map_err(write_err)?;
    set_default_permissions(tmp.as_file()).map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok((written, false))
}

/// Writes bytes to `path` atomically (see [`write_atomically`]).
pub fn save_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<u64, OnnxError> {
    write_atomically(path, |w| w.write_all(bytes))
}

/// Temporary files are created 0600; a model is an ordinary file (0644 less the umask).
fn set_default_permissions(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// A `BufMut` that streams prost's encoder into a writer through a fixed buffer, so encoding a
/// model never holds a second full copy of it in memory. Large slices (tensor payloads) are
/// written straight through.
struct WriteSink<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
    error: Option<std::io::Error>,
}

const SINK_CAPACITY: usize = 1 << 16;

impl<'w, W: Write> WriteSink<'w, W> {
    fn new(out: &'w mut W) -> Self {
        WriteSink {
            out,
            buf: Vec::with_capacity(SINK_CAPACITY),
            error: None,
        }
    }

    fn flush_buf(&mut self) {
        if self.error.is_none()
            && !self.buf.is_empty()
            && let Err(e) = self.out.write_all(&self.buf)
        {
            self.error = Some(e);
        }
        self.buf.clear();
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

// SAFETY: `chunk_mut` hands out only the spare capacity of `buf`, and `advance_mut` only grows the
// length over bytes the caller has initialised, as the trait requires.
unsafe impl<W: Write> BufMut for WriteSink<'_, W> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity());
        // SAFETY: the caller initialised `cnt` bytes of the spare capacity.
        unsafe { self.buf.set_len(len) };
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SINK_CAPACITY {
            self.flush_buf();
            if self.error.is_none()
                && let Err(e) = self.out.write_all(src)
            {
                self.error = Some(e);
            }
        } else {
            if self.buf.len() + src.len() > self.buf.capacity() {
                self.flush_buf();
            }
            self.buf.extend_from_slice(src);
        }
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::graph::builder::raw_tensor;
    use crate::onnx::DataType;

    fn model_with(sizes: &[usize]) -> ModelProto {
        let mut b = ModelBuilder::new(17).input("x", DataType::Float, &["1"]);
        for (i, &n) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..n * 4).map(|k| (k * 31 + i) as u8).collect();
            b = b.initializer(raw_tensor(
                &format!("w{i}"),
                DataType::Float,
                &[n as i64],
                bytes,
            ));
        }
        b.node("Identity", &["x"], &["y"])
            .output("y", DataType::Float, &["1"])
            .build()
    }

    #[test]
    fn streamed_encoding_equals_prost_encoding() {
        // payloads below, at and far above the sink's buffer size
        let proto = model_with(&[3, SINK_CAPACITY / 4, SINK_CAPACITY, 5 * SINK_CAPACITY + 7]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let summary = Model::from_proto(proto.clone(), dir.path().into())
            .save(&path, SaveOptions::default())
            .unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, proto.encode_to_vec());
        assert_eq!(summary.bytes, written.len() as u64);
        assert!(summary.external_data_file.is_none());
    }

    #[test]
    fn external_policy_moves_large_tensors_and_loads_back_the_same_values() {
        let proto = model_with(&[2, 1000, 300]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let policy = ExternalDataPolicy::External { threshold: 1024 };
        let summary = Model::from_proto(proto.clone(), dir.path().into())
            .save(
                &path,
                SaveOptions {
                    external_data: policy,
                },
            )
            .unwrap();
        assert_eq!(
            summary.external_tensors, 2,
            "the 8-byte tensor stays inline"
        );
        let data = std::fs::read(dir.path().join("m.onnx.data")).unwrap();
        assert_eq!(data.len() as u64, summary.external_data_bytes);
        let loaded = Model::load(&path).unwrap();
        let g = loaded.graph();
        for (orig, back) in proto
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .zip(&g.initializer)
        {
            let r = ExternalRef::of(back).unwrap();
            if let Some(r) = &r {
                assert_eq!(r.offset % EXTERNAL_ALIGN, 0);
            }
            assert_eq!(
                loaded.raw_bytes(back).unwrap(),
                orig.raw_data,
                "{}",
                orig.name()
            );
        }
        // saving again with the default policy inlines everything: the original bytes return
        let inlined = dir.path().join("inlined.onnx");
        loaded.save(&inlined, SaveOptions::default()).unwrap();
        assert_eq!(std::fs::read(&inlined).unwrap(), proto.encode_to_vec());
    }

    #[test]
    fn failed_saves_leave_nothing_and_never_touch_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let proto = model_with(&[4]);
        Model::from_proto(proto.clone(), dir.path().into())
            .save(&path, SaveOptions::default())
            .unwrap();
        let loaded = Model::load(&path).unwrap();
        let err = loaded
            .save(&path, SaveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("never overwrites its input"), "{err}");
        let missing = dir.path().join("no/such/dir/out.onnx");
        assert!(loaded.save(&missing, SaveOptions::default()).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(std::fs::read(&path).unwrap(), proto.encode_to_vec());
    }
}
