//! The data verification runs on: samples read from test data directories (`input_K.pb` with
//! optional `output_K.pb`, or a parent of `test_data_set_N/` directories), `.npz`, `.npy` or `.pb`
//! files; and the `.npz` files `--save-inputs` / `--save-outputs` write.

use std::path::{Path, PathBuf};

use crate::run::NamedTensor;
use crate::run::tensor_io::{TensorIoError, read_npz, read_pb_dir, read_tensors, write_npz};

/// One set of inputs, with the outputs expected for them where the data has them.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from, for messages (`test_data_set_0`, `golden.npz#1`, `random #2`).
    pub origin: String,
    pub inputs: Vec<NamedTensor>,
    pub expected: Option<Vec<NamedTensor>>,
}

const SAMPLE_PREFIX: &str = "sample_";

fn no_data(path: &Path, what: &str) -> TensorIoError {
    TensorIoError::Format {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// Reads every sample the given paths hold, in order.
pub fn load_samples(paths: &[PathBuf]) -> Result<Vec<Sample>, TensorIoError> {
    let mut samples = Vec::new();
    for path in paths {
        if path.is_dir() {
            load_dir(path, &mut samples)?;
        } else if path.extension().is_some_and(|e| e == "npz") {
            load_npz(path, &mut samples)?;
        } else {
            samples.push(Sample {
                origin: path.display().to_string(),
                inputs: read_tensors(path)?,
                expected: None,
            });
        }
    }
    Ok(samples)
}

fn load_dir(dir: &Path, samples: &mut Vec<Sample>) -> Result<(), TensorIoError> {
    // a model without inputs (a Constant, say) has only output_K.pb
    if dir.join("input_0.pb").is_file() || dir.join("output_0.pb").is_file() {
        let expected = read_pb_dir(dir, "output")?;
        samples.push(Sample {
            origin: dir.display().to_string(),
            inputs: read_pb_dir(dir, "input")?,
            expected: (!expected.is_empty()).then_some(expected),
        });
        return Ok(());
    }
    let mut sets: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| no_data(dir, &e.to_string()))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("test_data_set_")?
                .parse()
                .ok()?;
            p.is_dir().then_some((n, p))
        })
        .collect();
    if sets.is_empty() {
        return Err(no_data(
            dir,
            "holds neither input_0.pb, output_0.pb nor test_data_set_N directories",
        ));
    }
    sets.sort();
    for (_, set) in sets {
        load_dir(&set, samples)?;
    }
    Ok(())
}

fn load_npz(path: &Path, samples: &mut Vec<Sample>) -> Result<(), TensorIoError> {
    let tensors = read_npz(path)?;
    let grouped = tensors
        .iter()
        .all(|t| t.name.starts_with(SAMPLE_PREFIX) && t.name.contains('/'));
    if !grouped {
        samples.push(Sample {
            origin: path.display().to_string(),
            inputs: tensors,
            expected: None,
        });
        return Ok(());
    }
    let mut groups: Vec<(usize, Vec<NamedTensor>)> = Vec::new();
    for t in tensors {
        let (group, name) = t.name.split_once('/').unwrap_or_default();
        let k: usize = group[SAMPLE_PREFIX.len()..]
            .parse()
            .map_err(|_| no_data(path, &format!("entry '{}' has no sample number", t.name)))?;
        let named = NamedTensor {
            name: name.to_string(),
            tensor: t.tensor,
        };
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(named),
            None => groups.push((k, vec![named])),
        }
    }
    groups.sort_by_key(|(k, _)| *k);
    for (k, inputs) in groups {
        samples.push(Sample {
            origin: format!("{}#{k}", path.display()),
            inputs,
            expected: None,
        });
    }
    Ok(())
}

/// Writes tensors of several samples to one `.npz`: entries are named by value, or
/// `sample_K/NAME` when there is more than one sample (as [`load_samples`] reads them back).
pub fn save_samples(path: &Path, samples: &[Vec<NamedTensor>]) -> Result<(), TensorIoError> {
    let flat: Vec<NamedTensor> = if samples.len() == 1 {
        samples[0].clone()
    } else {
        samples
            .iter()
            .enumerate()
            .flat_map(|(k, s)| {
                s.iter().map(move |t| NamedTensor {
                    name: format!("{SAMPLE_PREFIX}{k}/{}", t.name),
                    tensor: t.tensor.clone(),
                })
            })
            .collect()
    };
    write_npz(path, &flat)
}
