//! The engines a model can run in, behind one interface: tract (embedded, always available) and
//! onnxruntime (loaded at run time when installed). `auto` runs tract, and onnxruntime where
//! tract cannot load or run the model; callers say which engine produced what.

use serde::Serialize;

use super::ort::OrtRunner;
use super::{InputDesc, NamedTensor, RunError, Runner};
use crate::onnx::Model;

/// An engine by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Tract,
    Ort,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::Ort => "ort",
        })
    }
}

/// Which engine to run a model in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// tract, and onnxruntime where tract cannot load or run the model.
    #[default]
    Auto,
    Only(EngineKind),
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "tract" => Ok(EngineChoice::Only(EngineKind::Tract)),
            "ort" | "onnxruntime" => Ok(EngineChoice::Only(EngineKind::Ort)),
            _ => Err(format!("unknown engine '{s}' (tract, ort or auto)")),
        }
    }
}

/// A model loaded in one engine.
#[derive(Debug)]
pub enum Engine {
    Tract(Box<Runner>),
    Ort(Box<OrtRunner>),
}

impl Engine {
    /// Loads `model` in the chosen engine (for `auto`: tract, else onnxruntime if available).
    pub fn load(model: &Model, choice: EngineChoice) -> Result<Engine, RunError> {
        match choice {
            EngineChoice::Only(kind) => Engine::load_in(model, kind),
            EngineChoice::Auto => match Runner::new(model) {
                Ok(r) => Ok(Engine::Tract(Box::new(r))),
                Err(tract) => match super::ort::library() {
                    Ok(_) => {
                        Engine::load_in(model, EngineKind::Ort).map_err(|ort| RunError::Neither {
                            tract: tract.to_string(),
                            ort: ort.to_string(),
                        })
                    }
                    Err(_) => Err(tract),
                },
            },
        }
    }

    pub fn load_in(model: &Model, kind: EngineKind) -> Result<Engine, RunError> {
        Ok(match kind {
            EngineKind::Tract => Engine::Tract(Box::new(Runner::new(model)?)),
            EngineKind::Ort => Engine::Ort(Box::new(OrtRunner::new(model)?)),
        })
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Tract(_) => EngineKind::Tract,
            Engine::Ort(_) => EngineKind::Ort,
        }
    }

    pub fn inputs(&self) -> &[InputDesc] {
        match self {
            Engine::Tract(r) => r.inputs(),
            Engine::Ort(r) => r.inputs(),
        }
    }

    pub fn outputs(&self) -> &[String] {
        match self {
            Engine::Tract(r) => r.outputs(),
            Engine::Ort(r) => r.outputs(),
        }
    }

    pub fn run(&mut self, given: &[NamedTensor]) -> Result<Vec<NamedTensor>, RunError> {
        match self {
            Engine::Tract(r) => r.run(given),
            Engine::Ort(r) => r.run(given),
        }
    }
}

/// Is a run error the inputs' fault (rather than the engine's or the model's)?
pub fn is_input_problem(e: &RunError) -> bool {
    matches!(e, RunError::Input { .. } | RunError::MissingInput(_))
}

/// Runs `model` on every set of inputs in the chosen engine. With `auto`, a model tract loads
/// but cannot run (a shape only the taken branch of an If satisfies, say) is run again, from
/// the first sample, in onnxruntime. Returns the engine that produced the outputs.
pub fn run_all(
    model: &Model,
    choice: EngineChoice,
    samples: &[&[NamedTensor]],
    mut on_sample: impl FnMut(),
) -> Result<(EngineKind, Vec<Vec<NamedTensor>>), RunError> {
    let mut engine = Engine::load(model, choice)?;
    let mut fell_back = false;
    loop {
        let mut all = Vec::with_capacity(samples.len());
        let mut failure = None;
        for s in samples {
            match engine.run(s) {
                Ok(out) => all.push(out),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            on_sample();
        }
        let Some(e) = failure else {
            return Ok((engine.kind(), all));
        };
        let retry = choice == EngineChoice::Auto
            && !fell_back
            && engine.kind() == EngineKind::Tract
            && !is_input_problem(&e)
            && super::ort::library().is_ok();
        if !retry {
            return Err(e);
        }
        engine = Engine::load_in(model, EngineKind::Ort).map_err(|ort| RunError::Neither {
            tract: e.to_string(),
            ort: ort.to_string(),
        })?;
        fell_back = true;
    }
}
