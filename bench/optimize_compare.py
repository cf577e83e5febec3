"""mdeploy optimize against onnxslim on every model in ../shared/models: nodes and file size
before/after, wall time and peak RSS of each tool, and onnxruntime latency before/after.

    .venv/bin/pip install onnxslim   # once
    cargo build --release
    .venv/bin/python bench/optimize_compare.py [--runs 20]

Shared machines are noisy: latency is the median of --runs runs after a warm-up, the three
models measured interleaved (rounds of 5 runs each, alternating order).
"""

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))
MDEPLOY = os.path.join(ROOT, "target", "release", "mdeploy")
ONNXSLIM = os.path.join(os.path.dirname(sys.executable), "onnxslim")


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of a command, via /usr/bin/time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        # without /usr/bin/time's own lines (its exit note and the peak RSS)
        lines = proc.stderr.rstrip().splitlines()
        while lines and re.match(r"^(\d+|Command exited with non-zero status \d+)$", lines[-1]):
            lines.pop()
        message = "\n".join(lines)
        raise RuntimeError(f"{cmd[0]} failed: {message[-500:]}")
    rss_kib = int(re.findall(r"^(\d+)$", proc.stderr, re.M)[-1])
    return wall, rss_kib / 1024


def feeds_for(model_dir, model_path):
    names = [i.name for i in onnx.load(model_path, load_external_data=False).graph.input]
    feeds = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "test_data_set_0", "input_*.pb"))):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        k = int(os.path.basename(path)[6:-3])
        feeds[t.name or names[k]] = numpy_helper.to_array(t)
    return feeds


def latencies_ms(model_paths, feeds, runs, threads=0, spinning=True):
    """Median latency of each model, measured interleaved: rounds of a few runs of each model
    in turn, so that machine noise falls on all of them alike. Every round runs them in the
    same order, so that every block of runs follows another model's block: with the order
    reversed every other round, the models at the two ends ran two blocks in a row, and the
    same MiniLM read 7 to 13% faster there than in the middle positions, whichever file was
    put at the ends. A block's first run is not timed (the session's threads waking after
    another session's runs, which a model served in a loop does not pay).
    `threads` sets onnxruntime's intra-op threads (0: its default, one per core); `spinning`
    False stops its idle threads from spinning between kernels."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in model_paths]
    for s in sessions:
        s.run(None, feeds)
    times = [[] for _ in sessions]
    per_round = 5
    for _ in range(max(1, runs // per_round)):
        for k in range(len(sessions)):
            # untimed: the first run after a switch wakes the session's threads
            sessions[k].run(None, feeds)
            for _ in range(per_round):
                start = time.perf_counter()
                sessions[k].run(None, feeds)
                times[k].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_dir in sorted(glob.glob(os.path.join(SHARED, "models", "*"))):
            src = os.path.join(model_dir, "model.onnx")
            if not os.path.isfile(src):
                continue
            name = os.path.basename(model_dir)
            ours, slim = os.path.join(tmp, f"{name}.mdeploy.onnx"), os.path.join(tmp, f"{name}.slim.onnx")
            t_ours, rss_ours = timed([MDEPLOY, "optimize", src, "-o", ours, "-q"])
            t_slim, rss_slim = timed([ONNXSLIM, src, slim])
            feeds = feeds_for(model_dir, src)
            nodes = lambda p: len(onnx.load(p, load_external_data=False).graph.node)
            rows.append([
                name,
                nodes(src), nodes(ours), nodes(slim),
                os.path.getsize(src) / 1e6, os.path.getsize(ours) / 1e6, os.path.getsize(slim) / 1e6,
                t_ours, rss_ours, t_slim, rss_slim,
                *latencies_ms([src, ours, slim], feeds, args.runs),
            ])
    header = ["model", "nodes", "mdeploy", "onnxslim", "MB", "mdeploy MB", "onnxslim MB",
              "mdeploy s", "mdeploy RSS MiB", "onnxslim s", "onnxslim RSS MiB",
              "ORT ms before", "ORT ms mdeploy", "ORT ms onnxslim"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r[0]] + [str(v) for v in r[1:4]] + [f"{v:.2f}" for v in r[4:7]] + \
                [f"{r[7]:.2f}", f"{r[8]:.0f}", f"{r[9]:.2f}", f"{r[10]:.0f}"] + [f"{v:.2f}" for v in r[11:]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
