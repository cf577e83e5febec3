//! The `mdeploy` binary end to end: inspect and convert on fixtures and real models, malformed
//! input, exit codes, and what is (not) left on disk.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{json_ok, mdeploy, stderr};
use mdeploy::onnx::Model;
use mdeploy::run::Runner;
use mdeploy::run::tensor_io::read_pb_dir;
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Asserts exit code 2 with a message containing every `needle`, and no panic.
fn assert_input_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected '{n}' in: {err}");
    }
}

#[test]
fn fixtures_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let write = std::env::var_os("MDEPLOY_WRITE_FIXTURES").is_some();
    for (rel, proto) in common::fixtures::all() {
        if write {
            common::fixtures::write(&fixtures_dir(), rel, proto.clone());
        }
        common::fixtures::write(tmp.path(), rel, proto);
        let made = std::fs::read(tmp.path().join(rel)).unwrap();
        let stored = std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| {
            panic!("fixtures/{rel}: {e} (regenerate with MDEPLOY_WRITE_FIXTURES=1)")
        });
        assert!(made == stored, "fixtures/{rel} differs from its generator");
    }
}

#[test]
fn inspect_json_agrees_with_each_real_models_info() {
    for (name, path) in common::real_models() {
        let report = json_ok(&mdeploy(&["inspect", path.to_str().unwrap(), "--json"]));
        let info: Value =
            serde_json::from_slice(&std::fs::read(path.with_file_name("info.json")).unwrap())
                .unwrap();
        assert_eq!(report["format"], "mdeploy.inspect/1");
        assert_eq!(report["ir_version"], info["ir_version"], "{name}");
        assert_eq!(
            report["nodes"]["total"], info["num_nodes_including_subgraphs"],
            "{name}"
        );
        assert_eq!(report["op_types"], info["op_types_histogram"], "{name}");
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&report["inputs"]), names(&info["inputs"]), "{name}");
        assert_eq!(names(&report["outputs"]), names(&info["outputs"]), "{name}");
        let elements = info["parameters"]["initializer_elements"].as_u64().unwrap()
            + info["parameters"]["constant_node_elements"]
                .as_u64()
                .unwrap();
        assert_eq!(
            report["parameters"]["count"].as_u64().unwrap(),
            elements,
            "{name}"
        );
        assert!(
            report["lint"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["kind"] != "op_outside_opset"),
            "{name}"
        );
    }
}

