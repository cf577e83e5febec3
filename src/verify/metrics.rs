//! Comparing one output of a candidate against its reference, over one or more samples:
//! error statistics, agreement of top-k classes, and the smallest tolerance that would pass.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

/// Accumulates the comparison of one output across samples.
#[derive(Debug, Default)]
pub struct Accumulator {
    elements: u64,
    sum_abs: f64,
    max_abs: f64,
    max_rel: f64,
    abs_errors: Vec<f32>,
    /// Cosine and SQNR of the worst sample.
    similarity: Similarity,
    nan: (u64, u64),
    inf: (u64, u64),
    nan_mismatch: u64,
    /// Elements infinite on one side and not the same on the other: never an allowed outlier.
    inf_mismatch: u64,
    /// Whether the values are floats (the only ones quantization may move).
    float: bool,
    violations: u64,
    rows: u64,
    top1: u64,
    top5: u64,
    shape: Option<Vec<usize>>,
    dtype: Option<String>,
    problem: Option<String>,
}

/// One sample's sums for cosine similarity and SQNR.
#[derive(Debug, Default, Clone, Copy)]
pub struct SampleSums {
    dot: f64,
    ref_sq: f64,
    cand_sq: f64,
    noise_sq: f64,
    elements: u64,
}

impl SampleSums {
    /// Adds one element pair (reference, candidate). The same NaN or infinity on both sides
    /// agrees, as the element-wise check counts it, and adds nothing; any other pair with a
    /// non-finite side leaves the sums non-finite (no cosine or SQNR to pass).
    pub fn add(&mut self, r: f64, c: f64) {
        if !r.is_finite() && (r == c || (r.is_nan() && c.is_nan())) {
            return;
        }
        self.dot += r * c;
        self.ref_sq += r * r;
        self.cand_sq += c * c;
        self.noise_sq += (c - r) * (c - r);
        self.elements += 1;
    }

    /// Adds element pairs (reference, candidate) as [`Self::add`] does, in four interleaved
    /// running sums merged at the end where every element is finite (the dependency between
    /// one addition and the next no longer sets the pace: a float16 search compares hundreds of
    /// millions of elements), else one pair at a time. A non-finite element leaves a lane's sum
    /// of squares non-finite (a float32's square, summed over any count of elements, is finite
    /// in float64), so the sums tell, without a pass of their own, whether every element was.
    pub fn add_all(&mut self, r: &[f32], c: &[f32]) {
        let n = r.len().min(c.len());
        let (r, c) = (&r[..n], &c[..n]);
        let mut lanes = [[0f64; 4]; 4];
        let (r_quads, c_quads) = (r.chunks_exact(4), c.chunks_exact(4));
        let (r_rest, c_rest) = (r_quads.remainder(), c_quads.remainder());
        for (rq, cq) in r_quads.zip(c_quads) {
            for k in 0..4 {
                let (x, y) = (f64::from(rq[k]), f64::from(cq[k]));
                lanes[0][k] += x * y;
                lanes[1][k] += x * x;
                lanes[2][k] += y * y;
                lanes[3][k] += (y - x) * (y - x);
            }
        }
        let total = |lane: [f64; 4]| (lane[0] + lane[1]) + (lane[2] + lane[3]);
        if !(total(lanes[1]).is_finite() && total(lanes[2]).is_finite()) {
            for (x, y) in r.iter().zip(c) {
                self.add(f64::from(*x), f64::from(*y));
            }
            return;
        }
        self.dot += total(lanes[0]);
        self.ref_sq += total(lanes[1]);
        self.cand_sq += total(lanes[2]);
        self.noise_sq += total(lanes[3]);
        self.elements += (n - r_rest.len()) as u64;
        for (x, y) in r_rest.iter().zip(c_rest) {
            self.add(f64::from(*x), f64::from(*y));
        }
    }

    /// Two all-zero sides agree (1); zero against non-zero does not (0).
    pub fn cosine(&self) -> f64 {
        let norms = self.ref_sq.sqrt() * self.cand_sq.sqrt();
        if norms == 0.0 {
            if self.ref_sq == self.cand_sq {
                1.0
            } else {
                0.0
            }
        } else {
            self.dot / norms
        }
    }

    /// Adds another sample's sums.
    pub fn merge(&mut self, other: &SampleSums) {
        self.dot += other.dot;
        self.ref_sq += other.ref_sq;
        self.cand_sq += other.cand_sq;
        self.noise_sq += other.noise_sq;
        self.elements += other.elements;
    }

