//! The bad-input sweep: every real model of `../shared/models`, broken in many ways (truncated,
//! bytes flipped, structurally mutated), through every command. Each run must exit 0, 1 or 2,
//! say something on stderr when it fails, and leave no output (nor temporary) file behind.
//! A panic (exit 101), an internal error (3) or a signal (an abort) fails the sweep.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{mdeploy, real_models, s, stderr};
use mdeploy::graph::builder::{attr_graph, attr_int, attr_tensor, tensor_i64, value_info};
use mdeploy::onnx::proto::attribute_proto::AttributeType;
use mdeploy::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use mdeploy::onnx::proto::type_proto;
use mdeploy::onnx::{DataType, ModelProto};
use prost::Message;

fn g(m: &mut ModelProto) -> &mut mdeploy::onnx::GraphProto {
    m.graph.as_mut().unwrap()
}

/// Structural mutations of a decoded model, by name.
fn mutations(model: &ModelProto) -> Vec<(&'static str, ModelProto)> {
    let mut out: Vec<(&'static str, ModelProto)> = Vec::new();
    let mut m = |name: &'static str, f: &dyn Fn(&mut ModelProto)| {
        let mut copy = model.clone();
        f(&mut copy);
        out.push((name, copy));
    };
    m("missing_input", &|m| {
        if let Some(n) = g(m).node.iter_mut().find(|n| n.input.len() >= 2) {
            n.input.truncate(1);
        }
    });
    m("no_outputs", &|m| g(m).output.clear());
    m("missing_output_producer", &|m| {
        if let Some(o) = g(m).output.first_mut() {
            o.name = Some("nobody_makes_this".into());
        }
    });
    m("cycle", &|m| {
        let g = g(m);
        if g.node.len() >= 2 {
            let last = g.node.last().unwrap().output[0].clone();
            if let Some(i) = g.node[0].input.first_mut() {
                *i = last;
            }
        }
    });
    m("dangling_input", &|m| {
        if let Some(i) = g(m).node.get_mut(1).and_then(|n| n.input.first_mut()) {
            *i = "no_such_value".into();
        }
    });
    m("duplicate_output", &|m| {
        let g = g(m);
        if g.node.len() >= 2 {
            let first = g.node[0].output[0].clone();
            g.node[1].output[0] = first;
        }
    });
    m("wrong_attribute_type", &|m| {
        for n in &mut g(m).node {
            if let Some(a) = n.attribute.iter_mut().find(|a| a.i.is_some()) {
                a.r#type = Some(AttributeType::Float as i32);
                break;
            }
        }
    });
    let set_dim = |m: &mut ModelProto, v: i64| {
        for i in &mut g(m).input {
            if let Some(type_proto::Value::TensorType(t)) =
                i.r#type.as_mut().and_then(|t| t.value.as_mut())
                && let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut())
            {
                d.value = Some(DimValue::DimValue(v));
            }
        }
    };
    m("absurd_dim", &|m| set_dim(m, 1 << 40));
    m("negative_dim", &|m| set_dim(m, -5));
    m("initializer_size_lie", &|m| {
        let t = g(m).initializer.iter_mut().max_by_key(|t| t.dims.len());
        if let Some(d) = t.and_then(|t| t.dims.first_mut()) {
            *d *= 2;
        }
    });
    m("unknown_dtype", &|m| {
        if let Some(t) = g(m).initializer.first_mut() {
            t.data_type = Some(99);
        }
    });
    m("unknown_op", &|m| {
        if let Some(n) = g(m).node.first_mut() {
            n.op_type = Some("Frobnicate".into());
            n.domain = None;
        }
    });
    m("opset_0", &|m| {
        m.opset_import.iter_mut().for_each(|o| o.version = Some(0))
    });
    m("opset_99", &|m| {
        m.opset_import.iter_mut().for_each(|o| o.version = Some(99))
    });
    m("constant_of_shape_bomb", &|m| {
        let g = g(m);
        g.initializer
            .push(tensor_i64("bomb_shape", &[3], &[1 << 20, 1 << 20, 1 << 20]));
        g.node.push(mdeploy::onnx::NodeProto {
            op_type: Some("ConstantOfShape".into()),
            input: vec!["bomb_shape".into()],
            output: vec!["bomb".into()],
            ..Default::default()
        });
        g.output.push(value_info("bomb", DataType::Float, &[]));
    });
    m("if_nested_200_deep", &|m| {
        let mut body = mdeploy::graph::GraphBuilder::new("leaf")
            .initializer_i64("one", &[1], &[1])
            .node("Identity", &["one"], &["leaf_out"])
            .output("leaf_out", DataType::Int64, &["1"])
            .build();
        let leaf = body.clone();
        for depth in 0..200 {
            // nested on one side only: the model grows linearly with the depth
            let out = format!("if_out_{depth}");
            body = mdeploy::graph::GraphBuilder::new(&format!("level_{depth}"))
                .node("If", &["deep_cond"], &[&out])
                .attr(attr_graph("then_branch", body))
                .attr(attr_graph("else_branch", leaf.clone()))
                .output(&out, DataType::Int64, &["1"])
                .build();
        }
        let g = g(m);
        g.initializer.push(mdeploy::graph::builder::raw_tensor(
            "deep_cond",
            DataType::Bool,
            &[],
            vec![1],
        ));
        let mut node = mdeploy::onnx::NodeProto {
            op_type: Some("If".into()),
            input: vec!["deep_cond".into()],
            output: vec!["deep".into()],
            ..Default::default()
        };
        node.attribute.push(attr_graph("then_branch", body));
        node.attribute.push(attr_graph("else_branch", leaf));
        g.node.push(node);
        g.output.push(value_info("deep", DataType::Int64, &["1"]));
    });
    let external = |location: &str, offset: &str| {
        let (location, offset) = (location.to_string(), offset.to_string());
        move |m: &mut ModelProto| {
            use mdeploy::onnx::proto::StringStringEntryProto as E;
            if let Some(t) = g(m)
                .initializer
                .iter_mut()
                .max_by_key(|t| t.raw_data.as_ref().map_or(0, |r| r.len()))
            {
                t.raw_data = None;
                t.data_location = Some(1);
                t.external_data = vec![
                    E {
                        key: Some("location".into()),
                        value: Some(location.clone()),
                    },
                    E {
                        key: Some("offset".into()),
                        value: Some(offset.clone()),
                    },
                ];
            }
        }
    };
    m("external_escape", &external("../../etc/passwd", "0"));
    m("external_absolute", &external("/etc/passwd", "0"));
    m(
        "external_huge_offset",
        &external("model.onnx", "18446744073709551000"),
    );
    m("constant_with_attribute_of_wrong_kind", &|m| {
        let g = g(m);
        g.node.insert(
            0,
            mdeploy::onnx::NodeProto {
                op_type: Some("Constant".into()),
                output: vec!["odd_constant".into()],
                attribute: vec![attr_int("value", 3)],
                ..Default::default()
            },
        );
    });
    m("constant_tensor_lie", &|m| {
        let mut t = tensor_i64("", &[4], &[1, 2, 3, 4]);
        t.dims = vec![1 << 30];
        g(m).node.insert(
            0,
            mdeploy::onnx::NodeProto {
                op_type: Some("Constant".into()),
                output: vec!["lying_constant".into()],
                attribute: vec![attr_tensor("value", t)],
                ..Default::default()
            },
        );
    });
    out
}

