//! `mdeploy optimize --fp16` end to end on the real models: every one converts, verifies under
//! the fp16 preset, halves in size, keeps its interface, and reports what stayed float32; a
//! result that misses its tolerance is not written.

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Output;

use common::{json, mdeploy, s, stderr};
use mdeploy::onnx::proto::{ValueInfoProto, type_proto};
use mdeploy::onnx::{DataType, Model};
use serde_json::Value;

fn elem_type(vi: &ValueInfoProto) -> i32 {
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type(),
        _ => 0,
    }
}

fn data_args(path: &std::path::Path) -> Vec<String> {
    let dir = path.parent().unwrap();
    ["test_data_set_0", "test_data_set_1"]
        .iter()
        .flat_map(|d| ["--data".to_string(), dir.join(d).display().to_string()])
        .collect()
}

/// The verification in `optimize`'s report `r` read the quantized model's outputs from the
/// accuracy search, and the input model's from its run beside the quantization, and they are
/// what the two models compute: `mdeploy verify` of the input against the model written on the
/// same data, which runs both, measures the same errors (a search that handed on another round's
/// outputs, or another sample's, would not).
fn reused_outputs_are_the_written_models(model: &Path, out: &Path, r: &Value) {
    let v = &r["verification"];
    assert_eq!(v["candidate_outputs_reused"], true, "{v}");
    // the input model ran beside the quantization in the engine the verification runs it in
    // beside a quantized model; beside a model with every node returned to float, it runs
    // again
    let quantized = v["engines"]["candidate"] == "ort";
    assert_eq!(v["reference_outputs_reused"], quantized, "{v}");
    let mut args = vec!["verify".to_string(), s(model).into(), s(out).into()];
    args.extend(data_args(model));
    args.push("--json".into());
    let o = mdeploy(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let again = json(&o);
    assert_eq!(again["candidate_outputs_reused"], false, "{again}");
    assert_eq!(again["reference_outputs_reused"], false, "{again}");
    assert_eq!(again["engines"], v["engines"], "{again}");
    let outputs = |v: &Value| -> Vec<(String, f64, f64)> {
        v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap().to_string(),
                    o["max_abs_error"].as_f64().unwrap(),
                    o["cosine_similarity"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (reused, ran) = (outputs(v), outputs(&again));
    assert_eq!(reused.len(), ran.len());
    for ((name, e1, c1), (other, e2, c2)) in reused.iter().zip(&ran) {
        assert_eq!(name, other);
        // onnxruntime runs the same model on the same inputs alike; the margin is for its
        // threads, far below what another candidate's rounding changes
        assert!(
            (e1 - e2).abs() <= 1e-6 * e2.abs().max(1e-6),
            "{name}: {e1} against {e2}"
        );
        assert!((c1 - c2).abs() <= 1e-9, "{name}: {c1} against {c2}");
    }
}

/// `mdeploy optimize MODEL -o OUT MODE... --accuracy-target TARGET --json` on the model's data.
fn optimize_on_data(model: &Path, out: &Path, mode: &[&str], target: &str) -> Output {
    let mut args: Vec<&str> = vec!["optimize", s(model), "-o", s(out)];
    args.extend(mode);
    args.extend(["--accuracy-target", target, "--json"]);
    let data = data_args(model);
    args.extend(data.iter().map(String::as_str));
    mdeploy(&args)
}

/// `optimize PATH -o OUT --int8 static --calibration` on the model's first data set, `--json`.
fn static_int8_args<'a>(path: &'a Path, out: &'a Path, calibration: &'a Path) -> Vec<&'a str> {
    vec![
        "optimize",
        s(path),
        "-o",
        s(out),
        "--int8",
        "static",
        "--calibration",
        s(calibration),
        "--json",
    ]
}

#[test]
fn every_real_model_converts_to_fp16_verifies_and_halves() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let out = tmp.path().join(format!("{name}.onnx"));
        let data = data_args(&path);
        let mut args = vec!["optimize", s(&path), "-o", s(&out), "--fp16", "--json"];
        args.extend(data.iter().map(String::as_str));
        let o = mdeploy(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let r = json(&o);
        let v = &r["verification"];
        assert_eq!(v["status"], "passed", "{name}");
        assert_eq!(v["tolerance"]["preset"], "fp16", "{name}");
        for output in v["outputs"].as_array().unwrap() {
            let cosine = output["cosine_similarity"].as_f64().unwrap();
            assert!(cosine >= 0.999, "{name}: {output}");
        }
        let f = &r["quantize"];
        assert_eq!(f["mode"], "fp16");
        assert!(f["nodes_float16"].as_u64().unwrap() > 0, "{name}");
        assert!(f["calibration"]["samples"].as_u64() == Some(2), "{name}");
        // measured node by node against float32, within the default target
        assert_eq!(f["accuracy"]["met"], true, "{name}: {}", f["accuracy"]);
        let sqnr = f["output_sqnr_db"].as_array().unwrap();
        assert!(!sqnr.is_empty(), "{name}");
        assert!(
            sqnr.iter()
                .all(|p| p[1].as_f64().is_none_or(|db| db > 20.0)),
            "{name}"
        );
        // weights are most of each file: float16 halves it, give or take what stays float32
        let (before, after) = (
            r["input"]["bytes"].as_u64().unwrap(),
            r["output"]["bytes"].as_u64().unwrap(),
        );
        assert!(after * 100 < before * 56, "{name}: {before} -> {after}");
        // the interface keeps its names and float32 types
        let (original, converted) = (Model::load(&path).unwrap(), Model::load(&out).unwrap());
        mdeploy::graph::check_model(&converted).unwrap();
        let io = |m: &Model| -> Vec<(String, i32)> {
            let g = m.graph();
            g.input
                .iter()
                .chain(&g.output)
                .map(|v| (v.name().to_string(), elem_type(v)))
                .collect()
        };
        assert_eq!(io(&original), io(&converted), "{name}");
        assert!(
            converted
                .graph()
                .initializer
                .iter()
                .any(|t| t.data_type() == DataType::Float16.code()),
            "{name}"
        );
    }
}

