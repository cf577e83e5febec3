"""mdeploy's quantization against the tools a user would otherwise pick, on every model in
../shared/models, in one run:

  fp16:         mdeploy optimize --fp16   vs  onnxconverter-common convert_float_to_float16
                                              and onnxruntime.transformers.float16 (both with
                                              keep_io_types=True)
  int8 dynamic: mdeploy optimize --int8 dynamic  vs  onnxruntime quantize_dynamic (QInt8)
  int8 static:  mdeploy optimize --int8 static   vs  onnxruntime quantize_static (QDQ, per
                channel, uint8 activations and int8 weights as both tools default to), both
                calibrated on test_data_set_0
  int4:         mdeploy optimize --int4 weight-only  vs  onnxruntime MatMulNBitsQuantizer (4 bits,
                blocks of 32, asymmetric, its default MatMulNBits output)

Per model and tool: does onnxruntime load the result, the worst output cosine against the float
model on both stored data sets, the task-level check (top-1 class, detection map at 0.3, VAD
decision at 0.5; see tests/interop/check_quantized.py), file size, onnxruntime latency against
the float model (median, all variants of a model measured interleaved), and the tool's wall time
and peak RSS. mdeploy's wall time includes measuring the float model on the data and verifying
its result; the others verify nothing.

    .venv/bin/pip install onnxconverter-common onnx_ir   # once
    cargo build --release
    .venv/bin/python bench/quantize_compare.py [--runs 20] [--models a,b] [--model-dir DIR]
        [--threads N] [--no-spinning]

--model-dir adds a model directory in the layout of ../shared/models (model.onnx and
test_data_set_N folders), such as the trained MiniLM that tests/interop/minilm_model.py builds.
Each mode's table also measures the float model a second time (tool "float again"): its ratio
is the noise floor of that mode's latency figures. On a machine of few cores shared with
others, onnxruntime's spinning idle threads can cost a model of many small kernels (an int8
transformer) more than they save; --threads 1 or --no-spinning measures without them.
"""

import argparse
import glob
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "interop"))
from optimize_compare import MDEPLOY, SHARED, latencies_ms, timed  # noqa: E402
from check_quantized import TASKS, cosine, task_problem  # noqa: E402
from check_models import load_set  # noqa: E402

PY = sys.executable

CONVERTERS = {
    "onnxconverter-common": (
        "import onnx, sys\n"
        "from onnxconverter_common import float16\n"
        "m = onnx.load(sys.argv[1])\n"
        "onnx.save(float16.convert_float_to_float16(m, keep_io_types=True), sys.argv[2])\n"
    ),
    "ort-transformers-fp16": (
        "import onnx, sys\n"
        "from onnxruntime.transformers.float16 import convert_float_to_float16\n"
        "m = onnx.load(sys.argv[1])\n"
        "onnx.save(convert_float_to_float16(m, keep_io_types=True), sys.argv[2])\n"
    ),
    "ort-quantize_static": (
        "import sys, glob, os, onnx\n"
        "from onnx import numpy_helper\n"
        "import onnxruntime as ort\n"
        "from onnxruntime.quantization import quantize_static, QuantFormat, QuantType, CalibrationDataReader\n"
        "names = [i.name for i in ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']).get_inputs()]\n"
        "class Reader(CalibrationDataReader):\n"
        "    def __init__(self):\n"
        "        files = sorted(glob.glob(os.path.join(sys.argv[3], 'input_*.pb')), key=lambda p: int(p.rsplit('_', 1)[1][:-3]))\n"
        "        feed = {}\n"
        "        for k, f in enumerate(files):\n"
        "            t = onnx.load_tensor(f)\n"
        "            feed[t.name or names[k]] = numpy_helper.to_array(t)\n"
        "        self.feeds = iter([feed])\n"
        "    def get_next(self):\n"
        "        return next(self.feeds, None)\n"
        "quantize_static(sys.argv[1], sys.argv[2], Reader(), quant_format=QuantFormat.QDQ,\n"
        "                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)\n"
    ),
    "ort-matmul_nbits": (
        "import sys, onnx\n"
        "from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer\n"
        "q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), block_size=32, is_symmetric=False)\n"
        "q.process()\n"
        "q.model.save_model_to_file(sys.argv[2])\n"
    ),
    "ort-quantize_dynamic": (
        "import sys\n"
        "from onnxruntime.quantization import quantize_dynamic, QuantType\n"
        "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)\n"
    ),
}

