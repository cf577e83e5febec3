//! The engine layer end to end: onnxruntime is found (from the venv `.ci/run` creates), models
//! tract cannot run are verified through onnxruntime, the two engines agree on real models, a
//! perturbed weight fails in either engine, and what no engine can run never passes.
//!
//! These tests need onnxruntime: run them through `.ci/run` (which sets `VIRTUAL_ENV`), or set
//! `VIRTUAL_ENV` / `ORT_DYLIB_PATH` yourself. Without it they fail: they never skip.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{json, mdeploy, real_models, s, stderr};
use mdeploy::graph::ModelBuilder;
use mdeploy::graph::builder::{attr_float, attr_graph, attr_int, attr_ints};
use mdeploy::onnx::{DataType, Model, ModelProto};
use serde_json::Value;

fn write(dir: &Path, name: &str, proto: &ModelProto) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, prost::Message::encode_to_vec(proto)).unwrap();
    path
}

fn require_ort() {
    if let Err(e) = mdeploy::run::ort::library() {
        panic!("these tests need onnxruntime (run them through .ci/run): {e}");
    }
}

#[test]
fn onnxruntime_library_is_found() {
    // in CI this is the venv's onnxruntime wheel: a run without it must not pass quietly
    let path = mdeploy::run::ort::library().unwrap_or_else(|e| panic!("{e}"));
    assert!(path.is_file(), "{}", path.display());
    eprintln!("onnxruntime from {}", path.display());
}

/// A scaled matrix product as standard ops (tract runs them) and as onnxruntime's
/// `com.microsoft::FusedMatMul` contrib op (tract does not know it): what models onnxruntime's
/// tools produced look like.
fn fused_matmul_pair() -> (ModelProto, ModelProto) {
    let w: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 16.0).collect();
    let decomposed = ModelBuilder::new(17)
        .input("a", DataType::Float, &["2", "8"])
        .initializer_f32("w", &[8, 4], &w)
        .initializer_f32("half", &[], &[0.5])
        .node("MatMul", &["a", "w"], &["p"])
        .node("Mul", &["p", "half"], &["y"])
        .output("y", DataType::Float, &["2", "4"])
        .build();
    let mut contrib = ModelBuilder::new(17)
        .opset("com.microsoft", 1)
        .input("a", DataType::Float, &["2", "8"])
        .initializer_f32("w", &[8, 4], &w)
        .node("FusedMatMul", &["a", "w"], &["y"])
        .attr(attr_float("alpha", 0.5))
        .output("y", DataType::Float, &["2", "4"])
        .build();
    contrib.graph.as_mut().unwrap().node[0].domain = Some("com.microsoft".into());
    (decomposed, contrib)
}

/// A float model verified against its int8 form (either way round) runs side by side with it
/// in onnxruntime, where `auto` runs the int8 one: the report measures what quantizing
/// changed, not how far tract's float kernels are from onnxruntime's. An engine named is the
/// one both run in.
#[test]
fn a_float_and_an_int8_model_run_side_by_side_in_one_engine() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let w: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 16.0).collect();
    let float = ModelBuilder::new(17)
        .input("a", DataType::Float, &["2", "8"])
        .initializer_f32("w", &[8, 4], &w)
        .node("MatMul", &["a", "w"], &["y"])
        .output("y", DataType::Float, &["2", "4"])
        .build();
    // the same weights as int8 steps of 1/16, read through DequantizeLinear
    let steps: Vec<u8> = w.iter().map(|x| (x * 16.0) as i8 as u8).collect();
    let int8 = ModelBuilder::new(17)
        .input("a", DataType::Float, &["2", "8"])
        .initializer(mdeploy::graph::builder::raw_tensor(
            "w_q",
            DataType::Int8,
            &[8, 4],
            steps,
        ))
        .initializer_f32("w_scale", &[], &[1.0 / 16.0])
        .node("DequantizeLinear", &["w_q", "w_scale"], &["w"])
        .node("MatMul", &["a", "w"], &["y"])
        .output("y", DataType::Float, &["2", "4"])
        .build();
    let float = write(tmp.path(), "float.onnx", &float);
    let int8 = write(tmp.path(), "int8.onnx", &int8);
    for (reference, candidate, engine, ran) in [
        (&float, &int8, "auto", "ort"),
        (&int8, &float, "auto", "ort"),
        (&float, &int8, "tract", "tract"),
    ] {
        let o = mdeploy(&[
            "verify",
            s(reference),
            s(candidate),
            "--engine",
            engine,
            // onnxruntime quantizes the activations a DequantizeLinear -> MatMul reads
            "--tolerance",
            "int8",
            "--json",
        ]);
        let r = json(&o);
        assert_eq!(o.status.code(), Some(0), "{}{r}", stderr(&o));
        assert_eq!(r["status"], "passed", "{r}");
        assert_eq!(r["engines"]["reference"], ran, "{r}");
        assert_eq!(r["engines"]["candidate"], ran, "{r}");
        assert_eq!(r["candidate_outputs_reused"], false, "{r}");
    }
}

