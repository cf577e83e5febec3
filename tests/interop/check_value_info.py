"""Interop: are the types and shapes `mdeploy convert` records in value_info true?

For every model in ../shared/models (and any models named on the command line), convert it with
mdeploy, then run the converted model in onnxruntime with every recorded intermediate value
exposed as a graph output, on each stored test data set, and require:
  - every recorded element type equals the dtype onnxruntime produces;
  - every recorded rank equals the actual rank, every dim_value the actual size;
  - every dim_param (a named dim or an expression over named dims) takes one size per run,
    across all values that name it;
  - coverage: the number of intermediate values with a fully known shape (every dim a number or
    a name) is at least what onnx.shape_inference.infer_shapes(data_prop=True) gives on the
    same original model.
Prints a table of coverage. Run by .ci/run from its venv; exits non-zero on failure.
"""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, shape_inference

from check_models import MDEPLOY, SHARED, load_set, model_paths


def intermediates(graph):
    interface = {v.name for v in graph.input} | {v.name for v in graph.output}
    interface |= {t.name for t in graph.initializer}
    return [o for n in graph.node for o in n.output if o and o not in interface]


def fully_known(vi):
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return False
    # a negative dim_value (copied from an input declared as -1) is no size
    return all((d.HasField("dim_value") and d.dim_value >= 0) or d.HasField("dim_param")
               for d in vi.type.tensor_type.shape.dim)


def onnx_coverage(model_path):
    """Intermediate values onnx's own inference gives a fully known shape (its dim_params for
    unknown dims, `unk__N`, do not count: they name nothing)."""
    model = onnx.load(model_path)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    wanted = set(intermediates(model.graph))
    count = 0
    for vi in inferred.graph.value_info:
        if vi.name in wanted and fully_known(vi):
            dims = vi.type.tensor_type.shape.dim
            if not any(d.HasField("dim_param") and d.dim_param.startswith("unk__") for d in dims):
                count += 1
    return count, len(wanted)


def check(name, model_path, data_dirs, out_dir):
    problems = []
    dst = os.path.join(out_dir, f"{name}.onnx")
    proc = subprocess.run([MDEPLOY, "convert", model_path, "-o", dst], capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"convert failed ({proc.returncode}): {proc.stderr.strip()}"], 0, 0, 0
    model = onnx.load(dst)
    recorded = {vi.name: vi for vi in model.graph.value_info if vi.name in set(intermediates(model.graph))}
    covered = sum(1 for vi in recorded.values() if fully_known(vi))
    baseline, total = onnx_coverage(model_path)
    if covered < baseline:
        problems.append(f"coverage {covered} below onnx.shape_inference's {baseline}")

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for vi in recorded.values():
        if vi.name not in present:
            exposed.graph.output.append(vi)
    path = os.path.join(out_dir, f"{name}.exposed.onnx")
    onnx.save(exposed, path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no graph optimization: fused-away values must still be produced
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    for data_dir in data_dirs:
        feeds = load_set(data_dir, "input", input_names)
        results = dict(zip(output_names, session.run(None, feeds)))
        symbols = {}
        for vname, vi in recorded.items():
            actual = np.asarray(results[vname])
            tt = vi.type.tensor_type
            want_dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
            where = f"{os.path.basename(data_dir)}: '{vname}'"
            if actual.dtype != want_dtype:
                problems.append(f"{where} recorded {want_dtype}, onnxruntime gives {actual.dtype}")
            if not tt.HasField("shape"):
                continue
            dims = tt.shape.dim
            if len(dims) != actual.ndim:
                problems.append(f"{where} recorded rank {len(dims)}, actual shape {actual.shape}")
                continue
            for axis, (d, size) in enumerate(zip(dims, actual.shape)):
                if d.HasField("dim_value") and d.dim_value != size:
                    problems.append(f"{where} axis {axis}: recorded {d.dim_value}, actual {size}")
                elif d.HasField("dim_param"):
                    seen = symbols.setdefault(d.dim_param, (size, vname))
                    if seen[0] != size:
                        problems.append(
                            f"{where} axis {axis}: dim '{d.dim_param}' is {size} here "
                            f"but {seen[0]} in '{seen[1]}'")
    return problems, covered, baseline, total


def main():
    models = model_paths(sys.argv[1:])
    if not models:
        print(f"no models under {SHARED}/models")
        return 1
    failures = 0
    print(f"{'model':<28} {'values':>7} {'mdeploy':>8} {'onnx':>6}  result")
    with tempfile.TemporaryDirectory() as out_dir:
        for model_path in models:
            name = os.path.basename(os.path.dirname(model_path))
            data_dirs = sorted(glob.glob(os.path.join(os.path.dirname(model_path), "test_data_set_*")))
            problems, covered, baseline, total = check(name, model_path, data_dirs, out_dir)
            status = "ok" if not problems else f"{len(problems)} problems"
            print(f"{name:<28} {total:>7} {covered:>8} {baseline:>6}  {status}")
            for p in problems[:20]:
                print(f"    {p}")
            failures += bool(problems)
    print(f"{len(models) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