#[test]
fn inspect_human_output_names_the_essentials() {
    let o = mdeploy(&[
        "inspect",
        fixtures_dir().join("external/model.onnx").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "ir_version  8",
        "x ",
        "[batch, 4]",
        "MatMul 2",
        "model.onnx.data",
        "external",
    ] {
        assert!(out.contains(needle), "expected '{needle}' in:\n{out}");
    }
    assert!(o.stderr.is_empty(), "inspect writes data to stdout only");
}

#[test]
fn lint_reports_unused_initializers_dead_nodes_and_foreign_ops() {
    let mut proto = common::fixtures::mlp();
    let g = proto.graph.as_mut().unwrap();
    g.initializer
        .push(mdeploy::graph::builder::tensor_f32("orphan", &[1], &[0.0]));
    g.node.push(mdeploy::onnx::NodeProto {
        op_type: Some("Gelu".into()),
        input: vec!["h2".into()],
        output: vec!["unused".into()],
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.onnx");
    Model::from_proto(proto, tmp.path().into())
        .save(&path, Default::default())
        .unwrap();
    let report = json_ok(&mdeploy(&["inspect", path.to_str().unwrap(), "--json"]));
    let kinds: Vec<&str> = report["lint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["unused_initializer", "dead_node", "op_outside_opset"],
        "{report}"
    );
}

/// Runs a converted model in tract on a stored data set and compares with the stored outputs.
fn assert_runs_like_reference(model: &Path, data: &Path) {
    let m = Model::load(model).unwrap();
    let inputs = read_pb_dir(data, "input").unwrap();
    let expected = read_pb_dir(data, "output").unwrap();
    let got = Runner::new(&m).unwrap().run(&inputs).unwrap();
    for (g, w) in got.iter().zip(&expected) {
        let g = g.tensor.cast_to::<f32>().unwrap().into_owned();
        let w = w.tensor.cast_to::<f32>().unwrap().into_owned();
        let (g, w) = (
            g.to_plain_array_view::<f32>().unwrap(),
            w.to_plain_array_view::<f32>().unwrap(),
        );
        let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = g
            .iter()
            .zip(w.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(err < 1e-4, "{}: relative error {err}", model.display());
    }
}

#[test]
fn convert_normalizes_every_real_model() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let out = tmp.path().join(format!("{name}.onnx"));
        let before = std::fs::read(&path).unwrap();
        let report = json_ok(&mdeploy(&[
            "convert",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{name}: the input was modified"
        );
        assert!(
            report["report"]["shapes_recorded"].as_u64().unwrap() > 0,
            "{name}"
        );
        let converted = Model::load(&out).unwrap();
        mdeploy::graph::check_model(&converted).unwrap();
        let graph = mdeploy::graph::Graph::new(converted.graph().clone());
        let order = graph.topological_order().unwrap();
        assert!(
            order.iter().enumerate().all(|(i, &j)| i == j),
            "{name}: not sorted"
        );
        assert!(!converted.graph().value_info.is_empty(), "{name}");
        assert_runs_like_reference(&out, &path.with_file_name("test_data_set_0"));
        // deterministic: the same input gives the same bytes
        let again = tmp.path().join(format!("{name}.again.onnx"));
        assert!(
            mdeploy(&[
                "convert",
                path.to_str().unwrap(),
                "-o",
                again.to_str().unwrap(),
                "-q"
            ])
            .status
            .success()
        );
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
            "{name}: not deterministic"
        );
    }
}

/// `--opset 21` raises every real model (opsets 11 to 17), still running like its reference; a
/// model older than opset 9, or a lower target, is refused with exit 2 and nothing written.
#[test]
fn convert_raises_the_opset_only_where_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        let from = Model::load(&path).unwrap().opset("").unwrap();
        let out = tmp.path().join(format!("{name}.onnx"));
        let args = [
            "convert",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--opset",
            "21",
            "--json",
        ];
        let report = json_ok(&mdeploy(&args));
        assert_eq!(report["report"]["opset_raised"]["from"], from, "{name}");
        let raised = Model::load(&out).unwrap();
        assert_eq!(raised.opset(""), Some(21), "{name}");
        mdeploy::graph::check_model(&raised).unwrap();
        assert_runs_like_reference(&out, &path.parent().unwrap().join("test_data_set_0"));
    }
    let (_, bert) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "bert_tiny_random")
        .unwrap();
    let out = tmp.path().join("lower.onnx");
    let o = mdeploy(&[
        "convert",
        bert.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "16",
    ]);
    assert_input_error(&o, &["below the model's opset 17"]);
    assert!(!out.exists());
    let old = mdeploy::graph::ModelBuilder::new(5)
        .input("x", mdeploy::onnx::DataType::Float, &["2"])
        .node("Relu", &["x"], &["y"])
        .output("y", mdeploy::onnx::DataType::Float, &["2"])
        .build();
    let old = write_model(tmp.path(), "opset5.onnx", old);
    let o = mdeploy(&[
        "convert",
        old.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--opset",
        "21",
    ]);
    assert_input_error(&o, &["opset 5 is below 6"]);
    assert!(!out.exists());
}

