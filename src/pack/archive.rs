//! The archive container: a tar stream compressed with zstd. Writing is deterministic (fixed entry
//! order, zeroed ownership, fixed modes and mtime, no atime/ctime); reading accepts only what the
//! writer makes (regular files with safe, unique names) and caps the zstd window.

use std::io::{Read, Write};
use std::path::{Component, Path};

use bytes::Bytes;

use super::PackError;

/// zstd frames asking for a larger window (more decoder memory) than 128 MiB are refused.
pub const MAX_WINDOW_LOG: u32 = 27;
/// Zero bytes accepted after the tar end marker (tar writers pad to a record of at most 10 KiB).
const MAX_PADDING: usize = 64 * 1024;

/// One file to store.
pub struct Entry {
    pub path: String,
    pub data: Bytes,
}

/// Writes `entries`, in the given order, as a tar stream compressed with zstd into `out`.
pub fn write(
    out: impl Write,
    entries: &[Entry],
    mtime: u64,
    level: i32,
    threads: u32,
) -> Result<(), PackError> {
    let io = |e: std::io::Error| PackError::Io {
        path: "archive".into(),
        source: e,
    };
    let mut encoder = zstd::stream::Encoder::new(out, level).map_err(io)?;
    encoder.include_checksum(true).map_err(io)?;
    if threads > 1 {
        encoder.multithread(threads).map_err(io)?;
    }
    let mut tar = tar::Builder::new(encoder);
    tar.mode(tar::HeaderMode::Deterministic);
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(e.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("").map_err(io)?;
        header.set_groupname("").map_err(io)?;
        tar.append_data(&mut header, &e.path, e.data.as_ref())
            .map_err(io)?;
    }
    let encoder = tar.into_inner().map_err(io)?;
    encoder.finish().map_err(io)?.flush().map_err(io)
}

/// zstd's own words, with what they mean here.
fn describe_stream_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("too much memory") {
        format!("{text}: its zstd window is above 2^{MAX_WINDOW_LOG} bytes")
    } else {
        format!("broken stream: {text}")
    }
}

/// Why an archive entry is refused, naming it.
fn reject(entry: &str, reason: impl Into<String>) -> PackError {
    PackError::Rejected {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Checks an entry's name: UTF-8, relative, no `..` or `.` parts, no empty parts.
pub fn check_name(raw: &[u8]) -> Result<String, PackError> {
    let name = std::str::from_utf8(raw)
        .map_err(|_| reject(&String::from_utf8_lossy(raw), "name is not UTF-8"))?;
    if name.is_empty() || name.starts_with('/') || name.contains('\\') || name.contains('\0') {
        return Err(reject(name, "name is empty, absolute or has a backslash"));
    }
    for c in Path::new(name).components() {
        match c {
            Component::Normal(_) => {}
            _ => return Err(reject(name, "name has '..', '.' or a root")),
        }
    }
    if name.split('/').any(str::is_empty) {
        return Err(reject(name, "name has an empty part"));
    }
    Ok(name.to_string())
}

/// Reads an archive entry by entry, handing each accepted regular file to `on_file` with a reader
/// of its bytes. Refuses anything `write` does not produce. After the last entry the rest of the
/// stream must be tar padding, so the zstd checksum of the whole stream is checked.
pub fn read(
    input: impl Read,
    mut on_file: impl FnMut(&str, u64, &mut dyn Read) -> Result<(), PackError>,
) -> Result<(), PackError> {
    let io = |e: std::io::Error| reject("(archive)", format!("cannot be decompressed: {e}"));
    let mut decoder = zstd::stream::Decoder::new(input).map_err(io)?;
    decoder.window_log_max(MAX_WINDOW_LOG).map_err(io)?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen: Vec<String> = Vec::new();
    let mut folded: Vec<String> = Vec::new();
    {
        let entries = archive
            .entries()
            .map_err(|e| reject("(archive)", format!("not a tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| reject("(archive)", describe_stream_error(&e)))?;
            let name = check_name(&entry.path_bytes())?;
            match entry.header().entry_type() {
                tar::EntryType::Regular => {}
                other => return Err(reject(&name, format!("is a {other:?}, not a regular file"))),
            }
            if seen.contains(&name) {
                return Err(reject(&name, "appears twice"));
            }
            let lower = name.to_lowercase();
            if folded.contains(&lower) {
                return Err(reject(&name, "differs from another entry only in case"));
            }
            seen.push(name.clone());
            folded.push(lower);
            let size = entry
                .header()
                .size()
                .map_err(|e| reject(&name, e.to_string()))?;
            on_file(&name, size, &mut entry)?;
        }
    }
    // what follows the tar end marker: zero padding only, then the end of the zstd frame
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    let mut padding = 0usize;
    loop {
        let n = rest.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        padding += n;
        if padding > MAX_PADDING || buf[..n].iter().any(|&b| b != 0) {
            return Err(reject(
                "(archive)",
                "has data after the end of the tar stream",
            ));
        }
    }
    Ok(())
}
