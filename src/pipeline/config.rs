//! `mdeploy.toml`: what `mdeploy build` does for a model repository. Unknown keys are errors
//! naming the file, the line, the key and the nearest valid key; paths are relative to the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::nearest;

/// The file `mdeploy build DIR` reads.
pub const CONFIG_FILE: &str = "mdeploy.toml";

/// A configuration problem, located in its file (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
    /// The likely fix (`did you mean 'level'?`).
    pub hint: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub optimize: OptimizeSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub pack: PackSection,
}

/// `[model]`: what the model is and where its source is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    /// Semantic version of this build of the model.
    pub version: String,
    /// The ONNX file (its external data comes along).
    pub source: PathBuf,
    /// Fixed dims, as `--input-shape`: `["input=1,3,224,224"]` or `["batch=1"]`.
    #[serde(default)]
    pub input_shapes: Vec<String>,
    /// Make initializers also listed as graph inputs constants, as `convert
    /// --freeze-initializers`.
    #[serde(default)]
    pub freeze_initializers: bool,
}

/// Int8 quantization modes (`optimize --int8`, a build's `int8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Int8 {
    Dynamic,
    Static,
}

/// Int4 quantization modes (`optimize --int4`, a build's `int4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Int4 {
    WeightOnly,
}

/// `[optimize]`: as the `optimize` command's flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeSection {
    #[serde(default = "default_level")]
    pub level: u8,
    #[serde(default)]
    pub passes: Vec<String>,
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default)]
    pub fp16: bool,
    #[serde(default)]
    pub fp16_io: bool,
    pub int8: Option<Int8>,
    pub int4: Option<Int4>,
    /// Int4: rows per block (a power of two from 16 to 256).
    pub int4_block_size: Option<usize>,
    /// Calibration data (test_data_set_N/ folders, .npz, .npy, .pb).
    #[serde(default)]
    pub calibration: Vec<PathBuf>,
    pub calibration_method: Option<String>,
    /// `cos=X,top1=Y`.
    pub accuracy_target: Option<String>,
    #[serde(default)]
    pub int8_ops: Vec<String>,
    #[serde(default)]
    pub exclude_nodes: Vec<String>,
    #[serde(default)]
    pub exclude_op_types: Vec<String>,
    /// Static int8 activations: `uint8` or `int8`.
    pub int8_activations: Option<String>,
    /// Static int8 placement: `fast` or `all`.
    pub int8_placement: Option<String>,
    /// Int8 weight range: `full` or `reduced`.
    pub int8_weight_range: Option<String>,
    pub prune: Option<f64>,
    pub prune_channels: Option<f64>,
    pub fold_size_limit: Option<usize>,
    #[serde(default)]
    pub external_data: bool,
}

fn default_level() -> u8 {
    2
}

impl Default for OptimizeSection {
    fn default() -> Self {
        OptimizeSection {
            level: default_level(),
            passes: Vec::new(),
            skip: Vec::new(),
            fp16: false,
            fp16_io: false,
            int8: None,
            int4: None,
            int4_block_size: None,
            calibration: Vec::new(),
            calibration_method: None,
            accuracy_target: None,
            int8_ops: Vec::new(),
            exclude_nodes: Vec::new(),
            exclude_op_types: Vec::new(),
            int8_activations: None,
            int8_placement: None,
            int8_weight_range: None,
            prune: None,
            prune_channels: None,
            fold_size_limit: None,
            external_data: false,
        }
    }
}

/// A tolerance for every output (`1e-5`) or per output (`{ logits = 1e-3 }`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToleranceValue {
    All(f64),
    PerOutput(BTreeMap<String, f64>),
}

impl ToleranceValue {
    /// The `--atol`/`--rtol` spellings of this value.
    pub fn as_flags(&self) -> Vec<String> {
        match self {
            ToleranceValue::All(v) => vec![v.to_string()],
            ToleranceValue::PerOutput(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }
}

/// `[verify]`: how the optimized model is proven against the converted source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySection {
    /// Data to verify on; default: `samples` seeded random samples.
    #[serde(default)]
    pub data: Vec<PathBuf>,
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
    /// Preset: exact, fp32, fp16, int8 (default: what the optimization warrants).
    pub tolerance: Option<String>,
    pub atol: Option<ToleranceValue>,
    pub rtol: Option<ToleranceValue>,
    /// tract, ort, auto or tract,ort.
    #[serde(default = "default_engine")]
    pub engine: String,
}

fn default_samples() -> usize {
    3
}

fn default_engine() -> String {
    "auto".into()
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            data: Vec::new(),
            samples: default_samples(),
            seed: 0,
            tolerance: None,
            atol: None,
            rtol: None,
            engine: default_engine(),
        }
    }
}

