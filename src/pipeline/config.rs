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
}

/// Int8 quantization modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Int8 {
    Dynamic,
    Static,
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
            calibration: Vec::new(),
            calibration_method: None,
            accuracy_target: None,
            int8_ops: Vec::new(),
            exclude_nodes: Vec::new(),
            exclude_op_types: Vec::new(),
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

    /// Checks what the types alone cannot.
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            line: line_of_key(text, key),
            message,
            hint: None,
        };
        if let Err(e) = semver::Version::parse(&self.model.version) {
            return Err(error(
                "version",
                format!(
                    "[model] version '{}' is not a semantic version: {e}",
                    self.model.version
                ),
            ));
        }
        if self.model.name.is_empty() || self.model.name.contains(['/', '\\']) {
            return Err(error(
                "name",
                format!(
                    "[model] name '{}' must be non-empty, without slashes",
                    self.model.name
                ),
            ));
        }
        if self.optimize.fp16 && self.optimize.int8.is_some() {
            return Err(error(
                "int8",
                "[optimize] fp16 and int8 exclude each other".into(),
            ));
        }
        if self.optimize.fp16_io && !self.optimize.fp16 {
            return Err(error(
                "fp16_io",
                "[optimize] fp16_io needs fp16 = true".into(),
            ));
        }
        if self.optimize.level > 2 {
            return Err(error(
                "level",
                format!("[optimize] level {}: 0, 1 or 2", self.optimize.level),
            ));
        }
        if let Some(level) = self.pack.level
            && !(1..=22).contains(&level)
        {
            return Err(error("level", format!("[pack] level {level}: 1 to 22")));
        }
        Ok(())
    }
}

/// The 1-based line of the first `key =` in `text`.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// A TOML or schema error with its line, and for an unknown key the nearest valid one.
fn located(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let section = e.span().and_then(|s| {
        text[..s.start.min(text.len())]
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
        let place = section.map(|s| format!(" in {s}")).unwrap_or_default();
        return ConfigError {
            file: path.to_path_buf(),
            line,
            message: format!("unknown key '{key}'{place}"),
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
        assert!(e.message.contains("'packk'"), "{e}");
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
}
