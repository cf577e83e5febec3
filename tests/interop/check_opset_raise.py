"""Interop for `mdeploy convert --opset N` from old opsets: every rewrite the raise makes for a
meaning that changed between opsets 9 and 21 (an attribute moved to an input, Softmax's axis,
Scatter renamed, Resize-10's coordinates, ...) is built here as a small model at the old opset,
in each variant that matters (axis given or default, first or last, bounds present or not, a
float64 input, inside a Loop body). onnxruntime implements the opsets' own semantics for these
ops, so it is the oracle: the raised model must give the original's outputs, pass the onnx
checker, and have the new opset. (Not for all: it runs OneHot's negative indices and
ConvTranspose's computed padding the same at every version, where the spec changed them; the
raise refuses those by name, checked below.) The cases the raise must refuse are checked to exit 2 with nothing written. Then the
real models of ../shared/models below opset 13 are raised to 13 and 21 and must give bit-exact
outputs on their stored inputs. Last, the mtcnn models are written as exporters of opsets 6 and 8
wrote them (legacy broadcasts: a Conv's bias as an Add at axis 1, PRelu's slope as one value per
channel, bias Adds with `broadcast`), raised to 13 and 21, and must give the original's outputs;
onnxruntime cannot load the opset-6 forms at all (the engines run them raised to 7). The opset-6
form is also quantized (int8 static, which raises it to 13) and must pass its verification against
the opset-6 input.

Exits non-zero on any failure.
"""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from check_conformance import opset_of, read_pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MDEPLOY = os.environ.get("MDEPLOY_BIN", os.path.join(ROOT, "target", "debug", "mdeploy"))
SHARED = os.environ.get("MDEPLOY_SHARED", os.path.join(ROOT, "..", "shared"))

F = TensorProto.FLOAT
RNG = np.random.default_rng(7)


def model(opset, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 6 if opset <= 12 else 7
    # the checker asks graph outputs for a shape: inference gives the ones it can
    inferred = onnx.shape_inference.infer_shapes(m)
    for o, i in zip(m.graph.output, inferred.graph.output):
        if i.type.tensor_type.HasField("shape"):
            o.CopyFrom(i)
    return m


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, **attrs)


def one(op, opset, shape, elem=F, outputs=("y",), **attrs):
    """A model of one `op` node reading `x`; an output named `i` holds int64 indices, the others
    `x`'s type."""
    return model(opset, [node(op, ["x"], list(outputs), **attrs)], [vi("x", elem, shape)],
                 [vi(o, TensorProto.INT64 if o == "i" else elem, None) for o in outputs])


