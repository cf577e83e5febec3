"""Static int8 quantization as the calibration set grows: mdeploy against onnxruntime's
quantize_static (QDQ, per channel, uint8 activations, int8 weights), calibrated on the same N
samples with the same method (minmax, onnxruntime's default; percentile, mdeploy's), for N in
--samples. Wall time and peak RSS of each tool, and the worst output cosine of its result against
the float model on the model's stored data sets.

mdeploy streams calibration (min/max reduced inside the model, then one fixed histogram per
value) and measures and verifies its result: it measures the accuracy target on the stored sets
(`--data`) and on at most 16 calibration samples, and verifies on the stored sets, so neither
grows with N. quantize_static verifies nothing; for minmax it reduces inside the model too, for
percentile it keeps every sample's activations until it computes their histograms.

The N samples are real inputs recombined: sample k takes each batch row r from stored set
(k + r) mod S, row (3k + r) mod B, so samples differ where the batch has more than one row (the
MiniLM of tests/interop/minilm_model.py: eight passages a batch) and repeat the stored sets where
it has one (the images of ../shared/models).

    cargo build --release
    .venv/bin/python bench/calibration_scale.py MODEL_DIR [--samples 2,16,64]
        [--methods minmax,percentile] [--timeout 900]
"""

import argparse
import glob
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "interop"))
from optimize_compare import MDEPLOY, timed  # noqa: E402
from quantize_compare import accuracy  # noqa: E402
from check_models import load_set  # noqa: E402

ORT_STATIC = (
    "import sys, glob, os, onnx\n"
    "from onnx import numpy_helper\n"
    "import onnxruntime as ort\n"
    "from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationDataReader, CalibrationMethod\n"
    "names = [i.name for i in ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']).get_inputs()]\n"
    "def feeds(d):\n"
    "    files = sorted(glob.glob(os.path.join(d, 'input_*.pb')), key=lambda p: int(p.rsplit('_', 1)[1][:-3]))\n"
    "    out = {}\n"
    "    for k, f in enumerate(files):\n"
    "        t = onnx.load_tensor(f)\n"
    "        out[t.name or names[k]] = numpy_helper.to_array(t)\n"
    "    return out\n"
    "class Reader(CalibrationDataReader):\n"
    "    def __init__(self):\n"
    "        dirs = sorted(glob.glob(os.path.join(sys.argv[3], 'test_data_set_*')), key=lambda p: int(p.rsplit('_', 1)[1]))\n"
    "        self.dirs = iter(dirs)\n"
    "    def get_next(self):\n"
    "        d = next(self.dirs, None)\n"
    "        return None if d is None else feeds(d)\n"
    "method = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile}[sys.argv[4]]\n"
    "quantize_static(sys.argv[1], sys.argv[2], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,\n"
    "                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)\n"
)


def write_samples(model_dir, model_path, count, out_dir):
    names = [i.name for i in onnx.load(model_path, load_external_data=False).graph.input]
    stored = sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")),
                    key=lambda p: int(p.rsplit("_", 1)[1]))
    sets = [load_set(d, "input", names) for d in stored]
    for k in range(count):
        d = os.path.join(out_dir, f"test_data_set_{k}")
        os.makedirs(d)
        for i, name in enumerate(names):
            rows = [s[name] for s in sets]
            batch = rows[0].shape[0] if rows[0].ndim else 1
            if batch > 1 and all(r.shape == rows[0].shape for r in rows):
                value = np.stack([rows[(k + r) % len(rows)][(3 * k + r) % batch] for r in range(batch)])
            else:
                value = rows[k % len(rows)]
            with open(os.path.join(d, f"input_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(np.ascontiguousarray(value), name).SerializeToString())
    return stored


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--samples", default="2,16,64")
    parser.add_argument("--methods", default="minmax,percentile")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a tool may take")
    args = parser.parse_args()
    methods = args.methods.split(",")
    model_dir = os.path.abspath(args.model_dir)
    model = os.path.join(model_dir, "model.onnx")
    name = os.path.basename(model_dir.rstrip("/"))
    print(f"{name}: static int8, calibration samples N; wall s / peak RSS MiB / worst cosine")
    tools = [(tool, m) for m in methods for tool in ("mdeploy", "ort")]
    print(f"{'N':>4}  " + "  ".join(f"{t + ' ' + m:>30}" for t, m in tools))
    for n in [int(x) for x in args.samples.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            calibration = os.path.join(work, "calibration")
            stored = write_samples(model_dir, model, n, calibration)
            row = []
            for tool, method in tools:
                out = os.path.join(work, f"{tool}-{method}.onnx")
                if tool == "mdeploy":
                    cmd = [MDEPLOY, "optimize", model, "-o", out, "-q", "--int8", "static",
                           "--calibration", calibration, "--calibration-method", method]
                    for d in stored:
                        cmd += ["--data", d]
                else:
                    cmd = [sys.executable, "-c", ORT_STATIC, model, out, calibration, method]
                try:
                    wall, rss = timed(["timeout", str(args.timeout), *cmd])
                    cos, _ = accuracy(name, out, stored)
                    row.append(f"{wall:6.2f} s {rss:7.0f} MiB {cos:.5f}")
                except RuntimeError as e:
                    row.append(f"fails: {str(e).splitlines()[-1][:40]}")
            print(f"{n:>4}  " + "  ".join(f"{r:>30}" for r in row), flush=True)


if __name__ == "__main__":
    main()
