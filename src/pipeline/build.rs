//! `mdeploy build`: a model repository's `mdeploy.toml` run through convert, optimize (with its
//! quantization), verify and pack, each stage's output and report in a build directory.
//!
//! A stage is skipped when its key is the one recorded when it last ran and its outputs still
//! have the digests recorded then. The key is the SHA-256 of the stage's options, the digests of
//! everything it reads (files and data directories by content, never by timestamp), and the
//! mdeploy version; so a second build with nothing changed touches no file and `make` stays
//! quiet.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use p256::ecdsa::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::config::{BuildConfig, CONFIG_FILE};
use super::data::DataOptions;
use super::optimize::{OptimizeDocument, OptimizeRequest, QuantizeMode, QuantizeOptions};
use super::{ConvertRequest, ConvertTarget, VerifyRequest, write_report};
use crate::error::{CheckFailed, UsageError};
use crate::pack::{PackOptions, keys};
use crate::progress::Progress;
use crate::verify::{Status, VerifyReport};

/// The state file in the build directory.
const STATE_FILE: &str = ".mdeploy-build.json";
const STATE_FORMAT: &str = "mdeploy.build-state/1";
/// The stages, in the order they run.
const STAGES: [&str; 4] = ["convert", "optimize", "verify", "pack"];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The repository directory or its `mdeploy.toml` (or another `.toml`).
    pub target: PathBuf,
    /// Where stage outputs go (default: `build/` beside the configuration).
    pub out_dir: Option<PathBuf>,
    /// Print the plan; run nothing.
    pub dry_run: bool,
    /// Run every stage even when up to date.
    pub force: bool,
}

/// How a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    UpToDate,
    Ran,
    /// Dry run: the stage would run.
    WouldRun,
}

/// One stage of a build.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub stage: &'static str,
    pub state: StageState,
    /// Why it ran or would run.
    pub reason: Option<String>,
    pub seconds: f64,
    pub outputs: Vec<PathBuf>,
}

/// What a build did (`mdeploy.build/1`).
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub format: &'static str,
    pub name: String,
    pub version: String,
    pub config: PathBuf,
    pub out_dir: PathBuf,
    pub archive: PathBuf,
    pub signed: bool,
    /// The public key that verifies the archive, when it sits beside the private key.
    pub public_key: Option<PathBuf>,
    /// The verification data (for the "check it" hint).
    pub verify_data: Vec<PathBuf>,
    pub stages: Vec<StageResult>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    format: String,
    stages: BTreeMap<String, StageRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StageRecord {
    key: String,
    /// Output path (as the build resolved it) -> SHA-256.
    outputs: BTreeMap<String, String>,
}

/// The configuration file a target names.
pub fn config_path(target: &Path) -> PathBuf {
    if target.is_dir() {
        target.join(CONFIG_FILE)
    } else {
        target.to_path_buf()
    }
}

/// Runs (or with `dry_run`, plans) the build.
pub fn build(req: &BuildRequest, progress: &dyn Progress) -> anyhow::Result<BuildSummary> {
    let config_file = config_path(&req.target);
    let config = BuildConfig::load(&config_file)?;
    let root = config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let out = req.out_dir.clone().unwrap_or_else(|| root.join("build"));
    let mut b = Builder {
        config,
        root,
        out,
        config_file,
        dry_run: req.dry_run,
        force: req.force,
        state: State::default(),
        pending: None,
        stages: Vec::new(),
        progress,
    };
    b.state = b.read_state();
    b.run()
}

struct Builder<'a> {
    config: BuildConfig,
    root: PathBuf,
    out: PathBuf,
    config_file: PathBuf,
    dry_run: bool,
    force: bool,
    state: State,
    /// In a dry run, the first stage that would run: what follows depends on its new outputs.
    pending: Option<&'static str>,
    stages: Vec<StageResult>,
    progress: &'a dyn Progress,
}