def cases():
    """(name, model, opsets to raise to, inputs)."""
    x3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    x4 = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = []
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        for opset in (9, 11, 12):
            variants = [("default", {}), ("last", {"axis": 3}), ("first", {"axis": 0}),
                        ("middle", {"axis": 2})]
            if opset >= 11:
                variants += [("minus1", {"axis": -1}), ("minus3", {"axis": -3})]
            for label, attrs in variants:
                out.append((f"{op}-{opset} axis {label}", one(op, opset, [2, 3, 4, 5], **attrs),
                            (13, 21), {"x": x4}))
        # a rank inference cannot know: the flattening form is kept whatever the rank
        out.append((f"{op}-11 unknown rank", model(11, [node(op, ["x"], ["y"])], [vi("x", F, None)],
                                                     [vi("y", F, None)]), (13,), {"x": x3}))
        out.append((f"{op}-12 2-D default", one(op, 12, [3, 4]), (13,),
                    {"x": x3[0]}))
    # attributes that became inputs
    for opset in (9, 10, 12):
        out.append((f"Squeeze-{opset} axes", one("Squeeze", opset, [2, 1, 4], axes=[1]), (13, 21),
                    {"x": RNG.standard_normal((2, 1, 4)).astype(np.float32)}))
        out.append((f"Squeeze-{opset} all", one("Squeeze", opset, [1, 3, 1]), (13, 21),
                    {"x": RNG.standard_normal((1, 3, 1)).astype(np.float32)}))
        out.append((f"Unsqueeze-{opset}", one("Unsqueeze", opset, [2, 3], axes=[0, 3]), (13, 21),
                    {"x": x3[0, :2, :3]}))
        out.append((f"ReduceSum-{opset} axes", one("ReduceSum", opset, [2, 3, 4], axes=[1], keepdims=0),
                    (13, 21), {"x": x3}))
        out.append((f"ReduceSum-{opset} all", one("ReduceSum", opset, [2, 3, 4]), (13, 21), {"x": x3}))
        out.append((f"ReduceMean-{opset} axes", one("ReduceMean", opset, [2, 3, 4], axes=[0, 2]),
                    (18, 21), {"x": x3}))
        out.append((f"Split-{opset} sizes", one("Split", opset, [2, 6], outputs=("y", "z"), axis=1,
                                                 split=[2, 4]), (13, 18, 21),
                    {"x": RNG.standard_normal((2, 6)).astype(np.float32)}))
        out.append((f"Split-{opset} equal", one("Split", opset, [2, 6], outputs=("y", "z", "w"), axis=1),
                    (13, 18, 21), {"x": RNG.standard_normal((2, 6)).astype(np.float32)}))
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    out.append(("Slice-9 with axes", one("Slice", 9, [3, 8], starts=[1], ends=[7], axes=[1]), (10, 13, 21),
                {"x": x}))
    out.append(("Slice-9 without axes", one("Slice", 9, [3, 8], starts=[1, 2], ends=[3, 100]),
                (10, 21), {"x": x}))
    out.append(("TopK-9", one("TopK", 9, [3, 8], outputs=("y", "i"), k=3, axis=1), (10, 11, 21),
                {"x": x}))
    for label, attrs in (("min and max", {"min": -0.5, "max": 0.5}), ("min", {"min": 0.0}),
                         ("max", {"max": 0.25}), ("neither", {})):
        out.append((f"Clip-9 {label}", one("Clip", 9, [3, 8], **attrs), (11, 13, 21), {"x": x}))
    out.append(("Pad-9 constant value", one("Pad", 9, [3, 8], pads=[0, 1, 2, 3], value=1.5), (11, 21),
                {"x": x}))
    out.append(("Pad-9 constant default", one("Pad", 9, [3, 8], pads=[1, 0, 0, 2]), (11, 21), {"x": x}))
    out.append(("Pad-9 reflect", one("Pad", 9, [3, 8], mode="reflect", pads=[0, 2, 0, 1]), (11, 21),
                {"x": x}))
    out.append(("Pad-10 double value", one("Pad", 10, [3, 8], elem=TensorProto.DOUBLE, pads=[1, 1, 1, 1],
                                             value=-2.0), (11, 21), {"x": x.astype(np.float64)}))
    out.append(("Dropout-10 ratio", one("Dropout", 10, [3, 8], ratio=0.3), (12, 21), {"x": x}))
    out.append(("Dropout-11 unread mask", model(11, [node("Dropout", ["x"], ["d", "m"], ratio=0.2),
                                                 node("Relu", ["d"], ["y"])],
                                                [vi("x", F, [3, 8])], [vi("y", F, None)]), (12, 21), {"x": x}))
    # a mask nothing reads is dropped (before 10 it was not even bool)
    for opset in (9, 11):
        out.append((f"Dropout-{opset} unread named mask",
                    model(opset, [node("Dropout", ["x"], ["d", "m"]), node("Relu", ["d"], ["y"])],
                          [vi("x", F, [3, 8])], [vi("y", F, None)]), (12, 21), {"x": x}))
    # a zero-sized axis through the flattening form: the Reshape back keeps it (allowzero)
    out.append(("Softmax-11 zero-sized axis", one("Softmax", 11, [3, 0, 4, 5], axis=2), (21,),
                {"x": np.zeros((3, 0, 4, 5), np.float32)}))
    # an empty mask slot is no mask, even where another node has an empty input
    out.append(("Dropout-11 empty mask slot", model(11, [node("Dropout", ["x"], ["d", ""]),
                                                       node("Clip", ["d", "", "mx"], ["y"])],
                                                   [vi("x", F, [3, 8])], [vi("y", F, None)],
                                                   [numpy_helper.from_array(np.array(0.5, np.float32), "mx")]),
                (12, 21), {"x": x}))
    data = RNG.standard_normal((3, 3)).astype(np.float32)
    out.append(("Scatter-9", model(9, [node("Scatter", ["x", "i", "u"], ["y"], axis=1)],
                                   [vi("x", F, [3, 3])], [vi("y", F, None)],
                                   [numpy_helper.from_array(np.array([[1, 0, 2], [0, 2, 1], [2, 1, 0]],
                                                                     dtype=np.int64), "i"),
                                    numpy_helper.from_array(np.ones((3, 3), np.float32), "u")]),
                (11, 21), {"x": data}))
    img = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    out.append(("Resize-10 linear", model(10, [node("Resize", ["x", "s"], ["y"], mode="linear")],
                                          [vi("x", F, [1, 2, 3, 4])], [vi("y", F, None)],
                                          [numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "s")]),
                (11, 13, 21), {"x": img}))
    for opset, op in ((9, "Upsample"), (10, "Resize")):
        for mode in ("nearest", "linear"):
            out.append((f"{op}-{opset} {mode}", model(opset, [node(op, ["x", "s"], ["y"], mode=mode)],
                                                      [vi("x", F, [1, 2, 3, 4])], [vi("y", F, None)],
                                                      [numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32),
                                                                               "s")]),
                        (10, 11, 13, 21) if op == "Upsample" else (11, 13, 21), {"x": img}))
    # Upsample-7 and 8 take their scales as attribute: an input from 9, a Resize's from 10
    for opset in (7, 8):
        for mode in ("nearest", "linear"):
            out.append((f"Upsample-{opset} {mode}", model(opset, [node("Upsample", ["x"], ["y"], mode=mode,
                                                                       scales=[1.0, 1.0, 2.0, 3.0])],
                                                          [vi("x", F, [1, 2, 3, 4])], [vi("y", F, None)]),
                        (9, 10, 11, 13, 21), {"x": img}))
        # BatchNormalization's spatial (1, the default) is gone at 9
        stats = [numpy_helper.from_array((RNG.random(2) + 0.5).astype(np.float32), n) for n in "sbmv"]
        for label, attrs in (("spatial 1", {"spatial": 1}), ("default", {})):
            out.append((f"BatchNormalization-{opset} {label}",
                        model(opset, [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)],
                              [vi("x", F, [1, 2, 3, 4])], [vi("y", F, None)], stats),
                        (9, 14, 21), {"x": img}))
    # inside a Loop body: the rewrite happens in the body, the constant lands there
    body = helper.make_graph(
        [node("Squeeze", ["v"], ["s"], axes=[0]), node("Unsqueeze", ["s"], ["v_out"], axes=[0]),
         node("Identity", ["c"], ["c_out"])],
        "body", [vi("i", TensorProto.INT64, []), vi("c", TensorProto.BOOL, []), vi("v", F, [1, 4])],
        [vi("c_out", TensorProto.BOOL, []), vi("v_out", F, [1, 4])])
    loop = model(11, [node("Loop", ["n", "", "x"], ["y"], body=body)], [vi("x", F, [1, 4])], [vi("y", F, None)],
                 [numpy_helper.from_array(np.array(2, np.int64), "n")])
    out.append(("Loop-11 body", loop, (13, 21), {"x": x[:1, :4]}))
    return out


