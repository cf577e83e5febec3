"""Interop: what the onnx checker and onnxruntime think of mdeploy's converted and optimized models.

For every model in ../shared/models (and every model directory named on the command line),
`mdeploy convert` it and `mdeploy optimize` it (verified on the stored test data), then require that
  - onnx.checker.check_model(full_check=True) accepts each output (strict shape inference included),
  - onnxruntime loads each, and on every stored test data set gives: for the converted model, the
    outputs it gives for the input (relative error 1e-5); for the optimized model, the stored
    reference outputs within 1e-4 relative to each output's magnitude; for a pruned model (lossy),
    outputs of the same shapes.
Prints node counts before/after optimize. Run by .ci/run from its venv; exits non-zero on failure.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(ROOT, "target", "debug", "mdeploy"))


def load_set(directory, prefix, names):
    files = sorted(glob.glob(os.path.join(directory, f"{prefix}_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    out = {}
    for i, path in enumerate(files):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        out[t.name or names[i]] = numpy_helper.to_array(t)
    return out


def run(model_path, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def check_model(name, model_dir, out_dir, command):
    src = os.path.join(model_dir, "model.onnx")
    dst = os.path.join(out_dir, f"{name}.{command}.onnx")
    args = [MDEPLOY, command, src, "-o", dst, "--json"]
    if command == "prune":
        # lossy: only validity is checked (checker, onnxruntime runs, output shapes kept)
        args = [MDEPLOY, "optimize", src, "-o", dst, "--json", "--prune", "0.5", "--prune-channels", "0.25"]
    if command != "convert":
        # verified on the stored inputs: a model that branches on an input's value (silero's
        # sample rate) or needs a minimum length runs on no seeded random inputs
        for data in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*"))):
            args += ["--data", data]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"{command} failed ({proc.returncode}): {proc.stderr.strip()}"]
    problems = []
    try:
        onnx.checker.check_model(onnx.load(dst), full_check=True)
    except Exception as e:  # the checker raises several exception types
        problems.append(f"onnx checker: {e}")
    inputs = [i.name for i in onnx.load(src, load_external_data=False).graph.input]
    for data in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*"))):
        feeds = load_set(data, "input", inputs)
        try:
            want = run(src, feeds) if command == "convert" else load_set(data, "output", [o.name for o in onnx.load(src, load_external_data=False).graph.output])
            got = run(dst, feeds)
        except Exception as e:
            problems.append(f"onnxruntime on {os.path.basename(data)}: {e}")
            continue
        for key, w in want.items():
            g = got[key]
            if command == "prune":
                if g.shape != w.shape:
                    problems.append(f"{os.path.basename(data)} {key}: shape {g.shape} vs {w.shape}")
                continue
            if g.shape != w.shape:
                problems.append(f"{os.path.basename(data)} {key}: shape {g.shape} vs {w.shape}")
                continue
            scale = max(float(np.abs(w).max()) if w.size else 0.0, 1e-6)
            err = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) / scale if w.size else 0.0
            if err > (1e-5 if command == "convert" else 1e-4):
                problems.append(f"{os.path.basename(data)} {key}: relative error {err:.3g}")
    return problems


def model_paths(named):
    """The model.onnx of every model in ../shared/models, then of each model named on the command
    line: a model.onnx, or a directory in the same layout (model.onnx, test_data_set_N)."""
    models = sorted(glob.glob(os.path.join(SHARED, "models", "*", "model.onnx")))
    return models + [a if a.endswith(".onnx") else os.path.join(a, "model.onnx") for a in named]


def main():
    models = [os.path.dirname(p) for p in model_paths(sys.argv[1:])]
    if not models:
        print(f"no models under {SHARED}/models", file=sys.stderr)
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as out_dir:
        for command in ("convert", "optimize", "prune"):
            for model_dir in models:
                name = os.path.basename(model_dir)
                problems = check_model(name, model_dir, out_dir, command)
                status = "ok" if not problems else "FAILED"
                extra = ""
                if command == "optimize":
                    before = len(onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=False).graph.node)
                    after_path = os.path.join(out_dir, f"{name}.optimize.onnx")
                    after = len(onnx.load(after_path).graph.node) if os.path.exists(after_path) else -1
                    extra = f" ({before} -> {after} nodes)"
                print(f"{command} interop {name}: {status}{extra}")
                for p in problems:
                    print(f"    {p}")
                failed += bool(problems)
    print(f"interop: {3 * len(models) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
