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

/// Largest absolute difference between the outputs of two models on three seeded inputs. A
/// missing or renamed output, a shape change, or NaN on one side only is an infinite difference
/// (it used to be skipped by `zip` and hidden by `f32::max`).
pub fn max_difference(before: &ModelProto, after: &ModelProto) -> f32 {
    let a = Model::from_proto(before.clone(), std::env::temp_dir());
    let b = Model::from_proto(after.clone(), std::env::temp_dir());
    let inputs = graph_inputs(&a);
    let (mut ra, mut rb) = (Runner::new(&a).unwrap(), Runner::new(&b).unwrap());
    let mut worst = 0f32;
    for seed in 0..3 {
        let x = random_inputs(&inputs, &InputShapes::default(), seed).unwrap();
        let (ya, yb) = (ra.run(&x).unwrap(), rb.run(&x).unwrap());
        let names =
            |y: &[crate::run::NamedTensor]| y.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(&ya) != names(&yb) {
            return f32::INFINITY;
        }
        for (ya, yb) in ya.iter().zip(&yb) {
            if ya.tensor.shape() != yb.tensor.shape() {
                return f32::INFINITY;
            }
            let ya = ya.tensor.cast_to::<f32>().unwrap().into_owned();
            let yb = yb.tensor.cast_to::<f32>().unwrap().into_owned();
            let (va, vb) = (
                ya.to_plain_array_view::<f32>().unwrap(),
                yb.to_plain_array_view::<f32>().unwrap(),
            );
            for (p, q) in va.iter().zip(vb.iter()) {
                let d = match (p.is_nan(), q.is_nan()) {
                    (true, true) => 0.0,
                    (false, false) if p == q => 0.0, // equal infinities too
                    (false, false) => (p - q).abs(),
                    _ => f32::INFINITY,
                };
                if d > worst || d.is_nan() {
                    worst = if d.is_nan() { f32::INFINITY } else { d };
                }
            }
        }
    }
    worst
}

#[test]
fn max_difference_sees_nan_and_missing_outputs() {
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    let base = |op: &str| {
        ModelBuilder::new(14)
            .input("x", DataType::Float, &["3"])
            .node(op, &["x"], &["y"])
            .output("y", DataType::Float, &["3"])
            .build()
    };
    // Log of the negative random inputs is NaN where Abs is a number
    assert!(max_difference(&base("Abs"), &base("Log")).is_infinite());
    let mut renamed = base("Abs");
    let g = renamed.graph.as_mut().unwrap();
    g.node[0].output[0] = "z".into();
    g.output[0].name = Some("z".into());
    assert!(max_difference(&base("Abs"), &renamed).is_infinite());
    assert_eq!(max_difference(&base("Abs"), &base("Abs")), 0.0);
}
