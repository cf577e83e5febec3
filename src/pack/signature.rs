//! Signatures in the OpenSSF Model Signing v1.0 format (the `model_signing` package), so standard
//! tools check what mdeploy signs and mdeploy checks what they sign.
//!
//! A signature is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope whose payload is an in-toto
//! statement: predicate type `https://model_signing/signature/v1.0`, one resource (path, sha256) per
//! file of the model directory except the signature itself, sorted by path components, and a
//! subject whose digest is the sha256 of all resource digests in that order. The envelope is signed
//! over DSSE's pre-authentication encoding with an ECDSA P-256 key (SHA-256, DER signature,
//! deterministic RFC 6979 nonces); the bundle names the key by the sha256 of its PEM.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const SIGNATURE_FILE: &str = "model.sig";
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Paths model_signing leaves out of a directory by default (its `ignore_git_paths`).
const GIT_PATHS: &[&str] = &[".git", ".gitattributes", ".github", ".gitignore"];

/// A signature that does not check out. Always a failed check (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature: {0}")]
    Malformed(String),
    #[error("signature: the public key does not match the key that signed (key hint differs)")]
    WrongKey,
    #[error("signature: does not verify with the given public key")]
    BadSignature,
    #[error("signature: {0}")]
    Mismatch(String),
}

fn malformed(what: impl Into<String>) -> SignatureError {
    SignatureError::Malformed(what.into())
}

/// A file and its sha256, by path relative to the model directory (`/`-separated).
pub type Digests = BTreeMap<String, [u8; 32]>;

/// What a verified signature says.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub model_name: String,
    pub files: Digests,
    pub ignore_paths: Vec<String>,
}

/// Paths in model_signing's order: by `/`-separated components (`a/b` sorts before `a.txt`).
fn by_components(files: &Digests) -> Vec<(&String, &[u8; 32])> {
    let mut v: Vec<_> = files.iter().collect();
    v.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    v
}

/// DSSE pre-authentication encoding of an in-toto payload.
pub fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The key hint: sha256 of the public key's SubjectPublicKeyInfo PEM, as model_signing computes it.
pub fn key_hint(key: &VerifyingKey) -> Result<String, SignatureError> {
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| malformed(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(pem.as_bytes())))
}

/// The in-toto statement for a model directory's files.
pub fn statement(model_name: &str, files: &Digests) -> Value {
    let mut root = Sha256::new();
    let resources: Vec<Value> = by_components(files)
        .into_iter()
        .map(|(path, digest)| {
            root.update(digest);
            json!({"name": path, "algorithm": "sha256", "digest": hex::encode(digest)})
        })
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": hex::encode(root.finalize())}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": false,
                "ignore_paths": [SIGNATURE_FILE],
            },
            "resources": resources,
        },
    })
}

/// Signs a model directory's files; returns the bundle (`model.sig`) bytes. Deterministic.
pub fn sign(
    model_name: &str,
    files: &Digests,
    key: &SigningKey,
) -> Result<Vec<u8>, SignatureError> {
    let payload =
        serde_json::to_vec(&statement(model_name, files)).map_err(|e| malformed(e.to_string()))?;
    let signature: DerSignature = key.sign(&pae(&payload));
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key.verifying_key())?}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": B64.encode(&payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": B64.encode(signature.as_bytes()), "keyid": ""}],
        },
    });
    serde_json::to_vec(&bundle).map_err(|e| malformed(e.to_string()))
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, SignatureError> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .ok_or_else(|| malformed(format!("no '{}'", path.join("."))))
}

fn string<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, SignatureError> {
    field(v, path)?
        .as_str()
        .ok_or_else(|| malformed(format!("'{}' is not a string", path.join("."))))
}

fn digest_hex(s: &str) -> Result<[u8; 32], SignatureError> {
    hex::decode(s)
        .ok()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| malformed(format!("'{s}' is not a sha256 digest")))
}

/// Checks a bundle against a public key and returns the files it vouches for.
pub fn verify(bundle: &[u8], key: &VerifyingKey) -> Result<SignedManifest, SignatureError> {
    let bundle: Value =
        serde_json::from_slice(bundle).map_err(|e| malformed(format!("not JSON: {e}")))?;
    if string(&bundle, &["mediaType"])? != BUNDLE_MEDIA_TYPE {
        return Err(malformed("not a Sigstore bundle v0.3"));
    }
    if let Some(hint) = bundle
        .pointer("/verificationMaterial/publicKey/hint")
        .and_then(Value::as_str)
        && hint != key_hint(key)?
    {
        return Err(SignatureError::WrongKey);
    }
    let envelope = field(&bundle, &["dsseEnvelope"])?;
    if string(envelope, &["payloadType"])? != PAYLOAD_TYPE {
        return Err(malformed("the envelope does not hold an in-toto statement"));
    }
    let payload = B64
        .decode(string(envelope, &["payload"])?)
        .map_err(|_| malformed("payload is not base64"))?;
    let sigs = field(envelope, &["signatures"])?
        .as_array()
        .ok_or_else(|| malformed("no signatures"))?;
    let sig = sigs.first().ok_or_else(|| malformed("no signatures"))?;
    let der = B64
        .decode(string(sig, &["sig"])?)
        .map_err(|_| malformed("sig is not base64"))?;
    let signature = DerSignature::try_from(der.as_slice())
        .map_err(|_| malformed("sig is not a DER ECDSA signature"))?;
    key.verify(&pae(&payload), &signature)
        .map_err(|_| SignatureError::BadSignature)?;
    parse_statement(&payload)
}