#[test]
fn fp16_io_makes_the_interface_float16_and_a_missed_tolerance_writes_nothing() {
    let path = common::real_model("squeezenet1_1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("half.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--fp16",
        "--fp16-io",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // measured through the float16 interface (inputs rounded), nothing returned to float32
    let q = &json(&o)["quantize"];
    assert_eq!(q["accuracy"]["met"], true, "{q}");
    assert_eq!(q["accuracy"]["returned_to_float"], 0, "{q}");
    assert!(q["nodes_float16"].as_u64().unwrap() > 0);
    assert!(!q["output_sqnr_db"].as_array().unwrap().is_empty());
    let m = Model::load(&out).unwrap();
    assert_eq!(elem_type(&m.graph().input[0]), DataType::Float16.code());
    assert_eq!(elem_type(&m.graph().output[0]), DataType::Float16.code());
    // float16 cannot meet the exact preset: exit 1 and no file
    let failed = tmp.path().join("exact.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&failed),
        "--fp16",
        "--tolerance",
        "exact",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!failed.exists());
    // quantization options without quantization are a usage error
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&failed),
        "--exclude-nodes",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn excluded_op_types_stay_float32_and_are_reported() {
    let path = common::real_model("mtcnn_pnet");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pnet.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--fp16",
        "--exclude-op-types",
        "PRelu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    let kept = r["quantize"]["kept_float32"].as_array().unwrap();
    assert!(!kept.is_empty());
    assert!(kept.iter().all(
        |k| k["op"] == "PRelu" && k["reason"].as_str().unwrap().contains("--exclude-op-types")
    ));
}

/// Dynamic int8 on every real model: it verifies under the int8 preset, transformers' MatMuls
/// become MatMulInteger, and no Conv becomes ConvInteger (which onnxruntime runs several times
/// slower than its float Conv).
#[test]
fn every_real_model_quantizes_to_dynamic_int8_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let out = tmp.path().join(format!("{name}.onnx"));
        let data = data_args(&path);
        let mut args = vec![
            "optimize",
            s(&path),
            "-o",
            s(&out),
            "--int8",
            "dynamic",
            "--json",
        ];
        args.extend(data.iter().map(String::as_str));
        let o = mdeploy(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["verification"]["status"], "passed", "{name}");
        assert_eq!(r["verification"]["tolerance"]["preset"], "int8", "{name}");
        let q = &r["quantize"];
        assert_eq!(q["mode"], "int8-dynamic");
        assert_eq!(q["accuracy"]["met"], true, "{name}");
        let m = Model::load(&out).unwrap();
        mdeploy::graph::check_model(&m).unwrap();
        let ops: Vec<&str> = m.graph().node.iter().map(|n| n.op_type()).collect();
        assert!(!ops.contains(&"ConvInteger"), "{name}");
        let quantized = q["quantized"].as_array().unwrap().len();
        let products = q["quantized"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["op"] != "Gather")
            .count();
        assert_eq!(
            ops.iter().filter(|o| **o == "MatMulInteger").count(),
            products,
            "{name}"
        );
        // every quantized node's output was measured against float
        assert_eq!(
            q["output_sqnr_db"].as_array().unwrap().len(),
            quantized,
            "{name}"
        );
        if name == "bert_tiny_random" {
            assert_eq!(products, 12 + 1, "{name}: every projection and the pooler");
            assert_eq!(
                quantized - products,
                3,
                "{name}: word, position, token type tables"
            );
            // the embeddings were most of the file
            let (before, after) = (
                r["input"]["bytes"].as_u64().unwrap(),
                r["output"]["bytes"].as_u64().unwrap(),
            );
            assert!(after * 100 < before * 30, "{name}: {before} -> {after}");
            // onnxruntime's AVX2 kernels (no VNNI) saturate some pairs of uint8 x int8
            // products in 16 bits: the worst node measured 21.3 dB there
            let floor = if common::int8_products_exact() {
                25.0
            } else {
                20.0
            };
            for entry in q["output_sqnr_db"].as_array().unwrap() {
                assert!(entry[1].as_f64().unwrap() > floor, "{name}: {entry}");
            }
            // and the report says which kind of CPU measured it
            let products = match q["calibration"]["engine"].as_str() {
                Some("ort") if cfg!(target_arch = "x86_64") => {
                    if common::int8_products_exact() {
                        "exact"
                    } else {
                        "saturating-pairs"
                    }
                }
                _ => "unknown",
            };
            assert_eq!(q["accuracy"]["int8_products"], products, "{name}");
        }
    }
}

