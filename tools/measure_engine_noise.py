#!/usr/bin/env python3
"""How far honest engines disagree on the same float32 model: the measurement behind the
`fp32` verification preset (docs/verify.md).

For every model in ../shared/models (and any .onnx named on the command line, with its
test_data_set_N beside it) and every stored data set:
  - onnxruntime with all graph optimizations against onnxruntime with none;
  - tract (through `mdeploy verify --engine tract --save-outputs`) against onnxruntime;
and for each output: the largest absolute error, that error relative to the output's largest
magnitude (the scale-aware term), and the largest elementwise relative error where the
reference is not tiny. Prints one row per model, data set and comparison, then the maxima.

    .venv/bin/python tools/measure_engine_noise.py [MODEL.onnx ...]
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(ROOT, "target", "release", "mdeploy"))


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def inputs_of(data_dir, names):
    files = sorted(glob.glob(os.path.join(data_dir, "input_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    feeds = {}
    for k, p in enumerate(files):
        name, value = read_pb(p)
        feeds[name or names[k]] = value
    return feeds


def session(path, level):
    o = ort.SessionOptions()
    o.log_severity_level = 3
    o.graph_optimization_level = level
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def errors(ref, got):
    """(max abs, max abs / max |ref|, max rel where |ref| > 1e-3 * max |ref|)."""
    ref = np.asarray(ref, dtype=np.float64).ravel()
    got = np.asarray(got, dtype=np.float64).ravel()
    if ref.size == 0:
        return 0.0, 0.0, 0.0
    diff = np.abs(ref - got)
    scale = float(np.max(np.abs(ref))) or 1.0
    big = np.abs(ref) > 1e-3 * scale
    rel = float(np.max(diff[big] / np.abs(ref[big]))) if big.any() else 0.0
    return float(diff.max()), float(diff.max()) / scale, rel


def tract_outputs(model, data_dir, names, tmp):
    out = os.path.join(tmp, "tract.npz")
    proc = subprocess.run([MDEPLOY, "verify", model, model, "--engine", "tract", "--data", data_dir,
                           "--save-outputs", out, "-q"], capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(out):
        return None
    z = np.load(out)
    # one sample: entries named after the outputs; several: `sample_K/OUTPUT`
    return {re.sub(r"^sample_\d+/", "", k): z[k] for k in z.files}


def main():
    models = sorted(glob.glob(os.path.join(SHARED, "models", "*", "model.onnx"))) + sys.argv[1:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = os.path.basename(os.path.dirname(model))
            full = session(model, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            none = session(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            in_names = [i.name for i in full.get_inputs()]
            out_names = [o.name for o in full.get_outputs()]
            for data_dir in sorted(glob.glob(os.path.join(os.path.dirname(model), "test_data_set_*"))):
                feeds = inputs_of(data_dir, in_names)
                a = dict(zip(out_names, full.run(None, feeds)))
                b = dict(zip(out_names, none.run(None, feeds)))
                t = tract_outputs(model, data_dir, in_names, tmp)
                for out in out_names:
                    if a[out].dtype.kind != "f":
                        continue
                    rows.append((name, os.path.basename(data_dir), out, "ort all vs none",
                                 *errors(a[out], b[out])))
                    if t is not None and out in t:
                        rows.append((name, os.path.basename(data_dir), out, "tract vs ort",
                                     *errors(a[out], t[out])))
    print(f"{'model':<26} {'data':<17} {'output':<32} {'comparison':<17} {'max abs':>9} {'abs/scale':>9} {'max rel':>9}")
    for r in rows:
        print(f"{r[0]:<26} {r[1]:<17} {r[2][:32]:<32} {r[3]:<17} {r[4]:>9.2e} {r[5]:>9.2e} {r[6]:>9.2e}")
    for comparison in ("ort all vs none", "tract vs ort"):
        sel = [r for r in rows if r[3] == comparison]
        if sel:
            print(f"max over all ({comparison}): abs {max(r[4] for r in sel):.2e}, "
                  f"abs/scale {max(r[5] for r in sel):.2e}, rel {max(r[6] for r in sel):.2e}")


if __name__ == "__main__":
    main()