/// `[pack]`: the archive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSection {
    /// The archive to write (default: `<build dir>/<name>-<version>.mdpkg`).
    pub output: Option<PathBuf>,
    /// Private key (PEM) to sign with; the `MDEPLOY_KEY` environment variable (a path or the
    /// PEM itself) overrides it.
    pub key: Option<PathBuf>,
    /// Make the key pair (`mdeploy.key`, `mdeploy.pub` beside `key`) when it does not exist.
    #[serde(default)]
    pub create_key: bool,
    /// Write an unsigned archive when no key is configured (otherwise that is an error).
    #[serde(default)]
    pub unsigned: bool,
    /// Extra files to ship (labels, preprocessing config).
    #[serde(default)]
    pub include: Vec<PathBuf>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// zstd level, 1 to 22 (default 3).
    pub level: Option<i32>,
}

impl BuildConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: e.to_string(),
            hint: (e.kind() == std::io::ErrorKind::NotFound).then(|| {
                format!("a model repository has an {CONFIG_FILE}; see examples/ and docs/build.md")
            }),
        })?;
        Self::parse(&text, path)
    }

    /// Parses a configuration; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: BuildConfig = toml::from_str(text).map_err(|e| located(text, path, &e))?;
        config.check(text, path)?;
        Ok(config)
    }

    /// Checks what the types alone cannot, so a bad value stops the build before any stage runs.
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let error = |section: &str, key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            line: line_of_key(text, section, key),
            message: format!("[{section}] {key}: {message}"),
            hint: None,
        };
        if let Err(e) = semver::Version::parse(&self.model.version) {
            return Err(error(
                "model",
                "version",
                format!("'{}' is not a semantic version: {e}", self.model.version),
            ));
        }
        if self.model.name.is_empty() || self.model.name.contains(['/', '\\']) {
            return Err(error(
                "model",
                "name",
                format!("'{}' must be non-empty, without slashes", self.model.name),
            ));
        }
        crate::run::InputShapes::parse(&self.model.input_shapes)
            .map_err(|e| error("model", "input_shapes", e))?;
        let o = &self.optimize;
        if o.fp16 && o.int8.is_some() {
            return Err(error(
                "optimize",
                "int8",
                "fp16 and int8 exclude each other".into(),
            ));
        }
        if o.int4.is_some() && (o.fp16 || o.int8.is_some()) {
            return Err(error(
                "optimize",
                "int4",
                "int4 excludes fp16 and int8".into(),
            ));
        }
        if let Some(b) = o.int4_block_size {
            if o.int4.is_none() {
                return Err(error("optimize", "int4_block_size", "needs int4".into()));
            }
            if !crate::quantize::int4::valid_block_size(b) {
                return Err(error(
                    "optimize",
                    "int4_block_size",
                    format!("{b}: a power of two from 16 to 256"),
                ));
            }
        }
        if o.fp16_io && !o.fp16 {
            return Err(error("optimize", "fp16_io", "needs fp16 = true".into()));
        }
        if o.level > 2 {
            return Err(error(
                "optimize",
                "level",
                format!("{}: 0, 1 or 2", o.level),
            ));
        }
        let quantizing = o.fp16 || o.int8.is_some() || o.int4.is_some();
        for (key, given) in [
            ("calibration", !o.calibration.is_empty()),
            ("calibration_method", o.calibration_method.is_some()),
            ("accuracy_target", o.accuracy_target.is_some()),
            ("int8_ops", !o.int8_ops.is_empty()),
            ("exclude_nodes", !o.exclude_nodes.is_empty()),
            ("exclude_op_types", !o.exclude_op_types.is_empty()),
            ("int8_activations", o.int8_activations.is_some()),
            ("int8_placement", o.int8_placement.is_some()),
            ("int8_weight_range", o.int8_weight_range.is_some()),
        ] {
            if given && !quantizing {
                return Err(error(
                    "optimize",
                    key,
                    "applies to quantization (fp16 = true, int8 or int4)".into(),
                ));
            }
        }
        if o.int8 == Some(Int8::Static) && o.calibration.is_empty() && self.verify.data.is_empty() {
            return Err(error(
                "optimize",
                "int8",
                "static int8 needs calibration data: calibration = [...] (or [verify] data)".into(),
            ));
        }
        for (key, v) in [("prune", o.prune), ("prune_channels", o.prune_channels)] {
            if v.is_some_and(|v| !(0.0..1.0).contains(&v)) {
                return Err(error("optimize", key, "a fraction in [0, 1)".into()));
            }
        }
        if let Some(m) = &o.calibration_method {
            crate::quantize::calibrate::Method::parse(m)
                .map_err(|e| error("optimize", "calibration_method", e.to_string()))?;
        }
        type Check = fn(&str) -> Result<(), String>;
        let static_only: [(&str, &Option<String>, Check); 2] = [
            ("int8_activations", &o.int8_activations, |v| {
                crate::quantize::qdq::ActivationType::parse(v).map(drop)
            }),
            ("int8_placement", &o.int8_placement, |v| {
                crate::quantize::placement::Placement::parse(v).map(drop)
            }),
        ];
        for (key, value, parse) in static_only {
            if let Some(v) = value {
                parse(v).map_err(|e| error("optimize", key, e))?;
                if o.int8 != Some(Int8::Static) {
                    return Err(error(
                        "optimize",
                        key,
                        "applies to int8 = \"static\"".into(),
                    ));
                }
            }
        }
        if let Some(r) = &o.int8_weight_range {
            crate::quantize::weights::WeightRange::parse(r)
                .map_err(|e| error("optimize", "int8_weight_range", e))?;
            if o.int8.is_none() {
                return Err(error(
                    "optimize",
                    "int8_weight_range",
                    "applies to int8".into(),
                ));
            }
        }
        if let Some(t) = &o.accuracy_target {
            crate::quantize::AccuracyTarget::parse(t)
                .map_err(|e| error("optimize", "accuracy_target", e.to_string()))?;
        }
        let known: Vec<&str> = crate::passes::registry().iter().map(|p| p.name()).collect();
        for (key, names) in [("passes", &o.passes), ("skip", &o.skip)] {
            for n in names {
                if !known.contains(&n.as_str()) {
                    let mut e = error("optimize", key, format!("no pass '{n}'"));
                    e.hint = Some(match nearest(n, known.iter().copied()) {
                        Some(k) => format!("did you mean '{k}'? (see docs/passes.md)"),
                        None => "see docs/passes.md for the passes".into(),
                    });
                    return Err(e);
                }
            }
        }
        let v = &self.verify;
        if v.samples == 0 && v.data.is_empty() {
            return Err(error("verify", "samples", "at least 1".into()));
        }
        let data = super::DataOptions {
            engine: v.engine.clone(),
            ..Default::default()
        };
        data.engines()
            .map_err(|e| error("verify", "engine", e.to_string()))?;
        let preset = match &v.tolerance {
            Some(name) => crate::verify::parse_preset(name)
                .map_err(|e| error("verify", "tolerance", e.to_string()))?,
            None => crate::verify::preset("fp32").expect("a preset"),
        };
        let flags =
            |t: &Option<ToleranceValue>| t.as_ref().map(|t| t.as_flags()).unwrap_or_default();
        crate::verify::Tolerance::from_preset(preset)
            .apply(&flags(&v.atol), &flags(&v.rtol))
            .map_err(|e| error("verify", if v.atol.is_some() { "atol" } else { "rtol" }, e))?;
        if let Some(level) = self.pack.level
            && !(1..=22).contains(&level)
        {
            return Err(error("pack", "level", format!("{level}: 1 to 22")));
        }
        Ok(())
    }
}