def refusals():
    """Models the raise must refuse, with a word the reason must name."""
    img = RNG.standard_normal((1, 1, 2, 2)).astype(np.float32)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    return [
        # nearest below a scale of 1 rounds up in onnxruntime: no opset-11 mode says that
        ("Resize-10 nearest downscale", model(10, [node("Resize", ["x", "s"], ["y"])], [vi("x", F, [1, 1, 2, 2])],
                                              [vi("y", F, None)],
                                              [numpy_helper.from_array(np.array([1, 1, 0.5, 2], np.float32), "s")]),
         11, "scales of at least 1", img),
        ("Upsample-9 scales unknown", model(9, [node("Upsample", ["x", "s"], ["y"])],
                                            [vi("x", F, [1, 1, 2, 2]), vi("s", F, [4])], [vi("y", F, None)]),
         13, "scales of at least 1", img),
        ("Resize-11 tf_half_pixel_for_nn",
         model(11, [node("Resize", ["x", "r", "s"], ["y"], coordinate_transformation_mode="tf_half_pixel_for_nn")],
               [vi("x", F, [1, 1, 2, 2])], [vi("y", F, None)],
               [numpy_helper.from_array(np.zeros(0, np.float32), "r"), scales]), 13, "tf_half_pixel_for_nn", img),
        # before 12 the mask in inference is undefined: onnxruntime gives false, the reference true
        ("Dropout-10 read mask", model(10, [node("Dropout", ["x"], ["y", "m"])], [vi("x", F, [2])],
                                       [vi("y", F, None), vi("m", TensorProto.BOOL, None)]), 12, "mask", img),
        # negative indices: rows of off values before 11, counted from the end since
        ("OneHot-9", model(9, [node("OneHot", ["x", "d", "v"], ["y"])], [vi("x", F, [3])], [vi("y", F, None)],
                           [numpy_helper.from_array(np.array([4], np.float32), "d"),
                            numpy_helper.from_array(np.array([0, 1], np.float32), "v")]), 11, "OneHot", img),
        # a padding the node computes itself: the extra pixel of an odd total changed sides at 11
        ("ConvTranspose-9 SAME_UPPER",
         model(9, [node("ConvTranspose", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
               [vi("x", F, [1, 1, 2, 2])], [vi("y", F, None)],
               [numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "w")]), 11, "ConvTranspose", img),
        ("opset 5", model(5, [node("Relu", ["x"], ["y"])], [vi("x", F, [2])], [vi("y", F, None)]), 13,
         "below 6", img),
        # Scan-8 had a batch axis and sequence lengths
        ("Scan-8", model(8, [node("Scan", ["", "x"], ["y"], num_scan_inputs=1,
                                  body=helper.make_graph([node("Identity", ["a"], ["b"])], "body",
                                                         [vi("a", F, [2])], [vi("b", F, [2])]))],
                         [vi("x", F, [1, 3, 2])], [vi("y", F, None)]), 13, "batch axis", img),
        # spatial = 0: statistics per element, gone at 9
        ("BatchNormalization-8 spatial 0",
         model(8, [node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0)],
               [vi("x", F, [1, 1, 2, 2])], [vi("y", F, None)],
               [numpy_helper.from_array(np.ones((1, 2, 2), np.float32), n) for n in "sbmv"]), 13, "spatial", img),
    ]


