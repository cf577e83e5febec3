//! The data options `verify`, `optimize` and `build` share: given files, or seeded random samples,
//! and the engine that runs the models.

use std::path::PathBuf;

use crate::error::UsageError;
use crate::onnx::Model;
use crate::run::{
    EngineChoice, InputShapes, NamedTensor, OnChunk, RunError, SampleChunks, graph_inputs,
    random_inputs,
};
use crate::verify::{Sample, SampleSource, load_samples, sample_sources};

/// Where samples come from and what runs them.
/// The data a result is verified on: `data` when given, else the calibration data (given only
/// when quantizing: random inputs fall outside the calibrated ranges and say nothing about how
/// the model is used), else none (seeded random samples).
pub fn verification_data(data: &[PathBuf], calibration: &[PathBuf]) -> Vec<PathBuf> {
    if data.is_empty() {
        calibration.to_vec()
    } else {
        data.to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Test data directories (or parents of test_data_set_N/), .npz, .npy or .pb files.
    pub data: Vec<PathBuf>,
    /// Random samples to generate when no `data` is given.
    pub samples: usize,
    /// Seed of the random samples.
    pub seed: u64,
    /// `INPUT=1,3,224,224` or `dim=2` settings.
    pub input_shapes: Vec<String>,
    /// `tract`, `ort`, `auto`, or the pair `tract,ort`.
    pub engine: String,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            data: Vec::new(),
            samples: 3,
            seed: 0,
            input_shapes: Vec::new(),
            engine: "auto".into(),
        }
    }
}

impl DataOptions {
    /// The engine choice, and whether both engines are to be compared (`tract,ort`).
    pub fn engines(&self) -> Result<(EngineChoice, bool), UsageError> {
        let parts: Vec<&str> = self.engine.split(',').map(str::trim).collect();
        let choice = |s: &str| s.parse::<EngineChoice>().map_err(UsageError);
        match parts.as_slice() {
            [one] => Ok((choice(one)?, false)),
            [a, b]
                if a != b
                    && choice(a)? != EngineChoice::Auto
                    && choice(b)? != EngineChoice::Auto =>
            {
                Ok((choice(a)?, true))
            }
            _ => Err(UsageError(format!(
                "engine '{}': one of tract, ort, auto, or the pair tract,ort",
                self.engine
            ))),
        }
    }

    /// The input shape settings, parsed.
    pub fn shapes(&self) -> Result<InputShapes, UsageError> {
        InputShapes::parse(&self.input_shapes).map_err(UsageError)
    }