/// Static int8 (QDQ) on every real model, calibrated on one data set and verified on both: it
/// passes the int8 preset, its accuracy target holds (nodes returned to float where needed), and
/// the ranges saved to a calibration cache are reused on a second run with the same result.
#[test]
fn every_real_model_quantizes_to_static_int8_within_its_accuracy_target() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let out = tmp.path().join(format!("{name}.onnx"));
        let cache = tmp.path().join(format!("{name}.ranges.json"));
        let dir = path.parent().unwrap().join("test_data_set_0");
        let data = data_args(&path);
        // every node that can be: the default placement leaves the CNNs with a float op
        // after each Conv float (the test below)
        let mut args = static_int8_args(&path, &out, &dir);
        args.extend(["--int8-placement", "all", "--calibration-cache", s(&cache)]);
        args.extend(data.iter().map(String::as_str));
        let o = mdeploy(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["verification"]["status"], "passed", "{name}");
        let q = &r["quantize"];
        assert_eq!(q["mode"], "int8-static");
        assert_eq!(q["accuracy"]["met"], true, "{name}");
        assert_eq!(q["ranges_from_cache"], false);
        let m = Model::load(&out).unwrap();
        mdeploy::graph::check_model(&m).unwrap();
        // weights per channel everywhere: the models below opset 13 (mtcnn, the PP-OCR ones)
        // are raised to it first
        let from = Model::load(&path).unwrap().opset("").unwrap();
        assert_eq!(q["per_channel"], true, "{name}");
        assert_eq!(m.opset(""), Some(from.max(13)), "{name}");
        let raised = (from < 13).then_some(from);
        assert_eq!(q["opset_raised_from"].as_i64(), raised, "{name}");
        let dq = m
            .graph()
            .node
            .iter()
            .filter(|n| n.op_type() == "DequantizeLinear")
            .count();
        let quantized = q["quantized"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["op"] != "Gather")
            .count();
        assert!(
            dq >= quantized,
            "{name}: {dq} DequantizeLinear for {quantized} nodes"
        );
        // embedding tables are int8 rows (no DequantizeLinear): bert's word, position and
        // token type tables, most of its file
        let tables = q["quantized"].as_array().unwrap().len() - quantized;
        if name == "bert_tiny_random" {
            assert_eq!(tables, 3, "{name}");
        }
        // the cache is reused, and gives the same model
        let first = std::fs::read(&out).unwrap();
        let r = json(&mdeploy(&args));
        assert_eq!(r["quantize"]["ranges_from_cache"], true, "{name}");
        assert!(
            std::fs::read(&out).unwrap() == first,
            "{name}: not deterministic"
        );
        // other calibration data: the cache's ranges are not theirs, so they are measured again
        let other = path.parent().unwrap().join("test_data_set_1");
        let swapped: Vec<&str> = args
            .iter()
            .map(|a| if *a == s(&dir) { s(&other) } else { a })
            .collect();
        let r = json(&mdeploy(&swapped));
        assert_eq!(r["quantize"]["ranges_from_cache"], false, "{name}");
    }
}

/// The default placement keeps float what int8 would slow down in onnxruntime, estimated at
/// the calibration data's shapes (mtcnn_pnet's input has no fixed size: without them there is
/// no estimate), and keeps every Conv of a Conv -> Relu -> Conv network int8; `all` quantizes
/// every node it can.
#[test]
fn static_int8_quantizes_where_onnxruntime_runs_int8_faster_unless_asked_for_all() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let path = common::real_model(name);
        let out = tmp.path().join(format!("{name}.onnx"));
        let dir = path.parent().unwrap().join("test_data_set_0");
        let mut args = static_int8_args(&path, &out, &dir);
        args.extend(extra);
        let o = mdeploy(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        (json(&o)["quantize"].clone(), Model::load(&out).unwrap())
    };
    let slower = |q: &serde_json::Value| {
        q["kept_float"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| {
                k["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("int8 would be slower in onnxruntime")
            })
            .count()
    };
    // PRelu between every Conv: each one's Q/DQ and layout changes cost more than int8 saves
    let (q, written) = run("mtcnn_pnet", &[]);
    assert_eq!(q["placement"], "fast", "{q}");
    assert_eq!(slower(&q), 5, "{q}");
    // the shapes were pinned for the estimate only: the model keeps its symbolic input dims;
    // and with nothing quantized, it keeps its opset 12 (it would have been raised to 13)
    let declared = Model::load(&common::real_model("mtcnn_pnet")).unwrap();
    assert_eq!(written.graph().input, declared.graph().input);
    assert!(q["quantized"].as_array().unwrap().is_empty(), "{q}");
    assert_eq!(written.opset(""), Some(12));
    assert_eq!(q["opset_raised_from"], serde_json::Value::Null, "{q}");
    let (q, _) = run("mtcnn_pnet", &["--int8-placement", "all"]);
    assert_eq!(q["placement"], "all", "{q}");
    assert_eq!(slower(&q), 0, "{q}");
    assert!(!q["quantized"].as_array().unwrap().is_empty(), "{q}");
    // squeezenet: every Conv reads int8 from another or writes int8 to another
    let (q, _) = run("squeezenet1_1", &[]);
    assert_eq!(slower(&q), 0, "{q}");
    let convs = q["quantized"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["op"] == "Conv")
        .count();
    assert_eq!(convs, 26, "{q}");
}

/// A dynamic int8 target the fully quantized model misses: the nodes that lose most return to
/// float, each reported with why, until it holds; a target nothing can meet writes nothing.
#[test]
fn dynamic_int8_returns_nodes_to_float_until_its_accuracy_target_holds() {
    let path = common::real_model("mtcnn_rnet");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.onnx");
    let o = optimize_on_data(&path, &out, &["--int8", "dynamic"], "cos=0.9999999");
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    let a = &q["accuracy"];
    assert_eq!(a["met"], true, "{a}");
    assert!(a["rounds"].as_u64().unwrap() > 1, "{a}");
    let returned = a["returned_to_float"].as_u64().unwrap();
    assert!(returned > 0, "{a}");
    let reasons: Vec<&str> = q["kept_float"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["reason"].as_str())
        .filter(|r| r.starts_with("returned to float"))
        .collect();
    assert_eq!(reasons.len() as u64, returned, "{q}");
    assert!(a["achieved_cosine"].as_f64().unwrap() >= 0.9999999, "{a}");
    reused_outputs_are_the_written_models(&path, &out, &json(&o));
}