/// A real model written as IR 3 wrote it (every initializer also a graph input, which a caller
/// may override): the lint says so, quantization leaves its weights float saying why, and
/// `convert --freeze-initializers` makes them constants, which then quantize; so does
/// `optimize --freeze-initializers` in one step, verified against the model as it was.
#[test]
fn frozen_initializers_become_weights_to_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::real_model("mtcnn_rnet");
    let dir = dir.parent().unwrap();
    let data = dir.join("test_data_set_0");
    let mut proto = Model::load(&dir.join("model.onnx")).unwrap().proto;
    proto.ir_version = Some(3);
    let g = proto.graph.as_mut().unwrap();
    let listed: Vec<_> = g
        .initializer
        .iter()
        .map(|t| {
            let dims: Vec<String> = t.dims.iter().map(i64::to_string).collect();
            let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
            mdeploy::graph::builder::value_info(t.name(), mdeploy::onnx::DataType::Float, &dims)
        })
        .collect();
    let weights = listed.len();
    g.input.extend(listed);
    let old = write_model(tmp.path(), "ir3.onnx", proto);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let quantize = |model: &Path, out: &Path| {
        json_ok(&mdeploy(&[
            "optimize",
            &s(model),
            "-o",
            &s(out),
            "--int8",
            "dynamic",
            "--data",
            &s(&data),
            "--json",
        ]))
    };
    let d = quantize(&old, &tmp.path().join("q_ir3.onnx"));
    let q = &d["quantize"];
    assert_eq!(q["quantized"].as_array().unwrap().len(), 0, "{q}");
    let why = q["kept_float"][0]["reason"].as_str().unwrap();
    assert!(why.contains("--freeze-initializers"), "{why}");
    let frozen = tmp.path().join("frozen.onnx");
    let d = json_ok(&mdeploy(&[
        "convert",
        &s(&old),
        "-o",
        &s(&frozen),
        "--freeze-initializers",
        "--json",
    ]));
    assert_eq!(d["report"]["initializers_frozen"], weights);
    assert!(d["lint"].as_array().unwrap().is_empty(), "{}", d["lint"]);
    let m = Model::load(&frozen).unwrap();
    assert_eq!(m.graph().input.len(), 1);
    assert!(m.proto.ir_version() >= 4);
    assert_runs_like_reference(&frozen, &data);
    let kept = tmp.path().join("kept.onnx");
    let lint = json_ok(&mdeploy(&["convert", &s(&old), "-o", &s(&kept), "--json"]));
    assert_eq!(lint["lint"][0]["kind"], "overridable_initializers");
    let d = quantize(&frozen, &tmp.path().join("q.onnx"));
    let quantized = d["quantize"]["quantized"].as_array().unwrap().len();
    assert!(quantized > 0, "{}", d["quantize"]);
    let once = tmp.path().join("once.onnx");
    let d = json_ok(&mdeploy(&[
        "optimize",
        &s(&old),
        "-o",
        &s(&once),
        "--int8",
        "dynamic",
        "--data",
        &s(&data),
        "--freeze-initializers",
        "--json",
    ]));
    assert_eq!(d["initializers_frozen"], weights);
    assert_eq!(
        d["quantize"]["quantized"].as_array().unwrap().len(),
        quantized
    );
    assert_eq!(
        d["verification"]["status"], "passed",
        "{}",
        d["verification"]
    );
    let m = Model::load(&once).unwrap();
    assert_eq!(m.graph().input.len(), 1);
    assert!(m.proto.ir_version() >= 4);
}

#[test]
fn convert_fixes_named_dims() {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "bert_tiny_random")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bert.onnx");
    let o = mdeploy(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "batch=1",
        "--input-shape",
        "sequence=23",
        "--json",
    ]);
    let report = json_ok(&o);
    assert_eq!(report["report"]["fixed_inputs"]["input_ids"], "[1, 23]");
    let inspected = json_ok(&mdeploy(&["inspect", out.to_str().unwrap(), "--json"]));
    assert_eq!(inspected["inputs"][0]["shape"], serde_json::json!([1, 23]));
    assert_eq!(
        inspected["outputs"][0]["shape"],
        serde_json::json!([1, 23, 128])
    );
    assert_runs_like_reference(&out, &path.with_file_name("test_data_set_1"));

    let o = mdeploy(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "input_ids=1,2,3",
    ]);
    assert_input_error(&o, &["input_ids", "rank 2"]);
    let o = mdeploy(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--input-shape",
        "nope=3",
    ]);
    assert_input_error(&o, &["nope", "no such input"]);
}

