//! Helpers for pass tests: run one pass through the manager, list the ops that remain, and compare
//! the numbers a model computes before and after with tract on seeded inputs.

use crate::onnx::Model;
use crate::onnx::proto::ModelProto;
use crate::run::{InputShapes, Runner, graph_inputs, random_inputs};

use super::{OptimizeOptions, Pass, optimize};

/// Runs `pass` alone to a fixed point; returns the model and how many rewrites it made.
pub fn run_pass(pass: &'static dyn Pass, proto: &ModelProto) -> (ModelProto, usize) {
    let mut model = Model::from_proto(proto.clone(), std::env::temp_dir());
    let report = optimize(&mut model, &[pass], &OptimizeOptions::default()).expect("pass runs");
    (model.proto, report.per_pass[pass.name()].applied)
}

/// Op types of the main graph's nodes, in order.
pub fn ops(proto: &ModelProto) -> Vec<String> {
    proto
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect()
}

/// Largest absolute difference between the outputs of two models on three seeded inputs.
pub fn max_difference(before: &ModelProto, after: &ModelProto) -> f32 {
    let a = Model::from_proto(before.clone(), std::env::temp_dir());
    let b = Model::from_proto(after.clone(), std::env::temp_dir());
    let inputs = graph_inputs(&a);
    let (mut ra, mut rb) = (Runner::new(&a).unwrap(), Runner::new(&b).unwrap());
    let mut worst = 0f32;
    for seed in 0..3 {
        let x = random_inputs(&inputs, &InputShapes::default(), seed).unwrap();
        for (ya, yb) in ra.run(&x).unwrap().iter().zip(rb.run(&x).unwrap()) {
            assert_eq!(ya.tensor.shape(), yb.tensor.shape(), "{}", ya.name);
            let ya = ya.tensor.cast_to::<f32>().unwrap().into_owned();
            let yb = yb.tensor.cast_to::<f32>().unwrap().into_owned();
            let (va, vb) = (
                ya.to_plain_array_view::<f32>().unwrap(),
                yb.to_plain_array_view::<f32>().unwrap(),
            );
            for (p, q) in va.iter().zip(vb.iter()) {
                worst = worst.max((p - q).abs());
            }
        }
    }
    worst
}