    /// 10·log10 of signal over error energy (infinite without error).
    pub fn sqnr_db(&self) -> f64 {
        if self.noise_sq == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.ref_sq / self.noise_sq).log10()
        }
    }
}

/// Cosine similarity and SQNR of an output over several samples, each the worst sample's:
/// measures pooled over the samples let a large, well-kept sample hide one that is not (a
/// detection map at cosine 0.998 on one image and 0.977 on another pools to 0.990). A NaN in any
/// sample stays NaN. A sample whose reference is all zeros has no direction to compare: it is
/// left to the element-wise bounds and not judged here (unless the candidate is infinite or NaN
/// there). The pooled sums are kept too: what a value loses on the whole, to rank one value
/// against another.
#[derive(Debug, Clone, Copy, Default)]
pub struct Similarity {
    worst: Option<(f64, f64)>,
    pub pooled: SampleSums,
}

impl Similarity {
    /// Takes in one sample.
    pub fn add(&mut self, sample: &SampleSums) {
        self.pooled.merge(sample);
        if sample.elements == 0 || (sample.ref_sq == 0.0 && sample.noise_sq.is_finite()) {
            return;
        }
        let lower = |a: f64, b: f64| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        };
        let (c, q) = (sample.cosine(), sample.sqnr_db());
        self.worst = Some(match self.worst {
            None => (c, q),
            Some((wc, wq)) => (lower(wc, c), lower(wq, q)),
        });
    }

    /// The worst sample's cosine and SQNR (dB); none where no sample was judged.
    pub fn worst(&self) -> Option<(f64, f64)> {
        self.worst
    }
}

/// The result for one output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputReport {
    pub name: String,
    pub passed: bool,
    /// Why it failed, in words (shape mismatch, out of tolerance, NaN mismatch...).
    pub message: Option<String>,
    pub shape: Option<Vec<usize>>,
    pub dtype: Option<String>,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub atol: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub rtol: f64,
    pub elements: u64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub max_abs_error: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub mean_abs_error: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub max_rel_error: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub p99_abs_error: f64,
    pub cosine_similarity: Option<f64>,
    pub sqnr_db: Option<f64>,
    pub nan: SideCounts,
    pub inf: SideCounts,
    /// Elements outside `atol + rtol * |reference|`.
    pub violations: u64,
    /// For 2-D float outputs: fraction of rows whose top class agrees.
    pub top1_agreement: Option<f64>,
    /// For 2-D float outputs with 5 or more classes: fraction of rows whose reference top class
    /// is among the candidate's top five.
    pub top5_agreement: Option<f64>,
    /// Smallest atol that passes with rtol 0, and smallest rtol that passes with atol 0.
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub min_atol: f64,
    #[serde(deserialize_with = "crate::json::inf_if_null")]
    pub min_rtol: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct SideCounts {
    pub reference: u64,
    pub candidate: u64,
}

/// The largest finite magnitude of a numeric tensor (0 for anything else): the scale that
/// scale-aware tolerances are relative to.
pub fn magnitude(t: &Tensor) -> f64 {
    as_f64(t).map_or(0.0, |v| {
        v.iter()
            .filter(|x| x.is_finite())
            .fold(0.0, |m, x| m.max(x.abs()))
    })
}

fn as_f64(t: &Tensor) -> Option<Vec<f64>> {
    let t = t.cast_to::<f64>().ok()?;
    Some(
        t.to_plain_array_view::<f64>()
            .ok()?
            .iter()
            .copied()
            .collect(),
    )
}