#[test]
fn convert_to_nnef_writes_an_archive_tract_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cnn.nnef.tgz");
    let o = mdeploy(&[
        "convert",
        fixtures_dir().join("cnn.onnx").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--to",
        "nnef",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    use tract_onnx::WithOnnx;
    use tract_onnx::prelude::*;
    let nnef = tract_nnef::nnef().with_onnx();
    let model = nnef
        .model_for_path(&out)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = Tensor::from_shape(
        &[1, 3, 8, 8],
        &(0..192).map(|i| (i as f32 * 0.1).sin()).collect::<Vec<_>>(),
    )
    .unwrap();
    let from_nnef = model.run(tvec!(x.clone().into_tvalue())).unwrap();
    let onnx = Model::load(&fixtures_dir().join("cnn.onnx")).unwrap();
    let from_onnx = Runner::new(&onnx)
        .unwrap()
        .run(&[mdeploy::run::NamedTensor {
            name: "image".into(),
            tensor: x,
        }])
        .unwrap();
    from_nnef[0]
        .close_enough(&from_onnx[0].tensor, true)
        .unwrap();
}

#[test]
fn external_data_is_read_inlined_and_written() {
    let src = fixtures_dir().join("external/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let inlined = tmp.path().join("inlined.onnx");
    assert!(
        mdeploy(&[
            "convert",
            src.to_str().unwrap(),
            "-o",
            inlined.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert!(!tmp.path().join("inlined.onnx.data").exists());
    let a = Model::load(&inlined).unwrap();
    let x = mdeploy::run::NamedTensor {
        name: "x".into(),
        tensor: tract_onnx::prelude::Tensor::from_shape(
            &[2, 4],
            &[0.5f32, -1.0, 2.0, 0.0, 1.0, 1.0, -3.0, 0.25],
        )
        .unwrap(),
    };
    let ya = Runner::new(&a)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    let reference = Runner::new(&Model::load(&fixtures_dir().join("mlp.onnx")).unwrap())
        .unwrap()
        .run(&[x])
        .unwrap();
    assert_eq!(ya[0].tensor, reference[0].tensor);
}

#[test]
fn external_data_is_written_on_request() {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "squeezenet1_1")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let split = tmp.path().join("split.onnx");
    let report = json_ok(&mdeploy(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        split.to_str().unwrap(),
        "--external-data",
        "--json",
    ]));
    let data = tmp.path().join("split.onnx.data");
    assert_eq!(
        report["output"]["external_data_file"],
        data.to_str().unwrap()
    );
    let model_bytes = std::fs::metadata(&split).unwrap().len();
    assert!(
        model_bytes < 100_000,
        "weights should have moved out: {model_bytes} bytes"
    );
    assert!(std::fs::metadata(&data).unwrap().len() > 4_000_000);
    assert_runs_like_reference(&split, &path.with_file_name("test_data_set_0"));
    let inspected = json_ok(&mdeploy(&["inspect", split.to_str().unwrap(), "--json"]));
    assert_eq!(inspected["external_data"][0]["location"], "split.onnx.data");
}

/// Writes the external-data fixture into `dir` with every location replaced.
fn model_with_location(dir: &Path, location: &str) -> PathBuf {
    let mut model = Model::load(&fixtures_dir().join("external/model.onnx"))
        .unwrap()
        .proto;
    for t in &mut model.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key() == "location" {
                e.value = Some(location.into());
            }
        }
    }
    write_model(dir, "model.onnx", model)
}

#[test]
fn external_data_cannot_leave_the_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let inner = tmp.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::copy(
        fixtures_dir().join("external/model.onnx.data"),
        tmp.path().join("outside.data"),
    )
    .unwrap();
    for (location, needle) in [
        ("../outside.data", "'..'"),
        ("/etc/passwd", "absolute"),
        ("missing.data", "cannot be opened"),
    ] {
        let path = model_with_location(&inner, location);
        let o = mdeploy(&["inspect", path.to_str().unwrap()]);
        assert_input_error(&o, &[needle, "w1"]);
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(tmp.path().join("outside.data"), inner.join("link.data"))
            .unwrap();
        let path = model_with_location(&inner, "link.data");
        assert_input_error(
            &mdeploy(&["inspect", path.to_str().unwrap()]),
            &["outside the model directory"],
        );
    }
}

fn write_model(dir: &Path, name: &str, proto: mdeploy::onnx::ModelProto) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, prost::Message::encode_to_vec(&proto)).unwrap();
    path
}