#[test]
fn a_model_with_contrib_ops_is_verified_through_onnxruntime() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let (decomposed, contrib) = fused_matmul_pair();
    let reference = write(tmp.path(), "decomposed.onnx", &decomposed);
    let candidate = write(tmp.path(), "contrib.onnx", &contrib);
    let o = mdeploy(&["verify", s(&reference), s(&candidate), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "passed");
    assert_eq!(r["engines"]["reference"], "tract");
    assert_eq!(r["engines"]["candidate"], "ort");
    // tract alone cannot run the candidate: a candidate that does not run is a failure
    let o = mdeploy(&[
        "verify",
        s(&reference),
        s(&candidate),
        "--engine",
        "tract",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "failed");
    assert!(
        r["failure"]
            .as_str()
            .unwrap()
            .starts_with("the candidate does not run"),
        "{r}"
    );
    // and as the reference it cannot be verified at all: unsupported, never passed
    let o = mdeploy(&[
        "verify",
        s(&candidate),
        s(&reference),
        "--engine",
        "tract",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json(&o)["status"], "unsupported");
}

#[test]
fn an_if_whose_other_branch_cannot_hold_runs_in_onnxruntime() {
    require_ort();
    // then: Squeeze axis 1 (only valid when it is 1); else: ReduceMean over axis 1. The
    // condition is false for every reasonable input, so onnxruntime takes the else branch;
    // tract plans both branches and refuses the Squeeze of a dim of 4.
    let then = mdeploy::graph::GraphBuilder::new("then")
        .initializer_i64("axis1", &[1], &[1])
        .node("Squeeze", &["x", "axis1"], &["t"])
        .output("t", DataType::Float, &[])
        .build();
    let other = mdeploy::graph::GraphBuilder::new("else")
        .node("ReduceMean", &["x"], &["e"])
        .attr(attr_ints("axes", &[1]))
        .attr(attr_int("keepdims", 0))
        .output("e", DataType::Float, &[])
        .build();
    // symbolic dims, as in the real Silero VAD: only concrete inputs show the Squeeze invalid
    let with_if = ModelBuilder::new(17)
        .input("x", DataType::Float, &["N", "T"])
        .node("ReduceSum", &["x"], &["total"])
        .attr(attr_int("keepdims", 0))
        .initializer_f32("huge", &[], &[1e30])
        .node("Greater", &["total", "huge"], &["cond"])
        .node("If", &["cond"], &["y"])
        .attr(attr_graph("then_branch", then))
        .attr(attr_graph("else_branch", other))
        .output("y", DataType::Float, &["N"])
        .build();
    let plain = ModelBuilder::new(17)
        .input("x", DataType::Float, &["N", "T"])
        .node("ReduceMean", &["x"], &["y"])
        .attr(attr_ints("axes", &[1]))
        .attr(attr_int("keepdims", 0))
        .output("y", DataType::Float, &["N"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let with_if = write(tmp.path(), "if.onnx", &with_if);
    let plain = write(tmp.path(), "plain.onnx", &plain);
    let o = mdeploy(&["verify", s(&plain), s(&with_if), "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let r = json(&o);
    assert_eq!(r["engines"]["candidate"], "ort", "{r}");
    assert_eq!(r["engines"]["reference"], "tract", "{r}");
}

#[test]
fn nhwc_conv_with_a_channel_bias_add_agrees_in_both_engines() {
    require_ort();
    // the tf2onnx pattern: NHWC in, Transpose, Conv without bias, Add of a [C,1,1] bias
    let w: Vec<f32> = (0..4 * 3 * 9)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
        .collect();
    let model = ModelBuilder::new(13)
        .input("image", DataType::Float, &["N", "8", "8", "3"])
        .initializer_f32("w", &[4, 3, 3, 3], &w)
        .initializer_f32("bias", &[4, 1, 1], &[0.1, -0.2, 0.3, -0.4])
        .node("Transpose", &["image"], &["nchw"])
        .attr(attr_ints("perm", &[0, 3, 1, 2]))
        .node("Conv", &["nchw", "w"], &["c"])
        .attr(attr_ints("pads", &[1, 1, 1, 1]))
        .node("Add", &["c", "bias"], &["b"])
        .node("LeakyRelu", &["b"], &["r"])
        .attr(attr_float("alpha", 0.1))
        .node("Transpose", &["r"], &["y"])
        .attr(attr_ints("perm", &[0, 2, 3, 1]))
        .output("y", DataType::Float, &["N", "8", "8", "4"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let m = write(tmp.path(), "nhwc.onnx", &model);
    let o = mdeploy(&["verify", s(&m), s(&m), "--engine", "tract,ort", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cross = &json(&o)["cross_engine"];
    assert!(cross["error"].is_null(), "{cross}");
    assert!(
        cross["outputs"][0]["max_abs_error"].as_f64().unwrap() < 1e-5,
        "{cross}"
    );
}

#[test]
fn an_op_no_engine_runs_is_written_only_unverified() {
    require_ort();
    let (decomposed, _) = fused_matmul_pair();
    let mut bogus = decomposed.clone();
    bogus
        .opset_import
        .push(mdeploy::onnx::proto::OperatorSetIdProto {
            domain: Some("example.custom".into()),
            version: Some(1),
        });
    let g = bogus.graph.as_mut().unwrap();
    g.node[1].op_type = Some("NoSuchScale".into());
    g.node[1].domain = Some("example.custom".into());
    let tmp = tempfile::tempdir().unwrap();
    let reference = write(tmp.path(), "decomposed.onnx", &decomposed);
    let bogus = write(tmp.path(), "bogus.onnx", &bogus);
    let o = mdeploy(&["verify", s(&reference), s(&bogus), "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["status"], "failed");
    assert!(
        r["failure"].as_str().unwrap().contains("neither engine"),
        "{r}"
    );
    // optimize cannot verify what no engine runs: a failure unless asked to write it anyway
    let out = tmp.path().join("out.onnx");
    let o = mdeploy(&["optimize", s(&bogus), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-unverified"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = mdeploy(&["optimize", s(&bogus), "-o", s(&out), "--allow-unverified"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNVERIFIED"));
    assert!(out.exists());
    // float16 and dynamic int8 measure the model first: the error says what stops them and how
    // to go on; asked to, they convert without measuring, which the report says (no calibration,
    // no accuracy), and write the result unverified
    let w: Vec<f32> = (0..64 * 64)
        .map(|i| ((i % 61) as f32 - 30.0) / 64.0)
        .collect();
    let mut custom = ModelBuilder::new(17)
        .opset("example.custom", 1)
        .input("x", DataType::Float, &["4", "64"])
        .initializer_f32("w", &[64, 64], &w)
        .node("MatMul", &["x", "w"], &["m"])
        .node("Relu", &["m"], &["r"])
        .node("NoSuchScale", &["r"], &["y"])
        .output("y", DataType::Float, &["4", "64"])
        .build();
    custom.graph.as_mut().unwrap().node[2].domain = Some("example.custom".into());
    let custom = write(tmp.path(), "custom.onnx", &custom);
    for mode in [&["--fp16"][..], &["--int8", "dynamic"]] {
        let out = tmp.path().join("q.onnx");
        let mut args = vec!["optimize", s(&custom), "-o", s(&out), "--json"];
        args.extend(mode);
        let o = mdeploy(&args);
        assert_eq!(o.status.code(), Some(2), "{mode:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("neither engine") && e.contains("--allow-unverified"),
            "{e}"
        );
        assert!(!out.exists());
        args.push("--allow-unverified");
        let o = mdeploy(&args);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["verification"]["status"], "unsupported", "{r}");
        let q = &r["quantize"];
        assert!(q["calibration"].is_null() && q["accuracy"].is_null(), "{q}");
        let done = ["nodes_float16", "quantized"]
            .iter()
            .filter_map(|k| {
                q[k].as_u64()
                    .or_else(|| q[k].as_array().map(|a| a.len() as u64))
            })
            .sum::<u64>();
        assert!(done > 0, "{mode:?}: nothing converted: {q}");
        assert!(out.exists());
        std::fs::remove_file(&out).unwrap();
        // and says so in words
        let words: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let o = mdeploy(&words);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("not measured") && e.contains("UNVERIFIED"),
            "{e}"
        );
        std::fs::remove_file(&out).unwrap();
    }
}

/// The largest initializer (or Constant tensor) of a model, with Gaussian-like noise of half its
/// standard deviation added to every element.
fn perturb_largest_weight(proto: &mut ModelProto) -> String {
    let g = proto.graph.as_mut().unwrap();
    let mut tensors: Vec<&mut mdeploy::onnx::proto::TensorProto> = g
        .initializer
        .iter_mut()
        .chain(
            g.node
                .iter_mut()
                .filter(|n| n.op_type() == "Constant")
                .filter_map(|n| {
                    n.attribute
                        .iter_mut()
                        .find(|a| a.name() == "value")
                        .and_then(|a| a.t.as_mut())
                }),
        )
        .filter(|t| t.data_type() == DataType::Float.code())
        .collect();
    let count = |t: &mdeploy::onnx::proto::TensorProto| t.dims.iter().product::<i64>();
    tensors.sort_by_key(|t| std::cmp::Reverse(count(t)));
    let t = tensors.into_iter().next().expect("a float weight");
    let values = mdeploy::onnx::TensorData::new(t, None)
        .unwrap()
        .f32s()
        .unwrap();
    t.float_data.clear();
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noisy: Vec<u8> = values
        .iter()
        .flat_map(|&v| {
            // a sum of four uniforms: roughly normal, variance 1/3, scaled to 0.5 std
            let mut u = 0.0;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                u += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            }
            ((v as f64 + u * 3f64.sqrt() * 0.5 * std) as f32).to_le_bytes()
        })
        .collect();
    t.raw_data = Some(noisy.into());
    t.name().to_string()
}

#[test]
fn a_perturbed_weight_fails_on_every_real_model_in_both_engines() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in real_models() {
        let mut proto = Model::load(&path).unwrap().proto;
        let weight = perturb_largest_weight(&mut proto);
        let perturbed = write(tmp.path(), &format!("{name}.onnx"), &proto);
        // on verify's default data (seeded random samples): the stored samples of a confident
        // classifier can saturate its softmax so that no output moves measurably
        for engine in ["auto", "ort"] {
            let o = mdeploy(&[
                "verify",
                s(&path),
                s(&perturbed),
                "--engine",
                engine,
                "--json",
            ]);
            let r: Value = json(&o);
            assert_eq!(
                (o.status.code(), r["status"].as_str()),
                (Some(1), Some("failed")),
                "{name} with {weight} perturbed passed in {engine}: {}",
                r["outputs"]
            );
        }
    }
}

#[test]
fn every_real_model_verifies_against_its_stored_outputs_in_onnxruntime() {
    require_ort();
    for (name, path) in real_models() {
        let dir = path.parent().unwrap();
        for engine in ["ort", "auto"] {
            let o = mdeploy(&[
                "verify",
                s(&path),
                "--data",
                s(&dir.join("test_data_set_0")),
                "--data",
                s(&dir.join("test_data_set_1")),
                "--engine",
                engine,
                "--json",
            ]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{name} in {engine}: {}",
                stderr(&o)
            );
            let o = mdeploy(&["verify", s(&path), s(&path), "--engine", engine, "--json"]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{name} in {engine}: {}",
                stderr(&o)
            );
        }
    }
}

/// tract computes a float16 model's nodes in float32 between float16 values, as onnxruntime's
/// CPU kernels do: computed in float16, ppocr_v4_det's squeeze-excite means over 160x160 maps
/// overflowed (cosine 0.28 against float32) and its products took a generic kernel (19 s a run
/// instead of 1.8). Every real model's float16 conversion agrees with float32 in tract and with
/// itself in onnxruntime (the cosine of the fp16 preset; its elementwise bounds are the
/// conversion's own business, and Silero VAD's state misses them in either engine).
#[test]
fn float16_models_agree_with_float32_and_across_engines() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in real_models() {
        let half = tmp.path().join(format!("{name}.onnx"));
        let o = mdeploy(&["optimize", s(&path), "-o", s(&half), "--fp16", "-q"]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        let data = path.parent().unwrap().join("test_data_set_0");
        let o = mdeploy(&[
            "verify",
            s(&path),
            s(&half),
            "--data",
            s(&data),
            "--engine",
            "tract,ort",
            "--tolerance",
            "fp16",
            "--json",
        ]);
        let r: Value = json(&o);
        assert_eq!(r["engines"]["candidate"], "tract", "{name}");
        let outputs = r["outputs"].as_array().unwrap();
        assert!(!outputs.is_empty(), "{name}: {r}");
        for out in outputs {
            let cosine = out["cosine_similarity"].as_f64().unwrap();
            assert!(
                cosine >= 0.999,
                "{name}: float16 in tract against float32 {out}"
            );
        }
        let across = &r["cross_engine"];
        assert_eq!(
            across["engines"],
            serde_json::json!(["tract", "ort"]),
            "{name}"
        );
        assert!(across["error"].is_null(), "{name}: {across}");
        let cross = across["outputs"].as_array().unwrap();
        assert_eq!(cross.len(), outputs.len(), "{name}");
        for out in cross {
            let cosine = out["cosine_similarity"].as_f64().unwrap();
            assert!(cosine >= 0.999, "{name}: tract against onnxruntime {out}");
        }
    }
}

/// Before opset 7 binary ops broadcast by attribute (`broadcast`, `axis`) and PRelu reads a
/// one-dimensional slope per channel: onnxruntime has no kernels for them, tract read them as
/// numpy broadcasts. Both engines run such a model raised to 7, which computes the same: every
/// PyTorch export of the ONNX suite at opset 6 gives its stored outputs in each engine (34 did
/// not load in onnxruntime, 3 PRelus failed in tract). `convert` writes it raised to 7, and the
/// file gives them too.
#[test]
fn models_at_opset_6_give_their_stored_outputs_in_both_engines() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for path in common::conformance_models() {
        let dir = path.parent().unwrap();
        let suite = dir.parent().unwrap().file_name().unwrap().to_string_lossy();
        if !suite.starts_with("pytorch") {
            continue;
        }
        let model = Model::load(&path).unwrap();
        if model.opset("") != Some(6) {
            continue;
        }
        for engine in ["tract", "ort"] {
            let o = mdeploy(&[
                "verify",
                s(&path),
                "--data",
                s(&dir.join("test_data_set_0")),
                "--engine",
                engine,
                "--json",
            ]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{} in {engine}: {}",
                path.display(),
                stderr(&o)
            );
        }
        let raised = tmp.path().join("raised.onnx");
        let o = mdeploy(&["convert", s(&path), "-o", s(&raised), "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(json(&o)["report"]["opset_raised"]["to"], 7);
        assert_eq!(Model::load(&raised).unwrap().opset(""), Some(7));
        let o = mdeploy(&[
            "verify",
            s(&raised),
            "--data",
            s(&dir.join("test_data_set_0")),
            "--engine",
            "ort",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        if checked == 0 {
            // optimize writes it raised too, and its report says so and reads back
            let out = tmp.path().join("optimized.onnx");
            let report = tmp.path().join("report.json");
            let o = mdeploy(&[
                "optimize",
                s(&path),
                "-o",
                s(&out),
                "--data",
                s(&dir.join("test_data_set_0")),
                "--report",
                s(&report),
            ]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_eq!(Model::load(&out).unwrap().opset(""), Some(7));
            let bytes = std::fs::read(&report).unwrap();
            let doc = mdeploy::pipeline::OptimizeDocument::from_json(&bytes, &report).unwrap();
            let raised = doc.opset_raised.expect("opset_raised in the report");
            assert_eq!((raised.from, raised.to), (6, 7));
        }
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} models at opset 6");
}

/// A model at opset 6 whose raise to 7 would change what a node computes (a BatchNormalization
/// without is_test normalizes with its batch's statistics) is refused by both engines, naming
/// the node; `convert` writes it at 6 with a finding that says why.
#[test]
fn an_opset_6_model_whose_raise_would_change_it_is_refused_by_name() {
    require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let b = ModelBuilder::new(6).input("x", DataType::Float, &["2", "3", "4", "4"]);
    let b = ["s", "b", "m", "v"]
        .iter()
        .fold(b, |b, n| b.initializer_f32(n, &[3], &[1.0, 0.5, 2.0]));
    let proto = b
        .node("BatchNormalization", &["x", "s", "b", "m", "v"], &["y"])
        .output("y", DataType::Float, &["2", "3", "4", "4"])
        .build();
    let path = write(tmp.path(), "bn6.onnx", &proto);
    for engine in ["tract", "ort"] {
        let o = mdeploy(&["verify", s(&path), s(&path), "--engine", engine]);
        assert_ne!(o.status.code(), Some(0), "{engine}");
        let err = stderr(&o);
        assert!(
            err.contains("training mode") && err.contains("BatchNormalization"),
            "{err}"
        );
    }
    let out = tmp.path().join("out.onnx");
    let o = mdeploy(&["convert", s(&path), "-o", s(&out), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json(&o)["lint"][0]["kind"], "opset_not_raised");
    assert_eq!(Model::load(&out).unwrap().opset(""), Some(6));
}

/// An input declaring a batch of 2^40 aborted `optimize` and `verify` (SIGABRT) when random
/// data for it was allocated: it is an input error naming the size now.
#[test]
fn an_absurd_declared_dim_is_an_input_error_not_an_abort() {
    let model = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1099511627776", "4"])
        .node("Relu", &["x"], &["y"])
        .output("y", DataType::Float, &["1099511627776", "4"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let m = write(tmp.path(), "huge.onnx", &model);
    let out = tmp.path().join("out.onnx");
    for args in [
        vec!["verify", s(&m), s(&m)],
        vec!["optimize", s(&m), "-o", s(&out)],
    ] {
        let o = mdeploy(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("over the budget"), "{}", stderr(&o));
        assert!(stderr(&o).contains("--input-shape"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

/// A session that measures or verifies computes what onnxruntime's default session does, the
/// one a user runs the model in (`serving` prepacks, as onnxruntime does by default). Measuring
/// sessions skip prepacking for a few runs, except for 4-bit weights: onnxruntime's MatMulNBits
/// quantizes activations to int8 only with prepacked weights (unprepacked, bert_tiny's int4
/// outputs moved by 3e-3).
#[test]
fn measuring_sessions_compute_what_a_default_session_does() {
    use mdeploy::run::ort::OrtRunner;
    require_ort();
    let path = common::real_model("bert_tiny_random");
    let tmp = tempfile::tempdir().unwrap();
    let int4 = tmp.path().join("int4.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&int4),
        "--int4",
        "weight-only",
        "--no-verify",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let data = path.parent().unwrap().join("test_data_set_0");
    let sample = mdeploy::verify::load_samples(&[data]).unwrap();
    let inputs = &sample[0].inputs;
    let mut compared = 0;
    for model in [&path, &int4] {
        let m = Model::load(model).unwrap();
        let measured = OrtRunner::measuring(&m, 1, mdeploy::run::GraphLevel::Default)
            .unwrap()
            .run(inputs)
            .unwrap();
        let served = OrtRunner::serving(&m).unwrap().run(inputs).unwrap();
        for (a, b) in measured.iter().zip(&served) {
            let (a, b) = (
                a.tensor.to_plain_array_view::<f32>().unwrap(),
                b.tensor.to_plain_array_view::<f32>().unwrap(),
            );
            let most = a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            // float kernels sum in another order unprepacked; MatMulNBits computes otherwise
            let allowed = if model == &int4 { 0.0 } else { 1e-4 };
            assert!(most <= allowed, "{}: {most}", model.display());
            compared += 1;
        }
    }
    assert!(compared >= 2);
}

/// A model that runs only on inputs long enough for its reflect padding (as silero's VAD pads
/// by 64): on seeded random inputs (64 long) onnxruntime refuses it, and the report says what
/// it ran on and that real data is the way; on such data it verifies. Quantizing it says the same.
#[test]
fn a_model_that_fails_on_random_inputs_says_what_they_were() {
    require_ort();
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["1", "n"])
        .initializer_i64("pads", &[4], &[0, 64, 0, 64])
        .node("Pad", &["x", "pads"], &["y"])
        .attr(mdeploy::graph::builder::attr_string("mode", "reflect"))
        .output("y", DataType::Float, &["1", "?"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let m = write(tmp.path(), "pad.onnx", &proto);
    let o = mdeploy(&["verify", s(&m), s(&m), "--engine", "ort", "--json"]);
    let v = json(&o);
    assert_eq!(v["status"], "unsupported", "{v}");
    let message = v["unsupported"]["message"].as_str().unwrap();
    assert!(
        message.contains("on seeded random inputs: x [1, 64] FLOAT") && message.contains("--data"),
        "{message}"
    );
    // a sample long enough verifies
    let data = tmp.path().join("x.npz");
    let x: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
    let x = mdeploy::run::NamedTensor {
        name: "x".into(),
        tensor: tract_onnx::prelude::Tensor::from_shape(&[1, 100], &x).unwrap(),
    };
    mdeploy::run::tensor_io::write_npz(&data, &[x]).unwrap();
    let o = mdeploy(&[
        "verify",
        s(&m),
        s(&m),
        "--engine",
        "ort",
        "--data",
        s(&data),
        "--json",
    ]);
    assert_eq!(json(&o)["status"], "passed", "{}", stderr(&o));
    // quantizing measures the model on the same random inputs first: the same pointer to data,
    // an input error, nothing written; on the data it quantizes
    let out = tmp.path().join("pad.fp16.onnx");
    let quantize = |data: Option<&Path>| {
        let mut args = vec![
            "optimize",
            s(&m),
            "-o",
            s(&out),
            "--fp16",
            "--engine",
            "ort",
        ];
        if let Some(d) = data {
            args.extend(["--data", s(d)]);
        }
        mdeploy(&args)
    };
    let o = quantize(None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let message = stderr(&o);
    assert!(
        message.contains("did not run on seeded random inputs: x [1, 64] FLOAT")
            && message.contains("--calibration"),
        "{message}"
    );
    assert!(!out.exists());
    let o = quantize(Some(&data));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.exists());
}