impl Accumulator {
    /// Adds one sample: `reference` and `candidate` values of this output.
    pub fn add(&mut self, reference: &Tensor, candidate: &Tensor, atol: f64, rtol: f64) {
        if self.problem.is_some() {
            return;
        }
        let (rs, cs) = (reference.shape(), candidate.shape());
        self.shape.get_or_insert_with(|| rs.to_vec());
        self.dtype
            .get_or_insert_with(|| format!("{:?}", reference.datum_type()));
        self.float = reference.datum_type().is_float();
        if rs != cs {
            self.problem = Some(format!("shape {cs:?} differs from the reference's {rs:?}"));
            return;
        }
        if reference.datum_type().unquantized() != candidate.datum_type().unquantized() {
            self.problem = Some(format!(
                "type {:?} differs from the reference's {:?}",
                candidate.datum_type(),
                reference.datum_type()
            ));
            return;
        }
        if reference.datum_type() == String::datum_type() {
            let (r, c) = (
                reference.to_plain_array_view::<String>(),
                candidate.to_plain_array_view::<String>(),
            );
            if let (Ok(r), Ok(c)) = (r, c) {
                let differ = r.iter().zip(c.iter()).filter(|(a, b)| a != b).count() as u64;
                self.elements += r.len() as u64;
                self.violations += differ;
            }
            return;
        }
        let (Some(r), Some(c)) = (as_f64(reference), as_f64(candidate)) else {
            self.problem = Some(format!(
                "{:?} values cannot be compared",
                reference.datum_type()
            ));
            return;
        };
        self.add_values(&r, &c, atol, rtol);
        if rs.len() == 2 && reference.datum_type().is_float() && rs[1] > 1 {
            self.add_rows(&r, &c, rs[1]);
        }
    }

    fn add_values(&mut self, r: &[f64], c: &[f64], atol: f64, rtol: f64) {
        let mut sums = SampleSums::default();
        for (&r, &c) in r.iter().zip(c) {
            self.elements += 1;
            self.nan.0 += r.is_nan() as u64;
            self.nan.1 += c.is_nan() as u64;
            self.inf.0 += r.is_infinite() as u64;
            self.inf.1 += c.is_infinite() as u64;
            if r.is_nan() || c.is_nan() {
                if r.is_nan() != c.is_nan() {
                    self.nan_mismatch += 1;
                    self.violations += 1;
                }
                continue;
            }
            if r.is_infinite() || c.is_infinite() {
                if r != c {
                    self.inf_mismatch += 1;
                    self.violations += 1;
                    self.max_abs = f64::INFINITY;
                    self.max_rel = f64::INFINITY;
                }
                continue;
            }
            let abs = (c - r).abs();
            self.sum_abs += abs;
            self.max_abs = self.max_abs.max(abs);
            let rel = if abs == 0.0 { 0.0 } else { abs / r.abs() };
            self.max_rel = self.max_rel.max(rel);
            self.abs_errors.push(abs as f32);
            if abs > atol + rtol * r.abs() {
                self.violations += 1;
            }
            sums.add(r, c);
        }
        self.similarity.add(&sums);
    }

