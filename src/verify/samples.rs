//! The data verification runs on: samples read from test data directories (`input_K.pb` with
//! optional `output_K.pb`, or a parent of `test_data_set_N/` directories), `.npz`, `.npy` or `.pb`
//! files; and the `.npz` files `--save-inputs` / `--save-outputs` write.

use std::path::{Path, PathBuf};

use crate::run::NamedTensor;
use crate::run::tensor_io::{
    TensorIoError, npz_names, read_npz, read_pb_dir, read_tensors, write_npz,
};

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
    for source in sample_sources(paths)? {
        samples.extend(source.load()?);
    }
    Ok(samples)
}

/// Where samples are, found without reading a tensor: a test data directory or a tensor file
/// holds one, a `.npz` archive one or several (`sample_K/` groups).
#[derive(Debug, Clone)]
pub struct SampleSource {
    path: PathBuf,
    kind: SourceKind,
    count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SourceKind {
    Dir,
    Npz,
    File,
}

/// The samples the given paths hold, in order, listed: directories are walked and `.npz`
/// archives' entry names read, no tensor is.
pub fn sample_sources(paths: &[PathBuf]) -> Result<Vec<SampleSource>, TensorIoError> {
    let mut sources = Vec::new();
    for path in paths {
        if path.is_dir() {
            list_dir(path, &mut sources)?;
        } else if path.extension().is_some_and(|e| e == "npz") {
            let names = npz_names(path)?;
            let count = match npz_groups(path, &names)? {
                Some(groups) => groups.len(),
                None => 1,
            };
            sources.push(SampleSource {
                path: path.clone(),
                kind: SourceKind::Npz,
                count,
            });
        } else if path.is_file() {
            sources.push(SampleSource {
                path: path.clone(),
                kind: SourceKind::File,
                count: 1,
            });
        } else {
            return Err(no_data(path, "no such file or directory"));
        }
    }
    Ok(sources)
}

impl SampleSource {
    /// Samples it holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Reads its samples (as many as listed: a file that changed since is refused).
    pub fn load(&self) -> Result<Vec<Sample>, TensorIoError> {
        self.read(true)
    }

    /// Reads its samples' inputs only (a test data directory's `output_K.pb` left unread).
    pub fn load_inputs(&self) -> Result<Vec<Sample>, TensorIoError> {
        self.read(false)
    }

    fn read(&self, outputs: bool) -> Result<Vec<Sample>, TensorIoError> {
        let path = &self.path;
        let samples = match self.kind {
            SourceKind::Dir => {
                let expected = if outputs {
                    read_pb_dir(path, "output")?
                } else {
                    Vec::new()
                };
                vec![Sample {
                    origin: path.display().to_string(),
                    inputs: read_pb_dir(path, "input")?,
                    expected: (!expected.is_empty()).then_some(expected),
                }]
            }
            SourceKind::Npz => load_npz(path)?,
            SourceKind::File => vec![Sample {
                origin: path.display().to_string(),
                inputs: read_tensors(path)?,
                expected: None,
            }],
        };
        if samples.len() != self.count {
            return Err(no_data(
                path,
                &format!(
                    "held {} samples when listed and {} when read: it changed meanwhile",
                    self.count,
                    samples.len()
                ),
            ));
        }
        Ok(samples)
    }
}

fn list_dir(dir: &Path, sources: &mut Vec<SampleSource>) -> Result<(), TensorIoError> {
    // a model without inputs (a Constant, say) has only output_K.pb
    if dir.join("input_0.pb").is_file() || dir.join("output_0.pb").is_file() {
        sources.push(SampleSource {
            path: dir.to_path_buf(),
            kind: SourceKind::Dir,
            count: 1,
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
        list_dir(&set, sources)?;
    }
    Ok(())
}

/// An archive's sample numbers, in order, where every entry is `sample_K/NAME`; none where no
/// entry is grouped (one sample).
fn npz_groups(path: &Path, names: &[String]) -> Result<Option<Vec<usize>>, TensorIoError> {
    let grouped = names
        .iter()
        .all(|n| n.starts_with(SAMPLE_PREFIX) && n.contains('/'));
    if !grouped {
        return Ok(None);
    }
    let mut groups: Vec<usize> = Vec::new();
    for name in names {
        let (group, _) = name.split_once('/').unwrap_or_default();
        let k: usize = group[SAMPLE_PREFIX.len()..]
            .parse()
            .map_err(|_| no_data(path, &format!("entry '{name}' has no sample number")))?;
        if !groups.contains(&k) {
            groups.push(k);
        }
    }
    groups.sort();
    Ok(Some(groups))
}

fn load_npz(path: &Path) -> Result<Vec<Sample>, TensorIoError> {
    let tensors = read_npz(path)?;
    let names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let Some(order) = npz_groups(path, &names)? else {
        return Ok(vec![Sample {
            origin: path.display().to_string(),
            inputs: tensors,
            expected: None,
        }]);
    };
    let mut groups: Vec<Vec<NamedTensor>> = vec![Vec::new(); order.len()];
    for t in tensors {
        let (group, name) = t.name.split_once('/').unwrap_or_default();
        // numbered when listed above
        let k: usize = group[SAMPLE_PREFIX.len()..].parse().unwrap_or_default();
        let at = order.binary_search(&k).unwrap_or_default();
        groups[at].push(NamedTensor {
            name: name.to_string(),
            tensor: t.tensor,
        });
    }
    Ok(order
        .into_iter()
        .zip(groups)
        .map(|(k, inputs)| Sample {
            origin: format!("{}#{k}", path.display()),
            inputs,
            expected: None,
        })
        .collect())
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
