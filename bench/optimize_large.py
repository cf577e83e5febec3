"""mdeploy on BERT-base-size models against onnxsim and onnxslim, in one run: wall time and peak
RSS of `mdeploy convert`, `mdeploy optimize --no-verify` and `mdeploy verify M M`, of onnxsim's
`simplify(check_n=0)` (load, simplify, save) and of the `onnxslim` command, on a model of about
440 MB and one twice that size (to show how cost grows with size).

    .venv/bin/pip install onnxsim onnxslim   # once
    .venv/bin/python bench/optimize_large.py [--runs 3] [--workdir DIR] [--model M.onnx ...]

The models come from examples/make_large_model.rs (12 and 24 blocks of BERT-base's dimensions),
or --model names real exports to measure instead. Every command runs --runs times; the table
gives the median and each run's peak RSS is the maximum. Shared machines are noisy.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MDEPLOY = os.path.join(ROOT, "target", "release", "mdeploy")
MAKE = os.path.join(ROOT, "target", "release", "examples", "make_large_model")
PYTHON = sys.executable
ONNXSLIM = os.path.join(os.path.dirname(sys.executable), "onnxslim")

ONNXSIM = """
import sys, onnx
from onnxsim import simplify
model = onnx.load(sys.argv[1])
simplified, ok = simplify(model, check_n=0)
assert ok
onnx.save(simplified, sys.argv[2])
"""


def timed(cmd):
    """Wall seconds and peak RSS (MiB) of a command, via /usr/bin/time."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {proc.stderr[-800:]}")
    wall, rss = re.findall(r"^([\d.]+) (\d+)$", proc.stderr, re.M)[-1]
    return float(wall), int(rss) / 1024


def measure(cmd, runs):
    results = [timed(cmd) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir")
    ap.add_argument("--model", action="append", default=[])
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "mdeploy",
                    "--example", "make_large_model"], cwd=ROOT, check=True)
    work = args.workdir or tempfile.mkdtemp(prefix="mdeploy-bench-")
    os.makedirs(work, exist_ok=True)
    models = list(args.model)
    if not models:
        for layers in (12, 24):
            path = os.path.join(work, f"bert_like_{layers}.onnx")
            if not os.path.exists(path):
                subprocess.run([MAKE, path, str(layers)], check=True)
            models.append(path)
    out = os.path.join(work, "out.onnx")
    rows = []
    for model in models:
        mb = os.path.getsize(model) / 2**20
        tools = {
            "mdeploy convert": [MDEPLOY, "convert", model, "-o", out, "-q"],
            "mdeploy optimize --no-verify": [MDEPLOY, "optimize", model, "-o", out, "--no-verify", "-q"],
            "mdeploy verify M M": [MDEPLOY, "verify", model, model],
            "onnxsim simplify(check_n=0)": [PYTHON, "-c", ONNXSIM, model, out],
            "onnxslim": [ONNXSLIM, model, out],
        }
        results = {}
        for name, cmd in tools.items():
            try:
                results[name] = measure(cmd, args.runs)
            except RuntimeError as e:
                print(f"{os.path.basename(model)}: {name}: {e}", file=sys.stderr)
            for leftover in (out, out + ".data"):
                if os.path.exists(leftover):
                    os.remove(leftover)
        rows.append((os.path.basename(model), mb, results))

    print(f"\n{'model':<22} {'MB':>7}  {'tool':<30} {'s':>7} {'peak MiB':>9} {'RSS/file':>9} {'s/onnxsim':>10}")
    for name, mb, results in rows:
        sim = results.get("onnxsim simplify(check_n=0)", (None, None))[0]
        for tool, (wall, rss) in results.items():
            ratio = f"{wall / sim:.2f}" if sim else "-"
            print(f"{name:<22} {mb:>7.0f}  {tool:<30} {wall:>7.2f} {rss:>9.0f} {rss / mb:>9.2f} {ratio:>10}")
    if len(rows) >= 2:
        (a, mba, ra), (b, mbb, rb) = rows[0], rows[1]
        print(f"\ngrowth from {a} to {b} (size x{mbb / mba:.2f}):")
        for tool in ra:
            if tool in rb:
                print(f"  {tool:<30} time x{rb[tool][0] / ra[tool][0]:.2f}, peak RSS x{rb[tool][1] / ra[tool][1]:.2f}")


if __name__ == "__main__":
    main()
