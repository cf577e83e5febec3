"""Which operators onnxruntime's CPU provider cannot run in float16, found by running them.

For every ONNX node conformance test whose graph inputs or outputs are float32, a float16 twin is
built (float32 graph inputs, outputs and float tensors in Constant attributes become float16) and
both are run in onnxruntime. An op lands in the list when the float32 test runs and its float16
twin fails to load or run, or when its float16 results are far off (cosine < 0.99) although the
schema allows float16: onnxruntime inserts Casts around ops it has no float16 kernel for, so most
ops run; what remains are the ops that break. The result feeds `src/quantize/fp16_ops.rs`.

usage: python tools/probe_ort_fp16.py ../shared/onnx-node-tests/node > probe.json
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

ort.set_default_logger_severity(4)


def to_fp16(model):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                arr = numpy_helper.to_array(a.t).astype(np.float16)
                a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
    return m


def run(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        return 1.0 if np.array_equal(a, b, equal_nan=True) else 0.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if np.allclose(a, b, atol=1e-2) else 0.0
    return float(a @ b / (na * nb))


def main(root):
    results = {}
    for test in sorted(os.listdir(root)):
        path = os.path.join(root, test)
        try:
            model = onnx.load(os.path.join(path, "model.onnx"))
        except Exception:
            continue
        if len(model.graph.node) != 1:
            continue
        io = list(model.graph.input) + list(model.graph.output)
        if not any(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in io):
            continue
        op = model.graph.node[0].op_type
        domain = model.graph.node[0].domain or ""
        if domain not in ("", "ai.onnx"):
            continue
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        data = os.path.join(path, "test_data_set_0")
        feeds = {}
        try:
            for k, v in enumerate(model.graph.input):
                t = onnx.load_tensor(os.path.join(data, f"input_{k}.pb"))
                feeds[v.name] = numpy_helper.to_array(t)
        except Exception:
            continue
        try:
            ref = run(model, feeds)
        except Exception:
            continue
        half = {
            k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in feeds.items()
        }
        entry = {"op": op, "opset": opset}
        try:
            got = run(to_fp16(model), half)
            cos = min((cosine(r, g) for r, g in zip(ref, got)), default=1.0)
            entry["status"] = "ok" if cos >= 0.99 else "inaccurate"
            entry["cosine"] = round(cos, 5)
        except Exception as e:
            msg = str(e).splitlines()[0][:200]
            entry["status"] = "load_error" if "NOT_IMPLEMENTED" in msg or "Type" in msg else "run_error"
            entry["error"] = msg
        results[test] = entry
    json.dump(results, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