/// The 1-based line of `key =` in `[section]` of `text` (or of the section header, when the key
/// is not written there).
fn line_of_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('[') {
            in_section = l.trim_end().starts_with(&header);
            if in_section {
                header_line = Some(i + 1);
            }
            continue;
        }
        if in_section
            && l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    header_line
}

/// A TOML or schema error with its line, and for an unknown key the nearest valid one.
fn located(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let before = |start: usize| text.get(..start.min(text.len())).unwrap_or(text);
    let line = e.span().map(|s| before(s.start).matches('\n').count() + 1);
    // the section the error is in: the last header on a line before the error's line
    let section = e.span().and_then(|s| {
        let head = before(s.start);
        let complete = &head[..head.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(str::to_string)
    });
    let message = e.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once('`')
    {
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        // a table header on the error's line: the unknown key is a section name
        let at_header = e.span().is_some_and(|s| {
            let head = before(s.start);
            head[head.rfind('\n').map_or(0, |i| i + 1)..]
                .trim_start()
                .starts_with('[')
        });
        let message = match section {
            _ if at_header => format!("unknown section '[{key}]'"),
            Some(s) => format!("unknown key '{key}' in {s}"),
            None => format!("unknown key '{key}'"),
        };
        return ConfigError {
            file: path.to_path_buf(),
            line,
            message,
            hint: Some(match nearest(key, valid.iter().copied()) {
                Some(n) => format!("did you mean '{n}'? (valid keys: {})", valid.join(", ")),
                None => format!("valid keys: {}", valid.join(", ")),
            }),
        };
    }
    ConfigError {
        file: path.to_path_buf(),
        line,
        message,
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[model]
name = "rnet"
version = "1.0.0"
source = "model.onnx"

[optimize]
level = 2

[verify]
data = ["test_data_set_0"]
atol = { dense_2 = 1e-4 }

[pack]
key = "keys/mdeploy.key"
metadata = { task = "face" }
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = BuildConfig::parse(GOOD, Path::new("mdeploy.toml")).unwrap();
        assert_eq!(c.model.name, "rnet");
        assert_eq!(c.verify.samples, 3);
        assert_eq!(c.verify.engine, "auto");
        assert_eq!(
            c.verify.atol.unwrap().as_flags(),
            vec!["dense_2=0.0001".to_string()]
        );
        assert_eq!(c.pack.metadata["task"], "face");
    }

    #[test]
    fn an_unknown_key_names_file_line_section_and_nearest_key() {
        let text = GOOD.replace("level = 2", "levle = 2");
        let e = BuildConfig::parse(&text, Path::new("repo/mdeploy.toml")).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(
            e.message.contains("'levle'") && e.message.contains("[optimize]"),
            "{e}"
        );
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .starts_with("did you mean 'level'?"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("repo/mdeploy.toml:8: "), "{e}");
    }

    #[test]
    fn an_unknown_section_and_bad_values_are_located() {
        let e = BuildConfig::parse(&format!("{GOOD}\n[packk]\nx = 1\n"), Path::new("m.toml"))
            .unwrap_err();
        assert_eq!(e.message, "unknown section '[packk]'");
        assert!(e.hint.unwrap().contains("did you mean 'pack'?"));
        let e = BuildConfig::parse(&GOOD.replace("1.0.0", "one"), Path::new("m.toml")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let e = BuildConfig::parse(
            &GOOD.replace("level = 2", "level = \"two\""),
            Path::new("m.toml"),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
    }

    #[test]
    fn int4_takes_a_kernel_block_size_and_no_other_quantization() {
        let with = |keys: &str| GOOD.replace("level = 2", &format!("level = 2\n{keys}"));
        let c = BuildConfig::parse(
            &with("int4 = \"weight-only\"\nint4_block_size = 64"),
            Path::new("m.toml"),
        )
        .unwrap();
        assert_eq!(c.optimize.int4, Some(Int4::WeightOnly));
        for (keys, key) in [
            (
                "int4 = \"weight-only\"\nint4_block_size = 48",
                "int4_block_size",
            ),
            ("int4_block_size = 32", "int4_block_size"),
            ("int4 = \"weight-only\"\nint8 = \"dynamic\"", "int4"),
        ] {
            let e = BuildConfig::parse(&with(keys), Path::new("m.toml")).unwrap_err();
            assert!(e.message.contains(key), "{keys}: {e}");
        }
    }
}
