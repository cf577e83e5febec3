//! `pack` / `unpack`: signed, versioned, reproducible model archives (`.mdpkg`).
//!
//! An archive is a zstd-compressed tar holding `mdeploy.json` (the manifest) first, `model.sig`
//! (an OpenSSF model signature) second when signed, then the model, its external data and the
//! included files in path order. Packing the same inputs with the same key gives the same bytes.
//! Unpacking verifies while it reads and moves the extracted directory into place only when every
//! digest and the signature check out; anything unexpected fails closed and leaves nothing behind.

pub mod archive;
pub mod keys;
pub mod manifest;
pub mod signature;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::onnx::Model;
use crate::onnx::external::{ExternalRef, map_file};
use crate::pipeline::optimize::OptimizeDocument;
use crate::verify::VerifyReport;
use archive::Entry;
use manifest::{
    ARCHIVE_FORMAT, CreatedBy, FileEntry, Lineage, MANIFEST_FILE, Manifest, ModelEntry, Precision,
};
use signature::{Digests, SIGNATURE_FILE, SignatureError};

/// What can go wrong packing or unpacking.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(String),
    #[error(transparent)]
    Model(#[from] crate::graph::ModelError),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// An archive entry (or the archive itself) refused by unpack.
    #[error("archive entry '{entry}' rejected: {reason}")]
    Rejected { entry: String, reason: String },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the archive is not signed (pass --allow-unsigned to accept it)")]
    Unsigned,
}

impl PackError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PackError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is a failed check of an archive or signature (exit 1) rather than bad input.
    pub fn is_check_failure(&self) -> bool {
        matches!(
            self,
            PackError::Rejected { .. } | PackError::Signature(_) | PackError::Unsigned
        )
    }
}

/// What to pack.
pub struct PackOptions {
    pub model: PathBuf,
    pub output: PathBuf,
    pub name: String,
    pub version: String,
    pub key: Option<SigningKey>,
    pub include: Vec<PathBuf>,
    pub optimize_report: Option<OptimizeDocument>,
    pub verify_report: Option<VerifyReport>,
    pub metadata: BTreeMap<String, String>,
    /// zstd level (1..=22).
    pub level: i32,
    pub threads: u32,
    /// Entry modification time (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: u64,
    /// A `model_signing` signature of the model's directory and the key to check it with.
    pub source_signature: Option<(PathBuf, VerifyingKey)>,
}

