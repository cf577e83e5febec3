//! ECDSA P-256 keys as PEM files: `mdeploy.key` (PKCS#8, mode 0600) and `mdeploy.pub` (SPKI),
//! the formats `model_signing sign key` / `verify key` read.

use std::path::{Path, PathBuf};

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use super::PackError;

pub const PRIVATE_KEY_FILE: &str = "mdeploy.key";
pub const PUBLIC_KEY_FILE: &str = "mdeploy.pub";

/// Writes a new key pair into `dir`; refuses to overwrite either file. Returns both paths.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf), PackError> {
    let (private, public) = (dir.join(PRIVATE_KEY_FILE), dir.join(PUBLIC_KEY_FILE));
    for p in [&private, &public] {
        if p.exists() {
            return Err(PackError::Usage(format!(
                "{} exists; mdeploy never overwrites a key",
                p.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| PackError::io(dir, e))?;
    let key = SigningKey::try_generate()
        .map_err(|e| PackError::Key(format!("no randomness for a key: {e}")))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| PackError::Key(e.to_string()))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| PackError::Key(e.to_string()))?;
    write_new(&private, pem.as_bytes(), 0o600)?;
    write_new(&public, pub_pem.as_bytes(), 0o644)?;
    Ok((private, public))
}

/// Creates a file that must not exist yet, with the given mode from the start.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PackError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let _ = mode;
    let mut f = options.open(path).map_err(|e| PackError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| PackError::io(path, e))
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, PackError> {
    let pem = std::fs::read_to_string(path).map_err(|e| PackError::io(path, e))?;
    signing_key_from_pem(&pem, &path.display().to_string())
}

/// A P-256 private key from PEM text (PKCS#8 or SEC1); `origin` names it in errors.
pub fn signing_key_from_pem(pem: &str, origin: &str) -> Result<SigningKey, PackError> {
    SigningKey::from_pkcs8_pem(pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(pem).map(SigningKey::from))
        .map_err(|_| PackError::Key(format!("{origin} is not a P-256 private key in PEM")))
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, PackError> {
    let pem = std::fs::read_to_string(path).map_err(|e| PackError::io(path, e))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|_| {
        PackError::Key(format!(
            "{} is not a P-256 public key in PEM",
            path.display()
        ))
    })
}