def legacy(m, opset):
    """`m` (an mtcnn model: Conv, PRelu, MaxPool, MatMul, Add, ...) written as an exporter of
    `opset` (6 or 8) would: MaxPool without ceil_mode (10); at 6 a Conv's bias as a separate Add
    broadcast at axis 1, PRelu's slope [1, C, 1, 1] as [C] (per channel at 6), and bias Adds
    with `broadcast` set (aligned at the last axis)."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        for a in list(n.attribute):
            if n.op_type == "MaxPool" and a.name == "ceil_mode":
                assert a.i == 0, "ceil_mode 1 has no form before opset 10"
                n.attribute.remove(a)
        if opset < 7 and n.op_type == "Conv" and len(n.input) == 3:
            conv_out = n.output[0] + "_nobias"
            bias = n.input[2]
            nodes.append(node("Conv", n.input[:2], [conv_out], name=n.name,
                              **{a.name: helper.get_attribute_value(a) for a in n.attribute}))
            nodes.append(node("Add", [conv_out, bias], [n.output[0]], broadcast=1, axis=1))
            continue
        if opset < 7 and n.op_type == "PRelu" and len(inits[n.input[1]].dims) == 4:
            slope = numpy_helper.to_array(inits[n.input[1]])
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(slope.reshape(-1), n.input[1]))
        if opset < 7 and n.op_type == "Add" and n.input[1] in inits:
            n.attribute.append(helper.make_attribute("broadcast", 1))
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    del out.opset_import[:]
    out.opset_import.append(helper.make_opsetid("", opset))
    # IR 4: initializers need not be listed among the inputs (IR 3 lists them, which makes them
    # inputs a caller may override: not constants a raise or a quantizer may rewrite)
    out.ir_version = 4
    return out


def convert(src, dst, to, label, failures):
    """`mdeploy convert SRC -o DST --opset TO`: the raised model, or None with the failure noted
    (an exit other than 0, or another opset than asked)."""
    if os.path.exists(dst):
        os.remove(dst)
    proc = subprocess.run([MDEPLOY, "convert", src, "-o", dst, "-q", "--opset", str(to)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        failures.append(f"{label}: exit {proc.returncode}: {proc.stderr.strip()[:300]}")
        return None
    r = onnx.load(dst)
    if opset_of(r) != to:
        failures.append(f"{label}: the output has opset {opset_of(r)}")
        return None
    return r


def run(path, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def main():
    failures = []
    raised = 0
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "old.onnx")
        dst = os.path.join(tmp, "raised.onnx")
        for name, m, targets, feeds in cases():
            try:
                onnx.checker.check_model(m, full_check=True)
                checked = True
            except onnx.checker.ValidationError:
                checked = False  # an output of unknown rank: the checker asks for a shape
            onnx.save(m, src)
            try:
                want = run(src, feeds)
            except Exception as e:
                failures.append(f"{name}: onnxruntime cannot run the original: {str(e)[:200]}")
                continue
            for to in targets:
                label = f"{name} -> {to}"
                r = convert(src, dst, to, label, failures)
                if r is None:
                    continue
                try:
                    if checked:
                        onnx.checker.check_model(r, full_check=True)
                    got = run(dst, feeds)
                except Exception as e:
                    failures.append(f"{label}: {str(e)[:300]}")
                    continue
                for k, (g, w) in enumerate(zip(got, want)):
                    if g.dtype != w.dtype or g.shape != w.shape or not np.array_equal(g, w):
                        failures.append(f"{label}: output {k} differs ({w.dtype}{list(w.shape)} -> "
                                        f"{g.dtype}{list(g.shape)})")
                        break
                else:
                    raised += 1
        for name, m, to, word, _ in refusals():
            onnx.save(m, src)
            if os.path.exists(dst):
                os.remove(dst)
            proc = subprocess.run([MDEPLOY, "convert", src, "-o", dst, "-q", "--opset", str(to)],
                                  capture_output=True, text=True)
            if proc.returncode != 2 or word not in proc.stderr or os.path.exists(dst):
                failures.append(f"{name}: expected exit 2 naming '{word}' and nothing written; got exit "
                                f"{proc.returncode}: {proc.stderr.strip()[:300]}")
        real = 0
        for model_dir in sorted(glob.glob(os.path.join(SHARED, "models", "*"))):
            src_real = os.path.join(model_dir, "model.onnx")
            data = os.path.join(model_dir, "test_data_set_0")
            if not os.path.exists(src_real) or not os.path.isdir(data):
                continue
            m = onnx.load(src_real, load_external_data=False)
            opset = opset_of(m)
            if opset is None or opset >= 13:
                continue
            inputs = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
            feeds = {name: read_pb(os.path.join(data, f"input_{k}.pb")) for k, name in enumerate(inputs)}
            want = run(src_real, feeds)
            for to in (13, 21):
                label = f"{os.path.basename(model_dir)} (opset {opset}) -> {to}"
                if convert(src_real, dst, to, label, failures) is None:
                    continue
                got = run(dst, feeds)
                if not all(np.array_equal(g, w) for g, w in zip(got, want)):
                    failures.append(f"{label}: outputs differ")
                    continue
                real += 1
        legacies = 0
        for model_dir in sorted(glob.glob(os.path.join(SHARED, "models", "mtcnn_*"))):
            name = os.path.basename(model_dir)
            original = os.path.join(model_dir, "model.onnx")
            data = os.path.join(model_dir, "test_data_set_0")
            m = onnx.load(original)
            inputs = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
            feeds = {n: read_pb(os.path.join(data, f"input_{k}.pb")) for k, n in enumerate(inputs)}
            want = run(original, feeds)
            for opset in (6, 8):
                old = os.path.join(tmp, f"{name}_{opset}.onnx")
                onnx.save(legacy(m, opset), old)
                onnx.checker.check_model(old, full_check=True)
                if opset >= 7:
                    # onnxruntime runs opset 8: the legacy form itself computes the original's numbers
                    if not all(np.allclose(g, w, rtol=1e-5, atol=1e-6) for g, w in zip(run(old, feeds), want)):
                        failures.append(f"{name} written at opset {opset}: the legacy form differs")
                        continue
                for to in (13, 21):
                    label = f"{name} written at opset {opset} -> {to}"
                    r = convert(old, dst, to, label, failures)
                    if r is None:
                        continue
                    onnx.checker.check_model(dst, full_check=True)
                    got = run(dst, feeds)
                    if not all(np.allclose(g, w, rtol=1e-5, atol=1e-6) for g, w in zip(got, want)):
                        failures.append(f"{label}: outputs differ from the original's")
                        continue
                    legacies += 1
            # quantizing raises it too (to 13, for int8 weights per channel), and verifies
            old = os.path.join(tmp, f"{name}_6.onnx")
            quantized = os.path.join(tmp, f"{name}_6_int8.onnx")
            proc = subprocess.run([MDEPLOY, "optimize", old, "-o", quantized, "-q", "--int8", "static",
                                   "--int8-placement", "all", "--data", data, "--json"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                failures.append(f"{name} written at opset 6, int8 static: exit {proc.returncode}: "
                                f"{proc.stderr.strip()[:300]}")
                continue
            if opset_of(onnx.load(quantized)) != 13:
                failures.append(f"{name} written at opset 6, int8 static: not raised to 13")
                continue
            legacies += 1
    if real == 0:
        failures.append(f"no real model below opset 13 found in {SHARED}/models")
    if legacies == 0:
        failures.append(f"no mtcnn model found in {SHARED}/models")
    print(f"opset raise from old opsets: {raised} raised models equal their originals in onnxruntime, "
          f"{len(refusals())} refusals checked; {real} raises of the real models below opset 13 give "
          f"bit-exact outputs; {legacies} raises and quantizations of the mtcnn models written at opsets "
          f"6 and 8 give their outputs; {len(failures)} failed")
    for f in failures:
        print(f"    {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
