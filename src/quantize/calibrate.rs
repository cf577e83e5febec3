//! Activation ranges for static quantization, from calibration data run through the float model.
//!
//! Streaming: the first pass keeps each value's min and max ([`super::ranges::observe`]); for
//! `percentile` and `entropy` a second pass fills a fixed histogram per value over that span
//! ([`BINS`] bins). Memory is a histogram per value, whatever the number of samples; no
//! activation is ever stored, and the samples are read a chunk at a time in each pass
//! ([`SampleChunks`]).
//!
//! - `minmax`: the span seen.
//! - `percentile P` (default 99.999): the span between the (100 - P)th and the Pth percentile,
//!   so a rare outlier does not stretch the int8 grid for every other value.
//! - `entropy`: the clipping threshold over |x| that minimizes the KL divergence between the
//!   histogram and its quantization to the steps the grid has below the threshold (TensorRT's
//!   calibration method, which counts 128 whatever the range).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::QuantizeError;
use super::ranges::{Runs, ValueRange, observe, run_exposed};
use crate::onnx::Model;
use crate::run::{EngineChoice, EngineKind};

/// Histogram bins per value.
pub const BINS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method", content = "percentile")]
pub enum Method {
    MinMax,
    Percentile(f64),
    Entropy,
}

impl Method {
    /// `minmax`, `percentile`, `percentile:99.99` or `entropy`.
    pub fn parse(s: &str) -> Result<Method, String> {
        match s.split_once(':') {
            None if s == "minmax" => Ok(Method::MinMax),
            None if s == "percentile" => Ok(Method::Percentile(99.999)),
            None if s == "entropy" => Ok(Method::Entropy),
            Some(("percentile", p)) => match p.parse::<f64>() {
                Ok(p) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
                _ => Err(format!("percentile '{p}': a number in (50, 100]")),
            },
            _ => Err(format!(
                "calibration method '{s}': minmax, percentile[:P] or entropy"
            )),
        }
    }
}

/// Each value's range, by name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// The range each of `values` is quantized over, with the engine that computed it.
pub fn activation_ranges(
    model: &Model,
    values: &[String],
    method: Method,
    runs: Runs,
) -> Result<(EngineKind, Ranges), QuantizeError> {
    let (kind, spans) = observe(model, values, runs)?;
    if method == Method::MinMax {
        let ranges = spans
            .iter()
            .map(|(k, r)| (k.clone(), (r.min, r.max)))
            .collect();
        return Ok((kind, ranges));
    }
    let entropy = method == Method::Entropy;
    let mut histograms: BTreeMap<String, Histogram> = spans
        .iter()
        .filter(|(_, r)| r.min <= r.max)
        .map(|(k, r)| (k.clone(), Histogram::over(r, entropy)))
        .collect();
    let again = Runs {
        engine: EngineChoice::Only(kind),
        ..runs
    };
    run_exposed(model, values, again, |run, k, outputs| {
        if k == 0 {
            for v in run {
                if let Some(h) = histograms.get_mut(v) {
                    h.clear();
                }
            }
        }
        for out in outputs {
            if let (Some(h), Ok(v)) = (
                histograms.get_mut(&out.name),
                out.tensor.to_plain_array_view::<f32>(),
            ) {
                h.add(v.iter().copied());
            }
        }
    })?;
    let ranges = spans
        .iter()
        .map(|(name, r)| {
            let range = match (histograms.get(name), method) {
                (Some(h), Method::Percentile(p)) => h.percentile_range(p),
                (Some(h), Method::Entropy) => h.entropy_range(r),
                _ => (r.min, r.max),
            };
            (name.clone(), range)
        })
        .collect();
    Ok((kind, ranges))
}

/// Counts over `[lo, hi]` in [`BINS`] equal bins (of |x| for entropy).
struct Histogram {
    lo: f32,
    hi: f32,
    absolute: bool,
    bins: Vec<u64>,
}

impl Histogram {
    fn over(r: &ValueRange, absolute: bool) -> Histogram {
        let (lo, hi) = if absolute {
            (0.0, r.min.abs().max(r.max.abs()))
        } else {
            (r.min, r.max)
        };
        Histogram {
            lo,
            hi,
            absolute,
            bins: vec![0; BINS],
        }
    }

    fn clear(&mut self) {
        self.bins.iter_mut().for_each(|b| *b = 0);
    }

    fn width(&self) -> f32 {
        (self.hi - self.lo) / BINS as f32
    }

    fn add(&mut self, values: impl Iterator<Item = f32>) {
        let w = self.width();
        for v in values.filter(|v| v.is_finite()) {
            let v = if self.absolute { v.abs() } else { v };
            let k = if w > 0.0 {
                (((v - self.lo) / w) as usize).min(BINS - 1)
            } else {
                0
            };
            self.bins[k] += 1;
        }
    }

