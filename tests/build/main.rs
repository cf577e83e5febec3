//! `mdeploy build` end to end: the example repository from a fresh copy to a verified, signed
//! archive and back, both with `mdeploy build` and with its Makefile; a second build is a no-op
//! that touches no file; configuration errors are located; a failing stage stops the build.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use common::{mdeploy, real_model, s, stderr, stdout};
use serde_json::Value;

/// A fresh copy of `examples/mtcnn-rnet` (without build outputs or keys).
fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mtcnn-rnet");
    copy_dir(&src, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name == "build" || name == "keys" {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// Every file under `dir` with its modification time.
fn mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), p.metadata().unwrap().modified().unwrap());
            }
        }
    }
    out
}

fn build_json(args: &[&str]) -> (Output, Value) {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = mdeploy(&all);
    let v = serde_json::from_str(&stdout(&o)).unwrap_or(Value::Null);
    (o, v)
}

fn states(summary: &Value) -> Vec<(String, String)> {
    summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_example_builds_to_a_signed_archive_that_unpacks_and_verifies_and_rebuilds_as_a_no_op() {
    let repo = example();
    let (o, summary) = build_json(&[s(repo.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        states(&summary),
        ["convert", "optimize", "verify", "pack"]
            .map(|s| (s.to_string(), "ran".to_string()))
            .to_vec()
    );
    assert_eq!(summary["signed"], true);
    let archive = PathBuf::from(summary["archive"].as_str().unwrap());
    assert_eq!(
        archive,
        repo.path().join("build/mtcnn-rnet-1.0.0.mdpkg"),
        "{summary}"
    );
    for report in ["convert", "optimize", "verify"] {
        assert!(
            repo.path()
                .join("build")
                .join(report)
                .join("report.json")
                .is_file()
        );
    }

    // a second build does nothing and touches nothing
    let before = mtimes(&repo.path().join("build"));
    let (o, again) = build_json(&[s(repo.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        states(&again).iter().all(|(_, st)| st == "up-to-date"),
        "{again}"
    );
    assert_eq!(before, mtimes(&repo.path().join("build")));

    // back: the archive unpacks with the key the build made, and the unpacked model computes the
    // stored outputs
    let unpacked = repo.path().join("unpacked");
    let public = repo.path().join("keys/mdeploy.pub");
    let o = mdeploy(&[
        "unpack",
        s(&archive),
        "-o",
        s(&unpacked),
        "--key",
        s(&public),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mdeploy(&[
        "verify",
        s(&unpacked.join("model.onnx")),
        "--data",
        s(&repo.path().join("test_data_set_0")),
        "--data",
        s(&repo.path().join("test_data_set_1")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // the manifest carries the lineage: the optimize report and the passed verification
    let o = mdeploy(&["inspect", s(&archive), "--key", s(&public), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["manifest"]["lineage"]["verify"]["status"], "passed");
    assert_eq!(
        m["manifest"]["lineage"]["optimize"]["format"],
        "mdeploy.optimize/2"
    );
    assert_eq!(m["manifest"]["metadata"]["task"], "face-refinement");

    // a changed tolerance reruns verify and pack only; --dry-run says so and runs nothing
    let config = repo.path().join("mdeploy.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("# tolerance = \"fp32\"", "tolerance = \"fp32\""),
    )
    .unwrap();
    let (o, plan) = build_json(&[s(repo.path()), "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        states(&plan),
        [
            ("convert", "up-to-date"),
            ("optimize", "up-to-date"),
            ("verify", "would-run"),
            ("pack", "would-run")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .to_vec()
    );
    assert_eq!(before, mtimes(&repo.path().join("build")));
    let (o, rebuilt) = build_json(&[s(repo.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(states(&rebuilt)[1].1, "up-to-date");
    assert_eq!(states(&rebuilt)[2].1, "ran");

    // an output changed behind the build's back is rebuilt
    std::fs::write(repo.path().join("build/optimize/model.onnx"), b"garbage").unwrap();
    let (o, repaired) = build_json(&[s(repo.path())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(states(&repaired)[1].1, "ran", "{repaired}");
}

/// A build directory given relative to the working directory, outside the repository: the second
/// build is still a no-op; and a forced rebuild gives the same archive bytes (the archive records
/// no timings and no directories).
#[test]
fn a_build_directory_elsewhere_stays_incremental_and_forced_rebuilds_are_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mtcnn-rnet"),
        &work.path().join("repo"),
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["build", "repo/mdeploy.toml", "-o", "out/rnet", "--json"];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_mdeploy"))
            .args(&args)
            .current_dir(work.path())
            .env_remove("MDEPLOY_KEY")
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()
    };
    let first = run(&[]);
    let archive = work.path().join("out/rnet/mtcnn-rnet-1.0.0.mdpkg");
    assert!(archive.is_file(), "{first}");
    let bytes = std::fs::read(&archive).unwrap();
    let again = run(&[]);
    assert!(
        states(&again).iter().all(|(_, st)| st == "up-to-date"),
        "{again}"
    );
    let forced = run(&["--force"]);
    assert!(
        states(&forced).iter().all(|(_, st)| st == "ran"),
        "{forced}"
    );
    assert_eq!(
        bytes,
        std::fs::read(&archive).unwrap(),
        "a forced rebuild changed the archive"
    );
}

#[test]
fn the_example_makefile_builds_checks_and_stays_quiet() {
    let repo = example();
    let make = |target: &str| {
        Command::new("make")
            .arg("-C")
            .arg(repo.path())
            .arg(format!("MDEPLOY={}", env!("CARGO_BIN_EXE_mdeploy")))
            .arg(target)
            .output()
            .expect("make is installed")
    };
    let o = make("all");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(repo.path().join("build/mtcnn-rnet-1.0.0.mdpkg").is_file());
    let o = make("all");
    assert!(o.status.success());
    assert!(stdout(&o).contains("Nothing to be done"), "{}", stdout(&o));
    // a touched but unchanged source: one no-op build, then quiet again (file times tick
    // coarsely, a few ms: a write right after the stamp could carry the stamp's very time)
    let config = repo.path().join("mdeploy.toml");
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(&config, std::fs::read(&config).unwrap()).unwrap();
    let o = make("all");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    let o = make("all");
    assert!(stdout(&o).contains("Nothing to be done"), "{}", stdout(&o));
    let o = make("check");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("signature verified"), "{}", stderr(&o));
    assert!(stderr(&o).contains("PASSED"), "{}", stderr(&o));
}

fn write_repo(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("mdeploy.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn configuration_errors_name_file_line_key_and_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("mtcnn_rnet");
    let path = write_repo(
        dir.path(),
        &format!(
            "[model]\nname = \"m\"\nversion = \"1.0.0\"\nsource = \"{}\"\n\n[optimize]\nlevle = 1\n",
            model.display()
        ),
    );
    let o = mdeploy(&["build", s(dir.path())]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}:7: unknown key 'levle' in [optimize]",
            path.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: did you mean 'level'?"), "{err}");
    // JSON errors for machines
    let o = mdeploy(&["build", s(dir.path()), "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["error"]["exit_code"], 2);
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("did you mean 'level'")
    );
    // the int8 keys: a value they do not take, or a mode they do not apply to
    for (optimize, message) in [
        (
            "int8 = \"dynamic\"\nint8_weight_range = \"7bit\"",
            "int8_weight_range: weight range '7bit': full or reduced expected",
        ),
        (
            "fp16 = true\nint8_weight_range = \"reduced\"",
            "int8_weight_range: applies to int8",
        ),
        (
            "int8 = \"static\"\ncalibration = [\"c\"]\nint8_placement = \"fastest\"",
            "int8_placement: placement 'fastest': fast or all expected",
        ),
        (
            "int8 = \"dynamic\"\nint8_placement = \"all\"",
            "int8_placement: applies to int8 = \"static\"",
        ),
        (
            "int8 = \"dynamic\"\nint8_activations = \"int8\"",
            "int8_activations: applies to int8 = \"static\"",
        ),
    ] {
        write_repo(
            dir.path(),
            &format!(
                "[model]\nname = \"m\"\nversion = \"1.0.0\"\nsource = \"{}\"\n\n[optimize]\n{optimize}\n",
                model.display()
            ),
        );
        let o = mdeploy(&["build", s(dir.path())]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(message), "{}", stderr(&o));
    }
    // no configuration at all
    let empty = tempfile::tempdir().unwrap();
    let o = mdeploy(&["build", s(empty.path())]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("mdeploy.toml"), "{}", stderr(&o));
    // an unsigned build must be asked for
    write_repo(
        dir.path(),
        &format!(
            "[model]\nname = \"m\"\nversion = \"1.0.0\"\nsource = \"{}\"\n",
            model.display()
        ),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_mdeploy"))
        .args(["build", s(dir.path())])
        .env_remove("MDEPLOY_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no signing key"), "{}", stderr(&o));
    assert!(!dir.path().join("build/m-1.0.0.mdpkg").exists());
    // a key in the environment that is no key: refused without repeating the secret
    for secret in [
        "c2VjcmV0LWtleS1tYXRlcmlhbA==",
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_mdeploy"))
            .args(["build", s(dir.path()), "--json"])
            .env("MDEPLOY_KEY", secret)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(all.contains("MDEPLOY_KEY is neither"), "{all}");
        assert!(!all.contains("c2VjcmV0"), "the secret leaked: {all}");
    }
}

#[test]
fn a_failing_stage_stops_the_build_with_its_exit_code_and_no_archive() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("mtcnn_rnet");
    let data = model.parent().unwrap().join("test_data_set_1");
    // half the weights zeroed cannot pass fp32 verification
    write_repo(
        dir.path(),
        &format!(
            "[model]\nname = \"m\"\nversion = \"1.0.0\"\nsource = \"{}\"\n\n[optimize]\nprune = 0.5\n\n\
             [verify]\ndata = [\"{}\"]\ntolerance = \"fp32\"\n\n[pack]\nunsigned = true\n",
            model.display(),
            data.display()
        ),
    );
    let o = mdeploy(&["build", s(dir.path())]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("build stopped at the verify stage"),
        "{}",
        stderr(&o)
    );
    assert!(dir.path().join("build/verify/report.json").is_file());
    assert!(!dir.path().join("build/m-1.0.0.mdpkg").exists());
    // and it is not up to date afterwards: the next build runs verify again
    let (o, plan) = build_json(&[s(dir.path()), "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(states(&plan)[2], ("verify".into(), "would-run".into()));
}

/// Another real model, another mode: static int8 with calibration data, signed with a key from
/// the environment (as a CI secret would hold it).
#[test]
fn a_static_int8_build_of_another_model_signs_with_the_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("squeezenet1_1");
    let parent = model.parent().unwrap();
    write_repo(
        dir.path(),
        &format!(
            "[model]\nname = \"squeezenet\"\nversion = \"2.1.0-rc.1\"\nsource = \"{}\"\n\n\
             [optimize]\nint8 = \"static\"\ncalibration = [\"{}\"]\n\n\
             [verify]\ndata = [\"{}\"]\n",
            model.display(),
            parent.join("test_data_set_0").display(),
            parent.join("test_data_set_1").display()
        ),
    );
    let keys = tempfile::tempdir().unwrap();
    let o = mdeploy(&["keygen", "-o", s(keys.path())]);
    assert!(o.status.success());
    let pem = std::fs::read_to_string(keys.path().join("mdeploy.key")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mdeploy"))
        .args(["build", s(dir.path()), "--json"])
        .env("MDEPLOY_KEY", &pem)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let archive = summary["archive"].as_str().unwrap();
    let o = mdeploy(&[
        "inspect",
        archive,
        "--key",
        s(&keys.path().join("mdeploy.pub")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["signature"], "verified");
    assert_eq!(m["manifest"]["precision"]["quantization"], "qdq");
    assert_eq!(m["manifest"]["lineage"]["verify"]["tolerance"], "int8");
    assert_eq!(m["manifest"]["version"], "2.1.0-rc.1");
}

/// The build's verify stage holds outputs given an accuracy target of their own as `optimize`
/// does: by that target's cosine alone.
#[test]
fn the_verify_stage_holds_an_output_to_its_own_accuracy_target() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("mtcnn_rnet");
    let parent = model.parent().unwrap();
    write_repo(
        dir.path(),
        &format!(
            "[model]\nname = \"rnet\"\nversion = \"1.0.0\"\nsource = \"{}\"\n\n\
             [optimize]\nint8 = \"dynamic\"\naccuracy_target = \"cos=0.99;softmax_1:cos=0.95\"\n\n\
             [verify]\ndata = [\"{}\"]\n\n[pack]\nunsigned = true\n",
            model.display(),
            parent.join("test_data_set_0").display()
        ),
    );
    let o = mdeploy(&["build", s(dir.path()), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("build").join("verify").join("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["status"], "passed", "{report}");
    assert_eq!(
        report["tolerance"]["cosine_by_output"],
        serde_json::json!({"softmax_1": 0.95}),
        "{report}"
    );
}
