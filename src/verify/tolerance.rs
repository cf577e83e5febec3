//! Tolerances: an absolute and a relative bound per output (numpy's `allclose` rule,
//! `|candidate - reference| <= atol + rtol * |reference|`), where the absolute bound may grow with
//! the output's own scale (`atol + scaled_atol * max |reference|` of that sample), and presets for
//! what a transformation warrants. Every preset's numbers, and the measurement behind `fp32`'s,
//! are documented in `docs/verify.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A named set of bounds for a kind of transformation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: &'static str,
    pub atol: f64,
    pub rtol: f64,
    /// Added to `atol`, times the largest magnitude of the output in that sample: float noise
    /// is relative to the values a computation carries, not to each element.
    pub scaled_atol: f64,
    /// Where set, an output also needs at least this cosine similarity to the reference: the
    /// check that matters for quantized models, whose element errors are large but unbiased.
    pub min_cosine: Option<f64>,
    /// The fraction of an output's elements that may exceed the elementwise bound when the
    /// cosine holds: quantized outputs drift most where a steep function (a sigmoid's transition,
    /// a softmax's argmax) amplifies a rounding step, a few elements in a thousand.
    pub max_outliers: f64,
}

pub const PRESETS: &[Preset] = &[
    // bit-for-bit: what a lossless rewrite that keeps every float operation must give
    Preset {
        name: "exact",
        atol: 0.0,
        rtol: 0.0,
        scaled_atol: 0.0,
        min_cosine: None,
        max_outliers: 0.0,
    },
    // float32 reassociation and fusion (BN folding, Gemm fusion, another runtime). The scaled
    // term is twice the largest honest disagreement measured between engines and between
    // onnxruntime's optimization levels relative to the output's scale (1.45e-4, ppocr_v4_det;
    // tools/measure_engine_noise.py); a weight perturbed by half its spread moves outputs by
    // 1e-2 of their scale and more.
    Preset {
        name: "fp32",
        atol: 1e-5,
        rtol: 1e-3,
        scaled_atol: 3e-4,
        min_cosine: None,
        max_outliers: 0.0,
    },
    // float16 weights or activations: ~3 significant digits per operation, compounding with
    // depth; elements near zero lose all relative precision, so the bound is relative to the
    // output's scale (1% of its largest magnitude) and the direction must hold (cosine)
    Preset {
        name: "fp16",
        atol: 1e-3,
        rtol: 1e-2,
        scaled_atol: 1e-2,
        min_cosine: Some(0.999),
        max_outliers: 0.01,
    },
    // int8 quantization: errors of a few quantization steps of each tensor's range, which
    // compound through the layers; so the bound follows the output's scale (10% of its
    // largest magnitude) and the direction must hold (cosine)
    Preset {
        name: "int8",
        atol: 5e-2,
        rtol: 1e-1,
        scaled_atol: 1e-1,
        min_cosine: Some(0.99),
        max_outliers: 0.01,
    },
];

pub fn preset(name: &str) -> Option<Preset> {
    PRESETS.iter().copied().find(|p| p.name == name)
}

/// A preset by name, or an error listing the presets (a command-line value parser).
pub fn parse_preset(name: &str) -> Result<Preset, String> {
    preset(name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown preset '{name}' (presets: {})", names.join(", "))
    })
}

/// Bounds per output: a default and overrides by output name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tolerance {
    pub preset: String,
    pub atol: f64,
    pub rtol: f64,
    pub scaled_atol: f64,
    pub min_cosine: Option<f64>,
    pub max_outliers: f64,
    pub atol_by_output: BTreeMap<String, f64>,
    pub rtol_by_output: BTreeMap<String, f64>,
    /// Outputs judged by their cosine alone, at least this one: those a quantization's accuracy
    /// target gave a target of their own (their element errors are still reported).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cosine_by_output: BTreeMap<String, f64>,
}

impl Tolerance {
    pub fn from_preset(p: Preset) -> Tolerance {
        Tolerance {
            preset: p.name.to_string(),
            atol: p.atol,
            rtol: p.rtol,
            scaled_atol: p.scaled_atol,
            min_cosine: p.min_cosine,
            max_outliers: p.max_outliers,
            atol_by_output: BTreeMap::new(),
            rtol_by_output: BTreeMap::new(),
            cosine_by_output: BTreeMap::new(),
        }
    }