#[test]
fn malformed_models_are_clear_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = std::fs::read(fixtures_dir().join("cnn.onnx")).unwrap();
    let truncated = d.join("truncated.onnx");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let garbage = d.join("garbage.onnx");
    std::fs::write(&garbage, b"\xff\xfe this is not a protobuf \x00\x01\x02").unwrap();
    let wire = d.join("wire.onnx");
    std::fs::write(&wire, b"\x0a\x03abc").unwrap(); // ir_version (varint) sent as bytes
    let empty = d.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();

    let mut cycle = common::fixtures::mlp();
    cycle.graph.as_mut().unwrap().node[0].input[0] = "y".into();
    let cycle = write_model(d, "cycle.onnx", cycle);
    let mut undefined = common::fixtures::mlp();
    undefined.graph.as_mut().unwrap().node[2].input[0] = "ghost".into();
    let undefined = write_model(d, "undefined.onnx", undefined);
    let mut duplicate = common::fixtures::mlp();
    duplicate.graph.as_mut().unwrap().node[1].output[0] = "h0".into();
    let duplicate = write_model(d, "duplicate.onnx", duplicate);
    let mut dtype = common::fixtures::mlp();
    dtype.graph.as_mut().unwrap().initializer[0].data_type = Some(99);
    let dtype = write_model(d, "dtype.onnx", dtype);
    let mut short = common::fixtures::mlp();
    short.graph.as_mut().unwrap().initializer[1].dims = vec![9];
    let short = write_model(d, "short.onnx", short);
    let mut ir = common::fixtures::mlp();
    ir.ir_version = Some(99);
    let ir = write_model(d, "ir.onnx", ir);
    // a node with fewer inputs than its op needs: passes may index validated nodes
    let mut arity = common::fixtures::mlp();
    arity.graph.as_mut().unwrap().node[0].input.truncate(1);
    let arity = write_model(d, "arity.onnx", arity);
    let mut attr_type = common::fixtures::cnn();
    let conv = &mut attr_type.graph.as_mut().unwrap().node[0];
    conv.attribute
        .push(mdeploy::graph::builder::attr_float("group", 1.0));
    let attr_type = write_model(d, "attr_type.onnx", attr_type);
    let mut no_opset = common::fixtures::mlp();
    no_opset.opset_import.clear();
    let no_opset = write_model(d, "no_opset.onnx", no_opset);

    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (&truncated, vec!["truncated.onnx", "not a valid ONNX model"]),
        (&garbage, vec!["garbage.onnx", "not a valid ONNX model"]),
        (&wire, vec!["wire.onnx", "wire type"]),
        (&empty, vec!["empty.onnx", "no ir_version"]),
        (&cycle, vec!["cycle", "fc1"]),
        (&undefined, vec!["'ghost'", "Relu"]),
        (&duplicate, vec!["'h0' is defined twice", "fc1"]),
        (&dtype, vec!["'w1'", "unknown data type 99"]),
        (&short, vec!["'b1'", "needs 36"]),
        (&ir, vec!["ir_version 99"]),
        (
            &no_opset,
            vec!["no_opset.onnx", "(MatMul) is of the ai.onnx domain"],
        ),
        (
            &arity,
            vec!["'fc1' (MatMul)", "has 1 inputs, MatMul takes 2 to 2"],
        ),
        (
            &attr_type,
            vec![
                "(Conv)",
                "attribute 'group' of Conv must be int, found float",
            ],
        ),
        (
            Path::new("/nonexistent/model.onnx"),
            vec!["cannot read", "/nonexistent/model.onnx"],
        ),
    ];
    for (path, needles) in cases {
        let out = d.join("out.onnx");
        for cmd in [
            vec!["inspect", path.to_str().unwrap()],
            vec![
                "convert",
                path.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
        ] {
            assert_input_error(&mdeploy(&cmd), &needles);
            assert!(!out.exists(), "a failed convert left {}", out.display());
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            n.ends_with(".tmp").then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn usage_errors_exit_2() {
    let cnn = fixtures_dir().join("cnn.onnx");
    assert_eq!(mdeploy(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        mdeploy(&["convert", cnn.to_str().unwrap()]).status.code(),
        Some(2)
    );
    let o = mdeploy(&[
        "convert",
        cnn.to_str().unwrap(),
        "-o",
        cnn.to_str().unwrap(),
    ]);
    assert_input_error(&o, &["never overwrites its input"]);
    let o = mdeploy(&["convert", cnn.to_str().unwrap(), "-o", "/tmp"]);
    assert_input_error(&o, &["is a directory"]);
    let o = mdeploy(&[
        "convert",
        cnn.to_str().unwrap(),
        "-o",
        "x.onnx",
        "--input-shape",
        "image",
    ]);
    assert_input_error(&o, &["NAME=D1,D2"]);
    // random-sample flags where no random sample is made: nothing written
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q.onnx");
    let (c, q) = (cnn.to_str().unwrap(), out.to_str().unwrap());
    for (args, named) in [
        (
            vec![
                "optimize",
                c,
                "-o",
                q,
                "--int8",
                "static",
                "--calibration",
                c,
                "--samples",
                "4",
            ],
            "--samples applies to random samples, which are not made with --calibration",
        ),
        (
            vec![
                "optimize",
                c,
                "-o",
                q,
                "--data",
                c,
                "--samples",
                "2",
                "--seed",
                "1",
            ],
            "--samples and --seed apply to random samples, which are not made with --data",
        ),
    ] {
        assert_input_error(&mdeploy(&args), &[named]);
        assert!(!out.exists());
    }
    assert!(mdeploy(&["--version"]).status.success());
}

#[test]
fn subgraph_models_convert_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("if.onnx");
    let o = mdeploy(&[
        "convert",
        fixtures_dir().join("if_capture.onnx").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = Model::load(&out).unwrap();
    let x = tract_onnx::prelude::Tensor::from_shape(&[4], &[-1.0f32, 0.5, 2.0, -0.25]).unwrap();
    let run = |cond: bool| {
        let cond = tract_onnx::prelude::tensor0(cond);
        Runner::new(&model)
            .unwrap()
            .run(&[
                mdeploy::run::NamedTensor {
                    name: "cond".into(),
                    tensor: cond,
                },
                mdeploy::run::NamedTensor {
                    name: "x".into(),
                    tensor: x.clone(),
                },
            ])
            .unwrap()[0]
            .tensor
            .clone()
    };
    let (t, e) = (run(true), run(false));
    let t = t.to_plain_array_view::<f32>().unwrap().to_owned();
    let e = e.to_plain_array_view::<f32>().unwrap().to_owned();
    for ((a, b), v) in t.iter().zip(e.iter()).zip([-1.0f32, 0.5, 2.0, -0.25]) {
        assert!((a - v.sin().max(0.0)).abs() < 1e-6 && (b + v.sin()).abs() < 1e-6);
    }
}

#[test]
fn nnef_export_names_every_op_without_a_serializer() {
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "bert_tiny_random")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bert.nnef.tgz");
    let args = [
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--to",
        "nnef",
    ];
    // symbolic dims first: the hint says what to do
    assert_input_error(&mdeploy(&args), &["NNEF", "--input-shape"]);
    let mut fixed = args.to_vec();
    fixed.extend(["--input-shape", "batch=1", "--input-shape", "sequence=16"]);
    let o = mdeploy(&fixed);
    assert_input_error(
        &o,
        &[
            "GeluExact (node '/bert/encoder/layer.0/",
            "GeluExact (node '/bert/encoder/layer.1/",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn convert_names_ops_inference_does_not_know_and_still_writes() {
    let proto = mdeploy::graph::ModelBuilder::new(13)
        .opset("com.microsoft", 1)
        .input("x", mdeploy::onnx::DataType::Float, &["2"])
        .node("Relu", &["x"], &["r"])
        .node("FancyContribOp", &["r"], &["y"])
        .name_last("fancy")
        .output("y", mdeploy::onnx::DataType::Float, &["2"])
        .build();
    let mut proto = proto;
    proto.graph.as_mut().unwrap().node[1].domain = Some("com.microsoft".into());
    let tmp = tempfile::tempdir().unwrap();
    let src = write_model(tmp.path(), "contrib.onnx", proto);
    let out = tmp.path().join("out.onnx");
    let o = mdeploy(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    let report = json_ok(&o);
    assert_eq!(report["report"]["not_analysed"][0]["op"], "FancyContribOp");
    assert_eq!(report["report"]["not_analysed"][0]["node"], "fancy");
    assert!(out.is_file());
    let converted = Model::load(&out).unwrap();
    let r = converted
        .graph()
        .value_info
        .iter()
        .find(|v| v.name() == "r")
        .expect("shape of r recorded");
    assert_eq!(mdeploy::run::ValueShape::of(r).to_string(), "[2]");
    let human = mdeploy(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr(&human).contains("no type or shape rules for FancyContribOp (node 'fancy')"),
        "{}",
        stderr(&human)
    );
}

#[test]
fn convert_records_shapes_of_models_tract_cannot_load() {
    // tract has no FLOAT8 types; our own inference does not need them
    let conformance =
        common::shared().join("onnx-node-tests/node/test_cast_FLOAT_to_FLOAT8E4M3FN/model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.onnx");
    let report = json_ok(&mdeploy(&[
        "convert",
        conformance.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["format"], "mdeploy.convert/2");
    assert!(
        report["report"]["not_analysed"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    mdeploy::graph::check_model(&Model::load(&out).unwrap()).unwrap();
}

/// An output declared [1, seqlen] that a Reshape makes [N, 1, 6] (as ddddocr's CRNN declares
/// its [T, 1, 8210]): lint names it, and convert and optimize write what the graph computes, which
/// the optimized model's folded Reshape target would otherwise contradict.
#[test]
fn an_output_declared_with_another_shape_is_named_and_declared_as_computed() {
    use mdeploy::graph::ModelBuilder;
    use mdeploy::graph::builder::attr_int;
    use mdeploy::onnx::DataType::Float;
    let proto = ModelBuilder::new(17)
        .input("x", Float, &["N", "8"])
        .initializer_f32("w", &[8, 6], &[0.125; 48])
        .node("MatMul", &["x", "w"], &["y"])
        .node("Shape", &["y"], &["s"])
        .initializer_i64("zero", &[], &[0])
        .node("Gather", &["s", "zero"], &["n"])
        .attr(attr_int("axis", 0))
        .initializer_i64("axes", &[1], &[0])
        .node("Unsqueeze", &["n", "axes"], &["n1"])
        .initializer_i64("rest", &[2], &[1, -1])
        .node("Concat", &["n1", "rest"], &["target"])
        .attr(attr_int("axis", 0))
        .node("Reshape", &["y", "target"], &["out"])
        .output("out", Float, &["1", "seqlen"])
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let path = write_model(tmp.path(), "m.onnx", proto);
    let p = path.to_str().unwrap();
    let lint = json_ok(&mdeploy(&["inspect", p, "--json"]));
    assert_eq!(
        lint["lint"][0]["kind"], "output_shape_contradicted",
        "{lint}"
    );
    assert_eq!(lint["lint"][0]["subject"], "out", "{lint}");
    let declared = |path: &Path| {
        let m = Model::load(path).unwrap();
        mdeploy::run::ValueShape::of(&m.graph().output[0]).to_string()
    };
    let converted = tmp.path().join("c.onnx");
    let c = json_ok(&mdeploy(&[
        "convert",
        p,
        "-o",
        converted.to_str().unwrap(),
        "--json",
    ]));
    let redeclared = &c["report"]["outputs_redeclared"][0];
    assert_eq!(redeclared["declared"], "[1, seqlen]", "{c}");
    assert_eq!(redeclared["computed"], "[N, 1, 6]", "{c}");
    assert_eq!(declared(&converted), "[N, 1, 6]");
    let optimized = tmp.path().join("o.onnx");
    let o = json_ok(&mdeploy(&[
        "optimize",
        p,
        "-o",
        optimized.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(o["outputs_redeclared"][0]["computed"], "[N, 1, 6]", "{o}");
    assert_eq!(o["verification"]["status"], "passed", "{o}");
    assert_eq!(declared(&optimized), "[N, 1, 6]");
    // a model whose outputs are declared as computed has nothing to redeclare
    let again = json_ok(&mdeploy(&[
        "optimize",
        optimized.to_str().unwrap(),
        "-o",
        tmp.path().join("p.onnx").to_str().unwrap(),
        "--json",
    ]));
    assert!(again.get("outputs_redeclared").is_none(), "{again}");
}
