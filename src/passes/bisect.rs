//! `--bisect`: when an optimized model fails verification, find the first pass after which its
//! outputs diverge from the original's, and the nodes that pass changed.

use serde::{Deserialize, Serialize};

use crate::onnx::Model;
use crate::progress::NoProgress;
use crate::verify::{Inputs, Sample, Status, Tolerance, verify_models};

use super::{OptimizeOptions, Pass, optimize};

/// The first pass whose addition makes verification fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Culprit {
    pub pass: String,
    /// Nodes (by name, or op and position) that pass removed or added.
    pub nodes_changed: Vec<String>,
    /// The failing outputs' messages with that pass.
    pub outputs: Vec<String>,
}

fn node_names(m: &Model) -> Vec<String> {
    m.graph()
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| crate::graph::node_label(n, i).replace(&format!("#{i} "), ""))
        .collect()
}

/// Runs growing prefixes of `passes` on `start` (the model as the passes first saw it: with
/// `--input-shape` and pruning applied) and verifies each against `original`.
pub fn bisect(
    original: &Model,
    start: &Model,
    passes: &[&'static dyn Pass],
    options: &OptimizeOptions,
    samples: &[Sample],
    tolerance: &Tolerance,
    engine: crate::run::EngineChoice,
) -> Option<Culprit> {
    let inputs = || Inputs {
        samples,
        random_seed: None,
        engine,
        compare_engines: false,
        computed: None,
        reference_computed: None,
    };
    // the start itself (input shapes fixed, pruned) may already differ: then no pass is to blame
    let before = verify_models(
        (original, "original"),
        (start, "before any pass"),
        inputs(),
        tolerance.clone(),
        &NoProgress,
    )
    .ok()?;
    if before.status == Status::Failed {
        return Some(Culprit {
            pass: "(none: the outputs differ before any pass, after --input-shape and pruning)"
                .into(),
            nodes_changed: vec![],
            outputs: failing_outputs(&before),
        });
    }
    let mut previous: Option<Model> = None;
    for k in 0..passes.len() {
        let mut candidate = Model::from_proto(start.proto.clone(), start.dir().to_path_buf());
        optimize(&mut candidate, &passes[..=k], options).ok()?;
        let report = verify_models(
            (original, "original"),
            (&candidate, passes[k].name()),
            inputs(),
            tolerance.clone(),
            &NoProgress,
        )
        .ok()?;
        if report.status == Status::Failed {
            let before = previous
                .as_ref()
                .map(node_names)
                .unwrap_or_else(|| node_names(start));
            let after = node_names(&candidate);
            let mut changed: Vec<String> = before
                .iter()
                .filter(|n| !after.contains(n))
                .map(|n| format!("-{n}"))
                .collect();
            changed.extend(
                after
                    .iter()
                    .filter(|n| !before.contains(n))
                    .map(|n| format!("+{n}")),
            );
            return Some(Culprit {
                pass: passes[k].name().to_string(),
                nodes_changed: changed,
                outputs: failing_outputs(&report),
            });
        }
        previous = Some(candidate);
    }
    None
}

fn failing_outputs(report: &crate::verify::VerifyReport) -> Vec<String> {
    report
        .outputs
        .iter()
        .filter_map(|o| o.message.clone())
        .chain(report.failure.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::{PassContext, PassError, PassKind, registry};
    use crate::run::{InputShapes, graph_inputs, random_inputs};

    /// Two seeded random samples for `model`.
    fn random_samples(model: &Model) -> Vec<Sample> {
        (0..2)
            .map(|s| Sample {
                origin: format!("random #{s}"),
                inputs: random_inputs(&graph_inputs(model), &InputShapes::default(), s).unwrap(),
                expected: None,
            })
            .collect()
    }

    /// A pass that breaks numbers: turns every Relu into Neg.
    struct Broken;
    impl Pass for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn kind(&self) -> PassKind {
            PassKind::Fusion
        }
        fn description(&self) -> &'static str {
            "test only"
        }
        fn run(&self, g: &mut Graph, _: &mut PassContext) -> Result<usize, PassError> {
            let mut n = 0;
            for node in &mut g.proto_mut().node {
                if node.op_type() == "Relu" {
                    node.op_type = Some("Neg".into());
                    n += 1;
                }
            }
            Ok(n)
        }
    }

    #[test]
    fn bisect_names_the_pass_and_node_that_broke_the_numbers() {
        let proto = ModelBuilder::new(13)
            .input("x", DataType::Float, &["4"])
            .node("Identity", &["x"], &["i"])
            .node("Relu", &["i"], &["r"])
            .name_last("act")
            .node("Abs", &["r"], &["y"])
            .output("y", DataType::Float, &["4"])
            .build();
        let original = Model::from_proto(proto, std::env::temp_dir());
        let samples = random_samples(&original);
        let identity = registry()
            .into_iter()
            .find(|p| p.name() == "eliminate_identity")
            .unwrap();
        static BROKEN: Broken = Broken;
        let passes: Vec<&'static dyn Pass> = vec![identity, &BROKEN];
        let tol = Tolerance::from_preset(crate::verify::preset("fp32").unwrap());
        let culprit = bisect(
            &original,
            &original,
            &passes,
            &Default::default(),
            &samples,
            &tol,
            Default::default(),
        )
        .expect("found");
        assert_eq!(culprit.pass, "broken");
        assert!(
            culprit.nodes_changed.contains(&"-'act' (Relu)".to_string()),
            "{:?}",
            culprit.nodes_changed
        );
        assert!(
            culprit.nodes_changed.contains(&"+'act' (Neg)".to_string()),
            "{:?}",
            culprit.nodes_changed
        );
        // without the broken pass, nothing to find
        assert!(
            bisect(
                &original,
                &original,
                &passes[..1],
                &Default::default(),
                &samples,
                &tol,
                Default::default()
            )
            .is_none()
        );
    }

    /// Bisection replayed the passes on the model as read, not on the model the passes saw
    /// (input shapes fixed, pruned), so it blamed a pass for what happened before any ran.
    #[test]
    fn a_difference_from_before_the_passes_is_not_blamed_on_one() {
        let proto = ModelBuilder::new(14)
            .input("x", DataType::Float, &["2", "3"])
            .initializer_f32("w", &[3], &[1.0, 2.0, 3.0])
            .node("Mul", &["x", "w"], &["y"])
            .output("y", DataType::Float, &["2", "3"])
            .build();
        let original = Model::from_proto(proto.clone(), std::env::temp_dir());
        let mut pruned = proto;
        pruned.graph.as_mut().unwrap().initializer[0] =
            crate::graph::builder::tensor_f32("w", &[3], &[1.0, 0.0, 3.0]);
        let start = Model::from_proto(pruned, std::env::temp_dir());
        let samples = random_samples(&original);
        let tol = Tolerance::from_preset(crate::verify::preset("fp32").unwrap());
        let culprit = bisect(
            &original,
            &start,
            &registry(),
            &Default::default(),
            &samples,
            &tol,
            Default::default(),
        )
        .expect("a difference is found");
        assert!(culprit.pass.starts_with("(none"), "{}", culprit.pass);
    }
}