    /// The samples from `data`, or `samples` seeded random ones that fit `model`'s inputs (then
    /// with the seed they started from).
    pub fn load(&self, model: &Model) -> anyhow::Result<(Vec<Sample>, Option<u64>)> {
        if !self.data.is_empty() {
            return Ok((load_samples(&self.data)?, None));
        }
        if self.samples == 0 {
            return Err(UsageError("samples must be at least 1".into()).into());
        }
        let inputs = graph_inputs(model);
        let shapes = self.shapes()?.resolve(&inputs).map_err(UsageError)?;
        let samples = (0..self.samples)
            .map(|k| {
                let seed = self.seed.wrapping_add(k as u64);
                Ok(Sample {
                    origin: format!("random #{k}"),
                    inputs: random_inputs(&inputs, &shapes, seed)?,
                    expected: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((samples, Some(self.seed)))
    }
}

/// The bytes of input a chunk of calibration samples holds at most (one sample larger than
/// that makes a chunk of its own): what a pass over a calibration set keeps in memory of it.
pub const CHUNK_BYTES: usize = 64 << 20;

/// Calibration samples on disk, listed up front and read a chunk at a time by each pass over
/// them: memory holds a chunk, whatever the number of samples.
pub struct SampleSet {
    sources: Vec<SampleSource>,
    len: usize,
    first: Option<Vec<NamedTensor>>,
    chunk_bytes: usize,
}

impl SampleSet {
    /// Lists the samples `paths` hold and reads the first.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<SampleSet> {
        let sources = sample_sources(paths)?;
        let len = sources.iter().map(SampleSource::count).sum();
        let first = match sources.iter().find(|s| s.count() > 0) {
            Some(s) => s.load_inputs()?.into_iter().next().map(|s| s.inputs),
            None => None,
        };
        Ok(SampleSet {
            sources,
            len,
            first,
            chunk_bytes: CHUNK_BYTES,
        })
    }

    /// The samples at `indices` (ascending), read.
    pub fn samples_at(&self, indices: &[usize]) -> anyhow::Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(indices.len());
        let mut wanted = indices.iter().copied().peekable();
        let mut start = 0;
        for source in &self.sources {
            let end = start + source.count();
            if wanted.peek().is_some_and(|&i| i < end) {
                let mut read: Vec<Option<Sample>> =
                    source.load_inputs()?.into_iter().map(Some).collect();
                while let Some(i) = wanted.next_if(|&i| i < end) {
                    out.extend(read[i - start].take());
                }
            }
            start = end;
        }
        Ok(out)
    }
}

impl SampleChunks for SampleSet {
    fn len(&self) -> usize {
        self.len
    }

    fn first(&self) -> Option<&[NamedTensor]> {
        self.first.as_deref()
    }

    fn each_chunk(&self, f: &mut OnChunk) -> Result<(), RunError> {
        let mut chunk: Vec<Sample> = Vec::new();
        let mut bytes = 0;
        let mut flush = |chunk: &mut Vec<Sample>| -> Result<(), RunError> {
            let samples: Vec<&[NamedTensor]> = chunk.iter().map(|s| s.inputs.as_slice()).collect();
            let done = if samples.is_empty() {
                Ok(())
            } else {
                f(&samples)
            };
            chunk.clear();
            done
        };
        for source in &self.sources {
            for sample in source.load_inputs()? {
                let size: usize = sample
                    .inputs
                    .iter()
                    .map(|t| t.tensor.len() * t.tensor.datum_type().size_of())
                    .sum();
                if !chunk.is_empty() && bytes + size > self.chunk_bytes {
                    flush(&mut chunk)?;
                    bytes = 0;
                }
                bytes += size;
                chunk.push(sample);
            }
        }
        flush(&mut chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::Tensor;

    fn sample(k: usize) -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "x".into(),
            tensor: Tensor::from(tract_onnx::prelude::tract_ndarray::Array1::from_elem(
                64, k as f32,
            )),
        }]
    }

    fn values(samples: &[&[NamedTensor]]) -> Vec<f32> {
        samples
            .iter()
            .map(|s| s[0].tensor.to_plain_array_view::<f32>().unwrap()[0])
            .collect()
    }

    /// Two test data directories, then a `.npz` of three samples, then one more directory:
    /// listed in that order, read a chunk at a time in that order.
    #[test]
    fn a_sample_set_reads_its_samples_in_order_a_chunk_at_a_time() {
        use prost::Message;
        let tmp = tempfile::tempdir().unwrap();
        let dir = |k: usize| {
            let d = tmp.path().join(format!("set_{k}"));
            std::fs::create_dir_all(&d).unwrap();
            let t = &sample(k)[0];
            let proto = crate::run::tensor_io::to_proto("x", &t.tensor).unwrap();
            std::fs::write(d.join("input_0.pb"), proto.encode_to_vec()).unwrap();
            d
        };
        let npz = tmp.path().join("three.npz");
        crate::verify::save_samples(&npz, &[sample(2), sample(3), sample(4)]).unwrap();
        let paths = vec![dir(0), dir(1), npz, dir(5)];
        let mut set = SampleSet::open(&paths).unwrap();
        assert_eq!(set.len(), 6);
        assert_eq!(values(&[set.first().unwrap()]), [0.0]);
        // 256 bytes a sample: two a chunk, and the .npz read whole
        set.chunk_bytes = 512;
        let mut chunks: Vec<Vec<f32>> = Vec::new();
        set.each_chunk(&mut |chunk| {
            chunks.push(values(chunk));
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks, [vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0, 5.0]]);
        // as everything at once reads them
        let all = crate::verify::load_samples(&paths).unwrap();
        let all: Vec<&[NamedTensor]> = all.iter().map(|s| s.inputs.as_slice()).collect();
        assert_eq!(values(&all), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let picked = set.samples_at(&[0, 3, 4, 5]).unwrap();
        let picked: Vec<&[NamedTensor]> = picked.iter().map(|s| s.inputs.as_slice()).collect();
        assert_eq!(values(&picked), [0.0, 3.0, 4.0, 5.0]);
        // a chunk stops at the first error
        let mut calls = 0;
        let failed = set.each_chunk(&mut |_| {
            calls += 1;
            Err(RunError::Run("stop".into()))
        });
        assert!(failed.is_err());
        assert_eq!(calls, 1);
    }
}