/// A classifier that outputs its class index (ArgMax, int64) has no float output for the
/// accuracy target: quantization goes ahead, held by the verification preset alone (the same
/// class on every sample), and the report says the target was not measured.
#[test]
fn a_model_without_float_outputs_is_held_to_the_preset_and_says_the_target_was_not_measured() {
    let real = common::real_model("mobilenet_v3_small");
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::load(&real).unwrap();
    let graph = model.graph_mut();
    let logits = graph.output[0].name().to_string();
    graph.node.push(mdeploy::onnx::proto::NodeProto {
        op_type: Some("ArgMax".into()),
        name: Some("class".into()),
        input: vec![logits],
        output: vec!["class".into()],
        attribute: vec![mdeploy::graph::builder::attr_int("axis", 1)],
        ..Default::default()
    });
    graph.output = vec![mdeploy::graph::builder::value_info(
        "class",
        DataType::Int64,
        &["batch"],
    )];
    let path = tmp.path().join("model.onnx");
    model.save(&path, Default::default()).unwrap();
    // the inputs of the stored data sets (their outputs are the float logits)
    for set in ["test_data_set_0", "test_data_set_1"] {
        std::fs::create_dir(tmp.path().join(set)).unwrap();
        let from = real.parent().unwrap().join(set).join("input_0.pb");
        std::fs::copy(from, tmp.path().join(set).join("input_0.pb")).unwrap();
    }
    let out = tmp.path().join("q.onnx");
    let o = optimize_on_data(&path, &out, &["--int8", "dynamic"], "cos=0.99,top1=1");
    assert!(o.status.success(), "{}", stderr(&o));
    let report = json(&o);
    let q = &report["quantize"];
    assert!(!q["quantized"].as_array().unwrap().is_empty(), "{q}");
    let a = &q["accuracy"];
    assert_eq!(a["met"], true, "{a}");
    assert!(
        a["unmeasured"]
            .as_str()
            .unwrap()
            .contains("no float output"),
        "{a}"
    );
    assert!(a["achieved_cosine"].is_null(), "{a}");
    assert_eq!(report["verification"]["status"], "passed", "{report}");
    assert!(out.exists());
}

