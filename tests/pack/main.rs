//! `keygen`, `pack`, `unpack` end to end: round trips on real models, reproducible bytes, and
//! archives built by hand to attack unpack, each of which must fail closed.

#[path = "../common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, mdeploy, s, stderr};
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Keys {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let o = mdeploy(&["keygen", "-o", s(dir.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    Keys {
        private: dir.path().join("mdeploy.key"),
        public: dir.path().join("mdeploy.pub"),
        _dir: dir,
    }
}

fn pack_fixture(dir: &Path, k: &Keys, extra: &[&str]) -> PathBuf {
    let out = dir.join("m.mdpkg");
    let mlp = fixture("mlp.onnx");
    let mut args = vec![
        "pack",
        s(&mlp),
        "-o",
        s(&out),
        "--name",
        "mlp",
        "--model-version",
        "1.2.3",
        "--key",
        s(&k.private),
    ];
    args.extend(extra);
    let o = mdeploy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
    let k = keys();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k.private).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let pem = std::fs::read_to_string(&k.public).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    let before = std::fs::read(&k.private).unwrap();
    let o = mdeploy(&["keygen", "-o", s(k.private.parent().unwrap())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("never overwrites"));
    assert_eq!(std::fs::read(&k.private).unwrap(), before);
}

#[test]
fn every_real_model_packs_and_unpacks_to_the_same_files() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let archive = tmp.path().join(format!("{name}.mdpkg"));
        let o = mdeploy(&[
            "pack",
            s(&path),
            "-o",
            s(&archive),
            "--name",
            &name,
            "--model-version",
            "0.1.0",
            "--key",
            s(&k.private),
            "--include",
            s(&path.with_file_name("info.json")),
            "--json",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let packed: Value = serde_json::from_slice(&o.stdout).unwrap();
        let m = &packed["manifest"];
        assert_eq!(m["format"], "mdeploy.archive/1");
        assert_eq!(m["model"]["entry_point"], "model.onnx");
        let info: Value =
            serde_json::from_slice(&std::fs::read(path.with_file_name("info.json")).unwrap())
                .unwrap();
        assert_eq!(
            m["inputs"].as_array().unwrap().len(),
            info["inputs"].as_array().unwrap().len(),
            "{name}"
        );
        assert_eq!(
            m["lineage"]["source_sha256"], info["file"]["sha256"],
            "{name}"
        );
        let dest = tmp.path().join(&name);
        let o = mdeploy(&["unpack", s(&archive), "-o", s(&dest), "--key", s(&k.public)]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            std::fs::read(dest.join("model.onnx")).unwrap() == std::fs::read(&path).unwrap(),
            "{name}"
        );
        assert_eq!(
            std::fs::read(dest.join("files/info.json")).unwrap(),
            std::fs::read(path.with_file_name("info.json")).unwrap()
        );
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dest.join("mdeploy.json")).unwrap()).unwrap();
        assert_eq!(&manifest, m);
    }
}

#[test]
fn packing_is_reproducible_and_leaves_identical_outputs_alone() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    let a = pack_fixture(tmp.path(), &k, &["--metadata", "b=2", "--metadata", "a=1"]);
    let first = std::fs::read(&a).unwrap();
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = mdeploy(&[
        "pack",
        s(&fixture("mlp.onnx")),
        "-o",
        s(&a),
        "--name",
        "mlp",
        "--model-version",
        "1.2.3",
        "--key",
        s(&k.private),
        "--metadata",
        "b=2",
        "--metadata",
        "a=1",
    ]);
    assert!(stderr(&o).contains("unchanged"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&a).unwrap(), first);
    assert_eq!(
        std::fs::metadata(&a).unwrap().modified().unwrap(),
        mtime,
        "identical output must not be rewritten"
    );
    // SOURCE_DATE_EPOCH sets entry times, so it changes the bytes
    let b = tmp.path().join("b.mdpkg");
    let o = Command::new(env!("CARGO_BIN_EXE_mdeploy"))
        .args([
            "pack",
            s(&fixture("mlp.onnx")),
            "-o",
            s(&b),
            "--name",
            "mlp",
            "--model-version",
            "1.2.3",
            "--key",
            s(&k.private),
            "--metadata",
            "b=2",
            "--metadata",
            "a=1",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_ne!(std::fs::read(&b).unwrap(), first);
}

#[test]
fn external_data_travels_with_the_model() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("e.mdpkg");
    let o = mdeploy(&[
        "pack",
        s(&fixture("external/model.onnx")),
        "-o",
        s(&archive),
        "--name",
        "e",
        "--model-version",
        "1.0.0",
        "--key",
        s(&k.private),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["manifest"]["model"]["external_data"],
        serde_json::json!(["model.onnx.data"])
    );
    let dest = tmp.path().join("e");
    assert!(
        mdeploy(&["unpack", s(&archive), "-o", s(&dest), "--key", s(&k.public)])
            .status
            .success()
    );
    let o = mdeploy(&[
        "verify",
        s(&fixture("mlp.onnx")),
        s(&dest.join("model.onnx")),
        "--tolerance",
        "exact",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_pack_arguments_are_usage_errors() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.mdpkg");
    let mlp = fixture("mlp.onnx");
    for (args, needle) in [
        (vec!["--model-version", "1.0"], "not a semantic version"),
        (
            vec!["--model-version", "1.0.0", "--include", "/nonexistent"],
            "not a file",
        ),
        (
            vec!["--model-version", "1.0.0", "--metadata", "novalue"],
            "KEY=VALUE",
        ),
        (
            vec!["--model-version", "1.0.0", "--key", s(&k.public)],
            "not a P-256 private key",
        ),
    ] {
        let mut all = vec!["pack", s(&mlp), "-o", s(&out), "--name", "m"];
        all.extend(args);
        let o = mdeploy(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        assert!(stderr(&o).contains(needle), "{all:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

/// Asserts unpack refuses the archive with exit 1, naming `needle`, and leaves nothing behind.
fn assert_rejected(archive: &Path, k: &Keys, extra: &[&str], needle: &str) {
    let dest_parent = tempfile::tempdir().unwrap();
    let dest = dest_parent.path().join("out");
    let mut args = vec!["unpack", s(archive), "-o", s(&dest), "--key", s(&k.public)];
    args.extend(extra);
    let o = mdeploy(&args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected rejection ({needle}): {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(needle),
        "expected '{needle}' in: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"));
    let left: Vec<_> = std::fs::read_dir(dest_parent.path()).unwrap().collect();
    assert!(left.is_empty(), "unpack left {left:?}");
    let mut check = vec!["unpack", "--check", s(archive), "--key", s(&k.public)];
    check.extend(extra);
    assert_eq!(mdeploy(&check).status.code(), Some(1));
}

/// Every byte of the archive flipped in turn: unpack must refuse each, except where zstd's
/// entropy coding has slack bits that decode to the very same content (checked independently
/// here), so nothing the archive holds can change unnoticed.
#[test]
fn a_flipped_byte_anywhere_is_detected() {
    let k = keys();
    let key = mdeploy::pack::keys::load_verifying_key(&k.public).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let archive = pack_fixture(tmp.path(), &k, &[]);
    let bytes = std::fs::read(&archive).unwrap();
    let content = zstd::decode_all(bytes.as_slice()).unwrap();
    let bad = tmp.path().join("bad.mdpkg");
    let mut harmless = 0;
    for off in 0..bytes.len() {
        let mut b = bytes.clone();
        b[off] ^= 0x01;
        std::fs::write(&bad, &b).unwrap();
        if mdeploy::pack::unpack(&bad, None, Some(&key), false).is_ok() {
            let decoded = zstd::decode_all(b.as_slice()).unwrap_or_default();
            assert!(
                decoded == content,
                "flip at {off} of {} changed the content and went unnoticed",
                bytes.len()
            );
            harmless += 1;
        }
    }
    println!(
        "{} single-byte flips: {} rejected, {harmless} decode to identical content",
        bytes.len(),
        bytes.len() - harmless
    );
    assert!(
        harmless * 100 < bytes.len(),
        "{harmless} of {} flips unnoticed",
        bytes.len()
    );
    // the CLI says so with exit 1; a truncated archive too
    let mut b = bytes.clone();
    b[bytes.len() / 2] ^= 0xff;
    std::fs::write(&bad, &b).unwrap();
    assert_eq!(
        mdeploy(&["unpack", "--check", s(&bad), "--key", s(&k.public)])
            .status
            .code(),
        Some(1)
    );
    std::fs::write(&bad, &bytes[..bytes.len() - 10]).unwrap();
    assert_rejected(&bad, &k, &[], "archive");
}

#[test]
fn signatures_must_be_present_right_and_from_the_right_key() {
    let k = keys();
    let other = keys();
    let tmp = tempfile::tempdir().unwrap();
    let archive = pack_fixture(tmp.path(), &k, &[]);
    assert_rejected(&archive, &other, &[], "key hint differs");
    // unsigned archives need --allow-unsigned
    let unsigned = tmp.path().join("u.mdpkg");
    assert!(
        mdeploy(&[
            "pack",
            s(&fixture("mlp.onnx")),
            "-o",
            s(&unsigned),
            "--name",
            "u",
            "--model-version",
            "1.0.0"
        ])
        .status
        .success()
    );
    assert_rejected(&unsigned, &k, &[], "not signed");
    let dest = tmp.path().join("u");
    assert!(
        mdeploy(&["unpack", s(&unsigned), "-o", s(&dest), "--allow-unsigned"])
            .status
            .success()
    );
    // the signature of another archive (swapped) or none at all (stripped)
    let entries = read_entries(&archive);
    let other_archive = {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("o.mdpkg");
        assert!(
            mdeploy(&[
                "pack",
                s(&fixture("cnn.onnx")),
                "-o",
                s(&p),
                "--name",
                "mlp",
                "--model-version",
                "1.2.3",
                "--key",
                s(&k.private)
            ])
            .status
            .success()
        );
        read_entries(&p)
    };
    let mut swapped = entries.clone();
    swapped[1].1 = other_archive[1].1.clone();
    assert_rejected(
        &build(tmp.path(), "swapped", &swapped, 0),
        &k,
        &[],
        "not covered by the signature",
    );
    let stripped: Vec<_> = entries
        .iter()
        .filter(|(n, _)| n != "model.sig")
        .cloned()
        .collect();
    assert_rejected(
        &build(tmp.path(), "stripped", &stripped, 0),
        &k,
        &[],
        "announced by the manifest",
    );
    // a manifest edited to match a replaced model, without re-signing
    let mut forged = entries.clone();
    let model_ix = forged.iter().position(|(n, _)| n == "mlp.onnx").unwrap();
    let mut model = forged[model_ix].1.clone();
    let last = model.len() - 1;
    model[last] ^= 1;
    let mut manifest: Value = serde_json::from_slice(&forged[0].1).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["path"] == "mlp.onnx" {
            f["sha256"] = hex::encode(Sha256::digest(&model)).into();
        }
    }
    forged[0].1 = serde_json::to_vec_pretty(&manifest).unwrap();
    forged[model_ix].1 = model;
    assert_rejected(
        &build(tmp.path(), "forged", &forged, 0),
        &k,
        &[],
        "does not match its signed digest",
    );
}

/// Entries of an archive, in order.
fn read_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let mut a = tar::Archive::new(zstd::stream::Decoder::new(f).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// A raw archive entry: name bytes, entry type, data.
type RawEntry = (Vec<u8>, tar::EntryType, Vec<u8>);

/// Writes a raw tar header for `name` (any bytes) of the given type and size.
fn header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// Builds an archive from entries, compressed with the given zstd window log (0: default).
fn build(dir: &Path, name: &str, entries: &[(String, Vec<u8>)], window_log: u32) -> PathBuf {
    build_raw(
        dir,
        name,
        &entries
            .iter()
            .map(|(n, d)| (n.as_bytes().to_vec(), tar::EntryType::Regular, d.clone()))
            .collect::<Vec<_>>(),
        window_log,
    )
}

fn build_raw(dir: &Path, name: &str, entries: &[RawEntry], window_log: u32) -> PathBuf {
    let path = dir.join(format!("{name}.mdpkg"));
    let mut enc = zstd::stream::Encoder::new(std::fs::File::create(&path).unwrap(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    if window_log > 0 {
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(window_log))
            .unwrap();
    }
    let mut tar = tar::Builder::new(enc);
    for (n, kind, data) in entries {
        let mut h = header(n, *kind, data.len() as u64);
        if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
            h.set_link_name("mdeploy.json").unwrap();
            h.set_size(0);
            h.set_cksum();
            tar.append(&h, &[][..]).unwrap();
        } else {
            tar.append(&h, data.as_slice()).unwrap();
        }
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

#[test]
fn unpack_accepts_only_what_pack_writes() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    let unsigned = tmp.path().join("u.mdpkg");
    assert!(
        mdeploy(&[
            "pack",
            s(&fixture("mlp.onnx")),
            "-o",
            s(&unsigned),
            "--name",
            "u",
            "--model-version",
            "1.0.0"
        ])
        .status
        .success()
    );
    let good = read_entries(&unsigned);
    let raw: Vec<RawEntry> = good
        .iter()
        .map(|(n, d)| (n.as_bytes().to_vec(), tar::EntryType::Regular, d.clone()))
        .collect();
    // the untouched rebuild is accepted: the attacks below differ only in what they say
    let ok = build_raw(tmp.path(), "ok", &raw, 0);
    assert!(
        mdeploy(&["unpack", "--check", s(&ok), "--allow-unsigned"])
            .status
            .success()
    );
    let with = |extra: RawEntry| {
        let mut v = raw.clone();
        v.push(extra);
        v
    };
    let cases: Vec<(&str, Vec<RawEntry>, &str)> = vec![
        (
            "symlink",
            with((b"link".to_vec(), tar::EntryType::Symlink, vec![])),
            "Symlink",
        ),
        (
            "hardlink",
            with((b"hard".to_vec(), tar::EntryType::Link, vec![])),
            "Link",
        ),
        (
            "device",
            with((b"dev".to_vec(), tar::EntryType::Char, vec![])),
            "Char",
        ),
        (
            "fifo",
            with((b"fifo".to_vec(), tar::EntryType::Fifo, vec![])),
            "Fifo",
        ),
        (
            "absolute",
            with((
                b"/etc/cron.d/x".to_vec(),
                tar::EntryType::Regular,
                b"x".to_vec(),
            )),
            "absolute",
        ),
        (
            "dotdot",
            with((
                b"files/../../x".to_vec(),
                tar::EntryType::Regular,
                b"x".to_vec(),
            )),
            "'..'",
        ),
        (
            "duplicate",
            with((
                good[1].0.as_bytes().to_vec(),
                tar::EntryType::Regular,
                good[1].1.clone(),
            )),
            "appears twice",
        ),
        (
            "case",
            with((
                good[1].0.to_uppercase().into_bytes(),
                tar::EntryType::Regular,
                b"x".to_vec(),
            )),
            "only in case",
        ),
        (
            "non_utf8",
            with((
                b"files/\xff\xfe".to_vec(),
                tar::EntryType::Regular,
                b"x".to_vec(),
            )),
            "not UTF-8",
        ),
        (
            "unlisted",
            with((
                b"files/extra.txt".to_vec(),
                tar::EntryType::Regular,
                b"x".to_vec(),
            )),
            "not listed in the manifest",
        ),
    ];
    for (name, entries, needle) in cases {
        assert_rejected(
            &build_raw(tmp.path(), name, &entries, 0),
            &k,
            &["--allow-unsigned"],
            needle,
        );
    }
    // a file larger than the manifest declares; the manifest not first; a missing file
    let mut bigger = raw.clone();
    bigger[1].2.push(0);
    assert_rejected(
        &build_raw(tmp.path(), "bigger", &bigger, 0),
        &k,
        &["--allow-unsigned"],
        "the manifest says",
    );
    let mut reordered = raw.clone();
    reordered.swap(0, 1);
    assert_rejected(
        &build_raw(tmp.path(), "reordered", &reordered, 0),
        &k,
        &["--allow-unsigned"],
        "must start with mdeploy.json",
    );
    assert_rejected(
        &build_raw(tmp.path(), "missing", &raw[..1], 0),
        &k,
        &["--allow-unsigned"],
        "listed in the manifest but missing",
    );
    // a zstd window above 2^27 (decoder memory bomb)
    assert_rejected(
        &build_raw(tmp.path(), "window", &raw, 28),
        &k,
        &["--allow-unsigned"],
        "window is above 2^27",
    );
    // unpack never writes into an existing directory
    let existing = tmp.path().join("exists");
    std::fs::create_dir(&existing).unwrap();
    let o = mdeploy(&["unpack", s(&ok), "-o", s(&existing), "--allow-unsigned"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(std::fs::read_dir(&existing).unwrap().next().is_none());
}

#[test]
fn pack_checks_a_source_directory_signature() {
    let k = keys();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(fixture("mlp.onnx"), src.join("model.onnx")).unwrap();
    std::fs::write(src.join("labels.txt"), "a\nb\nc\n").unwrap();
    // sign the directory as model_signing would, with mdeploy's own signer
    let key = mdeploy::pack::keys::load_signing_key(&k.private).unwrap();
    let mut files = mdeploy::pack::signature::Digests::new();
    for f in ["model.onnx", "labels.txt"] {
        files.insert(
            f.into(),
            mdeploy::pack::signature::file_digest(&src.join(f)).unwrap(),
        );
    }
    std::fs::write(
        src.join("model.sig"),
        mdeploy::pack::signature::sign("src", &files, &key).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("p.mdpkg");
    let (model, sig) = (src.join("model.onnx"), src.join("model.sig"));
    let args = [
        "pack",
        s(&model),
        "-o",
        s(&out),
        "--name",
        "p",
        "--model-version",
        "1.0.0",
        "--source-signature",
        s(&sig),
        "--source-key",
        s(&k.public),
        "--json",
    ];
    let o = mdeploy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["lineage"]["source_signature"]["files"], 2);
    std::fs::write(src.join("labels.txt"), "tampered").unwrap();
    let o = mdeploy(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("'labels.txt' does not match its signed digest"),
        "{}",
        stderr(&o)
    );
    std::fs::write(src.join("extra.bin"), "x").unwrap();
    assert!(stderr(&mdeploy(&args)).contains("not covered"));
}

#[test]
fn inspect_shows_an_archive_and_whether_it_verifies() {
    let k = keys();
    let other = keys();
    let tmp = tempfile::tempdir().unwrap();
    let archive = pack_fixture(tmp.path(), &k, &["--metadata", "owner=ml-platform"]);
    let o = mdeploy(&["inspect", s(&archive), "--key", s(&k.public)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success()
            && out.contains("signature   verified")
            && out.contains("mlp 1.2.3")
            && out.contains("owner = ml-platform"),
        "{out}"
    );
    let o = mdeploy(&["inspect", s(&archive)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("signature   not checked"));
    let o = mdeploy(&["inspect", s(&archive), "--key", s(&other.public)]);
    assert_eq!(o.status.code(), Some(1));
}