impl Builder<'_> {
    fn path(&self, p: &Path) -> PathBuf {
        self.root.join(p)
    }

    /// A path as the state file and stage keys name it: relative to the repository, so a build
    /// from another working directory finds the same stages up to date.
    fn relative(&self, p: &Path) -> String {
        match p.strip_prefix(&self.root) {
            Ok(rel) => rel.to_string_lossy().replace('\\', "/"),
            // outside the repository (a build directory elsewhere): absolute
            Err(_) => std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned(),
        }
    }

    fn read_state(&self) -> State {
        std::fs::read(self.out.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<State>(&b).ok())
            .filter(|s| s.format == STATE_FORMAT)
            .unwrap_or_default()
    }

    fn write_state(&mut self) -> anyhow::Result<()> {
        self.state.format = STATE_FORMAT.into();
        write_report(&self.out.join(STATE_FILE), &self.state)
    }

    fn run(mut self) -> anyhow::Result<BuildSummary> {
        let c = self.config.clone();
        let convert_dir = self.out.join("convert");
        let optimize_dir = self.out.join("optimize");
        let verify_dir = self.out.join("verify");
        let converted = convert_dir.join("model.onnx");
        let optimized = optimize_dir.join("model.onnx");
        let optimize_report = optimize_dir.join("report.json");
        let verify_report = verify_dir.join("report.json");
        let archive = match &c.pack.output {
            Some(p) => self.path(p),
            None => self
                .out
                .join(format!("{}-{}.mdpkg", c.model.name, c.model.version)),
        };
        let calibration: Vec<PathBuf> = c
            .optimize
            .calibration
            .iter()
            .map(|p| self.path(p))
            .collect();
        let given: Vec<PathBuf> = c.verify.data.iter().map(|p| self.path(p)).collect();
        let verify_data = super::data::verification_data(&given, &calibration);
        let source = self.path(&c.model.source);
        if !self.dry_run {
            for dir in [&convert_dir, &optimize_dir, &verify_dir] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
            }
        }
        let data = DataOptions {
            data: verify_data.clone(),
            samples: c.verify.samples,
            seed: c.verify.seed,
            input_shapes: Vec::new(),
            engine: c.verify.engine.clone(),
        };
        data.engines()?;

        // convert
        let mut settings = json!({"input_shapes": c.model.input_shapes, "external_data": c.optimize.external_data});
        if c.model.freeze_initializers {
            // only where set: the stages of builds without it keep their keys
            settings["freeze_initializers"] = json!(true);
        }
        let key = self.key("convert", settings, &[&source])?;
        let convert_req = ConvertRequest {
            input: source.clone(),
            output: converted.clone(),
            input_shapes: c.model.input_shapes.clone(),
            to: ConvertTarget::Onnx,
            external_data: c.optimize.external_data,
            opset: None,
            freeze_initializers: c.model.freeze_initializers,
        };
        let convert_report = convert_dir.join("report.json");
        self.stage("convert", key, &[&converted, &convert_report], |progress| {
            let doc = super::convert_file(&convert_req, progress)?;
            write_report(&convert_report, &doc)
        })?;

        // optimize (with quantization)
        let optimize_req = self.optimize_request(&converted, &optimized, &calibration, &data)?;
        let key = self.key(
            "optimize",
            // the samples quantization measures on when no calibration data is given
            json!({"optimize": c.optimize, "samples": c.verify.samples, "seed": c.verify.seed,
                   "engine": c.verify.engine}),
            &[
                &[&converted][..],
                &calibration.iter().collect::<Vec<_>>(),
                &verify_data.iter().collect::<Vec<_>>(),
            ]
            .concat(),
        )?;
        self.stage(
            "optimize",
            key,
            &[&optimized, &optimize_report],
            |progress| {
                let outcome = super::optimize_file(&optimize_req, progress)?;
                write_report(&optimize_report, &outcome.document)?;
                match outcome.failure {
                    Some(f) => Err(f.into()),
                    None => Ok(()),
                }
            },
        )?;

        // verify: the optimized model against the converted source
        let key = self.key(
            "verify",
            json!(c.verify),
            &[
                &[&converted, &optimized, &optimize_report][..],
                &verify_data.iter().collect::<Vec<_>>(),
            ]
            .concat(),
        )?;
        self.stage("verify", key, &[&verify_report], |progress| {
            let document = read_optimize_report(&optimize_report)?;
            let preset = c
                .verify
                .tolerance
                .as_ref()
                .map(|name| {
                    crate::verify::parse_preset(name)
                        .map_err(|e| UsageError(format!("[verify] tolerance '{name}': {e}")))
                })
                .transpose()?;
            let mut tolerance = document.verification_tolerance(preset);
            let flags = |v: &Option<super::config::ToleranceValue>| {
                v.as_ref().map(|v| v.as_flags()).unwrap_or_default()
            };
            tolerance
                .apply(&flags(&c.verify.atol), &flags(&c.verify.rtol))
                .map_err(|e| UsageError(format!("[verify]: {e}")))?;
            let req = VerifyRequest {
                reference: converted.clone(),
                candidate: Some(optimized.clone()),
                data: data.clone(),
                tolerance,
            };
            let (report, _) = super::verify_files(&req, progress)?;
            write_report(&verify_report, &report)?;
            match report.status {
                Status::Passed => Ok(()),
                Status::Failed => Err(CheckFailed(format!(
                    "the optimized model does not match its source (see {})",
                    verify_report.display()
                ))
                .into()),
                Status::Unsupported => Err(CheckFailed(format!(
                    "the optimized model cannot be verified: no available engine runs it (see {})",
                    verify_report.display()
                ))
                .into()),
            }
        })?;

        // pack
        let key_source = self.signing_key()?;
        let include: Vec<PathBuf> = c.pack.include.iter().map(|p| self.path(p)).collect();
        let mtime = source_date_epoch()?;
        let key_hint = match &key_source {
            Some(k) => Some(
                crate::pack::signature::key_hint(k.key.verifying_key())
                    .map_err(|e| UsageError(e.to_string()))?,
            ),
            None => None,
        };
        let key = self.key(
            "pack",
            json!({"model": c.model, "pack": c.pack, "signer": key_hint, "mtime": mtime}),
            &[
                &[&optimized, &optimize_report, &verify_report][..],
                &include.iter().collect::<Vec<_>>(),
            ]
            .concat(),
        )?;
        let signed = key_source.is_some();
        let public_key = key_source.as_ref().and_then(|k| k.public.clone());
        self.stage("pack", key, &[&archive], |progress| {
            let options = PackOptions {
                model: optimized.clone(),
                output: archive.clone(),
                name: c.model.name.clone(),
                version: c.model.version.clone(),
                key: key_source.map(|k| k.key),
                include: include.clone(),
                optimize_report: Some(read_optimize_report(&optimize_report)?.for_lineage()),
                verify_report: Some(VerifyReport::from_json(
                    &std::fs::read(&verify_report)?,
                    &verify_report,
                )?),
                metadata: c.pack.metadata.clone(),
                level: c.pack.level.unwrap_or(3),
                threads: 2,
                mtime,
                source_signature: None,
            };
            crate::pack::pack_with_progress(&options, progress)?;
            Ok(())
        })?;
        Ok(BuildSummary {
            format: "mdeploy.build/1",
            name: c.model.name.clone(),
            version: c.model.version.clone(),
            config: self.config_file.clone(),
            out_dir: self.out.clone(),
            archive,
            signed,
            public_key,
            verify_data,
            stages: self.stages,
        })
    }

    /// The optimize stage's request from `[optimize]` and `[verify]`.
    fn optimize_request(
        &self,
        input: &Path,
        output: &Path,
        calibration: &[PathBuf],
        data: &DataOptions,
    ) -> anyhow::Result<OptimizeRequest> {
        let o = &self.config.optimize;
        let mut req = OptimizeRequest::new(input.to_path_buf(), output.to_path_buf());
        req.level = o.level;
        req.passes = o.passes.clone();
        req.skip = o.skip.clone();
        // validated now, before any stage runs
        super::optimize::choose_passes(o.level, &o.passes, &o.skip)?;
        req.prune = o.prune;
        req.prune_channels = o.prune_channels;
        if let Some(limit) = o.fold_size_limit {
            req.fold_size_limit = limit;
        }
        req.external_data = o.external_data;
        req.data = data.clone();
        // the verify stage proves the result, with its own report
        req.verify = false;
        let mut q = QuantizeOptions {
            mode: QuantizeMode::chosen(o.fp16, o.fp16_io, o.int8, o.int4, o.int4_block_size),
            calibration: calibration.to_vec(),
            int8_ops: o.int8_ops.clone(),
            exclude_nodes: o.exclude_nodes.clone(),
            exclude_op_types: o.exclude_op_types.clone(),
            ..Default::default()
        };
        if let Some(a) = &o.int8_activations {
            q.activation_type = crate::quantize::qdq::ActivationType::parse(a)
                .map_err(|e| UsageError(format!("[optimize] int8_activations: {e}")))?;
        }
        if let Some(p) = &o.int8_placement {
            q.placement = crate::quantize::placement::Placement::parse(p)
                .map_err(|e| UsageError(format!("[optimize] int8_placement: {e}")))?;
        }
        if let Some(r) = &o.int8_weight_range {
            q.weight_range = crate::quantize::weights::WeightRange::parse(r)
                .map_err(|e| UsageError(format!("[optimize] int8_weight_range: {e}")))?;
        }
        if let Some(m) = &o.calibration_method {
            q.method = crate::quantize::calibrate::Method::parse(m)
                .map_err(|e| UsageError(format!("[optimize] calibration_method: {e}")))?;
        }
        if let Some(t) = &o.accuracy_target {
            q.accuracy_target = crate::quantize::AccuracyTarget::parse(t)
                .map_err(|e| UsageError(format!("[optimize] accuracy_target: {e}")))?;
        }
        req.quantize = q;
        Ok(req)
    }

    /// The stage key: options, input digests and the mdeploy version. `None` in a dry run after
    /// a stage that would run (its outputs, which this one reads, are not made yet).
    fn key(
        &self,
        stage: &str,
        options: serde_json::Value,
        inputs: &[&PathBuf],
    ) -> anyhow::Result<Option<String>> {
        if self.pending.is_some() {
            return Ok(None);
        }
        let mut digests = Vec::new();
        for p in inputs {
            let digest = digest_input(p)
                .map_err(|e| e.context(format!("build stopped at the {stage} stage")))?;
            digests.push(json!([self.relative(p), digest]));
        }
        let material = json!({
            "stage": stage,
            "mdeploy": env!("CARGO_PKG_VERSION"),
            "options": options,
            "inputs": digests,
        });
        Ok(Some(hex::encode(Sha256::digest(serde_json::to_vec(
            &material,
        )?))))
    }

    /// Whether a stage's record matches its key and its outputs are intact.
    fn up_to_date(&self, stage: &str, key: &str) -> bool {
        let Some(record) = self.state.stages.get(stage) else {
            return false;
        };
        record.key == key
            && record
                .outputs
                .iter()
                .all(|(path, sha)| digest_file(&self.root.join(path)).ok().as_deref() == Some(sha))
    }

    /// Runs a stage unless it is up to date; records its outputs (and any file beside a model
    /// output that saving made, such as `model.onnx.data`).
    fn stage(
        &mut self,
        name: &'static str,
        key: Option<String>,
        outputs: &[&PathBuf],
        run: impl FnOnce(&dyn Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let outputs_list: Vec<PathBuf> = outputs.iter().map(|p| p.to_path_buf()).collect();
        let reason = match &key {
            None => Some(format!(
                "after {}",
                self.pending.unwrap_or("an earlier stage")
            )),
            Some(_) if self.force => Some("--force".into()),
            Some(k) if self.up_to_date(name, k) => None,
            Some(_) if self.state.stages.contains_key(name) => {
                Some("inputs, options or outputs changed".into())
            }
            Some(_) => Some("never built".into()),
        };
        let Some(reason) = reason else {
            self.progress.on_stage_done(name, 0.0, "up to date");
            self.stages.push(StageResult {
                stage: name,
                state: StageState::UpToDate,
                reason: None,
                seconds: 0.0,
                outputs: outputs_list,
            });
            return Ok(());
        };
        if self.dry_run {
            self.pending.get_or_insert(name);
            self.progress
                .on_stage_done(name, 0.0, &format!("would run ({reason})"));
            self.stages.push(StageResult {
                stage: name,
                state: StageState::WouldRun,
                reason: Some(reason),
                seconds: 0.0,
                outputs: outputs_list,
            });
            return Ok(());
        }
        let key = key.expect("only a dry run leaves a key unknown");
        // a stage that fails must not look up to date afterwards, nor anything after it
        let later: Vec<String> = STAGES
            .iter()
            .skip_while(|s| **s != name)
            .map(|s| s.to_string())
            .collect();
        let before = self.state.stages.len();
        self.state.stages.retain(|k, _| !later.contains(k));
        if self.state.stages.len() != before {
            self.write_state()?;
        }
        self.progress.on_stage(name);
        let start = Instant::now();
        if let Err(e) = run(self.progress) {
            self.progress
                .on_stage_done(name, start.elapsed().as_secs_f64(), "failed");
            return Err(e.context(format!("build stopped at the {name} stage")));
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut recorded = BTreeMap::new();
        for p in outputs {
            let side = PathBuf::from(format!("{}.data", p.display()));
            for file in [p.to_path_buf(), side] {
                if file.exists() {
                    recorded.insert(self.relative(&file), digest_file(&file)?);
                }
            }
        }
        self.state.stages.insert(
            name.to_string(),
            StageRecord {
                key,
                outputs: recorded,
            },
        );
        self.write_state()?;
        self.progress.on_stage_done(name, seconds, "done");
        self.stages.push(StageResult {
            stage: name,
            state: StageState::Ran,
            reason: Some(reason),
            seconds,
            outputs: outputs_list,
        });
        Ok(())
    }

    /// The signing key: `MDEPLOY_KEY` (a path or the PEM itself), else `[pack] key` (made first
    /// when `create_key` is set), else none when `unsigned` is set.
    fn signing_key(&self) -> anyhow::Result<Option<Signer>> {
        if let Ok(v) = std::env::var("MDEPLOY_KEY")
            && !v.trim().is_empty()
        {
            return Ok(Some(Signer {
                key: key_from_env(&v)?,
                public: None,
            }));
        }
        let Some(path) = &self.config.pack.key else {
            if self.config.pack.unsigned {
                return Ok(None);
            }
            return Err(UsageError(format!(
                "{}: no signing key: set [pack] key (or the MDEPLOY_KEY environment variable), \
                 or unsigned = true; `mdeploy keygen -o keys` makes a key pair",
                self.config_file.display()
            ))
            .into());
        };
        let path = self.path(path);
        if !path.exists() && self.config.pack.create_key {
            if path.file_name() != Some(std::ffi::OsStr::new("mdeploy.key")) {
                return Err(UsageError(format!(
                    "{}: create_key makes mdeploy.key and mdeploy.pub; [pack] key must name a \
                     file called mdeploy.key (it names {})",
                    self.config_file.display(),
                    path.display()
                ))
                .into());
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            if self.dry_run {
                return Ok(None);
            }
            keys::keygen(dir)?;
        }
        let key = keys::load_signing_key(&path)?;
        let public = path.with_file_name("mdeploy.pub");
        Ok(Some(Signer {
            key,
            public: public.exists().then_some(public),
        }))
    }
}

/// The key `MDEPLOY_KEY` holds: a PEM private key, or the path of a file holding one. The value
/// is a secret: no error repeats it.
fn key_from_env(value: &str) -> anyhow::Result<SigningKey> {
    let refused = || {
        UsageError(
            "MDEPLOY_KEY is neither the path of a readable P-256 private key file nor such a key \
             in PEM (its value is not shown)"
                .into(),
        )
    };
    if value.contains("-----BEGIN") {
        return keys::signing_key_from_pem(value, "MDEPLOY_KEY").map_err(|_| refused().into());
    }
    let path = Path::new(value.trim());
    if value.trim().contains('\n') || !path.is_file() {
        return Err(refused().into());
    }
    keys::load_signing_key(path).map_err(|_| refused().into())
}

struct Signer {
    key: SigningKey,
    public: Option<PathBuf>,
}

fn read_optimize_report(path: &Path) -> anyhow::Result<OptimizeDocument> {
    let bytes = std::fs::read(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    Ok(OptimizeDocument::from_json(&bytes, path)?)
}

/// `SOURCE_DATE_EPOCH`, else 0: the time stamped on archive entries.
pub fn source_date_epoch() -> Result<u64, UsageError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            UsageError(format!(
                "SOURCE_DATE_EPOCH '{v}' is not a number of seconds"
            ))
        }),
        Err(_) => Ok(0),
    }
}

