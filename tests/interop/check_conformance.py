"""Interop on the ONNX conformance suite: `mdeploy convert` every node test, then require that the
onnx checker (full_check) accepts the output wherever it accepts the input, and that onnxruntime
reproduces the stored expected outputs on the converted model wherever it does on the original
(per ort_results.json). Then the same for `mdeploy convert --opset 21` on every test from opset 6
to 20 that onnxruntime passes (node, simple and the PyTorch exports), and on those at opset 6 it
cannot load for want of a kernel that old (Add-6, Gemm-6, BatchNormalization-6, PRelu-6,
AveragePool-1: the raise is what lets onnxruntime run them): a raised model must pass the checker
wherever the original does and reproduce the expected outputs in onnxruntime; a refusal must be a
clean exit 2 and one of those known by name. Prints a summary and exits non-zero on any
regression.
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
SUITE = os.path.join(SHARED, "onnx-node-tests")


def read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def outputs_match(model_path, data_dir):
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 4
    session = ort.InferenceSession(model_path, session_options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    feeds = {}
    for i, meta in enumerate(inputs):
        path = os.path.join(data_dir, f"input_{i}.pb")
        if os.path.exists(path):
            feeds[meta.name] = read_pb(path)
    got = session.run(None, feeds)
    for k, g in enumerate(got):
        want = read_pb(os.path.join(data_dir, f"output_{k}.pb"))
        if want.dtype == object or g.dtype == object:
            if not np.array_equal(np.asarray(g, dtype=object), np.asarray(want, dtype=object)):
                return False
        elif not np.allclose(g, want, rtol=1e-3, atol=1e-7, equal_nan=True):
            return False
    return True


def tensors_only(model_path):
    """Whether every graph input and output is a tensor (the .pb data of sequence and optional
    values are other protos, which this harness does not read)."""
    graph = onnx.load(model_path).graph
    return all(v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output))


def opset_of(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


# Tests the raise must refuse, with the words of the reason: Upsample-9's scales are a graph
# input here, and its nearest rounding (the whole part) has an opset-11 spelling only for scales
# known to be at least 1.
REFUSED = {"node/test_upsample_nearest": "nearest rounding",
           # Scan-8 has a batch axis and sequence lengths, which Scan-9 does not
           "node/test_scan_sum": "batch axis"}


def old_kernel_missing(result, opset):
    """Whether onnxruntime fails to load a test only for want of a kernel at its old opset."""
    return (opset < 7 and result.get("status") == "load_error"
            and "Could not find an implementation" in result.get("error", ""))


def check_opset_raise(results, regressions):
    counts = {"candidates": 0, "raised": 0, "refused": 0, "ort_pass": 0, "ort_pass_unloadable": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for test_dir in sorted(glob.glob(os.path.join(SUITE, "*", "test_*"))):
            name = os.path.relpath(test_dir, SUITE)
            src = os.path.join(test_dir, "model.onnx")
            original = onnx.load(src)
            opset = opset_of(original)
            if opset is None or not 6 <= opset <= 20:
                continue
            result = results.get(name, {})
            unloadable = old_kernel_missing(result, opset)
            if (result.get("status") != "pass" and not unloadable) or not tensors_only(src):
                continue
            counts["candidates"] += 1
            dst = os.path.join(tmp, "raised.onnx")
            proc = subprocess.run([MDEPLOY, "convert", src, "-o", dst, "-q", "--opset", "21"],
                                  capture_output=True, text=True)
            if proc.returncode == 2:
                counts["refused"] += 1
                # every test from 6 to 20 is raised today but those refused by name: a refusal
                # is a regression unless it names the meaning change the raise cannot keep
                why = REFUSED.get(name)
                if why is None or why not in proc.stderr:
                    regressions.append(f"{name} --opset 21: refused: {proc.stderr.strip()[:200]}")
                continue
            if proc.returncode != 0:
                regressions.append(f"{name} --opset 21: exit {proc.returncode}: {proc.stderr.strip()[:200]}")
                continue
            counts["raised"] += 1
            raised = onnx.load(dst)
            if opset_of(raised) != 21:
                regressions.append(f"{name} --opset 21: the output has opset {opset_of(raised)}")
                continue
            try:
                onnx.checker.check_model(raised, full_check=True)
            except Exception as e:
                try:
                    onnx.checker.check_model(original, full_check=True)
                    regressions.append(f"{name} --opset 21: checker rejects the output only: {str(e)[:200]}")
                    continue
                except Exception:
                    pass
            try:
                ok = outputs_match(dst, os.path.join(test_dir, "test_data_set_0"))
            except Exception as e:
                regressions.append(f"{name} --opset 21: onnxruntime fails on the output: {str(e)[:200]}")
                continue
            if ok:
                counts["ort_pass"] += 1
                counts["ort_pass_unloadable"] += unloadable
            else:
                regressions.append(f"{name} --opset 21: onnxruntime outputs differ")
    return counts


def main():
    results = json.load(open(os.path.join(SUITE, "ort_results.json")))["results"]
    counts = {"converted": 0, "checker_ok": 0, "ort_pass": 0, "ort_candidates": 0}
    regressions = []
    with tempfile.TemporaryDirectory() as tmp:
        for test_dir in sorted(glob.glob(os.path.join(SUITE, "node", "*"))):
            name = "node/" + os.path.basename(test_dir)
            src = os.path.join(test_dir, "model.onnx")
            dst = os.path.join(tmp, "converted.onnx")
            proc = subprocess.run([MDEPLOY, "convert", src, "-o", dst, "-q"], capture_output=True, text=True)
            if proc.returncode != 0:
                regressions.append(f"{name}: convert exit {proc.returncode}: {proc.stderr.strip()[:200]}")
                continue
            counts["converted"] += 1
            try:
                onnx.checker.check_model(onnx.load(dst), full_check=True)
                counts["checker_ok"] += 1
            except Exception as e:
                try:
                    onnx.checker.check_model(onnx.load(src), full_check=True)
                    regressions.append(f"{name}: checker rejects the output only: {str(e)[:200]}")
                except Exception:
                    pass
            if results.get(name, {}).get("status") == "pass" and tensors_only(src):
                counts["ort_candidates"] += 1
                try:
                    ok = outputs_match(dst, os.path.join(test_dir, "test_data_set_0"))
                except Exception as e:
                    ok = False
                    regressions.append(f"{name}: onnxruntime fails on the output: {str(e)[:200]}")
                if ok:
                    counts["ort_pass"] += 1
                elif not regressions or not regressions[-1].startswith(name):
                    regressions.append(f"{name}: onnxruntime outputs differ after convert")
    raised = check_opset_raise(results, regressions)
    print(f"conformance convert --opset 21: {raised['raised']} of {raised['candidates']} raised "
          f"({raised['refused']} refused), onnxruntime reproduces the expected outputs of {raised['ort_pass']} "
          f"(of them {raised['ort_pass_unloadable']} it cannot load at their own opset)")
    print(f"conformance convert: {counts['converted']} converted, {counts['checker_ok']} pass the checker, "
          f"onnxruntime reproduces the expected outputs of {counts['ort_pass']} converted tensor tests "
          f"of the {counts['ort_candidates']} it passes on the originals")
    for r in regressions:
        print(f"    {r}")
    print(f"conformance interop: {counts['converted'] - len(regressions)} passed, {len(regressions)} failed")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