    /// The span between the (100 - p)th and the pth percentile.
    fn percentile_range(&self, p: f64) -> (f32, f32) {
        let total: u64 = self.bins.iter().sum();
        if total == 0 {
            return (self.lo, self.hi);
        }
        let tail = ((100.0 - p) / 100.0 * total as f64).floor() as u64;
        let w = self.width();
        let mut seen = 0;
        let mut lo = self.lo;
        for (k, &b) in self.bins.iter().enumerate() {
            seen += b;
            if seen > tail {
                lo = self.lo + k as f32 * w;
                break;
            }
        }
        seen = 0;
        let mut hi = self.hi;
        for (k, &b) in self.bins.iter().enumerate().rev() {
            seen += b;
            if seen > tail {
                hi = self.lo + (k + 1) as f32 * w;
                break;
            }
        }
        (lo, hi)
    }

    /// The threshold over |x| whose clipped and quantized histogram diverges least from the
    /// histogram (KL), as a range within what was seen. Each threshold `t` is quantized to the
    /// steps the activation's grid has between 0 and `t`: 255 steps span the clipped range
    /// (`[max(min, -t), min(max, t)]`, zero point where it falls), so all 255 where the values
    /// keep one sign (after a Relu), about half where they spread evenly over both. TensorRT's
    /// method counts 128 whatever the range, for its symmetric grid: on a one-signed value
    /// that takes the grid for twice as coarse as it is, and clips hard.
    fn entropy_range(&self, seen: &ValueRange) -> (f32, f32) {
        let width = f64::from(self.width());
        let levels = |i: usize| {
            let t = i as f64 * width;
            let pos = f64::from(seen.max).clamp(0.0, t);
            let neg = f64::from(-seen.min).clamp(0.0, t);
            (255.0 * t / (pos + neg)).round() as usize
        };
        let total: u64 = self.bins.iter().sum();
        if total == 0 || self.hi <= 0.0 {
            return (seen.min, seen.max);
        }
        // the first bin holds every exact zero (half of a Relu's outputs), which the grid keeps
        // exactly whatever the threshold: counted as they are, they outweigh the rest of the
        // divergence, and the threshold comes out where it keeps the few bins next to zero. As
        // pytorch-quantization does, the first bin counts as its neighbour (for a value of both
        // signs it holds the values nearest zero, which every threshold keeps alike)
        let mut bins = self.bins.clone();
        bins[0] = bins[1];
        let mut best = (f64::INFINITY, BINS);
        for i in (128..=BINS).step_by(4) {
            let levels = levels(i);
            if !(1..=i).contains(&levels) {
                continue;
            }
            let mut p: Vec<f64> = bins[..i].iter().map(|&b| b as f64).collect();
            let outliers: u64 = bins[i..].iter().sum();
            p[i - 1] += outliers as f64;
            // the reference quantized to `levels` levels, spread back over its nonzero bins
            let mut q = vec![0f64; i];
            for level in 0..levels {
                let (start, end) = (level * i / levels, (level + 1) * i / levels);
                let bins = &bins[start..end];
                let sum: f64 = bins.iter().map(|&b| b as f64).sum();
                let nonzero = bins.iter().filter(|&&b| b > 0).count();
                if nonzero > 0 {
                    for (q, &b) in q[start..end].iter_mut().zip(bins) {
                        if b > 0 {
                            *q = sum / nonzero as f64;
                        }
                    }
                }
            }
            let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
            if sq == 0.0 {
                continue;
            }
            let kl: f64 = p
                .iter()
                .zip(&q)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, q)| {
                    let (p, q) = (p / sp, (q / sq).max(1e-12));
                    p * (p / q).ln()
                })
                .sum();
            if kl < best.0 {
                best = (kl, i);
            }
        }
        let t = best.1 as f32 * self.width();
        (seen.min.max(-t), seen.max.min(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[f32], absolute: bool) -> (Histogram, ValueRange) {
        let r = ValueRange {
            min: values.iter().copied().fold(f32::INFINITY, f32::min),
            max: values.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            non_finite: false,
        };
        let mut h = Histogram::over(&r, absolute);
        h.add(values.iter().copied());
        (h, r)
    }

    #[test]
    fn percentile_drops_a_rare_outlier_minmax_would_keep() {
        let mut v: Vec<f32> = (0..100_000).map(|k| (k % 1000) as f32 / 1000.0).collect();
        v.push(100.0);
        let (h, _) = histogram(&v, false);
        let (lo, hi) = h.percentile_range(99.99);
        assert!(lo <= 0.001 && hi < 1.1, "({lo}, {hi})");
        let (lo, hi) = h.percentile_range(100.0);
        assert_eq!((lo, hi), (0.0, 100.0));
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // a bell of |x| < 3 and a handful of values out to 50
        let mut v: Vec<f32> = (0..50_000)
            .map(|k| ((k % 601) as f32 - 300.0) / 100.0)
            .collect();
        v.extend([40.0, -45.0, 50.0]);
        let (h, r) = histogram(&v, true);
        let (lo, hi) = h.entropy_range(&r);
        assert!((2.5..10.0).contains(&hi), "({lo}, {hi})");
        assert!((-10.0..=-2.5).contains(&lo) && lo > -10.0, "({lo}, {hi})");
    }

    /// A Relu's outputs: most exact zeros, the rest a slope falling to 6, and a few outliers
    /// to 40. The grid over [0, t] has 255 steps; the zeros it keeps exactly whatever t is.
    /// The threshold keeps the slope whole (counted as 128 steps, with the zeros as they are,
    /// it clipped at 4.9).
    #[test]
    fn entropy_keeps_the_body_of_a_one_signed_value() {
        let mut v = vec![0f32; 60_000];
        for k in 0..300usize {
            // k / 50 = 0.0 .. 6.0, 300 - k times each
            v.extend(std::iter::repeat_n(k as f32 / 50.0, 300 - k));
        }
        v.extend([25.0, 30.0, 40.0]);
        let (h, r) = histogram(&v, true);
        let (lo, hi) = h.entropy_range(&r);
        assert_eq!(lo, 0.0);
        assert!((5.8..12.0).contains(&hi), "({lo}, {hi})");
    }

    #[test]
    fn methods_parse() {
        assert_eq!(Method::parse("percentile"), Ok(Method::Percentile(99.999)));
        assert_eq!(
            Method::parse("percentile:99.9"),
            Ok(Method::Percentile(99.9))
        );
        assert!(Method::parse("percentile:12").is_err());
        assert!(Method::parse("kl").is_err());
    }

    #[test]
    fn histograms_filled_over_several_runs_and_chunks_give_the_ranges_of_one() {
        use super::super::ranges::Exposure;
        use crate::graph::builder::ModelBuilder;
        use crate::onnx::DataType;
        use crate::run::NamedTensor;
        use tract_onnx::prelude::{Tensor, tract_ndarray};
        let proto = ModelBuilder::new(17)
            .input("x", DataType::Float, &["64"])
            .node("Relu", &["x"], &["r"])
            .node("Sin", &["x"], &["s"])
            .node("Add", &["r", "s"], &["y"])
            .output("y", DataType::Float, &["64"])
            .build();
        let mut model = Model::from_proto(proto, ".".into());
        let values: Vec<String> = ["r", "s", "y"].map(String::from).to_vec();
        let sample = |k: f32| {
            vec![NamedTensor {
                name: "x".into(),
                tensor: Tensor::from(tract_ndarray::Array1::from_iter(
                    (0..64).map(|i| (i as f32 - 20.0) * k),
                )),
            }]
        };
        let (a, b, c) = (sample(0.1), sample(-0.37), sample(0.05));
        let samples = vec![a.as_slice(), b.as_slice(), c.as_slice()];
        let chunked = crate::run::OneByOne {
            samples: samples.clone(),
            broken: None,
        };
        // 256 bytes a value: one value a run
        let split = Exposure::at(&mut model, &[&samples])
            .unwrap()
            .with_budget(256);
        assert_eq!(split.runs(&values, 1).len(), 3);
        let ranges = |method, samples: &dyn crate::run::SampleChunks, exposure: &Exposure| {
            activation_ranges(
                &model,
                &values,
                method,
                Runs {
                    samples,
                    engine: EngineChoice::Auto,
                    exposure,
                },
            )
            .unwrap()
            .1
        };
        let span = ranges(Method::MinMax, &samples, &split);
        assert_eq!(span, ranges(Method::MinMax, &chunked, &split));
        for method in [Method::Percentile(90.0), Method::Entropy] {
            let one = ranges(method, &samples, &Exposure::unbounded());
            assert_eq!(one, ranges(method, &samples, &split), "{method:?}");
            assert_eq!(one, ranges(method, &chunked, &split), "{method:?}");
            assert_eq!(one, ranges(method, &chunked, &Exposure::unbounded()));
            assert_eq!(one.len(), 3);
        }
        // the histograms were filled: the 90th percentile clips the span seen
        let clipped = ranges(Method::Percentile(90.0), &samples, &split);
        assert!(clipped["y"].1 < span["y"].1 && clipped["y"].0 > span["y"].0);
    }
}