/// A model neither engine runs (a training op) is refused in every mode with both engines'
/// reasons, nothing written: exit 2 where measuring it fails (float16 measures every float
/// value first), and where nothing could be quantized (no MatMul, Gemm or Conv: nothing is
/// run to measure) the verification after it cannot be made, exit 1, as without quantizing.
#[test]
fn a_model_neither_engine_runs_is_refused_with_both_reasons() {
    let dir = common::shared().join("onnx-node-tests/node/test_adagrad");
    let (model, data) = (dir.join("model.onnx"), dir.join("test_data_set_0"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.onnx");
    for (mode, code) in [
        (&["--int8", "dynamic"][..], 1),
        (&["--fp16"], 2),
        (&["--int4", "weight-only"], 1),
        (&["--int8", "static", "--calibration", s(&data)], 1),
        (&[], 1),
    ] {
        let mut args = vec!["optimize", s(&model), "-o", s(&out), "--data", s(&data)];
        args.extend(mode);
        let o = mdeploy(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{mode:?}: {err}");
        assert!(
            err.contains("neither engine can run the model; tract:")
                && err.contains("; onnxruntime:"),
            "{mode:?}: {err}"
        );
        assert!(!out.exists(), "{mode:?}");
    }
}

/// A float16 model that misses its accuracy target returns the nodes that lose most to float32,
/// each reported with why, until the target holds.
#[test]
fn fp16_returns_nodes_to_float32_until_its_accuracy_target_holds() {
    let path = common::real_model("bert_tiny_random");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b.onnx");
    let o = optimize_on_data(&path, &out, &["--fp16"], "cos=0.9999999");
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    let a = &q["accuracy"];
    assert_eq!(a["met"], true, "{a}");
    assert!(a["rounds"].as_u64().unwrap() > 1, "{a}");
    assert!(a["achieved_cosine"].as_f64().unwrap() >= 0.9999999, "{a}");
    let returned = a["returned_to_float"].as_u64().unwrap();
    assert!(returned > 0, "{a}");
    let reasons = q["kept_float32"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["reason"].as_str())
        .filter(|r| r.starts_with("returned to float"))
        .count();
    assert_eq!(reasons as u64, returned, "{q}");
    // most of the model is still float16
    assert!(q["nodes_float16"].as_u64().unwrap() > returned, "{q}");
    reused_outputs_are_the_written_models(&path, &out, &json(&o));
}

/// A model computed inside an If's branches (as silero's VAD is): the search cannot measure a
/// body's values, but returns its nodes to float32 all the same until the target holds, and
/// says why each went back, naming it by its path. Here the branch's weights and input rounded
/// to float16 leave an SQNR near 74 dB, short of the 90 asked.
#[test]
fn fp16_returns_nodes_inside_if_branches_to_float32() {
    use mdeploy::graph::builder::{attr_graph, attr_int};
    use mdeploy::graph::{GraphBuilder, ModelBuilder};
    let scale: Vec<f32> = (0..64).map(|k| k as f32 * 0.1 + 0.0123).collect();
    let then = GraphBuilder::new("then")
        .initializer_f32("scale", &[64], &scale)
        .node("Mul", &["x", "scale"], &["t"])
        .output("t", DataType::Float, &[])
        .build();
    let other = GraphBuilder::new("else")
        .node("Relu", &["x"], &["e"])
        .output("e", DataType::Float, &[])
        .build();
    let proto = ModelBuilder::new(17)
        .input("x", DataType::Float, &["4", "64"])
        .node("ReduceSum", &["x"], &["total"])
        .attr(attr_int("keepdims", 0))
        .initializer_f32("low", &[], &[-1e30])
        .node("Greater", &["total", "low"], &["cond"])
        .node("If", &["cond"], &["y"])
        .attr(attr_graph("then_branch", then))
        .attr(attr_graph("else_branch", other))
        .output("y", DataType::Float, &["4", "64"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("if.onnx");
    Model::from_proto(proto, tmp.path().to_path_buf())
        .save(&path, Default::default())
        .unwrap();
    let out = tmp.path().join("if.fp16.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--fp16",
        "--accuracy-target",
        "sqnr=90",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    assert_eq!(q["accuracy"]["met"], true, "{q}");
    let returned: Vec<&str> = q["kept_float32"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            k["reason"]
                .as_str()
                .is_some_and(|r| r.contains("inside an If/Loop/Scan body"))
        })
        .filter_map(|k| k["node"].as_str())
        .collect();
    assert!(returned.contains(&"#2 (If)/then_branch/#0 (Mul)"), "{q}");
    assert!(out.exists());
    // with a float16 interface the If, writing a graph output, is renamed and a Cast comes
    // before it: its body's nodes still name it by its place in the input model (inputs
    // rounded to float16 cap the SQNR near 71 dB)
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--fp16",
        "--fp16-io",
        "--accuracy-target",
        "sqnr=69",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    let labels: Vec<&str> = q["kept_float32"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["node"].as_str())
        .collect();
    assert!(labels.contains(&"#2 (If)/then_branch/#0 (Mul)"), "{q}");
}

/// int4 weight-only on a BERT export: every MatMul with a constant weight and the pooler's Gemm
/// (now a MatMul plus its bias) become blocked uint4 at opset 21 (raised from 17), and the three
/// embedding tables int8 rows, measured and verified with onnxruntime: a quarter of the float
/// file (0.92 of it with the tables float); a block size the 4-bit kernel does not take is a
/// usage error and writes nothing.
#[test]
fn int4_weight_only_quantizes_bert_matmuls_at_opset_21() {
    let path = common::real_model("bert_tiny_random");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b.onnx");
    let mut args = vec![
        "optimize".to_string(),
        s(&path).to_string(),
        "-o".into(),
        s(&out).to_string(),
        "--int4".into(),
        "weight-only".into(),
        "--json".into(),
    ];
    args.extend(data_args(&path));
    let o = mdeploy(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    let q = &r["quantize"];
    assert_eq!(q["mode"], "int4-weight-only");
    assert_eq!(q["opset_raised_from"], 17);
    assert_eq!(q["block_size"], 32);
    let quantized = q["quantized"].as_array().unwrap();
    assert_eq!(quantized.len(), 16, "{q}");
    assert_eq!(quantized.iter().filter(|n| n["op"] == "Gemm").count(), 1);
    assert_eq!(quantized.iter().filter(|n| n["op"] == "Gather").count(), 3);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!(size(&out) < 0.3 * size(&path), "{} bytes", size(&out));
    assert_eq!(q["accuracy"]["met"], true);
    assert_eq!(q["calibration"]["engine"], "ort");
    assert_eq!(r["verification"]["status"], "passed");
    assert_eq!(r["verification"]["engines"]["candidate"], "ort");
    // the float model runs beside it in the same engine; the int4 one ran as written on the
    // same samples in the search
    assert_eq!(r["verification"]["engines"]["reference"], "ort");
    reused_outputs_are_the_written_models(&path, &out, &r);
    let m = Model::load(&out).unwrap();
    mdeploy::graph::check_model(&m).unwrap();
    assert_eq!(m.opset(""), Some(21));
    let blocked = m
        .graph()
        .initializer
        .iter()
        .filter(|t| t.data_type() == DataType::Uint4.code())
        .count();
    assert_eq!(blocked, 26, "a weight and a zero point per MatMul and Gemm");
    assert!(m.graph().node.iter().all(|n| n.op_type() != "Gemm"));
    let bad = tmp.path().join("bad.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&bad),
        "--int4",
        "weight-only",
        "--int4-block-size",
        "24",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("power of two"), "{}", stderr(&o));
    assert!(!bad.exists());
}

/// The SQNR and decision measures bind like the cosine: a target in dB and on the side of 0.5
/// the face probabilities fall returns nodes to float until both hold, and the report says
/// what was reached.
#[test]
fn sqnr_and_decision_targets_bind() {
    let path = common::real_model("mtcnn_rnet");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.onnx");
    let o = optimize_on_data(&path, &out, &["--int8", "dynamic"], "sqnr=45,agree@0.5=1");
    assert!(o.status.success(), "{}", stderr(&o));
    let a = &json(&o)["quantize"]["accuracy"];
    assert_eq!(a["met"], true, "{a}");
    assert!(a["returned_to_float"].as_u64().unwrap() > 0, "{a}");
    assert!(
        a["achieved_sqnr_db"].as_f64().is_none_or(|db| db >= 45.0),
        "{a}"
    );
    assert_eq!(a["achieved_decision"], 1.0, "{a}");
    assert_eq!(
        a["target"]["decision"],
        serde_json::json!([0.5, 1.0]),
        "{a}"
    );
}

/// An output given a target of its own is held to it alone, in the search and in the
/// verification: with both of rnet's outputs at cos=0.99, SQNR 45 dB binds neither and every node
/// stays int8 (with the SQNR target on both, some return to float). A name that is not a float
/// output is a usage error.
#[test]
fn an_output_with_its_own_target_is_held_to_it_alone() {
    let path = common::real_model("mtcnn_rnet");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.onnx");
    let run = |target: &str| optimize_on_data(&path, &out, &["--int8", "dynamic"], target);
    let o = run("sqnr=45");
    assert!(o.status.success(), "{}", stderr(&o));
    let strict = json(&o)["quantize"]["accuracy"]["returned_to_float"]
        .as_u64()
        .unwrap();
    assert!(strict > 0);

    let o = run("sqnr=45;softmax_1:cos=0.99;dense_2:cos=0.99");
    assert!(o.status.success(), "{}", stderr(&o));
    let j = json(&o);
    let a = &j["quantize"]["accuracy"];
    assert_eq!(a["met"], true, "{a}");
    assert_eq!(a["returned_to_float"], 0, "{a}");
    assert_eq!(
        a["target"]["by_output"]["dense_2"]["min_cosine"], 0.99,
        "{a}"
    );
    assert!(
        a["achieved_by_output"]["dense_2"]["cosine"]
            .as_f64()
            .is_some_and(|c| c >= 0.99),
        "{a}"
    );
    let v = &j["verification"];
    assert_eq!(v["status"], "passed", "{v}");
    assert_eq!(
        v["tolerance"]["cosine_by_output"],
        serde_json::json!({"dense_2": 0.99, "softmax_1": 0.99}),
        "{v}"
    );

    std::fs::remove_file(&out).unwrap();
    let o = run("prob1:cos=0.9");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'prob1'"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn static_int8_without_calibration_data_is_a_usage_error() {
    let path = common::real_model("squeezenet1_1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s.onnx");
    let o = mdeploy(&["optimize", s(&path), "-o", s(&out), "--int8", "static"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--calibration"), "{}", stderr(&o));
    assert!(!out.exists());
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--int8",
        "static",
        "--calibration-method",
        "kl",
    ]);
    assert_eq!(o.status.code(), Some(2));
    // a static int8 option with another mode, and a placement that is none
    for args in [
        &["--int8", "dynamic", "--int8-placement", "all"][..],
        &[
            "--int8",
            "static",
            "--calibration",
            s(&path),
            "--int8-placement",
            "fastest",
        ],
    ] {
        let o = mdeploy(&[&["optimize", s(&path), "-o", s(&out)][..], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("placement"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

/// A model below opset 13 that cannot be raised to it (here ppocr_mobile_v2_cls, opset 11, with
/// a Resize in the `tf_half_pixel_for_nn` mode opset 13 removed, appended to its output) keeps its
/// opset and gets weights per tensor, and the report says why.
#[test]
fn static_int8_keeps_weights_per_tensor_where_the_opset_cannot_be_raised() {
    use mdeploy::graph::builder::{attr_string, tensor_f32};
    let tmp = tempfile::tempdir().unwrap();
    let path = common::real_model("ppocr_mobile_v2_cls");
    let mut model = Model::load(&path).unwrap();
    assert_eq!(model.opset(""), Some(11));
    let graph = model.graph_mut();
    let first = graph.output[0].clone();
    graph.initializer.push(tensor_f32("roi_", &[0], &[]));
    graph
        .initializer
        .push(tensor_f32("scales_", &[2], &[1.0, 1.0]));
    graph.node.push(mdeploy::onnx::proto::NodeProto {
        op_type: Some("Resize".into()),
        input: vec![first.name().to_string(), "roi_".into(), "scales_".into()],
        output: vec!["resized".into()],
        attribute: vec![attr_string(
            "coordinate_transformation_mode",
            "tf_half_pixel_for_nn",
        )],
        ..Default::default()
    });
    let mut resized = first.clone();
    resized.name = Some("resized".into());
    graph.output.push(resized);
    let src = tmp.path().join("cls_resize.onnx");
    model.save(&src, Default::default()).unwrap();
    let out = tmp.path().join("out.onnx");
    let dir = path.parent().unwrap().join("test_data_set_0");
    let mut args = static_int8_args(&src, &out, &dir);
    args.extend(["--int8-placement", "all"]);
    let o = mdeploy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    assert_eq!(q["per_channel"], false, "{q}");
    assert_eq!(q["opset_raised_from"], serde_json::Value::Null, "{q}");
    let why = q["opset_kept_because"].as_str().unwrap();
    assert!(why.contains("tf_half_pixel_for_nn"), "{why}");
    assert!(!q["quantized"].as_array().unwrap().is_empty(), "{q}");
    assert_eq!(Model::load(&out).unwrap().opset(""), Some(11));
}

/// Where nothing can be quantized (no MatMul or Gemm in a convolutional net for dynamic int8
/// and int4; every Conv kept float by static int8's `fast` placement), the model is the float
/// model: nothing is run to measure it, the report says so and names no engine, and the
/// verification after it still compares the result with the input.
#[test]
fn a_model_with_nothing_to_quantize_is_verified_but_not_measured() {
    let path = common::real_model("mtcnn_pnet");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("p.onnx");
    let calibration = path.parent().unwrap().join("test_data_set_0");
    let mut modes = vec![
        vec!["--int8", "dynamic"],
        vec!["--int8", "static", "--calibration", s(&calibration)],
    ];
    if mdeploy::run::ort_available() {
        modes.push(vec!["--int4", "weight-only"]);
    }
    for mode in modes {
        let o = optimize_on_data(&path, &out, &mode, "cos=0.99");
        assert!(o.status.success(), "{mode:?}: {}", stderr(&o));
        let report = json(&o);
        let q = &report["quantize"];
        assert!(
            q["quantized"].as_array().unwrap().is_empty(),
            "{mode:?}: {q}"
        );
        let a = &q["accuracy"];
        assert_eq!(a["met"], true, "{mode:?}: {a}");
        assert_eq!(a["rounds"], 0, "{mode:?}: {a}");
        assert_eq!(a["samples"], 0, "{mode:?}: {a}");
        assert!(
            a["unmeasured"]
                .as_str()
                .unwrap()
                .contains("nothing was quantized"),
            "{mode:?}: {a}"
        );
        assert!(q["calibration"]["engine"].is_null(), "{mode:?}: {q}");
        assert_eq!(q["calibration"]["values_measured"], 0, "{mode:?}: {q}");
        assert_eq!(report["verification"]["status"], "passed", "{mode:?}");
        assert!(out.exists(), "{mode:?}");
        std::fs::remove_file(&out).unwrap();
    }
}

/// The accuracy search measures on the verification data beyond the calibration set and on at
/// most 16 calibration samples, spread over the set: calibrating on hundreds of samples does
/// not make every round run them all. Without other verification data it measures all the
/// calibration data, which the verification then runs on. Calibration still reads every
/// sample: one that cannot be read is an error naming it.
#[test]
fn accuracy_is_measured_on_the_verification_data_and_at_most_16_calibration_samples() {
    let path = common::real_model("mtcnn_rnet");
    let stored = path.parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // 20 calibration samples: the two stored inputs in turn
    let calibration = tmp.path().join("calibration");
    for k in 0..20 {
        let set = calibration.join(format!("test_data_set_{k}"));
        std::fs::create_dir_all(&set).unwrap();
        let from = stored.join(format!("test_data_set_{}", k % 2));
        std::fs::copy(from.join("input_0.pb"), set.join("input_0.pb")).unwrap();
    }
    let out = tmp.path().join("q.onnx");
    let set0 = stored.join("test_data_set_0");
    let set1 = stored.join("test_data_set_1");
    for (calibrate_on, data, samples) in [
        // 16 of the 20, and both verification sets
        (&calibration, vec![&set0, &set1], 18),
        // a verification set that is the calibration set is measured once
        (&set0, vec![&set0, &set1], 2),
        // without --data, the calibration samples are the verification data: all of them
        (&calibration, vec![], 20),
    ] {
        let mut args = vec![
            "optimize",
            s(&path),
            "-o",
            s(&out),
            "--int8",
            "dynamic",
            "--calibration",
            s(calibrate_on),
            "--json",
        ];
        for d in &data {
            args.extend(["--data", s(d)]);
        }
        let o = mdeploy(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let report = json(&o);
        let a = &report["quantize"]["accuracy"];
        assert_eq!(a["samples"], samples, "{args:?}: {a}");
        assert!(a["rounds"].as_u64().unwrap() >= 1, "{args:?}: {a}");
        let verified = if data.is_empty() { 20 } else { data.len() };
        assert_eq!(report["verification"]["samples"], verified, "{args:?}");
    }
    // a sample no search round measures, truncated: static calibration reads it
    let broken = calibration.join("test_data_set_7").join("input_0.pb");
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--int8",
        "static",
        "--int8-placement",
        "all",
        "--calibration",
        s(&calibration),
        "--data",
        s(&set0),
        "--data",
        s(&set1),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("test_data_set_7"), "{}", stderr(&o));
}

/// The largest magnitude of the int8 initializers that `op` nodes read (at input `k`, or at
/// any input), and how many there are.
fn int8_reach(m: &Model, op: &str, k: Option<usize>) -> (i32, usize) {
    let g = m.graph();
    let int8: std::collections::HashMap<&str, &[u8]> = g
        .initializer
        .iter()
        .filter(|t| t.data_type() == DataType::Int8.code())
        .map(|t| (t.name(), t.raw_data()))
        .collect();
    let read: Vec<&[u8]> = g
        .node
        .iter()
        .filter(|n| n.op_type() == op)
        .flat_map(|n| n.input.iter().enumerate())
        .filter(|(i, _)| k.is_none_or(|k| *i == k))
        .filter_map(|(_, v)| int8.get(v.as_str()).copied())
        .collect();
    let reach = read
        .iter()
        .flat_map(|b| b.iter())
        .map(|&b| i32::from(b as i8).abs())
        .max()
        .unwrap_or(0);
    (reach, read.len())
}

/// `--int8-weight-range reduced` keeps every product's weights within [-64, 64] (a channel's
/// largest at 64) in both int8 modes, which onnxruntime multiplies exactly on any x86 CPU, and
/// says so; embedding rows are looked up, not multiplied, and keep the full range.
#[test]
fn reduced_int8_weights_reach_64_and_tables_127() {
    let path = common::real_model("bert_tiny_random");
    let tmp = tempfile::tempdir().unwrap();
    let cal = path.parent().unwrap().join("test_data_set_0");
    for (mode, range) in [
        ("dynamic", "full"),
        ("dynamic", "reduced"),
        ("static", "reduced"),
    ] {
        let out = tmp.path().join(format!("{mode}-{range}.onnx"));
        let mut args = vec!["--int8", mode, "--int8-weight-range", range];
        if mode == "static" {
            args.extend(["--calibration", s(&cal)]);
        }
        let o = optimize_on_data(&path, &out, &args, "cos=0.99");
        assert!(o.status.success(), "{mode} {range}: {}", stderr(&o));
        let q = &json(&o)["quantize"];
        assert_eq!(q["weight_range"], range, "{mode}");
        let m = Model::load(&out).unwrap();
        let (products, read) = if mode == "dynamic" {
            int8_reach(&m, "MatMulInteger", Some(1))
        } else {
            int8_reach(&m, "DequantizeLinear", Some(0))
        };
        // static leaves the pooler's Gemm float (1x128 by 128: saves less than its Q costs)
        let expected = if mode == "static" { 12 } else { 13 };
        assert_eq!(
            read, expected,
            "{mode} {range}: 12 projections and the pooler"
        );
        assert_eq!(products, if range == "full" { 127 } else { 64 }, "{mode}");
        assert_eq!(
            int8_reach(&m, "Gather", Some(0)),
            (127, 3),
            "{mode} {range}"
        );
        // the products' weights decide whether onnxruntime's products are exact here
        let products = match q["calibration"]["engine"].as_str() {
            Some("ort") if cfg!(target_arch = "x86_64") => {
                if range == "reduced" || common::int8_products_exact() {
                    "exact"
                } else {
                    "saturating-pairs"
                }
            }
            _ => "unknown",
        };
        assert_eq!(q["accuracy"]["int8_products"], products, "{mode} {range}");
    }
    // int8 rows alone are looked up, not multiplied: no claim about products
    let out = tmp.path().join("tables.onnx");
    let args = [
        "--int8",
        "static",
        "--int8-ops",
        "Gather",
        "--calibration",
        s(&cal),
    ];
    let o = optimize_on_data(&path, &out, &args, "cos=0.99");
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    assert_eq!(q["quantized"].as_array().unwrap().len(), 3, "{q}");
    assert!(q["accuracy"].get("int8_products").is_none(), "{q}");
    // int8 alone takes it
    let out = tmp.path().join("fp16.onnx");
    let o = mdeploy(&[
        "optimize",
        s(&path),
        "-o",
        s(&out),
        "--fp16",
        "--int8-weight-range",
        "reduced",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--int8-weight-range applies to --int8"));
    assert!(!out.exists());
}

/// Layers that share a weight (ALBERT's, or tied embeddings) keep it int4 for all their readers
/// or for none: where the target needs one reader back in float, the other returns with it.
/// One quantized alone would store the weight twice (float for one reader, 4-bit for the
/// other), a file larger than the float model's. Here the layers alternate between two weights,
/// and a target between what all int4 keeps and what one weight's readers in float keep kept
/// one layer int4 while its weight's other reader returned (a 566 KB file from 525 KB).
#[test]
fn layers_sharing_a_weight_return_to_float_together() {
    use mdeploy::graph::ModelBuilder;
    // xorshift32 in [-0.1, 0.1): no weight repeats a pattern the grid could fit
    let weights = |seed: u32| -> Vec<f32> {
        let mut s = seed;
        (0..256 * 256)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                ((f64::from(s) / 4294967296.0 - 0.5) * 2.0 * 0.1) as f32
            })
            .collect()
    };
    let mut b = ModelBuilder::new(17)
        .input("x", DataType::Float, &["8", "256"])
        .initializer_f32("W", &[256, 256], &weights(1))
        .initializer_f32("V", &[256, 256], &weights(2));
    let mut from = "x".to_string();
    for k in 0..4 {
        let w = if k % 2 == 0 { "W" } else { "V" };
        b = b.node("MatMul", &[&from, w], &[&format!("m{k}")]).node(
            "Tanh",
            &[&format!("m{k}")],
            &[&format!("h{k}")],
        );
        from = format!("h{k}");
    }
    let proto = b.output("h3", DataType::Float, &["8", "256"]).build();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tied.onnx");
    Model::from_proto(proto, tmp.path().to_path_buf())
        .save(&path, Default::default())
        .unwrap();
    let float_bytes = std::fs::metadata(&path).unwrap().len();
    let mut partial = 0;
    for target in ["cos=0.99", "cos=0.995", "cos=0.998"] {
        let out = tmp.path().join("q.onnx");
        let o = mdeploy(&[
            "optimize",
            s(&path),
            "-o",
            s(&out),
            "--int4",
            "weight-only",
            "--accuracy-target",
            target,
            "--json",
        ]);
        assert!(o.status.success(), "{target}: {}", stderr(&o));
        let q = &json(&o)["quantize"];
        let readers = |w: &str| {
            q["quantized"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["weight"] == w)
                .count()
        };
        for w in ["W", "V"] {
            assert!(matches!(readers(w), 0 | 2), "{target}: {w} {q}");
        }
        if readers("W") + readers("V") == 2 {
            partial += 1;
            let reasons = q["kept_float"].to_string();
            assert!(reasons.contains("which reads the same weight"), "{q}");
        }
        let bytes = std::fs::metadata(&out).unwrap().len();
        assert!(
            bytes <= float_bytes,
            "{target}: {bytes} bytes from {float_bytes}"
        );
    }
    assert!(
        partial > 0,
        "no target kept one weight's readers alone quantized"
    );
}

/// Entropy calibration on a network of Relus keeps its Convs int8: each threshold is quantized
/// to the steps the grid has below it (255 for a one-signed value), and a Relu's zeros count as
/// their neighbours. Counting 128 steps and the zeros as they were, it clipped the Relu outputs
/// so hard that the accuracy search returned 16 of squeezenet's 26 Convs to float.
#[test]
fn entropy_calibration_keeps_a_relu_network_int8() {
    let path = common::real_model("squeezenet1_1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.onnx");
    let calibration = path.parent().unwrap().join("test_data_set_0");
    let mut args = static_int8_args(&path, &out, &calibration);
    args.extend(["--int8-placement", "all", "--calibration-method", "entropy"]);
    let data = data_args(&path);
    args.extend(data.iter().map(String::as_str));
    let o = mdeploy(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let q = &json(&o)["quantize"];
    assert_eq!(q["accuracy"]["met"], true, "{q}");
    let convs = q["quantized"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["op"] == "Conv")
        .count();
    assert!(convs >= 22, "{convs} of 26 Convs int8: {}", q["kept_float"]);
}