/// SHA-256 of a file's content.
fn digest_file(path: &Path) -> anyhow::Result<String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The digest of what a stage reads at `path`: a file's content (for an ONNX model, with its
/// external data files), or a directory's files by relative path and content.
fn digest_input(path: &Path) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(path, path, &mut files)?;
        files.sort();
        let mut hasher = Sha256::new();
        for (rel, file) in files {
            hasher.update(format!("{rel}\0{}\n", digest_file(&file)?));
        }
        return Ok(hex::encode(hasher.finalize()));
    }
    let own = digest_file(path)?;
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("onnx"))
    {
        return Ok(own);
    }
    let model = crate::onnx::Model::load(path)?;
    let info = crate::inspect::inspect(&model)?;
    if info.external_data.is_empty() {
        return Ok(own);
    }
    let mut hasher = Sha256::new();
    hasher.update(own);
    for f in &info.external_data {
        let file = model.dir().join(&f.location);
        hasher.update(format!("\0{}\0{}", f.location, digest_file(&file)?));
    }
    Ok(hex::encode(hasher.finalize()))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
        let path = entry.path();
        // a symlinked directory is not followed (a link loop would never end)
        let kind = entry
            .file_type()
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_symlink() && path.is_dir() {
            return Err(UsageError(format!(
                "{}: a symbolic link to a directory inside build data is not followed",
                path.display()
            ))
            .into());
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path));
        }
    }
    Ok(())
}
