//! Type and shape inference against the ONNX conformance suite: every node test's stored
//! expected outputs give the true element type and shape of each graph output. With the
//! outputs' declared types stripped (so nothing is read back), inference must agree wherever it
//! gives an answer. Coverage is counted and written to `target/infer-conformance.json`.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use mdeploy::infer::Inference;
use mdeploy::onnx::proto::TensorProto;
use mdeploy::onnx::{DataType, Model};
use prost::Message;

#[derive(Default, serde::Serialize)]
struct Tally {
    tests: usize,
    outputs: usize,
    type_known: usize,
    rank_known: usize,
    shape_known: usize,
    disagreements: Vec<String>,
    /// Outputs whose shape is not fully known, by the op producing them.
    shape_unknown_by_op: BTreeMap<String, usize>,
}

fn expected_outputs(dir: &Path) -> Option<Vec<TensorProto>> {
    let set = dir.join("test_data_set_0");
    let mut out = Vec::new();
    for k in 0.. {
        let path = set.join(format!("output_{k}.pb"));
        if !path.is_file() {
            break;
        }
        out.push(TensorProto::decode(std::fs::read(path).ok()?.as_slice()).ok()?);
    }
    Some(out)
}

fn check_test(dir: &Path, tally: &mut Tally) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let Ok(mut model) = Model::load(&dir.join("model.onnx")) else {
        return;
    };
    let Some(expected) = expected_outputs(dir) else {
        return;
    };
    let outputs: Vec<(String, bool)> = model
        .graph()
        .output
        .iter()
        .map(|o| {
            let tensor = matches!(
                o.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(mdeploy::onnx::proto::type_proto::Value::TensorType(_))
            );
            (o.name().to_string(), tensor)
        })
        .collect();
    // inference must not read the answer from the declared outputs
    for o in &mut model.graph_mut().output {
        o.r#type = None;
    }
    let inference = Inference::of_model(&model);
    tally.tests += 1;
    for ((out, is_tensor), want) in outputs.iter().zip(&expected) {
        if !is_tensor {
            continue;
        }
        tally.outputs += 1;
        let Some(fact) = inference.fact(out) else {
            continue;
        };
        let want_type = DataType::from_code(want.data_type()).ok();
        if let Some(t) = fact.elem_type {
            tally.type_known += 1;
            if Some(t) != want_type {
                tally.disagreements.push(format!(
                    "{name}: '{out}' type {t:?}, expected {want_type:?}"
                ));
            }
        }
        let op = model
            .graph()
            .node
            .iter()
            .find(|n| n.output.contains(out))
            .map_or("?".to_string(), |n| n.op_type().to_string());
        let Some(shape) = &fact.shape else {
            *tally.shape_unknown_by_op.entry(op).or_default() += 1;
            continue;
        };
        tally.rank_known += 1;
        if shape.len() != want.dims.len() {
            tally.disagreements.push(format!(
                "{name}: '{out}' rank {}, expected dims {:?}",
                shape.len(),
                want.dims
            ));
            continue;
        }
        let mut all_known = true;
        for (axis, (d, &w)) in shape.iter().zip(&want.dims).enumerate() {
            match d.as_const() {
                Some(v) if v != w => tally.disagreements.push(format!(
                    "{name}: '{out}' axis {axis} is {v}, expected {w} (dims {:?})",
                    want.dims
                )),
                Some(_) => {}
                None => all_known = false,
            }
        }
        tally.shape_known += all_known as usize;
        if !all_known {
            *tally.shape_unknown_by_op.entry(op).or_default() += 1;
        }
    }
}

#[test]
fn inference_agrees_with_every_conformance_test() {
    let root = common::shared().join("onnx-node-tests");
    let mut by_suite = BTreeMap::new();
    for suite in ["node", "simple", "pytorch-converted", "pytorch-operator"] {
        let mut dirs: Vec<_> = std::fs::read_dir(root.join(suite))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        dirs.sort();
        let mut tally = Tally::default();
        for d in &dirs {
            check_test(d, &mut tally);
        }
        by_suite.insert(suite, tally);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/infer-conformance.json");
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&by_suite).unwrap());
    for (suite, t) in &by_suite {
        eprintln!(
            "{suite}: {} tests, {} tensor outputs: type known {}, rank known {}, shape known {}, {} disagreements",
            t.tests,
            t.outputs,
            t.type_known,
            t.rank_known,
            t.shape_known,
            t.disagreements.len()
        );
    }
    let node = &by_suite["node"];
    let bad: Vec<&String> = by_suite.values().flat_map(|t| &t.disagreements).collect();
    assert!(
        bad.is_empty(),
        "{} disagreements:\n{}",
        bad.len(),
        bad.iter()
            .take(60)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // coverage must not quietly fall: these are floors below what inference reaches today
    assert!(node.tests >= 1700, "{} node tests read", node.tests);
    assert!(
        node.type_known * 100 >= node.outputs * 98,
        "types of {} / {}",
        node.type_known,
        node.outputs
    );
    assert!(
        node.shape_known * 100 >= node.outputs * 65,
        "shapes of {} / {}",
        node.shape_known,
        node.outputs
    );
}
