//! `fuse_consecutive_unsqueezes`: two `Unsqueeze`s become one.
//!
//! ```text
//! x:[3] -> Unsqueeze([0]) -> [1,3] -> Unsqueeze([2]) -> [1,3,1]      =>      x -> Unsqueeze([0,2])
//! ```
//! The second node's axes are positions in the final shape; the first's are positions in the
//! intermediate one, mapped to final positions by skipping the axes the second inserts. Needs
//! constant axes and, for negative axes, the input's rank. Opsets 1-12 (attribute) and 13+
//! (input). The first Unsqueeze stays if something else reads it. Results are bit-identical.

use super::{Pass, PassContext, PassError, PassKind};
use crate::graph::Graph;

pub struct FuseConsecutiveUnsqueezes;

fn normalize(axes: &[i64], rank: i64) -> Option<Vec<i64>> {
    let mut v: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + rank } else { a })
        .collect();
    v.sort();
    (v.iter().all(|&a| a >= 0 && a < rank) && v.windows(2).all(|w| w[0] < w[1])).then_some(v)
}

/// Axes of one Unsqueeze equal to Unsqueeze(a1) then Unsqueeze(a2) on an input of rank `r`.
pub fn combine(a1: &[i64], a2: &[i64], r: i64) -> Option<Vec<i64>> {
    let mid_rank = r + a1.len() as i64;
    let final_rank = mid_rank + a2.len() as i64;
    let a1 = normalize(a1, mid_rank)?;
    let a2 = normalize(a2, final_rank)?;
    // final positions not inserted by the second node are the intermediate positions, in order
    let kept: Vec<i64> = (0..final_rank).filter(|p| !a2.contains(p)).collect();
    let mut all: Vec<i64> = a1
        .iter()
        .map(|&p| kept[p as usize])
        .chain(a2.iter().copied())
        .collect();
    all.sort();
    Some(all)
}

impl Pass for FuseConsecutiveUnsqueezes {
    fn name(&self) -> &'static str {
        "fuse_consecutive_unsqueezes"
    }
    fn kind(&self) -> PassKind {
        PassKind::Fusion
    }
    fn description(&self) -> &'static str {
        "merge consecutive Unsqueeze nodes"
    }
    fn details(&self) -> &'static str {
        "two Unsqueezes with constant axes become one"
    }
    fn run(&self, graph: &mut Graph, ctx: &mut PassContext) -> Result<usize, PassError> {
        Ok(super::fuse_consecutive_squeezes::merge_pairs(
            graph,
            ctx,
            "Unsqueeze",
            combine,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ModelBuilder;
    use crate::onnx::DataType;
    use crate::passes::testing::{max_difference, run_pass};

    #[test]
    fn axes_combine_like_two_unsqueezes() {
        assert_eq!(combine(&[0], &[2], 1), Some(vec![0, 2]));
        assert_eq!(combine(&[1], &[0], 2), Some(vec![0, 2]));
        assert_eq!(combine(&[-1], &[0, 1], 1), Some(vec![0, 1, 3]));
        assert_eq!(combine(&[0, 0], &[1], 1), None, "repeated axes are invalid");
    }

    #[test]
    fn unsqueezes_merge() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &["3", "4"])
            .initializer_i64("a1", &[1], &[1])
            .initializer_i64("a2", &[2], &[0, -1])
            .node("Unsqueeze", &["x", "a1"], &["u1"])
            .node("Unsqueeze", &["u1", "a2"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let (after, n) = run_pass(&FuseConsecutiveUnsqueezes, &m);
        assert_eq!(n, 1);
        assert_eq!(after.graph.as_ref().unwrap().node[1].input[0], "x");
        assert_eq!(max_difference(&m, &after), 0.0);
    }

    #[test]
    fn an_unknown_input_rank_with_negative_axes_blocks_it() {
        let m = ModelBuilder::new(13)
            .input("x", DataType::Float, &[])
            .initializer_i64("a1", &[1], &[-1])
            .initializer_i64("a2", &[1], &[0])
            .node("Unsqueeze", &["x", "a1"], &["u1"])
            .node("Unsqueeze", &["u1", "a2"], &["y"])
            .output("y", DataType::Float, &[])
            .build();
        let mut m = m;
        m.graph.as_mut().unwrap().input[0].r#type = None; // rank unknown
        assert_eq!(run_pass(&FuseConsecutiveUnsqueezes, &m).1, 0);
    }
}
