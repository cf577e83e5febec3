"""Does onnxruntime's int8 product saturate on this CPU? (docs/quantize.md, "The CPU's int8 kernels")

onnxruntime's x86 uint8 x int8 kernels without VNNI (AVX2's vpmaddubsw) add each two adjacent
products of the reduction in 16 bits and saturate beyond 32767. This script measures, against
exact int64 arithmetic in numpy:
  - MatMulInteger with full-range weights, weights within [-64, 64], and weights whose pairs
    (2i, 2i+1) along K are safe while pairs at odd offsets are not (which pairs the kernel forms);
  - QLinearConv with kernels whose (channel, position) neighbours or channel neighbours at one
    position are the large pairs (which order the conv kernel pairs in).
A CPU with VNNI (or ARM) prints 0 everywhere.

    .venv/bin/python bench/int8_saturation.py
"""

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def session(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def matmul_error(w, a):
    """Largest |onnxruntime - exact| of MatMulInteger(a, w), relative to the largest exact output."""
    m, k = a.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    y = session(graph).run(None, {"a": a})[0]
    exact = a.astype(np.int64) @ w.astype(np.int64)
    return np.abs(y - exact).max() / max(1, np.abs(exact).max())


def conv_error(w):
    """Largest |onnxruntime - exact| of a QLinearConv of all-255 pixels, in output steps of
    1/200 of the largest output."""
    m, c, kh, _ = w.shape
    x = np.full((1, c, 8, 8), 255, np.uint8)
    exact = w.astype(np.int64).reshape(m, -1).sum(1) * 255
    step = float(np.abs(exact).max()) / 200
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.ones(m, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(m, np.int8), "wz"),
        numpy_helper.from_array(np.array(step, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    y = session(graph).run(None, {"x": x})[0]
    return np.abs(y[0] - exact[:, None, None]).max() / step


def main():
    rng = np.random.default_rng(0)
    k, n, m = 256, 64, 32
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    for bound in (127, 64):
        w = rng.integers(-bound, bound + 1, (k, n)).astype(np.int8)
        print(f"MatMulInteger, weights within [-{bound}, {bound}]: relative error {matmul_error(w, a):.4f}")
    pattern = np.array([1, 127, 127, 1], np.int8)  # pairs (2i, 2i+1) sum to 128, odd offsets to 254
    w = np.resize(pattern, k * n).reshape(n, k).T.copy()
    full = np.full((m, k), 255, np.uint8)
    print(f"MatMulInteger, large pairs only at odd offsets of K: relative error {matmul_error(w, full):.4f}")
    for c in (4, 16):
        flat = np.resize(pattern, (16, c * 9))
        # pairs (2i, 2i+1) in (channel, row, column) order safe; neighbouring channels not
        in_nchw_order = flat.reshape(16, c, 3, 3)
        # pairs of neighbouring channels at one position safe; neighbours along the width are
        # (127, 127) in half the channels
        channels = np.zeros((16, c, 3, 3), np.int8)
        for ch in range(c):
            channels[:, ch] = pattern[ch % 4]
        print(
            f"QLinearConv C={c}: pairs safe in (channel, row, column) order: {conv_error(in_nchw_order):.1f} steps off; "
            f"pairs of channels safe: {conv_error(channels):.1f} steps off; "
            f"all 127: {conv_error(np.full((16, c, 3, 3), 127, np.int8)):.1f} steps off"
        )


if __name__ == "__main__":
    main()