/// What pack wrote.
#[derive(Debug, Serialize)]
pub struct PackSummary {
    pub path: String,
    pub bytes: u64,
    /// The output already held these exact bytes and was left untouched.
    pub unchanged: bool,
    pub files: usize,
    pub input_bytes: u64,
    pub signed: bool,
    pub seconds: f64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Packs a model into an archive.
pub fn pack(o: &PackOptions) -> Result<(Manifest, PackSummary), PackError> {
    pack_with_progress(o, &crate::progress::NoProgress)
}

/// [`pack`], reporting the files hashed (in bytes) to `progress`.
pub fn pack_with_progress(
    o: &PackOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<(Manifest, PackSummary), PackError> {
    let start = std::time::Instant::now();
    semver::Version::parse(&o.version).map_err(|e| {
        PackError::Usage(format!(
            "--version '{}' is not a semantic version: {e}",
            o.version
        ))
    })?;
    if o.name.is_empty() || o.name.contains(['/', '\\']) {
        return Err(PackError::Usage(format!(
            "--name '{}' must be a non-empty name without slashes",
            o.name
        )));
    }
    let model = Model::load(&o.model)?;
    crate::graph::check_model(&model)?;
    let source_signature = match &o.source_signature {
        Some((sig, key)) => {
            let signed = signature::verify_directory(model.dir(), sig, key)?;
            Some(serde_json::json!({
                "format": "model_signing/v1.0",
                "key_hint": signature::key_hint(key)?,
                "model_name": signed.model_name,
                "files": signed.files.len(),
            }))
        }
        None => None,
    };
    let files = collect_files(&model, &o.model, &o.include)?;
    progress.on_start(
        "hash files",
        files.iter().map(|e| e.data.len() as u64).sum(),
    );
    let digests: Vec<FileEntry> = files
        .iter()
        .map(|e| {
            let entry = FileEntry {
                path: e.path.clone(),
                size: e.data.len() as u64,
                sha256: sha256_hex(&e.data),
            };
            progress.on_advance(entry.size);
            entry
        })
        .collect();
    progress.on_finish();
    let mut manifest = build_manifest(o, &model, digests)?;
    manifest.lineage.source_signature = source_signature;
    let manifest_bytes = to_json(&manifest)?;
    let mut entries = vec![Entry {
        path: MANIFEST_FILE.into(),
        data: Bytes::from(manifest_bytes.clone()),
    }];
    if let Some(key) = &o.key {
        let mut signed: Digests = BTreeMap::new();
        signed.insert(MANIFEST_FILE.into(), Sha256::digest(&manifest_bytes).into());
        for f in &manifest.files {
            signed.insert(
                f.path.clone(),
                hex::decode(&f.sha256)
                    .expect("hex we wrote")
                    .try_into()
                    .expect("32 bytes"),
            );
        }
        let bundle = signature::sign(&o.name, &signed, key)?;
        entries.push(Entry {
            path: SIGNATURE_FILE.into(),
            data: Bytes::from(bundle),
        });
    }
    entries.extend(files);
    let input_bytes = entries.iter().map(|e| e.data.len() as u64).sum();
    // an output already holding these bytes is left alone, so `make` sees nothing new
    let (bytes, unchanged) =
        crate::onnx::save::write_atomically_unless_same(&o.output, true, |w| {
            archive::write(w, &entries, o.mtime, o.level, o.threads).map_err(std::io::Error::other)
        })?;
    let summary = PackSummary {
        path: o.output.display().to_string(),
        bytes,
        unchanged,
        files: entries.len(),
        input_bytes,
        signed: o.key.is_some(),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((manifest, summary))
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, PackError> {
    let mut bytes = serde_json::to_vec_pretty(v).map_err(|e| PackError::Usage(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The model file, its external data files and the included files, sorted by archive path.
fn collect_files(model: &Model, path: &Path, include: &[PathBuf]) -> Result<Vec<Entry>, PackError> {
    let file_name = |p: &Path| -> Result<String, PackError> {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| PackError::Usage(format!("{} has no UTF-8 file name", p.display())))
    };
    let mut entries = vec![Entry {
        path: file_name(path)?,
        data: map_file(path)?,
    }];
    let mut locations: Vec<String> = Vec::new();
    let mut proto = model.proto.clone();
    crate::onnx::save::relocate_tensors(&mut proto, &mut |t| {
        if let Some(r) = ExternalRef::of(t)?
            && !locations.contains(&r.location)
        {
            model.external_path(t.name(), &r.location)?;
            locations.push(r.location);
        }
        Ok(())
    })?;
    for loc in locations {
        let name = archive::check_name(loc.as_bytes()).map_err(|_| {
            PackError::Usage(format!("external data location '{loc}' cannot be stored"))
        })?;
        entries.push(Entry {
            data: map_file(&model.dir().join(&loc))?,
            path: name,
        });
    }
    for inc in include {
        if !inc.is_file() {
            return Err(PackError::Usage(format!(
                "--include {}: not a file",
                inc.display()
            )));
        }
        entries.push(Entry {
            path: format!("files/{}", file_name(inc)?),
            data: map_file(inc)?,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(PackError::Usage(format!(
            "two files would be stored as '{}'",
            w[0].path
        )));
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.path == MANIFEST_FILE || e.path == SIGNATURE_FILE)
    {
        return Err(PackError::Usage(format!(
            "a model file may not be named '{}'",
            e.path
        )));
    }
    Ok(entries)
}

/// How `model` is quantized, from the ops and parameter types `info` found in it (the
/// manifest's `precision.quantization`). Ops match in any domain (onnxruntime's contrib
/// QuantizeLinear is `com.microsoft::QuantizeLinear`).
fn quantization(info: &crate::inspect::Inspection, model: &Model) -> &'static str {
    let ops = &info.op_types;
    let op = |key: &str| key.rsplit("::").next().unwrap_or(key).to_string();
    let names: std::collections::HashSet<String> = ops.keys().map(|k| op(k)).collect();
    let has = |wanted: &[&str]| wanted.iter().any(|n| names.contains(*n));
    if has(&[
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
    ]) {
        "dynamic"
    } else if has(&[
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "QGemm",
        "QAttention",
    ]) || names.iter().any(|n| n.starts_with("QLinear"))
    {
        "qoperator"
    } else if has(&["QuantizeLinear"]) {
        "qdq"
    } else if has(&["MatMulNBits", "GatherBlockQuantized"])
        || dequantizes_a_constant(model)
        || int8_weights(info)
    {
        // weights dequantized (int4 blocks), in onnxruntime's packed 4-bit ops, or widened
        // through Casts (int8 embedding rows), and no activation quantized
        "weight-only"
    } else {
        "none"
    }
}

/// Whether a DequantizeLinear of `model`'s main graph reads a constant (a weight): one that
/// reads an input dequantizes data, not weights.
fn dequantizes_a_constant(model: &Model) -> bool {
    let g = model.graph();
    let constants: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .map(|t| t.name())
        .chain(
            g.node
                .iter()
                .filter(|n| n.op_type() == "Constant")
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    g.node.iter().any(|n| {
        n.op_type() == "DequantizeLinear"
            && n.input
                .first()
                .is_some_and(|x| constants.contains(x.as_str()))
    })
}

/// Whether `info`'s model has int8 or int4 parameters of weight size: an int8 mask or a uint8
/// pixel constant in a float model is no quantized weight.
fn int8_weights(info: &crate::inspect::Inspection) -> bool {
    let elements = |t: &str| info.parameters.by_dtype.get(t).map_or(0, |d| d.count);
    elements("INT8") + elements("INT4") >= crate::quantize::weights::MIN_WEIGHT_ELEMENTS as u64
}

fn build_manifest(
    o: &PackOptions,
    model: &Model,
    files: Vec<FileEntry>,
) -> Result<Manifest, PackError> {
    let info = crate::inspect::inspect(model)?;
    let to_values = |v: &[crate::inspect::ValueDesc]| -> Vec<Value> {
        v.iter()
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect()
    };
    let entry_point = files
        .iter()
        .find(|f| Some(f.path.as_str()) == o.model.file_name().and_then(|n| n.to_str()));
    let model_sha = entry_point.map(|f| f.sha256.clone()).unwrap_or_default();
    let external_data = files
        .iter()
        .filter(|f| !f.path.starts_with("files/") && Some(&f.path) != entry_point.map(|e| &e.path))
        .map(|f| f.path.clone())
        .collect();
    let quantization = quantization(&info, model);
    // both reports: the verification must have compared the optimized model with the model the
    // optimization started from, not with something else (or itself)
    if let (Some(opt), Some(v)) = (&o.optimize_report, &o.verify_report)
        && v.candidate.is_some()
        && v.reference_sha256.is_some()
        && v.reference_sha256 != opt.input.sha256
    {
        return Err(PackError::Usage(format!(
            "the verify report's reference (sha256 {}) is not the model the optimize report \
             started from (sha256 {})",
            v.reference_sha256.as_deref().unwrap_or("-"),
            opt.input.sha256.as_deref().unwrap_or("-")
        )));
    }
    let source_sha256 = match &o.optimize_report {
        Some(report) => optimize_source(report, &model_sha)?,
        None => model_sha.clone(),
    };
    Ok(Manifest {
        format: ARCHIVE_FORMAT.into(),
        name: o.name.clone(),
        version: o.version.clone(),
        model: ModelEntry {
            entry_point: entry_point.map(|f| f.path.clone()).unwrap_or_default(),
            external_data,
        },
        inputs: to_values(&info.inputs),
        outputs: to_values(&info.outputs),
        opsets: info
            .opset_import
            .iter()
            .map(|op| serde_json::to_value(op).unwrap_or(Value::Null))
            .collect(),
        precision: Precision {
            parameter_dtypes: info
                .parameters
                .by_dtype
                .iter()
                .map(|(k, v)| (k.clone(), v.count))
                .collect(),
            quantization: quantization.into(),
        },
        parameters: info.parameters.count,
        lineage: Lineage {
            source_sha256,
            optimize: o
                .optimize_report
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| PackError::Usage(format!("the optimize report: {e}")))?,
            verify: o
                .verify_report
                .as_ref()
                .map(|v| verify_summary(v, &model_sha))
                .transpose()?,
            source_signature: None,
        },
        files,
        created_by: CreatedBy {
            tool: "mdeploy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        metadata: o.metadata.clone(),
        signed: o.key.is_some(),
    })
}

/// The source an optimize report names, once it is known to describe the model being packed (its
/// output's digest is the packed model's): a signed archive must not vouch for lineage nobody
/// checked.
fn optimize_source(report: &OptimizeDocument, packed_sha256: &str) -> Result<String, PackError> {
    match report.output.as_ref().and_then(|o| o.sha256.as_deref()) {
        Some(sha) if sha == packed_sha256 => {}
        Some(sha) => {
            return Err(PackError::Usage(format!(
                "the optimize report describes another model (its output has sha256 {sha}, the \
                 model packed has {packed_sha256})"
            )));
        }
        None => {
            return Err(PackError::Usage(
                "the optimize report names no output digest (write it with mdeploy optimize \
                 --report)"
                    .into(),
            ));
        }
    }
    report
        .input
        .sha256
        .clone()
        .ok_or_else(|| PackError::Usage("the optimize report names no input digest".into()))
}

/// The parts of a verify report an archive keeps: the verdict and per-output evidence, once the
/// report is known to vouch for the model being packed and to have passed.
fn verify_summary(report: &VerifyReport, packed_sha256: &str) -> Result<Value, PackError> {
    match report.checked_sha256() {
        Some(sha) if sha == packed_sha256 => {}
        Some(sha) => {
            return Err(PackError::Usage(format!(
                "the verify report checked another model (sha256 {sha}, the model packed has \
                 {packed_sha256})"
            )));
        }
        None => {
            return Err(PackError::Usage(
                "the verify report names no model digest (write it with mdeploy verify --report)"
                    .into(),
            ));
        }
    }
    if report.status != crate::verify::Status::Passed {
        return Err(PackError::Usage(format!(
            "the verify report says the model {}: an archive records passed checks only",
            match report.status {
                crate::verify::Status::Unsupported => "could not be verified",
                _ => "failed verification",
            }
        )));
    }
    let outputs: Vec<Value> = report
        .outputs
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name, "passed": o.passed, "max_abs_error": o.max_abs_error,
                "cosine_similarity": o.cosine_similarity, "sqnr_db": o.sqnr_db,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "status": report.status, "mode": report.mode, "samples": report.samples,
        "tolerance": report.tolerance.preset, "mdeploy_version": report.mdeploy_version,
        "model_sha256": packed_sha256, "reference_sha256": report.reference_sha256,
        "outputs": outputs,
    }))
}

/// The limits of what a manifest entry may be, read before anything is trusted.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// What unpack found.
#[derive(Debug, Serialize)]
pub struct UnpackSummary {
    pub manifest: Manifest,
    /// `verified` (signature checked with the given key) or `unsigned` (accepted on request).
    pub signature: &'static str,
    pub files: usize,
    pub bytes: u64,
}

/// Where unpacked files go: a directory being filled, or nowhere (`--check`).
enum Sink<'a> {
    Dir(&'a Path),
    Discard,
}

fn read_small(name: &str, size: u64, limit: u64, r: &mut dyn Read) -> Result<Vec<u8>, PackError> {
    if size > limit {
        return Err(PackError::Rejected {
            entry: name.into(),
            reason: format!("is {size} bytes, more than {limit}"),
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    r.take(size)
        .read_to_end(&mut buf)
        .map_err(|e| PackError::Rejected {
            entry: name.into(),
            reason: e.to_string(),
        })?;
    Ok(buf)
}

/// Verifies an archive while reading it; with `dest`, extracts it there (a directory that must
/// not exist yet), renaming a fully checked temporary directory into place.
pub fn unpack(
    archive_path: &Path,
    dest: Option<&Path>,
    key: Option<&VerifyingKey>,
    allow_unsigned: bool,
) -> Result<UnpackSummary, PackError> {
    let file = std::fs::File::open(archive_path).map_err(|e| PackError::io(archive_path, e))?;
    let staging = match dest {
        Some(d) => {
            if d.exists() {
                return Err(PackError::Usage(format!(
                    "{} exists; unpack writes a new directory",
                    d.display()
                )));
            }
            let parent = match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            Some(
                tempfile::Builder::new()
                    .prefix(".mdeploy-unpack-")
                    .tempdir_in(parent)
                    .map_err(|e| PackError::io(parent, e))?,
            )
        }
        None => None,
    };
    let sink = match &staging {
        Some(t) => Sink::Dir(t.path()),
        None => Sink::Discard,
    };
    let summary = read_verified(
        std::io::BufReader::new(file),
        &sink,
        key,
        allow_unsigned,
        false,
    )?;
    if let (Some(tmp), Some(dest)) = (staging, dest) {
        let tmp = tmp.keep();
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            PackError::io(dest, e)
        })?;
    }
    Ok(summary)
}

/// The checks unpack makes, in stream order. `inspect_only` reads a signed archive without a key
/// (its signature then stays unchecked); every digest is checked all the same.
fn read_verified(
    input: impl Read,
    sink: &Sink,
    key: Option<&VerifyingKey>,
    allow_unsigned: bool,
    inspect_only: bool,
) -> Result<UnpackSummary, PackError> {
    let mut manifest: Option<Manifest> = None;
    let mut signature_checked = false;
    let mut signature_skipped = false;
    let mut index = 0usize;
    let mut done: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    archive::read(input, |name, size, reader| {
        let rejected = |reason: String| PackError::Rejected {
            entry: name.to_string(),
            reason,
        };
        index += 1;
        match (index, name) {
            (1, MANIFEST_FILE) => {
                let raw = read_small(name, size, MAX_MANIFEST_BYTES, reader)?;
                let m: Manifest = serde_json::from_slice(&raw)
                    .map_err(|e| rejected(format!("is not a manifest: {e}")))?;
                if m.format != ARCHIVE_FORMAT {
                    return Err(rejected(format!(
                        "has format '{}', expected {ARCHIVE_FORMAT}",
                        m.format
                    )));
                }
                store(sink, name, &raw)?;
                // the manifest's own digest is checked against the signature (next entry)
                manifest = Some(m);
                done.push(format!("{}={}", name, sha256_hex(&raw)));
                Ok(())
            }
            (1, _) => Err(rejected(format!(
                "the archive must start with {MANIFEST_FILE}"
            ))),
            (2, SIGNATURE_FILE) => {
                let m = manifest.as_ref().expect("entry 1 is the manifest");
                let raw = read_small(name, size, MAX_SIGNATURE_BYTES, reader)?;
                let Some(key) = key else {
                    if inspect_only {
                        signature_skipped = true;
                        return Ok(());
                    }
                    return Err(PackError::Usage(
                        "the archive is signed: give --key PUB to verify it".into(),
                    ));
                };
                let signed = signature::verify(&raw, key)?;
                let manifest_digest = done[0]
                    .split_once('=')
                    .map(|(_, d)| d.to_string())
                    .unwrap_or_default();
                check_signed_files(m, &signed.files, &manifest_digest)?;
                store(sink, name, &raw)?;
                signature_checked = true;
                Ok(())
            }
            _ => {
                let m = manifest.as_ref().expect("entry 1 is the manifest");
                if m.signed && !signature_checked && !signature_skipped {
                    return Err(PackError::Rejected {
                        entry: SIGNATURE_FILE.into(),
                        reason: format!(
                            "is announced by the manifest but missing (found '{name}' in its place)"
                        ),
                    });
                }
                if index == 2 && !allow_unsigned {
                    return Err(PackError::Unsigned);
                }
                let entry = m
                    .file(name)
                    .ok_or_else(|| rejected("is not listed in the manifest".into()))?;
                if size != entry.size {
                    return Err(rejected(format!(
                        "is {size} bytes, the manifest says {}",
                        entry.size
                    )));
                }
                let digest = copy_hashed(sink, name, size, reader)?;
                if digest != entry.sha256 {
                    return Err(rejected("does not match its sha256 in the manifest".into()));
                }
                bytes += size;
                done.push(name.to_string());
                Ok(())
            }
        }
    })?;
    let manifest = manifest.ok_or_else(|| PackError::Rejected {
        entry: "(archive)".into(),
        reason: "is empty".into(),
    })?;
    if manifest.signed && !signature_checked && !signature_skipped {
        return Err(PackError::Rejected {
            entry: SIGNATURE_FILE.into(),
            reason: "is announced by the manifest but missing".into(),
        });
    }
    if !manifest.signed && !allow_unsigned {
        return Err(PackError::Unsigned);
    }
    if let Some(missing) = manifest.files.iter().find(|f| !done.contains(&f.path)) {
        return Err(PackError::Rejected {
            entry: missing.path.clone(),
            reason: "is listed in the manifest but missing".into(),
        });
    }
    let files = manifest.files.len();
    let signature = match (signature_checked, signature_skipped) {
        (true, _) => "verified",
        (false, true) => "not checked",
        _ => "unsigned",
    };
    Ok(UnpackSummary {
        manifest,
        signature,
        files,
        bytes,
    })
}

/// The signature must list exactly the manifest and the files the manifest lists, with the same
/// digests: then the manifest vouches for nothing the key did not sign.
fn check_signed_files(
    m: &Manifest,
    signed: &Digests,
    manifest_digest: &str,
) -> Result<(), PackError> {
    let mut expected: Digests = BTreeMap::new();
    let bad = |reason: &str| PackError::Signature(SignatureError::Mismatch(reason.to_string()));
    expected.insert(
        MANIFEST_FILE.into(),
        hex::decode(manifest_digest)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| bad("manifest digest"))?,
    );
    for f in &m.files {
        let d = hex::decode(&f.sha256)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| bad("a manifest digest is not sha256"))?;
        expected.insert(f.path.clone(), d);
    }
    signature::compare(&expected, signed).map_err(PackError::Signature)
}

fn store(sink: &Sink, name: &str, bytes: &[u8]) -> Result<(), PackError> {
    copy_hashed(sink, name, bytes.len() as u64, &mut &bytes[..]).map(|_| ())
}

/// Copies exactly `size` bytes to the sink, hashing them; returns the sha256 hex.
fn copy_hashed(
    sink: &Sink,
    name: &str,
    size: u64,
    reader: &mut dyn Read,
) -> Result<String, PackError> {
    let mut out: Box<dyn Write> = match sink {
        Sink::Dir(dir) => {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| PackError::io(parent, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| PackError::io(&path, e))?;
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
        }
        Sink::Discard => Box::new(std::io::sink()),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = reader
            .read(&mut buf[..want])
            .map_err(|e| PackError::Rejected {
                entry: name.into(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Err(PackError::Rejected {
                entry: name.into(),
                reason: "is truncated".into(),
            });
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| PackError::io(Path::new(name), e))?;
        left -= n as u64;
    }
    out.flush().map_err(|e| PackError::io(Path::new(name), e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Reads an archive for `inspect`: every digest is checked, the signature when a key is given.
pub fn inspect_archive(
    archive_path: &Path,
    key: Option<&VerifyingKey>,
) -> Result<UnpackSummary, PackError> {
    let file = std::fs::File::open(archive_path).map_err(|e| PackError::io(archive_path, e))?;
    check_archive(std::io::BufReader::new(file), key)
}

/// Checks an archive read from `input` (every digest; the signature when a key is given)
/// without writing anything: what `inspect` and `unpack --check` do, for any reader.
pub fn check_archive(
    input: impl Read,
    key: Option<&VerifyingKey>,
) -> Result<UnpackSummary, PackError> {
    read_verified(input, &Sink::Discard, key, true, true)
}

#[cfg(test)]
mod tests {
    use crate::graph::builder::{ModelBuilder, attr_int, raw_tensor};
    use crate::onnx::{DataType, Model};

    fn quantization_of(proto: crate::onnx::proto::ModelProto) -> &'static str {
        let model = Model::from_proto(proto, std::env::temp_dir());
        super::quantization(&crate::inspect::inspect(&model).unwrap(), &model)
    }

    /// int8 embedding rows read through a Cast, with no quantizing op: the weights are quantized,
    /// and the manifest says so rather than "none".
    #[test]
    fn integer_parameters_without_quantizing_ops_are_weight_only() {
        let rows = ModelBuilder::new(17)
            .input("ids", DataType::Int64, &["3"])
            .initializer(raw_tensor("E", DataType::Int8, &[128, 2], vec![1; 256]))
            .node("Gather", &["E", "ids"], &["r"])
            .node("Cast", &["r"], &["y"])
            .attr(attr_int("to", DataType::Float.code().into()))
            .output("y", DataType::Float, &["3", "2"])
            .build();
        assert_eq!(quantization_of(rows), "weight-only");
        // int4 blocks dequantized for a MatMul: weights only, too
        let blocks = ModelBuilder::new(21)
            .input("x", DataType::Float, &["1", "2"])
            .initializer(raw_tensor("W", DataType::Int8, &[2, 2], vec![1, 2, 3, 4]))
            .initializer_f32("s", &[], &[0.5])
            .node("DequantizeLinear", &["W", "s"], &["w"])
            .node("MatMul", &["x", "w"], &["y"])
            .output("y", DataType::Float, &["1", "2"])
            .build();
        assert_eq!(quantization_of(blocks), "weight-only");
        let float = ModelBuilder::new(17)
            .input("ids", DataType::Int64, &["3"])
            .initializer_f32("E", &[4, 2], &[0.5; 8])
            .node("Gather", &["E", "ids"], &["y"])
            .output("y", DataType::Float, &["3", "2"])
            .build();
        assert_eq!(quantization_of(float), "none");
        // a float model with a uint8 mask is no quantized model
        let mask = ModelBuilder::new(17)
            .input("x", DataType::Float, &["16", "16"])
            .initializer(raw_tensor("M", DataType::Uint8, &[16, 16], vec![1; 256]))
            .node("Cast", &["M"], &["m"])
            .attr(attr_int("to", DataType::Float.code().into()))
            .node("Mul", &["x", "m"], &["y"])
            .output("y", DataType::Float, &["16", "16"])
            .build();
        assert_eq!(quantization_of(mask), "none");
        // uint8 pixels dequantized at the input: data, not weights
        let pixels = ModelBuilder::new(17)
            .input("x", DataType::Uint8, &["16"])
            .initializer_f32("s", &[], &[0.5])
            .node("DequantizeLinear", &["x", "s"], &["y"])
            .output("y", DataType::Float, &["16"])
            .build();
        assert_eq!(quantization_of(pixels), "none");
        // onnxruntime's contrib QDQ ops are QDQ
        let mut contrib = ModelBuilder::new(17)
            .opset("com.microsoft", 1)
            .input("x", DataType::Float, &["16"])
            .initializer_f32("s", &[], &[0.5])
            .node("QuantizeLinear", &["x", "s"], &["q"])
            .node("DequantizeLinear", &["q", "s"], &["y"])
            .output("y", DataType::Float, &["16"])
            .build();
        for n in &mut contrib.graph.as_mut().unwrap().node {
            n.domain = Some("com.microsoft".into());
        }
        assert_eq!(quantization_of(contrib), "qdq");
    }
}
