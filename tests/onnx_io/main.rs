//! Lossless ONNX I/O on real files: every real model and every conformance model loads and saves
//! back to the same bytes.

#[path = "../common/mod.rs"]
mod common;

use mdeploy::onnx::{Model, SaveOptions};

fn round_trip(path: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let model = Model::load(path).map_err(|e| e.to_string())?;
    model
        .save(out, SaveOptions::default())
        .map_err(|e| e.to_string())?;
    let a = std::fs::read(path).unwrap();
    let b = std::fs::read(out).unwrap();
    if a != b {
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        return Err(format!(
            "bytes differ at offset {at} ({} vs {} bytes)",
            a.len(),
            b.len()
        ));
    }
    Ok(())
}

#[test]
fn real_models_round_trip_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, path) in common::real_models() {
        round_trip(&path, &tmp.path().join(format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn conformance_models_round_trip_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let mut failures = Vec::new();
    let models = common::conformance_models();
    for path in &models {
        if let Err(e) = round_trip(path, &out) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} not identical:\n{}",
        failures.len(),
        models.len(),
        failures.join("\n")
    );
}

#[test]
fn graph_edits_keep_everything_they_do_not_touch() {
    use mdeploy::graph::Graph;
    use prost::Message;
    let (_, path) = common::real_models()
        .into_iter()
        .find(|(n, _)| n == "bert_tiny_random")
        .unwrap();
    let model = Model::load(&path).unwrap();
    let original = model.graph().clone();
    let mut graph = Graph::new(original.clone());
    // bypass and remove every Identity node, as an optimisation pass would
    let identities: Vec<usize> = graph
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type() == "Identity")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(identities.len(), 20);
    for &i in &identities {
        let (from, to) = (
            graph.nodes()[i].output[0].clone(),
            graph.nodes()[i].input[0].clone(),
        );
        assert!(!graph.is_output(&from));
        assert!(graph.replace_all_uses(&from, &to) > 0);
    }
    graph.remove_nodes(&identities);
    mdeploy::graph::check_graph(graph.proto(), &Default::default()).unwrap();
    let edited = graph.into_proto();
    assert_eq!(edited.node.len(), original.node.len() - 20);
    let kept: Vec<_> = original
        .node
        .iter()
        .filter(|n| n.op_type() != "Identity")
        .collect();
    for (a, b) in kept.iter().zip(&edited.node) {
        // only inputs may differ; everything else is the same bytes
        let mut a = (*a).clone();
        a.input = b.input.clone();
        assert_eq!(a.encode_to_vec(), b.encode_to_vec(), "node {}", b.name());
    }
    assert_eq!(edited.initializer, original.initializer);
    assert_eq!(edited.input, original.input);
    assert_eq!(edited.output, original.output);
    assert_eq!(edited.doc_string, original.doc_string);
    assert_eq!(edited.metadata_props, original.metadata_props);
}