/// Byte-level damage: truncations and flips at offsets spread over the file.
fn byte_damage(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let n = bytes.len();
    for k in [1usize, 7, 31, 53, 89, 97] {
        let at = n * k / 100;
        out.push((format!("truncated_at_{k}pct"), bytes[..at].to_vec()));
    }
    for k in [0usize, 3, 17, 42, 77, 99] {
        let at = (n * k / 100).min(n.saturating_sub(1));
        let mut flipped = bytes.to_vec();
        flipped[at] ^= 0xA5;
        out.push((format!("flipped_at_{k}pct"), flipped));
    }
    out
}

fn check(dir: &Path, model: &Path, label: &str, failures: &mut Vec<String>, runs: &mut usize) {
    let out = dir.join("out.onnx");
    let commands: Vec<Vec<String>> = vec![
        vec!["inspect".into(), s(model).into()],
        vec![
            "convert".into(),
            s(model).into(),
            "-o".into(),
            s(&out).into(),
        ],
        vec![
            "optimize".into(),
            s(model).into(),
            "-o".into(),
            s(&out).into(),
            "--samples".into(),
            "1".into(),
        ],
        vec![
            "verify".into(),
            s(model).into(),
            s(model).into(),
            "--samples".into(),
            "1".into(),
        ],
    ];
    for args in commands {
        let _ = std::fs::remove_file(&out);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = mdeploy(&refs);
        *runs += 1;
        let code = o.status.code();
        let what = format!("{label}: mdeploy {}", args[0]);
        match code {
            Some(0) => {}
            Some(1) | Some(2) => {
                if stderr(&o).trim().is_empty() {
                    failures.push(format!("{what}: exit {code:?} without a message"));
                }
                if out.exists() {
                    failures.push(format!("{what}: failed but left {}", out.display()));
                }
            }
            _ => failures.push(format!(
                "{what}: exit {code:?}: {}",
                stderr(&o).lines().take(3).collect::<Vec<_>>().join(" | ")
            )),
        }
        let leftovers: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        if !leftovers.is_empty() {
            failures.push(format!("{what}: temporary files left: {leftovers:?}"));
            leftovers.iter().for_each(|p| drop(std::fs::remove_file(p)));
        }
    }
}

#[test]
fn broken_real_models_never_crash_any_command() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for (name, path) in real_models() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let model = ModelProto::decode(bytes.as_slice()).unwrap();
        let mut variants: Vec<(String, Vec<u8>)> = byte_damage(&bytes);
        variants.extend(
            mutations(&model)
                .into_iter()
                .map(|(n, m)| (n.to_string(), m.encode_to_vec())),
        );
        for (label, data) in variants {
            // the model file sits where external data would resolve (its own directory)
            let file = tmp.path().join("model.onnx");
            std::fs::write(&file, &data).unwrap();
            check(
                tmp.path(),
                &file,
                &format!("{name}/{label}"),
                &mut failures,
                &mut runs,
            );
        }
    }
    eprintln!("sweep: {runs} runs, {} problems", failures.len());
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