    /// Applies `--atol` / `--rtol` settings: `X` sets the default, `NAME=X` one output.
    pub fn apply(&mut self, atol: &[String], rtol: &[String]) -> Result<(), String> {
        let mut scaled = None;
        for (settings, default, by_output, flag) in [
            (atol, &mut self.atol, &mut self.atol_by_output, "--atol"),
            (rtol, &mut self.rtol, &mut self.rtol_by_output, "--rtol"),
        ] {
            for s in settings {
                let (name, value) = match s.rsplit_once('=') {
                    Some((n, v)) => (Some(n), v),
                    None => (None, s.as_str()),
                };
                let v: f64 = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("{flag} {s}: expected a non-negative number"))?;
                match name {
                    Some(n) => {
                        by_output.insert(n.to_string(), v);
                    }
                    None => {
                        *default = v;
                        if flag == "--atol" {
                            // the given bound replaces the preset's, scaled term included
                            scaled = Some(0.0);
                        }
                    }
                }
            }
        }
        if let Some(v) = scaled {
            self.scaled_atol = v;
        }
        Ok(())
    }

    pub fn atol_for(&self, output: &str) -> f64 {
        self.atol_by_output
            .get(output)
            .copied()
            .unwrap_or(self.atol)
    }

    pub fn rtol_for(&self, output: &str) -> f64 {
        self.rtol_by_output
            .get(output)
            .copied()
            .unwrap_or(self.rtol)
    }

    /// The least cosine `output` needs, and the fraction of its elements that may exceed their
    /// bound: an output judged by its cosine alone may exceed it everywhere.
    pub fn cosine_for(&self, output: &str) -> (Option<f64>, f64) {
        match self.cosine_by_output.get(output) {
            Some(c) => (Some(*c), 1.0),
            None => (self.min_cosine, self.max_outliers),
        }
    }

    /// Output names the settings name, for checking them against the model.
    pub fn named_outputs(&self) -> impl Iterator<Item = &String> {
        self.atol_by_output
            .keys()
            .chain(self.rtol_by_output.keys())
            .chain(self.cosine_by_output.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_defaults_per_output() {
        let mut t = Tolerance::from_preset(preset("fp32").unwrap());
        t.apply(&["1e-4".into(), "logits=1e-2".into()], &["0".into()])
            .unwrap();
        assert_eq!(t.atol_for("logits"), 1e-2);
        assert_eq!(t.atol_for("other"), 1e-4);
        assert_eq!(t.rtol_for("other"), 0.0);
        assert!(t.apply(&["-1".into()], &[]).is_err());
        assert!(t.apply(&["x=abc".into()], &[]).is_err());
    }

    #[test]
    fn an_output_judged_by_cosine_alone_may_exceed_its_element_bounds() {
        use crate::run::NamedTensor;
        use tract_onnx::prelude::Tensor;
        let sample = |v: Vec<f32>| {
            vec![vec![NamedTensor {
                name: "hidden".into(),
                tensor: Tensor::from_shape(&[v.len()], &v).unwrap(),
            }]]
        };
        // every tenth element far out of bounds; the direction kept at cosine ~0.98
        let want: Vec<f32> = (0..1000).map(|k| ((k as f32) * 0.7).sin()).collect();
        let got: Vec<f32> = want
            .iter()
            .enumerate()
            .map(|(k, x)| if k % 10 == 0 { x + 0.4 } else { *x })
            .collect();
        let (want, got) = (sample(want), sample(got));
        let mut t = Tolerance::from_preset(preset("int8").unwrap());
        assert!(!crate::verify::outputs_agree(&t, &want, &got));
        t.cosine_by_output.insert("hidden".into(), 0.95);
        assert_eq!(t.cosine_for("hidden"), (Some(0.95), 1.0));
        assert_eq!(t.cosine_for("other"), (Some(0.99), 0.01));
        assert!(crate::verify::outputs_agree(&t, &want, &got));
        t.cosine_by_output.insert("hidden".into(), 0.999);
        assert!(!crate::verify::outputs_agree(&t, &want, &got));
        assert!(t.named_outputs().any(|o| o == "hidden"));
    }
}