    fn add_rows(&mut self, r: &[f64], c: &[f64], classes: usize) {
        for (rr, cr) in r.chunks(classes).zip(c.chunks(classes)) {
            let rank = |row: &[f64]| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                idx
            };
            let (ri, ci) = (rank(rr), rank(cr));
            self.rows += 1;
            self.top1 += (ri[0] == ci[0]) as u64;
            self.top5 += ci.iter().take(5).any(|&k| k == ri[0]) as u64;
        }
    }

    /// The report for this output under the given bounds.
    pub fn finish(
        mut self,
        name: &str,
        atol: f64,
        rtol: f64,
        min_cosine: Option<f64>,
        max_outliers: f64,
    ) -> OutputReport {
        // outliers are allowed only in float values, only where the direction is checked too
        let allowed = if min_cosine.is_some() && self.float {
            (max_outliers * self.elements as f64).floor() as u64
        } else {
            0
        };
        let count = self.abs_errors.len();
        let p99 = if count == 0 {
            0.0
        } else {
            let k = ((count as f64 * 0.99).ceil() as usize).clamp(1, count) - 1;
            let (_, v, _) = self
                .abs_errors
                .select_nth_unstable_by(k, |a, b| a.total_cmp(b));
            *v as f64
        };
        let (cosine, sqnr) = self.similarity.worst().unzip();
        let rows = self.rows as f64;
        let classes = self
            .shape
            .as_ref()
            .and_then(|s| s.get(1))
            .copied()
            .unwrap_or(0);
        let message = if let Some(p) = self.problem.take() {
            Some(p)
        } else if self.nan_mismatch > 0 {
            Some(format!(
                "{} elements are NaN on one side only",
                self.nan_mismatch
            ))
        } else if self.inf_mismatch > 0 && min_cosine.is_some() {
            Some(format!(
                "{} elements are infinite on one side only (an overflow)",
                self.inf_mismatch
            ))
        } else if self.violations > allowed {
            Some(format!(
                "{} of {} elements out of tolerance (max abs error {:.3e}, max rel error {:.3e}){}",
                self.violations,
                self.elements,
                self.max_abs,
                self.max_rel,
                if allowed > 0 {
                    format!("; at most {allowed} may be")
                } else {
                    String::new()
                }
            ))
        } else if let (Some(min), Some(c)) = (min_cosine, cosine)
            && c < min
        {
            Some(format!("cosine similarity {c:.6} below {min}"))
        } else {
            None
        };
        OutputReport {
            name: name.to_string(),
            passed: message.is_none(),
            message,
            shape: self.shape,
            dtype: self.dtype,
            atol,
            rtol,
            elements: self.elements,
            max_abs_error: self.max_abs,
            mean_abs_error: if count == 0 {
                0.0
            } else {
                self.sum_abs / count as f64
            },
            max_rel_error: self.max_rel,
            p99_abs_error: p99,
            cosine_similarity: cosine,
            sqnr_db: sqnr,
            nan: SideCounts {
                reference: self.nan.0,
                candidate: self.nan.1,
            },
            inf: SideCounts {
                reference: self.inf.0,
                candidate: self.inf.1,
            },
            violations: self.violations,
            top1_agreement: (self.rows > 0).then(|| self.top1 as f64 / rows),
            top5_agreement: (self.rows > 0 && classes >= 5).then(|| self.top5 as f64 / rows),
            min_atol: self.max_abs,
            min_rtol: self.max_rel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_shape(shape, v).unwrap()
    }

    /// A sample kept well does not hide one that is not: cosine and SQNR are the worst
    /// sample's, the pooled sums are over both.
    /// Sums taken four lanes at a time are those of one pair at a time, to rounding, and a
    /// block with a NaN or an infinity is taken as the pairs are.
    #[test]
    fn sums_of_a_block_are_the_sums_of_its_pairs() {
        let r: Vec<f32> = (0..1003)
            .map(|k| ((k * 37 % 101) as f32 - 50.0) * 0.37)
            .collect();
        let c: Vec<f32> = r
            .iter()
            .enumerate()
            .map(|(k, x)| x + (k % 7) as f32 * 0.01)
            .collect();
        let (mut one, mut block) = (SampleSums::default(), SampleSums::default());
        for (x, y) in r.iter().zip(&c) {
            one.add(f64::from(*x), f64::from(*y));
        }
        block.add_all(&r, &c);
        assert_eq!(one.elements, block.elements);
        for (a, b) in [
            (one.dot, block.dot),
            (one.ref_sq, block.ref_sq),
            (one.cand_sq, block.cand_sq),
            (one.noise_sq, block.noise_sq),
        ] {
            assert!((a - b).abs() <= 1e-12 * a.abs(), "{a} {b}");
        }
        let mut r_bad = r.clone();
        let mut c_bad = c.clone();
        (r_bad[5], c_bad[5]) = (f32::NAN, f32::NAN);
        c_bad[9] = f32::INFINITY;
        let (mut one, mut block) = (SampleSums::default(), SampleSums::default());
        for (x, y) in r_bad.iter().zip(&c_bad) {
            one.add(f64::from(*x), f64::from(*y));
        }
        block.add_all(&r_bad, &c_bad);
        assert_eq!(one.elements, block.elements);
        assert!(block.noise_sq.is_infinite() && one.noise_sq.is_infinite());
        // the same infinity on both sides agrees and adds nothing: the sums stay finite, and
        // the block's are the pairs'
        let (mut r_inf, mut c_inf) = (r.clone(), c.clone());
        (r_inf[20], c_inf[20]) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        let (mut one, mut block) = (SampleSums::default(), SampleSums::default());
        for (x, y) in r_inf.iter().zip(&c_inf) {
            one.add(f64::from(*x), f64::from(*y));
        }
        block.add_all(&r_inf, &c_inf);
        assert_eq!(block.elements, r.len() as u64 - 1);
        assert_eq!(
            (one.dot, one.ref_sq, one.cand_sq, one.noise_sq),
            (block.dot, block.ref_sq, block.cand_sq, block.noise_sq)
        );
    }

    #[test]
    fn cosine_and_sqnr_are_the_worst_samples() {
        let mut a = Accumulator::default();
        // large and nearly exact; small and far off
        a.add(&t(&[100.0, 0.0], &[2]), &t(&[100.0, 0.1], &[2]), 1.0, 0.0);
        a.add(&t(&[1.0, 0.0], &[2]), &t(&[1.0, 1.0], &[2]), 1.0, 0.0);
        let r = a.finish("y", 1.0, 0.0, None, 0.0);
        let worst = 1.0 / 2f64.sqrt();
        assert!((r.cosine_similarity.unwrap() - worst).abs() < 1e-12);
        assert!(r.sqnr_db.unwrap().abs() < 1e-12, "{:?}", r.sqnr_db);

        let mut s = Similarity::default();
        for (x, y) in [([100.0, 0.0], [100.0, 0.1]), ([1.0, 0.0], [1.0, 1.0])] {
            let mut sums = SampleSums::default();
            for (x, y) in x.iter().zip(y) {
                sums.add(*x, y);
            }
            s.add(&sums);
        }
        // an empty sample, and one whose reference is all zeros, are not judged
        s.add(&SampleSums::default());
        let mut zero = SampleSums::default();
        zero.add(0.0, 1e-3);
        s.add(&zero);
        let (cosine, _) = s.worst().unwrap();
        assert!((cosine - worst).abs() < 1e-12);
        // pooled: signal 10001 over noise 1.01 (plus the zero sample's 1e-6)
        let pooled = 10.0 * (10001.0f64 / (1.01 + 1e-6)).log10();
        assert!((s.pooled.sqnr_db() - pooled).abs() < 1e-9);
        // a NaN sample is not outvoted by a later, better one
        let mut nan = SampleSums::default();
        nan.add(1.0, f64::NAN);
        s.add(&nan);
        let mut good = SampleSums::default();
        good.add(1.0, 1.0);
        s.add(&good);
        let (cosine, sqnr) = s.worst().unwrap();
        assert!(cosine.is_nan() && sqnr.is_nan());
        assert_eq!(Similarity::default().worst(), None);
        // the same NaN or infinity on both sides agrees and adds nothing; a finite value
        // against an infinite one, or an infinity against the other, does not
        let mut same = SampleSums::default();
        for (r, c) in [
            (f64::NAN, f64::NAN),
            (f64::INFINITY, f64::INFINITY),
            (f64::NEG_INFINITY, f64::NEG_INFINITY),
            (2.0, 2.0),
        ] {
            same.add(r, c);
        }
        assert_eq!((same.cosine(), same.sqnr_db()), (1.0, f64::INFINITY));
        for (r, c) in [
            (1.0, f64::INFINITY),
            (f64::INFINITY, 1.0),
            (f64::INFINITY, f64::NEG_INFINITY),
            (f64::NAN, 1.0),
        ] {
            let mut differ = SampleSums::default();
            differ.add(2.0, 2.0);
            differ.add(r, c);
            let (cosine, sqnr) = (differ.cosine(), differ.sqnr_db());
            // not a number, or far from agreeing: no target can pass
            let passes = |x: f64, at: f64| x.partial_cmp(&at).is_some_and(|o| o.is_ge());
            assert!(
                !passes(cosine, 0.99) && !passes(sqnr, 0.0),
                "{r} {c}: {cosine} {sqnr}"
            );
        }
    }

    #[test]
    fn identical_outputs_have_zero_error() {
        let mut a = Accumulator::default();
        let x = t(&[1.0, -2.0, 3.0, 0.5], &[2, 2]);
        a.add(&x, &x, 0.0, 0.0);
        let r = a.finish("y", 0.0, 0.0, Some(0.99), 0.0);
        assert!(r.passed);
        assert_eq!(
            (r.max_abs_error, r.max_rel_error, r.violations),
            (0.0, 0.0, 0)
        );
        assert_eq!(r.cosine_similarity, Some(1.0));
        assert_eq!(r.sqnr_db, Some(f64::INFINITY));
        assert_eq!(r.top1_agreement, Some(1.0));
    }

    #[test]
    fn a_flipped_sign_fails_and_is_measured() {
        let mut a = Accumulator::default();
        a.add(
            &t(&[1.0, 2.0, 3.0, 4.0], &[4]),
            &t(&[1.0, -2.0, 3.0, 4.0], &[4]),
            1e-5,
            1e-3,
        );
        let r = a.finish("y", 1e-5, 1e-3, None, 0.0);
        assert!(!r.passed);
        assert_eq!(r.max_abs_error, 4.0);
        assert_eq!(r.min_atol, 4.0);
        assert_eq!(r.min_rtol, 2.0);
        assert_eq!(r.violations, 1);
        assert!((r.mean_abs_error - 1.0).abs() < 1e-12);
        assert!(r.cosine_similarity.unwrap() < 0.8);
    }

    #[test]
    fn nan_and_shape_mismatches_fail_with_a_reason() {
        let mut a = Accumulator::default();
        a.add(
            &t(&[f32::NAN, 1.0], &[2]),
            &t(&[f32::NAN, 1.0], &[2]),
            0.0,
            0.0,
        );
        assert!(
            a.finish("y", 0.0, 0.0, None, 0.0).passed,
            "NaN where the reference has NaN is agreement"
        );
        let mut a = Accumulator::default();
        a.add(&t(&[1.0, 1.0], &[2]), &t(&[f32::NAN, 1.0], &[2]), 1.0, 1.0);
        let r = a.finish("y", 1.0, 1.0, None, 0.0);
        assert!(!r.passed && r.message.unwrap().contains("NaN"));
        assert_eq!(r.nan.candidate, 1);
        let mut a = Accumulator::default();
        a.add(&t(&[1.0, 1.0], &[2]), &t(&[1.0, 1.0], &[1, 2]), 1.0, 1.0);
        assert!(
            a.finish("y", 1.0, 1.0, None, 0.0)
                .message
                .unwrap()
                .contains("shape")
        );
    }

    #[test]
    fn top_k_agreement_on_score_rows() {
        let reference = t(
            &[0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.5, 0.2, 0.1, 0.0, 0.0, 0.0],
            &[2, 6],
        );
        let candidate = t(
            &[0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.1, 0.6, 0.2, 0.0, 0.0, 0.0],
            &[2, 6],
        );
        let mut a = Accumulator::default();
        a.add(&reference, &candidate, 1.0, 0.0);
        let r = a.finish("scores", 1.0, 0.0, None, 0.0);
        assert_eq!(r.top1_agreement, Some(0.5));
        assert_eq!(r.top5_agreement, Some(1.0));
    }

    #[test]
    fn cosine_threshold_fails_a_preset_that_requires_it() {
        let mut a = Accumulator::default();
        a.add(&t(&[1.0, 0.0], &[2]), &t(&[0.0, 1.0], &[2]), 10.0, 0.0);
        let r = a.finish("y", 10.0, 0.0, Some(0.99), 0.0);
        assert!(!r.passed && r.message.unwrap().contains("cosine"));
    }

    /// Quantized outputs may have a few elements past the elementwise bound, but only as many as
    /// the preset allows and only where the cosine is checked too.
    #[test]
    fn outliers_pass_only_within_the_allowed_fraction_and_with_a_cosine_check() {
        let reference: Vec<f32> = (0..1000).map(|k| k as f32).collect();
        let with_errors = |n: usize| {
            let mut c = reference.clone();
            for v in c.iter_mut().take(n) {
                *v += 5.0;
            }
            c
        };
        let run = |n: usize, min_cosine: Option<f64>| {
            let mut a = Accumulator::default();
            a.add(
                &t(&reference, &[1000]),
                &t(&with_errors(n), &[1000]),
                1.0,
                0.0,
            );
            a.finish("y", 1.0, 0.0, min_cosine, 0.01)
        };
        assert!(run(10, Some(0.99)).passed);
        let r = run(11, Some(0.99));
        assert!(!r.passed && r.message.unwrap().contains("at most 10 may be"));
        assert!(!run(1, None).passed);
    }

    /// An overflow to infinity is never one of the allowed outliers, and integer outputs get no
    /// allowance at all (the review of the outlier rule found both).
    #[test]
    fn infinities_and_integers_are_never_allowed_outliers() {
        let reference: Vec<f32> = (0..1000).map(|k| k as f32).collect();
        let mut overflowed = reference.clone();
        overflowed[5] = f32::INFINITY;
        let mut a = Accumulator::default();
        a.add(&t(&reference, &[1000]), &t(&overflowed, &[1000]), 1.0, 0.0);
        let r = a.finish("y", 1.0, 0.0, Some(0.9), 0.01);
        assert!(!r.passed && r.message.unwrap().contains("infinite"));
        let ints = |v: Vec<i64>| Tensor::from(tract_onnx::prelude::tract_ndarray::Array1::from(v));
        let labels: Vec<i64> = (0..1000).collect();
        let mut moved = labels.clone();
        moved[3] = 7;
        let mut a = Accumulator::default();
        a.add(&ints(labels), &ints(moved), 0.0, 0.0);
        assert!(!a.finish("labels", 0.0, 0.0, Some(0.9), 0.01).passed);
    }
}