fn parse_statement(payload: &[u8]) -> Result<SignedManifest, SignatureError> {
    let st: Value = serde_json::from_slice(payload)
        .map_err(|e| malformed(format!("statement is not JSON: {e}")))?;
    if string(&st, &["predicateType"])? != PREDICATE_TYPE {
        return Err(malformed(format!("predicate type is not {PREDICATE_TYPE}")));
    }
    let subjects = field(&st, &["subject"])?
        .as_array()
        .ok_or_else(|| malformed("no subject"))?;
    let [subject] = subjects.as_slice() else {
        return Err(malformed("expected exactly one subject"));
    };
    let serialization = field(&st, &["predicate", "serialization"])?;
    if string(serialization, &["method"])? != "files"
        || string(serialization, &["hash_type"])? != "sha256"
    {
        return Err(malformed(
            "only the 'files' serialization with sha256 is supported",
        ));
    }
    let ignore_paths = serialization
        .get("ignore_paths")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut root = Sha256::new();
    let mut files = Digests::new();
    for r in field(&st, &["predicate", "resources"])?
        .as_array()
        .ok_or_else(|| malformed("no resources"))?
    {
        if string(r, &["algorithm"])? != "sha256" {
            return Err(malformed("only sha256 resources are supported"));
        }
        let digest = digest_hex(string(r, &["digest"])?)?;
        root.update(digest);
        if files
            .insert(string(r, &["name"])?.to_string(), digest)
            .is_some()
        {
            return Err(malformed("a resource is listed twice"));
        }
    }
    if hex::encode(root.finalize()) != string(subject, &["digest", "sha256"])? {
        return Err(SignatureError::Mismatch(
            "the resources do not hash to the subject's digest".into(),
        ));
    }
    Ok(SignedManifest {
        model_name: string(subject, &["name"])?.to_string(),
        files,
        ignore_paths,
    })
}

/// sha256 of a file, read through a memory map.
pub fn file_digest(path: &Path) -> std::io::Result<[u8; 32]> {
    let bytes = crate::onnx::external::map_file(path).map_err(std::io::Error::other)?;
    Ok(Sha256::digest(&bytes).into())
}

/// Checks a directory against a signature as `model_signing verify key` does: every file not
/// ignored must be listed with its digest, and every listed file must be there. Symlinks fail.
pub fn verify_directory(
    dir: &Path,
    signature: &Path,
    key: &VerifyingKey,
) -> Result<SignedManifest, SignatureError> {
    let bundle = std::fs::read(signature)
        .map_err(|e| malformed(format!("cannot read {}: {e}", signature.display())))?;
    let signed = verify(&bundle, key)?;
    let sig_rel = signature
        .strip_prefix(dir)
        .ok()
        .map(|p| p.to_string_lossy().replace('\\', "/"));
    let mut ignored: Vec<String> = signed.ignore_paths.clone();
    ignored.extend(GIT_PATHS.iter().map(|s| s.to_string()));
    ignored.extend(sig_rel);
    let mut actual = Digests::new();
    walk(dir, dir, &ignored, &mut actual)?;
    compare(&actual, &signed.files)?;
    Ok(signed)
}

fn walk(
    root: &Path,
    dir: &Path,
    ignored: &[String],
    out: &mut Digests,
) -> Result<(), SignatureError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| malformed(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| malformed(e.to_string()))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if ignored
            .iter()
            .any(|i| rel == *i || rel.starts_with(&format!("{i}/")))
        {
            continue;
        }
        let kind = entry.file_type().map_err(|e| malformed(e.to_string()))?;
        if kind.is_symlink() {
            return Err(SignatureError::Mismatch(format!(
                "'{rel}' is a symlink, which the signature does not allow"
            )));
        } else if kind.is_dir() {
            walk(root, &path, ignored, out)?;
        } else {
            let digest =
                file_digest(&path).map_err(|e| malformed(format!("cannot read {rel}: {e}")))?;
            out.insert(rel, digest);
        }
    }
    Ok(())
}

/// Explains how a directory's files differ from what a signature lists.
pub fn compare(actual: &Digests, signed: &Digests) -> Result<(), SignatureError> {
    if let Some(extra) = actual.keys().find(|k| !signed.contains_key(*k)) {
        return Err(SignatureError::Mismatch(format!(
            "'{extra}' is not covered by the signature"
        )));
    }
    if let Some(missing) = signed.keys().find(|k| !actual.contains_key(*k)) {
        return Err(SignatureError::Mismatch(format!(
            "'{missing}' is signed but missing"
        )));
    }
    if let Some((path, _)) = signed.iter().find(|(k, d)| actual.get(*k) != Some(*d)) {
        return Err(SignatureError::Mismatch(format!(
            "'{path}' does not match its signed digest"
        )));
    }
    Ok(())
}