MODES = {
    "fp16": [("mdeploy", ["--fp16"]), ("onnxconverter-common", None), ("ort-transformers-fp16", None)],
    "int8-dyn": [("mdeploy", ["--int8", "dynamic"]), ("ort-quantize_dynamic", None)],
    # mdeploy-all: every node that can be int8 (the default placement keeps float what int8
    # would slow down)
    "int8-static": [
        ("mdeploy", ["--int8", "static"]),
        ("mdeploy-all", ["--int8", "static", "--int8-placement", "all"]),
        ("ort-quantize_static", None),
    ],
    "int4": [("mdeploy", ["--int4", "weight-only"]), ("ort-matmul_nbits", None)],
}


def produce(tool, args, src, dst, sets):
    """Static quantizers calibrate on set 0; every result is judged on both sets."""
    if tool.startswith("mdeploy"):
        cmd = [MDEPLOY, "optimize", src, "-o", dst, "-q", *args]
        for d in sets:
            cmd += ["--data", d]
        if "static" in args:
            cmd += ["--calibration", sets[0]]
    else:
        cmd = [PY, "-c", CONVERTERS[tool], src, dst, sets[0]]
    return timed(cmd)


def accuracy(name, path, sets):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    worst, task = 1.0, "-"
    for d in sets:
        feeds = load_set(d, "input", inputs)
        want = load_set(d, "output", outputs)
        got = dict(zip(outputs, session.run(None, {k: feeds[k] for k in inputs})))
        for out in outputs:
            worst = min(worst, cosine(want[out], np.asarray(got[out], np.float32)))
            t = TASKS.get(name, {}).get(out)
            if t:
                problem = task_problem(*t, want[out], np.asarray(got[out], np.float32))
                task = "ok" if problem is None and task in ("-", "ok") else "FAIL"
    return worst, task


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", default="")
    parser.add_argument("--modes", default="", help="comma-separated: " + ",".join(MODES))
    parser.add_argument("--model-dir", action="append", default=[], help="another model directory")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--no-spinning", action="store_true", help="onnxruntime's idle threads do not spin")
    args = parser.parse_args()
    modes = {m: t for m, t in MODES.items() if not args.modes or m in args.modes.split(",")}
    wanted = set(filter(None, args.models.split(",")))
    rows = []
    sources = sorted(glob.glob(os.path.join(SHARED, "models", "*", "model.onnx")))
    sources += [os.path.join(d, "model.onnx") for d in args.model_dir]
    for src in sources:
        model_dir = os.path.dirname(src)
        name = os.path.basename(model_dir)
        if wanted and name not in wanted:
            continue
        sets = sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")))
        names = [i.name for i in ort.InferenceSession(src, providers=["CPUExecutionProvider"]).get_inputs()]
        feeds = load_set(sets[0], "input", names)
        with tempfile.TemporaryDirectory() as tmp:
            for mode, tools in modes.items():
                made = []
                for tool, extra in tools:
                    dst = os.path.join(tmp, f"{mode}.{tool}.onnx")
                    row = {"model": name, "mode": mode, "tool": tool}
                    try:
                        row["wall"], row["rss"] = produce(tool, extra, src, dst, sets)
                    except RuntimeError as e:
                        row["error"] = str(e).strip().splitlines()[-1][:90]
                        rows.append(row)
                        continue
                    row["bytes"] = os.path.getsize(dst)
                    try:
                        row["cosine"], row["task"] = accuracy(name, dst, sets)
                        made.append((row, dst))
                    except Exception as e:  # noqa: BLE001
                        row["error"] = "ort: " + str(e).strip().splitlines()[0][:90]
                    rows.append(row)
                if made:
                    # the float model again, last: how far two sessions of one file drift apart
                    control = {"model": name, "mode": mode, "tool": "float again", "cosine": 1.0, "task": "-"}
                    control.update(bytes=os.path.getsize(src), wall=0.0, rss=0.0)
                    rows.append(control)
                    made.append((control, src))
                    paths = [src] + [d for _, d in made]
                    ms = latencies_ms(paths, feeds, args.runs, args.threads, not args.no_spinning)
                    for (row, _), t in zip(made, ms[1:]):
                        row["speed"] = t / ms[0]
                        row["ms"] = t
                        row["float_ms"] = ms[0]
    print("| model | mode | tool | loads | worst cosine | task | bytes | latency vs float | tool wall s | tool RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['mode']} | {r['tool']} | no: {r['error']} | | | | | {r.get('wall', 0):.1f} | {r.get('rss', 0):.0f} |")
            continue
        print(
            f"| {r['model']} | {r['mode']} | {r['tool']} | yes | {r['cosine']:.5f} | {r['task']} | {r['bytes']} "
            f"| {r.get('speed', float('nan')):.2f}x ({r.get('ms', 0):.2f} ms vs {r.get('float_ms', 0):.2f}) "
            f"| {r['wall']:.1f} | {r['rss']:.0f} |"
        )


if __name__ == "__main__":
    main()
